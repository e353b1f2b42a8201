//! eon tables inside DataFusion: the schema provider, the table provider and
//! the scan operator.
//!
//! DataFusion plans every SELECT. It finds eon's tables through
//! [`EonSchema`] (backed by the catalog cache in [`Cluster`]), and asks each
//! [`EonTable`] for a scan, handing it the projection, the filters it may
//! evaluate, and a limit. The table answers with an [`EonScanExec`] whose
//! partitions are shards: partition *i* streams the rows of one shard from
//! the data engine holding it. What the scan pushes down:
//!
//! - **projection**: only the needed columns are requested;
//! - **filters**: every deterministic filter made of DataFusion built-ins is
//!   serialized (datafusion-proto) and evaluated by the data engines, so only
//!   matching rows cross the network — DataFusion is told they are exact;
//! - **point lookups**: `pk = constant` (or `pk IN (...)`) on every key
//!   column becomes a list of keys, the shards they hash to, and only the
//!   engines holding those shards are asked;
//! - **key ranges**: comparisons of the first key column with constants
//!   (`pk >= 10 AND pk < 20`, `BETWEEN`) become a range of encoded keys, and
//!   each shard reads only that part of its B-tree;
//! - **limit**, when DataFusion passes one;
//! - **secondary indexes**: when the primary key does not narrow the read
//!   but an index's first column is compared with constants, the plan is
//!   an [`EonIndexScanExec`] — the index's entries in that range (or, in a
//!   unique index with every column pinned, at those keys), then the rows
//!   they point at by primary key (see [`crate::indexes`]).
//!
//! Each partition reads one shard, and a shard returns its rows in primary
//! key order, so the scan declares that order: `ORDER BY pk` merges the
//! partitions (SortPreservingMergeExec) instead of sorting.
//!
//! A table without a primary key is keyed by a row id that grows with
//! every insert. A user's read of such a table merges its shards by row
//! id into one partition, so `SELECT * FROM t` lists rows in the order
//! they were inserted — what PostgreSQL's heap gives a table that was only
//! inserted into, and what people (and PostgreSQL's own tests) expect of
//! a small table read without ORDER BY.
//!
//! `EXPLAIN` prints the scan with all of this, per data engine.
//!
//! Tables without a primary key have a hidden row id column. It is invisible
//! under the table's own name; the name `<table>$dml` resolves to the same
//! table with the hidden column, which is how UPDATE and DELETE find the rows
//! they change.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, SchemaProvider, Session, TableProvider,
};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, Constraint, Constraints, DataFusionError, ScalarValue, Statistics,
};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, utils::conjunction};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::Serializeable;
use eon_common::key::encode_batch_keys;
use eon_common::{Error, TableDef, ipc};
use eon_proto::v1 as pb;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::cluster::Cluster;

/// Suffix of the table name that exposes hidden columns (used by DML).
pub const DML_SUFFIX: &str = "$dml";
/// How long a scan waits for an unreachable data engine to come back.
const SCAN_PATIENCE: Duration = Duration::from_secs(3);
/// Point lookups with more keys than this scan instead.
const MAX_POINT_KEYS: usize = 10_000;

/// What every scan of one statement shares: its snapshot, its transaction,
/// and the record of what it read.
#[derive(Debug, Default)]
pub struct StatementContext {
    pub read_ts: u64,
    /// 0: not in a transaction.
    pub txn_id: u64,
    /// Record read spans (SERIALIZABLE transactions refresh them at commit).
    pub track_reads: bool,
    pub reads: std::sync::Mutex<Vec<ReadSpan>>,
    /// Run what can run on the data engines there ([`crate::stages`]).
    pub distribute: bool,
    /// Bytes the statement's operators may hold in each process running
    /// part of it (`eon.query_memory`): past it they spill to disk or fail
    /// with 53200. None: no limit.
    pub memory_limit: Option<usize>,
}

/// Something a statement read: keys of a shard, or the whole shard.
#[derive(Debug, Clone)]
pub struct ReadSpan {
    pub engine: u64,
    pub table: u64,
    pub shard: u32,
    pub keys: Option<Vec<Vec<u8>>>,
}

