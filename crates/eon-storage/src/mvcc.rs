//! Multi-version rows: what a reader sees and what a writer may do.
//!
//! Every key of a shard holds a short history: committed versions, each
//! stamped with the commit timestamp of the write that made it (a `None`
//! value is a deletion), and at most one *intent* — a write that is staged
//! but not yet committed.
//!
//! ```text
//!   key 42:  [ts 100: {a: 1}] [ts 250: {a: 2}] [ts 300: deleted]   intent(txn 9, min ts 410): {a: 5}
//!             reader at 120 sees {a: 1};  at 260 sees {a: 2};  at 350 sees nothing;
//!             at 400 sees nothing (the intent will commit at >= 410);  at 500 must wait for txn 9
//! ```
//!
//! A reader at snapshot `ts` sees the newest committed version with a
//! timestamp `<= ts`. An intent whose minimum commit timestamp is above `ts`
//! cannot matter to it. One that could still commit at or below `ts` is
//! *pushed*: its minimum commit timestamp is raised above `ts`, so the
//! writer will commit after this reader and the reader can ignore it —
//! readers never wait for open transactions. Only once the writer's
//! coordinator has *frozen* its intents (it is deciding the commit
//! timestamp, see two-phase commit in `store.rs`) does a reader wait for the
//! outcome, for the short time the decision takes.
//!
//! A writer that read at `read_ts` may replace or delete a row only if no
//! version newer than `read_ts` was committed meanwhile and no other
//! transaction holds an intent on it (first committer wins: the loser gets a
//! retryable conflict). Inserting requires the newest state to be "absent".
//!
//! Everything here is a plain function of its inputs — no locks, no I/O — so
//! the rules can be tested directly.

use std::sync::atomic::{AtomicU64, Ordering};

use eon_common::value::Row;
use serde::{Deserialize, Serialize};

pub type Ts = u64;
pub type TxnId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub ts: Ts,
    /// `None`: the row was deleted at `ts`.
    pub value: Option<Row>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub txn: TxnId,
    /// The transaction will commit at this timestamp or later. Readers raise
    /// it (under a shared lock, hence atomic) while the intent is not frozen.
    pub min_commit_ts: PushTs,
    /// The coordinator is choosing the commit timestamp: no more pushes.
    pub frozen: bool,
    /// The data engine that keeps the transaction's record (0: none, a
    /// one-phase write).
    pub anchor: u64,
    pub value: Option<Row>,
    /// The statement of the transaction that wrote `value` (its sequence
    /// number: statements count up from 1 within a transaction).
    pub seq: u32,
    /// What earlier statements of the same transaction had written here,
    /// oldest first: (statement, value). ROLLBACK TO SAVEPOINT pops it.
    pub undo: Vec<(u32, Option<Row>)>,
}

/// A timestamp readers may raise concurrently.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(from = "u64", into = "u64")]
pub struct PushTs(AtomicU64);

impl PushTs {
    pub fn new(ts: Ts) -> PushTs {
        PushTs(AtomicU64::new(ts))
    }
    pub fn get(&self) -> Ts {
        self.0.load(Ordering::SeqCst)
    }
    /// Raise to at least `ts`.
    pub fn raise(&self, ts: Ts) {
        self.0.fetch_max(ts, Ordering::SeqCst);
    }
}

impl Clone for PushTs {
    fn clone(&self) -> Self {
        PushTs::new(self.get())
    }
}

impl PartialEq for PushTs {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl From<u64> for PushTs {
    fn from(ts: u64) -> Self {
        PushTs::new(ts)
    }
}

impl From<PushTs> for u64 {
    fn from(p: PushTs) -> u64 {
        p.get()
    }
}

/// The history of one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// Ascending by timestamp.
    pub committed: Vec<Version>,
    pub intent: Option<Intent>,
}

/// What a reader finds at a key.
#[derive(Debug, PartialEq)]
pub enum Visible<'a> {
    Row(&'a Row),
    Absent,
    /// An unresolved intent of this transaction may commit at or below the
    /// snapshot: wait for it.
    Wait(TxnId),
}

