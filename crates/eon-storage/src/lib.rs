//! eon's storage engine: the shards of one data engine.
//!
//! A data engine keeps, for each shard it owns, recent rows in memory — a
//! B-tree ordered by encoded primary key, each key with its MVCC history
//! ([`mvcc`]), the *delta* — and older committed versions on disk in
//! columnar [`segment`]s (Arrow IPC files). Writes are made durable in a
//! write-ahead log ([`wal`]) before they are acknowledged; [`Store`] ties
//! it together: it validates and stages writes, logs them, commits them,
//! serves snapshot scans that merge the delta with the segments, moves
//! committed versions to segments when memory passes its limit, merges and
//! garbage-collects old versions, takes checkpoints so restarts replay only
//! a bounded tail of the log, and recovers after a crash.
//!
//! ```text
//!  write ──► memory check (flush to segments) ──► validate + stage intents (shard locks)
//!        ──► WAL append + fsync ──► commit intents
//!  scan  ──► note read ts on shard ──► merge B-tree + segments by key, newest version <= ts ──► rows (chunked)
//!  flush:      committed versions of a shard ──► new segment file (fsync, rename) ──► out of memory
//!  gc:         drop versions older than the retention window; merge a shard's segments
//!  checkpoint: rotate WAL ──► snapshot the delta to checkpoint.bin ──► delete old log files
//!  recovery:   open segment files ──► load checkpoint.bin ──► replay the log from its mark (idempotent)
//! ```
//!
//! A shard replicated by a Raft group logs to its group instead of the
//! WAL, and is rebuilt from the group's snapshot and log rather than from
//! the checkpoint: see `store/replica.rs` ([`ShardLog`], `Store::apply_entry`,
//! `Store::save_shard`).

pub mod mvcc;
pub mod segment;
pub mod store;
pub mod wal;

pub use mvcc::{Ts, TxnId, TxnStatus, WriteKind};
pub use store::{
    ChunkEnd, Proposal, ScanChunk, ShardId, ShardLog, Store, StoreOptions, TxnRecord, WriteMeta,
    WriteOp, WriteOutcome,
};

/// Run `work`, which may take a while without awaiting (staging a large
/// write, applying a large entry, writing a snapshot), off the async
/// worker's duty: the worker's other tasks (answering pings, Raft messages,
/// other requests) move to another thread meanwhile. On a single-threaded
/// runtime, or outside one, it just runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    #[error("the write-ahead log is closed")]
    Closed,
    /// Insert of an existing key: op and row index within the request.
    #[error("duplicate key")]
    Duplicate { op: usize, row: usize },
    /// Retryable write-write conflict.
    #[error("write conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Key(#[from] eon_common::Error),
    /// Finalize of a transaction with no staged writes here (it was aborted).
    #[error("transaction {0} has no staged writes here")]
    UnknownTransaction(u64),
    #[error("segment file: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The delta is at the memory limit and nothing more can move to disk.
    #[error("memory limit reached")]
    MemoryLimit,
    /// A read below the garbage collector's floor.
    #[error("snapshot too old")]
    SnapshotTooOld,
    /// A replicated shard's write reached a replica that does not lead its
    /// group (the leader's node id, when known).
    #[error("not the shard's leader")]
    NotLeader(Option<u64>),
    /// A replicated shard's group could not commit the write.
    #[error("replication: {0}")]
    Replication(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
