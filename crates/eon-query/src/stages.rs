//! Stages: running the parts of a plan below its exchanges where the data
//! is, and the exchanges between data engines.
//!
//! DataFusion plans a query as if all rows were in the query engine: an
//! aggregate is split into a *partial* step per input partition and a
//! *final* step over what the partials produced, joined by an exchange
//! (`CoalescePartitionsExec`, or a hash `RepartitionExec` when there are
//! groups: partition *i* then holds every partial of its groups); a join
//! of two big inputs repartitions both by hash of the join key, partition
//! *i* of one joined with partition *i* of the other; an `ORDER BY …
//! LIMIT k` is a top-k sort per partition and a merge. eon's partitions are
//! shards on data engines, so all of this can run on the engines, each
//! hash repartitioning becoming a *shuffle* of rows between them: only
//! the results then come to the query engine, not the tables.
//!
//! After DataFusion's physical optimizer, [`Distribute`] walks the plan from
//! the top and cuts out each largest piece that
//!
//! - is made of operators that work partition by partition — filters,
//!   projections, sorts of each partition, partial aggregates over scans
//!   of a table's shards (`EonScanExec`, not a point lookup); hash
//!   repartitionings of such pieces; final aggregates and partitioned
//!   hash joins over hash repartitionings; hash joins that collect a small
//!   side whole, when no row of their output depends on that side's rows
//!   matching nothing (inner, right, right semi and anti joins) —
//! - is worth it: it shrinks what is sent (a partial aggregate, a top-k
//!   sort) or finishes an aggregate or joins where the rows are, and
//! - can be encoded as a fragment ([`crate::fragment`]: every function is
//!   the same on the data engines, every operator serializable).
//!
//! Each hash repartitioning inside becomes a [`ShuffleExec`] — a stage of
//! its own, run by the engines its input runs on and repartitioning into
//! one partition per task of the stage reading it — and the piece becomes
//! an [`EonStageExec`] — stage *N* — with one task, and one output
//! partition, per data engine holding shards of the table it scans or,
//! when shuffles feed it, per engine holding shards of any table it reads
//! (task *i* owning hash partition *i*). A join's collected side becomes a
//! *broadcast* (a [`ShuffleExec`] whose producer ends in a
//! [`crate::fragment::BroadcastExec`]): the engines holding it each send all
//! their rows of it to every task, which builds its hash table from them
//! and probes it with its own part of the other side. Which side is small
//! enough is DataFusion's choice, from the scans' size estimates (each
//! table's rows, as its data engines estimate them:
//! [`crate::cluster::Cluster::table_rows`]) and its thresholds (`hash_join_single_partition_threshold`, 1 MB, and
//! `…_rows`, 128 Ki); `eon.broadcast = off` sets both to zero, so that
//! every join of two tables is shuffled. Executing partition *i* sends
//! the fragment to task *i*'s engine (`DataEngine.RunFragment`), which runs
//! it over its own shards at the statement's snapshot, reads partition *i*
//! of each shuffle from every engine producing it, directly
//! ([`crate::fragment::ShuffleReadExec`]), and streams back the result,
//! merged (by the fragment's order, when it has one) into one stream. The
//! rest of the plan — a final aggregate without groups, the merge of the
//! top-k — stays on the query engine (stage 0), fed by *gathering* the
//! stages' output. `EXPLAIN` shows each stage as a line `Stage N` above the
//! operators it runs, saying how its output moves (gathered, shuffled or broadcast);
//! `EXPLAIN ANALYZE` adds, per stage and engine, the rows it read and sent,
//! the bytes sent and its time.
//!
//! The session parameter `eon.distribute` (on by default) turns this off
//! for a session: every row then comes to the query engine, as before —
//! what the differential tests compare against.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, JoinType};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::Boundedness;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use eon_proto::v1 as pb;

use crate::fragment::reply_batches;
use crate::provider::{EonScanExec, to_df};

/// How long a stage waits for an unreachable data engine to come back.
const PATIENCE: Duration = Duration::from_secs(3);

/// The physical optimizer rule cutting plans into stages (module doc).
#[derive(Debug)]
pub struct Distribute;

