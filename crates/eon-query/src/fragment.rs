//! Plan fragments: the part of a query that runs on the data engines.
//!
//! A distributed query is cut into *stages* ([`crate::stages`]): the query
//! engine keeps the top of the plan, and each stage below it is a piece of
//! DataFusion physical plan — a *fragment* — that every data engine holding
//! some of the data runs over its own shards. A fragment travels as bytes:
//! datafusion-proto's `PhysicalPlanNode`, with this module's
//! [`FragmentCodec`] for what DataFusion does not know. That is eon's scan:
//! the query engine's `EonScanExec` (which would ask data engines for rows
//! over the network) is written as a `FragmentScan` (the scan request and
//! every shard's engine), and on the data engine it becomes a
//! [`LocalScanExec`] reading the shards placed there straight from the
//! engine's store, at the statement's snapshot and in its transaction.
//! A shuffle (`stages::ShuffleExec`) is written as a `FragmentShuffle`: the
//! producing stage's own fragment bytes and engines. On the data engine it
//! becomes a [`ShuffleReadExec`], which asks each of those engines for
//! this task's partition (`RunFragment` with a `ShufflePart`) and streams
//! what they send, collecting what each did for EXPLAIN ANALYZE. A
//! broadcast is a shuffle whose producer ends in a [`BroadcastExec`]
//! (written as a `FragmentBroadcast`) instead of a hash repartitioning:
//! each of its partitions holds every row.
//!
//! eon's own expressions travel as extensions too: numeric arithmetic and
//! casts ([`NumericExpr`]) by their operation, and integer `+ - *` that
//! fails on overflow (which DataFusion's encoding would turn into wrapping
//! arithmetic) through [`Converter`].
//!
//! Functions travel by name. Both sides resolve them in the same registry,
//! [`functions`] — DataFusion's built-ins and eon's own functions that mean
//! the same on every node — and a plan using any function not there, or a
//! different function under a registry name (one built for a session's
//! settings), cannot be encoded: the codec refuses it, and that part of
//! the plan stays on the query engine. So does any operator or expression
//! DataFusion cannot serialize and this codec does not know.
//!
//! The data engine side is [`execute`] (and [`decode`], for a shuffle's
//! producer, whose partitions are read one by one): decode with the codec
//! and a [`Task`] — which task of its stage this is, the statement run it
//! belongs to, and the engine's [`LocalShards`] (its store and its peers,
//! implemented by `eon-data`) — apply the statement's DataFusion settings,
//! run the fragment's one output partition.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, not_impl_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{FunctionRegistry, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::prelude::SessionContext;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use eon_common::{Error, ipc};
use eon_proto::v1 as pb;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use prost::Message;

use crate::numeric::NumericExpr;
use crate::provider::{EonScanExec, adopt, decode_as, to_df};

/// A data engine's shards, as a fragment's scans read them, and its peers,
/// as a fragment's shuffle reads reach them.
pub trait LocalShards: Send + Sync + 'static {
    /// The engine's id: a fragment's scan reads the shards placed on it.
    fn engine_id(&self) -> u64;
    /// The rows of `req` (one table, the shards it names) at its snapshot,
    /// filtered and projected as it says.
    fn scan(&self, req: pb::ScanRequest) -> BoxStream<'static, Result<RecordBatch, Error>>;
    /// `DataEngine.RunFragment(req)` on data engine `engine` (this one
    /// too): how a task reads its partition of a shuffle.
    fn fragment(
        &self,
        engine: u64,
        req: pb::FragmentRequest,
    ) -> BoxStream<'static, Result<pb::FragmentResponse, Error>>;
}

/// One task of a stage, as a data engine runs it: what its fragment's
/// scans and shuffle reads need to know.
pub struct Task {
    pub local: Arc<dyn LocalShards>,
    /// Which of the stage's tasks this is: its shuffle reads read this
    /// partition.
    pub task: u32,
    /// The statement run the fragment belongs to (names its shuffles).
    pub query: u64,
    pub settings: HashMap<String, String>,
    /// What the stages feeding this task's shuffle reads did, per engine
    /// (sent back with the task's last message, for EXPLAIN ANALYZE).
    pub feeders: Mutex<Vec<pb::StageRun>>,
}

