//! eon's data engine: owns shards, runs scans and plan fragments where the
//! data is, applies writes durably.
//!
//! A data engine is one `eon data-engine` process with its own directory
//! (`<data-dir>/data-engine-<id>`) holding a [`eon_storage::Store`]. It
//! implements the `DataEngine` gRPC service:
//!
//! - **Scan** reads the rows of some shards of a table at a snapshot
//!   timestamp, evaluates the pushed-down filter with DataFusion's vectorized
//!   expressions on Arrow batches built from the stored rows, keeps only the
//!   requested columns, and streams the result back as Arrow IPC. Point
//!   lookups (`keys`) read only those keys. Counters `rows_scanned` and
//!   `rows_returned` record how much was read and how much left the engine.
//! - **RunFragment** runs a task of a stage of a distributed query: a
//!   DataFusion plan fragment (aggregates, joins, top-k sorts, with their
//!   filters and projections) that the query engine cut out of its plan. It
//!   is decoded and run by `eon_query::fragment`, whose scans read the
//!   shards placed on this engine through the same checks and `run_scan` as
//!   **Scan**, handing batches over in memory, and whose shuffle reads call
//!   **RunFragment** on the other engines (the `peers`, found through meta)
//!   for their partition of a shuffle. Such a call names a (query, stage):
//!   the first one decodes the producing stage and keeps it in `shuffles`
//!   until each of its partitions has been asked for, so it runs once.
//!   Only the fragment's output leaves the engine (counted in
//!   `bytes_returned` when it goes to the query engine, `bytes_shuffled`
//!   when to another task; `fragments` counts the fragments run).
//! - **Write** checks and stages, or commits at once, inserts, updates and
//!   deletes sent as Arrow batches; **Commit**/**Abort** finish staged
//!   writes (the query engine's two-phase commit).
//! - **FenceTable** refuses writes to a table being rewritten (a lease, once
//!   the writes staged on it resolve); **DropTable** forgets a table's data
//!   and keeps refusing writes to it.
//!
//! The engine does not keep a copy of the catalog: every request carries the
//! table definition it was planned against.
//!
//! A shard with several copies (`Table.replicas`) is a Raft group; this
//! engine runs its replicas of such shards ([`replicas`]) and serves a
//! replicated shard only where it leads its group.

mod replicas;
mod scan;
mod service;

pub use service::{DataEngineOptions, DataEngineService, run};
