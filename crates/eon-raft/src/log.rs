//! The Raft log: every group of a process in one write-ahead log.
//!
//! openraft asks each group's log store to append entries, truncate a
//! suffix (entries a new leader overrides), purge a prefix (entries a
//! snapshot covers), and save the vote. Each of these becomes one record in
//! the process's shared log, naming its group:
//!
//! ```text
//!   Vote{group, vote}          Append{group, entries}
//!   Truncate{group, from}      Purge{group, upto}
//!   Committed{group, log_id}   Reset{group, state}   Remove{group}
//! ```
//!
//! Records go to the log's writer thread in the order they were made (each
//! is submitted while the in-memory state is locked), so replaying the log
//! rebuilds exactly the state in memory. Appends return at once and tell
//! openraft when their group commit reached the disk; votes, truncations and
//! purges wait for it. `Committed` is not synced: openraft only uses it to
//! re-apply committed entries sooner after a restart.
//!
//! **Compaction.** Entries live on in the log after their group purged
//! them. Once the log holds [`SharedLog::compact_bytes`] more than the last
//! compaction left, a new segment is started and each group's whole live
//! state is written into it as a `Reset`; once that is on disk the older
//! segments are deleted. A crash between the two leaves both, and replaying
//! both gives the same state (a `Reset` replaces what came before it).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use eon_storage::wal::{self, Pending, Wal};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use serde::{Deserialize, Serialize};

use crate::{GroupId, NodeId, Result, TypeConfig};

/// One group's log as it stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct GroupState {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Vote {
        group: GroupId,
        vote: Vote<NodeId>,
    },
    Committed {
        group: GroupId,
        log_id: Option<LogId<NodeId>>,
    },
    Append {
        group: GroupId,
        entries: Vec<Entry<TypeConfig>>,
    },
    Truncate {
        group: GroupId,
        from: u64,
    },
    Purge {
        group: GroupId,
        upto: LogId<NodeId>,
    },
    Reset {
        group: GroupId,
        state: GroupState,
    },
    Remove {
        group: GroupId,
    },
}

fn apply(groups: &mut HashMap<GroupId, GroupState>, record: Record) {
    match record {
        Record::Vote { group, vote } => groups.entry(group).or_default().vote = Some(vote),
        Record::Committed { group, log_id } => groups.entry(group).or_default().committed = log_id,
        Record::Append { group, entries } => {
            let state = groups.entry(group).or_default();
            for e in entries {
                state.entries.insert(e.log_id.index, e);
            }
        }
        Record::Truncate { group, from } => {
            groups.entry(group).or_default().entries.split_off(&from);
        }
        Record::Purge { group, upto } => {
            let state = groups.entry(group).or_default();
            state.entries = state.entries.split_off(&(upto.index + 1));
            state.purged = Some(upto);
        }
        Record::Reset { group, state } => {
            groups.insert(group, state);
        }
        Record::Remove { group } => {
            groups.remove(&group);
        }
    }
}

/// The log all groups of a process share.
pub struct SharedLog {
    wal: Wal,
    groups: Mutex<HashMap<GroupId, GroupState>>,
    /// Compact once the log holds this many bytes more than `live`.
    compact_bytes: u64,
    /// Bytes the last compaction wrote (what was live then).
    live: AtomicU64,
    compacting: AtomicBool,
}

impl SharedLog {
    /// Replay the log in `dir` (creating it) and open it for appending.
    pub fn open(dir: &Path, compact_bytes: u64) -> Result<Arc<SharedLog>> {
        std::fs::create_dir_all(dir)?;
        let mut groups = HashMap::new();
        let segments = wal::segments(dir)?;
        let mut tail = (1, 0);
        for &seq in &segments {
            let (records, valid) = wal::read_frames::<Record>(&wal::segment_path(dir, seq))?;
            for r in records {
                apply(&mut groups, r);
            }
            tail = (seq, valid);
        }
        let wal = Wal::open(dir, tail.0, tail.1)?;
        Ok(Arc::new(SharedLog {
            wal,
            groups: Mutex::new(groups),
            compact_bytes,
            live: AtomicU64::new(0),
            compacting: AtomicBool::new(false),
        }))
    }

    /// Change the state in memory and queue the record saying so, under one
    /// lock so the log's order is memory's. Returns the wait for the disk.
    fn write(
        &self,
        record: Record,
        sync: bool,
    ) -> std::result::Result<Pending, StorageError<NodeId>> {
        let mut groups = self.groups.lock().unwrap();
        let wait = self.wal.submit(&record, sync).map_err(write_error)?;
        apply(&mut groups, record);
        Ok(wait)
    }

    fn read<T>(&self, group: GroupId, f: impl FnOnce(&GroupState) -> T) -> T {
        let groups = self.groups.lock().unwrap();
        match groups.get(&group) {
            Some(state) => f(state),
            None => f(&GroupState::default()),
        }
    }

    /// Where to cut `group`'s log when its entries hold more than `limit`
    /// bytes: the last index of the older entries beyond the newest
    /// `keep` bytes. None while the log is within the limit.
    pub(crate) fn cut(&self, group: GroupId, limit: usize, keep: usize) -> Option<u64> {
        self.read(group, |s| {
            let total: usize = s.entries.values().map(entry_bytes).sum();
            if total <= limit {
                return None;
            }
            let mut kept = 0;
            for (index, e) in s.entries.iter().rev() {
                kept += entry_bytes(e);
                if kept > keep {
                    return Some(*index);
                }
            }
            None
        })
    }

