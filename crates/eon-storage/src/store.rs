//! [`Store`]: the shards of one data engine, with logging, checkpoints and
//! recovery. See the crate docs for the life of a write and a scan.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use eon_common::key::Key;
use eon_common::value::Row;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::mvcc::{Refusal, Ts, TxnId, TxnStatus, Version, Versions, Visible, WriteKind, row_size};
use crate::segment::{SegVersion, Segment};
use crate::wal::{self, Wal, frame, read_frames};
use crate::{Error, Result};

mod replica;
pub use replica::{Proposal, ShardLog};

/// A shard is identified by its table and its number within the table.
pub type ShardId = (u64, u32);

const CHECKPOINT_FILE: &str = "checkpoint.bin";
const CHECKPOINT_FORMAT: u32 = 3;
/// Keys per frame in a checkpoint file (bounds the memory of writing one).
const CHECKPOINT_CHUNK: usize = 4096;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Take a checkpoint once this many bytes were logged since the last.
    pub checkpoint_bytes: u64,
    /// MVCC retention: versions older than this (and not needed by a running
    /// scan) are garbage-collected, by a background pass and at checkpoints.
    /// Snapshots older than it fail with "snapshot too old".
    pub gc_after: Duration,
    /// Bound on the memory the rows in memory (the delta) may take. Past
    /// half of it, committed versions move to columnar segments on disk;
    /// a write that would pass it while nothing can move is refused.
    pub memory_limit: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            checkpoint_bytes: 64 << 20,
            gc_after: Duration::from_secs(300),
            memory_limit: None,
        }
    }
}

const SEGMENT_DIR: &str = "segments";
/// A shard with this many segments has them merged into one.
const COMPACT_AT: usize = 4;

/// Rows from which staging a write runs off the async worker.
const LARGE_WRITE: usize = 1000;

/// The memory a written key takes in a shard's delta (its key and new
/// row), as the memory limit counts it.
fn write_size(key: &[u8], value: Option<&Row>) -> u64 {
    (key.len() + value.map(row_size).unwrap_or(0)) as u64
}

/// One key's new state within a write.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyWrite {
    key: Key,
    value: Option<Row>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardWrites {
    table: u64,
    shard: u32,
    writes: Vec<KeyWrite>,
}

/// A log record.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    /// A one-phase write, committed at `commit_ts`.
    Apply {
        txn: TxnId,
        commit_ts: Ts,
        shards: Vec<ShardWrites>,
    },
    /// A staged write awaiting Commit or Abort. `anchor` keeps the
    /// transaction's record; `record`: this engine is the anchor and starts
    /// the record (pending).
    /// `seq`: the transaction's statement that wrote it.
    Prepare {
        txn: TxnId,
        min_commit_ts: Ts,
        shards: Vec<ShardWrites>,
        anchor: u64,
        record: bool,
        seq: u32,
    },
    /// ROLLBACK TO SAVEPOINT: undo what the transaction's statements after
    /// `seq` staged.
    RollbackTo {
        txn: TxnId,
        seq: u32,
    },
    /// The record of a transaction anchored here reached a final status.
    TxnEnd {
        txn: TxnId,
        status: TxnStatus,
    },
    /// The coordinator is choosing the commit timestamp: the transaction's
    /// intents may no longer be pushed.
    Freeze {
        txn: TxnId,
    },
    Commit {
        txn: TxnId,
        commit_ts: Ts,
    },
    Abort {
        txn: TxnId,
    },
    DropTable {
        table: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    format: u32,
    /// Replay the log from this segment on.
    replay_from: u64,
    /// Versions a snapshot below this may need were garbage-collected.
    gc_floor: Ts,
}

#[derive(Serialize, Deserialize)]
struct CheckpointChunk {
    table: u64,
    shard: u32,
    entries: Vec<(Key, Versions)>,
}

/// A checkpoint file: a header, then shard chunks and transaction records.
#[derive(Serialize, Deserialize)]
enum CheckpointFrame {
    Shard(CheckpointChunk),
    Records(Vec<(TxnId, TxnRecord)>),
}

/// A transaction's record, kept by its anchor engine: the one place that
/// decides whether it committed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub status: TxnStatus,
    /// When the coordinator last said it is alive (ms since the epoch);
    /// for a final status, when it became final.
    pub touched_ms: i64,
}

/// A transaction with staged writes on this engine.
#[derive(Debug, Clone)]
struct Staged {
    keys: Vec<(ShardId, Key)>,
    anchor: u64,
    since: std::time::Instant,
    /// The keys of replicated shards that applied entries listed, so that
    /// a key a transaction writes again is listed once (kept by
    /// `apply_record` alone; a set, as a transaction may list many keys).
    applied: std::collections::HashSet<(ShardId, Key)>,
}

/// How long final transaction records are kept (intents resolve long
/// before).
const RECORD_RETENTION_MS: i64 = 3_600_000;

/// Whose write it is and how to make it (see [`Store::write`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteMeta {
    pub txn: TxnId,
    /// The snapshot the statement read.
    pub read_ts: Ts,
    /// Commit now, or stage intents.
    pub one_phase: bool,
    /// The engine keeping the transaction's record (staged writes).
    pub anchor: u64,
    /// This engine is the anchor.
    pub is_anchor: bool,
    /// The transaction's statement making the write (from 1).
    pub seq: u32,
}

/// A write to one shard: rows (whole rows; for Delete only the key matters)
/// with their encoded keys.
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub shard: ShardId,
    pub kind: WriteKind,
    pub rows: Vec<(Key, Option<Row>)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpOutcome {
    pub affected: u64,
    /// Row indexes skipped by INSERT_IGNORE.
    pub skipped: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub ops: Vec<OpOutcome>,
    /// One-phase: the commit timestamp. Staged: the minimum commit timestamp.
    pub ts: Ts,
}

#[derive(Default)]
struct ShardData {
    /// The delta: recent versions and intents, in memory.
    rows: BTreeMap<Key, Versions>,
    /// Older committed versions on disk, oldest segment first.
    segments: Vec<Arc<Segment>>,
}

/// What a reader found for a key in the delta.
enum Found<'a> {
    /// The newest committed version at or below the snapshot.
    At(Ts, Option<&'a Row>),
    /// The reader's own intent.
    Own(Option<&'a Row>),
    Wait(TxnId),
    Nothing,
}

fn found<'a>(v: &'a Versions, ts: Ts, own: Option<TxnId>) -> Found<'a> {
    match v.read(ts, own) {
        Visible::Wait(txn) => Found::Wait(txn),
        _ => {
            if let Some(i) = v.intent.as_ref().filter(|i| Some(i.txn) == own) {
                return Found::Own(i.value.as_ref());
            }
            match v.committed.iter().rev().find(|c| c.ts <= ts) {
                Some(c) => Found::At(c.ts, c.value.as_ref()),
                None => Found::Nothing,
            }
        }
    }
}

/// The smallest of `first` and the next keys of `cursors`.
fn smallest_key(
    cursors: &mut [crate::segment::SegCursor],
    first: Option<Key>,
) -> Result<Option<Key>> {
    let mut next = first;
    for c in cursors.iter_mut() {
        if let Some(k) = c.peek()?
            && next.as_ref().is_none_or(|n| k < n)
        {
            next = Some(k.clone());
        }
    }
    Ok(next)
}

/// A row a read returns: borrowed from the delta or read from a segment.
enum Pick<'a> {
    Delta(&'a Row),
    Seg(Row),
}

/// The newest version of a key found so far (its timestamp; `None` row: a
/// deletion).
type Best<'a> = Option<(Ts, Option<Pick<'a>>)>;

/// Offer a key's versions from a segment: the newest at or below `ts`
/// replaces `best` if newer.
fn offer(best: &mut Best<'_>, versions: Vec<SegVersion>, ts: Ts) {
    let than = best.as_ref().map(|b| b.0);
    if let Some(v) = versions
        .into_iter()
        .filter(|v| v.ts <= ts && than.is_none_or(|t| v.ts > t))
        .max_by_key(|v| v.ts)
    {
        *best = Some((v.ts, v.value.map(Pick::Seg)));
    }
}

/// The rows picked, as the references `build` takes.
fn picked<'a>(picks: &'a [Pick<'a>]) -> Vec<&'a Row> {
    picks
        .iter()
        .map(|p| match p {
            Pick::Delta(r) => *r,
            Pick::Seg(r) => r,
        })
        .collect()
}

struct Shard {
    data: RwLock<ShardData>,
    /// The highest snapshot any reader used on this shard: a later commit must
    /// land above it, or that reader would have missed it.
    max_read_ts: AtomicU64,
}

impl Shard {
    fn new() -> Arc<Shard> {
        Arc::new(Shard {
            data: RwLock::new(ShardData::default()),
            max_read_ts: AtomicU64::new(0),
        })
    }
}

/// How a scan chunk ended.
#[derive(Debug, PartialEq)]
pub enum ChunkEnd {
    Done,
    /// More rows: resume from this key (inclusive).
    More(Key),
    /// An intent of this transaction must be resolved first; then resume from
    /// the key (inclusive).
    Wait(TxnId, Key),
}

pub struct ScanChunk<R> {
    pub out: R,
    /// Keys examined.
    pub scanned: usize,
    pub end: ChunkEnd,
}

pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    shards: RwLock<HashMap<ShardId, Arc<Shard>>>,
    /// Keys holding intents of each staged (two-phase) transaction.
    prepared: Mutex<HashMap<TxnId, Staged>>,
    /// Records of the transactions anchored on this engine.
    records: Mutex<HashMap<TxnId, TxnRecord>>,
    wal: Wal,
    /// Writers hold it shared from staging to commit; a checkpoint holds it
    /// exclusively while it rotates the log, so that every record in the old
    /// segments is already applied in memory.
    checkpoint_lock: tokio::sync::RwLock<()>,
    /// Lower bound for commit timestamps after a restart (the in-memory
    /// max_read_ts of shards is lost).
    read_floor: AtomicU64,
    /// Woken whenever intents are resolved.
    resolved: Notify,
    active_reads: Mutex<BTreeMap<Ts, usize>>,
    bytes: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Snapshots below this may miss garbage-collected versions: reads and
    /// refreshes at them are refused. Changed under `active_reads`' lock.
    gc_floor: AtomicU64,
    /// Versions removed by garbage collection since start.
    pub versions_collected: AtomicU64,
    /// Arrow schemas of tables (what segments are written with), as the
    /// data engine last saw them.
    schemas: Mutex<HashMap<u64, arrow::datatypes::SchemaRef>>,
    /// Sequence number of the newest segment file.
    segment_seq: AtomicU64,
    /// One flush at a time.
    flush_lock: Mutex<()>,
    pub segments_written: AtomicU64,
    /// Rows read from segment files by scans and lookups.
    pub segment_rows_read: AtomicU64,
    /// Shards replicated by a Raft group: their records go to the group's
    /// log, not to `wal` (see [`replica`]).
    groups: RwLock<HashMap<ShardId, Arc<dyn ShardLog>>>,
    /// Whether `groups` lists every replicated shard of this engine (false
    /// from [`Store::expect_groups`] until [`Store::groups_known`]: a
    /// restarted engine learns its groups from the catalog).
    groups_known: std::sync::atomic::AtomicBool,
    /// This opening of the store: tells its own proposals from others'.
    origin: u64,
    next_token: AtomicU64,
    /// Proposals of writes staged here ahead of their entry: token →
    /// whether the entry was applied here yet.
    in_flight: Mutex<HashMap<u64, bool>>,
    /// Applying an entry and undoing a failed proposal exclude each other.
    apply_lock: Mutex<()>,
    /// The replicated shard whose group keeps a transaction's record
    /// (records kept by the engine's own log are not listed).
    homes: Mutex<HashMap<TxnId, ShardId>>,
}