impl PhysicalOptimizerRule for Distribute {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        // Worked out once, and only for a plan that gets a stage (this
        // rule runs on every statement).
        let settings = std::cell::OnceCell::new();
        let settings = || {
            settings
                .get_or_init(|| Arc::new(crate::fragment::settings(config)))
                .clone()
        };
        let plan = unordered_repartitions(plan, config)?
            .transform_up(|node| shuffle_unbroadcastable(node, config))
            .map(|t| t.data)?;
        let plan = colocate(plan, true)?;
        let mut next = 1;
        place(plan, &mut next, &settings)
    }

    fn name(&self) -> &str {
        "eon_distribute"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with its largest distributable pieces made stages, numbered from
/// `next` in the order met from the top.
fn place(
    plan: Arc<dyn ExecutionPlan>,
    next: &mut usize,
    settings: &dyn Fn() -> Arc<HashMap<String, String>>,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    place_under(plan, true, next, settings)
}

/// [`place`] for a plan whose partitions are merged or repartitioned by
/// its parent (`merged`), or may be relied on as they are.
fn place_under(
    plan: Arc<dyn ExecutionPlan>,
    merged: bool,
    next: &mut usize,
    settings: &dyn Fn() -> Arc<HashMap<String, String>>,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    if plan.is::<EonStageExec>() {
        return Ok(plan);
    }
    // A bare exchange on top is the query engine's: what feeds it may be a
    // stage. So is a hash-partitioned plan whose partitions something above
    // relies on (a join with an input partitioned on the query engine): a
    // stage's partitions are its engines'.
    let keeps = plan.is::<RepartitionExec>()
        || (!merged && matches!(plan.output_partitioning(), Partitioning::Hash(..)));
    if !keeps && matches!(layout(&plan), Some((_, true))) {
        let mut n = *next + 1;
        let all = engines_of(&plan);
        let tasks = tasks_of(&plan, &all).len();
        if let Some(fragment) = shuffled(plan.clone(), &all, tasks, &mut n)? {
            if let Some(stage) = EonStageExec::try_new(*next, fragment, settings)? {
                *next = n;
                return Ok(Arc::new(stage));
            }
        }
    }
    let merges = plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<RepartitionExec>();
    map_children(plan, |_, child| place_under(child, merges, next, settings))
}

/// `plan` with each child `i` replaced by `f(i, child)`, rebuilt only when
/// one changed.
fn map_children(
    plan: Arc<dyn ExecutionPlan>,
    mut f: impl FnMut(
        usize,
        Arc<dyn ExecutionPlan>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>>,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let mut changed = false;
    let mut placed = Vec::with_capacity(children.len());
    for (i, child) in children.into_iter().enumerate() {
        let new = f(i, child.clone())?;
        changed |= !Arc::ptr_eq(&new, &child);
        placed.push(new);
    }
    if !changed {
        return Ok(plan);
    }
    plan.replace_children(
        placed,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// Where the partitions of a plan that can run on the data engines are.
enum Layout {
    /// One per shard of this scan (an `EonScanExec`), each on the engine
    /// holding it: a stage runs one task per such engine.
    Shards(Arc<dyn ExecutionPlan>),
    /// Hash partitions made by shuffles: a stage runs one task per engine
    /// of the statement's tables, task *i* holding partition *i*.
    Hash,
}

/// How `plan` would run on the data engines, if all of it can, and whether
/// that is worth a stage: whether it shrinks what is sent (a partial
/// aggregate, a top-k sort) or joins or finishes an aggregate where the
/// rows are (module doc).
fn layout(plan: &Arc<dyn ExecutionPlan>) -> Option<(Layout, bool)> {
    let any = plan.as_ref();
    if let Some(scan) = any.downcast_ref::<EonScanExec>() {
        let runs_there = scan.statement().distribute
            && !scan.engines().is_empty()
            && matches!(scan.fragment_scan(), Ok(Some(_)));
        return runs_there.then(|| (Layout::Shards(plan.clone()), false));
    }
    if any.is::<ShuffleExec>() {
        return Some((Layout::Hash, true));
    }
    if let Some(c) = any.downcast_ref::<ColocatedExec>() {
        return layout(c.input());
    }
    if let Some(r) = any.downcast_ref::<RepartitionExec>() {
        // A hash repartitioning between engines: a shuffle. One keeping
        // the order of its inputs would need a merge per partition.
        if !matches!(r.partitioning(), Partitioning::Hash(..)) || r.preserve_order() {
            return None;
        }
        layout(r.input())?;
        return Some((Layout::Hash, true));
    }
    if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        return match join.partition_mode() {
            // Both sides hash-partitioned on the key: task i joins
            // partition i of each, for every join type.
            PartitionMode::Partitioned => match (layout(join.left())?, layout(join.right())?) {
                ((Layout::Hash, _), (Layout::Hash, _)) => Some((Layout::Hash, true)),
                // Co-located tables: task i joins its shards of both.
                ((Layout::Shards(scan), _), (Layout::Shards(_), _))
                    if colocated(join, join.left(), join.right()) =>
                {
                    Some((Layout::Shards(scan), true))
                }
                _ => None,
            },
            // The small side collected whole: broadcast to every task,
            // each joining it with its part of the other side.
            PartitionMode::CollectLeft if broadcastable(join) => {
                layout(build_side(join))?;
                let (probe, _) = layout(join.right())?;
                Some((probe, true))
            }
            _ => None,
        };
    }
    let children = plan.children();
    if children.len() != 1 {
        return None;
    }
    let (child, worth) = layout(children[0])?;
    if let Some(agg) = any.downcast_ref::<AggregateExec>() {
        match agg.mode() {
            AggregateMode::Partial => Some((child, true)),
            // Its groups' partials all come to one task by the shuffle
            // below.
            AggregateMode::FinalPartitioned | AggregateMode::SinglePartitioned
                if matches!(child, Layout::Hash) =>
            {
                Some((child, true))
            }
            _ => None,
        }
    } else if let Some(sort) = any.downcast_ref::<SortExec>() {
        // A sort of each partition (the order a partial aggregate's
        // `ORDER BY` needs) runs there too; a top-k also shrinks.
        sort.preserve_partitioning()
            .then(|| (child, worth || sort.fetch().is_some()))
    } else if any.is::<FilterExec>() || any.is::<ProjectionExec>() {
        Some((child, worth))
    } else {
        None
    }
}

/// Whether `join` (collecting its left side whole) may run as one join per
/// task, each with all of the left side and its own part of the right: so
/// when no output depends on left rows that no task matched — a task
/// cannot know whether another matched them.
fn broadcastable(join: &HashJoinExec) -> bool {
    matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    ) && !join.null_aware
}

/// `plan` with its order-preserving hash repartitionings made plain ones
/// (which a stage can run as shuffles), when nothing above requires the
/// order they keep — DataFusion keeps an order that merely helps (a
/// grouping on a sorted key streams), and the operators above, rebuilt,
/// work without it. Else `plan` as it was.
fn unordered_repartitions(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    let changed = plan.clone().transform_up(|node| {
        let Some(r) = node.downcast_ref::<RepartitionExec>() else {
            return Ok(Transformed::no(node));
        };
        if !r.preserve_order() || !matches!(r.partitioning(), Partitioning::Hash(..)) {
            return Ok(Transformed::no(node));
        }
        let plain = RepartitionExec::try_new(r.input().clone(), r.partitioning().clone())?;
        Ok(Transformed::yes(Arc::new(plain) as Arc<dyn ExecutionPlan>))
    })?;
    if !changed.transformed {
        return Ok(plan);
    }
    use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
    match SanityCheckPlan::new().optimize(changed.data.clone(), config) {
        Ok(_) => Ok(changed.data),
        Err(_) => Ok(plan),
    }
}

/// A join that collects its left side but cannot be broadcast (a left or
/// full join: its unmatched left rows need every task's matches), over
/// inputs that can both run on the data engines, as a partitioned join of
/// the two hash-repartitioned — shuffled where the rows are, instead of
/// joined on the query engine. Not a null-aware anti join (`NOT IN`, which
/// must see all of the other side at once), nor one whose output order
/// something above may rely on (a repartitioning loses it).
fn shuffle_unbroadcastable(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> datafusion::common::Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(Transformed::no(plan));
    };
    if *join.partition_mode() != PartitionMode::CollectLeft
        || broadcastable(join)
        || join.null_aware
        || plan.output_ordering().is_some()
        || layout(build_side(join)).is_none()
        || layout(join.right()).is_none()
    {
        return Ok(Transformed::no(plan));
    }
    let n = config.execution.target_partitions;
    let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
    let left = Arc::new(RepartitionExec::try_new(
        build_side(join).clone(),
        Partitioning::Hash(left_keys, n),
    )?);
    let right = Arc::new(RepartitionExec::try_new(
        join.right().clone(),
        Partitioning::Hash(right_keys, n),
    )?);
    Ok(Transformed::yes(partitioned(join, left, right)?))
}

/// `join` as a partitioned join of `left` and `right` (partition *i* of
/// each joined).
fn partitioned(
    join: &HashJoinExec,
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    join.builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_new_children(vec![left, right])?
        .recompute_properties()
        .build_exec()
}

/// `plan` with each join of two co-located tables on their distribution
/// keys made a partitioned join of the two scans as they are, partition
/// (shard) *i* of one with partition *i* of the other: rows that can match
/// are in the same shard of each, on the same engine, so nothing is
/// shuffled or broadcast. Only where the join's partitions are `free` — to
/// be merged or repartitioned above before anything relies on how they are
/// partitioned (a shard is not a hash partition DataFusion could pair with
/// one of its own).
fn colocate(
    plan: Arc<dyn ExecutionPlan>,
    free: bool,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    if free
        && let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && let Some((left, right)) = colocated_inputs(join)
    {
        return partitioned(join, left, right);
    }
    let count = plan.children().len();
    let any = plan.as_ref();
    let frees: Vec<bool> = if any.is::<RepartitionExec>()
        || any.is::<CoalescePartitionsExec>()
        || any.is::<SortPreservingMergeExec>()
    {
        vec![true; count]
    } else if any.is::<FilterExec>()
        || any.is::<ProjectionExec>()
        || any
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial)
        || any
            .downcast_ref::<SortExec>()
            .is_some_and(|s| s.preserve_partitioning())
    {
        vec![free; count]
    } else if let Some(join) = any.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::CollectLeft
    {
        vec![true, free]
    } else {
        vec![false; count]
    };
    map_children(plan, |i, child| colocate(child, frees[i]))
}