impl Task {
    pub fn new(local: Arc<dyn LocalShards>, req: &pb::FragmentRequest) -> Arc<Task> {
        Arc::new(Task {
            local,
            task: req.task,
            query: req.query,
            settings: req.settings.clone(),
            feeders: Mutex::default(),
        })
    }
}

/// The functions a fragment may call: DataFusion's built-ins and eon's
/// session-independent functions, the same registry on every node.
pub fn functions() -> &'static SessionContext {
    static FUNCTIONS: OnceLock<SessionContext> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let ctx = SessionContext::new();
        crate::pgfuncs::register(&ctx);
        ctx
    })
}

/// The codec of fragments (see the module doc). `task` is set on the data
/// engine, where scans are decoded into [`LocalScanExec`]s and shuffles
/// into [`ShuffleReadExec`]s.
#[derive(Default)]
pub struct FragmentCodec {
    task: Option<Arc<Task>>,
}

impl fmt::Debug for FragmentCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FragmentCodec")
    }
}

/// Whether `f` (named `name`) is the function the shared registry has
/// under that name.
fn check_same<T: PartialEq>(
    name: &str,
    f: &T,
    registered: datafusion::common::Result<Arc<T>>,
) -> datafusion::common::Result<()> {
    match registered {
        Ok(r) if *r == *f => Ok(()),
        _ => not_impl_err!("function {name} is not in the data engines' registry"),
    }
}

