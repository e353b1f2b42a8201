//! The shards this data engine keeps copies of: their Raft groups.
//!
//! Meta places each shard's copies (`Table.replicas`); a shard with more
//! than one copy is a Raft group (`eon_raft::shard`) whose state machine is
//! this engine's [`Store`], restricted to the shard. This module runs this
//! engine's replicas:
//!
//! - **Starting.** A replica starts when a request first names its shard,
//!   when a peer's Raft message names its group, or when the catalog
//!   changes (meta's heartbeat answer carries its version) and lists a
//!   shard with a copy here. The shard's first copy
//!   (`replicas[i].engines[0]`), where meta routes the shard's first
//!   requests, initializes the group with every copy as a voter and stands
//!   for election at once; its vote requests start the other copies. So a
//!   new table's shards have leaders a few milliseconds after its first
//!   write arrives, and that write waits for them rather than failing.
//! - **Addresses.** Data engines listen on a new port after a restart, so
//!   peers are reached at the addresses meta lists, refreshed every second,
//!   whatever the group's membership recorded.
//! - **Leading.** Only a group's leader serves the shard, and only once it
//!   has *taken over*: applied everything committed before its term, and
//!   raised the store's read floor to a fresh timestamp — readers of the
//!   previous leader may have read up to any timestamp handed out so far,
//!   and no commit here may land at or below what they read. A read first
//!   confirms the leadership, so a deposed leader cannot answer with stale
//!   rows: a heartbeat round to a majority (`ensure_linearizable`) started
//!   at `t` proves that no other leader can be elected before `t` plus the
//!   lease followers grant a leader they heard from (openraft refuses
//!   votes for that long, the longest election timeout: 1 s). So one
//!   round serves every read of the shard for [`READ_LEASE`] after `t`,
//!   well inside that, a *read lease*. Leaderships go to meta with every
//!   heartbeat; meta routes query engines to the leaders.
//! - **Quiet.** Groups do not beat on their own: engines beat to each
//!   other once per peer, listing the groups they lead, and a group elects
//!   only when no live engine leads it (`eon_raft::quiet`). So hundreds of
//!   idle shards cost nothing between writes.
//! - **Following the catalog.** When meta changes a shard's list of copies
//!   (it replaced a lost engine; the balancer moves a copy), the list's
//!   `generation` goes up and the group's leader makes the group follow:
//!   each engine new to it is added as a learner, which starts its replica
//!   on the leader's first message and catches up by snapshot and log, and
//!   then the voters become the list (openraft's joint consensus). An
//!   engine dropped from the list deletes its copy once its group has let
//!   it go, or after [`REMOVE_GRACE`] (a removed replica is not told).
//! - **Elsewhere**, a request waits (up to [`SERVE_WAIT`]) while the group
//!   has no leader or this replica is still taking over; when another
//!   replica leads, or none emerges in time, the request is refused with a
//!   serialization failure (40001) and the query engine runs the statement
//!   again, with the new leaders.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use eon_common::{Error, node};
use eon_proto::v1 as pb;
use eon_proto::v1::meta_client::MetaClient;
use eon_raft::openraft::{BasicNode, RaftMetrics, ServerState};
use eon_raft::shard::{ShardGroup, start_shard};
use eon_raft::{GroupId, Node, Raft};
use eon_storage::{ShardId, Store};

type Metrics = RaftMetrics<u64, BasicNode>;

/// Raft settings for shard groups. They are quiet (`eon_raft::quiet`):
/// engines beat to each other every 150 ms, and a group whose leader's
/// engine has been silent for a second elects again (a follower still
/// waits out the lease it granted the leader, the longest election
/// timeout), so writes resume well within the 5 s the cluster promises.
/// A follower has 450 ms to log and answer a message of entries: a bulk
/// load's 10 MB entry on a busy machine took more than 150 ms, and a
/// follower that cannot answer in time never catches up.
fn raft_options() -> eon_raft::Options {
    eon_raft::Options {
        authorization: node::cluster_secret().map(|s| format!("Bearer {s}")),
        heartbeat: Duration::from_millis(150),
        append_deadline: Duration::from_millis(450),
        election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
        quiet: true,
        ..Default::default()
    }
}

