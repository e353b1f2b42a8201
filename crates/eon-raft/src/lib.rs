//! eon's consensus: Raft groups, many to a process, over one shared log.
//!
//! Replicated state in eon (each shard of a table, and meta when it runs as
//! several replicas) is a **Raft group**: a few replicas on different
//! processes that agree, entry by entry, on one log of commands, and apply
//! that log in order to identical state machines. A command is acknowledged
//! once a majority has it on disk, so losing a minority of replicas loses
//! nothing acknowledged; a new leader is elected when the old one stops
//! answering. The protocol itself is openraft's (0.9, the stable line); this
//! crate gives it what it needs from eon:
//!
//! - **One log per process, many groups in it** ([`log`]). A data engine
//!   holds replicas of many shards. Giving each its own log file would cost
//!   one `fdatasync` per group per write; instead every group's records
//!   (entries, votes, truncations, purges) go to one write-ahead log with
//!   group commit (eon-storage's [`Wal`](eon_storage::wal::Wal)), each record
//!   naming its group, as TiKV's raft-engine does. Each group's unpurged
//!   entries are also kept in memory, so reading them never touches the
//!   disk. When the log has grown well past what is live, it is compacted:
//!   a new segment starts with each group's live state, and older segments
//!   are deleted.
//! - **State machines** ([`machine`]). An application implements
//!   [`Machine`]: apply a command (bytes the application encoded), save the
//!   whole state, load it back. Snapshots are files: openraft takes one every
//!   so many entries, purges the log behind it, and streams it in chunks to a
//!   replica too far behind for the log to catch it up. A restarted replica
//!   loads its last snapshot and replays the log after it.
//! - **The network** ([`network`]). The `Raft` gRPC service
//!   (`proto/eon/v1/raft.proto`) carries openraft's messages, postcard-encoded,
//!   each tagged with its group. A process serves it once for all its groups;
//!   connections to each peer are shared by all groups.
//! - **Quiet groups** ([`quiet`]). A data engine holds hundreds of groups;
//!   rather than beat in each, it beats once per peer process, and a group
//!   elects only when no live peer leads it.
//! - **Shards** ([`shard`]). A replicated shard's group has the data
//!   engine's store, restricted to that shard, as its state machine.
//!
//! [`Node`] ties these together for one process: it opens the shared log,
//! starts and stops groups, and provides the service to mount beside the
//! component's own.

pub mod log;
pub mod machine;
pub mod network;
pub mod quiet;
pub mod shard;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

pub use machine::{Machine, Replica};
pub use openraft;
use openraft::BasicNode;

openraft::declare_raft_types!(
    /// eon's Raft types: commands and replies are bytes the application
    /// encodes; snapshots are files.
    pub TypeConfig:
        D = Vec<u8>,
        R = Vec<u8>,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = tokio::fs::File,
);

/// A process taking part in Raft groups: a data engine's or meta's node id.
pub type NodeId = u64;
/// One Raft group (see [`group_of`]).
pub type GroupId = u64;
/// A running replica of one group.
pub type Raft = openraft::Raft<TypeConfig>;

/// A group's log holding more bytes than this (and than its last
/// snapshot) is snapshotted and purged ([`Node::bound_logs`]).
pub const LOG_BYTES: usize = 64 << 20;

/// The newest bytes of a group's log kept when it is purged.
pub const KEEP_BYTES: usize = 16 << 20;

/// The group of meta's own state.
pub const META_GROUP: GroupId = 0;

/// The group replicating shard `shard` of table `table`. Shard numbers stay
/// below 2^20 (a table has at most a few thousand shards), table ids below
/// 2^44.
pub fn group_of(table: u64, shard: u32) -> GroupId {
    (table << 20) | u64::from(shard)
}

/// The table and shard of a shard's group (the inverse of [`group_of`]).
pub fn shard_of(group: GroupId) -> (u64, u32) {
    (group >> 20, (group & 0xF_FFFF) as u32)
}