/// DataFusion errors raised by eon code carry the eon error (and so the
/// SQLSTATE) inside.
pub fn to_df(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The database: eon's schemas — `public`, those CREATE SCHEMA made and
/// those of sessions' temporary tables (`pg_temp_N`) — as its catalog
/// names them, and sessions' search paths (see [`crate::schemas`]),
/// beside the fixed ones (`pg_catalog`, `information_schema`).
#[derive(Debug)]
pub struct EonCatalog {
    pub cluster: Arc<Cluster>,
    pub fixed: MemoryCatalogProvider,
}

impl CatalogProvider for EonCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.fixed.schema_names();
        names.push("public".into());
        for s in self.cluster.schema_names() {
            if !names.contains(&s) {
                names.push(s);
            }
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.fixed.schema(name) {
            return Some(s);
        }
        // A session's search path (crate::schemas), else one schema.
        let path: Vec<String> = match name.strip_prefix(crate::schemas::PATH_PREFIX) {
            Some(list) => list.split(',').map(str::to_string).collect(),
            None if self.cluster.schema_exists(name) => vec![name.to_string()],
            None => return None,
        };
        Some(Arc::new(EonSchema {
            cluster: self.cluster.clone(),
            path,
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>, DataFusionError> {
        self.fixed.register_schema(name, schema)
    }
}

/// One of eon's schemas (its tables), or a search path of them: a name
/// is looked up in each in turn.
#[derive(Debug)]
pub struct EonSchema {
    pub cluster: Arc<Cluster>,
    pub path: Vec<String>,
}

impl EonSchema {
    fn find(&self, name: &str) -> Option<Arc<TableDef>> {
        self.path.iter().find_map(|s| self.cluster.table(s, name))
    }
}

#[async_trait]
impl SchemaProvider for EonSchema {
    fn table_names(&self) -> Vec<String> {
        self.path
            .first()
            .map(|s| self.cluster.table_names(s))
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(base) = name.strip_suffix(crate::partitions::TABLEOID_SUFFIX) {
            return Ok(self.find(base).map(|def| {
                Arc::new(crate::partitions::PartitionedTable::new(
                    def,
                    self.cluster.clone(),
                    true,
                )) as Arc<dyn TableProvider>
            }));
        }
        let (base, hidden) = match name.strip_suffix(DML_SUFFIX) {
            Some(b) => (b, true),
            None => (name, false),
        };
        Ok(self.find(base).map(|def| {
            if !hidden && crate::partitions::key_of(&def).is_some() {
                Arc::new(crate::partitions::PartitionedTable::new(
                    def,
                    self.cluster.clone(),
                    false,
                )) as Arc<dyn TableProvider>
            } else {
                Arc::new(EonTable::new(def, self.cluster.clone(), hidden)) as Arc<dyn TableProvider>
            }
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        let name = name.strip_suffix(DML_SUFFIX).unwrap_or(name);
        self.find(
            name.strip_suffix(crate::partitions::TABLEOID_SUFFIX)
                .unwrap_or(name),
        )
        .is_some()
    }
}

#[derive(Debug)]
pub struct EonTable {
    def: Arc<TableDef>,
    cluster: Arc<Cluster>,
    schema: SchemaRef,
    /// Table column index of each schema field.
    columns: Vec<usize>,
    constraints: Constraints,
    /// A user's read (SELECT privilege checked), not the row lookup of an
    /// UPDATE or DELETE of the table (with its hidden columns).
    user_read: bool,
}

impl EonTable {
    pub fn new(def: Arc<TableDef>, cluster: Arc<Cluster>, with_hidden: bool) -> EonTable {
        let columns: Vec<usize> = (0..def.columns.len())
            .filter(|&i| with_hidden || !def.columns[i].hidden)
            .collect();
        let schema = Arc::new(def.arrow_schema().project(&columns).expect("columns exist"));
        let pk: Option<Vec<usize>> = def
            .primary_key
            .iter()
            .map(|k| columns.iter().position(|c| c == k))
            .collect();
        let constraints = match pk {
            Some(pk) => Constraints::new_unverified(vec![Constraint::PrimaryKey(pk)]),
            None => Constraints::default(),
        };
        EonTable {
            def,
            cluster,
            schema,
            columns,
            constraints,
            user_read: !with_hidden,
        }
    }
}

/// A DataFusion context with only the built-in functions: what a data engine
/// can evaluate.
fn builtin_ctx() -> &'static Arc<TaskContext> {
    static CTX: OnceLock<Arc<TaskContext>> = OnceLock::new();
    CTX.get_or_init(|| SessionContext::new().task_ctx())
}

/// Drop table qualifiers: data engines know columns by name only.
fn unqualify(expr: Expr) -> Expr {
    expr.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
    .unwrap_or_else(|_| Expr::Literal(ScalarValue::Boolean(Some(true)), None))
}

/// Serialize a filter for a data engine, or None when one could not
/// evaluate it exactly as DataFusion would here.
/// Whether a data engine can evaluate `expr` (see [`ship`]).
pub(crate) fn shippable(expr: &Expr) -> bool {
    ship(expr).is_some()
}

fn ship(expr: &Expr) -> Option<Bytes> {
    if expr.is_volatile() {
        return None;
    }
    let mut unsupported = false;
    let _ = expr.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
                | Expr::Placeholder(_)
                | Expr::OuterReferenceColumn(..)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
        ) || matches!(e, Expr::ScalarFunction(f) if crate::pgmath::is_pg_math(f))
        {
            unsupported = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if unsupported {
        return None;
    }
    let bytes = unqualify(expr.clone()).to_bytes().ok()?;
    Expr::from_bytes_with_ctx(&bytes, builtin_ctx()).ok()?;
    Some(bytes)
}

/// The key values a conjunction of filters pins the primary key to, when it
/// does: one entry per key tuple.
fn point_keys(def: &TableDef, filters: &[Expr]) -> Option<Vec<Vec<ScalarValue>>> {
    let mut per_column: Vec<Option<Vec<ScalarValue>>> = vec![None; def.primary_key.len()];
    let mut conjuncts = Vec::new();
    for f in filters {
        split_and(f, &mut conjuncts);
    }
    for c in conjuncts {
        let (col, values) = match c {
            Expr::BinaryExpr(b) if b.op == Operator::Eq => match (&*b.left, &*b.right) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                    (c, vec![v.clone()])
                }
                _ => continue,
            },
            Expr::InList(il) if !il.negated => match &*il.expr {
                Expr::Column(c) => {
                    let mut vals = Vec::new();
                    for e in &il.list {
                        match e {
                            Expr::Literal(v, _) => vals.push(v.clone()),
                            _ => return None,
                        }
                    }
                    (c, vals)
                }
                _ => continue,
            },
            _ => continue,
        };
        let Some(idx) = def.column_index(&col.name) else {
            continue;
        };
        let Some(pos) = def.primary_key.iter().position(|&k| k == idx) else {
            continue;
        };
        let ty = def.columns[idx].ty.arrow_type();
        let mut cast = Vec::with_capacity(values.len());
        for v in values {
            if v.is_null() {
                continue; // `pk = NULL` matches nothing
            }
            cast.push(v.cast_to(&ty).ok()?);
        }
        per_column[pos] = Some(match per_column[pos].take() {
            // Two conditions on one column: keep the values both allow.
            Some(prev) => prev.into_iter().filter(|v| cast.contains(v)).collect(),
            None => cast,
        });
    }
    let mut tuples: Vec<Vec<ScalarValue>> = vec![vec![]];
    for col in per_column {
        let values = col?;
        let mut next = Vec::with_capacity(tuples.len() * values.len());
        for t in &tuples {
            for v in &values {
                let mut t = t.clone();
                t.push(v.clone());
                next.push(t);
            }
        }
        if next.len() > MAX_POINT_KEYS {
            return None;
        }
        tuples = next;
    }
    Some(tuples)
}

/// The range of encoded keys that comparisons of the first key column with
/// constants allow: (start inclusive, end exclusive; empty = unbounded).
/// The filter itself is still evaluated on every row read, so the range
/// only has to contain every matching key.
fn key_range(def: &TableDef, filters: &[Expr]) -> Result<(Vec<u8>, Vec<u8>), DataFusionError> {
    let first = def.primary_key[0];
    let name = &def.columns[first].name;
    let ty = def.columns[first].ty.arrow_type();
    let key_schema = Arc::new(def.key_schema().project(&[0])?);
    // The encoding of a constant as the first key column, if it converts
    // to the column's type without changing its value.
    let encode = |v: &ScalarValue| -> Option<Vec<u8>> {
        if v.is_null() {
            return None;
        }
        let cast = v.cast_to(&ty).ok()?;
        if cast.cast_to(&v.data_type()).ok()? != *v {
            return None;
        }
        let batch = RecordBatch::try_new(key_schema.clone(), vec![cast.to_array().ok()?]).ok()?;
        encode_batch_keys(&batch).ok()?.pop()
    };
    let (mut start, mut end): (Vec<u8>, Option<Vec<u8>>) = (vec![], None);
    let mut lower = |k: Vec<u8>| {
        if k > start {
            start = k;
        }
    };
    let mut uppers: Vec<Option<Vec<u8>>> = vec![];
    let mut conjuncts = Vec::new();
    for f in filters {
        split_and(f, &mut conjuncts);
    }
    let is_key = |e: &Expr| matches!(e, Expr::Column(c) if c.name == *name);
    for c in conjuncts {
        match c {
            Expr::BinaryExpr(b) => {
                let (op, v) = match (&*b.left, &*b.right) {
                    (l, Expr::Literal(v, _)) if is_key(l) => (b.op, v),
                    (Expr::Literal(v, _), r) if is_key(r) => match b.op.swap() {
                        Some(op) => (op, v),
                        None => continue,
                    },
                    _ => continue,
                };
                let Some(k) = encode(v) else { continue };
                match op {
                    Operator::Eq => {
                        uppers.push(successor(&k));
                        lower(k);
                    }
                    Operator::GtEq => lower(k),
                    Operator::Gt => match successor(&k) {
                        Some(s) => lower(s),
                        None => uppers.push(Some(vec![])), // nothing is greater
                    },
                    Operator::Lt => uppers.push(Some(k)),
                    Operator::LtEq => uppers.push(successor(&k)),
                    _ => {}
                }
            }
            Expr::Between(bt) if !bt.negated && is_key(&bt.expr) => {
                if let (Expr::Literal(lo, _), Expr::Literal(hi, _)) = (&*bt.low, &*bt.high) {
                    if let (Some(lo), Some(hi)) = (encode(lo), encode(hi)) {
                        lower(lo);
                        uppers.push(successor(&hi));
                    }
                }
            }
            _ => {}
        }
    }
    for u in uppers.into_iter().flatten() {
        if end.as_ref().is_none_or(|e| u < *e) {
            end = Some(u);
        }
    }
    // An empty end stands for "unbounded" (also for "below everything", a
    // case the filter alone then handles); an end at or below the start
    // leaves nothing: [start, start).
    let end = match end {
        Some(e) if !e.is_empty() && e <= start => start.clone(),
        Some(e) => e,
        None => vec![],
    };
    Ok((start, end))
}

/// The smallest key above every key that starts with `prefix` (None: no
/// such key, the prefix is all 0xFF). Column encodings are prefix-free, so
/// this bounds the keys whose first column encodes to `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Whether rows in encoded-key order are in the SQL order of this type
/// (everything but jsonb, whose order DataFusion does not know).
fn key_order_is_sql_order(ty: &eon_common::SqlType) -> bool {
    !matches!(ty, eon_common::SqlType::Jsonb | eon_common::SqlType::Json)
}

fn split_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            split_and(&b.left, out);
            split_and(&b.right, out);
        }
        other => out.push(other),
    }
}

#[async_trait]
impl TableProvider for EonTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        Ok(filters
            .iter()
            .map(|f| {
                if ship(f).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        if self.user_read
            && let Some(actor) = state.config().get_extension::<crate::privileges::Actor>()
            && let Some(role) = &actor.0
        {
            crate::privileges::require(role, &self.def, "SELECT").map_err(to_df)?;
        }
        self.scan_unchecked(state, projection, filters, limit).await
    }
}

impl EonTable {
    /// The scan, its privileges already checked (a partition read through
    /// its partitioned table is checked there, as PostgreSQL does).
    pub(crate) async fn scan_unchecked(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let stmt = state
            .config()
            .get_extension::<StatementContext>()
            .ok_or_else(|| DataFusionError::Internal("scan planned outside a statement".into()))?;
        let (schema, columns): (SchemaRef, Vec<u32>) = match projection {
            Some(p) => (
                Arc::new(self.schema.project(p)?),
                p.iter().map(|&i| self.columns[i] as u32).collect(),
            ),
            None => (
                self.schema.clone(),
                self.columns.iter().map(|&c| c as u32).collect(),
            ),
        };
        let filter = conjunction(filters.iter().cloned());
        let filter_bytes = match &filter {
            Some(f) => ship(f)
                .ok_or_else(|| DataFusionError::Internal(format!("filter {f} cannot be pushed")))?,
            None => Bytes::new(),
        };
        let mut keys = None;
        let mut encoded_keys = None;
        let mut shards: Vec<u32> = (0..self.def.shard_count).collect();
        if let Some(tuples) = point_keys(&self.def, filters) {
            let (found, lookup, encoded) =
                lookup_keys(&self.def, &tuple_batch(&self.def, &tuples)?)?;
            shards = found;
            keys = Some(lookup);
            encoded_keys = Some(encoded);
        }
        let range = if keys.is_none() {
            key_range(&self.def, filters)?
        } else {
            (vec![], vec![])
        };
        let parts = parts_of(&self.def, shards)?;
        // Each partition is one shard, read in key order: the longest prefix
        // of the key columns that the projection keeps is the output order.
        let projected: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.columns[i]).collect(),
            None => self.columns.clone(),
        };
        let mut ordering = Vec::new();
        for &k in &self.def.primary_key {
            let Some(pos) = projected.iter().position(|&c| c == k) else {
                break;
            };
            if !key_order_is_sql_order(&self.def.columns[k].ty) {
                break;
            }
            ordering.push(PhysicalSortExpr::new(
                Arc::new(PhysicalColumn::new(schema.field(pos).name(), pos)),
                SortOptions {
                    descending: false,
                    nulls_first: false,
                },
            ));
        }
        let mut spec = ScanSpec {
            def: self.def.clone(),
            cluster: self.cluster.clone(),
            read_ts: stmt.read_ts,
            stmt: stmt.clone(),
            encoded_keys,
            columns,
            filter: filter.map(|f| (unqualify(f).to_string(), filter_bytes)),
            keys,
            range,
            parts,
            limit,
            schema,
            ordering,
        };
        // Nothing narrows the scan by primary key: an index may.
        if spec.keys.is_none()
            && spec.range.0.is_empty()
            && spec.range.1.is_empty()
            && let Some(index) = index_scan(&self.def, &spec, filters)?
        {
            return Ok(Arc::new(EonIndexScanExec::new(index, spec)));
        }
        let rows = self.estimate(&spec).await;
        // A read of a table without a primary key comes back in insertion
        // order, as PostgreSQL's heap returns a table that was only
        // inserted into: row ids grow with every insert (and update), so
        // the shards' rows are merged by row id (read, then dropped). An
        // UPDATE or DELETE finds its rows in that order too, so RETURNING
        // lists them as PostgreSQL does.
        if self.def.has_rowid() && spec.keys.is_none() {
            let rowid = self.def.primary_key[0];
            let visible = spec.schema.clone();
            let mut fields: Vec<_> = visible.fields().iter().cloned().collect();
            fields.push(Arc::new(self.def.arrow_schema().field(rowid).clone()));
            spec.columns.push(rowid as u32);
            spec.schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
            spec.ordering = vec![PhysicalSortExpr::new(
                Arc::new(PhysicalColumn::new(
                    &self.def.columns[rowid].name,
                    visible.fields().len(),
                )),
                SortOptions {
                    descending: false,
                    nulls_first: false,
                },
            )];
            return Ok(Arc::new(EonScanExec::merged(spec, visible).with_rows(rows)));
        }
        Ok(Arc::new(EonScanExec::new(spec).with_rows(rows)))
    }

    /// About how many rows `spec` reads, for the planner: the keys of a
    /// point lookup, else the table's size estimate
    /// ([`Cluster::table_rows`]) for the shards read, a filter keeping a
    /// fifth of them (DataFusion's own guess for a filter it knows nothing
    /// of), at most the limit.
    async fn estimate(&self, spec: &ScanSpec) -> Option<usize> {
        let rows = match &spec.keys {
            Some((n, _)) => *n,
            None => {
                let table = self.cluster.table_rows(&self.def).await? as f64;
                let read = spec.parts.len() as f64 / self.def.shard_count.max(1) as f64;
                let kept = if spec.filter.is_some() || spec.range != (vec![], vec![]) {
                    0.2
                } else {
                    1.0
                };
                (table * read * kept).ceil() as usize
            }
        };
        Some(spec.limit.map_or(rows, |l| rows.min(l)))
    }
}

