//! Transactions: what a session keeps for an open transaction, and the
//! commit protocol.
//!
//! A transaction's writes go to the data engines as they happen, staged as
//! intents under the transaction's id (`DataEngine.Write`, one_phase =
//! false); its reads see its own intents and, under REPEATABLE READ and
//! SERIALIZABLE, the snapshot taken at its first statement. Readers of
//! other transactions push its intents above their snapshots instead of
//! waiting for it, so it commits at a timestamp no lower than any of them.
//!
//! COMMIT:
//!
//! ```text
//!   one data engine:  Commit(ts = 0)  — the engine freezes and commits at once
//!   several:          Finalize on each (freeze intents, learn the lowest commit ts)
//!                     → commit_ts = max;  SERIALIZABLE: Refresh every read span
//!                       over (snapshot, commit_ts] — anything changed → abort, 40001
//!                     → EndTxn(commit, commit_ts) on the anchor engine: the commit point
//!                     → Commit(commit_ts) on each
//! ```
//!
//! The *anchor* is the engine of the transaction's first staged write; it
//! keeps the transaction's record (pending, committed at ts, aborted), which
//! the coordinator heartbeats while the transaction is open (a two-phase
//! statement outside a block: while it runs). Intents name
//! their anchor, so a data engine holding intents whose coordinator
//! vanished asks the record and commits or aborts them (a record whose
//! heartbeats stopped is aborted first); see `eon_data` `resolve_leftovers`.
//!
//! A single-engine SERIALIZABLE transaction that read anything goes the
//! long way too, so its reads are refreshed. ROLLBACK aborts everywhere.
//!
//! Savepoints: every statement of a transaction has a sequence number, and
//! its staged writes carry it. A data engine keeps, under each intent, what
//! the transaction's earlier statements wrote there; ROLLBACK TO SAVEPOINT
//! asks every engine the transaction wrote to to drop what statements after
//! the savepoint wrote (`DataEngine.RollbackTo`, logged like any write).
//! Conflicts with other writers are not waited for (so no transaction ever
//! waits for another: no deadlocks): the data engine refuses the write with
//! 40001. The session then undoes what the statement staged and runs it
//! again — under READ COMMITTED at a new snapshot, under SERIALIZABLE after
//! moving the block's snapshot up if a Refresh of what it read so far
//! succeeds (see `Session::undo_for_retry`); under REPEATABLE READ, or if
//! the refresh fails, the 40001 reaches the client, who retries the
//! transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eon_common::error::sqlstate;
use eon_common::{Error, Result};
use eon_proto::v1 as pb;

use crate::cluster::Cluster;
use crate::provider::ReadSpan;

/// How long COMMIT and ABORT keep retrying an engine that is restarting.
const RESOLVE_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::RepeatableRead => "repeatable read",
            Isolation::Serializable => "serializable",
        }
    }

    pub fn parse(s: &str) -> Option<Isolation> {
        match s.to_ascii_lowercase().replace('_', " ").trim() {
            "read committed" | "read uncommitted" => Some(Isolation::ReadCommitted),
            "repeatable read" | "snapshot" => Some(Isolation::RepeatableRead),
            "serializable" => Some(Isolation::Serializable),
            _ => None,
        }
    }
}

/// An open transaction of a session.
#[derive(Debug)]
pub struct TxnState {
    pub id: u64,
    /// The snapshot of REPEATABLE READ and SERIALIZABLE.
    pub read_ts: u64,
    pub isolation: Isolation,
    pub read_only: bool,
    /// A statement failed: everything but ROLLBACK is refused (25P02).
    pub failed: bool,
    /// A statement ran (isolation can no longer change).
    pub started: bool,
    /// Data engines holding its intents (they take part in the commit),
    /// with the incarnation of each that took them.
    pub engines: BTreeMap<u64, u64>,
    /// Data engines it sent writes to, whether or not they were staged (a
    /// refused or unanswered write): rollbacks go to all of them.
    pub touched: BTreeSet<u64>,
    /// Its current statement (counting from 1): staged writes carry it, so
    /// ROLLBACK TO SAVEPOINT can undo the statements after a savepoint.
    pub seq: u32,
    /// Open savepoints, oldest first: name and the statement before them.
    pub savepoints: Vec<(String, u32)>,
    /// Its statements (SERIALIZABLE): what they read is refreshed at commit.
    pub statements: Vec<Arc<crate::provider::StatementContext>>,
    /// The engine keeping its record, once it staged a write.
    pub anchor: Option<u64>,
    /// Heartbeats to the anchor while it is open; stopped when dropped.
    pub heartbeat: Option<tokio::task::AbortHandle>,
    /// The anchor reported the transaction aborted (its heartbeats were
    /// late): it can only roll back.
    pub aborted_remotely: Arc<std::sync::atomic::AtomicBool>,
    /// Its DDL, oldest first, with the statement number of each: undone
    /// on rollback (see [`crate::ddl::DdlUndo`]).
    pub ddl: Vec<(u32, crate::ddl::DdlUndo)>,
}