impl Store {
    /// Open (or create) the store in `dir`, recovering from its checkpoint and
    /// log.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        fs::create_dir_all(dir)?;
        let wal_dir = dir.join("wal");
        fs::create_dir_all(&wal_dir)?;
        let mut shards: HashMap<ShardId, ShardData> = HashMap::new();
        let mut records: HashMap<TxnId, TxnRecord> = HashMap::new();
        let mut replay_from = 1;
        let mut gc_floor = 0;
        let cp_path = dir.join(CHECKPOINT_FILE);
        if cp_path.exists() {
            let file = File::open(&cp_path)?;
            let mut r = std::io::BufReader::new(file);
            let header: CheckpointHeader = read_one(&mut r)?
                .ok_or_else(|| Error::Corrupt("checkpoint without header".into()))?;
            if header.format != CHECKPOINT_FORMAT {
                return Err(Error::Corrupt(format!(
                    "unknown checkpoint format {}",
                    header.format
                )));
            }
            replay_from = header.replay_from;
            gc_floor = header.gc_floor;
            while let Some(frame) = read_one::<CheckpointFrame>(&mut r)? {
                match frame {
                    CheckpointFrame::Shard(chunk) => shards
                        .entry((chunk.table, chunk.shard))
                        .or_default()
                        .rows
                        .extend(chunk.entries),
                    CheckpointFrame::Records(list) => records.extend(list),
                }
            }
        }
        // Columnar segments: `t<table>-s<shard>-<seq>.arrow`; a `.tmp` is a
        // flush that did not finish.
        let seg_dir = dir.join(SEGMENT_DIR);
        fs::create_dir_all(&seg_dir)?;
        let mut segment_seq = 0;
        let mut found_segments = Vec::new();
        for entry in fs::read_dir(&seg_dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if name.ends_with(".tmp") {
                fs::remove_file(&path)?;
                continue;
            }
            let Some((table, shard, seq)) = segment_name(&name) else {
                return Err(Error::Corrupt(format!(
                    "unexpected file {}",
                    path.display()
                )));
            };
            segment_seq = segment_seq.max(seq);
            found_segments.push((seq, (table, shard as u32), path));
        }
        found_segments.sort();
        for (seq, id, path) in found_segments {
            let seg = Segment::open(&path, seq)?;
            shards.entry(id).or_default().segments.push(Arc::new(seg));
        }
        let mut segs: Vec<u64> = wal::segments(&wal_dir)?
            .into_iter()
            .filter(|&s| s >= replay_from)
            .collect();
        if segs.is_empty() {
            segs.push(replay_from);
        }
        let mut last_len = 0;
        let mut replayed = 0usize;
        for (i, &seg) in segs.iter().enumerate() {
            let path = wal::segment_path(&wal_dir, seg);
            let (log, valid) = if path.exists() {
                read_frames::<Record>(&path)?
            } else {
                (vec![], 0)
            };
            replayed += log.len();
            for rec in log {
                replay(&mut shards, &mut records, rec);
            }
            if i == segs.len() - 1 {
                last_len = valid;
            }
        }
        // Segments of tables dropped before the crash.
        for entry in fs::read_dir(&seg_dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let live = shards
                .values()
                .any(|d| d.segments.iter().any(|s| s.path == path));
            if !live && name.ends_with(".arrow") {
                fs::remove_file(&path)?;
            }
        }
        let mut prepared: HashMap<TxnId, Staged> = HashMap::new();
        let mut bytes = 0u64;
        for (id, data) in &shards {
            bytes += collect_staged(*id, data, &mut prepared);
        }
        tracing::info!(
            shards = shards.len(),
            replayed,
            prepared = prepared.len(),
            "storage recovered"
        );
        let wal = Wal::open(&wal_dir, *segs.last().unwrap(), last_len)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            opts,
            shards: RwLock::new(
                shards
                    .into_iter()
                    .map(|(id, data)| {
                        (
                            id,
                            Arc::new(Shard {
                                data: RwLock::new(data),
                                max_read_ts: AtomicU64::new(0),
                            }),
                        )
                    })
                    .collect(),
            ),
            prepared: Mutex::new(prepared),
            records: Mutex::new(records),
            wal,
            checkpoint_lock: tokio::sync::RwLock::new(()),
            read_floor: AtomicU64::new(0),
            resolved: Notify::new(),
            active_reads: Mutex::new(BTreeMap::new()),
            bytes: AtomicU64::new(bytes),
            checkpoints: AtomicU64::new(0),
            gc_floor: AtomicU64::new(gc_floor),
            versions_collected: AtomicU64::new(0),
            schemas: Mutex::new(HashMap::new()),
            segment_seq: AtomicU64::new(segment_seq),
            flush_lock: Mutex::new(()),
            segments_written: AtomicU64::new(0),
            segment_rows_read: AtomicU64::new(0),
            groups: RwLock::new(HashMap::new()),
            groups_known: std::sync::atomic::AtomicBool::new(true),
            origin: eon_common::unix_us(),
            next_token: AtomicU64::new(1),
            in_flight: Mutex::new(HashMap::new()),
            apply_lock: Mutex::new(()),
            homes: Mutex::new(HashMap::new()),
        })
    }

    /// No commit after a restart may land at or below `ts` (a timestamp from
    /// the oracle, above anything a reader used before the restart).
    pub fn set_read_floor(&self, ts: Ts) {
        self.read_floor.fetch_max(ts, Ordering::SeqCst);
        // Pushes readers made before the restart were not logged: push every
        // open intent above the floor instead.
        for cell in self.shards.read().unwrap().values() {
            let data = cell.data.read().unwrap();
            for v in data.rows.values() {
                if let Some(i) = v.intent.as_ref().filter(|i| !i.frozen) {
                    i.min_commit_ts.raise(ts + 1);
                }
            }
        }
    }

    /// The MVCC retention window.
    pub fn retention(&self) -> Duration {
        self.opts.gc_after
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub fn bytes_stored(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.read().unwrap().len()
    }

    /// About how many rows this store holds of `table`, and in how many
    /// shards (None: no shard of it). An estimate for planning, read
    /// without scanning: keys in memory plus row versions in segment files,
    /// so a row updated since its segment was written counts twice, and a
    /// deleted one until its segment is merged away.
    pub fn table_rows(&self, table: u64) -> Option<(u64, u32)> {
        let shards = self.shards.read().unwrap();
        let groups = self.groups.read().unwrap();
        let mut found = None;
        for (id, shard) in shards.iter() {
            // A replicated shard is counted by its leader alone.
            if id.0 != table || !acts_on(&groups, id) {
                continue;
            }
            let data = shard.data.read().unwrap();
            let rows = data.rows.len() as u64 + data.segments.iter().map(|s| s.rows).sum::<u64>();
            let (total, count) = found.get_or_insert((0, 0));
            *total += rows;
            *count += 1;
        }
        found
    }

    /// Ids of the tables this store holds shards of.
    pub fn table_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .shards
            .read()
            .unwrap()
            .keys()
            .map(|(t, _)| *t)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Transactions with staged, unresolved writes.
    pub fn prepared_txns(&self) -> Vec<TxnId> {
        self.prepared.lock().unwrap().keys().copied().collect()
    }

    /// Wait until no transaction has staged, unresolved writes on `table`
    /// here, or the timeout passes. Returns false on timeout.
    pub async fn wait_table_resolved(&self, table: u64, timeout: Duration) -> bool {
        self.wait_until_resolved(timeout, || {
            self.prepared
                .lock()
                .unwrap()
                .values()
                .any(|staged| staged.keys.iter().any(|((t, _), _)| *t == table))
        })
        .await
    }

    /// Wait until `pending()` is false — checked again whenever intents are
    /// resolved — or the timeout passes. Returns false on timeout.
    async fn wait_until_resolved(&self, timeout: Duration, pending: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so a resolution in between wakes it.
            let notified = self.resolved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !pending() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The record of a transaction anchored here, if any.
    pub fn record(&self, txn: TxnId) -> Option<TxnRecord> {
        self.records.lock().unwrap().get(&txn).copied()
    }

    fn shard(&self, id: ShardId) -> Option<Arc<Shard>> {
        self.shards.read().unwrap().get(&id).cloned()
    }

    fn shard_or_create(&self, id: ShardId) -> Arc<Shard> {
        if let Some(s) = self.shard(id) {
            return s;
        }
        self.shards
            .write()
            .unwrap()
            .entry(id)
            .or_insert_with(Shard::new)
            .clone()
    }

    // ---------------------------------------------------------------- writes

    /// Validate, log and (one-phase) commit or (two-phase) stage a write of
    /// transaction `txn`, which read at `read_ts`. Nothing is changed when an
    /// error is returned.
    ///
    /// A staged write names the transaction's `anchor` engine (`is_anchor`:
    /// this one, which then keeps the transaction's record). A transaction
    /// whose record says aborted cannot stage more writes here.
    pub async fn write(&self, meta: WriteMeta, ops: Vec<WriteOp>) -> Result<WriteOutcome> {
        let WriteMeta {
            txn,
            one_phase,
            anchor,
            is_anchor,
            seq,
            ..
        } = meta;
        if let Some(limit) = self.opts.memory_limit {
            // The delta stays within the limit: make room first, and refuse
            // what does not fit even then (uncommitted writes cannot move).
            let incoming: u64 = ops
                .iter()
                .flat_map(|o| &o.rows)
                .map(|(k, v)| write_size(k, v.as_ref()))
                .sum();
            if self.memory_used() + incoming > limit {
                self.flush_if_needed()?;
                if self.memory_used() + incoming > limit {
                    return Err(Error::MemoryLimit);
                }
            }
        }
        let _cp = self.checkpoint_lock.read().await;
        if matches!(self.record(txn), Some(r) if r.status != TxnStatus::Pending) {
            return Err(Error::Conflict("the transaction was aborted".into()));
        }
        // A one-phase write's intents are frozen from the start: it commits
        // at the timestamp chosen here, so no reader may push it meanwhile.
        let anchor = if one_phase { 0 } else { anchor };
        let record = is_anchor && !one_phase && self.record(txn).is_none();
        // Shards replicated by a group log their part of the write there.
        // Only one log can make a one-phase write atomic.
        let mut replicated: Vec<ShardId> = ops
            .iter()
            .map(|o| o.shard)
            .filter(|s| self.is_replicated(*s))
            .collect();
        replicated.sort();
        replicated.dedup();
        let local = ops.iter().any(|o| !replicated.contains(&o.shard));
        if one_phase && !replicated.is_empty() && (replicated.len() > 1 || local) {
            return Err(Error::Replication(
                "a one-phase write must stay within one replicated shard".into(),
            ));
        }
        // The transaction's record, if it starts here, goes with the first
        // replicated shard, else into the engine's log.
        let home = replicated.first().copied();
        // (A large write takes long enough to stall the engine's other
        // tasks on this worker.)
        let rows: usize = ops.iter().map(|o| o.rows.len()).sum();
        let stage = || self.stage(meta, anchor, &ops);
        let result = if rows >= LARGE_WRITE {
            crate::blocking(stage)
        } else {
            stage()
        };
        let (outcomes, staged, min_commit_ts) = match result {
            Ok(staged) => staged,
            Err(e) => {
                if record {
                    // The transaction may go on (ROLLBACK TO SAVEPOINT) and
                    // stage writes elsewhere that name this engine: its
                    // record must exist all the same.
                    let log = Record::Prepare {
                        txn,
                        min_commit_ts: 0,
                        shards: vec![],
                        anchor,
                        record,
                        seq,
                    };
                    match home {
                        Some(shard) => self.propose(shard, log, None).await?,
                        None => {
                            self.wal.append(&log).await?;
                            self.set_record(txn, TxnStatus::Pending, true);
                        }
                    }
                }
                return Err(e);
            }
        };
        let mut local_writes = Vec::new();
        let mut group_writes_: BTreeMap<ShardId, Vec<ShardWrites>> = BTreeMap::new();
        if let (true, Some(home)) = (record, home) {
            group_writes_.entry(home).or_default();
        }
        for sw in group_writes(&staged) {
            let id = (sw.table, sw.shard);
            if replicated.contains(&id) {
                group_writes_.entry(id).or_default().push(sw);
            } else {
                local_writes.push(sw);
            }
        }
        if !local_writes.is_empty() || replicated.is_empty() {
            let log = if one_phase {
                Record::Apply {
                    txn,
                    commit_ts: min_commit_ts,
                    shards: local_writes,
                }
            } else {
                Record::Prepare {
                    txn,
                    min_commit_ts,
                    shards: local_writes,
                    anchor,
                    record: record && home.is_none(),
                    seq,
                }
            };
            // A staged write is logged without waiting for the disk: if a
            // crash of the machine loses it, the engine comes back as a new
            // incarnation, and the coordinator's Finalize (or one-step
            // Commit), which names the incarnation that took the writes, is
            // refused — the transaction aborts instead of committing without
            // them. Both of those are synced, and with them everything
            // logged before.
            let logged = if one_phase {
                self.wal.append(&log).await
            } else {
                self.wal.append_unsynced(&log).await
            };
            if let Err(e) = logged {
                self.resolve(txn, &staged, None);
                return Err(e);
            }
        }
        // Each group's part: applying the entry registers its intents and
        // record on every replica, this one included; a part whose proposal
        // fails is undone here.
        let parts: Vec<(ShardId, Record, Vec<(ShardId, Key)>)> = group_writes_
            .into_iter()
            .map(|(shard, writes)| {
                let keys: Vec<(ShardId, Key)> = writes
                    .iter()
                    .flat_map(|w| w.writes.iter().map(|k| (shard, k.key.clone())))
                    .collect();
                let log = if one_phase {
                    Record::Apply {
                        txn,
                        commit_ts: min_commit_ts,
                        shards: writes,
                    }
                } else {
                    Record::Prepare {
                        txn,
                        min_commit_ts,
                        shards: writes,
                        anchor,
                        record: record && Some(shard) == home,
                        seq,
                    }
                };
                (shard, log, keys)
            })
            .collect();
        let mut logs = Vec::with_capacity(parts.len());
        let mut undos = Vec::with_capacity(parts.len());
        for (shard, log, keys) in parts {
            logs.push((shard, log));
            undos.push(move || self.resolve(txn, &keys, None));
        }
        let proposed: Result<()> = futures::future::join_all(
            logs.into_iter()
                .zip(&undos)
                .map(|((shard, log), undo)| self.propose(shard, log, Some(undo))),
        )
        .await
        .into_iter()
        .collect();
        if one_phase {
            proposed?;
            self.resolve(txn, &staged, Some(min_commit_ts));
        } else {
            if record && home.is_none() {
                self.records.lock().unwrap().insert(
                    txn,
                    TxnRecord {
                        status: TxnStatus::Pending,
                        touched_ms: eon_common::unix_ms(),
                    },
                );
            }
            let local_keys: Vec<(ShardId, Key)> = staged
                .into_iter()
                .filter(|(s, _, _)| !replicated.contains(s))
                .map(|(s, k, _)| (s, k))
                .collect();
            if !local_keys.is_empty() || replicated.is_empty() {
                self.prepared
                    .lock()
                    .unwrap()
                    .entry(txn)
                    .or_insert_with(|| Staged {
                        keys: vec![],
                        anchor,
                        since: std::time::Instant::now(),
                        applied: Default::default(),
                    })
                    .keys
                    .extend(local_keys);
            }
            // Parts staged in other groups stay staged: the coordinator
            // aborts the transaction.
            proposed?;
        }
        Ok(WriteOutcome {
            ops: outcomes,
            ts: min_commit_ts,
        })
    }

    /// Check every row and install intents. On a refusal, undo this call's
    /// intents and report it.
    #[allow(clippy::type_complexity)]
    fn stage(
        &self,
        meta: WriteMeta,
        anchor: u64,
        ops: &[WriteOp],
    ) -> Result<(Vec<OpOutcome>, Vec<(ShardId, Key, Option<Row>)>, Ts)> {
        let WriteMeta {
            txn,
            read_ts,
            one_phase: frozen,
            seq,
            ..
        } = meta;
        let mut ids: Vec<ShardId> = ops.iter().map(|o| o.shard).collect();
        ids.sort();
        ids.dedup();
        let cells: Vec<Arc<Shard>> = ids.iter().map(|&id| self.shard_or_create(id)).collect();
        // Lock in a fixed order so concurrent writers cannot deadlock.
        let mut guards: Vec<_> = cells.iter().map(|c| c.data.write().unwrap()).collect();
        let floor = self.read_floor.load(Ordering::SeqCst);
        let mut min_commit_ts = read_ts.max(floor + 1);
        for c in &cells {
            min_commit_ts = min_commit_ts.max(c.max_read_ts.load(Ordering::SeqCst) + 1);
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut staged: Vec<(ShardId, Key, Option<Row>)> = Vec::new();
        // Previous intent of each key this call touched, to undo a refusal.
        let mut undo: Vec<(usize, Key, Option<crate::mvcc::Intent>)> = Vec::new();
        let mut refusal = None;
        'ops: for (op_index, op) in ops.iter().enumerate() {
            let gi = ids.binary_search(&op.shard).unwrap();
            let mut outcome = OpOutcome::default();
            let segments = guards[gi].segments.clone();
            for (row_index, (key, value)) in op.rows.iter().enumerate() {
                let rows = &mut guards[gi].rows;
                let versions = rows.entry(key.clone()).or_default();
                // The key's newest committed version may be in a segment: the
                // write checks need it, so copy it into the delta (the copy is
                // the same version; readers take either).
                let latest = versions.latest_ts();
                for seg in segments
                    .iter()
                    .filter(|s| s.max_ts > latest && s.may_contain(key))
                {
                    match seg.lookup(key) {
                        Ok(found) => {
                            if let Some(v) = found
                                .into_iter()
                                .filter(|v| v.ts > versions.latest_ts())
                                .max_by_key(|v| v.ts)
                            {
                                versions.install(v.ts, v.value);
                            }
                        }
                        Err(e) => {
                            refusal = Some(Error::Corrupt(format!("segment read: {e}")));
                            break 'ops;
                        }
                    }
                }
                match versions.check_write(txn, read_ts, op.kind) {
                    Ok(true) => {
                        min_commit_ts = min_commit_ts.max(versions.latest_ts() + 1);
                        undo.push((gi, key.clone(), versions.intent.clone()));
                        let new = if op.kind == WriteKind::Delete {
                            None
                        } else {
                            value.clone()
                        };
                        versions.set_intent(txn, 0, anchor, seq, new.clone());
                        staged.push((op.shard, key.clone(), new));
                        outcome.affected += 1;
                    }
                    Ok(false) => outcome.skipped.push(row_index as u32),
                    Err(r) => {
                        refusal = Some(match r {
                            Refusal::Duplicate => Error::Duplicate {
                                op: op_index,
                                row: row_index,
                            },
                            Refusal::Conflict(m) => Error::Conflict(m),
                        });
                        break 'ops;
                    }
                }
            }
            outcomes.push(outcome);
        }
        if let Some(err) = refusal {
            for (gi, key, prev) in undo.into_iter().rev() {
                if let Some(v) = guards[gi].rows.get_mut(&key) {
                    v.intent = prev;
                    if v.committed.is_empty() && v.intent.is_none() {
                        guards[gi].rows.remove(&key);
                    }
                }
            }
            // Keys created empty by the check of the refused row.
            for g in guards.iter_mut() {
                g.rows
                    .retain(|_, v| !(v.committed.is_empty() && v.intent.is_none()));
            }
            return Err(err);
        }
        for (shard, key, _) in &staged {
            let gi = ids.binary_search(shard).unwrap();
            if let Some(i) = guards[gi].rows.get_mut(key).and_then(|v| v.intent.as_mut()) {
                i.min_commit_ts.raise(min_commit_ts);
                i.frozen = frozen;
            }
        }
        let added: u64 = staged
            .iter()
            .map(|(_, k, v)| write_size(k, v.as_ref()))
            .sum();
        self.bytes.fetch_add(added, Ordering::Relaxed);
        Ok((outcomes, staged, min_commit_ts))
    }

    /// Commit (`Some(ts)`) or remove (`None`) the intents of `txn` on `keys`,
    /// then wake readers waiting for them.
    fn resolve<K: AsKey>(&self, txn: TxnId, keys: &[K], commit_ts: Option<Ts>) {
        if keys.len() >= LARGE_WRITE {
            return crate::blocking(|| self.resolve_now(txn, keys, commit_ts));
        }
        self.resolve_now(txn, keys, commit_ts)
    }

    fn resolve_now<K: AsKey>(&self, txn: TxnId, keys: &[K], commit_ts: Option<Ts>) {
        self.with_keys_by_shard(keys, |data, key| {
            if let Some(v) = data.rows.get_mut(key) {
                match commit_ts {
                    Some(ts) => {
                        v.commit(txn, ts);
                    }
                    None => {
                        v.abort(txn);
                    }
                }
                if v.committed.is_empty() && v.intent.is_none() {
                    data.rows.remove(key);
                }
            }
        });
        self.resolved.notify_waiters();
    }

    /// Visit `keys` a shard at a time, each shard's delta locked for
    /// writing while its keys are visited.
    fn with_keys_by_shard<K: AsKey>(
        &self,
        keys: &[K],
        mut visit: impl FnMut(&mut ShardData, &Key),
    ) {
        let mut by_shard: HashMap<ShardId, Vec<&Key>> = HashMap::new();
        for k in keys {
            by_shard.entry(k.shard()).or_default().push(k.key());
        }
        for (id, keys) in by_shard {
            let Some(cell) = self.shard(id) else { continue };
            let mut data = cell.data.write().unwrap();
            for key in keys {
                visit(&mut data, key);
            }
        }
    }

    /// Freeze a staged transaction's intents here (readers now wait instead
    /// of pushing them) and return the lowest timestamp it may commit at on
    /// this engine. The freeze is logged, so it survives a restart. An
    /// unknown transaction (aborted, or never staged here) is an error.
    pub async fn finalize(&self, txn: TxnId) -> Result<Ts> {
        let _cp = self.checkpoint_lock.read().await;
        let min = self.freeze(txn)?;
        let keys = self.own_keys(txn).unwrap_or_default();
        let (local, groups) = self.split_logs(&keys);
        if local || groups.is_empty() {
            self.wal.append(&Record::Freeze { txn }).await?;
        }
        self.propose_each(groups, || Record::Freeze { txn }).await?;
        Ok(min)
    }

    /// Freeze `txn`'s intents; the highest of their minimum commit
    /// timestamps.
    fn freeze(&self, txn: TxnId) -> Result<Ts> {
        let keys = self.own_keys(txn).ok_or(Error::UnknownTransaction(txn))?;
        let mut min = self.read_floor.load(Ordering::SeqCst) + 1;
        self.with_keys_by_shard(&keys, |data, key| {
            if let Some(i) = data
                .rows
                .get_mut(key)
                .and_then(|v| v.intent.as_mut())
                .filter(|i| i.txn == txn)
            {
                i.frozen = true;
                min = min.max(i.min_commit_ts.get());
            }
        });
        Ok(min)
    }

    /// Commit a staged transaction at `commit_ts`, which must be at least
    /// what `finalize` reported; 0 means "freeze and commit now at the lowest
    /// timestamp possible" (a transaction whose writes are all on this
    /// engine). Returns the commit timestamp. An unknown transaction was
    /// already committed (or aborted) here, so a repeated Commit is harmless.
    ///
    /// When this engine is the transaction's anchor, its record becomes
    /// committed with the same log record; a record already aborted (its
    /// coordinator was presumed dead) refuses the commit.
    pub async fn commit(&self, txn: TxnId, commit_ts: Ts) -> Result<Ts> {
        let _cp = self.checkpoint_lock.read().await;
        if matches!(self.record(txn), Some(r) if r.status == TxnStatus::Aborted) {
            return Err(Error::Conflict("the transaction was aborted".into()));
        }
        let keys = self.own_keys(txn);
        let Some(keys) = keys else {
            return Ok(match self.record(txn) {
                Some(TxnRecord {
                    status: TxnStatus::Committed(ts),
                    ..
                }) => ts,
                _ => commit_ts,
            });
        };
        // Committing at a given timestamp follows the commit point (the
        // anchor's record, synced): if this record is lost, the intents come
        // back frozen and are resolved by the record. Deciding here (0) is
        // the commit point itself.
        let sync = commit_ts == 0;
        let commit_ts = if commit_ts == 0 {
            self.freeze(txn)?
        } else {
            commit_ts
        };
        let (local, groups) = self.split_logs(&keys);
        if sync && !groups.is_empty() && (groups.len() > 1 || local) {
            // Deciding here, for several logs: the transaction's record is
            // the commit point (the engine's own log comes first below when
            // it keeps the record).
            let home = self.homes.lock().unwrap().get(&txn).copied();
            match home {
                Some(home) => {
                    self.propose(
                        home,
                        Record::TxnEnd {
                            txn,
                            status: TxnStatus::Committed(commit_ts),
                        },
                        None,
                    )
                    .await?
                }
                None if local && self.record(txn).is_some() => {}
                None => {
                    return Err(Error::Replication(
                        "a one-step commit across replicated shards needs the transaction's record"
                            .into(),
                    ));
                }
            }
        }
        if local || groups.is_empty() {
            let record = Record::Commit { txn, commit_ts };
            if sync {
                self.wal.append(&record).await?
            } else {
                self.wal.append_unsynced(&record).await?
            }
            let local_keys: Vec<(ShardId, Key)> = keys
                .iter()
                .filter(|(s, _)| !groups.contains(s))
                .cloned()
                .collect();
            self.resolve(txn, &local_keys, Some(commit_ts));
        }
        self.propose_each(groups, || Record::Commit { txn, commit_ts })
            .await?;
        self.drop_staged(txn, &keys);
        // Again, for those waiting on the transaction rather than a key.
        self.resolved.notify_waiters();
        self.set_record(txn, TxnStatus::Committed(commit_ts), false);
        Ok(commit_ts)
    }

    pub async fn abort(&self, txn: TxnId) -> Result<()> {
        let _cp = self.checkpoint_lock.read().await;
        let keys = self.own_keys(txn);
        let Some(keys) = keys else {
            // Nothing staged here, but perhaps the record (every write here
            // was refused).
            if matches!(self.record(txn), Some(r) if r.status == TxnStatus::Pending) {
                self.log_txn_end(txn, TxnStatus::Aborted).await?;
                self.set_record(txn, TxnStatus::Aborted, false);
            }
            return Ok(());
        };
        let (local, groups) = self.split_logs(&keys);
        if local || groups.is_empty() {
            // Unsynced: if lost, the intents come back and are resolved by
            // the transaction's record (aborted, or never committed).
            self.wal.append_unsynced(&Record::Abort { txn }).await?;
            let local_keys: Vec<(ShardId, Key)> = keys
                .iter()
                .filter(|(s, _)| !groups.contains(s))
                .cloned()
                .collect();
            self.resolve(txn, &local_keys, None);
        }
        self.propose_each(groups, || Record::Abort { txn }).await?;
        self.drop_staged(txn, &keys);
        self.resolved.notify_waiters();
        self.set_record(txn, TxnStatus::Aborted, false);
        Ok(())
    }

    /// ROLLBACK TO SAVEPOINT: undo what statements of `txn` after `seq`
    /// staged here (logged first, so it survives a restart). A transaction
    /// with nothing staged here has nothing to undo; one that is committing
    /// (frozen) is refused.
    pub async fn rollback_to(&self, txn: TxnId, seq: u32) -> Result<()> {
        let _cp = self.checkpoint_lock.read().await;
        let keys = self.own_keys(txn);
        let Some(keys) = keys else { return Ok(()) };
        let (local, groups) = self.split_logs(&keys);
        if local || groups.is_empty() {
            self.wal.append(&Record::RollbackTo { txn, seq }).await?;
            let keys: Vec<(ShardId, Key)> = keys
                .into_iter()
                .filter(|(s, _)| !groups.contains(s))
                .collect();
            self.with_keys_by_shard(&keys, |data, key| {
                if data
                    .rows
                    .get_mut(key)
                    .is_some_and(|v| v.rollback_to(txn, seq) && v.committed.is_empty())
                {
                    data.rows.remove(key);
                }
            });
        }
        self.propose_each(groups, || Record::RollbackTo { txn, seq })
            .await?;
        self.resolved.notify_waiters();
        Ok(())
    }

    /// Update the record of a transaction anchored here (only an existing
    /// one, unless `create`).
    fn set_record(&self, txn: TxnId, status: TxnStatus, create: bool) {
        let mut records = self.records.lock().unwrap();
        match records.get_mut(&txn) {
            Some(r) => {
                *r = TxnRecord {
                    status,
                    touched_ms: eon_common::unix_ms(),
                }
            }
            None if create => {
                records.insert(
                    txn,
                    TxnRecord {
                        status,
                        touched_ms: eon_common::unix_ms(),
                    },
                );
            }
            None => {}
        }
    }

    // ---------------------------------------------------- transaction records

    /// End a transaction anchored here: the commit point of a distributed
    /// commit (`Some(ts)`), or its abort. Durable before it returns. The
    /// answer is the record's final status: a commit asked for after the
    /// record was aborted answers `Aborted`, and the coordinator must abort.
    pub async fn end_txn(&self, txn: TxnId, commit_ts: Option<Ts>) -> Result<TxnStatus> {
        let _cp = self.checkpoint_lock.read().await;
        let wanted = match commit_ts {
            Some(ts) => TxnStatus::Committed(ts),
            None => TxnStatus::Aborted,
        };
        match self.record(txn).map(|r| r.status) {
            Some(s @ (TxnStatus::Committed(_) | TxnStatus::Aborted)) => return Ok(s),
            _ => {}
        }
        self.log_txn_end(txn, wanted).await?;
        self.set_record(txn, wanted, true);
        Ok(wanted)
    }

    /// Log a final status of a transaction's record where the record is
    /// kept: its shard's group, or the engine's log.
    async fn log_txn_end(&self, txn: TxnId, status: TxnStatus) -> Result<()> {
        let home = self.homes.lock().unwrap().get(&txn).copied();
        let record = Record::TxnEnd { txn, status };
        match home {
            Some(shard) => self.propose(shard, record, None).await,
            None => self.wal.append(&record).await,
        }
    }

    /// The keys `txn` staged here that this store acts on for its
    /// coordinator: those of shards in the engine's log, and of replicated
    /// shards whose group this replica leads (the others are copies of
    /// what other engines staged, resolved by their leaders' entries). None:
    /// nothing staged here.
    fn own_keys(&self, txn: TxnId) -> Option<Vec<(ShardId, Key)>> {
        let keys = self.prepared.lock().unwrap().get(&txn)?.keys.clone();
        let groups = self.groups.read().unwrap();
        Some(
            keys.into_iter()
                .filter(|(s, _)| acts_on(&groups, s))
                .collect(),
        )
    }

    /// `txn` is resolved on the shards of `keys`: forget what it staged
    /// there (copies of other groups' keys stay until their entries come).
    fn drop_staged(&self, txn: TxnId, keys: &[(ShardId, Key)]) {
        // (The shards first: a large transaction stages ~10^5 keys, and
        // comparing each with every resolved key took seconds, holding the
        // lock every writer takes.)
        let mut shards: Vec<ShardId> = keys.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut prepared = self.prepared.lock().unwrap();
        if let Some(staged) = prepared.get_mut(&txn) {
            staged
                .keys
                .retain(|(s, _)| shards.binary_search(s).is_err());
            if staged.keys.is_empty() {
                prepared.remove(&txn);
            }
        }
    }

    /// Whether any of `keys` is in a shard logged by the engine's log, and
    /// the replicated shards among them.
    fn split_logs(&self, keys: &[(ShardId, Key)]) -> (bool, Vec<ShardId>) {
        let groups = self.groups.read().unwrap();
        let mut local = false;
        let mut replicated = Vec::new();
        for (shard, _) in keys {
            if groups.contains_key(shard) {
                if !replicated.contains(shard) {
                    replicated.push(*shard);
                }
            } else {
                local = true;
            }
        }
        (local, replicated)
    }

    /// The status of a transaction anchored here. With `stale_after`, a
    /// pending record whose coordinator has not heartbeated for that long —
    /// or a transaction this engine has no record of — is aborted first
    /// (durably), so it can never commit afterwards.
    pub async fn txn_status(
        &self,
        txn: TxnId,
        stale_after: Option<std::time::Duration>,
    ) -> Result<TxnStatus> {
        let mut current = self.record(txn);
        if current.is_none() && stale_after.is_some() && !self.no_record_for_sure(txn).await {
            // (Undecided: the asker asks again.)
            return Ok(TxnStatus::Pending);
        }
        if current.is_none() {
            current = self.record(txn);
        }
        let stale = match (current, stale_after) {
            (
                Some(TxnRecord {
                    status: TxnStatus::Pending,
                    touched_ms,
                }),
                Some(after),
            ) => eon_common::unix_ms() - touched_ms >= after.as_millis() as i64,
            (None, Some(_)) => true,
            _ => false,
        };
        if stale {
            tracing::info!(txn, "aborting a transaction whose coordinator is gone");
            return self.end_txn(txn, None).await;
        }
        Ok(current.map(|r| r.status).unwrap_or(TxnStatus::Pending))
    }

    /// Whether this engine's lack of a record of `txn` proves there is
    /// none. A record kept by a replicated shard's group is on every copy,
    /// but a copy that lags — an engine just restarted, before its groups
    /// run or have applied their logs — has not seen it yet; aborting then
    /// would abort a transaction whose record in the group says committed,
    /// leaving it half applied. So every group of this engine must run and
    /// have applied its log (which holds every entry this engine proposed
    /// as a leader, a record's creation among them) before the answer is
    /// no. (Not covered: a shard's copy moved off this engine takes its
    /// records along.)
    async fn no_record_for_sure(&self, txn: TxnId) -> bool {
        if !self.groups_known.load(Ordering::Acquire) {
            return false;
        }
        let groups: Vec<Arc<dyn ShardLog>> =
            self.groups.read().unwrap().values().cloned().collect();
        let caught_up = futures::future::join_all(groups.iter().map(|g| g.caught_up())).await;
        caught_up.iter().all(|r| r.is_ok()) && self.record(txn).is_none()
    }

    /// The engine's replicated shards are not all registered yet (it has
    /// just started): a missing transaction record proves nothing until
    /// [`Store::groups_known`].
    pub fn expect_groups(&self) {
        self.groups_known.store(false, Ordering::Release);
    }

    /// Every replicated shard of the engine has its group registered.
    pub fn groups_known(&self) {
        self.groups_known.store(true, Ordering::Release);
    }

    /// The coordinator is alive. Returns the record's status (an aborted
    /// transaction's coordinator learns it must give up).
    pub fn heartbeat(&self, txn: TxnId) -> TxnStatus {
        let mut records = self.records.lock().unwrap();
        match records.get_mut(&txn) {
            Some(r) => {
                if r.status == TxnStatus::Pending {
                    r.touched_ms = eon_common::unix_ms();
                }
                r.status
            }
            None => TxnStatus::Pending,
        }
    }

    /// Staged transactions older than `age`, with their anchors: candidates
    /// for resolution by their records.
    pub fn stale_staged(&self, age: std::time::Duration) -> Vec<(TxnId, u64)> {
        // (Copies of what other replicas staged are theirs to resolve.)
        let groups = self.groups.read().unwrap();
        self.prepared
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.since.elapsed() >= age)
            .filter(|(_, s)| {
                s.keys.is_empty() || s.keys.iter().any(|(shard, _)| acts_on(&groups, shard))
            })
            .map(|(t, s)| (*t, s.anchor))
            .collect()
    }

    /// Resolve a staged transaction by its record's final status.
    pub async fn resolve_by_record(&self, txn: TxnId, status: TxnStatus) -> Result<()> {
        match status {
            TxnStatus::Committed(ts) => {
                // Freeze first: commit_ts was chosen above every engine's
                // frozen minimum, so it is also above this one's.
                let _ = self.freeze(txn);
                self.commit(txn, ts).await.map(|_| ())
            }
            TxnStatus::Aborted => self.abort(txn).await,
            TxnStatus::Pending => Ok(()),
        }
    }

    /// Forget every shard of a table.
    pub async fn drop_table(&self, table: u64) -> Result<()> {
        let _cp = self.checkpoint_lock.read().await;
        // A replicated shard's copies are dropped by each data engine for
        // itself (the table is gone from the catalog; there is nothing for
        // its group to agree on): here, this one's copy.
        let groups: Vec<ShardId> = self
            .groups
            .read()
            .unwrap()
            .keys()
            .filter(|(t, _)| *t == table)
            .copied()
            .collect();
        for shard in &groups {
            self.unreplicate(*shard)?;
        }
        self.wal.append(&Record::DropTable { table }).await?;
        let removed: Vec<Arc<Shard>> = {
            let mut shards = self.shards.write().unwrap();
            let ids: Vec<ShardId> = shards
                .keys()
                .filter(|id| id.0 == table && !groups.contains(id))
                .copied()
                .collect();
            ids.iter().filter_map(|id| shards.remove(id)).collect()
        };
        let freed: u64 = removed
            .iter()
            .map(|s| delta_size(&s.data.read().unwrap()))
            .sum();
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(freed))
            });
        for shard in &removed {
            for seg in &shard.data.read().unwrap().segments {
                fs::remove_file(&seg.path)?;
            }
        }
        self.prepared.lock().unwrap().retain(|_, staged| {
            staged.keys.retain(|((t, _), _)| *t != table);
            !staged.keys.is_empty()
        });
        self.resolved.notify_waiters();
        Ok(())
    }

    // ----------------------------------------------------------------- reads

    /// Register a snapshot read of `shard` at `ts`: no later commit on the
    /// shard may land at or below `ts`. Returns a guard that keeps the
    /// versions the snapshot needs from garbage collection.
    ///
    /// A snapshot older than the garbage collector's floor is refused
    /// ("snapshot too old"): versions it needs may be gone.
    pub fn begin_read(&self, shards: &[ShardId], ts: Ts) -> Result<ReadGuard<'_>> {
        {
            let mut reads = self.active_reads.lock().unwrap();
            if ts < self.gc_floor.load(Ordering::SeqCst) {
                return Err(Error::SnapshotTooOld);
            }
            *reads.entry(ts).or_default() += 1;
        }
        // An empty shard is created too: a write that creates it later must
        // still land above this snapshot.
        for id in shards {
            self.shard_or_create(*id)
                .max_read_ts
                .fetch_max(ts, Ordering::SeqCst);
        }
        Ok(ReadGuard { store: self, ts })
    }

    /// Read up to `max_rows` visible rows of a shard within a key `range`,
    /// in key order, and hand them to `build` (under the shard's read lock).
    /// The delta and the shard's segments are merged by key; for each key
    /// the newest version at or below `ts` wins. `columns` are the table
    /// columns the caller needs (segments read only those; the others are
    /// null in rows that come from segments).
    #[allow(clippy::too_many_arguments)]
    pub fn scan_chunk<R>(
        &self,
        shard: ShardId,
        ts: Ts,
        own: Option<TxnId>,
        range: (Bound<Key>, Bound<Key>),
        columns: &[usize],
        max_rows: usize,
        build: impl FnOnce(&[&Row]) -> R,
    ) -> Result<ScanChunk<R>> {
        let cell = self.shard_or_create(shard);
        cell.max_read_ts.fetch_max(ts, Ordering::SeqCst);
        let data = cell.data.read().unwrap();
        let empty = match (&range.0, &range.1) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a > b || (a == b && !matches!(range, (Bound::Included(_), Bound::Included(_))))
            }
            _ => false,
        };
        if empty {
            return Ok(ScanChunk {
                out: build(&[]),
                scanned: 0,
                end: ChunkEnd::Done,
            });
        }
        let mut picks: Vec<Pick> = Vec::with_capacity(max_rows.min(8192));
        let mut scanned = 0;
        let mut end = ChunkEnd::Done;
        let start = match &range.0 {
            Bound::Included(k) | Bound::Excluded(k) => Some(k.as_slice()),
            Bound::Unbounded => None,
        };
        let mut cursors: Vec<_> = data
            .segments
            .iter()
            .map(|s| s.cursor(start, columns))
            .collect();
        let mut delta = data.rows.range(range.clone()).peekable();
        loop {
            let Some(key) = smallest_key(&mut cursors, delta.peek().map(|(k, _)| (*k).clone()))?
            else {
                break;
            };
            if !range.contains(&key) {
                if matches!(&range.0, Bound::Excluded(s) if *s == key) {
                    // The excluded start (segments begin at it): skip it.
                    for c in cursors.iter_mut() {
                        if c.peek()? == Some(&key) {
                            c.take()?;
                        }
                    }
                    continue;
                }
                break;
            }
            if picks.len() >= max_rows {
                end = ChunkEnd::More(key);
                break;
            }
            scanned += 1;
            let mut best: Best = None;
            if delta.peek().is_some_and(|(k, _)| **k == key) {
                let (_, versions) = delta.next().unwrap();
                match found(versions, ts, own) {
                    Found::Wait(txn) => {
                        end = ChunkEnd::Wait(txn, key);
                        scanned -= 1;
                        break;
                    }
                    Found::Own(row) => {
                        if let Some(r) = row {
                            picks.push(Pick::Delta(r));
                        }
                        for c in cursors.iter_mut() {
                            if c.peek()? == Some(&key) {
                                c.take()?;
                            }
                        }
                        continue;
                    }
                    Found::At(t, row) => best = Some((t, row.map(Pick::Delta))),
                    Found::Nothing => {}
                }
            }
            for c in cursors.iter_mut() {
                if c.peek()? != Some(&key) {
                    continue;
                }
                let (_, versions) = c.take()?.unwrap();
                offer(&mut best, versions, ts);
            }
            if let Some((_, Some(p))) = best {
                picks.push(p);
            }
        }
        let read: u64 = cursors.iter().map(|c| c.read).sum();
        if read > 0 {
            self.segment_rows_read.fetch_add(read, Ordering::Relaxed);
        }
        Ok(ScanChunk {
            out: build(&picked(&picks)),
            scanned,
            end,
        })
    }

    /// Point lookups: the visible rows of `keys` in a shard (from the delta
    /// or a segment, as for scans). Ends with `Wait` when one of them has an
    /// intent to wait for (then retry all).
    pub fn get_chunk<R>(
        &self,
        shard: ShardId,
        ts: Ts,
        own: Option<TxnId>,
        keys: &[Key],
        build: impl FnOnce(&[&Row]) -> R,
    ) -> Result<ScanChunk<R>> {
        let cell = self.shard_or_create(shard);
        cell.max_read_ts.fetch_max(ts, Ordering::SeqCst);
        let data = cell.data.read().unwrap();
        let mut picks: Vec<Pick> = Vec::with_capacity(keys.len());
        let mut scanned = 0;
        for key in keys {
            let mut best: Best = None;
            let mut seen = false;
            if let Some(versions) = data.rows.get(key) {
                seen = true;
                match found(versions, ts, own) {
                    Found::Wait(txn) => {
                        return Ok(ScanChunk {
                            out: build(&[]),
                            scanned: 0,
                            end: ChunkEnd::Wait(txn, key.clone()),
                        });
                    }
                    Found::Own(row) => {
                        scanned += 1;
                        picks.extend(row.map(Pick::Delta));
                        continue;
                    }
                    Found::At(t, row) => best = Some((t, row.map(Pick::Delta))),
                    Found::Nothing => {}
                }
            }
            for seg in data.segments.iter().filter(|s| s.may_contain(key)) {
                let versions = seg.lookup(key)?;
                self.segment_rows_read
                    .fetch_add(versions.len() as u64, Ordering::Relaxed);
                seen |= !versions.is_empty();
                offer(&mut best, versions, ts);
            }
            if seen {
                scanned += 1;
            }
            if let Some((_, Some(p))) = best {
                picks.push(p);
            }
        }
        Ok(ScanChunk {
            out: build(&picked(&picks)),
            scanned,
            end: ChunkEnd::Done,
        })
    }

    /// Read refresh, for serializable transactions: transaction `txn` read
    /// `keys` of `shard` (all of it when `None`) at `from` and wants to
    /// commit at `to`. That is only serializable if nothing it read changed
    /// in between. True when nothing did: then the reads count as made at
    /// `to` (later writers land above it), and open intents of other
    /// transactions are pushed above `to` (they will commit after `txn`).
    /// False when a version committed in `(from, to]`, or another
    /// transaction is committing there.
    pub fn refresh(
        &self,
        shard: ShardId,
        keys: Option<&[Key]>,
        txn: TxnId,
        from: Ts,
        to: Ts,
    ) -> bool {
        if from < self.gc_floor.load(Ordering::SeqCst) {
            return false; // what changed since may have been collected
        }
        let cell = self.shard_or_create(shard);
        cell.max_read_ts.fetch_max(to, Ordering::SeqCst);
        let data = cell.data.read().unwrap();
        // Versions that moved to segments: a segment with nothing newer than
        // `from` changed nothing; otherwise look the keys up (a whole-shard
        // read is then refused: conservative, and a retry reads later).
        for seg in data.segments.iter().filter(|s| s.max_ts > from) {
            let Some(keys) = keys else { return false };
            for k in keys.iter().filter(|k| seg.may_contain(k)) {
                match seg.lookup(k) {
                    Ok(vs) if vs.iter().all(|v| v.ts <= from || v.ts > to) => {}
                    _ => return false,
                }
            }
        }
        let unchanged = |v: &Versions| -> bool {
            if v.committed.iter().any(|c| c.ts > from && c.ts <= to) {
                return false;
            }
            match &v.intent {
                Some(i) if i.txn != txn => {
                    if i.frozen {
                        i.min_commit_ts.get() > to
                    } else {
                        i.min_commit_ts.raise(to + 1);
                        true
                    }
                }
                _ => true,
            }
        };
        match keys {
            Some(keys) => keys.iter().all(|k| data.rows.get(k).is_none_or(unchanged)),
            None => data.rows.values().all(unchanged),
        }
    }

    /// Wait until `txn`'s intents are resolved, or the timeout passes.
    /// Returns false on timeout.
    pub async fn wait_resolved(
        &self,
        shard: ShardId,
        key: &Key,
        txn: TxnId,
        timeout: Duration,
    ) -> bool {
        self.wait_until_resolved(timeout, || {
            self.shard(shard)
                .map(|c| matches!(c.data.read().unwrap().rows.get(key).and_then(|v| v.intent.as_ref()), Some(i) if i.txn == txn))
                .unwrap_or(false)
        })
        .await
    }

    // ----------------------------------------------------------- checkpoints

    /// True when enough log was written since the last checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        // With a memory limit, the log replayed at a restart (into memory)
        // is kept below a quarter of it.
        let limit = self
            .opts
            .memory_limit
            .map(|m| m / 4)
            .unwrap_or(u64::MAX)
            .min(self.opts.checkpoint_bytes);
        self.wal.bytes_since_rotate.load(Ordering::Relaxed) >= limit
    }

    // -------------------------------------------------------------- segments

    /// Remember a table's Arrow schema (segments of the table are written
    /// with it). Data engines call it with every request's table.
    pub fn note_schema(&self, table: u64, schema: &arrow::datatypes::SchemaRef) {
        let mut schemas = self.schemas.lock().unwrap();
        if schemas.get(&table).is_none_or(|s| s != schema) {
            schemas.insert(table, schema.clone());
        }
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shards
            .read()
            .unwrap()
            .values()
            .map(|s| s.data.read().unwrap().segments.len())
            .sum()
    }

    /// Bytes the delta takes (estimated).
    pub fn memory_used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Past half the memory limit, move the committed versions of shards
    /// to segments, biggest shards first, until under a quarter. Returns
    /// the number of segments written.
    pub fn flush_if_needed(&self) -> Result<usize> {
        let Some(limit) = self.opts.memory_limit else {
            return Ok(0);
        };
        if self.memory_used() <= limit / 2 {
            return Ok(0);
        }
        let _one = self.flush_lock.lock().unwrap();
        let mut sizes: Vec<(u64, ShardId)> = self
            .shards
            .read()
            .unwrap()
            .iter()
            .map(|(id, s)| (delta_size(&s.data.read().unwrap()), *id))
            .collect();
        let total: u64 = sizes.iter().map(|s| s.0).sum();
        self.bytes.store(total, Ordering::Relaxed);
        sizes.sort_by(|a, b| b.cmp(a));
        let mut used = total;
        let mut written = 0;
        for (size, id) in sizes {
            if used <= limit / 4 {
                break;
            }
            if let Some(freed) = self.flush_shard(id)? {
                used = used.saturating_sub(freed.min(size));
                written += 1;
            }
        }
        self.bytes.store(used, Ordering::Relaxed);
        Ok(written)
    }

    /// Move every shard's committed versions to segments now (whatever the
    /// memory limit). Returns the number of segments written.
    pub fn flush_all(&self) -> Result<usize> {
        let _one = self.flush_lock.lock().unwrap();
        let ids: Vec<ShardId> = self.shards.read().unwrap().keys().copied().collect();
        let mut written = 0;
        for id in ids {
            written += self.flush_shard(id)?.is_some() as usize;
        }
        let used: u64 = self
            .shards
            .read()
            .unwrap()
            .values()
            .map(|s| delta_size(&s.data.read().unwrap()))
            .sum();
        self.bytes.store(used, Ordering::Relaxed);
        Ok(written)
    }

    /// Move the committed versions of one shard's delta to a new segment.
    /// None when there is nothing to move or the table's schema is not
    /// known yet; otherwise the bytes freed.
    fn flush_shard(&self, id: ShardId) -> Result<Option<u64>> {
        let Some(schema) = self.schemas.lock().unwrap().get(&id.0).cloned() else {
            return Ok(None);
        };
        let Some(cell) = self.shard(id) else {
            return Ok(None);
        };
        // Writers of this shard wait while the file is written: the moved
        // versions must leave the delta at the moment the segment appears.
        let mut data = cell.data.write().unwrap();
        if data.rows.values().all(|v| v.committed.is_empty()) {
            return Ok(None);
        }
        let seq = self.segment_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let dir = self.dir.join(SEGMENT_DIR);
        let committed = data
            .rows
            .iter()
            .filter(|(_, v)| !v.committed.is_empty())
            .map(|(k, v)| Ok((k, &v.committed)));
        let segment = Segment::write_iter(
            &dir.join(segment_file(id.0, id.1, seq)),
            seq,
            &schema,
            committed,
        )?;
        wal::sync_dir(&dir)?;
        let before = delta_size(&data);
        data.rows.retain(|_, v| {
            v.committed.clear();
            v.intent.is_some()
        });
        let freed = before - delta_size(&data);
        tracing::info!(
            table = id.0,
            shard = id.1,
            rows = segment.rows,
            "flushed a segment"
        );
        data.segments.push(Arc::new(segment));
        self.segments_written.fetch_add(1, Ordering::Relaxed);
        Ok(Some(freed))
    }

    /// Write a checkpoint and delete the log segments it covers.
    pub async fn checkpoint(&self) -> Result<()> {
        let replay_from = {
            let _exclusive = self.checkpoint_lock.write().await;
            self.wal.rotate().await?
        };
        self.gc();
        let gc_floor = self.gc_floor.load(Ordering::SeqCst);
        // Replicated shards are in their groups' logs and snapshots.
        let ids: Vec<ShardId> = self
            .shards
            .read()
            .unwrap()
            .keys()
            .copied()
            .filter(|id| !self.is_replicated(*id))
            .collect();
        let tmp = self.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut w = BufWriter::new(File::create(&tmp)?);
        write_one(
            &mut w,
            &CheckpointHeader {
                format: CHECKPOINT_FORMAT,
                replay_from,
                gc_floor,
            },
        )?;
        let mut bytes = 0u64;
        for id in ids {
            let Some(cell) = self.shard(id) else { continue };
            // A chunk at a time, the shard's lock held only while copying
            // it: writers wait for a copy of CHECKPOINT_CHUNK keys at most,
            // never for the disk. Keys changed meanwhile are in the log
            // segments after `replay_from`, whose replay is idempotent.
            let mut from = Bound::Unbounded;
            loop {
                let entries: Vec<(Key, Versions)> = {
                    let data = cell.data.read().unwrap();
                    data.rows
                        .range((from, Bound::Unbounded))
                        .take(CHECKPOINT_CHUNK)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                };
                let Some((last, _)) = entries.last() else {
                    break;
                };
                from = Bound::Excluded(last.clone());
                let full = entries.len() == CHECKPOINT_CHUNK;
                bytes += entries
                    .iter()
                    .map(|(k, v)| versions_size(k, v))
                    .sum::<u64>();
                write_one(
                    &mut w,
                    &CheckpointFrame::Shard(CheckpointChunk {
                        table: id.0,
                        shard: id.1,
                        entries,
                    }),
                )?;
                if !full {
                    break;
                }
            }
        }
        // Transaction records: pending ones, and final ones still young
        // enough that an intent somewhere may ask about them.
        let records: Vec<(TxnId, TxnRecord)> = {
            let now = eon_common::unix_ms();
            let mut homes = self.homes.lock().unwrap();
            let mut records = self.records.lock().unwrap();
            records.retain(|_, r| {
                r.status == TxnStatus::Pending || now - r.touched_ms < RECORD_RETENTION_MS
            });
            homes.retain(|t, _| records.contains_key(t));
            records
                .iter()
                .filter(|(t, _)| !homes.contains_key(t))
                .map(|(t, r)| (*t, *r))
                .collect()
        };
        write_one(&mut w, &CheckpointFrame::Records(records))?;
        let file = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.dir.join(CHECKPOINT_FILE))?;
        wal::sync_dir(&self.dir)?;
        self.wal.remove_before(replay_from)?;
        self.bytes.store(bytes, Ordering::Relaxed);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::info!(replay_from, bytes, "checkpoint written");
        Ok(())
    }

    /// Garbage-collect versions no snapshot can need any more: older than
    /// the retention window and than every running scan. Goes through each
    /// shard a chunk of keys at a time, so writers and readers of a shard
    /// wait for one chunk at most. Returns the number of versions removed.
    pub fn gc(&self) -> u64 {
        const GC_CHUNK: usize = 1024;
        let horizon = {
            let reads = self.active_reads.lock().unwrap();
            let age = self.opts.gc_after.as_micros() as u64;
            let by_age = eon_common::unix_us().saturating_sub(age);
            let oldest_read = reads.keys().next().copied().unwrap_or(u64::MAX);
            let horizon = by_age.min(oldest_read.saturating_sub(1));
            // From now on, snapshots at or below the horizon may miss
            // versions (the newest version at the horizon stays, so a read
            // exactly at it is still right).
            self.gc_floor.fetch_max(horizon, Ordering::SeqCst);
            horizon
        };
        let ids: Vec<ShardId> = self.shards.read().unwrap().keys().copied().collect();
        let mut removed = 0u64;
        for id in ids {
            let Some(cell) = self.shard(id) else { continue };
            let mut from: Bound<Key> = Bound::Unbounded;
            loop {
                let mut data = cell.data.write().unwrap();
                let mut empty = Vec::new();
                let mut last = None;
                let mut n = 0;
                let segments = data.segments.clone();
                for (k, v) in data
                    .rows
                    .range_mut((from.clone(), Bound::Unbounded))
                    .take(GC_CHUNK)
                {
                    let before = v.committed.len();
                    // A deletion hides what segments hold of the key: it
                    // stays while one may.
                    let keep_deletion = segments.iter().any(|s| s.may_contain(k));
                    if v.gc(horizon, keep_deletion) {
                        empty.push(k.clone());
                    }
                    removed += (before - v.committed.len()) as u64;
                    last = Some(k.clone());
                    n += 1;
                }
                for k in empty {
                    data.rows.remove(&k);
                }
                drop(data);
                match last {
                    Some(k) if n == GC_CHUNK => from = Bound::Excluded(k),
                    _ => break,
                }
            }
        }
        // Shards with many segments: merge them into one, dropping what the
        // horizon no longer needs.
        let many: Vec<ShardId> = self
            .shards
            .read()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.data.read().unwrap().segments.len() >= COMPACT_AT)
            .map(|(id, _)| *id)
            .collect();
        for id in many {
            match self.compact(id, horizon) {
                Ok(n) => removed += n,
                Err(e) => tracing::error!(table = id.0, shard = id.1, "compaction failed: {e}"),
            }
        }
        self.versions_collected
            .fetch_add(removed, Ordering::Relaxed);
        removed
    }

    /// Merge the segments of a shard into one. Per key it keeps the versions
    /// newer than `horizon` and the newest at or below it (a deletion
    /// included, so that an older copy of the key the log might replay
    /// after a crash stays hidden). Readers and writers go on meanwhile;
    /// the shard's lock is taken only to swap the files. Returns the
    /// number of versions dropped.
    fn compact(&self, id: ShardId, horizon: Ts) -> Result<u64> {
        let _one = self.flush_lock.lock().unwrap();
        let Some(cell) = self.shard(id) else {
            return Ok(0);
        };
        let inputs: Vec<Arc<Segment>> = cell.data.read().unwrap().segments.clone();
        let Some(first) = inputs.first() else {
            return Ok(0);
        };
        let schema = first.table_schema.clone();
        if inputs.iter().any(|s| s.table_schema != schema) {
            return Ok(0); // the table changed shape: leave them
        }
        let all: Vec<usize> = (0..first.columns).collect();
        let mut cursors: Vec<_> = inputs.iter().map(|s| s.cursor(None, &all)).collect();
        let mut dropped = 0u64;
        let merged = std::iter::from_fn(|| -> Option<Result<(Key, Vec<Version>)>> {
            let mut step = || -> Result<Option<(Key, Vec<Version>)>> {
                let Some(key) = smallest_key(&mut cursors, None)? else {
                    return Ok(None);
                };
                let mut versions: Vec<Version> = Vec::new();
                for c in cursors.iter_mut() {
                    if c.peek()? == Some(&key) {
                        let (_, vs) = c.take()?.unwrap();
                        versions.extend(vs.into_iter().map(|v| Version {
                            ts: v.ts,
                            value: v.value,
                        }));
                    }
                }
                versions.sort_by_key(|v| v.ts);
                versions.dedup_by_key(|v| v.ts);
                let before = versions.len();
                if let Some(keep_from) = versions.iter().rposition(|v| v.ts <= horizon) {
                    versions.drain(..keep_from);
                }
                dropped += (before - versions.len()) as u64;
                Ok(Some((key, versions)))
            };
            step().transpose()
        });
        let seq = self.segment_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let dir = self.dir.join(SEGMENT_DIR);
        let out = Segment::write_iter(
            &dir.join(segment_file(id.0, id.1, seq)),
            seq,
            &schema,
            merged,
        )?;
        wal::sync_dir(&dir)?;
        {
            let mut data = cell.data.write().unwrap();
            let gone: Vec<u64> = inputs.iter().map(|s| s.seq).collect();
            data.segments.retain(|s| !gone.contains(&s.seq));
            data.segments.insert(0, Arc::new(out));
        }
        for s in &inputs {
            fs::remove_file(&s.path)?;
        }
        wal::sync_dir(&dir)?;
        Ok(dropped)
    }
}