impl PhysicalExtensionCodec for FragmentCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let Some(task) = &self.task else {
            return not_impl_err!("a fragment's scan is decoded on a data engine only");
        };
        let msg = pb::FragmentNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("undecodable node: {e}")))?;
        match msg.node {
            Some(pb::fragment_node::Node::Scan(scan)) => {
                Ok(Arc::new(LocalScanExec::new(scan, task.local.clone())?))
            }
            Some(pb::fragment_node::Node::Shuffle(shuffle)) => {
                Ok(Arc::new(ShuffleReadExec::new(shuffle, task.clone())?))
            }
            Some(pb::fragment_node::Node::Broadcast(b)) => match inputs {
                [input] => Ok(Arc::new(BroadcastExec::new(
                    input.clone(),
                    b.partitions as usize,
                ))),
                _ => Err(DataFusionError::Internal(
                    "a broadcast has one input".into(),
                )),
            },
            None => Err(DataFusionError::Internal("empty fragment node".into())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> datafusion::common::Result<()> {
        let node = if let Some(b) = node.downcast_ref::<BroadcastExec>() {
            pb::fragment_node::Node::Broadcast(pb::FragmentBroadcast {
                partitions: b.partitions() as u32,
            })
        } else {
            let Some(scan) = node.downcast_ref::<EonScanExec>() else {
                return not_impl_err!("{} does not run on data engines", node.name());
            };
            let Some(msg) = scan.fragment_scan()? else {
                return not_impl_err!("this scan does not run on data engines");
            };
            pb::fragment_node::Node::Scan(msg)
        };
        pb::FragmentNode { node: Some(node) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn PhysicalExpr>,
        buf: &mut Vec<u8>,
        _ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> datafusion::common::Result<()> {
        match node.downcast_ref::<NumericExpr>() {
            Some(n) => {
                buf.extend(n.op_text().as_bytes());
                Ok(())
            }
            None => not_impl_err!("expression {node} does not run on data engines"),
        }
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        _ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        let text = std::str::from_utf8(buf)
            .map_err(|_| DataFusionError::Internal("undecodable expression".into()))?;
        if let Some(op) = text.strip_prefix(CHECKED) {
            let (Some(op), [left, right]) = (arithmetic_operator(op), inputs) else {
                return Err(DataFusionError::Internal(format!(
                    "bad checked arithmetic {text}"
                )));
            };
            return Ok(Arc::new(
                BinaryExpr::new(left.clone(), op, right.clone()).with_fail_on_overflow(true),
            ));
        }
        Ok(Arc::new(NumericExpr::from_op_text(text, inputs)?))
    }

    fn try_encode_udf(
        &self,
        node: &ScalarUDF,
        _buf: &mut Vec<u8>,
    ) -> datafusion::common::Result<()> {
        check_same(node.name(), node, functions().udf(node.name()))
    }

    fn try_encode_udaf(
        &self,
        node: &AggregateUDF,
        _buf: &mut Vec<u8>,
    ) -> datafusion::common::Result<()> {
        // An aggregate planned over input already in its ORDER BY's order
        // is a copy of the registry's marked so (array_agg's
        // `is_input_pre_ordered`), which DataFusion's encoding drops: the
        // engine's copy sorts for itself. Same implementation is enough.
        match functions().udaf(node.name()) {
            Ok(r) if same_type(r.inner().as_ref(), node.inner().as_ref()) => Ok(()),
            _ => not_impl_err!(
                "aggregate {} is not in the data engines' registry",
                node.name()
            ),
        }
    }

    fn try_encode_udwf(
        &self,
        node: &WindowUDF,
        _buf: &mut Vec<u8>,
    ) -> datafusion::common::Result<()> {
        check_same(node.name(), node, functions().udwf(node.name()))
    }
}

/// The text of a checked integer `+ - *` (see [`Converter`]).
const CHECKED: &str = "checked ";

/// The arithmetic operator written `text` (as `Operator` displays it).
pub fn arithmetic_operator(text: &str) -> Option<Operator> {
    Some(match text {
        "+" => Operator::Plus,
        "-" => Operator::Minus,
        "*" => Operator::Multiply,
        "/" => Operator::Divide,
        "%" => Operator::Modulo,
        _ => return None,
    })
}

/// datafusion-proto's conversion, except for integer arithmetic that fails
/// on overflow (`overflow::CheckedArithmetic`): DataFusion's encoding of a
/// `BinaryExpr` drops that flag, so such an expression travels as an
/// extension (`checked +`) that the codec decodes with the flag set.
struct Converter;

impl PhysicalProtoConverterExtension for Converter {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        proto.try_into_physical_plan_with_context(ctx, self)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> datafusion::common::Result<protobuf::PhysicalPlanNode> {
        // A shuffle carries its producing stage as bytes of its own, not
        // as an input the reading engine would decode and run.
        if let Some(shuffle) = plan.downcast_ref::<crate::stages::ShuffleExec>() {
            let node = pb::FragmentNode {
                node: Some(pb::fragment_node::Node::Shuffle(
                    shuffle.fragment_shuffle()?,
                )),
            };
            return Ok(protobuf::PhysicalPlanNode {
                physical_plan_type: Some(
                    protobuf::physical_plan_node::PhysicalPlanType::Extension(
                        protobuf::PhysicalExtensionNode {
                            node: node.encode_to_vec(),
                            inputs: vec![],
                        },
                    ),
                ),
            });
        }
        // A co-located join's input is only marked as such for the query
        // engine's planner: it runs as it is.
        if let Some(c) = plan.downcast_ref::<crate::stages::ColocatedExec>() {
            return self.execution_plan_to_proto(c.input(), codec);
        }
        protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(plan.clone(), codec, self)
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &datafusion::arrow::datatypes::Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> datafusion::common::Result<protobuf::PhysicalExprNode> {
        // An uncorrelated scalar subquery's value is worked out by a
        // `ScalarSubqueryExec` above the stage, on the query engine: a
        // fragment could not read it.
        if expr.is::<datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr>() {
            return not_impl_err!("a scalar subquery's value is not sent to data engines");
        }
        if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
            let checked = BinaryExpr::new(b.left().clone(), *b.op(), b.right().clone())
                .with_fail_on_overflow(true);
            if *b == checked {
                let inputs = vec![
                    self.physical_expr_to_proto(b.left(), codec)?,
                    self.physical_expr_to_proto(b.right(), codec)?,
                ];
                return Ok(protobuf::PhysicalExprNode {
                    expr_id: None,
                    expr_type: Some(protobuf::physical_expr_node::ExprType::Extension(
                        protobuf::PhysicalExtensionExprNode {
                            expr: format!("{CHECKED}{}", b.op()).into_bytes(),
                            inputs,
                        },
                    )),
                });
            }
        }
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

/// Whether two functions are of the same implementation.
pub(crate) fn same_type(a: &dyn std::any::Any, b: &dyn std::any::Any) -> bool {
    a.type_id() == b.type_id()
}

/// `plan` as fragment bytes, or why it cannot run on data engines.
pub fn encode(plan: Arc<dyn ExecutionPlan>) -> datafusion::common::Result<Bytes> {
    datafusion_proto::bytes::physical_plan_to_bytes_with_proto_converter(
        plan,
        &FragmentCodec::default(),
        &Converter,
    )
}

/// The DataFusion options of `config` that differ from their defaults:
/// what a fragment must run with to mean what the statement planned.
pub fn settings(config: &ConfigOptions) -> HashMap<String, String> {
    static DEFAULTS: OnceLock<HashMap<String, Option<String>>> = OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| {
        ConfigOptions::default()
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    });
    config
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion.") && defaults.get(&e.key) != Some(&e.value))
        .filter_map(|e| Some((e.key, e.value?)))
        .collect()
}

/// The setting that carries a statement's memory limit (bytes) to the
/// fragments it runs: each engine's part of the statement gets as much as
/// the query engine's.
pub const MEMORY_SETTING: &str = "eon.query_memory";

/// Decode a fragment on a data engine, for `task`: the plan, and the
/// context to run it in (the statement's DataFusion settings applied).
pub fn decode(
    plan: &[u8],
    task: &Arc<Task>,
) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>), Error> {
    let base = functions().state();
    let mut config = base.config().clone();
    for (k, v) in &task.settings {
        // An option this build does not know is left at its default.
        let _ = config.options_mut().set(k, v);
    }
    let mut state = crate::session::rebuild_state(&base, |b| b.with_config(config));
    if let Some(limit) = task
        .settings
        .get(MEMORY_SETTING)
        .and_then(|v| v.parse::<usize>().ok())
    {
        state = crate::session::with_memory_limit(&state, limit);
    }
    let ctx = state.task_ctx();
    let codec = FragmentCodec {
        task: Some(task.clone()),
    };
    let plan =
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(plan, &ctx, &codec)
            .map_err(|e| Error::internal(format!("undecodable plan fragment: {e}")))?;
    Ok((plan, ctx))
}

/// Run a fragment on a data engine for `task`: its output as one stream.
pub fn execute(plan: &[u8], task: &Arc<Task>) -> Result<SendableRecordBatchStream, Error> {
    let (plan, ctx) = decode(plan, task)?;
    let plan: Arc<dyn ExecutionPlan> = if plan.output_partitioning().partition_count() == 1 {
        plan
    } else {
        Arc::new(datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(plan))
    };
    plan.execute(0, ctx).map_err(crate::errors::from_df)
}

/// A fragment's scan on the data engine running it: one partition per
/// shard of the read placed on this engine, each read from the local store.
pub struct LocalScanExec {
    scan: pb::ScanRequest,
    table: String,
    shards: Vec<u32>,
    local: Arc<dyn LocalShards>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for LocalScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalScanExec({})", self.table)
    }
}

impl LocalScanExec {
    fn new(
        msg: pb::FragmentScan,
        local: Arc<dyn LocalShards>,
    ) -> datafusion::common::Result<LocalScanExec> {
        let scan = msg
            .scan
            .ok_or_else(|| DataFusionError::Internal("fragment scan without a request".into()))?;
        let table = scan
            .table
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let me = local.engine_id();
        let shards: Vec<u32> = msg
            .parts
            .iter()
            .filter(|p| p.engine == me)
            .map(|p| p.shard)
            .collect();
        let (schema, _) = ipc::decode(&msg.schema).map_err(to_df)?;
        let ordering: Vec<PhysicalSortExpr> = msg
            .ordering
            .iter()
            .map(|&c| {
                let c = c as usize;
                Ok(PhysicalSortExpr::new(
                    Arc::new(PhysicalColumn::new(
                        schema
                            .fields()
                            .get(c)
                            .ok_or_else(|| {
                                DataFusionError::Internal("ordering column out of range".into())
                            })?
                            .name(),
                        c,
                    )) as Arc<dyn PhysicalExpr>,
                    SortOptions {
                        descending: false,
                        nulls_first: false,
                    },
                ))
            })
            .collect::<datafusion::common::Result<_>>()?;
        let eq = match LexOrdering::new(ordering) {
            Some(o) => EquivalenceProperties::new_with_orderings(schema.clone(), [o]),
            None => EquivalenceProperties::new(schema.clone()),
        };
        let props = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(shards.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(LocalScanExec {
            scan,
            table,
            shards,
            local,
            schema,
            props: Arc::new(props),
        })
    }
}

impl DisplayAs for LocalScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LocalScanExec: table={}, shards={:?}",
            self.table, self.shards
        )
    }
}

