//! State machines and their snapshots.
//!
//! Every replica of a group applies the same committed commands in the same
//! order to its own copy of the state, so the copies stay equal. The
//! application supplies that state as a [`Machine`]; this module keeps
//! openraft's bookkeeping beside it (the last applied entry and the
//! membership it implies) and turns it into snapshots.
//!
//! A **snapshot** is one file, `<group>.snap`:
//!
//! ```text
//!   [ length: u32 LE ][ SnapshotMeta, postcard ][ the machine's saved state ]
//! ```
//!
//! It is written to a temporary file, synced and renamed, so a crash leaves
//! the old snapshot or the new one. A snapshot received from a leader
//! arrives as the same bytes, so installing it is a rename and a load. At
//! start a replica loads its snapshot, if any; openraft then re-applies the
//! committed entries after it from the log.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};

use crate::{GroupId, NodeId, Result, TypeConfig};

/// An application's replicated state.
pub trait Machine: Send + 'static {
    /// Apply one committed command; the reply goes to whoever proposed it
    /// (on the leader). Must be deterministic: every replica applies the
    /// same commands and must reach the same state.
    fn apply(&mut self, command: &[u8]) -> Vec<u8>;
    /// Write the whole state.
    fn save(&self, out: &mut dyn Write) -> std::io::Result<()>;
    /// Replace the whole state by one [`save`](Machine::save) wrote.
    fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()>;
}

struct Applied<M> {
    machine: M,
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Snapshots built so far (for unique snapshot ids).
    built: u64,
    /// Snapshots received from a leader and installed.
    installed: u64,
}

/// The application's handle on its replica's state, for reads. (Writes go
/// through `Raft::client_write`.)
pub struct Replica<M> {
    state: Arc<Mutex<Applied<M>>>,
}

impl<M> Clone for Replica<M> {
    fn clone(&self) -> Self {
        Replica {
            state: self.state.clone(),
        }
    }
}

impl<M> Replica<M> {
    /// Read the state as applied so far. (For a read that must see every
    /// acknowledged write, first `Raft::ensure_linearizable` on the leader.)
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(&self.state.lock().unwrap().machine)
    }

    /// How many snapshots this replica installed from a leader since it
    /// started (each means it was too far behind to catch up by log).
    pub fn snapshots_installed(&self) -> u64 {
        self.state.lock().unwrap().installed
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> Option<u64> {
        self.state.lock().unwrap().last.map(|l| l.index)
    }
}

/// openraft's state machine store for one group.
pub struct MachineStore<M> {
    group: GroupId,
    dir: PathBuf,
    state: Arc<Mutex<Applied<M>>>,
}

pub(crate) fn snapshot_path(dir: &Path, group: GroupId) -> PathBuf {
    dir.join(format!("{group}.snap"))
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// Read a snapshot file's header, leaving `file` at the machine's state.
fn read_meta(file: &mut impl Read) -> std::io::Result<Meta> {
    let mut len = [0u8; 4];
    file.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    file.read_exact(&mut bytes)?;
    postcard::from_bytes(&bytes).map_err(std::io::Error::other)
}

impl<M: Machine> MachineStore<M> {
    /// The store of `group`, starting from its snapshot in `dir` if there is
    /// one, else from `machine` as given.
    pub fn open(dir: &Path, group: GroupId, machine: M) -> Result<(MachineStore<M>, Replica<M>)> {
        let mut applied = Applied {
            machine,
            last: None,
            membership: StoredMembership::default(),
            built: 0,
            installed: 0,
        };
        let path = snapshot_path(dir, group);
        if path.exists() {
            let mut file = std::io::BufReader::new(std::fs::File::open(&path)?);
            let meta = read_meta(&mut file)?;
            applied.machine.load(&mut file)?;
            applied.last = meta.last_log_id;
            applied.membership = meta.last_membership;
        }
        let state = Arc::new(Mutex::new(applied));
        let store = MachineStore {
            group,
            dir: dir.to_path_buf(),
            state: state.clone(),
        };
        Ok((store, Replica { state }))
    }

    fn lock(&self) -> MutexGuard<'_, Applied<M>> {
        self.state.lock().unwrap()
    }

    fn current(&self) -> std::io::Result<Option<(Meta, std::fs::File)>> {
        let path = snapshot_path(&self.dir, self.group);
        if !path.exists() {
            return Ok(None);
        }
        let mut file = std::fs::File::open(&path)?;
        let meta = read_meta(&mut file)?;
        Ok(Some((meta, file)))
    }
}

