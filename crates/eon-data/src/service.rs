//! The `DataEngine` gRPC service and the `eon data-engine` process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use eon_common::key::{encode_batch_keys, encode_key};
use eon_common::stats::Recorder;
use eon_common::value::{display_value, rows_from_batch};
use eon_common::{Error, TableDef, ipc, node};
use eon_proto::v1 as pb;
use eon_proto::v1::data_engine_server::{DataEngine, DataEngineServer};
use eon_storage::{Store, StoreOptions, TxnStatus, WriteKind, WriteMeta, WriteOp};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::replicas::Replicas;
use crate::scan::{IpcSink, ScanCounts, ScanPlan, Sink, run_scan};
use datafusion::physical_plan::ExecutionPlanProperties;
use futures::StreamExt;

pub struct DataEngineService {
    id: u64,
    /// This service, for the plan fragments it runs (their scans read
    /// through it).
    me: std::sync::Weak<DataEngineService>,
    store: Arc<Store>,
    ctx: SessionContext,
    stats: Arc<Recorder>,
    rows_scanned: Arc<AtomicU64>,
    rows_returned: Arc<AtomicU64>,
    bytes_returned: Arc<AtomicU64>,
    scans: Arc<AtomicU64>,
    fragments: Arc<AtomicU64>,
    /// Bytes of shuffle partitions sent to other tasks (engine to engine).
    bytes_shuffled: Arc<AtomicU64>,
    /// The other data engines, as shuffle reads reach them.
    peers: Arc<eon_query::cluster::Cluster>,
    /// Shuffles this engine produces, by (query, stage): run once, read
    /// partition by partition by the tasks of the stage they feed.
    shuffles: Mutex<HashMap<(u64, u32), Shuffle>>,
    point_lookups: Arc<AtomicU64>,
    rows_written: Arc<AtomicU64>,
    conflicts: Arc<AtomicU64>,
    /// This incarnation of the engine (see `WriteResponse.epoch`).
    epoch: u64,
    /// Tables whose writes are refused: until the instant (`FenceTable`: a
    /// table being rewritten), or for good (None: dropped — a query engine
    /// whose catalog is a moment old must not bring a dropped table's
    /// shards back). Forgotten at a restart; see `serve`.
    fences: Mutex<HashMap<u64, Option<Instant>>>,
    /// Writes hold it shared from the fence check until they are staged; a
    /// fence is put up holding it exclusively, so no write that passed the
    /// check is still on its way when the fence waits for the table's
    /// staged writes to resolve.
    fence_gate: tokio::sync::RwLock<()>,
    /// Scans under way, by table: dropping a table's data waits for them.
    reads: Arc<Reads>,
    /// This engine's copies of replicated shards.
    replicas: Arc<Replicas>,
}

/// How long dropping a table's data waits for the scans under way on it
/// (each reads at a snapshot from before the table was dropped or
/// rewritten, where its rows are still the answer).
const DROP_WAIT: Duration = Duration::from_secs(30);

/// The scans under way on each table. A table's data is dropped — at
/// `DROP TABLE`, or when `ALTER TABLE` has swapped in the rewritten copy —
/// while query engines may still be reading it at a snapshot from before;
/// pulling the rows from under them would make them answer with a part of
/// the table. So a drop first refuses new scans (40001: the statement runs
/// again with the catalog that no longer names the table) and then waits
/// for the running ones to finish. One that outlives [`DROP_WAIT`] fails
/// instead of answering with what was left.
#[derive(Default)]
struct Reads {
    tables: Mutex<ReadTables>,
    finished: tokio::sync::Notify,
}

#[derive(Default)]
struct ReadTables {
    running: HashMap<u64, usize>,
    /// Tables dropped while scans were still reading them.
    torn: std::collections::HashSet<u64>,
}

/// One scan under way on a table (see [`Reads`]).
struct Reading {
    reads: Arc<Reads>,
    table: u64,
}

impl Reading {
    /// Whether the table's data is still all there (it was not dropped
    /// from under this scan).
    fn intact(&self) -> bool {
        !self.reads.tables.lock().unwrap().torn.contains(&self.table)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut t = self.reads.tables.lock().unwrap();
        if let Some(n) = t.running.get_mut(&self.table) {
            *n -= 1;
            if *n == 0 {
                t.running.remove(&self.table);
            }
        }
        drop(t);
        self.reads.finished.notify_waiters();
    }
}

fn dropped(name: &str) -> Error {
    Error::write_conflict(format!(
        "could not serialize access: relation \"{name}\" was dropped or rewritten while it was read"
    ))
}

