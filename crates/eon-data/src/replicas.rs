//! The shards this data engine keeps copies of: their Raft groups.
//!
//! Meta places each shard's copies (`Table.replicas`); a shard with more
//! than one copy is a Raft group (`eon_raft::shard`) whose state machine is
//! this engine's [`Store`], restricted to the shard. This module runs this
//! engine's replicas:
//!
//! - **Starting.** A replica starts when a request first names its shard,
//!   or when the catalog changes (meta's heartbeat answer carries its
//!   version) and lists a shard with a copy here. The shard's first copy
//!   (`replicas[i].engines[0]`) initializes the group, with every copy as a
//!   voter; the others join when they start.
//! - **Addresses.** Data engines listen on a new port after a restart, so
//!   peers are reached at the addresses meta lists, refreshed every second,
//!   whatever the group's membership recorded.
//! - **Leading.** Only a group's leader serves the shard, and only once it
//!   has *taken over*: applied everything committed before its term, and
//!   raised the store's read floor to a fresh timestamp — readers of the
//!   previous leader may have read up to any timestamp handed out so far,
//!   and no commit here may land at or below what they read. Each read
//!   first confirms the leadership with a heartbeat round
//!   (`ensure_linearizable`), so a deposed leader cannot answer with stale
//!   rows. Leaderships go to meta with every heartbeat; meta routes query
//!   engines to the leaders.
//! - **Elsewhere**, a request is refused with a serialization failure
//!   (40001): the query engine runs the statement again, with the new
//!   leaders.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eon_common::{Error, node};
use eon_proto::v1 as pb;
use eon_proto::v1::meta_client::MetaClient;
use eon_raft::openraft::ServerState;
use eon_raft::shard::{ShardGroup, start_shard};
use eon_raft::{Node, Raft};
use eon_storage::{ShardId, Store};

/// Raft timing for shard groups: a leader lost is replaced within about a
/// second, so writes resume well within the 5 s the cluster promises.
fn raft_options() -> eon_raft::Options {
    eon_raft::Options {
        authorization: node::cluster_secret().map(|s| format!("Bearer {s}")),
        heartbeat: Duration::from_millis(100),
        election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
        ..Default::default()
    }
}

struct Replica {
    group: Arc<ShardGroup>,
    /// The term in which this replica took over as leader (0: never).
    ready_term: AtomicU64,
}

impl Replica {
    fn raft(&self) -> &Raft {
        self.group.raft().expect("a started group has its raft")
    }
}

pub struct Replicas {
    id: u64,
    node: Arc<Node>,
    store: Arc<Store>,
    meta: MetaClient<node::Channel>,
    replicas: Mutex<HashMap<ShardId, Arc<Replica>>>,
    /// One start at a time.
    starting: tokio::sync::Mutex<()>,
    /// The catalog version meta last reported, and the one acted on.
    catalog_wanted: AtomicU64,
    catalog_seen: AtomicU64,
    /// Wakes the heartbeat: a leadership was taken over.
    news: tokio::sync::Notify,
    /// Stats: replicas here, groups led, entries applied (all groups).
    counters: std::sync::OnceLock<Counters>,
}

/// The engine's replication counters (in its Stats).
pub struct Counters {
    pub replicas: Arc<AtomicU64>,
    pub leading: Arc<AtomicU64>,
    pub applied: Arc<AtomicU64>,
}

/// The engines keeping copies of `table`'s shard (one: not replicated).
fn copies(table: &pb::Table, shard: u32) -> &[u64] {
    table
        .replicas
        .get(shard as usize)
        .map(|r| r.engines.as_slice())
        .unwrap_or(&[])
}

fn not_leader(table: &str, shard: u32) -> Error {
    Error::write_conflict(format!(
        "could not serialize access: shard {shard} of \"{table}\" is changing leaders; retry"
    ))
}

impl Replicas {
    /// Open this engine's Raft state in `dir` (the groups start as they are
    /// needed).
    pub fn open(
        id: u64,
        dir: &Path,
        store: Arc<Store>,
        meta: MetaClient<node::Channel>,
    ) -> Result<Arc<Replicas>, Error> {
        let node = Node::open(id, dir, raft_options())
            .map_err(|e| Error::internal(format!("raft: {e}")))?;
        Ok(Arc::new(Replicas {
            id,
            node,
            store,
            meta,
            replicas: Mutex::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
            catalog_wanted: AtomicU64::new(1),
            catalog_seen: AtomicU64::new(0),
            news: tokio::sync::Notify::new(),
            counters: std::sync::OnceLock::new(),
        }))
    }