/// Keeps a snapshot's versions alive while a scan runs.
pub struct ReadGuard<'a> {
    store: &'a Store,
    ts: Ts,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let mut reads = self.store.active_reads.lock().unwrap();
        if let Some(n) = reads.get_mut(&self.ts) {
            *n -= 1;
            if *n == 0 {
                reads.remove(&self.ts);
            }
        }
    }
}

trait AsKey {
    fn shard(&self) -> ShardId;
    fn key(&self) -> &Key;
}

impl AsKey for (ShardId, Key, Option<Row>) {
    fn shard(&self) -> ShardId {
        self.0
    }
    fn key(&self) -> &Key {
        &self.1
    }
}

impl AsKey for (ShardId, Key) {
    fn shard(&self) -> ShardId {
        self.0
    }
    fn key(&self) -> &Key {
        &self.1
    }
}

fn segment_file(table: u64, shard: u32, seq: u64) -> String {
    format!("t{table}-s{shard}-{seq}.arrow")
}

fn segment_name(name: &str) -> Option<(u64, u64, u64)> {
    let mut it = name.strip_suffix(".arrow")?.split('-');
    let table = it.next()?.strip_prefix('t')?.parse().ok()?;
    let shard = it.next()?.strip_prefix('s')?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    it.next().is_none().then_some((table, shard, seq))
}