impl DataEngineService {
    pub fn new(
        id: u64,
        store: Arc<Store>,
        peers: Arc<eon_query::cluster::Cluster>,
        replicas: Arc<Replicas>,
    ) -> Arc<DataEngineService> {
        let stats = Recorder::new("data-engine", id);
        replicas.count_into(crate::replicas::Counters {
            replicas: stats.counter("shard_replicas"),
            leading: stats.counter("shard_leaders"),
            applied: stats.counter("raft_applied"),
            changing: stats.counter("shard_groups_changing"),
            catalog: stats.counter("catalog_version"),
        });
        Arc::new_cyclic(|me| DataEngineService {
            id,
            me: me.clone(),
            store,
            ctx: SessionContext::new(),
            rows_scanned: stats.counter("rows_scanned"),
            rows_returned: stats.counter("rows_returned"),
            bytes_returned: stats.counter("bytes_returned"),
            scans: stats.counter("scans"),
            fragments: stats.counter("fragments"),
            bytes_shuffled: stats.counter("bytes_shuffled"),
            peers,
            shuffles: Mutex::default(),
            point_lookups: stats.counter("point_lookups"),
            rows_written: stats.counter("rows_written"),
            conflicts: stats.counter("write_conflicts"),
            stats,
            epoch: uuid::Uuid::new_v4().as_u64_pair().0 | 1,
            fences: Mutex::new(HashMap::new()),
            fence_gate: tokio::sync::RwLock::new(()),
            reads: Arc::default(),
            replicas,
        })
    }