/// The kinds of write, matching `eon.v1.WriteKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteKind {
    Insert,
    InsertIgnore,
    Put,
    Delete,
}

/// Why a write cannot be staged.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Insert of a key that exists.
    Duplicate,
    /// Another transaction holds an intent, or a newer version was committed
    /// after the writer's snapshot. Retrying at a new snapshot may succeed.
    Conflict(String),
}

impl Versions {
    pub fn latest(&self) -> Option<&Version> {
        self.committed.last()
    }

    pub fn latest_ts(&self) -> Ts {
        self.latest().map(|v| v.ts).unwrap_or(0)
    }

    /// What a reader at `ts` (belonging to transaction `own`, if any) sees.
    /// Pushes another transaction's unfrozen intent above `ts`.
    pub fn read(&self, ts: Ts, own: Option<TxnId>) -> Visible<'_> {
        if let Some(intent) = &self.intent {
            if Some(intent.txn) == own {
                return match &intent.value {
                    Some(row) => Visible::Row(row),
                    None => Visible::Absent,
                };
            }
            if intent.min_commit_ts.get() <= ts {
                if intent.frozen {
                    return Visible::Wait(intent.txn);
                }
                intent.min_commit_ts.raise(ts + 1);
            }
        }
        match self.committed.iter().rev().find(|v| v.ts <= ts) {
            Some(Version {
                value: Some(row), ..
            }) => Visible::Row(row),
            _ => Visible::Absent,
        }
    }

    /// Whether the newest state (own intent included) has a row.
    fn exists_for(&self, txn: TxnId) -> bool {
        match &self.intent {
            Some(i) if i.txn == txn => i.value.is_some(),
            _ => matches!(self.latest(), Some(Version { value: Some(_), .. })),
        }
    }

    /// Decide whether transaction `txn`, which read at `read_ts`, may write
    /// here. `Ok(false)` means "skip this row" (INSERT_IGNORE of an existing
    /// key).
    pub fn check_write(&self, txn: TxnId, read_ts: Ts, kind: WriteKind) -> Result<bool, Refusal> {
        if let Some(intent) = &self.intent {
            if intent.txn != txn {
                return Err(Refusal::Conflict(format!(
                    "{}{}",
                    eon_common::error::WRITTEN_BY_TRANSACTION,
                    intent.txn
                )));
            }
            if intent.frozen {
                return Err(Refusal::Conflict("transaction is committing".into()));
            }
        }
        match kind {
            WriteKind::Insert | WriteKind::InsertIgnore => {
                if self.exists_for(txn) {
                    return if kind == WriteKind::Insert {
                        Err(Refusal::Duplicate)
                    } else {
                        Ok(false)
                    };
                }
                Ok(true)
            }
            WriteKind::Put | WriteKind::Delete => {
                let own = matches!(&self.intent, Some(i) if i.txn == txn);
                if !own && self.latest_ts() > read_ts {
                    return Err(Refusal::Conflict(
                        "row was changed by a transaction that committed after this statement began"
                            .into(),
                    ));
                }
                Ok(true)
            }
        }
    }

    /// Stage (or replace) this transaction's intent, written by its
    /// statement `seq`. What an earlier statement wrote is kept for
    /// [`Versions::rollback_to`]; an older statement's write (a log record
    /// replayed over a checkpoint that already holds newer ones) is ignored.
    pub fn set_intent(
        &mut self,
        txn: TxnId,
        min_commit_ts: Ts,
        anchor: u64,
        seq: u32,
        value: Option<Row>,
    ) {
        match &mut self.intent {
            Some(i) if i.txn == txn => {
                i.min_commit_ts.raise(min_commit_ts);
                if seq > i.seq {
                    let prev = std::mem::replace(&mut i.value, value);
                    i.undo.push((i.seq, prev));
                    i.seq = seq;
                } else if seq == i.seq {
                    i.value = value;
                }
            }
            _ => {
                self.intent = Some(Intent {
                    txn,
                    min_commit_ts: PushTs::new(min_commit_ts),
                    frozen: false,
                    anchor,
                    value,
                    seq,
                    undo: vec![],
                })
            }
        }
    }

    /// Undo what statements after `seq` of `txn` wrote here (ROLLBACK TO
    /// SAVEPOINT): the intent goes back to what statement `seq` or an
    /// earlier one left, or away when none of them wrote this key. Returns
    /// true when the intent was removed.
    pub fn rollback_to(&mut self, txn: TxnId, seq: u32) -> bool {
        let Some(i) = self.intent.as_mut().filter(|i| i.txn == txn && !i.frozen) else {
            return false;
        };
        while i.seq > seq {
            match i.undo.pop() {
                Some((s, v)) => {
                    i.seq = s;
                    i.value = v;
                }
                None => {
                    self.intent = None;
                    return true;
                }
            }
        }
        false
    }

    /// Turn `txn`'s intent into a committed version. Idempotent: a missing
    /// intent (already committed, e.g. during log replay) is ignored.
    pub fn commit(&mut self, txn: TxnId, ts: Ts) -> bool {
        match self.intent.take() {
            Some(i) if i.txn == txn => {
                self.install(ts, i.value);
                true
            }
            other => {
                self.intent = other;
                false
            }
        }
    }

    /// Add a committed version (idempotent for replay).
    pub fn install(&mut self, ts: Ts, value: Option<Row>) {
        match self.committed.binary_search_by_key(&ts, |v| v.ts) {
            Ok(_) => {}
            Err(pos) => self.committed.insert(pos, Version { ts, value }),
        }
    }

    pub fn abort(&mut self, txn: TxnId) -> bool {
        if matches!(&self.intent, Some(i) if i.txn == txn) {
            self.intent = None;
            true
        } else {
            false
        }
    }

    /// Drop versions no snapshot at or after `horizon` can see. Returns true
    /// when nothing is left (the key can be removed).
    /// A deletion that is the only version left goes too, unless
    /// `keep_deletion` (older versions of the key may be in a segment).
    pub fn gc(&mut self, horizon: Ts, keep_deletion: bool) -> bool {
        // The newest version at or below the horizon is still visible to a
        // reader at the horizon; everything older is not.
        if let Some(keep_from) = self.committed.iter().rposition(|v| v.ts <= horizon) {
            self.committed.drain(..keep_from);
            if self.committed.len() == 1 && self.committed[0].value.is_none() && !keep_deletion {
                self.committed.clear();
            }
        }
        self.committed.is_empty() && self.intent.is_none()
    }
}