/// A batch of key tuples (one value per key column) shaped as `def`'s key.
fn tuple_batch(
    def: &TableDef,
    tuples: &[Vec<ScalarValue>],
) -> Result<RecordBatch, DataFusionError> {
    let key_schema = def.key_schema();
    let mut arrays = Vec::with_capacity(key_schema.fields().len());
    for i in 0..key_schema.fields().len() {
        arrays.push(
            ScalarValue::iter_to_array(tuples.iter().map(|t| t[i].clone())).unwrap_or_else(|_| {
                datafusion::arrow::array::new_empty_array(key_schema.field(i).data_type())
            }),
        );
    }
    Ok(RecordBatch::try_new_with_options(
        key_schema,
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(tuples.len())),
    )?)
}

/// A point lookup of `keys` (a batch of `def`'s key columns, in key
/// order): the shards they hash to, the request's key count and batch,
/// and the encoded keys.
#[allow(clippy::type_complexity)]
fn lookup_keys(
    def: &TableDef,
    keys: &RecordBatch,
) -> Result<(Vec<u32>, (usize, Bytes), Vec<Vec<u8>>), DataFusionError> {
    let batch = RecordBatch::try_new_with_options(
        def.key_schema(),
        keys.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(keys.num_rows())),
    )?;
    let encoded = encode_batch_keys(&batch).map_err(to_df)?;
    let mut shards: Vec<u32> = encoded.iter().map(|k| def.shard_of_key(k)).collect();
    shards.sort();
    shards.dedup();
    let ipc = Bytes::from(ipc::encode_batch(&batch).map_err(to_df)?);
    Ok((shards, (batch.num_rows(), ipc), encoded))
}

