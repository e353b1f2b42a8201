//! Replicated shards: a shard whose records go to its Raft group's log
//! instead of the engine's write-ahead log.
//!
//! A shard with replication factor 3 has a copy on three data engines, and
//! the copies agree because each applies the same records in the same
//! order: the *entries* its group commits (the group and its log are the
//! data engine's business; the store sees a [`ShardLog`] to propose to and
//! calls [`Store::apply_entry`] for every committed entry). A record that
//! spans shards is cut into one per shard, each committed by its own group.
//!
//! The leader works as it does without replication — it checks a write and
//! stages its intents in memory under the shard's lock, *then* makes the
//! record durable — except that "durable" means committed by a majority of
//! the group. Staging first keeps the shard's lock short and lets the
//! intents hold off conflicting writers while the entry travels. Applying
//! the entry on the leader again is harmless: every record applies
//! idempotently (setting an intent that is already there changes nothing,
//! committing a version twice keeps one).
//!
//! ```text
//!  leader:    stage intents ──► propose entry ──► majority commits ──► every replica applies it
//!  follower:                                                      └──► apply_entry (the same code)
//!  failure:   proposal fails, entry not applied here ──► undo the staged intents
//! ```
//!
//! A proposal can fail yet commit (the leader lost its leadership while the
//! entry was on its way; the next leader committed it). Each staged
//! proposal carries a token; applying the entry marks it, and a failed
//! proposal whose entry was applied here counts as a success. Undoing and
//! applying take one lock, so they cannot cross.
//!
//! A group's snapshot ([`Store::save_shard`]) is the shard's versions — in
//! memory and in segments — and the transaction records the group keeps.
//! One-phase intents are left out: they never outlive their entry's
//! application, so one in memory is a proposal still in flight.

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use eon_common::key::Key;
use serde::{Deserialize, Serialize};

use super::{
    CHECKPOINT_CHUNK, Record, ShardData, ShardId, Staged, Store, TxnRecord, collect_staged,
    read_one, write_one, write_size,
};
use crate::mvcc::{TxnId, TxnStatus, Version, Versions};
use crate::{Error, Result};

/// A proposal's outcome, to be awaited.
pub type Proposal = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// The log of a replicated shard: its Raft group.
pub trait ShardLog: Send + Sync + 'static {
    /// Commit `entry` in the group. Resolves once it is committed and
    /// applied on this replica (through [`Store::apply_entry`]); fails with
    /// [`Error::NotLeader`] when this replica does not lead the group.
    fn propose(&self, entry: Vec<u8>) -> Proposal;
    /// Whether this replica leads the group now (as far as it knows).
    fn leads(&self) -> bool;
    /// Resolves once this replica has applied every entry of its log (the
    /// state it took part in committing); fails when it cannot within
    /// about a second, or its group is not running yet.
    fn caught_up(&self) -> Proposal;
}

/// What a group's log holds.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The opening of the store that proposed it, and the proposal's token
    /// (0: nothing was staged ahead of it).
    origin: u64,
    token: u64,
    record: Record,
}

const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
enum SnapshotFrame {
    Header { format: u32 },
    Rows(Vec<(Key, Versions)>),
    Records(Vec<(TxnId, TxnRecord)>),
}

impl Store {
    /// From now on, `shard`'s records go to `log`. The shard's state comes
    /// from its group alone: what the store held of it is dropped.
    pub fn replicate(&self, shard: ShardId, log: Arc<dyn ShardLog>) -> Result<()> {
        self.reset_shard(shard)?;
        self.groups.write().unwrap().insert(shard, log);
        Ok(())
    }

    /// The shard's group is gone from this engine: forget its data.
    pub fn unreplicate(&self, shard: ShardId) -> Result<()> {
        self.groups.write().unwrap().remove(&shard);
        self.reset_shard(shard)
    }

    pub fn is_replicated(&self, shard: ShardId) -> bool {
        self.groups.read().unwrap().contains_key(&shard)
    }

    pub(super) fn group_log(&self, shard: ShardId) -> Option<Arc<dyn ShardLog>> {
        self.groups.read().unwrap().get(&shard).cloned()
    }