    /// Refuse a write to a fenced table, with a serialization failure: the
    /// statement runs again (at a new snapshot, with the catalog that
    /// names the rewritten table) or the client retries.
    fn check_fences(&self, tables: &[TableDef]) -> Result<(), Error> {
        let fences = self.fences.lock().unwrap();
        if fences.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        match tables.iter().find(|t| {
            fences
                .get(&t.id)
                .is_some_and(|until| until.is_none_or(|u| u > now))
        }) {
            Some(t) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                Err(Error::write_conflict(format!(
                    "could not serialize access: relation \"{}\" was dropped or is being rewritten",
                    t.name
                )))
            }
            None => Ok(()),
        }
    }

    /// Refuse to finalize a transaction whose writes another incarnation of
    /// this engine took: staged writes are logged without waiting for the
    /// disk, so a restart may have lost some of them.
    fn check_epoch(&self, epoch: u64) -> Result<(), Error> {
        if epoch != 0 && epoch != self.epoch {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            return Err(Error::write_conflict(format!(
                "data engine {} restarted while the transaction was open; retry the transaction",
                self.id
            )));
        }
        Ok(())
    }

    /// Register a scan of `table`, or refuse it if the table is dropped
    /// (see [`Reads`]).
    fn start_reading(&self, table: &TableDef) -> Result<Reading, Error> {
        // The fences' lock is held while the scan is counted, so a drop
        // (which marks the table under that lock) either sees it or is
        // seen by it.
        let fences = self.fences.lock().unwrap();
        if fences.get(&table.id) == Some(&None) {
            return Err(dropped(&table.name));
        }
        *self
            .reads
            .tables
            .lock()
            .unwrap()
            .running
            .entry(table.id)
            .or_default() += 1;
        Ok(Reading {
            reads: self.reads.clone(),
            table: table.id,
        })
    }

    /// Wait up to [`DROP_WAIT`] for the scans of a table marked dropped to
    /// finish; the ones still running then are told their table was torn.
    async fn wait_for_reads(&self, table: u64) {
        let deadline = tokio::time::Instant::now() + DROP_WAIT;
        loop {
            // Registered before the count is read: no wake-up is missed.
            let finished = self.reads.finished.notified();
            {
                let mut t = self.reads.tables.lock().unwrap();
                if !t.running.contains_key(&table) {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        table,
                        "dropping a table's data under scans still reading it"
                    );
                    t.torn.insert(table);
                    return;
                }
            }
            let _ = tokio::time::timeout_at(deadline, finished).await;
        }
    }

    fn table(&self, t: Option<pb::Table>) -> Result<TableDef, Error> {
        let table =
            TableDef::from_proto(t.ok_or_else(|| Error::internal("request without a table"))?)?;
        // Segments of the table are written with its schema.
        self.store.note_schema(table.id, table.arrow_schema());
        Ok(table)
    }

    /// Every shard a request names must be placed on this engine (or, when
    /// replicated, have a copy here).
    fn check_placement(&self, table: &TableDef, shard: u32) -> Result<(), Error> {
        let copies = table
            .proto()
            .replicas
            .get(shard as usize)
            .map(|r| r.engines.as_slice())
            .unwrap_or(&[]);
        match table.engine_of(shard) {
            Some(e) if e == self.id => Ok(()),
            _ if copies.contains(&self.id) => Ok(()),
            other => Err(Error::internal(format!(
                "shard {shard} of table {} is placed on data engine {other:?}, not on {}",
                table.name, self.id
            ))),
        }
    }

    fn decode_op(&self, op: pb::WriteOp) -> Result<(TableDef, WriteOp), Error> {
        let table = self.table(op.table)?;
        self.check_placement(&table, op.shard)?;
        let kind = match pb::WriteKind::try_from(op.kind) {
            Ok(pb::WriteKind::Insert) => WriteKind::Insert,
            Ok(pb::WriteKind::InsertIgnore) => WriteKind::InsertIgnore,
            Ok(pb::WriteKind::Put) => WriteKind::Put,
            Ok(pb::WriteKind::Delete) => WriteKind::Delete,
            _ => return Err(Error::internal("unknown write kind")),
        };
        let batch = ipc::decode_one(&op.rows)?;
        let expected = if kind == WriteKind::Delete {
            table.key_schema()
        } else {
            table.arrow_schema().clone()
        };
        let got: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let want: Vec<_> = expected
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        if got != want {
            return Err(Error::internal(format!(
                "write to {} carries columns {got:?}, expected {want:?}",
                table.name
            )));
        }
        let rows: Vec<(Vec<u8>, Option<Vec<eon_common::Value>>)> = if kind == WriteKind::Delete {
            encode_batch_keys(&batch)?
                .into_iter()
                .map(|k| (k, None))
                .collect()
        } else {
            rows_from_batch(&batch)?
                .into_iter()
                .map(|row| {
                    Ok((
                        encode_key(table.primary_key.iter().map(|&i| &row[i]))?,
                        Some(row),
                    ))
                })
                .collect::<Result<_, Error>>()?
        };
        if let Some((key, _)) = rows.iter().find(|(k, _)| table.shard_of_key(k) != op.shard) {
            return Err(Error::internal(format!(
                "key {key:?} does not belong to shard {}",
                op.shard
            )));
        }
        let shard = (table.id, op.shard);
        Ok((table, WriteOp { shard, kind, rows }))
    }

    async fn write(&self, req: pb::WriteRequest) -> Result<pb::WriteResponse, Error> {
        let mut tables = Vec::with_capacity(req.ops.len());
        let mut ops = Vec::with_capacity(req.ops.len());
        for op in req.ops {
            let (t, o) = self.decode_op(op)?;
            tables.push(t);
            ops.push(o);
        }
        // A replicated shard is written where its group's leader is (each
        // shard checked once, however many ops name it).
        let mut checked = std::collections::HashSet::new();
        for (table, op) in tables.iter().zip(&ops) {
            if checked.insert(op.shard) {
                self.replicas.serving(table.proto(), op.shard.1).await?;
            }
        }
        let _gate = self.fence_gate.read().await;
        self.check_fences(&tables)?;
        let result = self
            .store
            .write(
                WriteMeta {
                    txn: req.txn_id,
                    read_ts: req.read_ts,
                    one_phase: req.one_phase,
                    anchor: req.anchor,
                    is_anchor: req.anchor == self.id,
                    seq: req.seq,
                },
                ops.clone(),
            )
            .await;
        let outcome = match result {
            Ok(o) => o,
            Err(eon_storage::Error::Duplicate { op, row }) => {
                let table = &tables[op];
                let values = ops[op].rows[row].1.as_ref();
                let cols: Vec<&str> = table
                    .primary_key
                    .iter()
                    .map(|&i| table.columns[i].name.as_str())
                    .collect();
                let vals: Vec<String> = match values {
                    Some(r) => table
                        .primary_key
                        .iter()
                        .map(|&i| display_value(&r[i], &table.columns[i].ty))
                        .collect(),
                    None => vec![],
                };
                let mut e = Error::unique_violation(format!(
                    "duplicate key value violates unique constraint \"{}\"",
                    table.pkey_name()
                ));
                if !table.has_rowid() {
                    e = e.with_detail(format!(
                        "Key ({})=({}) already exists.",
                        cols.join(", "),
                        vals.join(", ")
                    ));
                }
                return Err(e);
            }
            Err(eon_storage::Error::Conflict(m)) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                return Err(Error::write_conflict(format!(
                    "could not serialize access due to concurrent update: {m}"
                )));
            }
            Err(eon_storage::Error::Key(e)) => return Err(e),
            Err(e @ eon_storage::Error::NotLeader(_)) => return Err(storage_error("write", e)),
            Err(eon_storage::Error::MemoryLimit) => {
                return Err(Error::user(
                    "53200",
                    format!(
                        "out of memory: uncommitted writes do not fit in data engine {}'s memory limit",
                        self.id
                    ),
                )
                .with_detail(
                    "Committed rows move to disk; a transaction's own writes stay in memory until it ends. \
                     Write in smaller transactions or raise --memory-limit."
                        .to_string(),
                ));
            }
            Err(e) => return Err(Error::internal(format!("storage: {e}"))),
        };
        let affected: u64 = outcome.ops.iter().map(|o| o.affected).sum();
        self.rows_written.fetch_add(affected, Ordering::Relaxed);
        Ok(pb::WriteResponse {
            results: outcome
                .ops
                .into_iter()
                .map(|o| pb::OpResult {
                    rows_affected: o.affected,
                    skipped: o.skipped,
                })
                .collect(),
            commit_ts: if req.one_phase { outcome.ts } else { 0 },
            min_commit_ts: if req.one_phase { 0 } else { outcome.ts },
            epoch: self.epoch,
        })
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// A scan checked and planned, ready to run (see [`DataEngineService::prepare_scan`]).
struct PreparedScan {
    store: Arc<Store>,
    replicas: Arc<Replicas>,
    plan: ScanPlan,
    shards: Vec<u32>,
    read_ts: u64,
    keys: Option<datafusion::arrow::array::RecordBatch>,
    own: Option<u64>,
    reading: Reading,
}