/// (data engine, shard) of each shard to read.
fn parts_of(def: &TableDef, shards: Vec<u32>) -> Result<Vec<(u64, u32)>, DataFusionError> {
    shards
        .into_iter()
        .map(|s| {
            def.engine_of(s)
                .map(|e| (e, s))
                .ok_or_else(|| DataFusionError::Internal(format!("shard {s} has no placement")))
        })
        .collect()
}

/// Whether the conjuncts make `name` non-NULL in every row they keep (a
/// comparison, BETWEEN, IN or IS NOT NULL on it).
fn null_rejected(name: &str, conjuncts: &[&Expr]) -> bool {
    let is = |e: &Expr| matches!(e, Expr::Column(c) if c.name == name);
    conjuncts.iter().any(|c| match c {
        Expr::BinaryExpr(b)
            if matches!(
                b.op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
            ) =>
        {
            (is(&b.left) && matches!(&*b.right, Expr::Literal(v, _) if !v.is_null()))
                || (is(&b.right) && matches!(&*b.left, Expr::Literal(v, _) if !v.is_null()))
        }
        Expr::Between(bt) => !bt.negated && is(&bt.expr),
        Expr::InList(il) => !il.negated && is(&il.expr),
        Expr::IsNotNull(e) => is(e),
        _ => false,
    })
}

