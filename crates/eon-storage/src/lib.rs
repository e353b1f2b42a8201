//! eon's storage engine: the shards of one data engine.
//!
//! A data engine keeps, for each shard it owns, the rows of that shard in a
//! B-tree ordered by encoded primary key, each key with its MVCC history
//! ([`mvcc`]). Writes are made durable in a write-ahead log ([`wal`]) before
//! they are acknowledged; [`Store`] ties the two together: it validates and
//! stages writes, logs them, commits them, serves snapshot scans, takes
//! checkpoints so restarts replay only a bounded tail of the log, and
//! recovers after a crash.
//!
//! ```text
//!  write ──► validate + stage intents (shard locks) ──► WAL append + fsync ──► commit intents
//!  scan  ──► note read ts on shard ──► walk B-tree, newest version <= ts ──► rows (chunked)
//!  checkpoint: rotate WAL ──► snapshot shards to checkpoint.bin ──► delete old segments
//!  recovery:   load checkpoint.bin ──► replay segments from its mark (idempotent)
//! ```
//!
//! This issue's engine is row-oriented and memory-resident with a durable
//! log; columnar segments for older data come with the transactions issue.

pub mod mvcc;
pub mod store;
pub mod wal;

pub use mvcc::{Ts, TxnId, TxnStatus, WriteKind};
pub use store::{ChunkEnd, ScanChunk, ShardId, Store, StoreOptions, TxnRecord, WriteMeta, WriteOp, WriteOutcome};

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
    /// A read below the garbage collector's floor.
    #[error("snapshot too old")]
    SnapshotTooOld,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