fn group_writes(staged: &[(ShardId, Key, Option<Row>)]) -> Vec<ShardWrites> {
    let mut out: Vec<ShardWrites> = Vec::new();
    for (id, key, value) in staged {
        match out.iter_mut().find(|s| (s.table, s.shard) == *id) {
            Some(s) => s.writes.push(KeyWrite {
                key: key.clone(),
                value: value.clone(),
            }),
            None => out.push(ShardWrites {
                table: id.0,
                shard: id.1,
                writes: vec![KeyWrite {
                    key: key.clone(),
                    value: value.clone(),
                }],
            }),
        }
    }
    out
}

/// Apply one log record during recovery. Every case is idempotent, because a
/// checkpoint may already contain some effects of the records replayed after
/// it.
fn replay(
    shards: &mut HashMap<ShardId, ShardData>,
    records: &mut HashMap<TxnId, TxnRecord>,
    rec: Record,
) {
    let now = eon_common::unix_ms();
    match rec {
        Record::Apply {
            txn,
            commit_ts,
            shards: writes,
        } => {
            for sw in writes {
                let data = shards.entry((sw.table, sw.shard)).or_default();
                for w in sw.writes {
                    let v = data.rows.entry(w.key).or_default();
                    v.abort(txn);
                    v.install(commit_ts, w.value);
                }
            }
        }
        Record::Prepare {
            txn,
            min_commit_ts,
            shards: writes,
            anchor,
            record,
            seq,
        } => {
            if record {
                // A restart counts as a heartbeat: the coordinator gets a
                // fresh period to show it is alive.
                records.entry(txn).or_insert(TxnRecord {
                    status: TxnStatus::Pending,
                    touched_ms: now,
                });
            }
            for sw in writes {
                let data = shards.entry((sw.table, sw.shard)).or_default();
                for w in sw.writes {
                    data.rows.entry(w.key).or_default().set_intent(
                        txn,
                        min_commit_ts,
                        anchor,
                        seq,
                        w.value,
                    );
                }
            }
        }
        Record::RollbackTo { txn, seq } => {
            for data in shards.values_mut() {
                data.rows.retain(|_, v| {
                    v.rollback_to(txn, seq);
                    !(v.committed.is_empty() && v.intent.is_none())
                });
            }
        }
        Record::TxnEnd { txn, status } => {
            records.insert(
                txn,
                TxnRecord {
                    status,
                    touched_ms: now,
                },
            );
        }
        Record::Freeze { txn } => {
            for data in shards.values_mut() {
                for v in data.rows.values_mut() {
                    if let Some(i) = v.intent.as_mut().filter(|i| i.txn == txn) {
                        i.frozen = true;
                    }
                }
            }
        }
        Record::Commit { txn, commit_ts } => {
            if let Some(r) = records.get_mut(&txn) {
                *r = TxnRecord {
                    status: TxnStatus::Committed(commit_ts),
                    touched_ms: now,
                };
            }
            for data in shards.values_mut() {
                for v in data.rows.values_mut() {
                    v.commit(txn, commit_ts);
                }
            }
        }
        Record::Abort { txn } => {
            if let Some(r) = records.get_mut(&txn) {
                *r = TxnRecord {
                    status: TxnStatus::Aborted,
                    touched_ms: now,
                };
            }
            for data in shards.values_mut() {
                data.rows.retain(|_, v| {
                    v.abort(txn);
                    !(v.committed.is_empty() && v.intent.is_none())
                });
            }
        }
        Record::DropTable { table } => shards.retain(|(t, _), _| *t != table),
    }
}