/// The read of an index that answers `filters` better than scanning the
/// table, if one does: a point lookup in a unique index (every indexed
/// column pinned), else a range of the first indexed column, bounded on
/// both sides before one side. Rows with NULL in an indexed column are not
/// in an index, so every indexed column must be NOT NULL or compared by
/// the filters.
fn index_scan(
    def: &TableDef,
    base: &ScanSpec,
    filters: &[Expr],
) -> Result<Option<IndexRead>, DataFusionError> {
    let mut conjuncts = Vec::new();
    for f in filters {
        split_and(f, &mut conjuncts);
    }
    let mut best: Option<(u8, IndexRead)> = None;
    for ix in &def.indexes {
        let storage = &ix.storage;
        let covered = ix
            .columns
            .iter()
            .all(|&c| !def.columns[c].nullable || null_rejected(&def.columns[c].name, &conjuncts));
        if !covered || !key_order_is_sql_order(&def.columns[ix.columns[0]].ty) {
            continue;
        }
        let tuples = if ix.unique {
            point_keys(storage, filters)
        } else {
            None
        };
        let range = match tuples {
            Some(_) => (vec![], vec![]),
            None => key_range(storage, filters)?,
        };
        let score = match (&tuples, range.0.is_empty(), range.1.is_empty()) {
            (Some(_), _, _) => 3,
            (None, false, false) => 2,
            (None, true, true) => continue,
            (None, _, _) => 1,
        };
        if best.as_ref().is_some_and(|(s, _)| *s >= score) {
            continue;
        }
        // Entries hold the row's primary key: that is what comes back.
        let entry = ix.entry_columns(def);
        let columns: Vec<u32> = def
            .primary_key
            .iter()
            .map(|k| {
                entry
                    .iter()
                    .position(|e| e == k)
                    .expect("entries hold the key") as u32
            })
            .collect();
        // Conditions on the entry's columns alone are checked on the
        // entries too, before any row is fetched.
        let on_entries: Vec<Expr> = conjuncts
            .iter()
            .filter(|c| {
                c.column_refs()
                    .iter()
                    .all(|col| storage.column_index(&col.name).is_some())
            })
            .map(|c| (*c).clone())
            .collect();
        let filter = conjunction(on_entries).and_then(|f| {
            let bytes = ship(&f)?;
            Some((unqualify(f).to_string(), bytes))
        });
        let (shards, keys, encoded_keys) = match &tuples {
            Some(t) => {
                let (shards, keys, encoded) = lookup_keys(storage, &tuple_batch(storage, t)?)?;
                (shards, Some(keys), Some(encoded))
            }
            None => ((0..storage.shard_count).collect(), None, None),
        };
        let schema = Arc::new(
            storage
                .arrow_schema()
                .project(&columns.iter().map(|&c| c as usize).collect::<Vec<_>>())?,
        );
        let spec = ScanSpec {
            def: storage.clone(),
            cluster: base.cluster.clone(),
            read_ts: base.read_ts,
            stmt: base.stmt.clone(),
            encoded_keys,
            columns,
            filter,
            keys,
            range,
            parts: parts_of(storage, shards)?,
            limit: None,
            schema,
            ordering: vec![],
        };
        best = Some((
            score,
            IndexRead {
                name: ix.name.clone(),
                spec: Arc::new(spec),
            },
        ));
    }
    Ok(best.map(|(_, r)| r))
}