/// The inputs of `join` without the exchanges DataFusion put under it (a
/// hash repartitioning of each side, or the merge of the collected one),
/// when they are scans of co-located tables joined on their distribution
/// keys ([`colocated`]).
fn colocated_inputs(
    join: &HashJoinExec,
) -> Option<(Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>)> {
    let hashed = |side: &Arc<dyn ExecutionPlan>| {
        let r = side.downcast_ref::<RepartitionExec>()?;
        matches!(r.partitioning(), Partitioning::Hash(..)).then(|| r.input().clone())
    };
    let (left, right) = match join.partition_mode() {
        PartitionMode::Partitioned => (hashed(join.left())?, hashed(join.right())?),
        PartitionMode::CollectLeft => (build_side(join).clone(), join.right().clone()),
        PartitionMode::Auto => return None,
    };
    if !colocated(join, &left, &right) {
        return None;
    }
    let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
    Some((
        Arc::new(ColocatedExec::new(left, left_keys)) as _,
        Arc::new(ColocatedExec::new(right, right_keys)) as _,
    ))
}

/// Whether `left` and `right` (the inputs of `join`, without exchanges)
/// are filters and projections of full scans of co-located tables
/// (`TableDef::colocated`) reading the same shards, and `join` has, for
/// each column of their distribution keys, a condition equating the two.
fn colocated(
    join: &HashJoinExec,
    left: &Arc<dyn ExecutionPlan>,
    right: &Arc<dyn ExecutionPlan>,
) -> bool {
    let (Some((l, _)), Some((r, _))) = (source_column(left, 0), source_column(right, 0)) else {
        return false;
    };
    let (ls, rs) = (
        l.downcast_ref::<EonScanExec>().expect("a scan"),
        r.downcast_ref::<EonScanExec>().expect("a scan"),
    );
    if layout(&l).is_none()
        || layout(&r).is_none()
        || !ls.table().colocated(rs.table())
        || ls.shards() != rs.shards()
    {
        return false;
    }
    let pairs: Vec<(usize, usize)> = join
        .on()
        .iter()
        .filter_map(|(a, b)| {
            // (A chain of filters and projections leads to one scan.)
            let column =
                |e: &Arc<dyn PhysicalExpr>, side: &Arc<dyn ExecutionPlan>, scan: &EonScanExec| {
                    let c = column_of(e, &side.schema())?;
                    scan.table_column(source_column(side, c.index())?.1)
                };
            Some((column(a, left, ls)?, column(b, right, rs)?))
        })
        .collect();
    let (lk, rk) = (ls.table().distribution_key(), rs.table().distribution_key());
    lk.iter().zip(rk).all(|(&a, &b)| pairs.contains(&(a, b)))
}