impl ExecutionPlan for LocalScanExec {
    fn name(&self) -> &str {
        "LocalScanExec"
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
        let schema = self.schema.clone();
        let Some(&shard) = self.shards.get(partition) else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let req = pb::ScanRequest {
            shards: vec![shard],
            ..self.scan.clone()
        };
        let out = schema.clone();
        let rows = self
            .local
            .scan(req)
            .map(move |b| adopt(&out, &b.map_err(to_df)?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}

/// A task's partition of a shuffle, on the data engine running the task:
/// partition *i* (this task's number) of the producing stage's hash
/// repartitioning, read from every engine running that stage — the rows
/// move engine to engine, never through the query engine.
pub struct ShuffleReadExec {
    msg: pb::FragmentShuffle,
    task: Arc<Task>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for ShuffleReadExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShuffleReadExec(stage {})", self.msg.stage)
    }
}

impl ShuffleReadExec {
    fn new(msg: pb::FragmentShuffle, task: Arc<Task>) -> datafusion::common::Result<Self> {
        let (schema, _) = ipc::decode(&msg.schema).map_err(to_df)?;
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(ShuffleReadExec {
            msg,
            task,
            schema,
            props: Arc::new(props),
        })
    }
}

impl DisplayAs for ShuffleReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleReadExec: stage={}, partition={}, engines={:?}",
            self.msg.stage, self.task.task, self.msg.engines
        )
    }
}