#[derive(Clone)]
struct ScanSpec {
    def: Arc<TableDef>,
    cluster: Arc<Cluster>,
    read_ts: u64,
    stmt: Arc<StatementContext>,
    /// The point lookup's keys, encoded (for read spans).
    encoded_keys: Option<Vec<Vec<u8>>>,
    columns: Vec<u32>,
    /// Display form and serialized form.
    filter: Option<(String, Bytes)>,
    /// Number of keys and the key batch.
    keys: Option<(usize, Bytes)>,
    /// Encoded key range (start inclusive, end exclusive; empty: unbounded).
    range: (Vec<u8>, Vec<u8>),
    /// (data engine, shard) per partition.
    parts: Vec<(u64, u32)>,
    limit: Option<usize>,
    schema: SchemaRef,
    /// The order of each partition's rows (key columns in the output).
    ordering: Vec<PhysicalSortExpr>,
}

/// The `ExecutionPlan` methods of an operator without children (eon's
/// scans): nothing to visit, nothing to replace.
macro_rules! leaf_plan_methods {
    () => {
        fn children(
            &self,
        ) -> Vec<&::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>> {
            vec![]
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
            _children: Vec<::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>>,
            _options: ::datafusion::physical_plan::ReplaceChildrenOptions,
        ) -> ::datafusion::common::Result<
            ::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>,
        > {
            Ok(self)
        }

        fn with_new_children(
            self: ::std::sync::Arc<Self>,
            _children: Vec<::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>>,
        ) -> ::datafusion::common::Result<
            ::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>,
        > {
            Ok(self)
        }
    };
}
pub(crate) use leaf_plan_methods;

/// Streams rows from data engines, one partition per shard — or, for a
/// table read in insertion order, one partition merging every shard's rows
/// by row id.
pub struct EonScanExec {
    spec: Arc<ScanSpec>,
    props: Arc<PlanProperties>,
    /// About how many rows it reads (for DataFusion's join planning).
    rows: Option<usize>,
    /// Merged by row id (the spec's last column, ordered by it), with this
    /// schema: the spec's without the row id.
    merged: Option<SchemaRef>,
}

impl fmt::Debug for EonScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EonScanExec({})", self.spec.def.name)
    }
}

impl EonScanExec {
    fn new(spec: ScanSpec) -> EonScanExec {
        let eq = match LexOrdering::new(spec.ordering.clone()) {
            Some(o) => EquivalenceProperties::new_with_orderings(spec.schema.clone(), [o]),
            None => EquivalenceProperties::new(spec.schema.clone()),
        };
        let props = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(spec.parts.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        EonScanExec {
            spec: Arc::new(spec),
            props: Arc::new(props),
            rows: None,
            merged: None,
        }
    }

    /// One partition: the shards' rows merged by row id (the last column
    /// of `spec`, which is ordered by it), shaped as `schema`.
    fn merged(spec: ScanSpec, schema: SchemaRef) -> EonScanExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        EonScanExec {
            spec: Arc::new(spec),
            props: Arc::new(props),
            rows: None,
            merged: Some(schema),
        }
    }

    fn with_rows(self, rows: Option<usize>) -> EonScanExec {
        EonScanExec { rows, ..self }
    }
}

impl DisplayAs for EonScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        let cols: Vec<&str> = s
            .columns
            .iter()
            .take(
                self.merged
                    .as_ref()
                    .map_or(s.columns.len(), |m| m.fields().len()),
            )
            .map(|&c| s.def.columns[c as usize].name.as_str())
            .collect();
        write!(
            f,
            "EonScanExec: table={}, projection=[{}]",
            s.def.name,
            cols.join(", ")
        )?;
        if let Some((text, _)) = &s.filter {
            write!(f, ", filter={text} (on data engines)")?;
        }
        if let Some((n, _)) = &s.keys {
            write!(f, ", point lookup of {n} key(s)")?;
        }
        if !s.range.0.is_empty() || !s.range.1.is_empty() {
            write!(f, ", key range")?;
        }
        if let Some(l) = s.limit {
            write!(f, ", limit={l}")?;
        }
        write!(f, ", reads=[{}]", shards_by_engine(&s.parts))?;
        if self.merged.is_some() {
            write!(f, ", merged in insertion order")?;
        }
        Ok(())
    }
}

/// `data-engine-1: shards [0,3]; data-engine-2: shards [1]` (EXPLAIN).
fn shards_by_engine(parts: &[(u64, u32)]) -> String {
    let mut by_engine: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (e, shard) in parts {
        by_engine.entry(*e).or_default().push(shard.to_string());
    }
    by_engine
        .iter()
        .map(|(e, list)| format!("data-engine-{e}: shards [{}]", list.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ExecutionPlan for EonScanExec {
    fn name(&self) -> &str {
        "EonScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    crate::provider::leaf_plan_methods!();

    /// The size estimate: rows, and bytes at a guessed width per value
    /// (a fixed-width type's own, 24 for others), spread evenly over the
    /// partitions.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> datafusion::common::Result<Arc<Statistics>> {
        let schema = self.schema();
        let mut stats = Statistics::new_unknown(&schema);
        if let Some(rows) = self.rows {
            let parts = self.properties().partitioning.partition_count().max(1);
            let rows = match args.partition() {
                Some(_) => rows.div_ceil(parts),
                None => rows,
            };
            let width: usize = schema
                .fields()
                .iter()
                .map(|f| f.data_type().primitive_width().unwrap_or(24))
                .sum();
            stats.num_rows = Precision::Inexact(rows);
            stats.total_byte_size = Precision::Inexact(rows * width.max(1));
        }
        Ok(Arc::new(stats))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        if let Some(schema) = &self.merged {
            // DataFusion's own merge of sorted streams, over this scan's
            // per-shard partitions.
            let shards = Arc::new(EonScanExec::new((*self.spec).clone()));
            let order = LexOrdering::new(self.spec.ordering.clone()).ok_or_else(|| {
                DataFusionError::Internal("a merged scan needs its row order".into())
            })?;
            let merge = SortPreservingMergeExec::new(order, shards).with_fetch(self.spec.limit);
            let keep: Vec<usize> = (0..schema.fields().len()).collect();
            let out = schema.clone();
            let rows = merge
                .execute(0, ctx)?
                .map(move |b| adopt(&out, &b?.project(&keep)?));
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                rows,
            )));
        }
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.spec.schema.clone(),
            scan_partition(self.spec.clone(), partition),
        )))
    }
}