/// A rough size in bytes of a stored row, for the bytes-stored statistic.
pub fn row_size(row: &Row) -> usize {
    use eon_common::Value;
    row.iter()
        .map(|v| match v {
            Value::Text(s) => 24 + s.len(),
            Value::Bytes(b) => 24 + b.len(),
            _ => 16,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use eon_common::Value;

    fn row(i: i64) -> Row {
        vec![Value::Int(i)]
    }

    #[test]
    fn readers_see_the_newest_version_at_their_snapshot() {
        let mut v = Versions::default();
        v.install(100, Some(row(1)));
        v.install(250, Some(row(2)));
        v.install(300, None);
        assert_eq!(v.read(99, None), Visible::Absent);
        assert_eq!(v.read(120, None), Visible::Row(&row(1)));
        assert_eq!(v.read(250, None), Visible::Row(&row(2)));
        assert_eq!(v.read(350, None), Visible::Absent);
    }

    #[test]
    fn readers_push_open_intents_and_wait_only_for_frozen_ones() {
        let mut v = Versions::default();
        v.install(100, Some(row(1)));
        v.set_intent(9, 410, 0, 1, Some(row(5)));
        assert_eq!(v.read(400, None), Visible::Row(&row(1)));
        // A later reader pushes the intent above itself instead of waiting.
        assert_eq!(v.read(500, None), Visible::Row(&row(1)));
        assert_eq!(v.intent.as_ref().unwrap().min_commit_ts.get(), 501);
        assert_eq!(
            v.read(500, Some(9)),
            Visible::Row(&row(5)),
            "own writes are visible"
        );
        // Frozen: readers that could see it wait for the outcome.
        v.intent.as_mut().unwrap().frozen = true;
        assert_eq!(v.read(600, None), Visible::Wait(9));
        assert_eq!(v.read(500, None), Visible::Row(&row(1)));
        assert!(v.commit(9, 601));
        assert_eq!(v.read(700, None), Visible::Row(&row(5)));
        assert_eq!(v.read(600, None), Visible::Row(&row(1)));
        assert!(!v.commit(9, 601), "second commit is a no-op");
    }

    #[test]
    fn first_committer_wins() {
        let mut v = Versions::default();
        v.install(100, Some(row(1)));
        assert_eq!(v.check_write(1, 150, WriteKind::Put), Ok(true));
        v.install(200, Some(row(2)));
        assert!(matches!(
            v.check_write(1, 150, WriteKind::Put),
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(
            v.check_write(1, 150, WriteKind::Delete),
            Err(Refusal::Conflict(_))
        ));
        assert_eq!(v.check_write(1, 200, WriteKind::Delete), Ok(true));
        v.set_intent(7, 300, 0, 1, None);
        assert!(matches!(
            v.check_write(1, 500, WriteKind::Put),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn inserts_need_an_absent_key() {
        let mut v = Versions::default();
        assert_eq!(v.check_write(1, 10, WriteKind::Insert), Ok(true));
        v.install(20, Some(row(1)));
        assert_eq!(
            v.check_write(1, 10, WriteKind::Insert),
            Err(Refusal::Duplicate)
        );
        assert_eq!(v.check_write(1, 10, WriteKind::InsertIgnore), Ok(false));
        // A statement that deletes a key may insert it again (UPDATE of a key).
        v.set_intent(1, 30, 0, 1, None);
        assert_eq!(v.check_write(1, 10, WriteKind::Insert), Ok(true));
        v.set_intent(1, 30, 0, 1, Some(row(2)));
        assert_eq!(
            v.check_write(1, 10, WriteKind::Insert),
            Err(Refusal::Duplicate)
        );
    }

    #[test]
    fn rollback_to_restores_what_earlier_statements_wrote() {
        let mut v = Versions::default();
        v.install(100, Some(row(1)));
        v.set_intent(3, 200, 0, 2, Some(row(2)));
        v.set_intent(3, 200, 0, 2, Some(row(3))); // the same statement again
        v.set_intent(3, 200, 0, 4, None);
        v.set_intent(3, 200, 0, 7, Some(row(7)));
        assert!(!v.rollback_to(3, 5));
        assert_eq!(
            v.read(300, Some(3)),
            Visible::Absent,
            "statement 4 deleted it"
        );
        assert!(
            !v.rollback_to(9, 1),
            "another transaction's rollback changes nothing"
        );
        assert!(!v.rollback_to(3, 3));
        assert_eq!(v.read(300, Some(3)), Visible::Row(&row(3)));
        // Replaying an older statement's log record changes nothing.
        v.set_intent(3, 200, 0, 1, Some(row(9)));
        assert_eq!(v.read(300, Some(3)), Visible::Row(&row(3)));
        assert!(v.rollback_to(3, 1), "nothing before statement 2 wrote here");
        assert_eq!(v.intent, None);
        assert_eq!(v.read(300, None), Visible::Row(&row(1)));
    }

    #[test]
    fn gc_keeps_what_the_horizon_can_see() {
        let mut v = Versions::default();
        v.install(100, Some(row(1)));
        v.install(200, Some(row(2)));
        v.install(300, Some(row(3)));
        assert!(!v.gc(250, false));
        assert_eq!(
            v.committed.iter().map(|x| x.ts).collect::<Vec<_>>(),
            vec![200, 300]
        );
        v.install(400, None);
        assert!(
            v.gc(500, false),
            "a deletion older than the horizon leaves nothing"
        );
    }
}

/// The status of a transaction, as its record on its anchor engine says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    /// Still running (its coordinator heartbeats the record).
    Pending,
    Committed(Ts),
    Aborted,
}