/// A fragment's replies as record batches of `schema`. Each data reply is
/// one Arrow IPC message, counted by `on_data(its bytes, its batches)`; the
/// last reply carries no data but what the fragment did (rows, time, the
/// engines that fed it), handed to `on_end` with the bytes received.
pub(crate) fn reply_batches(
    replies: BoxStream<'static, Result<pb::FragmentResponse, Error>>,
    schema: SchemaRef,
    mut on_data: impl FnMut(usize, &[RecordBatch]) + Send + 'static,
    mut on_end: impl FnMut(pb::FragmentResponse, u64) + Send + 'static,
) -> BoxStream<'static, datafusion::common::Result<RecordBatch>> {
    let mut received = 0u64;
    replies
        .map(move |msg| -> datafusion::common::Result<Vec<RecordBatch>> {
            let msg = msg.map_err(to_df)?;
            if msg.arrow_ipc.is_empty() {
                on_end(msg, received);
                return Ok(vec![]);
            }
            received += msg.arrow_ipc.len() as u64;
            let batches = decode_as(&schema, &msg.arrow_ipc)?;
            on_data(msg.arrow_ipc.len(), &batches);
            Ok(batches)
        })
        .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

impl ExecutionPlan for ShuffleReadExec {
    fn name(&self) -> &str {
        "ShuffleReadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    crate::provider::leaf_plan_methods!();

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let stage = self.msg.stage;
        let streams = self.msg.engines.iter().enumerate().map(|(j, &engine)| {
            let req = pb::FragmentRequest {
                plan: self.msg.plan.clone(),
                settings: self.task.settings.clone(),
                task: j as u32,
                query: self.task.query,
                shuffle: Some(pb::ShufflePart {
                    stage,
                    partition: self.task.task,
                }),
            };
            let task = self.task.clone();
            reply_batches(
                self.task.local.fragment(engine, req),
                self.schema.clone(),
                |_, _| {},
                move |msg, bytes| {
                    // What that engine did, and what fed it.
                    let mut feeders = task.feeders.lock().unwrap();
                    feeders.push(pb::StageRun {
                        stage,
                        engine,
                        rows_scanned: msg.rows_scanned,
                        rows_returned: msg.rows_returned,
                        bytes,
                        elapsed_us: msg.elapsed_us,
                    });
                    feeders.extend(msg.feeders);
                },
            )
        });
        let rows = futures::stream::select_all(streams);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}

/// The rows a broadcast's producer keeps for its readers, with the memory
/// they are counted against; or why it could not get them.
type Kept = Result<Arc<(Vec<RecordBatch>, MemoryReservation)>, Arc<DataFusionError>>;

/// The producing end of a broadcast, on each engine running the build side
/// of a join: every row of its input (one partition) in each of its output
/// partitions, one per task of the stage reading it. Each task reads its
/// partition from every producing engine ([`ShuffleReadExec`]), so every
/// task gets every row. The input runs once, however many partitions are
/// read; its batches are shared by the partitions, not copied, and counted
/// once against the statement's memory limit.
pub struct BroadcastExec {
    input: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
    kept: Mutex<Option<futures::future::Shared<futures::future::BoxFuture<'static, Kept>>>>,
}

impl fmt::Debug for BroadcastExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BroadcastExec({})", self.partitions())
    }
}