/// `batch`'s columns under `schema`: what a data engine sent for a plan
/// has the plan's columns, and takes the field names, metadata and
/// nullability DataFusion planned.
pub(crate) fn adopt(
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> datafusion::common::Result<RecordBatch> {
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        batch.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The batches of one Arrow IPC message from a data engine, adopted by
/// `schema`.
pub(crate) fn decode_as(
    schema: &SchemaRef,
    bytes: &[u8],
) -> datafusion::common::Result<Vec<RecordBatch>> {
    let (_, batches) = ipc::decode(bytes).map_err(to_df)?;
    batches.iter().map(|b| adopt(schema, b)).collect()
}

impl ScanSpec {
    /// The request reading `shards` (of one engine).
    fn request(&self, shards: Vec<u32>) -> pb::ScanRequest {
        pb::ScanRequest {
            txn_id: self.stmt.txn_id,
            table: Some(self.def.proto().clone()),
            shards,
            read_ts: self.read_ts,
            projection: Some(pb::Projection {
                columns: self.columns.clone(),
            }),
            filter: self
                .filter
                .as_ref()
                .map(|(_, b)| b.clone())
                .unwrap_or_default(),
            keys: self
                .keys
                .as_ref()
                .map(|(_, b)| b.clone())
                .unwrap_or_default(),
            limit: self.limit.unwrap_or(0) as u64,
            start_key: self.range.0.clone().into(),
            end_key: self.range.1.clone().into(),
        }
    }

    /// Record that `shards` of `engine` are read, when the statement tracks
    /// its reads (a SERIALIZABLE transaction refreshes them at commit).
    fn record_reads(&self, engine: u64, shards: &[u32]) {
        if !self.stmt.track_reads {
            return;
        }
        let mut reads = self.stmt.reads.lock().unwrap();
        for &shard in shards {
            let keys = self.encoded_keys.as_ref().map(|all| {
                all.iter()
                    .filter(|k| self.def.shard_of_key(k) == shard)
                    .cloned()
                    .collect()
            });
            reads.push(ReadSpan {
                engine,
                table: self.def.id,
                shard,
                keys,
            });
        }
    }
}

impl EonScanExec {
    /// This scan as a plan fragment's scan (see [`crate::fragment`]), which
    /// every data engine holding some of its shards runs over its own.
    /// None for a scan the query engine runs itself: point lookups, and a
    /// table merged in insertion order.
    /// The table it reads.
    pub(crate) fn table(&self) -> &Arc<TableDef> {
        &self.spec.def
    }

    /// The shards it reads, with their engines: its partitions, in order.
    pub(crate) fn shards(&self) -> &[(u64, u32)] {
        &self.spec.parts
    }

    /// The table column its output column `i` is.
    pub(crate) fn table_column(&self, i: usize) -> Option<usize> {
        self.spec.columns.get(i).map(|&c| c as usize)
    }

    pub(crate) fn fragment_scan(&self) -> datafusion::common::Result<Option<pb::FragmentScan>> {
        let s = &self.spec;
        if self.merged.is_some() || s.keys.is_some() {
            return Ok(None);
        }
        let mut ordering = Vec::new();
        for o in &s.ordering {
            match o.expr.downcast_ref::<PhysicalColumn>() {
                Some(c) => ordering.push(c.index() as u32),
                None => return Ok(None),
            }
        }
        Ok(Some(pb::FragmentScan {
            scan: Some(s.request(vec![])),
            parts: s
                .parts
                .iter()
                .map(|&(engine, shard)| pb::ScanPart { engine, shard })
                .collect(),
            schema: ipc::encode(&s.schema, &[]).map_err(to_df)?.into(),
            ordering,
        }))
    }

    /// The data engines holding the shards this scan reads, in id order.
    pub(crate) fn engines(&self) -> Vec<u64> {
        let mut engines: Vec<u64> = self.spec.parts.iter().map(|(e, _)| *e).collect();
        engines.sort();
        engines.dedup();
        engines
    }

    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.spec.cluster
    }

    pub(crate) fn statement(&self) -> &Arc<StatementContext> {
        &self.spec.stmt
    }

    /// Record the reads of every shard of this scan (see
    /// [`ScanSpec::record_reads`]): a stage running on the data engines
    /// read them.
    pub(crate) fn record_all_reads(&self) {
        for engine in self.engines() {
            let shards: Vec<u32> = self
                .spec
                .parts
                .iter()
                .filter(|(e, _)| *e == engine)
                .map(|(_, s)| *s)
                .collect();
            self.spec.record_reads(engine, &shards);
        }
    }
}

/// The rows of one partition (one shard) of a scan, streamed from the data
/// engine holding it; the read is recorded when the statement tracks reads.
fn scan_partition(
    spec: Arc<ScanSpec>,
    partition: usize,
) -> BoxStream<'static, datafusion::common::Result<RecordBatch>> {
    let schema = spec.schema.clone();
    let Some((engine, shard)) = spec.parts.get(partition).cloned() else {
        return Box::pin(futures::stream::empty());
    };
    let req = spec.request(vec![shard]);
    spec.record_reads(engine, &req.shards);
    let out_schema = schema.clone();
    let responses = futures::stream::once(async move {
        spec.cluster
            .with_engine(engine, SCAN_PATIENCE, true, |mut c| {
                let req = req.clone();
                async move { c.scan(req).await }
            })
            .await
            .map(|r| r.into_inner().map_err(|s| to_df(Error::from_status(s))))
            .map_err(to_df)
    })
    .try_flatten();
    let batches = responses
        .map(move |msg| -> datafusion::common::Result<Vec<RecordBatch>> {
            let msg = msg?;
            if msg.arrow_ipc.is_empty() {
                return Ok(vec![]);
            }
            decode_as(&out_schema, &msg.arrow_ipc)
        })
        .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok)))
        .try_flatten();
    Box::pin(batches)
}

