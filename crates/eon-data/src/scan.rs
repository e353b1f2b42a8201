//! Scans: stored rows → Arrow batches → filter → projection → IPC.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::Serializeable;
use eon_common::error::sqlstate;
use eon_common::key::{Key, encode_batch_keys};
use eon_common::value::batch_from_rows;
use eon_common::{Error, TableDef, ipc};
use eon_storage::{ChunkEnd, ShardId, Store};

/// Rows per batch read from a shard.
const CHUNK_ROWS: usize = 8192;
/// How long a reader waits for a concurrent write to resolve.
const INTENT_WAIT: Duration = Duration::from_secs(10);

/// A decoded scan request.
pub struct ScanPlan {
    pub table: TableDef,
    /// Columns to read from storage (table column indexes, ascending).
    read_columns: Vec<usize>,
    /// Output columns, as indexes into `read_columns`' batch.
    output: Vec<usize>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    pub limit: Option<u64>,
    /// The key range to read (point lookups ignore it).
    pub range: (Bound<Key>, Bound<Key>),
}

impl ScanPlan {
    pub fn new(
        ctx: &SessionContext,
        table: TableDef,
        projection: Option<Vec<usize>>,
        filter: &[u8],
        limit: u64,
    ) -> Result<ScanPlan, Error> {
        let ncols = table.columns.len();
        let projection = projection.unwrap_or_else(|| (0..ncols).collect());
        if let Some(&bad) = projection.iter().find(|&&c| c >= ncols) {
            return Err(Error::internal(format!(
                "projection column {bad} out of range"
            )));
        }
        let filter_expr = if filter.is_empty() {
            None
        } else {
            let expr = Expr::from_bytes_with_ctx(filter, &ctx.task_ctx())
                .map_err(|e| Error::internal(format!("undecodable filter: {e}")))?;
            Some(expr)
        };
        let mut read_columns = projection.clone();
        if let Some(expr) = &filter_expr {
            for col in expr.column_refs() {
                let idx = table.column_index(&col.name).ok_or_else(|| {
                    Error::internal(format!("filter refers to unknown column {}", col.name))
                })?;
                read_columns.push(idx);
            }
        }
        read_columns.sort();
        read_columns.dedup();
        let output = projection
            .iter()
            .map(|c| read_columns.binary_search(c).unwrap())
            .collect();
        let filter = match filter_expr {
            None => None,
            Some(expr) => {
                let schema = table.arrow_schema().project(&read_columns)?;
                let df_schema = DFSchema::try_from(schema).map_err(df_err)?;
                Some(ctx.create_physical_expr(expr, &df_schema).map_err(df_err)?)
            }
        };
        Ok(ScanPlan {
            table,
            read_columns,
            output,
            filter,
            limit: (limit > 0).then_some(limit),
            range: (Bound::Unbounded, Bound::Unbounded),
        })
    }

    /// Filter and project one batch of stored rows.
    fn finish(&self, batch: RecordBatch) -> Result<RecordBatch, Error> {
        let batch = match &self.filter {
            None => batch,
            Some(f) => {
                let mask = f
                    .evaluate(&batch)
                    .map_err(df_err)?
                    .into_array(batch.num_rows())
                    .map_err(df_err)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| {
                        Error::user(
                            sqlstate::DATATYPE_MISMATCH,
                            "argument of WHERE must be type boolean",
                        )
                    })?;
                filter_record_batch(&batch, mask)?
            }
        };
        Ok(batch.project(&self.output)?)
    }
}

pub fn df_err(e: datafusion::error::DataFusionError) -> Error {
    Error::user(sqlstate::DATA_EXCEPTION, e.to_string())
}

/// Counts of one scan.
#[derive(Default)]
pub struct ScanCounts {
    pub scanned: u64,
    pub returned: u64,
}

/// Where a scan's batches go: to a client as Arrow IPC (the `Scan` call),
/// or to a plan fragment running on this engine (`RunFragment`).
pub trait Sink: Send {
    /// Take one batch; false when nobody wants more (the client went away).
    fn send(&mut self, batch: RecordBatch) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// A client's sink (`Scan`, `RunFragment`): each batch as one Arrow IPC
/// message, made into the call's response by `wrap`.
pub struct IpcSink<'a, M> {
    pub tx: &'a tokio::sync::mpsc::Sender<Result<M, tonic::Status>>,
    pub wrap: fn(Vec<u8>) -> M,
    /// Arrow IPC bytes sent.
    pub bytes: u64,
}