    /// Forget a group (its replica moved away).
    pub async fn remove(&self, group: GroupId) -> Result<()> {
        self.write(Record::Remove { group }, true)
            .map_err(|e| crate::Error::Raft(e.to_string()))?
            .await?;
        Ok(())
    }

    /// Start compacting if the log has grown enough since the last time.
    fn maybe_compact(self: &Arc<Self>) {
        let grown = self.wal.bytes_since_rotate.load(Ordering::Relaxed);
        if grown < self.live.load(Ordering::Relaxed) + self.compact_bytes
            || self.compacting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let log = self.clone();
        tokio::spawn(async move {
            if let Err(e) = log.compact().await {
                tracing::warn!("compacting the raft log failed: {e}");
            }
            log.compacting.store(false, Ordering::Release);
        });
    }

    /// Write every group's live state into a new segment and delete the
    /// older ones.
    pub async fn compact(&self) -> Result<()> {
        let seq = self.wal.rotate().await?;
        let waits = {
            let groups = self.groups.lock().unwrap();
            let mut waits = Vec::with_capacity(groups.len());
            for (&group, state) in groups.iter() {
                let record = Record::Reset {
                    group,
                    state: state.clone(),
                };
                waits.push(self.wal.submit(&record, true)?);
            }
            waits
        };
        for w in waits {
            w.await?;
        }
        self.live.store(
            self.wal.bytes_since_rotate.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.wal.remove_before(seq)?;
        Ok(())
    }
}

fn write_error(e: eon_storage::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// One group's view of the shared log: what openraft calls its log store
/// (and, cloned, its log reader).
#[derive(Clone)]
pub struct GroupLog {
    group: GroupId,
    log: Arc<SharedLog>,
}

impl GroupLog {
    pub fn new(group: GroupId, log: Arc<SharedLog>) -> GroupLog {
        GroupLog { group, log }
    }

    /// Make `entries` readable now; the future resolves once they are on
    /// disk.
    pub(crate) fn append_entries(
        &self,
        entries: Vec<Entry<TypeConfig>>,
    ) -> std::result::Result<Pending, StorageError<NodeId>> {
        self.log.write(
            Record::Append {
                group: self.group,
                entries,
            },
            true,
        )
    }

    async fn durable(&self, record: Record) -> std::result::Result<(), StorageError<NodeId>> {
        self.log.write(record, true)?.await.map_err(write_error)
    }
}

impl RaftLogReader<TypeConfig> for GroupLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.log.read(self.group, |s| {
            s.entries.range(range).map(|(_, e)| e.clone()).collect()
        }))
    }

    /// The entries openraft sends a follower in one message: at most
    /// [`MESSAGE_BYTES`] of commands (and at least one entry), however many
    /// `max_payload_entries` allows. A follower must log and answer a
    /// message within openraft's deadline (the heartbeat interval), so a
    /// message of sixteen 10 MB entries from a bulk load would time out
    /// again and again, and the follower would never catch up.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> std::result::Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.log.read(self.group, |s| {
            let mut bytes = 0;
            let mut out = Vec::new();
            for (_, e) in s.entries.range(start..end) {
                bytes += entry_bytes(e);
                if !out.is_empty() && bytes > MESSAGE_BYTES {
                    break;
                }
                out.push(e.clone());
            }
            out
        }))
    }
}

/// The most command bytes one AppendEntries message carries (unless a
/// single entry is larger).
pub const MESSAGE_BYTES: usize = 1 << 20;

/// About how many bytes an entry takes in a message.
fn entry_bytes(e: &Entry<TypeConfig>) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(command) => command.len() + 32,
        _ => 64,
    }
}

impl RaftLogStorage<TypeConfig> for GroupLog {
    type LogReader = GroupLog;

    async fn get_log_state(
        &mut self,
    ) -> std::result::Result<LogState<TypeConfig>, StorageError<NodeId>> {
        Ok(self.log.read(self.group, |s| {
            let last = s
                .entries
                .values()
                .next_back()
                .map(|e| e.log_id)
                .or(s.purged);
            LogState {
                last_purged_log_id: s.purged,
                last_log_id: last,
            }
        }))
    }

    async fn get_log_reader(&mut self) -> GroupLog {
        self.clone()
    }

    async fn save_vote(
        &mut self,
        vote: &Vote<NodeId>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        self.durable(Record::Vote {
            group: self.group,
            vote: *vote,
        })
        .await
    }

    async fn read_vote(
        &mut self,
    ) -> std::result::Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.log.read(self.group, |s| s.vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        // Not waited for: losing it only delays re-applying after a restart.
        let _ = self.log.write(
            Record::Committed {
                group: self.group,
                log_id: committed,
            },
            false,
        )?;
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> std::result::Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.log.read(self.group, |s| s.committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let wait = self.append_entries(entries.into_iter().collect())?;
        tokio::spawn(async move {
            callback.log_io_completed(wait.await.map_err(std::io::Error::other));
        });
        self.log.maybe_compact();
        Ok(())
    }

    async fn truncate(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        self.durable(Record::Truncate {
            group: self.group,
            from: log_id.index,
        })
        .await
    }

    async fn purge(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        self.durable(Record::Purge {
            group: self.group,
            upto: log_id,
        })
        .await
    }
}