/// Point lookups with more keys than this are split into several requests.
const LOOKUP_CHUNK: usize = 8192;

/// The rows of `def` with the primary keys in `keys` (a batch of its key
/// columns, in key order), projected to `columns`: a point lookup on the
/// shards the keys hash to, in the statement's snapshot.
pub(crate) async fn lookup(
    cluster: Arc<Cluster>,
    stmt: Arc<StatementContext>,
    def: Arc<TableDef>,
    keys: &RecordBatch,
    columns: Vec<u32>,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let schema = Arc::new(
        def.arrow_schema()
            .project(&columns.iter().map(|&c| c as usize).collect::<Vec<_>>())?,
    );
    let template = ScanSpec {
        def,
        cluster,
        read_ts: stmt.read_ts,
        stmt,
        encoded_keys: None,
        columns,
        filter: None,
        keys: None,
        range: (vec![], vec![]),
        parts: vec![],
        limit: None,
        schema,
        ordering: vec![],
    };
    lookup_stream(template, keys.clone())?.try_collect().await
}

/// Point lookups of `keys` with `template`'s projection, filter and limit,
/// a chunk of keys at a time.
fn lookup_stream(
    template: ScanSpec,
    keys: RecordBatch,
) -> Result<BoxStream<'static, datafusion::common::Result<RecordBatch>>, DataFusionError> {
    let mut parts = Vec::new();
    let mut offset = 0;
    while offset < keys.num_rows() {
        let chunk = keys.slice(offset, LOOKUP_CHUNK.min(keys.num_rows() - offset));
        offset += chunk.num_rows();
        let (shards, lookup, encoded) = lookup_keys(&template.def, &chunk)?;
        let spec = Arc::new(ScanSpec {
            keys: Some(lookup),
            encoded_keys: Some(encoded),
            parts: parts_of(&template.def, shards)?,
            ..template.clone()
        });
        parts.extend((0..spec.parts.len()).map(|p| (spec.clone(), p)));
    }
    Ok(Box::pin(
        futures::stream::iter(parts)
            .map(|(spec, p)| scan_partition(spec, p))
            .flatten(),
    ))
}

/// How a scan reads an index: its storage's entries (the key columns of the
/// rows they point at), per `spec`.
struct IndexRead {
    name: String,
    spec: Arc<ScanSpec>,
}

/// A scan through a secondary index: reads the index entries the filters
/// allow, then fetches those rows by primary key (with the filters checked
/// again on them, and the projection). One partition.
pub struct EonIndexScanExec {
    index: IndexRead,
    rows: Arc<ScanSpec>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for EonIndexScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EonIndexScanExec({}, {})",
            self.rows.def.name, self.index.name
        )
    }
}

impl EonIndexScanExec {
    fn new(index: IndexRead, rows: ScanSpec) -> EonIndexScanExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(rows.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        EonIndexScanExec {
            index,
            rows: Arc::new(rows),
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for EonIndexScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let (s, ix) = (&self.rows, &self.index.spec);
        write!(
            f,
            "EonIndexScanExec: table={}, index={}",
            s.def.name, self.index.name
        )?;
        match &ix.keys {
            Some((n, _)) => write!(f, " (point lookup of {n} key(s))")?,
            None => write!(f, " (key range)")?,
        }
        if let Some((text, _)) = &ix.filter {
            write!(f, ", index filter={text}")?;
        }
        let cols: Vec<&str> = s
            .columns
            .iter()
            .map(|&c| s.def.columns[c as usize].name.as_str())
            .collect();
        write!(f, ", projection=[{}]", cols.join(", "))?;
        if let Some((text, _)) = &s.filter {
            write!(f, ", filter={text} (on data engines)")?;
        }
        if let Some(l) = s.limit {
            write!(f, ", limit={l}")?;
        }
        write!(
            f,
            ", reads=[index {}; rows by key]",
            shards_by_engine(&ix.parts)
        )
    }
}

impl ExecutionPlan for EonIndexScanExec {
    fn name(&self) -> &str {
        "EonIndexScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    crate::provider::leaf_plan_methods!();

    fn execute(
        &self,
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let schema = self.rows.schema.clone();
        if partition > 0 {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        }
        let (index, rows) = (self.index.spec.clone(), self.rows.clone());
        let stream = futures::stream::once(async move {
            // The entries, from every shard of the index the read touches.
            let mut entries = Vec::new();
            for p in 0..index.parts.len() {
                let batches: Vec<RecordBatch> =
                    scan_partition(index.clone(), p).try_collect().await?;
                entries.extend(batches);
            }
            let keys = datafusion::arrow::compute::concat_batches(&index.schema, &entries)?;
            lookup_stream(ScanSpec::clone(&rows), keys)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
