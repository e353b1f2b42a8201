//! Stages: running the part of a plan below an exchange where the data is.
//!
//! DataFusion plans a query as if all rows were in the query engine: an
//! aggregate is split into a *partial* step per input partition and a
//! *final* step over what the partials produced, joined by an exchange
//! (`CoalescePartitionsExec` or a hash `RepartitionExec`); an `ORDER BY …
//! LIMIT k` is a top-k sort per partition and a merge. eon's partitions are
//! shards on data engines, so everything below such an exchange can run on
//! the engines: only partial aggregates or the top k rows of each engine
//! then cross the network, not the table.
//!
//! After DataFusion's physical optimizer, [`Distribute`] walks the plan from
//! the top and cuts out each largest piece that
//!
//! - ends in one `EonScanExec` (a scan of a table's shards, not a point
//!   lookup),
//! - is made of operators that work partition by partition — filters,
//!   projections, sorts of each partition, partial aggregates —
//!   with at least one that shrinks what is sent (a partial aggregate or a
//!   top-k sort), and
//! - can be encoded as a fragment ([`crate::fragment`]: every function is
//!   the same on the data engines, every operator serializable).
//!
//! The piece becomes an [`EonStageExec`] — stage *N* — with one output
//! partition per data engine holding shards of the table. Executing
//! partition *i* sends the fragment to engine *i* (`DataEngine.RunFragment`),
//! which runs it over its own shards at the statement's snapshot and
//! streams back the result, merged (by the fragment's order, when it has
//! one) into one stream per engine. The rest of the plan — the final
//! aggregate, the merge of the top-k — stays on the query engine (stage 0),
//! fed by *gathering* the stages' output. `EXPLAIN` shows each stage as a
//! line `Stage N` above the operators it runs; `EXPLAIN ANALYZE` adds, per
//! engine, the rows it read and sent, the bytes sent and its time.
//!
//! The session parameter `eon.distribute` (on by default) turns this off
//! for a session: every row then comes to the query engine, as before —
//! what the differential tests compare against.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::Boundedness;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use eon_proto::v1 as pb;
use futures::{StreamExt, TryStreamExt};

use crate::provider::{EonScanExec, decode_as, to_df};

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
    if plan.is::<EonStageExec>() {
        return Ok(plan);
    }
    if let Some(stage) = EonStageExec::try_new(*next, plan.clone(), settings)? {
        *next += 1;
        return Ok(Arc::new(stage));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let mut changed = false;
    let mut placed = Vec::with_capacity(children.len());
    for child in children {
        let new = place(child.clone(), next, settings)?;
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

/// The scan at the bottom of `plan` when `plan` is a chain of
/// partition-wise operators over it that shrinks what it reads (module
/// doc).
fn distributable_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let mut node = plan.clone();
    let mut shrinks = false;
    loop {
        let any = node.as_ref();
        if any.is::<EonScanExec>() {
            return shrinks.then_some(node);
        }
        if let Some(agg) = any.downcast_ref::<AggregateExec>() {
            if *agg.mode() != AggregateMode::Partial {
                return None;
            }
            shrinks = true;
        } else if let Some(sort) = any.downcast_ref::<SortExec>() {
            // A sort of each partition (the order a partial aggregate's
            // `ORDER BY` needs) runs there too; a top-k also shrinks.
            if !sort.preserve_partitioning() {
                return None;
            }
            shrinks |= sort.fetch().is_some();
        } else if !(any.is::<FilterExec>() || any.is::<ProjectionExec>()) {
            return None;
        }
        let children = node.children();
        if children.len() != 1 {
            return None;
        }
        let child = children[0].clone();
        node = child;
    }
}

/// What one engine did for a stage (EXPLAIN ANALYZE).
#[derive(Debug, Default, Clone)]
struct EngineRun {
    rows: u64,
    bytes: u64,
    scanned: u64,
    elapsed_us: u64,
}

/// A stage: a plan fragment run by every data engine holding shards of the
/// table it scans, its output gathered by the query engine (module doc).
pub struct EonStageExec {
    id: usize,
    /// The piece of plan the engines run (shown under the stage).
    fragment: Arc<dyn ExecutionPlan>,
    /// The fragment as sent: merged into one partition per engine.
    bytes: Bytes,
    settings: Arc<HashMap<String, String>>,
    /// The scan at the fragment's bottom (engines, snapshot, reads).
    scan: Arc<dyn ExecutionPlan>,
    /// One output partition per engine.
    engines: Vec<u64>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    runs: Arc<Mutex<BTreeMap<u64, EngineRun>>>,
}

impl fmt::Debug for EonStageExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EonStageExec({})", self.id)
    }
}