/// Whether a store acts on `shard` itself (counts it, resolves what is
/// staged there): a shard in the engine's own log, or a replicated one
/// whose group this replica leads. A follower's copy is its leader's to
/// act on; entries from the leader change it.
fn acts_on(groups: &HashMap<ShardId, Arc<dyn ShardLog>>, shard: &ShardId) -> bool {
    groups.get(shard).is_none_or(|g| g.leads())
}

/// List the intents in shard `id`'s delta as staged keys of their
/// transactions (after a recovery, or a snapshot's load). Returns the
/// delta's estimated size in bytes.
fn collect_staged(id: ShardId, data: &ShardData, prepared: &mut HashMap<TxnId, Staged>) -> u64 {
    let now = std::time::Instant::now();
    let mut bytes = 0;
    for (key, versions) in &data.rows {
        if let Some(i) = &versions.intent {
            prepared
                .entry(i.txn)
                .or_insert_with(|| Staged {
                    keys: vec![],
                    anchor: i.anchor,
                    since: now,
                    applied: Default::default(),
                })
                .keys
                .push((id, key.clone()));
        }
        bytes += versions_size(key, versions);
    }
    bytes
}

/// Estimated bytes of a shard's delta.
fn delta_size(data: &ShardData) -> u64 {
    data.rows.iter().map(|(k, v)| versions_size(k, v)).sum()
}