impl<M: Send> Sink for IpcSink<'_, M> {
    async fn send(&mut self, batch: RecordBatch) -> Result<bool, Error> {
        let bytes = ipc::encode_batch(&batch)?;
        self.bytes += bytes.len() as u64;
        Ok(self.tx.send(Ok((self.wrap)(bytes))).await.is_ok())
    }
}

/// A local reader's sink: the batches themselves.
impl Sink for tokio::sync::mpsc::Sender<Result<RecordBatch, Error>> {
    async fn send(&mut self, batch: RecordBatch) -> Result<bool, Error> {
        Ok(tokio::sync::mpsc::Sender::send(self, Ok(batch))
            .await
            .is_ok())
    }
}

/// Run a scan over `shards`, handing each non-empty output batch to
/// `sink`. Stops early when the sink wants no more or the limit is reached.
pub async fn run_scan(
    store: &Store,
    plan: &ScanPlan,
    shards: &[u32],
    ts: u64,
    keys: Option<RecordBatch>,
    own: Option<u64>,
    sink: &mut impl Sink,
) -> Result<ScanCounts, Error> {
    let ids: Vec<ShardId> = shards.iter().map(|&s| (plan.table.id, s)).collect();
    let _read = store.begin_read(&ids, ts).map_err(|_| {
        Error::user(
            "72000",
            "snapshot too old: the transaction is older than the data engines' MVCC retention (--gc-retention)",
        )
    })?;
    let mut counts = ScanCounts::default();
    let schema = plan.table.arrow_schema().clone();
    let build =
        |rows: &[&eon_common::value::Row]| batch_from_rows(&schema, &plan.read_columns, rows);

    // Point lookups: group the requested keys by shard.
    let key_sets: Option<Vec<(u32, Vec<Key>)>> = match keys {
        None => None,
        Some(batch) => {
            let mut by_shard: Vec<(u32, Vec<Key>)> = shards.iter().map(|&s| (s, vec![])).collect();
            for key in encode_batch_keys(&batch)? {
                let s = plan.table.shard_of_key(&key);
                if let Some(entry) = by_shard.iter_mut().find(|(id, _)| *id == s) {
                    entry.1.push(key);
                }
            }
            // In key order, like a range scan.
            for (_, keys) in by_shard.iter_mut() {
                keys.sort();
                keys.dedup();
            }
            Some(by_shard)
        }
    };

    for (i, &shard) in shards.iter().enumerate() {
        let id = (plan.table.id, shard);
        let mut from = plan.range.0.clone();
        loop {
            let chunk = match &key_sets {
                Some(sets) => store.get_chunk(id, ts, own, &sets[i].1, build),
                None => {
                    let range = (from.clone(), plan.range.1.clone());
                    store.scan_chunk(id, ts, own, range, &plan.read_columns, CHUNK_ROWS, build)
                }
            }
            .map_err(|e| Error::internal(format!("reading shard {shard}: {e}")))?;
            counts.scanned += chunk.scanned as u64;
            let batch = plan.finish(chunk.out?)?;
            let mut batch = batch;
            if let Some(limit) = plan.limit {
                let left = limit.saturating_sub(counts.returned) as usize;
                if batch.num_rows() > left {
                    batch = batch.slice(0, left);
                }
            }
            if batch.num_rows() > 0 {
                counts.returned += batch.num_rows() as u64;
                if !sink.send(batch).await? {
                    return Ok(counts);
                }
            }
            if plan.limit.is_some_and(|l| counts.returned >= l) {
                return Ok(counts);
            }
            match chunk.end {
                ChunkEnd::Done => break,
                ChunkEnd::More(next) => from = Bound::Included(next),
                ChunkEnd::Wait(txn, key) => {
                    if !store.wait_resolved(id, &key, txn, INTENT_WAIT).await {
                        return Err(Error::write_conflict(
                            "timed out waiting for a concurrent write to finish",
                        ));
                    }
                    if key_sets.is_none() {
                        from = Bound::Included(key);
                    }
                }
            }
        }
    }
    Ok(counts)
}