/// How long a request waits for its shard's group to settle on a leader
/// (a new group's first election, or a take-over under way) before it is
/// refused. Longer than an election, shorter than the client's patience.
pub const SERVE_WAIT: Duration = Duration::from_secs(3);

/// How long a copy the catalog no longer lists is kept while its group may
/// still count on it (a removed replica is not told it was removed).
pub const REMOVE_GRACE: Duration = Duration::from_secs(30);

/// How long a new copy may take to catch up before the change is given up
/// (and tried again).
const CATCH_UP: Duration = Duration::from_secs(600);

/// How long a confirmed leadership serves reads without another round
/// (half the followers' lease on the leader, for clocks and delays).
pub const READ_LEASE: Duration = Duration::from_millis(500);

struct Replica {
    group: Arc<ShardGroup>,
    /// The term in which this replica took over as leader (0: never).
    ready_term: AtomicU64,
    /// Reads are served without a round until then, in that term.
    lease: Mutex<Option<(u64, tokio::time::Instant)>>,
}

/// A shard's replica here, leading and taken over: reads confirm with it.
pub struct Leading(Arc<Replica>);

impl Leading {
    /// Confirm this replica still leads, so a read cannot miss a write a
    /// newer leader acknowledged: within a read lease at once, else with a
    /// heartbeat round to a majority, which starts a new lease.
    pub async fn confirm(&self, table: &str, shard: u32) -> Result<(), Error> {
        let replica = &self.0;
        let term = replica.ready_term.load(Ordering::Acquire);
        let now = tokio::time::Instant::now();
        if replica
            .lease
            .lock()
            .unwrap()
            .is_some_and(|(t, until)| t == term && now < until)
        {
            return Ok(());
        }
        replica
            .raft()
            .ensure_linearizable()
            .await
            .map_err(|_| not_leader(table, shard))?;
        // (A term changed meanwhile fails the round: the lease is this
        // term's.)
        let mut lease = replica.lease.lock().unwrap();
        if lease.is_none_or(|(t, until)| t < term || until < now + READ_LEASE) {
            *lease = Some((term, now + READ_LEASE));
        }
        Ok(())
    }
}

impl Replica {
    fn raft(&self) -> &Raft {
        self.group.raft().expect("a started group has its raft")
    }

    /// The group's voters and learners as this replica knows them, and
    /// whether a change between two sets of voters is under way.
    fn members(&self) -> (BTreeSet<u64>, BTreeSet<u64>, bool) {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().collect(),
            membership.learner_ids().collect(),
            membership.get_joint_config().len() > 1,
        )
    }

    /// What this engine needs of the group's metrics, read without
    /// copying them (they are polled often, for every group).
    fn state(&self) -> State {
        State::of(&self.raft().metrics().borrow())
    }

    /// Whether it leads and has taken over in this term: it may serve.
    fn ready(&self, s: &State, me: u64) -> bool {
        s.leads(me) && self.ready_term.load(Ordering::Acquire) == s.term
    }
}

/// A replica's view of its group.
#[derive(Clone, Copy)]
struct State {
    leader_state: bool,
    leader: Option<u64>,
    term: u64,
    applied: u64,
}

impl State {
    fn of(m: &Metrics) -> State {
        State {
            leader_state: m.state == ServerState::Leader,
            leader: m.current_leader,
            term: m.current_term,
            applied: m.last_applied.map_or(0, |l| l.index),
        }
    }