fn versions_size(key: &Key, v: &Versions) -> u64 {
    (key.len()
        + v.committed
            .iter()
            .map(|c| 8 + c.value.as_ref().map(row_size).unwrap_or(0))
            .sum::<usize>()
        + v.intent
            .as_ref()
            .and_then(|i| i.value.as_ref())
            .map(row_size)
            .unwrap_or(0)) as u64
}

fn write_one<T: Serialize>(w: &mut impl Write, value: &T) -> Result<()> {
    let payload = postcard::to_stdvec(value).map_err(|e| Error::Corrupt(e.to_string()))?;
    w.write_all(&frame(&payload))?;
    Ok(())
}

fn read_one<T: serde::de::DeserializeOwned>(r: &mut impl std::io::Read) -> Result<Option<T>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Err(Error::Corrupt("checkpoint checksum mismatch".into()));
    }
    postcard::from_bytes(&payload)
        .map(Some)
        .map_err(|e| Error::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eon_common::Value;

    const S0: ShardId = (1, 0);
    const S1: ShardId = (1, 1);

    fn k(i: i64) -> Key {
        eon_common::key::encode_key([&Value::Int(i)]).unwrap()
    }
    fn row(i: i64, s: &str) -> Row {
        vec![Value::Int(i), Value::Text(s.into())]
    }
    fn op(shard: ShardId, kind: WriteKind, rows: &[(i64, &str)]) -> WriteOp {
        WriteOp {
            shard,
            kind,
            rows: rows
                .iter()
                .map(|(i, s)| (k(*i), Some(row(*i, s))))
                .collect(),
        }
    }
    fn all(store: &Store, shard: ShardId, ts: Ts) -> Vec<Row> {
        let c = store
            .scan_chunk(
                shard,
                ts,
                None,
                (Bound::Unbounded, Bound::Unbounded),
                &[0, 1],
                usize::MAX,
                |rows| rows.iter().map(|r| (*r).clone()).collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(c.end, ChunkEnd::Done);
        c.out
    }

    fn scan_cols(store: &Store, ts: Ts, cols: &[usize]) -> Vec<Row> {
        let c = store
            .scan_chunk(
                S0,
                ts,
                None,
                (Bound::Unbounded, Bound::Unbounded),
                cols,
                usize::MAX,
                |rows| rows.iter().map(|r| (*r).clone()).collect::<Vec<_>>(),
            )
            .unwrap();
        c.out
    }

    #[tokio::test]
    async fn segments_hold_older_versions_and_reads_merge_them() {
        use arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let opts = StoreOptions {
            memory_limit: Some(1 << 20),
            ..Default::default()
        };
        let (t1, t2, t3);
        {
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            store.note_schema(1, &schema);
            let rows: Vec<(i64, &str)> = (0..100).map(|i| (i, "a")).collect();
            t1 = store
                .write_test(1, 100, true, vec![op(S0, WriteKind::Insert, &rows)])
                .await
                .unwrap()
                .ts;
            store.flush_all().unwrap();
            assert_eq!((store.segment_count(), store.memory_used()), (1, 0));
            // Writes to keys that live only in a segment: the checks see them.
            t2 = store
                .write_test(2, t1, true, vec![op(S0, WriteKind::Put, &[(5, "b")])])
                .await
                .unwrap()
                .ts;
            assert_eq!(store.segment_count(), 1);
            let dup = store
                .write_test(3, t2, true, vec![op(S0, WriteKind::Insert, &[(7, "dup")])])
                .await;
            assert!(matches!(dup, Err(Error::Duplicate { .. })), "{dup:?}");
            let stale = store
                .write_test(3, t1 - 1, true, vec![op(S0, WriteKind::Put, &[(9, "old")])])
                .await;
            assert!(
                matches!(stale, Err(Error::Conflict(_))),
                "the segment has a version newer than the snapshot"
            );
            let t = store
                .write_test(3, t1, true, vec![op(S0, WriteKind::Put, &[(9, "old")])])
                .await
                .unwrap()
                .ts;
            let conflict = store
                .write_test(3, t - 1, true, vec![op(S0, WriteKind::Put, &[(9, "late")])])
                .await;
            assert!(matches!(conflict, Err(Error::Conflict(_))), "{conflict:?}");
            t3 = store
                .write_test(
                    4,
                    t,
                    true,
                    vec![WriteOp {
                        shard: S0,
                        kind: WriteKind::Delete,
                        rows: vec![(k(6), None)],
                    }],
                )
                .await
                .unwrap()
                .ts;
            store.flush_all().unwrap();
            assert!(store.segment_count() >= 2);
        }
        // After a restart too: each snapshot sees its versions, merged from
        // the segments (and whatever the log replays into memory).
        for round in 0..2 {
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            assert!(store.segment_count() >= 2, "round {round}");
            let old = all(&store, S0, t1);
            assert_eq!(old.len(), 100);
            assert_eq!(old[5], row(5, "a"));
            let new = all(&store, S0, t3);
            assert_eq!(new.len(), 99, "key 6 deleted");
            assert_eq!(new[5], row(5, "b"));
            assert_eq!(new[8], row(9, "old"), "rows in key order");
            assert_eq!(all(&store, S0, t2 - 1), old);
            // Point lookups, in key order, through the Bloom filters.
            let got = store
                .get_chunk(S0, t3, None, &[k(5), k(6), k(7), k(1000)], |r| {
                    r.iter().map(|r| (*r).clone()).collect::<Vec<_>>()
                })
                .unwrap()
                .out;
            assert_eq!(got, vec![row(5, "b"), row(7, "a")]);
            // A projection: only the second column is read from disk.
            let narrow = scan_cols(&store, t3, &[1]);
            assert_eq!(narrow.len(), 99);
            assert!(store.segment_rows_read.load(Ordering::Relaxed) >= 100);
            // Ranges and chunks across delta and segments.
            let c = store
                .scan_chunk(
                    S0,
                    t3,
                    None,
                    (Bound::Excluded(k(5)), Bound::Excluded(k(9))),
                    &[0, 1],
                    2,
                    |r| r.iter().map(|r| (*r).clone()).collect::<Vec<_>>(),
                )
                .unwrap();
            assert_eq!(c.out, vec![row(7, "a"), row(8, "a")], "6 is deleted");
            assert_eq!(c.end, ChunkEnd::Done, "9 is past the end");
            store.checkpoint().await.unwrap();
        }
        // Many segments are merged into one; what every snapshot sees stays.
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        store.note_schema(1, &schema);
        let mut t = t3;
        for i in 0..4 {
            t = store
                .write_test(
                    10 + i,
                    t,
                    true,
                    vec![op(S0, WriteKind::Put, &[(1, "again")])],
                )
                .await
                .unwrap()
                .ts;
            store.flush_all().unwrap();
        }
        let now = all(&store, S0, t);
        assert!(store.segment_count() >= 4);
        // (These timestamps are far below the wall clock, so the horizon is
        // above all of them: only each key's newest version is needed.)
        assert!(
            store.gc() >= 5,
            "key 1's four older versions and key 5's first"
        );
        assert_eq!(store.segment_count(), 1);
        assert_eq!(all(&store, S0, t), now);
        drop(store);
        let store = Store::open(dir.path(), opts).unwrap();
        assert_eq!((store.segment_count(), all(&store, S0, t)), (1, now));
    }

    #[tokio::test]
    async fn one_phase_writes_are_visible_at_later_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let w = store
            .write_test(
                1,
                100,
                true,
                vec![op(S0, WriteKind::Insert, &[(2, "b"), (1, "a")])],
            )
            .await
            .unwrap();
        assert_eq!(w.ops[0].affected, 2);
        assert!(w.ts >= 100);
        assert_eq!(all(&store, S0, w.ts - 1), Vec::<Row>::new());
        assert_eq!(
            all(&store, S0, w.ts),
            vec![row(1, "a"), row(2, "b")],
            "rows come out in key order"
        );
    }

    #[tokio::test]
    async fn duplicates_and_conflicts_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let t1 = store
            .write_test(1, 100, true, vec![op(S0, WriteKind::Insert, &[(1, "a")])])
            .await
            .unwrap()
            .ts;
        let err = store
            .write_test(
                2,
                t1,
                true,
                vec![
                    op(S1, WriteKind::Insert, &[(5, "x")]),
                    op(S0, WriteKind::Insert, &[(3, "c"), (1, "dup")]),
                ],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Duplicate { op: 1, row: 1 }), "{err:?}");
        assert_eq!(all(&store, S0, u64::MAX - 1), vec![row(1, "a")]);
        assert_eq!(all(&store, S1, u64::MAX - 1), Vec::<Row>::new());
        // ON CONFLICT DO NOTHING skips the existing key.
        let w = store
            .write_test(
                3,
                t1,
                true,
                vec![op(S0, WriteKind::InsertIgnore, &[(1, "no"), (4, "d")])],
            )
            .await
            .unwrap();
        assert_eq!(
            w.ops[0],
            OpOutcome {
                affected: 1,
                skipped: vec![0]
            }
        );
        // An update based on a snapshot older than the last change conflicts.
        let err = store
            .write_test(
                4,
                t1 - 1,
                true,
                vec![op(S0, WriteKind::Put, &[(1, "stale")])],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)));
    }

    #[tokio::test]
    async fn staged_writes_are_pushed_by_readers_until_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let w = store
            .write_test(7, 100, false, vec![op(S0, WriteKind::Insert, &[(1, "a")])])
            .await
            .unwrap();
        let min = w.ts;
        // Readers see around an open transaction's intent, pushing it above
        // themselves; its own statements see it.
        assert_eq!(all(&store, S0, min + 10), Vec::<Row>::new());
        let own = store
            .scan_chunk(
                S0,
                min,
                Some(7),
                (Bound::Unbounded, Bound::Unbounded),
                &[],
                100,
                |r| r.len(),
            )
            .unwrap();
        assert_eq!(own.out, 1);
        // Another writer conflicts with the intent.
        assert!(matches!(
            store
                .write_test(8, min + 10, true, vec![op(S0, WriteKind::Put, &[(1, "b")])])
                .await,
            Err(Error::Conflict(_))
        ));
        // Finalize freezes it: the commit may not land below the push.
        let commit_ts = store.finalize(7).await.unwrap();
        assert!(
            commit_ts > min + 10,
            "pushed by the reader at {}: {commit_ts}",
            min + 10
        );
        let c = store
            .scan_chunk(
                S0,
                commit_ts + 5,
                None,
                (Bound::Unbounded, Bound::Unbounded),
                &[],
                100,
                |r| r.len(),
            )
            .unwrap();
        assert_eq!(
            c.end,
            ChunkEnd::Wait(7, k(1)),
            "frozen intents make later readers wait"
        );
        let s2 = store.clone();
        let waiter =
            tokio::spawn(
                async move { s2.wait_resolved(S0, &k(1), 7, Duration::from_secs(5)).await },
            );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.commit(7, commit_ts).await.unwrap(), commit_ts);
        assert!(waiter.await.unwrap());
        assert_eq!(all(&store, S0, commit_ts), vec![row(1, "a")]);
        assert_eq!(all(&store, S0, commit_ts - 1), Vec::<Row>::new());
        // Abort of a staged write leaves nothing; finalize of it then fails.
        store
            .write_test(
                9,
                commit_ts + 20,
                false,
                vec![op(S0, WriteKind::Insert, &[(2, "x")])],
            )
            .await
            .unwrap();
        store.abort(9).await.unwrap();
        assert!(matches!(
            store.finalize(9).await,
            Err(Error::UnknownTransaction(9))
        ));
        assert_eq!(all(&store, S0, u64::MAX - 1), vec![row(1, "a")]);
        // Commit with timestamp 0: freeze and commit at the lowest possible.
        let w = store
            .write_test(
                10,
                commit_ts + 30,
                false,
                vec![op(S1, WriteKind::Insert, &[(3, "c")])],
            )
            .await
            .unwrap();
        let ts = store.commit(10, 0).await.unwrap();
        assert!(ts >= w.ts);
        assert_eq!(all(&store, S1, ts), vec![row(3, "c")]);
    }

    #[tokio::test]
    async fn commits_land_above_snapshots_already_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let _g = store.begin_read(&[S0], 500).unwrap();
        let w = store
            .write_test(1, 100, true, vec![op(S0, WriteKind::Insert, &[(1, "a")])])
            .await
            .unwrap();
        assert!(
            w.ts > 500,
            "a reader at 500 already saw the shard without this row"
        );
    }

    #[tokio::test]
    async fn recovery_replays_the_log_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            checkpoint_bytes: 1,
            gc_after: Duration::from_secs(3600),
            memory_limit: None,
        };
        let (t1, t2);
        {
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            t1 = store
                .write_test(
                    1,
                    10,
                    true,
                    vec![op(S0, WriteKind::Insert, &[(1, "a"), (2, "b")])],
                )
                .await
                .unwrap()
                .ts;
            store
                .write_test(2, t1, false, vec![op(S1, WriteKind::Insert, &[(3, "c")])])
                .await
                .unwrap();
            store.finalize(2).await.unwrap();
            assert!(store.checkpoint_due());
            store.checkpoint().await.unwrap();
            // After the checkpoint: commit the staged write, delete a row,
            // stage another.
            store.commit(2, t1 + 1).await.unwrap();
            t2 = store
                .write_test(
                    3,
                    t1 + 1,
                    true,
                    vec![WriteOp {
                        shard: S0,
                        kind: WriteKind::Delete,
                        rows: vec![(k(2), None)],
                    }],
                )
                .await
                .unwrap()
                .ts;
            store
                .write_test(
                    4,
                    t2 + 10,
                    false,
                    vec![op(S0, WriteKind::Insert, &[(9, "pending")])],
                )
                .await
                .unwrap();
            store
                .write_test(
                    5,
                    t2,
                    true,
                    vec![op((2, 0), WriteKind::Insert, &[(1, "gone")])],
                )
                .await
                .unwrap();
            store.drop_table(2).await.unwrap();
        }
        let store = Store::open(dir.path(), opts).unwrap();
        assert_eq!(all(&store, S0, t1), vec![row(1, "a"), row(2, "b")]);
        assert_eq!(all(&store, S0, t2), vec![row(1, "a")]);
        assert_eq!(all(&store, S1, t2), vec![row(3, "c")]);
        assert_eq!(all(&store, (2, 0), u64::MAX - 1), Vec::<Row>::new());
        assert_eq!(
            store.prepared_txns(),
            vec![4],
            "the staged write is still staged"
        );
        // Recovery pushed the open intent above the floor a restart sets.
        store.set_read_floor(t2 + 50);
        assert!(store.finalize(4).await.unwrap() > t2 + 50);
        store.commit(4, t2 + 100).await.unwrap();
        assert_eq!(
            all(&store, S0, t2 + 100),
            vec![row(1, "a"), row(9, "pending")]
        );
        assert_eq!(
            wal::segments(&dir.path().join("wal")).unwrap().len(),
            1,
            "old segments were removed"
        );
    }
}

