//! eon tables inside DataFusion: the schema provider, the table provider and
//! the scan operator.
//!
//! DataFusion plans every SELECT. It finds eon's tables through
//! [`EonSchema`] (backed by the catalog cache in [`Cluster`]), and asks each
//! [`EonTable`] for a scan, handing it the projection, the filters it may
//! evaluate, and a limit. The table answers with an [`EonScanExec`] whose
//! partitions are data engines: partition *i* streams the rows of the shards
//! that engine *i* holds. What the scan pushes down:
//!
//! - **projection**: only the needed columns are requested;
//! - **filters**: every deterministic filter made of DataFusion built-ins is
//!   serialized (datafusion-proto) and evaluated by the data engines, so only
//!   matching rows cross the network — DataFusion is told they are exact;
//! - **point lookups**: `pk = constant` (or `pk IN (...)`) on every key
//!   column becomes a list of keys, the shards they hash to, and only the
//!   engines holding those shards are asked;
//! - **limit**, when DataFusion passes one.
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
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Constraint, Constraints, DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, utils::conjunction};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::Serializeable;
use eon_common::key::{encode_batch_keys, shard_of};
use eon_common::{Error, TableDef, ipc};
use eon_proto::v1 as pb;
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

/// The `public` schema: eon's tables.
#[derive(Debug)]
pub struct EonSchema {
    pub cluster: Arc<Cluster>,
    pub name: String,
}

#[async_trait]
impl SchemaProvider for EonSchema {
    fn table_names(&self) -> Vec<String> {
        self.cluster.table_names(&self.name)
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let (base, hidden) = match name.strip_suffix(DML_SUFFIX) {
            Some(b) => (b, true),
            None => (name, false),
        };
        Ok(self
            .cluster
            .table(&self.name, base)
            .map(|def| Arc::new(EonTable::new(def, self.cluster.clone(), hidden)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.cluster.table(&self.name, name.strip_suffix(DML_SUFFIX).unwrap_or(name)).is_some()
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
}

impl EonTable {
    pub fn new(def: Arc<TableDef>, cluster: Arc<Cluster>, with_hidden: bool) -> EonTable {
        let columns: Vec<usize> =
            (0..def.columns.len()).filter(|&i| with_hidden || !def.columns[i].hidden).collect();
        let schema = Arc::new(def.arrow_schema().project(&columns).expect("columns exist"));
        let pk: Option<Vec<usize>> =
            def.primary_key.iter().map(|k| columns.iter().position(|c| c == k)).collect();
        let constraints = match pk {
            Some(pk) => Constraints::new_unverified(vec![Constraint::PrimaryKey(pk)]),
            None => Constraints::default(),
        };
        EonTable { def, cluster, schema, columns, constraints }
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
            Expr::Column(c) if c.relation.is_some() => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
    .unwrap_or_else(|_| Expr::Literal(ScalarValue::Boolean(Some(true)), None))
}

/// Serialize a filter for a data engine, or None when one could not
/// evaluate it exactly as DataFusion would here.
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
        ) {
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
        let Some(idx) = def.column_index(&col.name) else { continue };
        let Some(pos) = def.primary_key.iter().position(|&k| k == idx) else { continue };
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

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
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
        let stmt = state
            .config()
            .get_extension::<StatementContext>()
            .ok_or_else(|| DataFusionError::Internal("scan planned outside a statement".into()))?;
        let (schema, columns): (SchemaRef, Vec<u32>) = match projection {
            Some(p) => (Arc::new(self.schema.project(p)?), p.iter().map(|&i| self.columns[i] as u32).collect()),
            None => (self.schema.clone(), self.columns.iter().map(|&c| c as u32).collect()),
        };
        let filter = conjunction(filters.iter().cloned());
        let filter_bytes = match &filter {
            Some(f) => ship(f).ok_or_else(|| DataFusionError::Internal(format!("filter {f} cannot be pushed")))?,
            None => Bytes::new(),
        };
        let mut keys = None;
        let mut encoded_keys = None;
        let mut shards: Vec<u32> = (0..self.def.shard_count).collect();
        if let Some(tuples) = point_keys(&self.def, filters) {
            let key_schema = self.def.key_schema();
            let mut arrays = Vec::with_capacity(key_schema.fields().len());
            for i in 0..key_schema.fields().len() {
                arrays.push(ScalarValue::iter_to_array(tuples.iter().map(|t| t[i].clone()))
                    .unwrap_or_else(|_| datafusion::arrow::array::new_empty_array(key_schema.field(i).data_type())));
            }
            let batch = RecordBatch::try_new_with_options(
                key_schema,
                arrays,
                &RecordBatchOptions::new().with_row_count(Some(tuples.len())),
            )?;
            let encoded = encode_batch_keys(&batch).map_err(to_df)?;
            shards = encoded.iter().map(|k| shard_of(k, self.def.shard_count)).collect();
            shards.sort();
            shards.dedup();
            keys = Some((tuples.len(), Bytes::from(ipc::encode_batch(&batch).map_err(to_df)?)));
            encoded_keys = Some(encoded);
        }
        let mut by_engine: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for s in shards {
            let engine = self.def.engine_of(s).ok_or_else(|| DataFusionError::Internal(format!("shard {s} has no placement")))?;
            by_engine.entry(engine).or_default().push(s);
        }
        Ok(Arc::new(EonScanExec::new(ScanSpec {
            def: self.def.clone(),
            cluster: self.cluster.clone(),
            read_ts: stmt.read_ts,
            stmt: stmt.clone(),
            encoded_keys,
            columns,
            filter: filter.map(|f| (unqualify(f).to_string(), filter_bytes)),
            keys,
            parts: by_engine.into_iter().collect(),
            limit,
            schema,
        })))
    }
}

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
    /// (data engine, its shards) per partition.
    parts: Vec<(u64, Vec<u32>)>,
    limit: Option<usize>,
    schema: SchemaRef,
}

/// Streams rows from data engines, one partition per engine.
pub struct EonScanExec {
    spec: Arc<ScanSpec>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for EonScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EonScanExec({})", self.spec.def.name)
    }
}

impl EonScanExec {
    fn new(spec: ScanSpec) -> EonScanExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(spec.schema.clone()),
            Partitioning::UnknownPartitioning(spec.parts.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        EonScanExec { spec: Arc::new(spec), props: Arc::new(props) }
    }
}

impl DisplayAs for EonScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        let cols: Vec<&str> = s.columns.iter().map(|&c| s.def.columns[c as usize].name.as_str()).collect();
        write!(f, "EonScanExec: table={}, projection=[{}]", s.def.name, cols.join(", "))?;
        if let Some((text, _)) = &s.filter {
            write!(f, ", filter={text} (on data engines)")?;
        }
        if let Some((n, _)) = &s.keys {
            write!(f, ", point lookup of {n} key(s)")?;
        }
        if let Some(l) = s.limit {
            write!(f, ", limit={l}")?;
        }
        let parts: Vec<String> = s
            .parts
            .iter()
            .map(|(e, shards)| {
                let list: Vec<String> = shards.iter().map(|x| x.to_string()).collect();
                format!("data-engine-{e}: shards [{}]", list.join(","))
            })
            .collect();
        write!(f, ", reads=[{}]", parts.join("; "))
    }
}