impl EonStageExec {
    /// `fragment` as stage `id`, when it can run on the data engines.
    fn try_new(
        id: usize,
        fragment: Arc<dyn ExecutionPlan>,
        settings: impl FnOnce() -> Arc<HashMap<String, String>>,
    ) -> datafusion::common::Result<Option<EonStageExec>> {
        let Some(scan) = distributable_scan(&fragment) else {
            return Ok(None);
        };
        let eon_scan = scan
            .downcast_ref::<EonScanExec>()
            .expect("distributable_scan returns a scan");
        if !eon_scan.statement().distribute {
            return Ok(None);
        }
        let mut engines: Vec<u64> = eon_scan.parts().iter().map(|(e, _)| *e).collect();
        engines.sort();
        engines.dedup();
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
        Ok(Some(EonStageExec {
            id,
            fragment,
            bytes,
            settings: settings(),
            scan,
            engines,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
            runs: Arc::default(),
        }))
    }
}

impl DisplayAs for EonStageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let engines: Vec<String> = self
            .engines
            .iter()
            .map(|e| format!("data-engine-{e}"))
            .collect();
        write!(
            f,
            "Stage {}: on {}; gathered to the query engine",
            self.id,
            engines.join(", ")
        )?;
        for (engine, run) in self.runs.lock().unwrap().iter() {
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
}

impl ExecutionPlan for EonStageExec {
    fn name(&self) -> &str {
        "EonStageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.fragment]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
    ) -> datafusion::common::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let fragment = children.pop().ok_or_else(|| {
            DataFusionError::Internal("a stage has one child: its fragment".into())
        })?;
        if Arc::ptr_eq(&fragment, &self.fragment) {
            return Ok(self);
        }
        match EonStageExec::try_new(self.id, fragment.clone(), || self.settings.clone())? {
            Some(stage) => Ok(Arc::new(stage)),
            // No longer distributable: the query engine runs it.
            None => Ok(fragment),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

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
        let scan = self
            .scan
            .downcast_ref::<EonScanExec>()
            .expect("a stage's scan");
        scan.record_engine_reads(engine);
        let cluster = scan.cluster().clone();
        let req = pb::FragmentRequest {
            plan: self.bytes.clone(),
            settings: (*self.settings).clone(),
        };
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let bytes_received = MetricBuilder::new(&self.metrics).counter("bytes_received", partition);
        let runs = self.runs.clone();
        let responses = futures::stream::once(async move {
            cluster
                .with_engine(engine, PATIENCE, true, |mut c| {
                    let req = req.clone();
                    async move { c.run_fragment(req).await }
                })
                .await
                .map(|r| {
                    r.into_inner()
                        .map_err(|s| to_df(eon_common::Error::from_status(s)))
                })
                .map_err(to_df)
        })
        .try_flatten();
        let out = schema.clone();
        let batches = responses
            .map(move |msg| -> datafusion::common::Result<Vec<RecordBatch>> {
                let msg = msg?;
                if msg.arrow_ipc.is_empty() {
                    // The last message: what the engine did.
                    let mut runs = runs.lock().unwrap();
                    let run = runs.entry(engine).or_default();
                    run.scanned += msg.rows_scanned;
                    run.rows += msg.rows_returned;
                    run.elapsed_us += msg.elapsed_us;
                    run.bytes += bytes_received.value() as u64;
                    return Ok(vec![]);
                }
                bytes_received.add(msg.arrow_ipc.len());
                let batches = decode_as(&out, &msg.arrow_ipc)?;
                for b in &batches {
                    output_rows.add(b.num_rows());
                }
                Ok(batches)
            })
            .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