/// The column `e` (over `schema`) is, when it is one — an integer widened
/// to join another is still its column: all integers encode alike.
fn column_of<'a>(e: &'a Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<&'a Column> {
    let e = match e.downcast_ref::<CastExpr>() {
        Some(cast)
            if cast.cast_type().is_integer()
                && cast.expr().data_type(schema).is_ok_and(|t| t.is_integer()) =>
        {
            cast.expr()
        }
        _ => e,
    };
    e.downcast_ref::<Column>()
}

/// The scan under `plan` — through filters and projections only, which
/// keep its partitions — and the scan's output column that `plan`'s output
/// column `i` is.
fn source_column(
    plan: &Arc<dyn ExecutionPlan>,
    i: usize,
) -> Option<(Arc<dyn ExecutionPlan>, usize)> {
    if plan.is::<EonScanExec>() {
        return (i < plan.schema().fields().len()).then(|| (plan.clone(), i));
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let i = match f.projection() {
            Some(p) => *p.get(i)?,
            None => i,
        };
        return source_column(f.input(), i);
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let c = column_of(&p.expr().get(i)?.expr, &p.input().schema())?;
        return source_column(p.input(), c.index());
    }
    if let Some(c) = plan.downcast_ref::<ColocatedExec>() {
        return source_column(c.input(), i);
    }
    None
}