/// Starts this process's replica of a group a peer is talking to, when the
/// application finds it should have one (a new shard's first leader asks
/// for votes before the other replicas heard of the shard). Resolves to
/// whether the group now runs here.
pub type Starter = Arc<
    dyn Fn(GroupId) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("raft log: {0}")]
    Storage(#[from] eon_storage::Error),
    #[error("raft: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Timing and snapshot settings shared by every group of a process.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a leader reminds its followers it is alive (in quiet
    /// groups: how often the process beats to each peer process).
    pub heartbeat: Duration,
    /// Quiet groups: how long a follower has to log and answer a message
    /// of entries. openraft takes its heartbeat interval for this deadline;
    /// beating groups share it with their heartbeat, quiet ones (which do
    /// not beat on their own) can give a busy disk more room. Below the
    /// shortest election timeout.
    pub append_deadline: Duration,
    /// A follower that heard nothing from a leader for a random time in
    /// this range stands for election. Failover takes about this long.
    pub election_timeout: (Duration, Duration),
    /// Take a snapshot (and purge the log behind it) every this many
    /// entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a replica slightly
    /// behind catches up from the log, not from a whole snapshot.
    pub keep_behind_snapshot: u64,
    /// Compact the shared log once it has this many bytes more than what is
    /// live.
    pub compact_bytes: u64,
    /// The `authorization` header every message carries (eon's cluster
    /// secret, which the receiving process checks).
    pub authorization: Option<String>,
    /// Groups neither beat nor elect on their own; the process beats once
    /// per peer process and watches its peers ([`quiet`]), once
    /// [`Node::watch_peers`] runs.
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat: Duration::from_millis(250),
            append_deadline: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            snapshot_every: 10_000,
            keep_behind_snapshot: 1000,
            compact_bytes: 64 << 20,
            authorization: None,
            quiet: false,
        }
    }
}

impl Options {
    fn raft_config(&self) -> Result<openraft::Config> {
        let ms = |d: Duration| d.as_millis() as u64;
        openraft::Config {
            cluster_name: "eon".into(),
            heartbeat_interval: ms(if self.quiet {
                self.append_deadline
            } else {
                self.heartbeat
            }),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            // Entries may be large (a batch of a bulk load); a message must
            // reach the follower, be logged and be answered within one
            // heartbeat interval, which is openraft's timeout for it. The log
            // also keeps each message to about a megabyte
            // (`log::MESSAGE_BYTES`).
            max_payload_entries: 16,
            install_snapshot_timeout: 5000,
            enable_heartbeat: !self.quiet,
            enable_elect: !self.quiet,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft(e.to_string()))
    }
}

/// This process's part in Raft: its id, the shared log, its groups.
pub struct Node {
    id: NodeId,
    dir: PathBuf,
    config: Arc<openraft::Config>,
    log: Arc<log::SharedLog>,
    groups: Arc<RwLock<HashMap<GroupId, Raft>>>,
    network: network::Network,
    starter: Arc<OnceLock<Starter>>,
    quiet: bool,
    /// How often a quiet process beats to its peers.
    beat: Duration,
    peers: Arc<quiet::Peers>,
    delivered: Arc<std::sync::atomic::AtomicU64>,
}