    /// Drop everything the store holds of `shard`: rows, segments, staged
    /// keys, the transaction records its group keeps.
    fn reset_shard(&self, shard: ShardId) -> Result<()> {
        let removed = self.shards.write().unwrap().remove(&shard);
        if let Some(cell) = removed {
            let data = cell.data.read().unwrap();
            let freed = super::delta_size(&data);
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
            for seg in &data.segments {
                std::fs::remove_file(&seg.path)?;
            }
        }
        self.prepared.lock().unwrap().retain(|_, staged| {
            staged.keys.retain(|(s, _)| *s != shard);
            !staged.keys.is_empty()
        });
        let mut homes = self.homes.lock().unwrap();
        let gone: Vec<TxnId> = homes
            .iter()
            .filter(|(_, s)| **s == shard)
            .map(|(t, _)| *t)
            .collect();
        let mut records = self.records.lock().unwrap();
        for txn in gone {
            homes.remove(&txn);
            records.remove(&txn);
        }
        self.resolved.notify_waiters();
        Ok(())
    }

    /// Propose `record` to `shard`'s group. With `undo`, the record's
    /// effects were staged here ahead of it: a proposal that fails and
    /// whose entry was not applied here is undone (and reported); one whose
    /// entry was applied here succeeded after all.
    pub(super) async fn propose(
        &self,
        shard: ShardId,
        record: Record,
        undo: Option<&(dyn Fn() + Sync)>,
    ) -> Result<()> {
        let log = self
            .group_log(shard)
            .ok_or_else(|| Error::Replication(format!("shard {shard:?} is not replicated here")))?;
        let token = match undo {
            Some(_) => {
                let token = self.next_token.fetch_add(1, Ordering::Relaxed);
                self.in_flight.lock().unwrap().insert(token, false);
                token
            }
            None => 0,
        };
        let entry = postcard::to_stdvec(&Entry {
            origin: self.origin,
            token,
            record,
        })
        .map_err(|e| Error::Corrupt(e.to_string()))?;
        let outcome = log.propose(entry).await;
        if token == 0 {
            return outcome;
        }
        let settle = |_apply: std::sync::MutexGuard<'_, ()>| {
            let applied = self.in_flight.lock().unwrap().remove(&token) == Some(true);
            match outcome {
                Err(e) if !applied => {
                    if let Some(undo) = undo {
                        undo();
                    }
                    Err(e)
                }
                _ => Ok(()),
            }
        };
        match self.apply_lock.try_lock() {
            Ok(guard) => settle(guard),
            // Another group is applying an entry, perhaps a large one (a
            // commit of 10^5 rows takes a second on a busy machine): wait
            // off the async worker. Waiting on it, every write that ended
            // meanwhile held a worker, and with both workers held the
            // engine answered nothing, pings included — its peers gave up
            // on it.
            Err(std::sync::TryLockError::WouldBlock) => {
                crate::blocking(|| settle(self.apply_lock.lock().unwrap()))
            }
            Err(std::sync::TryLockError::Poisoned(p)) => settle(p.into_inner()),
        }
    }

    /// Propose `record` to each of `shards`' groups at once (nothing staged
    /// ahead of it); the first failure, if any.
    pub(super) async fn propose_each(
        &self,
        shards: impl IntoIterator<Item = ShardId>,
        record: impl Fn() -> Record,
    ) -> Result<()> {
        let outcomes = futures::future::join_all(
            shards
                .into_iter()
                .map(|shard| self.propose(shard, record(), None)),
        )
        .await;
        outcomes.into_iter().collect()
    }

    /// Apply one committed entry of `shard`'s group (every replica, the
    /// leader included, applies every entry, in log order).
    pub fn apply_entry(&self, shard: ShardId, entry: &[u8]) -> Result<()> {
        let entry: Entry =
            postcard::from_bytes(entry).map_err(|e| Error::Corrupt(e.to_string()))?;
        let _apply = self.apply_lock.lock().unwrap();
        if entry.origin == self.origin
            && let Some(applied) = self.in_flight.lock().unwrap().get_mut(&entry.token)
        {
            *applied = true;
        }
        if entry.origin != self.origin {
            // Staged by another replica (or by this one before a restart):
            // the rows are new here, and count toward the memory limit as
            // staging counts them on the leader.
            let added: u64 = match &entry.record {
                Record::Apply { shards, .. } | Record::Prepare { shards, .. } => shards
                    .iter()
                    .flat_map(|s| &s.writes)
                    .map(|w| write_size(&w.key, w.value.as_ref()))
                    .sum(),
                _ => 0,
            };
            self.bytes.fetch_add(added, Ordering::Relaxed);
        }
        self.apply_record(shard, entry.record);
        Ok(())
    }

    /// A record's effect on one shard's state (idempotent).
    fn apply_record(&self, shard: ShardId, record: Record) {
        let now = eon_common::unix_ms();
        let cell = self.shard_or_create(shard);
        let keys_of = |txn: TxnId| -> Vec<Key> {
            self.prepared
                .lock()
                .unwrap()
                .get(&txn)
                .map(|s| {
                    s.keys
                        .iter()
                        .filter(|(s, _)| *s == shard)
                        .map(|(_, k)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let resolved = |txn: TxnId, status: TxnStatus| {
            let mut prepared = self.prepared.lock().unwrap();
            if let Some(staged) = prepared.get_mut(&txn) {
                staged.keys.retain(|(s, _)| *s != shard);
                staged.applied.retain(|(s, _)| *s != shard);
                if staged.keys.is_empty() {
                    prepared.remove(&txn);
                }
            }
            drop(prepared);
            if let Some(r) = self.records.lock().unwrap().get_mut(&txn) {
                *r = TxnRecord {
                    status,
                    touched_ms: now,
                };
            }
        };
        match record {
            Record::Apply {
                txn,
                commit_ts,
                shards,
            } => {
                let mut data = cell.data.write().unwrap();
                for w in shards.into_iter().flat_map(|s| s.writes) {
                    let v = data.rows.entry(w.key).or_default();
                    v.abort(txn);
                    v.install(commit_ts, w.value);
                }
            }
            Record::Prepare {
                txn,
                min_commit_ts,
                shards,
                anchor,
                record,
                seq,
            } => {
                if record {
                    self.records
                        .lock()
                        .unwrap()
                        .entry(txn)
                        .or_insert(TxnRecord {
                            status: TxnStatus::Pending,
                            touched_ms: now,
                        });
                    self.homes.lock().unwrap().insert(txn, shard);
                }
                let mut data = cell.data.write().unwrap();
                let mut keys = Vec::new();
                for w in shards.into_iter().flat_map(|s| s.writes) {
                    data.rows.entry(w.key.clone()).or_default().set_intent(
                        txn,
                        min_commit_ts,
                        anchor,
                        seq,
                        w.value,
                    );
                    keys.push((shard, w.key));
                }
                drop(data);
                let mut prepared = self.prepared.lock().unwrap();
                let staged = prepared.entry(txn).or_insert_with(|| Staged {
                    keys: vec![],
                    anchor,
                    since: std::time::Instant::now(),
                    applied: Default::default(),
                });
                // A key the transaction wrote before is listed already.
                let new: Vec<(ShardId, Key)> = keys
                    .into_iter()
                    .filter(|k| staged.applied.insert(k.clone()))
                    .collect();
                staged.keys.extend(new);
            }
            Record::RollbackTo { txn, seq } => {
                let keys = keys_of(txn);
                let mut data = cell.data.write().unwrap();
                for key in keys {
                    if data
                        .rows
                        .get_mut(&key)
                        .is_some_and(|v| v.rollback_to(txn, seq) && v.committed.is_empty())
                    {
                        data.rows.remove(&key);
                    }
                }
            }
            Record::TxnEnd { txn, status } => {
                self.records.lock().unwrap().insert(
                    txn,
                    TxnRecord {
                        status,
                        touched_ms: now,
                    },
                );
                self.homes.lock().unwrap().insert(txn, shard);
            }
            Record::Freeze { txn } => {
                let keys = keys_of(txn);
                let mut data = cell.data.write().unwrap();
                for key in keys {
                    if let Some(i) = data
                        .rows
                        .get_mut(&key)
                        .and_then(|v| v.intent.as_mut())
                        .filter(|i| i.txn == txn)
                    {
                        i.frozen = true;
                    }
                }
            }
            Record::Commit { txn, commit_ts } => {
                let keys = keys_of(txn);
                {
                    let mut data = cell.data.write().unwrap();
                    for key in keys {
                        if let Some(v) = data.rows.get_mut(&key) {
                            v.commit(txn, commit_ts);
                        }
                    }
                }
                resolved(txn, TxnStatus::Committed(commit_ts));
            }
            Record::Abort { txn } => {
                let keys = keys_of(txn);
                {
                    let mut data = cell.data.write().unwrap();
                    for key in keys {
                        if data.rows.get_mut(&key).is_some_and(|v| {
                            v.abort(txn);
                            v.committed.is_empty() && v.intent.is_none()
                        }) {
                            data.rows.remove(&key);
                        }
                    }
                }
                resolved(txn, TxnStatus::Aborted);
            }
            // Never proposed: each data engine drops its own copies of a
            // dropped table (`Store::drop_table`); there is nothing for a
            // group to agree on.
            Record::DropTable { .. } => {}
        }
        self.resolved.notify_waiters();
    }

    // ------------------------------------------------------------ snapshots

    /// Write `shard`'s state as its group's snapshot: every version, from
    /// memory and from segments, and the records the group keeps. The
    /// shard's lock is held only while copying a chunk of keys.
    pub fn save_shard(&self, shard: ShardId, out: &mut dyn Write) -> Result<()> {
        let mut out = std::io::BufWriter::new(out);
        write_one(
            &mut out,
            &SnapshotFrame::Header {
                format: SNAPSHOT_FORMAT,
            },
        )?;
        if let Some(cell) = self.shard(shard) {
            let mut from = std::ops::Bound::Unbounded;
            loop {
                let rows: Vec<(Key, Versions)> = {
                    let data = cell.data.read().unwrap();
                    data.rows
                        .range((from, std::ops::Bound::Unbounded))
                        .take(CHECKPOINT_CHUNK)
                        .map(|(k, v)| {
                            let mut v = v.clone();
                            // A one-phase intent is a proposal in flight.
                            if v.intent.as_ref().is_some_and(|i| i.anchor == 0) {
                                v.intent = None;
                            }
                            (k.clone(), v)
                        })
                        .collect()
                };
                let Some((last, _)) = rows.last() else { break };
                from = std::ops::Bound::Excluded(last.clone());
                let full = rows.len() == CHECKPOINT_CHUNK;
                write_one(&mut out, &SnapshotFrame::Rows(rows))?;
                if !full {
                    break;
                }
            }
            // Segments are immutable: read them without the lock.
            let segments = cell.data.read().unwrap().segments.clone();
            for seg in segments {
                let all: Vec<usize> = (0..seg.columns).collect();
                let mut cursor = seg.cursor(None, &all);
                let mut rows = Vec::new();
                while let Some((key, versions)) = cursor.take()? {
                    rows.push((
                        key,
                        Versions {
                            committed: versions
                                .into_iter()
                                .map(|v| Version {
                                    ts: v.ts,
                                    value: v.value,
                                })
                                .collect(),
                            intent: None,
                        },
                    ));
                    if rows.len() == CHECKPOINT_CHUNK {
                        write_one(&mut out, &SnapshotFrame::Rows(std::mem::take(&mut rows)))?;
                    }
                }
                if !rows.is_empty() {
                    write_one(&mut out, &SnapshotFrame::Rows(rows))?;
                }
            }
        }
        let records: Vec<(TxnId, TxnRecord)> = {
            let homes = self.homes.lock().unwrap();
            let records = self.records.lock().unwrap();
            homes
                .iter()
                .filter(|(_, s)| **s == shard)
                .filter_map(|(t, _)| records.get(t).map(|r| (*t, *r)))
                .collect()
        };
        write_one(&mut out, &SnapshotFrame::Records(records))?;
        out.flush()?;
        Ok(())
    }

    /// Replace `shard`'s state by a snapshot [`save_shard`](Store::save_shard)
    /// wrote.
    pub fn load_shard(&self, shard: ShardId, input: &mut dyn Read) -> Result<()> {
        let mut input = std::io::BufReader::new(input);
        let _apply = self.apply_lock.lock().unwrap();
        self.reset_shard(shard)?;
        match read_one::<SnapshotFrame>(&mut input)? {
            Some(SnapshotFrame::Header { format }) if format == SNAPSHOT_FORMAT => {}
            _ => return Err(Error::Corrupt("shard snapshot without its header".into())),
        }
        let mut data = ShardData::default();
        let mut records = Vec::new();
        while let Some(frame) = read_one::<SnapshotFrame>(&mut input)? {
            match frame {
                SnapshotFrame::Header { .. } => {
                    return Err(Error::Corrupt("a second snapshot header".into()));
                }
                SnapshotFrame::Rows(rows) => {
                    for (key, versions) in rows {
                        let v = data.rows.entry(key).or_default();
                        for c in versions.committed {
                            v.install(c.ts, c.value);
                        }
                        if versions.intent.is_some() {
                            v.intent = versions.intent;
                        }
                    }
                }
                SnapshotFrame::Records(list) => records.extend(list),
            }
        }
        // (reset_shard dropped the shard's staged keys.)
        let bytes = collect_staged(shard, &data, &mut self.prepared.lock().unwrap());
        {
            let mut homes = self.homes.lock().unwrap();
            let mut kept = self.records.lock().unwrap();
            for (txn, r) in records {
                homes.insert(txn, shard);
                kept.insert(txn, r);
            }
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let cell = self.shard_or_create(shard);
        *cell.data.write().unwrap() = data;
        self.resolved.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The store's side of replication, with a log in the same process that
    //! commits (or not) on command. (Real groups on real sockets are tested
    //! in eon-raft's `shard` module.)

    use std::ops::Bound;
    use std::sync::{Mutex, Weak};

    use eon_common::Value;

    use super::*;
    use crate::mvcc::WriteKind;
    use crate::store::{StoreOptions, WriteMeta, WriteOp};

    #[derive(Clone, Copy, PartialEq)]
    enum Fate {
        Commit,
        /// The proposal fails and the entry never commits.
        Lost,
        /// The entry commits and is applied, but the proposer hears of a
        /// failure (it lost its leadership meanwhile).
        CommittedButFailed,
    }

    struct Loopback {
        store: Weak<Store>,
        shard: ShardId,
        fate: Mutex<Fate>,
        /// Whether this copy has not applied its whole log yet.
        behind: std::sync::atomic::AtomicBool,
    }

    impl ShardLog for Loopback {
        fn propose(&self, entry: Vec<u8>) -> Proposal {
            let fate = *self.fate.lock().unwrap();
            let store = self.store.upgrade().unwrap();
            let shard = self.shard;
            Box::pin(async move {
                if fate != Fate::Lost {
                    store.apply_entry(shard, &entry)?;
                }
                match fate {
                    Fate::Commit => Ok(()),
                    _ => Err(Error::NotLeader(None)),
                }
            })
        }
        fn leads(&self) -> bool {
            true
        }
        fn caught_up(&self) -> Proposal {
            let behind = self.behind.load(Ordering::Relaxed);
            Box::pin(async move {
                match behind {
                    true => Err(Error::Replication("behind".into())),
                    false => Ok(()),
                }
            })
        }
    }

    const A: ShardId = (9, 0);
    const B: ShardId = (9, 1);
    const LOCAL: ShardId = (8, 0);

    fn key(i: i64) -> Key {
        eon_common::key::encode_key([&Value::Int(i)]).unwrap()
    }

    fn insert(shard: ShardId, keys: &[i64]) -> WriteOp {
        WriteOp {
            shard,
            kind: WriteKind::Insert,
            rows: keys
                .iter()
                .map(|&i| (key(i), Some(vec![Value::Int(i)])))
                .collect(),
        }
    }

    fn meta(txn: u64, one_phase: bool) -> WriteMeta {
        WriteMeta {
            txn,
            read_ts: 10,
            one_phase,
            anchor: 1,
            is_anchor: !one_phase,
            seq: 1,
        }
    }

    fn keys(store: &Store, shard: ShardId) -> Vec<i64> {
        store
            .scan_chunk(
                shard,
                u64::MAX - 1,
                None,
                (Bound::Unbounded, Bound::Unbounded),
                &[0],
                usize::MAX,
                |rows| {
                    rows.iter()
                        .map(|r| match r[0] {
                            Value::Int(i) => i,
                            _ => unreachable!(),
                        })
                        .collect::<Vec<_>>()
                },
            )
            .unwrap()
            .out
    }

    fn open(dir: &std::path::Path) -> (Arc<Store>, Vec<Arc<Loopback>>) {
        let store = Arc::new(Store::open(dir, StoreOptions::default()).unwrap());
        let logs: Vec<Arc<Loopback>> = [A, B]
            .into_iter()
            .map(|shard| {
                let log = Arc::new(Loopback {
                    store: Arc::downgrade(&store),
                    shard,
                    fate: Mutex::new(Fate::Commit),
                    behind: Default::default(),
                });
                store.replicate(shard, log.clone()).unwrap();
                log
            })
            .collect();
        (store, logs)
    }

    /// A copy that has not applied its log cannot tell a transaction with
    /// no record from one whose record it has not seen yet: it aborts
    /// neither. (An engine just restarted, asked about a transaction its
    /// group had committed, aborted it, and the transaction stayed half
    /// applied.)
    #[tokio::test]
    async fn a_lagging_copy_aborts_no_transaction_it_has_no_record_of() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, logs) = open(tmp.path());
        let ask = || store.txn_status(9, Some(std::time::Duration::ZERO));
        // Its groups not running yet.
        store.expect_groups();
        assert_eq!(ask().await.unwrap(), TxnStatus::Pending);
        // One group running but behind.
        store.groups_known();
        logs[1].behind.store(true, Ordering::Relaxed);
        assert_eq!(ask().await.unwrap(), TxnStatus::Pending);
        assert!(store.record(9).is_none());
        // Caught up: no record means none, and it is aborted for good.
        logs[1].behind.store(false, Ordering::Relaxed);
        assert_eq!(ask().await.unwrap(), TxnStatus::Aborted);
        assert_eq!(store.record(9).unwrap().status, TxnStatus::Aborted);
    }

    #[tokio::test]
    async fn failed_proposals_are_undone_unless_their_entry_was_applied() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, logs) = open(tmp.path());
        store
            .write(meta(1, true), vec![insert(A, &[1])])
            .await
            .unwrap();

        // Lost: the write fails and leaves nothing staged behind.
        *logs[0].fate.lock().unwrap() = Fate::Lost;
        let lost = store.write(meta(2, true), vec![insert(A, &[2])]).await;
        assert!(matches!(lost, Err(Error::NotLeader(None))), "{lost:?}");
        *logs[0].fate.lock().unwrap() = Fate::Commit;
        store
            .write(meta(3, true), vec![insert(A, &[2])])
            .await
            .unwrap();

        // Committed although the proposer heard otherwise: it counts.
        *logs[0].fate.lock().unwrap() = Fate::CommittedButFailed;
        store
            .write(meta(4, true), vec![insert(A, &[3])])
            .await
            .unwrap();
        *logs[0].fate.lock().unwrap() = Fate::Commit;
        assert_eq!(keys(&store, A), vec![1, 2, 3]);

        // One log cannot make a write to two groups atomic in one phase.
        let two = store
            .write(meta(5, true), vec![insert(A, &[4]), insert(B, &[4])])
            .await;
        assert!(matches!(two, Err(Error::Replication(_))), "{two:?}");
        assert_eq!(keys(&store, A), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_transaction_across_groups_and_the_local_log_commits_everywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _logs) = open(tmp.path());
        let txn = 7;
        let ops = vec![insert(A, &[1, 2]), insert(B, &[3]), insert(LOCAL, &[4])];
        store.write(meta(txn, false), ops).await.unwrap();
        let ts = store.finalize(txn).await.unwrap();
        assert_eq!(
            store.end_txn(txn, Some(ts)).await.unwrap(),
            TxnStatus::Committed(ts)
        );
        // The record went with the first replicated shard.
        assert_eq!(store.homes.lock().unwrap().get(&txn), Some(&A));
        store.commit(txn, ts).await.unwrap();
        assert_eq!(keys(&store, A), vec![1, 2]);
        assert_eq!(keys(&store, B), vec![3]);
        assert_eq!(keys(&store, LOCAL), vec![4]);
        assert!(store.prepared_txns().is_empty());

        // Another that aborts leaves nothing.
        store
            .write(meta(8, false), vec![insert(A, &[5]), insert(LOCAL, &[6])])
            .await
            .unwrap();
        store.abort(8).await.unwrap();
        assert_eq!(keys(&store, A), vec![1, 2]);
        assert_eq!(keys(&store, LOCAL), vec![4]);

        // A snapshot of A carries its rows and the record it keeps.
        let mut snap = Vec::new();
        store.save_shard(A, &mut snap).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let (other, _) = open(other_dir.path());
        other.load_shard(A, &mut snap.as_slice()).unwrap();
        assert_eq!(keys(&other, A), vec![1, 2]);
        assert_eq!(
            other.record(txn).map(|r| r.status),
            Some(TxnStatus::Committed(ts))
        );

        // The engine's checkpoint leaves replicated shards to their groups.
        store.checkpoint().await.unwrap();
        drop(_logs);
        drop(store);
        let reopened = Store::open(tmp.path(), StoreOptions::default()).unwrap();
        assert_eq!(keys(&reopened, LOCAL), vec![4]);
        assert!(keys(&reopened, A).is_empty());
        assert!(reopened.record(txn).is_none());
    }
}