/// What a join collecting its left side collects: the plan under the merge
/// of its partitions (if it has one).
fn build_side(join: &HashJoinExec) -> &Arc<dyn ExecutionPlan> {
    match join.left().downcast_ref::<CoalescePartitionsExec>() {
        Some(merge) => merge.input(),
        None => join.left(),
    }
}

/// The engines running the tasks of a stage whose fragment is `plan`
/// (which can run on the data engines): those holding shards of the table
/// it scans, or, when shuffles feed it, `all`.
fn tasks_of(plan: &Arc<dyn ExecutionPlan>, all: &[u64]) -> Vec<u64> {
    match layout(plan) {
        Some((Layout::Shards(scan), _)) => scan
            .downcast_ref::<EonScanExec>()
            .expect("a scan")
            .engines(),
        _ => all.to_vec(),
    }
}

/// Every `EonScanExec` in `plan`, shuffles' producers included.
fn scans_of(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
    if plan.is::<EonScanExec>() {
        out.push(plan.clone());
    }
    for child in plan.children() {
        scans_of(child, out);
    }
}

/// The data engines holding shards of the tables `plan` scans, in id
/// order: the tasks of a stage fed by shuffles.
fn engines_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<u64> {
    let mut scans = Vec::new();
    scans_of(plan, &mut scans);
    let mut engines: Vec<u64> = scans
        .iter()
        .flat_map(|s| s.downcast_ref::<EonScanExec>().expect("a scan").engines())
        .collect();
    engines.sort();
    engines.dedup();
    engines
}