impl ExecutionPlan for EonScanExec {
    fn name(&self) -> &str {
        "EonScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
    ) -> datafusion::common::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> datafusion::common::Result<SendableRecordBatchStream> {
        let spec = self.spec.clone();
        let schema = spec.schema.clone();
        let Some((engine, shards)) = spec.parts.get(partition).cloned() else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::empty())));
        };
        if spec.stmt.track_reads {
            let mut reads = spec.stmt.reads.lock().unwrap();
            for &shard in &shards {
                let keys = spec.encoded_keys.as_ref().map(|all| {
                    all.iter().filter(|k| shard_of(k, spec.def.shard_count) == shard).cloned().collect()
                });
                reads.push(ReadSpan { engine, table: spec.def.id, shard, keys });
            }
        }
        let req = pb::ScanRequest {
            txn_id: spec.stmt.txn_id,
            table: Some(spec.def.proto().clone()),
            shards,
            read_ts: spec.read_ts,
            projection: Some(pb::Projection { columns: spec.columns.clone() }),
            filter: spec.filter.as_ref().map(|(_, b)| b.clone()).unwrap_or_default(),
            keys: spec.keys.as_ref().map(|(_, b)| b.clone()).unwrap_or_default(),
            limit: spec.limit.unwrap_or(0) as u64,
        };
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
                let (_, batches) = ipc::decode(&msg.arrow_ipc).map_err(to_df)?;
                batches
                    .into_iter()
                    .map(|b| {
                        // Same columns; adopt the plan's schema (field metadata
                        // and nullability as DataFusion planned them).
                        Ok(RecordBatch::try_new_with_options(
                            out_schema.clone(),
                            b.columns().to_vec(),
                            &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
                        )?)
                    })
                    .collect()
            })
            .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