#[cfg(test)]
mod refresh_tests {
    use super::*;
    use eon_common::Value;

    fn k(i: i64) -> Key {
        eon_common::key::encode_key([&Value::Int(i)]).unwrap()
    }

    #[tokio::test]
    async fn refresh_fails_only_when_what_was_read_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let s: ShardId = (1, 0);
        let put = |key: i64| WriteOp {
            shard: s,
            kind: WriteKind::Insert,
            rows: vec![(k(key), Some(vec![Value::Int(key)]))],
        };
        let t1 = store
            .write_test(1, 100, true, vec![put(1)])
            .await
            .unwrap()
            .ts;
        // Nothing changed between t1 and t1 + 50.
        assert!(store.refresh(s, None, 9, t1, t1 + 50));
        // A commit after the read: the whole-shard refresh fails, a refresh
        // of an untouched key passes.
        let t2 = store
            .write_test(2, t1 + 60, true, vec![put(2)])
            .await
            .unwrap()
            .ts;
        assert!(!store.refresh(s, None, 9, t1, t2));
        assert!(store.refresh(s, Some(&[k(1)]), 9, t1, t2 + 10));
        // Another transaction's open intent is pushed, not a failure...
        store
            .write_test(3, t2 + 20, false, vec![put(3)])
            .await
            .unwrap();
        assert!(store.refresh(s, Some(&[k(3)]), 9, t2, t2 + 100));
        assert!(store.finalize(3).await.unwrap() > t2 + 100);
        // ...but a frozen one at or below the refresh is.
        assert!(!store.refresh(s, Some(&[k(3)]), 9, t2, t2 + 500));
    }
}