/// `plan` (which can run on the data engines, in a stage of `tasks`
/// tasks) with each hash repartitioning made a shuffle into `all.len()`
/// partitions, one per task of the stage reading it (one fed by shuffles
/// runs on `all`), and the collected side of each join that can be
/// broadcast made a broadcast to its `tasks`; shuffles and broadcasts
/// numbered from `next`. None when a producing stage cannot be encoded.
fn shuffled(
    plan: Arc<dyn ExecutionPlan>,
    all: &[u64],
    tasks: usize,
    next: &mut usize,
) -> datafusion::common::Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        let Partitioning::Hash(exprs, _) = r.partitioning() else {
            return Ok(None);
        };
        let id = *next;
        *next += 1;
        let engines = tasks_of(r.input(), all);
        let Some(input) = shuffled(r.input().clone(), all, engines.len(), next)? else {
            return Ok(None);
        };
        let producer = Arc::new(RepartitionExec::try_new(
            input,
            Partitioning::Hash(exprs.clone(), all.len()),
        )?);
        return Ok(ShuffleExec::try_new(id, producer, engines).map(|s| Arc::new(s) as _));
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::CollectLeft
    {
        let id = *next;
        *next += 1;
        let build = build_side(join);
        let engines = tasks_of(build, all);
        let Some(input) = shuffled(build.clone(), all, engines.len(), next)? else {
            return Ok(None);
        };
        let producer = Arc::new(crate::fragment::BroadcastExec::new(input, tasks));
        let Some(broadcast) = ShuffleExec::try_new(id, producer, engines) else {
            return Ok(None);
        };
        let Some(probe) = shuffled(join.right().clone(), all, tasks, next)? else {
            return Ok(None);
        };
        let build: Arc<dyn ExecutionPlan> =
            Arc::new(CoalescePartitionsExec::new(Arc::new(broadcast)));
        return plan
            .replace_children(
                vec![build, probe],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
            .map(Some);
    }
    if plan.is::<ShuffleExec>() {
        return Ok(Some(plan));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(Some(plan));
    }
    let mut changed = false;
    let mut built = Vec::with_capacity(children.len());
    for child in children {
        let Some(new) = shuffled(child.clone(), all, tasks, next)? else {
            return Ok(None);
        };
        changed |= !Arc::ptr_eq(&new, &child);
        built.push(new);
    }
    if !changed {
        return Ok(Some(plan));
    }
    plan.replace_children(
        built,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
    .map(Some)
}

/// What one engine did for a stage (EXPLAIN ANALYZE).
#[derive(Debug, Default, Clone)]
struct EngineRun {
    rows: u64,
    bytes: u64,
    scanned: u64,
    elapsed_us: u64,
}

/// What each engine did for a stage, by engine id.
type Runs = Arc<Mutex<BTreeMap<u64, EngineRun>>>;

fn add_run(runs: &Runs, engine: u64, scanned: u64, rows: u64, bytes: u64, elapsed_us: u64) {
    let mut runs = runs.lock().unwrap();
    let run = runs.entry(engine).or_default();
    run.scanned += scanned;
    run.rows += rows;
    run.bytes += bytes;
    // A shuffle's engine serves every reading task; its time is the
    // longest of those.
    run.elapsed_us = run.elapsed_us.max(elapsed_us);
}

/// `Stage N: on data-engine-1, …; <how its output moves>` and, after a run,
/// what each engine did.
fn fmt_stage(
    f: &mut fmt::Formatter,
    id: usize,
    engines: &[u64],
    exchange: &str,
    runs: &Runs,
) -> fmt::Result {
    let names: Vec<String> = engines.iter().map(|e| format!("data-engine-{e}")).collect();
    write!(f, "Stage {id}: on {}; {exchange}", names.join(", "))?;
    for (engine, run) in runs.lock().unwrap().iter() {
        write!(
            f,
            "; data-engine-{engine}: rows read={}, rows sent={}, bytes sent={}, time={:.3}ms",
            run.scanned,
            run.rows,
            run.bytes,
            run.elapsed_us as f64 / 1000.0
        )?;
    }
    Ok(())
}

/// The `ExecutionPlan` methods of a node with one child, `$child` (the
/// plan it sends to data engines, shown under it, or passes on): rebuilt
/// around a new child by `$rebuild(self, child)`.
macro_rules! one_child_plan_methods {
    ($child:ident, $what:literal, $rebuild:expr) => {
        fn children(
            &self,
        ) -> Vec<&::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>> {
            vec![&self.$child]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &::std::sync::Arc<dyn ::datafusion::physical_expr::PhysicalExpr>,
            ) -> ::datafusion::common::Result<
                ::datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> ::datafusion::common::Result<::datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(::datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn replace_children(
            self: ::std::sync::Arc<Self>,
            mut children: Vec<::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>>,
            _options: ::datafusion::physical_plan::ReplaceChildrenOptions,
        ) -> ::datafusion::common::Result<
            ::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>,
        > {
            let child = children
                .pop()
                .ok_or_else(|| ::datafusion::common::DataFusionError::Internal($what.into()))?;
            if ::std::sync::Arc::ptr_eq(&child, &self.$child) {
                return Ok(self);
            }
            let rebuild: fn(
                ::std::sync::Arc<Self>,
                ::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>,
            ) -> ::datafusion::common::Result<
                ::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>,
            > = $rebuild;
            rebuild(self, child)
        }

        fn with_new_children(
            self: ::std::sync::Arc<Self>,
            children: Vec<::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>>,
        ) -> ::datafusion::common::Result<
            ::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>,
        > {
            self.replace_children(
                children,
                ::datafusion::physical_plan::ReplaceChildrenOptions::new(
                    ::datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                ),
            )
        }
    };
}
pub(crate) use one_child_plan_methods;

/// A shuffle inside a stage: the producing stage's plan, run by each of
/// its engines and ending in a hash repartitioning into one partition per
/// task of the stage reading it; task *i* reads partition *i* from every
/// producing engine, directly ([`crate::fragment::ShuffleReadExec`]). On
/// the query engine it is only planned and shown, never run.
pub struct ShuffleExec {
    id: usize,
    producer: Arc<dyn ExecutionPlan>,
    /// The producing stage's engines, task by task.
    engines: Vec<u64>,
    bytes: Bytes,
    props: Arc<PlanProperties>,
    runs: Runs,
}

impl fmt::Debug for ShuffleExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShuffleExec({})", self.id)
    }
}