impl PreparedScan {
    async fn run(self, sink: &mut impl Sink) -> Result<ScanCounts, Error> {
        // A replicated shard is read where its group's leader is, once the
        // leadership is confirmed: a deposed leader would answer stale.
        let table = self.plan.table.proto();
        for &shard in &self.shards {
            if let Some(leading) = self.replicas.serving(table, shard).await? {
                leading.confirm(&table.name, shard).await?;
            }
        }
        let result = run_scan(
            &self.store,
            &self.plan,
            &self.shards,
            self.read_ts,
            self.keys,
            self.own,
            sink,
        )
        .await;
        if result.is_ok() && !self.reading.intact() {
            return Err(dropped(&self.plan.table.name));
        }
        result
    }
}

/// The engine's scan counters.
struct ScanCounters {
    scanned: Arc<AtomicU64>,
    returned: Arc<AtomicU64>,
}

impl ScanCounters {
    fn add(&self, c: &ScanCounts) {
        self.scanned.fetch_add(c.scanned, Ordering::Relaxed);
        self.returned.fetch_add(c.returned, Ordering::Relaxed);
    }
}

impl DataEngineService {
    /// Check a scan request (table, placement of its shards, not dropped)
    /// and plan it.
    fn prepare_scan(&self, req: pb::ScanRequest) -> Result<PreparedScan, Error> {
        let table = self.table(req.table)?;
        for &s in &req.shards {
            self.check_placement(&table, s)?;
        }
        let reading = self.start_reading(&table)?;
        let keys = if req.keys.is_empty() {
            None
        } else {
            Some(ipc::decode_one(&req.keys)?)
        };
        let mut plan = ScanPlan::new(
            &self.ctx,
            table,
            req.projection
                .map(|p| p.columns.into_iter().map(|c| c as usize).collect()),
            &req.filter,
            req.limit,
        )?;
        let bound = |k: Vec<u8>, end: bool| match (k.is_empty(), end) {
            (true, _) => std::ops::Bound::Unbounded,
            (false, false) => std::ops::Bound::Included(k),
            (false, true) => std::ops::Bound::Excluded(k),
        };
        plan.range = (
            bound(req.start_key.to_vec(), false),
            bound(req.end_key.to_vec(), true),
        );
        self.scans.fetch_add(1, Ordering::Relaxed);
        if keys.is_some() {
            self.point_lookups.fetch_add(1, Ordering::Relaxed);
        }
        Ok(PreparedScan {
            store: self.store.clone(),
            replicas: self.replicas.clone(),
            plan,
            shards: req.shards,
            read_ts: req.read_ts,
            keys,
            own: (req.txn_id != 0).then_some(req.txn_id),
            reading,
        })
    }

    fn scan_counters(&self) -> ScanCounters {
        ScanCounters {
            scanned: self.rows_scanned.clone(),
            returned: self.rows_returned.clone(),
        }
    }
}

/// A shuffle this engine produces (see `DataEngineService::shuffles`).
struct Shuffle {
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ctx: Arc<datafusion::execution::TaskContext>,
    task: Arc<eon_query::fragment::Task>,
    scanned: Arc<AtomicU64>,
    /// Partitions no task has asked for yet.
    left: usize,
    since: Instant,
}

/// A shuffle some of whose partitions no task asked for within this long
/// is dropped (its reader failed or was cancelled).
const SHUFFLE_TTL: Duration = Duration::from_secs(600);

/// This engine's shards as a plan fragment reads them: each scan is checked
/// and run like a `Scan` call, its batches handed over in memory.
struct Local {
    svc: Arc<DataEngineService>,
    /// Rows the fragment's scans read from storage.
    scanned: Arc<AtomicU64>,
}

impl eon_query::fragment::LocalShards for Local {
    fn engine_id(&self) -> u64 {
        self.svc.id
    }

