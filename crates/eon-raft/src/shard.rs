//! Shards as Raft groups: a data engine's replica of a shard.
//!
//! A replicated shard is group [`group_of`]`(table, shard)`. On each of its
//! replicas the state machine is the data engine's [`Store`], restricted to
//! that shard ([`ShardMachine`]): applying an entry is
//! [`Store::apply_entry`], a snapshot is [`Store::save_shard`]. The store
//! proposes its records for the shard through [`ShardGroup`], which is the
//! group's Raft handle seen as an [`eon_storage::ShardLog`].
//!
//! Starting a replica ([`start_shard`]) hands the shard from the engine's
//! own log to the group: the store forgets what it held of the shard, then
//! the group rebuilds it from its last snapshot and the log after it.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use eon_storage::{Proposal, ShardId, ShardLog, Store};
use openraft::error::{ClientWriteError, RaftError};

use crate::{Error, GroupId, Machine, Node, Raft, Result, group_of};

/// The state machine of a shard's group: the shard in the engine's store.
pub struct ShardMachine {
    store: Arc<Store>,
    shard: ShardId,
}

impl Machine for ShardMachine {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        // Entries are encoded by stores of the same version; one that does
        // not decode is a bug, and skipping it is all a replica can do.
        if let Err(e) = self.store.apply_entry(self.shard, command) {
            tracing::error!(shard = ?self.shard, "applying a shard entry failed: {e}");
        }
        Vec::new()
    }

    fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
        self.store
            .save_shard(self.shard, out)
            .map_err(std::io::Error::other)
    }

    fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
        self.store
            .load_shard(self.shard, input)
            .map_err(std::io::Error::other)
    }
}

/// A shard's group, as the store proposes to it.
#[derive(Default)]
pub struct ShardGroup {
    raft: OnceLock<Raft>,
}

impl ShardGroup {
    pub fn raft(&self) -> Option<&Raft> {
        self.raft.get()
    }
}

impl ShardLog for ShardGroup {
    fn propose(&self, entry: Vec<u8>) -> Proposal {
        let raft = self.raft.get().cloned();
        Box::pin(async move {
            let Some(raft) = raft else {
                return Err(eon_storage::Error::NotLeader(None));
            };
            match raft.client_write(entry).await {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(eon_storage::Error::NotLeader(f.leader_id))
                }
                Err(e) => Err(eon_storage::Error::Replication(e.to_string())),
            }
        })
    }

    fn leads(&self) -> bool {
        self.raft
            .get()
            .is_some_and(|r| r.metrics().borrow().state == openraft::ServerState::Leader)
    }

    fn caught_up(&self) -> Proposal {
        let raft = self.raft.get().cloned();
        Box::pin(async move {
            let Some(raft) = raft else {
                return Err(eon_storage::Error::Replication(
                    "the group is not running yet".into(),
                ));
            };
            let last = raft.metrics().borrow().last_log_index;
            raft.wait(Some(std::time::Duration::from_secs(1)))
                .applied_index_at_least(last, "the log applied")
                .await
                .map(|_| ())
                .map_err(|e| eon_storage::Error::Replication(e.to_string()))
        })
    }
}

/// Start this node's replica of `shard`'s group (again, after a restart),
/// with `store` as its state machine. Returns the group's id and handle.
pub async fn start_shard(
    node: &Node,
    store: Arc<Store>,
    shard: ShardId,
) -> Result<(GroupId, Arc<ShardGroup>)> {
    let group = group_of(shard.0, shard.1);
    let handle = Arc::new(ShardGroup::default());
    store.replicate(shard, handle.clone())?;
    let (raft, _) = node.start(group, ShardMachine { store, shard }).await?;
    handle
        .raft
        .set(raft)
        .map_err(|_| Error::Raft("shard group started twice".into()))?;
    Ok((group, handle))
}

#[cfg(test)]
mod tests;