impl ShuffleExec {
    fn try_new(id: usize, producer: Arc<dyn ExecutionPlan>, engines: Vec<u64>) -> Option<Self> {
        let bytes = match crate::fragment::encode(producer.clone()) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("not distributed: {e}");
                return None;
            }
        };
        Some(ShuffleExec {
            id,
            props: producer.properties().clone(),
            producer,
            engines,
            bytes,
            runs: Runs::default(),
        })
    }

    /// This shuffle as a fragment carries it.
    pub(crate) fn fragment_shuffle(&self) -> datafusion::common::Result<pb::FragmentShuffle> {
        Ok(pb::FragmentShuffle {
            stage: self.id as u32,
            plan: self.bytes.clone(),
            engines: self.engines.clone(),
            schema: eon_common::ipc::encode(&self.producer.schema(), &[])
                .map_err(to_df)?
                .into(),
        })
    }
}

impl DisplayAs for ShuffleExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let exchange = match self.producer.output_partitioning() {
            n if self.producer.is::<crate::fragment::BroadcastExec>() => {
                format!("broadcast to {} tasks", n.partition_count())
            }
            Partitioning::Hash(exprs, n) => {
                let keys: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                format!("shuffled by hash({}) into {n} partitions", keys.join(", "))
            }
            other => format!("shuffled ({other})"),
        };
        fmt_stage(f, self.id, &self.engines, &exchange, &self.runs)
    }
}

impl ExecutionPlan for ShuffleExec {
    fn name(&self) -> &str {
        "ShuffleExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    one_child_plan_methods!(
        producer,
        "a shuffle has one child: its producer",
        |shuffle, producer| match ShuffleExec::try_new(
            shuffle.id,
            producer,
            shuffle.engines.clone()
        ) {
            Some(s) => Ok(Arc::new(s)),
            None => Err(DataFusionError::Internal(
                "a shuffle's new producer cannot run on data engines".into(),
            )),
        }
    );

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        Err(DataFusionError::Internal(
            "a shuffle runs between data engines, inside a stage".into(),
        ))
    }
}

/// A stage: a plan fragment run by data engines — one task per engine
/// holding shards of the table it scans, or, when shuffles feed it, per
/// engine of the statement's tables — its output gathered by the query
/// engine (module doc).
pub struct EonStageExec {
    id: usize,
    /// The piece of plan the engines run (shown under the stage).
    fragment: Arc<dyn ExecutionPlan>,
    /// The fragment as sent: merged into one partition per engine.
    bytes: Bytes,
    settings: Arc<HashMap<String, String>>,
    /// Every scan in the fragment (snapshot, reads), shuffles' included.
    scans: Vec<Arc<dyn ExecutionPlan>>,
    /// The engine of each task: one output partition each.
    engines: Vec<u64>,
    /// What the engines of the shuffles feeding it did, by stage.
    feeders: HashMap<u32, Runs>,
    /// The current run: its query number and the partitions it executed
    /// (a partition executed again starts a new run, with new shuffles).
    round: Mutex<(u64, HashSet<usize>)>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    runs: Runs,
}

impl fmt::Debug for EonStageExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EonStageExec({})", self.id)
    }
}

/// The shuffles in `plan`, by stage number, with their runs.
fn shuffles_of(plan: &Arc<dyn ExecutionPlan>, out: &mut HashMap<u32, Runs>) {
    if let Some(s) = plan.downcast_ref::<ShuffleExec>() {
        out.insert(s.id as u32, s.runs.clone());
    }
    for child in plan.children() {
        shuffles_of(child, out);
    }
}

impl EonStageExec {
    /// `fragment` as stage `id`, when it can run on the data engines.
    fn try_new(
        id: usize,
        fragment: Arc<dyn ExecutionPlan>,
        settings: &dyn Fn() -> Arc<HashMap<String, String>>,
    ) -> datafusion::common::Result<Option<EonStageExec>> {
        if layout(&fragment).is_none() {
            return Ok(None);
        }
        let engines = tasks_of(&fragment, &engines_of(&fragment));
        if engines.is_empty() {
            return Ok(None);
        }
        // One stream per engine: its partitions merged in the fragment's
        // order, or just gathered.
        let merged: Arc<dyn ExecutionPlan> = match fragment.output_ordering() {
            Some(order) => Arc::new(
                SortPreservingMergeExec::new(order.clone(), fragment.clone())
                    .with_fetch(fragment.fetch()),
            ),
            None => Arc::new(CoalescePartitionsExec::new(fragment.clone())),
        };
        let bytes = match crate::fragment::encode(merged) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("not distributed: {e}");
                return Ok(None);
            }
        };
        let props = PlanProperties::new(
            fragment.equivalence_properties().clone(),
            Partitioning::UnknownPartitioning(engines.len()),
            fragment.pipeline_behavior(),
            Boundedness::Bounded,
        );
        let mut scans = Vec::new();
        scans_of(&fragment, &mut scans);
        let mut feeders = HashMap::new();
        shuffles_of(&fragment, &mut feeders);
        let statement = scans[0]
            .downcast_ref::<EonScanExec>()
            .expect("a scan")
            .statement();
        let settings = match statement.memory_limit {
            Some(limit) => {
                let mut s = (*settings()).clone();
                s.insert(crate::fragment::MEMORY_SETTING.into(), limit.to_string());
                Arc::new(s)
            }
            None => settings(),
        };
        Ok(Some(EonStageExec {
            id,
            fragment,
            bytes,
            settings,
            scans,
            engines,
            feeders,
            round: Mutex::default(),
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
            runs: Arc::default(),
        }))
    }

    /// The query number of the run `partition` belongs to; a new run
    /// records the statement's reads (every shard the stage reads).
    fn run_of(&self, partition: usize) -> u64 {
        let mut round = self.round.lock().unwrap();
        if round.0 == 0 || !round.1.insert(partition) {
            *round = (rand::random::<u64>() | 1, HashSet::from([partition]));
            for scan in &self.scans {
                scan.downcast_ref::<EonScanExec>()
                    .expect("a scan")
                    .record_all_reads();
            }
        }
        round.0
    }
}