impl TxnState {
    /// Everything its tracked statements read (what a Refresh checks).
    pub fn reads(&self) -> Vec<ReadSpan> {
        self.statements
            .iter()
            .flat_map(|s| s.reads.lock().unwrap().clone())
            .collect()
    }
}

impl Drop for TxnState {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// How often an open transaction's coordinator heartbeats its record.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Keep the record of `txn` on `anchor` alive until aborted.
pub fn spawn_heartbeat(
    cluster: Arc<Cluster>,
    txn: u64,
    anchor: u64,
    aborted: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            let r = cluster
                .with_engine(anchor, Duration::ZERO, true, |mut c| async move {
                    c.heartbeat_txn(pb::HeartbeatTxnRequest { txn_id: txn })
                        .await
                })
                .await;
            if let Ok(r) = r {
                if r.get_ref().state == pb::TxnState::Aborted as i32 {
                    aborted.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        }
    })
    .abort_handle()
}

/// A heartbeat that stops when this is dropped: a statement's own
/// two-phase write keeps its record alive only while it runs.
pub struct HeartbeatWhile(pub tokio::task::AbortHandle);

impl Drop for HeartbeatWhile {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn new_txn_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 | 1
}

/// The error a statement gets in a failed transaction.
pub fn aborted_error() -> Error {
    Error::user(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

pub fn read_only_error(what: &str) -> Error {
    Error::user(
        sqlstate::READ_ONLY_SQL_TRANSACTION,
        format!("cannot execute {what} in a read-only transaction"),
    )
}

fn serialization_failure(why: &str) -> Error {
    Error::write_conflict(format!("could not serialize access due to {why}"))
        .with_detail("The transaction might succeed if retried.")
}

/// Abort `txn` everywhere it staged writes. Best effort: an intent left on
/// an engine that cannot be reached stays until it is resolved by hand or
/// by a durable transaction record (not there yet).
pub async fn abort(cluster: &Arc<Cluster>, txn: u64, engines: &BTreeSet<u64>) {
    let calls = engines.iter().map(|&engine| async move {
        let r = cluster
            .with_engine(engine, RESOLVE_PATIENCE, true, |mut c| async move {
                c.abort(pb::AbortRequest { txn_id: txn }).await
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(txn, engine, "abort failed: {e}");
        }
    });
    futures::future::join_all(calls).await;
}

/// ROLLBACK TO SAVEPOINT: undo on every engine in `engines` what `txn`'s
/// statements after `seq` staged.
pub async fn rollback_to(
    cluster: &Arc<Cluster>,
    txn: u64,
    seq: u32,
    engines: &BTreeSet<u64>,
) -> Result<()> {
    let calls = engines.iter().map(|&engine| async move {
        cluster
            .with_engine(engine, Duration::from_secs(3), true, |mut c| async move {
                c.rollback_to(pb::RollbackToRequest { txn_id: txn, seq })
                    .await
            })
            .await
    });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

/// Commit `txn`, which staged writes on `engines` (each with the
/// incarnation that took them: a restarted engine refuses to finalize);
/// `reads` and `read_ts` are refreshed when given (SERIALIZABLE). Returns
/// the commit timestamp. On error the transaction has been aborted
/// everywhere.
pub async fn commit(
    cluster: &Arc<Cluster>,
    txn: u64,
    epochs: &BTreeMap<u64, u64>,
    anchor: Option<u64>,
    refresh: Option<(u64, &[ReadSpan])>,
) -> Result<u64> {
    if epochs.is_empty() {
        return Ok(refresh.map(|(ts, _)| ts).unwrap_or(0));
    }
    let engines: &BTreeSet<u64> = &epochs.keys().copied().collect();
    let needs_refresh = refresh.is_some_and(|(_, reads)| !reads.is_empty());
    // (The anchor is normally the engine of the first write; only when all
    // of that was rolled back to a savepoint may it hold nothing.)
    let only = engines
        .iter()
        .next()
        .copied()
        .filter(|e| engines.len() == 1 && anchor.is_none_or(|a| a == *e));
    if let (Some(engine), false) = (only, needs_refresh) {
        let r = cluster
            .with_engine(engine, RESOLVE_PATIENCE, true, |mut c| async move {
                c.commit(pb::CommitRequest {
                    txn_id: txn,
                    commit_ts: 0,
                    epoch: epochs[&engine],
                })
                .await
            })
            .await;
        return match r {
            Ok(r) => Ok(r.into_inner().commit_ts),
            Err(e) if e.is_retryable_conflict() => {
                // Refused (the engine restarted, or aborted it): nothing
                // committed; clear what is left.
                abort(cluster, txn, engines).await;
                Err(e)
            }
            Err(e) => Err(Error::internal(format!("commit outcome unknown: {e}"))),
        };
    }
    // Freeze everywhere and learn the commit timestamp.
    let finals = engines.iter().map(|&engine| async move {
        cluster
            .with_engine(engine, Duration::from_secs(3), true, |mut c| async move {
                c.finalize(pb::FinalizeRequest {
                    txn_id: txn,
                    epoch: epochs[&engine],
                })
                .await
            })
            .await
            .map(|r| r.into_inner().min_commit_ts)
    });
    let mut commit_ts = refresh.map(|(ts, _)| ts).unwrap_or(0);
    for r in futures::future::join_all(finals).await {
        match r {
            Ok(ts) => commit_ts = commit_ts.max(ts),
            Err(e) => {
                abort(cluster, txn, engines).await;
                return Err(e);
            }
        }
    }
    if let Some((read_ts, reads)) = refresh {
        if commit_ts > read_ts && !refresh_reads(cluster, txn, read_ts, commit_ts, reads).await? {
            abort(cluster, txn, engines).await;
            return Err(serialization_failure(
                "read/write dependencies among transactions",
            ));
        }
    }
    // The commit point: the anchor's record says committed (unless it was
    // aborted meanwhile because heartbeats were late).
    if let Some(anchor) = anchor {
        let r = cluster
            .with_engine(anchor, RESOLVE_PATIENCE, true, |mut c| async move {
                c.end_txn(pb::EndTxnRequest {
                    txn_id: txn,
                    commit: true,
                    commit_ts,
                })
                .await
            })
            .await;
        match r {
            Ok(r) if r.get_ref().state == pb::TxnState::Committed as i32 => {}
            Ok(_) => {
                abort(cluster, txn, engines).await;
                return Err(serialization_failure(
                    "the transaction being aborted while it committed",
                ));
            }
            Err(e) => return Err(Error::internal(format!("commit outcome unknown: {e}"))),
        }
    }
    let commits = engines.iter().map(|&engine| async move {
        cluster
            .with_engine(engine, RESOLVE_PATIENCE, true, |mut c| async move {
                c.commit(pb::CommitRequest {
                    txn_id: txn,
                    commit_ts,
                    epoch: 0,
                })
                .await
            })
            .await
    });
    for r in futures::future::join_all(commits).await {
        r.map_err(|e| Error::internal(format!("commit outcome unknown: {e}")))?;
    }
    Ok(commit_ts)
}

/// Ask every engine whether what the transaction read there is unchanged
/// over `(from, to]`.
pub(crate) async fn refresh_reads(
    cluster: &Arc<Cluster>,
    txn: u64,
    from: u64,
    to: u64,
    reads: &[ReadSpan],
) -> Result<bool> {
    let mut by_engine: std::collections::BTreeMap<u64, Vec<pb::RefreshSpan>> = Default::default();
    for r in reads {
        by_engine
            .entry(r.engine)
            .or_default()
            .push(pb::RefreshSpan {
                table_id: r.table,
                shard: r.shard,
                keys: r.keys.iter().flatten().map(|k| k.clone().into()).collect(),
            });
    }
    let calls = by_engine.into_iter().map(|(engine, spans)| async move {
        let req = pb::RefreshRequest {
            txn_id: txn,
            from_ts: from,
            to_ts: to,
            spans,
        };
        cluster
            .with_engine(engine, Duration::from_secs(3), true, |mut c| {
                let req = req.clone();
                async move { c.refresh(req).await }
            })
            .await
            .map(|r| r.into_inner().ok)
    });
    for r in futures::future::join_all(calls).await {
        if !r? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A SQLSTATE check used by callers that map statement errors.
pub fn is_serialization_failure(e: &Error) -> bool {
    e.code == sqlstate::SERIALIZATION_FAILURE
}