    fn scan(
        &self,
        req: pb::ScanRequest,
    ) -> futures::stream::BoxStream<'static, Result<datafusion::arrow::array::RecordBatch, Error>>
    {
        let (mut tx, rx) = tokio::sync::mpsc::channel(4);
        let prepared = self.svc.prepare_scan(req);
        let scanned = self.scanned.clone();
        let engine_scanned = self.svc.rows_scanned.clone();
        tokio::spawn(async move {
            let result = match prepared {
                Ok(scan) => scan.run(&mut tx).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(c) => {
                    scanned.fetch_add(c.scanned, Ordering::Relaxed);
                    // Rows returned are counted as the fragment's output.
                    engine_scanned.fetch_add(c.scanned, Ordering::Relaxed);
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    fn fragment(
        &self,
        engine: u64,
        req: pb::FragmentRequest,
    ) -> futures::stream::BoxStream<'static, Result<pb::FragmentResponse, Error>> {
        self.svc
            .peers
            .run_fragment(engine, req, PEER_PATIENCE, false)
    }
}

/// How long a shuffle read waits for an unreachable peer to come back.
const PEER_PATIENCE: Duration = Duration::from_secs(3);

impl DataEngineService {
    /// Partition `part.partition` of the shuffle `req` produces, starting
    /// the shuffle when it is the first asked for; with the task and the
    /// counter of rows its scans read.
    fn shuffle_partition(
        &self,
        req: &pb::FragmentRequest,
        part: pb::ShufflePart,
        local: Arc<Local>,
    ) -> Result<
        (
            datafusion::execution::SendableRecordBatchStream,
            Arc<eon_query::fragment::Task>,
            Arc<AtomicU64>,
        ),
        Error,
    > {
        let key = (req.query, part.stage);
        let mut shuffles = self.shuffles.lock().unwrap();
        shuffles.retain(|_, s| s.since.elapsed() < SHUFFLE_TTL);
        if !shuffles.contains_key(&key) {
            let scanned = local.scanned.clone();
            let task = eon_query::fragment::Task::new(local, req);
            let (plan, ctx) = eon_query::fragment::decode(&req.plan, &task)?;
            let left = plan.output_partitioning().partition_count();
            self.fragments.fetch_add(1, Ordering::Relaxed);
            shuffles.insert(
                key,
                Shuffle {
                    plan,
                    ctx,
                    task,
                    scanned,
                    left,
                    since: Instant::now(),
                },
            );
        }
        let s = shuffles.get_mut(&key).expect("inserted above");
        let partition = part.partition as usize;
        if partition >= s.plan.output_partitioning().partition_count() {
            return Err(Error::internal(format!(
                "shuffle {key:?} has no partition {partition}"
            )));
        }
        let rows = s
            .plan
            .execute(partition, s.ctx.clone())
            .map_err(eon_query::errors::from_df)?;
        let out = (rows, s.task.clone(), s.scanned.clone());
        s.left -= 1;
        if s.left == 0 {
            shuffles.remove(&key);
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl DataEngine for DataEngineService {
    type ScanStream = ReceiverStream<Result<pb::ScanResponse, Status>>;

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Reply<Self::ScanStream> {
        let request = self.stats.start();
        let scan = self.prepare_scan(req.into_inner())?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let bytes = self.bytes_returned.clone();
        let counters = self.scan_counters();
        tokio::spawn(async move {
            let mut sink = IpcSink {
                tx: &tx,
                wrap: |ipc| pb::ScanResponse {
                    arrow_ipc: ipc.into(),
                    ..Default::default()
                },
                bytes: 0,
            };
            let result = scan.run(&mut sink).await;
            bytes.fetch_add(sink.bytes, Ordering::Relaxed);
            let msg = match result {
                Ok(c) => {
                    counters.add(&c);
                    request.ok();
                    Ok(pb::ScanResponse {
                        arrow_ipc: Default::default(),
                        rows_scanned: c.scanned,
                        rows_returned: c.returned,
                    })
                }
                Err(e) => Err(e.to_status()),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type RunFragmentStream = ReceiverStream<Result<pb::FragmentResponse, Status>>;

    async fn run_fragment(
        &self,
        req: Request<pb::FragmentRequest>,
    ) -> Reply<Self::RunFragmentStream> {
        let request = self.stats.start();
        let req = req.into_inner();
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| Status::unavailable("data engine stopping"))?;
        let local = Arc::new(Local {
            svc: me,
            scanned: Arc::default(),
        });
        // Operators may start work as the plan is executed, before its
        // stream is read.
        let started = Instant::now();
        let shuffle = req.shuffle.is_some();
        let (mut rows, task, scanned) = match req.shuffle {
            Some(part) => self.shuffle_partition(&req, part, local)?,
            None => {
                let scanned = local.scanned.clone();
                let task = eon_query::fragment::Task::new(local, &req);
                let rows = eon_query::fragment::execute(&req.plan, &task)?;
                self.fragments.fetch_add(1, Ordering::Relaxed);
                (rows, task, scanned)
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let bytes = if shuffle {
            self.bytes_shuffled.clone()
        } else {
            self.bytes_returned.clone()
        };
        let returned_total = self.rows_returned.clone();
        tokio::spawn(async move {
            let mut sink = IpcSink {
                tx: &tx,
                wrap: |ipc| pb::FragmentResponse {
                    arrow_ipc: ipc.into(),
                    ..Default::default()
                },
                bytes: 0,
            };
            let mut returned = 0u64;
            let mut failed = None;
            let mut gone = false;
            loop {
                let next = tokio::select! {
                    next = rows.next() => next,
                    // The reader went away (its statement ended, failed or
                    // was cancelled): stop working for it, even while the
                    // fragment has nothing to send yet (a join building its
                    // table).
                    _ = tx.closed() => {
                        gone = true;
                        break;
                    }
                };
                let Some(batch) = next else { break };
                let batch = match batch {
                    Ok(b) if b.num_rows() == 0 => continue,
                    Ok(b) => b,
                    Err(e) => {
                        failed = Some(eon_query::errors::from_df(e));
                        break;
                    }
                };
                returned += batch.num_rows() as u64;
                match sink.send(batch).await {
                    Ok(true) => {}
                    Ok(false) => {
                        gone = true;
                        break;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            bytes.fetch_add(sink.bytes, Ordering::Relaxed);
            if gone {
                return;
            }
            if !shuffle {
                returned_total.fetch_add(returned, Ordering::Relaxed);
            }
            let msg = match failed {
                None => {
                    request.ok();
                    // A shuffle's partitions share its scans and feeders:
                    // each is reported once, by the partition that ends
                    // first (all input is read by then).
                    Ok(pb::FragmentResponse {
                        arrow_ipc: Default::default(),
                        rows_scanned: scanned.swap(0, Ordering::Relaxed),
                        rows_returned: returned,
                        elapsed_us: started.elapsed().as_micros() as u64,
                        feeders: std::mem::take(&mut *task.feeders.lock().unwrap()),
                    })
                }
                Some(e) => Err(e.to_status()),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn write(&self, req: Request<pb::WriteRequest>) -> Reply<pb::WriteResponse> {
        let out = self.stats.track(self.write(req.into_inner())).await?;
        Ok(Response::new(out))
    }

    async fn finalize(&self, req: Request<pb::FinalizeRequest>) -> Reply<pb::FinalizeResponse> {
        let r = self.stats.start();
        let req = req.into_inner();
        self.check_epoch(req.epoch)?;
        let min_commit_ts = self.store.finalize(req.txn_id).await.map_err(|e| match e {
            eon_storage::Error::UnknownTransaction(t) => Error::write_conflict(format!(
                "transaction {t} was aborted on data engine {}",
                self.id
            )),
            other => storage_error("finalize", other),
        })?;
        r.ok();
        Ok(Response::new(pb::FinalizeResponse { min_commit_ts }))
    }

    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        let req = req.into_inner();
        let ok = req.spans.iter().all(|span| {
            let keys: Vec<Vec<u8>> = span.keys.iter().map(|k| k.to_vec()).collect();
            let keys = (!keys.is_empty()).then_some(keys.as_slice());
            self.store.refresh(
                (span.table_id, span.shard),
                keys,
                req.txn_id,
                req.from_ts,
                req.to_ts,
            )
        });
        Ok(Response::new(pb::RefreshResponse { ok }))
    }

    async fn commit(&self, req: Request<pb::CommitRequest>) -> Reply<pb::CommitResponse> {
        let req = req.into_inner();
        let r = self.stats.start();
        if req.commit_ts == 0 {
            self.check_epoch(req.epoch)?;
        }
        let commit_ts = self
            .store
            .commit(req.txn_id, req.commit_ts)
            .await
            .map_err(|e| storage_error("commit", e))?;
        r.ok();
        Ok(Response::new(pb::CommitResponse { commit_ts }))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Reply<pb::AbortResponse> {
        let r = self.stats.start();
        self.store
            .abort(req.into_inner().txn_id)
            .await
            .map_err(|e| storage_error("abort", e))?;
        r.ok();
        Ok(Response::new(pb::AbortResponse {}))
    }

    async fn rollback_to(
        &self,
        req: Request<pb::RollbackToRequest>,
    ) -> Reply<pb::RollbackToResponse> {
        let r = self.stats.start();
        let req = req.into_inner();
        self.store
            .rollback_to(req.txn_id, req.seq)
            .await
            .map_err(|e| storage_error("rollback to", e))?;
        r.ok();
        Ok(Response::new(pb::RollbackToResponse {}))
    }

    async fn end_txn(&self, req: Request<pb::EndTxnRequest>) -> Reply<pb::TxnStatusResponse> {
        let req = req.into_inner();
        let status = self
            .store
            .end_txn(req.txn_id, req.commit.then_some(req.commit_ts))
            .await
            .map_err(|e| storage_error("end transaction", e))?;
        Ok(Response::new(status_reply(status)))
    }

    async fn txn_status(&self, req: Request<pb::TxnStatusRequest>) -> Reply<pb::TxnStatusResponse> {
        let req = req.into_inner();
        let stale = (req.stale_after_ms > 0).then(|| Duration::from_millis(req.stale_after_ms));
        let status = self
            .store
            .txn_status(req.txn_id, stale)
            .await
            .map_err(|e| storage_error("transaction status", e))?;
        Ok(Response::new(status_reply(status)))
    }

    async fn heartbeat_txn(
        &self,
        req: Request<pb::HeartbeatTxnRequest>,
    ) -> Reply<pb::TxnStatusResponse> {
        Ok(Response::new(status_reply(
            self.store.heartbeat(req.into_inner().txn_id),
        )))
    }

    async fn drop_table(
        &self,
        req: Request<pb::DropTableDataRequest>,
    ) -> Reply<pb::DropTableDataResponse> {
        let r = self.stats.start();
        let table = req.into_inner().table_id;
        {
            // No write that passed the fence check is still on its way
            // when the data goes.
            let _gate = self.fence_gate.write().await;
            self.fences.lock().unwrap().insert(table, None);
        }
        // Nor a scan (see `Reads`).
        self.wait_for_reads(table).await;
        self.replicas.forget(table).await;
        self.store
            .drop_table(table)
            .await
            .map_err(|e| Error::internal(format!("drop: {e}")))?;
        r.ok();
        Ok(Response::new(pb::DropTableDataResponse {}))
    }

    async fn fence_table(
        &self,
        req: Request<pb::FenceTableRequest>,
    ) -> Reply<pb::FenceTableResponse> {
        let req = req.into_inner();
        let reply = Response::new(pb::FenceTableResponse { epoch: self.epoch });
        {
            let _gate = self.fence_gate.write().await;
            let mut fences = self.fences.lock().unwrap();
            if fences.get(&req.table_id) == Some(&None) {
                // Dropped: it stays fenced.
                return Ok(reply);
            }
            if req.lease_ms == 0 {
                fences.remove(&req.table_id);
                return Ok(reply);
            }
            fences.insert(
                req.table_id,
                Some(Instant::now() + Duration::from_millis(req.lease_ms)),
            );
        }
        let wait = Duration::from_millis(req.wait_ms);
        if !self.store.wait_table_resolved(req.table_id, wait).await {
            return Err(Error::user(
                eon_common::error::sqlstate::LOCK_NOT_AVAILABLE,
                "could not rewrite the table: a transaction with uncommitted writes to it is still open",
            )
            .into());
        }
        Ok(reply)
    }

    async fn stats(&self, _req: Request<pb::StatsRequest>) -> Reply<pb::Stats> {
        Ok(Response::new(self.stats_snapshot()))
    }

    async fn table_sizes(
        &self,
        req: Request<pb::TableSizesRequest>,
    ) -> Reply<pb::TableSizesResponse> {
        let tables = req
            .into_inner()
            .tables
            .into_iter()
            .filter_map(|table| {
                let (rows, shards) = self.store.table_rows(table)?;
                Some(pb::TableSize {
                    table,
                    rows,
                    shards,
                })
            })
            .collect();
        Ok(Response::new(pb::TableSizesResponse { tables }))
    }
}

impl DataEngineService {
    /// This engine's statistics (the `Stats` RPC and `GET /metrics`).
    pub fn stats_snapshot(&self) -> pb::Stats {
        let mut s = self.stats.snapshot(self.store.bytes_stored());
        let wal = self.store.wal();
        s.counters
            .insert("wal_syncs".into(), wal.syncs.load(Ordering::Relaxed));
        s.counters
            .insert("wal_bytes".into(), wal.bytes_total.load(Ordering::Relaxed));
        s.counters.insert(
            "checkpoints".into(),
            self.store.checkpoints.load(Ordering::Relaxed),
        );
        s.counters.insert(
            "versions_collected".into(),
            self.store.versions_collected.load(Ordering::Relaxed),
        );
        s.counters
            .insert("segments".into(), self.store.segment_count() as u64);
        s.counters.insert(
            "segments_written".into(),
            self.store.segments_written.load(Ordering::Relaxed),
        );
        s.counters.insert(
            "segment_rows_read".into(),
            self.store.segment_rows_read.load(Ordering::Relaxed),
        );
        s.counters
            .insert("memory_used".into(), self.store.memory_used());
        s.counters
            .insert("shards".into(), self.store.shard_count() as u64);
        s.counters.insert(
            "staged_transactions".into(),
            self.store.prepared_txns().len() as u64,
        );
        s
    }
}

/// A storage error as the query engine gets it: a replicated shard's
/// leader that moved (or a group that could not commit) is a serialization
/// failure, which the query engine retries with the new leaders.
fn storage_error(what: &str, e: eon_storage::Error) -> Error {
    match e {
        eon_storage::Error::NotLeader(_) | eon_storage::Error::Replication(_) => {
            Error::write_conflict(format!(
                "could not serialize access: a shard's leader changed during {what} ({e}); retry"
            ))
        }
        other => Error::internal(format!("{what}: {other}")),
    }
}

fn status_reply(status: TxnStatus) -> pb::TxnStatusResponse {
    match status {
        TxnStatus::Pending => pb::TxnStatusResponse {
            state: pb::TxnState::Pending as i32,
            commit_ts: 0,
        },
        TxnStatus::Committed(ts) => pb::TxnStatusResponse {
            state: pb::TxnState::Committed as i32,
            commit_ts: ts,
        },
        TxnStatus::Aborted => pb::TxnStatusResponse {
            state: pb::TxnState::Aborted as i32,
            commit_ts: 0,
        },
    }
}

fn status_of(r: &pb::TxnStatusResponse) -> TxnStatus {
    match pb::TxnState::try_from(r.state) {
        Ok(pb::TxnState::Committed) => TxnStatus::Committed(r.commit_ts),
        Ok(pb::TxnState::Aborted) => TxnStatus::Aborted,
        _ => TxnStatus::Pending,
    }
}

/// Staged writes older than this are checked against their transaction's
/// record.
const RESOLVE_AFTER: Duration = Duration::from_secs(5);
/// A pending transaction whose coordinator has not heartbeated for this
/// long is aborted by whoever asks about it.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolve leftover intents: every second, ask the record of each
/// transaction staged here for more than [`RESOLVE_AFTER`] — on this engine,
/// or on its anchor engine, found through meta — and commit or abort its
/// intents accordingly. This is how a coordinator's crash never leaves a
/// transaction half applied, or its intents in the way forever.
async fn resolve_leftovers(id: u64, store: Arc<Store>, peers: Arc<eon_query::cluster::Cluster>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (txn, anchor) in store.stale_staged(RESOLVE_AFTER) {
            let status = if anchor == id || anchor == 0 {
                store
                    .txn_status(txn, Some(TXN_TIMEOUT))
                    .await
                    .map_err(|e| e.to_string())
            } else {
                // No patience: the next pass, a second later, asks again.
                peers
                    .with_engine(anchor, Duration::ZERO, true, |mut c| async move {
                        c.txn_status(pb::TxnStatusRequest {
                            txn_id: txn,
                            stale_after_ms: TXN_TIMEOUT.as_millis() as u64,
                        })
                        .await
                    })
                    .await
                    .map(|r| status_of(r.get_ref()))
                    .map_err(|e| e.to_string())
            };
            match status {
                Ok(s) => {
                    if let Err(e) = store.resolve_by_record(txn, s).await {
                        tracing::warn!(txn, "could not resolve: {e}");
                    }
                }
                Err(e) => tracing::debug!(txn, anchor, "transaction record unreachable: {e}"),
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct DataEngineOptions {
    pub id: u64,
    pub dir: PathBuf,
    pub meta: String,
    pub listen: String,
    pub port: u16,
    pub store: StoreOptions,
}

/// Run `eon data-engine` until SIGTERM/SIGINT.
pub async fn run(opts: DataEngineOptions) -> Result<(), Error> {
    eon_common::stall::watch("data-engine");
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", opts.dir.display())))?;
    let _lock = eon_common::node::lock_dir(&opts.dir)?;
    let store = Arc::new(
        Store::open(&opts.dir, opts.store.clone())
            .map_err(|e| Error::internal(format!("storage: {e}")))?,
    );
    let (listener, addr) = node::bind(&opts.listen, opts.port).await?;
    let info = pb::NodeInfo {
        kind: pb::NodeKind::DataEngine as i32,
        id: opts.id,
        grpc_address: addr.to_string(),
        pid: std::process::id(),
        started_at_unix_ms: eon_common::unix_ms(),
        ..Default::default()
    };
    let mut meta = node::meta_client(&opts.meta)?;
    let ts = node::register(&mut meta, &info, Duration::from_secs(30)).await?;
    store.set_read_floor(ts);
    // Replicated shards: their groups' logs and snapshots are under raft/.
    // (Until the groups of the catalog run, see `Replicas::reconcile`.)
    store.expect_groups();
    let replicas = Replicas::open(opts.id, &opts.dir.join("raft"), store.clone(), meta.clone())?;
    replicas.spawn();
    // The other data engines: shuffles read from them, and leftover
    // intents ask their anchors about their transactions.
    let peers = eon_query::cluster::Cluster::new(
        &opts.meta,
        Recorder::new("data-engine-peers", opts.id),
        0,
    )?;
    tokio::spawn(resolve_leftovers(opts.id, store.clone(), peers.clone()));
    // Tables dropped while this engine was down: forget their data now.
    let catalog = meta
        .get_catalog(pb::GetCatalogRequest {})
        .await
        .map_err(Error::from_status)?
        .into_inner();
    // An index's entries are a table of their own.
    let live: std::collections::HashSet<u64> = catalog
        .tables
        .iter()
        .flat_map(|t| {
            std::iter::once(t.id).chain(
                t.indexes
                    .iter()
                    .filter_map(|i| i.storage.as_ref().map(|s| s.id)),
            )
        })
        .collect();
    for table in store.table_ids() {
        if !live.contains(&table) {
            tracing::info!(table, "dropping data of a table meta no longer has");
            store
                .drop_table(table)
                .await
                .map_err(|e| Error::internal(format!("drop: {e}")))?;
        }
    }
    node::spawn_heartbeat_with(meta, info, Some(replicas.clone()));

    // Checkpoints keep the log (and so restart time) bounded.
    let cp_store = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if cp_store.checkpoint_due() {
                if let Err(e) = cp_store.checkpoint().await {
                    tracing::error!("checkpoint failed: {e}");
                }
            }
        }
    });

    // With a memory limit: committed versions move to segments on disk
    // once the delta passes half of it.
    let flush_store = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let store = flush_store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush_if_needed()).await {
                tracing::error!("flush to segments failed: {e}");
            }
        }
    });

    // MVCC garbage collection: a pass every quarter of the retention window
    // (between 100 ms and 10 s), a chunk of keys at a time.
    let gc_store = store.clone();
    let every =
        (gc_store.retention() / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let store = gc_store.clone();
            let _ = tokio::task::spawn_blocking(move || store.gc()).await;
        }
    });

    let service = DataEngineService::new(opts.id, store, peers, replicas.clone());
    tracing::info!(id = opts.id, %addr, "data engine serving");
    node::announce_ready(&[("grpc", addr.to_string())]);
    let metrics = service.clone();
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(node::metrics_routes(move || metrics.stats_snapshot()))
        .add_service(node::guarded(
            DataEngineServer::from_arc(service).max_decoding_message_size(256 << 20),
        ))
        .add_service(node::guarded(replicas.service()))
        .serve_with_incoming_shutdown(node::incoming(listener), node::shutdown_signal())
        .await
        .map_err(|e| Error::internal(format!("gRPC server: {e}")))?;
    replicas.shutdown().await;
    tracing::info!("data engine stopped");
    Ok(())
}