    /// Keep these counters up to date.
    pub fn count_into(&self, counters: Counters) {
        let _ = self.counters.set(counters);
    }

    fn update_counters(&self) {
        let Some(c) = self.counters.get() else { return };
        let replicas: Vec<Arc<Replica>> = self.replicas.lock().unwrap().values().cloned().collect();
        let (mut leading, mut applied) = (0, 0);
        for r in &replicas {
            let m = r.raft().metrics().borrow().clone();
            if m.state == ServerState::Leader && m.current_leader == Some(self.id) {
                leading += 1;
            }
            applied += m.last_applied.map_or(0, |l| l.index);
        }
        c.replicas.store(replicas.len() as u64, Ordering::Relaxed);
        c.leading.store(leading, Ordering::Relaxed);
        c.applied.store(applied, Ordering::Relaxed);
    }

    /// The Raft service, to serve beside the DataEngine service.
    pub fn service(&self) -> pb::raft_server::RaftServer<eon_raft::network::Service> {
        self.node.service()
    }

    fn get(&self, shard: ShardId) -> Option<Arc<Replica>> {
        self.replicas.lock().unwrap().get(&shard).cloned()
    }

    /// Make sure this engine's replica of `table`'s `shard` runs, when the
    /// shard is replicated and has a copy here. Returns whether it is
    /// replicated.
    pub async fn ensure(&self, table: &pb::Table, shard: u32) -> Result<bool, Error> {
        let members = copies(table, shard);
        if members.len() <= 1 || !members.contains(&self.id) {
            return Ok(members.len() > 1);
        }
        let id = (table.id, shard);
        if self.get(id).is_some() {
            return Ok(true);
        }
        let _one = self.starting.lock().await;
        if self.get(id).is_some() {
            return Ok(true);
        }
        let raft_err = |e: eon_raft::Error| Error::internal(format!("raft: {e}"));
        let (group, handle) = start_shard(&self.node, self.store.clone(), id)
            .await
            .map_err(raft_err)?;
        let raft = handle.raft().expect("started").clone();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::internal(format!("raft: {e}")))?;
        if members[0] == self.id && !initialized {
            let addresses = self.refresh_addresses().await?;
            let voters: BTreeMap<u64, String> = members
                .iter()
                .map(|m| (*m, addresses.get(m).cloned().unwrap_or_default()))
                .collect();
            self.node
                .initialize(group, voters)
                .await
                .map_err(raft_err)?;
        }
        tracing::info!(table = table.id, shard, "shard replica started");
        self.replicas.lock().unwrap().insert(
            id,
            Arc::new(Replica {
                group: handle,
                ready_term: AtomicU64::new(0),
            }),
        );
        Ok(true)
    }

    /// Before serving `table`'s `shard`: when it is replicated, its replica
    /// here must lead and have taken over. Returns the group to confirm
    /// leadership with before a read (None: not replicated).
    pub async fn serving(&self, table: &pb::Table, shard: u32) -> Result<Option<Raft>, Error> {
        if !self.ensure(table, shard).await? {
            return Ok(None);
        }
        let replica = self
            .get((table.id, shard))
            .ok_or_else(|| not_leader(&table.name, shard))?;
        let raft = replica.raft();
        let m = raft.metrics().borrow().clone();
        let ready = m.state == ServerState::Leader
            && m.current_leader == Some(self.id)
            && replica.ready_term.load(Ordering::Acquire) == m.current_term;
        if !ready {
            return Err(not_leader(&table.name, shard));
        }
        Ok(Some(raft.clone()))
    }

    /// Confirm this replica still leads (a heartbeat round to a majority),
    /// so a read cannot miss a write a newer leader acknowledged.
    pub async fn confirm(raft: &Raft, table: &str, shard: u32) -> Result<(), Error> {
        raft.ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|_| not_leader(table, shard))
    }

    /// Stop and delete this engine's replicas of `table`'s shards.
    pub async fn forget(&self, table: u64) {
        let gone: Vec<ShardId> = {
            let mut replicas = self.replicas.lock().unwrap();
            let ids: Vec<ShardId> = replicas.keys().filter(|s| s.0 == table).copied().collect();
            for id in &ids {
                replicas.remove(id);
            }
            ids
        };
        for shard in gone {
            if let Err(e) = self.node.remove(eon_raft::group_of(shard.0, shard.1)).await {
                tracing::warn!(?shard, "removing a shard's group: {e}");
            }
            let _ = self.store.unreplicate(shard);
        }
    }

    /// Every data engine's Raft address, as meta lists them; the network
    /// uses them from now on.
    async fn refresh_addresses(&self) -> Result<HashMap<u64, String>, Error> {
        let nodes = self
            .meta
            .clone()
            .list_nodes(pb::ListNodesRequest {})
            .await
            .map_err(Error::from_status)?
            .into_inner()
            .nodes;
        let mut out = HashMap::new();
        for n in nodes
            .into_iter()
            .filter(|n| n.kind == pb::NodeKind::DataEngine as i32)
        {
            let addr = format!("http://{}", n.grpc_address);
            self.node.set_address(n.id, addr.clone());
            out.insert(n.id, addr);
        }
        Ok(out)
    }

    /// Start the replicas the catalog lists for this engine.
    async fn reconcile(&self) -> Result<(), Error> {
        let wanted = self.catalog_wanted.load(Ordering::Acquire);
        if wanted <= self.catalog_seen.load(Ordering::Acquire) {
            return Ok(());
        }
        let catalog = self
            .meta
            .clone()
            .get_catalog(pb::GetCatalogRequest {})
            .await
            .map_err(Error::from_status)?
            .into_inner();
        let mut tables: Vec<pb::Table> = Vec::new();
        for t in catalog.tables {
            for ix in &t.indexes {
                tables.extend(ix.storage.clone());
            }
            tables.push(t);
        }
        for t in &tables {
            for shard in 0..t.replicas.len() as u32 {
                self.ensure(t, shard).await?;
            }
        }
        self.catalog_seen.store(catalog.version, Ordering::Release);
        Ok(())
    }

    /// Take over the groups this replica has come to lead: wait until
    /// everything committed before is applied here, raise the read floor,
    /// and serve.
    async fn take_over(&self) {
        let replicas: Vec<(ShardId, Arc<Replica>)> = self
            .replicas
            .lock()
            .unwrap()
            .iter()
            .map(|(s, r)| (*s, r.clone()))
            .collect();
        let each = replicas.into_iter().map(|(shard, replica)| async move {
            let raft = replica.raft();
            let m = raft.metrics().borrow().clone();
            if m.state != ServerState::Leader
                || m.current_leader != Some(self.id)
                || replica.ready_term.load(Ordering::Acquire) == m.current_term
            {
                return;
            }
            if raft.ensure_linearizable().await.is_err() {
                return;
            }
            let ts = match self
                .meta
                .clone()
                .get_timestamp(pb::GetTimestampRequest { count: 1 })
                .await
            {
                Ok(r) => r.into_inner().ts,
                Err(e) => {
                    tracing::debug!("no timestamp to take over with: {e}");
                    return;
                }
            };
            self.store.set_read_floor(ts);
            replica.ready_term.store(m.current_term, Ordering::Release);
            self.news.notify_one();
            tracing::info!(?shard, term = m.current_term, "leading the shard");
        });
        // Each group on its own: one slow to confirm holds up no other.
        futures::future::join_all(each).await;
    }

    /// Keep the replicas running for as long as the process runs: take
    /// over leaderships as they come, start what the catalog adds, follow
    /// peers' addresses.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut rounds = 0u64;
            loop {
                tick.tick().await;
                me.take_over().await;
                rounds += 1;
                if rounds % 4 == 0 {
                    me.update_counters();
                }
                if rounds % 20 == 0 {
                    if let Err(e) = me.refresh_addresses().await {
                        tracing::debug!("listing data engines: {e}");
                    }
                    if let Err(e) = me.reconcile().await {
                        tracing::warn!("starting shard replicas: {e}");
                    }
                }
            }
        });
    }

    /// Stop every group (the process is stopping).
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
    }
}

impl node::HeartbeatExtra for Replicas {
    fn leading(&self) -> Vec<pb::ShardLeader> {
        self.replicas
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(shard, r)| {
                let m = r.raft().metrics().borrow().clone();
                (m.state == ServerState::Leader
                    && m.current_leader == Some(self.id)
                    && r.ready_term.load(Ordering::Acquire) == m.current_term)
                    .then_some(pb::ShardLeader {
                        table: shard.0,
                        shard: shard.1,
                        term: m.current_term,
                    })
            })
            .collect()
    }

    fn answered(&self, response: &pb::HeartbeatResponse) {
        self.catalog_wanted
            .fetch_max(response.catalog_version, Ordering::AcqRel);
    }

    fn news(&self) -> &tokio::sync::Notify {
        &self.news
    }
}