/// Builds a snapshot of the state as applied when asked.
pub struct Builder<M> {
    store: MachineStore<M>,
}

impl<M: Machine> RaftSnapshotBuilder<TypeConfig> for Builder<M> {
    async fn build_snapshot(
        &mut self,
    ) -> std::result::Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let store = &self.store;
        let path = snapshot_path(&store.dir, store.group);
        let tmp = path.with_extension("snap.tmp");
        // The state is locked while it is written, so the file is the state
        // at exactly `last`; applying waits meanwhile. (Fine for meta's
        // small state; shards bring their own checkpoints.)
        let meta = eon_storage::blocking(|| {
            let mut state = store.lock();
            state.built += 1;
            let meta = Meta {
                last_log_id: state.last,
                last_membership: state.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    state.last.map(|l| l.index).unwrap_or(0),
                    state.built
                ),
            };
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(write_error)?);
            let header = postcard::to_stdvec(&meta).map_err(write_error)?;
            out.write_all(&(header.len() as u32).to_le_bytes())
                .and_then(|_| out.write_all(&header))
                .and_then(|_| state.machine.save(&mut out))
                .and_then(|_| out.flush())
                .map_err(write_error)?;
            out.get_ref().sync_all().map_err(write_error)?;
            Ok::<_, StorageError<NodeId>>(meta)
        })?;
        std::fs::rename(&tmp, &path).map_err(write_error)?;
        eon_storage::wal::sync_dir(&store.dir).map_err(write_error)?;
        let file = tokio::fs::File::open(&path).await.map_err(read_error)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl<M: Machine> RaftStateMachine<TypeConfig> for MachineStore<M> {
    type SnapshotBuilder = Builder<M>;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<
        (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>),
        StorageError<NodeId>,
    > {
        let state = self.lock();
        Ok((state.last, state.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<Vec<u8>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        eon_storage::blocking(|| {
            let mut state = self.lock();
            let mut replies = Vec::new();
            for entry in entries {
                state.last = Some(entry.log_id);
                replies.push(match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(command) => state.machine.apply(&command),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                });
            }
            Ok(replies)
        })
    }

    async fn get_snapshot_builder(&mut self) -> Builder<M> {
        Builder {
            store: MachineStore {
                group: self.group,
                dir: self.dir.clone(),
                state: self.state.clone(),
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let path = snapshot_path(&self.dir, self.group).with_extension("snap.recv");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(write_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        use tokio::io::AsyncWriteExt;
        let mut file = snapshot;
        file.flush().await.map_err(write_error)?;
        file.sync_all().await.map_err(write_error)?;
        drop(file);
        // (Loading a large snapshot takes seconds: off the async worker.)
        eon_storage::blocking(|| {
            let path = snapshot_path(&self.dir, self.group);
            std::fs::rename(path.with_extension("snap.recv"), &path).map_err(write_error)?;
            eon_storage::wal::sync_dir(&self.dir).map_err(write_error)?;
            let mut input =
                std::io::BufReader::new(std::fs::File::open(&path).map_err(read_error)?);
            read_meta(&mut input).map_err(read_error)?;
            let mut state = self.lock();
            state.machine.load(&mut input).map_err(read_error)?;
            state.last = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.installed += 1;
            Ok(())
        })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some((meta, file)) = self.current().map_err(read_error)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