impl Node {
    /// Open (or create) the Raft state under `dir`: the shared log in
    /// `dir/log`, snapshots in `dir/snapshots`.
    pub fn open(id: NodeId, dir: &Path, options: Options) -> Result<Arc<Node>> {
        let config = Arc::new(options.raft_config()?);
        let network = network::Network::new(options.authorization.as_deref())?;
        std::fs::create_dir_all(dir.join("snapshots"))?;
        let log = log::SharedLog::open(&dir.join("log"), options.compact_bytes)?;
        Ok(Arc::new(Node {
            id,
            dir: dir.to_path_buf(),
            config,
            log,
            groups: Default::default(),
            network,
            starter: Default::default(),
            quiet: options.quiet,
            beat: options.heartbeat,
            peers: Default::default(),
            delivered: Default::default(),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// How many of its groups' messages this process has received from
    /// peers (entries, votes, beats of groups that are not quiet; the
    /// processes' own beats are not counted).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reach node `id` at `addr` (`http://host:port`) from now on, whatever
    /// address its groups' memberships recorded.
    pub fn set_address(&self, id: NodeId, addr: String) {
        self.network.set_address(id, addr);
    }

    /// Ask `starter` about messages for groups not running here, before
    /// answering that they are not here (set once).
    pub fn on_unknown_group(&self, starter: Starter) {
        let _ = self.starter.set(starter);
    }

    /// Start this process's replica of `group` (again, after a restart: its
    /// log and last snapshot are picked up). The state machine starts from
    /// `machine` unless a snapshot replaces it.
    pub async fn start<M: Machine>(
        &self,
        group: GroupId,
        machine: M,
    ) -> Result<(Raft, Replica<M>)> {
        let (store, replica) =
            machine::MachineStore::open(&self.dir.join("snapshots"), group, machine)?;
        let raft = Raft::new(
            self.id,
            self.config.clone(),
            self.network.for_group(group),
            log::GroupLog::new(group, self.log.clone()),
            store,
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
        self.groups.write().unwrap().insert(group, raft.clone());
        Ok((raft, replica))
    }

    /// The running replica of `group`, if this process has one.
    pub fn raft(&self, group: GroupId) -> Option<Raft> {
        self.groups.read().unwrap().get(&group).cloned()
    }

    /// Start `group` for the first time with these members (id → gRPC
    /// address such as `http://127.0.0.1:5000`). Call on one member only;
    /// the others learn the membership from its leader.
    pub async fn initialize(
        &self,
        group: GroupId,
        members: BTreeMap<NodeId, String>,
    ) -> Result<()> {
        let raft = self
            .raft(group)
            .ok_or_else(|| Error::Raft(format!("group {group} is not started here")))?;
        let members: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        raft.initialize(members)
            .await
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// Stop this process's replica of `group` and delete its log and
    /// snapshot (the group's data went away, or its replica moved).
    pub async fn remove(&self, group: GroupId) -> Result<()> {
        let raft = self.groups.write().unwrap().remove(&group);
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        self.log.remove(group).await?;
        let snapshot = machine::snapshot_path(&self.dir.join("snapshots"), group);
        match std::fs::remove_file(&snapshot) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Keep every group's log within bounds in bytes, for as long as the
    /// node lives (call once, on a runtime).
    ///
    /// openraft snapshots a group every `snapshot_every` entries, which
    /// says nothing of their size: a bulk load of 10 MB entries would keep a
    /// gigabyte in the log — in memory, and rewritten whole at each of the
    /// shared log's compactions, under its lock. So once a second, a group
    /// whose entries hold more than [`LOG_BYTES`] (or more than its last
    /// snapshot, so that a big shard is not snapshotted over and over) gets
    /// a snapshot, and its log is purged up to the newest [`KEEP_BYTES`]
    /// (a follower slightly behind still catches up from the log).
    pub fn bound_logs(self: &Arc<Self>) {
        let node: Weak<Node> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(node) = node.upgrade() else { return };
                node.bound_round().await;
            }
        });
    }

    /// The groups running now, each with its handle.
    pub(crate) fn running(&self) -> Vec<(GroupId, Raft)> {
        self.groups
            .read()
            .unwrap()
            .iter()
            .map(|(g, r)| (*g, r.clone()))
            .collect()
    }

    async fn bound_round(&self) {
        for (group, raft) in self.running() {
            let snapshot_bytes =
                std::fs::metadata(machine::snapshot_path(&self.dir.join("snapshots"), group))
                    .map_or(0, |m| m.len() as usize);
            let Some(cut) = self
                .log
                .cut(group, LOG_BYTES.max(snapshot_bytes), KEEP_BYTES)
            else {
                continue;
            };
            let snapshot = raft.metrics().borrow().snapshot.map(|l| l.index);
            if snapshot.is_none_or(|s| s < cut) {
                let _ = raft.trigger().snapshot().await;
            }
            if snapshot.is_some() {
                let _ = raft.trigger().purge_log(cut).await;
            }
        }
    }

    /// Stop every group (the log stays on disk).
    pub async fn shutdown(&self) {
        let groups: Vec<Raft> = self
            .groups
            .write()
            .unwrap()
            .drain()
            .map(|(_, r)| r)
            .collect();
        for raft in groups {
            let _ = raft.shutdown().await;
        }
    }

    /// The gRPC service delivering peers' messages to this process's groups.
    pub fn service(&self) -> eon_proto::v1::raft_server::RaftServer<network::Service> {
        network::Service::new(
            self.groups.clone(),
            self.starter.clone(),
            self.peers.clone(),
            self.delivered.clone(),
        )
        .into_server()
    }
}

#[cfg(test)]
mod tests;