#[cfg(test)]
impl Store {
    /// A write whose transaction is anchored on this engine (engine 1).
    pub async fn write_test(
        &self,
        txn: TxnId,
        read_ts: Ts,
        one_phase: bool,
        ops: Vec<WriteOp>,
    ) -> Result<WriteOutcome> {
        let meta = WriteMeta {
            txn,
            read_ts,
            one_phase,
            anchor: 1,
            is_anchor: true,
            seq: 1,
        };
        self.write(meta, ops).await
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use eon_common::Value;

    fn op(key: i64) -> WriteOp {
        WriteOp {
            shard: (1, 0),
            kind: WriteKind::Insert,
            rows: vec![(
                eon_common::key::encode_key([&Value::Int(key)]).unwrap(),
                Some(vec![Value::Int(key)]),
            )],
        }
    }

    fn staged(txn: TxnId, anchor: u64, is_anchor: bool, seq: u32) -> WriteMeta {
        WriteMeta {
            txn,
            read_ts: 100,
            one_phase: false,
            anchor,
            is_anchor,
            seq,
        }
    }

    fn put(key: i64, v: i64) -> WriteOp {
        let k = eon_common::key::encode_key([&Value::Int(key)]).unwrap();
        WriteOp {
            shard: (1, 0),
            kind: WriteKind::Put,
            rows: vec![(k, Some(vec![Value::Int(key), Value::Int(v)]))],
        }
    }

    #[tokio::test]
    async fn rollback_to_a_savepoint_undoes_later_statements_and_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let seen = |store: &Store| {
            store
                .scan_chunk(
                    (1, 0),
                    1000,
                    Some(5),
                    (Bound::Unbounded, Bound::Unbounded),
                    &[],
                    100,
                    |rows| rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>(),
                )
                .unwrap()
                .out
        };
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            store
                .write(staged(5, 1, true, 1), vec![put(1, 10)])
                .await
                .unwrap();
            store
                .write(staged(5, 1, true, 2), vec![put(1, 20), put(2, 20)])
                .await
                .unwrap();
            store
                .write(staged(5, 1, true, 3), vec![put(1, 30)])
                .await
                .unwrap();
            store.rollback_to(5, 1).await.unwrap();
            assert_eq!(
                seen(&store),
                vec![Value::Int(10)],
                "statement 1's value; key 2 gone"
            );
            store
                .write(staged(5, 1, true, 4), vec![put(3, 40)])
                .await
                .unwrap();
            store.rollback_to(9, 0).await.unwrap(); // unknown here: nothing to undo
        }
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(
            seen(&store),
            vec![Value::Int(10), Value::Int(40)],
            "the log replays the rollback"
        );
        let ts = store.commit(5, 0).await.unwrap();
        let rows = store
            .scan_chunk(
                (1, 0),
                ts,
                None,
                (Bound::Unbounded, Bound::Unbounded),
                &[],
                100,
                |rows| rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>(),
            )
            .unwrap()
            .out;
        assert_eq!(rows, vec![Value::Int(10), Value::Int(40)]);
    }

    #[tokio::test]
    async fn records_decide_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            // Anchored here: a pending record appears with the first write.
            store
                .write(staged(1, 7, true, 1), vec![op(1)])
                .await
                .unwrap();
            assert_eq!(store.record(1).unwrap().status, TxnStatus::Pending);
            // Staged here, anchored elsewhere: no record.
            store
                .write(staged(2, 9, false, 1), vec![op(2)])
                .await
                .unwrap();
            assert!(store.record(2).is_none());
            assert_eq!(store.stale_staged(Duration::ZERO).len(), 2);
            // The commit point.
            assert_eq!(
                store.end_txn(1, Some(500)).await.unwrap(),
                TxnStatus::Committed(500)
            );
            // A stale pending transaction is aborted, then cannot commit.
            store
                .write(staged(3, 7, true, 1), vec![op(3)])
                .await
                .unwrap();
            assert_eq!(
                store
                    .txn_status(3, Some(Duration::from_secs(60)))
                    .await
                    .unwrap(),
                TxnStatus::Pending
            );
            assert_eq!(
                store.txn_status(3, Some(Duration::ZERO)).await.unwrap(),
                TxnStatus::Aborted
            );
            assert_eq!(
                store.end_txn(3, Some(600)).await.unwrap(),
                TxnStatus::Aborted
            );
            assert!(store.commit(3, 600).await.is_err());
            // Unknown transactions are aborted when asked with a staleness
            // bound, so they can never commit later.
            assert_eq!(
                store.txn_status(4, Some(Duration::ZERO)).await.unwrap(),
                TxnStatus::Aborted
            );
            assert_eq!(
                store.end_txn(4, Some(700)).await.unwrap(),
                TxnStatus::Aborted
            );
        }
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.record(1).unwrap().status, TxnStatus::Committed(500));
        assert_eq!(store.record(3).unwrap().status, TxnStatus::Aborted);
        assert_eq!(store.record(4).unwrap().status, TxnStatus::Aborted);
        // Resolving the staged writes by their records.
        store
            .resolve_by_record(1, TxnStatus::Committed(500))
            .await
            .unwrap();
        store
            .resolve_by_record(3, TxnStatus::Aborted)
            .await
            .unwrap();
        let c = store
            .scan_chunk(
                (1, 0),
                1000,
                None,
                (Bound::Unbounded, Bound::Unbounded),
                &[],
                100,
                |r| r.len(),
            )
            .unwrap();
        assert_eq!(
            c.out, 1,
            "key 1 committed; key 2 still staged; key 3 aborted"
        );
        store.checkpoint().await.unwrap();
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(
            store.record(1).unwrap().status,
            TxnStatus::Committed(500),
            "records are in checkpoints"
        );
        assert_eq!(store.prepared_txns(), vec![2]);
    }
}