impl DisplayAs for EonStageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        fmt_stage(
            f,
            self.id,
            &self.engines,
            "gathered to the query engine",
            &self.runs,
        )
    }
}

impl ExecutionPlan for EonStageExec {
    fn name(&self) -> &str {
        "EonStageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    one_child_plan_methods!(
        fragment,
        "a stage has one child: its fragment",
        |stage, fragment| {
            let settings = stage.settings.clone();
            match EonStageExec::try_new(stage.id, fragment.clone(), &|| settings.clone())? {
                Some(stage) => Ok(Arc::new(stage)),
                // No longer distributable: the query engine runs it.
                None => Ok(fragment),
            }
        }
    );

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let schema = self.fragment.schema();
        let Some(&engine) = self.engines.get(partition) else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let query = self.run_of(partition);
        let cluster = self.scans[0]
            .downcast_ref::<EonScanExec>()
            .expect("a stage's scan")
            .cluster()
            .clone();
        let req = pb::FragmentRequest {
            plan: self.bytes.clone(),
            settings: (*self.settings).clone(),
            task: partition as u32,
            query,
            shuffle: None,
        };
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let bytes_received = MetricBuilder::new(&self.metrics).counter("bytes_received", partition);
        let runs = self.runs.clone();
        let feeders = self.feeders.clone();
        let batches = reply_batches(
            cluster.run_fragment(engine, req, PATIENCE, true),
            schema.clone(),
            move |bytes, batches| {
                bytes_received.add(bytes);
                for b in batches {
                    output_rows.add(b.num_rows());
                }
            },
            move |msg, received| {
                // What the engine did, and the engines feeding it.
                add_run(
                    &runs,
                    engine,
                    msg.rows_scanned,
                    msg.rows_returned,
                    received,
                    msg.elapsed_us,
                );
                for f in msg.feeders {
                    if let Some(runs) = feeders.get(&f.stage) {
                        add_run(
                            runs,
                            f.engine,
                            f.rows_scanned,
                            f.rows_returned,
                            f.bytes,
                            f.elapsed_us,
                        );
                    }
                }
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// One input of a co-located join, as it is: partition *i* is shard *i*
/// of its table's read. It tells DataFusion its partitions are hashed on
/// the join keys — so that the join's check that both inputs are
/// partitioned alike holds — which is true of eon's hash of the tables'
/// distribution keys, not DataFusion's: nothing but that join reads it
/// (see [`colocate`]). It is not sent to data engines: a fragment carries
/// its input.
#[derive(Debug)]
pub(crate) struct ColocatedExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    props: Arc<PlanProperties>,
}

impl ColocatedExec {
    fn new(input: Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>) -> ColocatedExec {
        let n = input.output_partitioning().partition_count();
        let props = PlanProperties::new(
            input.equivalence_properties().clone(),
            Partitioning::Hash(keys.clone(), n),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        ColocatedExec {
            input,
            keys,
            props: Arc::new(props),
        }
    }

    /// What it passes on.
    pub(crate) fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for ColocatedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ColocatedExec: shard by shard")
    }
}

impl ExecutionPlan for ColocatedExec {
    fn name(&self) -> &str {
        "ColocatedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    one_child_plan_methods!(input, "a co-located input has one child", |c, input| Ok(
        Arc::new(ColocatedExec::new(input, c.keys.clone()))
    ));

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        self.input.execute(partition, ctx)
    }
}