impl BroadcastExec {
    /// `input`'s rows (its partitions merged) in each of `partitions`.
    pub fn new(input: Arc<dyn ExecutionPlan>, partitions: usize) -> BroadcastExec {
        let input: Arc<dyn ExecutionPlan> = if input.output_partitioning().partition_count() == 1 {
            input
        } else {
            Arc::new(
                datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(input),
            )
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        BroadcastExec {
            input,
            props: Arc::new(props),
            kept: Mutex::default(),
        }
    }

    pub fn partitions(&self) -> usize {
        self.props.partitioning.partition_count()
    }
}

impl DisplayAs for BroadcastExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BroadcastExec: partitions={}", self.partitions())
    }
}

impl ExecutionPlan for BroadcastExec {
    fn name(&self) -> &str {
        "BroadcastExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    crate::stages::one_child_plan_methods!(input, "a broadcast has one input", |b, input| Ok(
        Arc::new(BroadcastExec::new(input, b.partitions()))
    ));

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        if partition >= self.partitions() {
            return Err(DataFusionError::Internal(format!(
                "a broadcast has no partition {partition}"
            )));
        }
        let kept = {
            let mut kept = self.kept.lock().unwrap();
            kept.get_or_insert_with(|| {
                let input = self.input.clone();
                async move {
                    let reservation =
                        MemoryConsumer::new("BroadcastExec").register(ctx.memory_pool());
                    let mut rows = input.execute(0, ctx).map_err(Arc::new)?;
                    let mut batches = Vec::new();
                    while let Some(batch) = rows.next().await {
                        let batch = batch.map_err(Arc::new)?;
                        reservation
                            .try_grow(batch.get_array_memory_size())
                            .map_err(Arc::new)?;
                        batches.push(batch);
                    }
                    Ok(Arc::new((batches, reservation)))
                }
                .boxed()
                .shared()
            })
            .clone()
        };
        let rows = futures::stream::once(kept)
            .map(
                |kept| -> BoxStream<'static, datafusion::common::Result<RecordBatch>> {
                    match kept {
                        Ok(kept) => {
                            let n = kept.0.len();
                            futures::stream::iter((0..n).map(move |i| Ok(kept.0[i].clone())))
                                .boxed()
                        }
                        Err(e) => {
                            futures::stream::once(async move { Err(DataFusionError::Shared(e)) })
                                .boxed()
                        }
                    }
                },
            )
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    fn column(name: &str, i: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(PhysicalColumn::new(name, i))
    }

    #[test]
    fn numeric_operations_travel_as_text() {
        let sum = NumericExpr::arithmetic(column("a", 0), Operator::Multiply, column("b", 1));
        assert_eq!(sum.op_text(), "arithmetic *");
        let back = NumericExpr::from_op_text(&sum.op_text(), &[column("a", 0), column("b", 1)]);
        assert_eq!(back.unwrap(), sum);
        let cast = NumericExpr::cast(column("a", 0), DataType::Decimal128(12, 2));
        let back = NumericExpr::from_op_text(&cast.op_text(), &[column("a", 0)]);
        assert_eq!(back.unwrap(), cast);
        assert!(
            NumericExpr::from_op_text("arithmetic ^", &[column("a", 0), column("b", 1)]).is_err()
        );
        assert!(NumericExpr::from_op_text("cast nonsense", &[column("a", 0)]).is_err());
    }

    #[test]
    fn only_changed_settings_travel() {
        let mut config = ConfigOptions::default();
        assert!(settings(&config).is_empty());
        config
            .set("datafusion.execution.time_zone", "+02:00")
            .unwrap();
        config
            .set("datafusion.execution.batch_size", "1024")
            .unwrap();
        let s = settings(&config);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s["datafusion.execution.batch_size"], "1024");
    }

    #[test]
    fn functions_built_for_a_session_do_not_travel() {
        let codec = FragmentCodec::default();
        let mut buf = Vec::new();
        // The registry's own functions do.
        let abs = functions().udf("abs").unwrap();
        assert!(codec.try_encode_udf(&abs, &mut buf).is_ok());
        let sum = functions().udaf("sum").unwrap();
        assert!(codec.try_encode_udaf(&sum, &mut buf).is_ok());
        // A function of the same name made elsewhere does not.
        let other = datafusion::logical_expr::create_udf(
            "abs",
            vec![DataType::Int64],
            DataType::Int64,
            datafusion::logical_expr::Volatility::Immutable,
            Arc::new(|args| Ok(args[0].clone())),
        );
        assert!(codec.try_encode_udf(&other, &mut buf).is_err());
        let unknown = datafusion::logical_expr::create_udf(
            "eon_not_registered",
            vec![],
            DataType::Int64,
            datafusion::logical_expr::Volatility::Immutable,
            Arc::new(|args| Ok(args[0].clone())),
        );
        assert!(codec.try_encode_udf(&unknown, &mut buf).is_err());
    }

    #[test]
    fn rebuilt_states_keep_what_each_function_name_means() {
        // A function registered over a built-in that has an alias
        // (DataFusion's to_char is also date_format).
        let ctx = SessionContext::new();
        ctx.register_udf(datafusion::logical_expr::create_udf(
            "to_char",
            vec![DataType::Int64],
            DataType::Utf8,
            datafusion::logical_expr::Volatility::Immutable,
            Arc::new(|args| Ok(args[0].clone())),
        ));
        let base = ctx.state();
        let mine = base.scalar_functions()["to_char"].clone();
        for _ in 0..30 {
            let state = crate::session::rebuild_state(&base, |b| b);
            let now = &state.scalar_functions()["to_char"];
            assert!(same_type(now.inner().as_ref(), mine.inner().as_ref()));
            assert!(state.scalar_functions().contains_key("date_format"));
        }
    }
}