    /// Whether the replica, node `me`, leads its group in this term.
    fn leads(&self, me: u64) -> bool {
        self.leader_state && self.leader == Some(me)
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
    /// Tables the catalog no longer has (ids are never reused): peers that
    /// missed the drop may still talk to their groups.
    gone: Mutex<HashSet<u64>>,
    /// The catalog's copies of every replicated shard.
    lists: Mutex<HashMap<ShardId, Vec<u64>>>,
    /// Shards whose group this engine, leading, is changing to its list.
    changing: Mutex<HashSet<ShardId>>,
    /// Copies here the catalog stopped listing, since when.
    dropped: Mutex<HashMap<ShardId, tokio::time::Instant>>,
}

/// The engine's replication counters (in its Stats).
pub struct Counters {
    pub replicas: Arc<AtomicU64>,
    pub leading: Arc<AtomicU64>,
    pub applied: Arc<AtomicU64>,
    /// Groups led here whose voters are not yet the catalog's list.
    pub changing: Arc<AtomicU64>,
    /// The catalog version whose lists `changing` compares with.
    pub catalog: Arc<AtomicU64>,
}

/// The engines keeping copies of `table`'s shard (one: not replicated).
fn copies(table: &pb::Table, shard: u32) -> &[u64] {
    table
        .replicas
        .get(shard as usize)
        .map(|r| r.engines.as_slice())
        .unwrap_or(&[])
}

/// The voters a catalog list of copies asks for.
fn wanted(list: &[u64]) -> BTreeSet<u64> {
    list.iter().copied().collect()
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
        let replicas = Arc::new(Replicas {
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
            gone: Mutex::new(HashSet::new()),
            lists: Mutex::new(HashMap::new()),
            changing: Mutex::new(HashSet::new()),
            dropped: Mutex::new(HashMap::new()),
        });
        let weak: Weak<Replicas> = Arc::downgrade(&replicas);
        replicas.node.on_unknown_group(Arc::new(move |group| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(replicas) => replicas.start_unknown(group).await,
                    None => false,
                }
            })
        }));
        Ok(replicas)
    }

    /// Keep these counters up to date.
    pub fn count_into(&self, counters: Counters) {
        let _ = self.counters.set(counters);
    }

    fn update_counters(&self) {
        let Some(c) = self.counters.get() else { return };
        let replicas: Vec<(ShardId, Arc<Replica>)> = self.all();
        let lists = self.lists.lock().unwrap().clone();
        let (mut leading, mut applied, mut changing) = (0, 0, 0);
        for (id, r) in &replicas {
            let s = r.state();
            if s.leads(self.id) {
                leading += 1;
                let (voters, _, _) = r.members();
                if lists.get(id).is_some_and(|l| voters != wanted(l)) {
                    changing += 1;
                }
            }
            applied += s.applied;
        }
        c.changing.store(changing, Ordering::Relaxed);
        c.catalog
            .store(self.catalog_seen.load(Ordering::Acquire), Ordering::Relaxed);
        c.replicas.store(replicas.len() as u64, Ordering::Relaxed);
        c.leading.store(leading, Ordering::Relaxed);
        c.applied.store(applied, Ordering::Relaxed);
    }

    /// The Raft service, to serve beside the DataEngine service.
    pub fn service(&self) -> pb::raft_server::RaftServer<eon_raft::network::Service> {
        self.node.service()
    }

    /// Every replica here, with its shard.
    fn all(&self) -> Vec<(ShardId, Arc<Replica>)> {
        self.replicas
            .lock()
            .unwrap()
            .iter()
            .map(|(s, r)| (*s, r.clone()))
            .collect()
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
        // A follower gets no requests for the table, yet writes its copy to
        // segments under memory pressure: it needs the table's schema.
        let def = eon_common::TableDef::from_proto(table.clone())?;
        self.store.note_schema(table.id, def.arrow_schema());
        let raft_err = |e: eon_raft::Error| Error::internal(format!("raft: {e}"));
        let (group, handle) = start_shard(&self.node, self.store.clone(), id)
            .await
            .map_err(raft_err)?;
        let raft = handle.raft().expect("started").clone();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::internal(format!("raft: {e}")))?;
        // Only a new group is made here; one whose list changed exists
        // already, and its leader adds this copy.
        let new_group = table
            .replicas
            .get(shard as usize)
            .is_some_and(|r| r.generation == 0);
        if members[0] == self.id && new_group && !initialized {
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
                lease: Mutex::new(None),
            }),
        );
        Ok(true)
    }

    /// Before serving `table`'s `shard`: when it is replicated, its replica
    /// here must lead and have taken over. A group without a leader yet (a
    /// new one electing its first) or one this replica is taking over is
    /// waited for, up to [`SERVE_WAIT`]. Returns the replica to confirm
    /// the leadership with before a read (None: not replicated).
    pub async fn serving(&self, table: &pb::Table, shard: u32) -> Result<Option<Leading>, Error> {
        if !self.ensure(table, shard).await? {
            return Ok(None);
        }
        let id = (table.id, shard);
        let replica = self.get(id).ok_or_else(|| not_leader(&table.name, shard))?;
        let raft = replica.raft();
        let deadline = tokio::time::Instant::now() + SERVE_WAIT;
        let mut changes = raft.metrics();
        loop {
            let s = State::of(&changes.borrow_and_update());
            if replica.ready(&s, self.id) {
                return Ok(Some(Leading(replica.clone())));
            }
            if s.leader.is_some_and(|l| l != self.id) {
                // Another replica leads: the query engine goes there.
                return Err(not_leader(&table.name, shard));
            }
            if s.leads(self.id) {
                self.take_over(id, &replica).await;
                if replica.ready(&replica.state(), self.id) {
                    continue;
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(not_leader(&table.name, shard)),
            }
        }
    }

    /// Stop and delete this engine's replicas of `table`'s shards.
    pub async fn forget(&self, table: u64) {
        let gone: Vec<ShardId> = {
            let replicas = self.replicas.lock().unwrap();
            replicas.keys().filter(|s| s.0 == table).copied().collect()
        };
        for shard in gone {
            self.remove(shard).await;
        }
    }

    /// Stop and delete this engine's replica of `shard`.
    async fn remove(&self, shard: ShardId) {
        if self.replicas.lock().unwrap().remove(&shard).is_none() {
            return;
        }
        self.dropped.lock().unwrap().remove(&shard);
        if let Err(e) = self.node.remove(eon_raft::group_of(shard.0, shard.1)).await {
            tracing::warn!(?shard, "removing a shard's group: {e}");
        }
        let _ = self.store.unreplicate(shard);
        tracing::info!(?shard, "shard replica removed");
    }

    /// Make the groups follow the catalog's lists of copies (see the
    /// module docs): as a leader, change a group whose voters differ from
    /// its list; elsewhere, delete a copy the list dropped once the group
    /// let it go or [`REMOVE_GRACE`] passed.
    async fn follow_catalog(self: &Arc<Self>) {
        let replicas: Vec<(ShardId, Arc<Replica>)> = self.all();
        for (id, replica) in replicas {
            let Some(list) = self.lists.lock().unwrap().get(&id).cloned() else {
                continue;
            };
            let (voters, learners, joint) = replica.members();
            if replica.ready(&replica.state(), self.id) {
                let want = wanted(&list);
                if voters != want && !joint && self.changing.lock().unwrap().insert(id) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.change_members(id, &replica, want).await;
                        me.changing.lock().unwrap().remove(&id);
                    });
                }
                // A leader leaves its group by stepping down first.
                continue;
            }
            if list.contains(&self.id) {
                self.dropped.lock().unwrap().remove(&id);
                continue;
            }
            let since = *self
                .dropped
                .lock()
                .unwrap()
                .entry(id)
                .or_insert_with(tokio::time::Instant::now);
            let let_go = !voters.contains(&self.id) && !learners.contains(&self.id);
            if let_go || since.elapsed() >= REMOVE_GRACE {
                self.remove(id).await;
            }
        }
    }

    /// As `shard`'s leader: add the engines new to `want` as learners, wait
    /// until they caught up, then make `want` the voters (the others leave).
    async fn change_members(&self, shard: ShardId, replica: &Replica, want: BTreeSet<u64>) {
        let raft = replica.raft();
        let addresses = match self.refresh_addresses().await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(?shard, "no addresses to change the group with: {e}");
                return;
            }
        };
        let (voters, _, _) = replica.members();
        for new in want.iter().filter(|n| !voters.contains(n)) {
            let node = BasicNode::new(addresses.get(new).cloned().unwrap_or_default());
            // Blocking: returns once the learner has caught up.
            match tokio::time::timeout(CATCH_UP, raft.add_learner(*new, node, true)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(?shard, new, "adding a copy: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(?shard, new, "a new copy did not catch up in {CATCH_UP:?}");
                    return;
                }
            }
        }
        match raft.change_membership(want.clone(), false).await {
            Ok(_) => {
                tracing::info!(?shard, voters = ?want, "the shard's group follows the catalog")
            }
            Err(e) => tracing::warn!(?shard, "changing the group's voters: {e}"),
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

    /// Every table in meta's catalog, index storage tables included, and
    /// the catalog's version.
    async fn catalog_tables(&self) -> Result<(Vec<pb::Table>, u64), Error> {
        let catalog = self
            .meta
            .clone()
            .get_catalog(pb::GetCatalogRequest {})
            .await
            .map_err(Error::from_status)?
            .into_inner();
        let tables = eon_common::schema::stored_tables(&catalog.tables)
            .cloned()
            .collect();
        Ok((tables, catalog.version))
    }

    /// Start the replicas the catalog lists for this engine.
    async fn reconcile(&self) -> Result<(), Error> {
        let wanted = self.catalog_wanted.load(Ordering::Acquire);
        if wanted <= self.catalog_seen.load(Ordering::Acquire) {
            return Ok(());
        }
        let (tables, version) = self.catalog_tables().await?;
        let mut lists = HashMap::new();
        for t in &tables {
            for (shard, r) in t.replicas.iter().enumerate() {
                if r.engines.len() > 1 {
                    lists.insert((t.id, shard as u32), r.engines.clone());
                }
            }
        }
        *self.lists.lock().unwrap() = lists;
        for t in &tables {
            for shard in 0..t.replicas.len() as u32 {
                self.ensure(t, shard).await?;
            }
        }
        self.catalog_seen.store(version, Ordering::Release);
        self.store.groups_known();
        Ok(())
    }

    /// A peer's message names `group`, which does not run here: start it
    /// when the catalog has a copy of its shard here. Returns whether it
    /// runs now.
    async fn start_unknown(&self, group: GroupId) -> bool {
        let (table, shard) = eon_raft::shard_of(group);
        if self.gone.lock().unwrap().contains(&table) {
            return false;
        }
        let tables = match self.catalog_tables().await {
            Ok((tables, _)) => tables,
            Err(e) => {
                tracing::debug!(group, "no catalog to start a group from: {e}");
                return false;
            }
        };
        let Some(t) = tables.iter().find(|t| t.id == table) else {
            self.gone.lock().unwrap().insert(table);
            return false;
        };
        match self.ensure(t, shard).await {
            Ok(_) => self.get((table, shard)).is_some(),
            Err(e) => {
                tracing::warn!(group, "starting a shard's group: {e}");
                false
            }
        }
    }

    /// Take over `shard`'s group if this replica has come to lead it: wait
    /// until everything committed before is applied here, raise the read
    /// floor, and serve.
    async fn take_over(&self, shard: ShardId, replica: &Replica) {
        let s = replica.state();
        if !s.leads(self.id) || replica.ready(&s, self.id) {
            return;
        }
        if replica.raft().ensure_linearizable().await.is_err() {
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
        replica.ready_term.fetch_max(s.term, Ordering::AcqRel);
        self.news.notify_one();
        tracing::info!(?shard, term = s.term, "leading the shard");
    }

    /// Take over every group this replica has come to lead, each on its
    /// own: one slow to confirm holds up no other.
    async fn take_over_all(&self) {
        let replicas: Vec<(ShardId, Arc<Replica>)> = self.all();
        let each = replicas
            .iter()
            .map(|(shard, replica)| self.take_over(*shard, replica));
        futures::future::join_all(each).await;
    }

    /// Keep the replicas running for as long as the process runs: take
    /// over leaderships as they come, start what the catalog adds, follow
    /// peers' addresses.
    pub fn spawn(self: &Arc<Self>) {
        self.node.watch_peers();
        self.node.bound_logs();
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut rounds = 0u64;
            loop {
                tick.tick().await;
                me.take_over_all().await;
                rounds += 1;
                if rounds % 4 == 0 {
                    me.update_counters();
                }
                // (From the first round: until the groups of the catalog
                // run, the store cannot rule out a transaction's record.)
                if rounds % 20 == 1 {
                    if let Err(e) = me.refresh_addresses().await {
                        tracing::debug!("listing data engines: {e}");
                    }
                    if let Err(e) = me.reconcile().await {
                        tracing::warn!("starting shard replicas: {e}");
                    }
                    me.follow_catalog().await;
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
                let s = r.state();
                r.ready(&s, self.id).then_some(pb::ShardLeader {
                    table: shard.0,
                    shard: shard.1,
                    term: s.term,
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
