//! eon's meta service: the catalog, the shard map, the timestamp oracle and
//! cluster membership.
//!
//! Meta is the one place every other component asks for the truth about the
//! cluster:
//!
//! - **Catalog and shard map.** `CreateTable` assigns a table id (never
//!   reused) and places the table's shards on the data engines that are up,
//!   round-robin (or, for a table created `colocate_with` another, as that
//!   one's are); the placement is part of the table definition
//!   (`Table.placement`), so a query engine that has the catalog knows where
//!   every shard lives. Every DDL bumps the catalog version. `SwapTable`
//!   replaces a table by a rewritten copy (new id, built under a temporary
//!   name) in one step.
//! - **Timestamps.** `GetTimestamp` hands out strictly increasing timestamps
//!   (microseconds since the epoch, or one more than the last when the clock
//!   lags). To stay increasing across restarts without a disk write per call,
//!   meta persists a *limit* a few seconds ahead and never hands out a
//!   timestamp at or above it without first raising it (the same trick as
//!   TiDB's TSO). Ids come from the same kind of allocator.
//! - **Sequences.** Defined with the catalog (alone, or owned by a SERIAL
//!   or identity column and dropped with its table); `NextVal` hands out
//!   blocks of values, persisting the sequence's state [`SEQ_WINDOW`]
//!   values ahead, so a restart skips values but never repeats one.
//! - **Enum types.** `CreateType`, `AlterType`, `DropType` (`types`): a
//!   type's oid is its id; each column of the type carries a copy, which
//!   meta rewrites when the type changes; a used type is not dropped.
//! - **Roles.** Created, changed and dropped whole (`roles`); the admin
//!   `eon up` prints a URL for is made at the first start.
//! - **Membership.** Components register their freshly chosen addresses and
//!   heartbeat; a node whose heartbeat is older than [`NODE_TIMEOUT`] is down.
//!   A data engine down for longer than `--replace-after` is *lost*: the
//!   leader gives each of its shard copies to another engine
//!   ([`placement::replace`]) and the shards' groups follow the catalog.
//!
//! State is replicated with Raft ([`replication`]), as one replica or
//! three: a change is answered once a majority of replicas has it on disk,
//! and a restarted replica comes back with every table.

mod placement;
pub mod replication;
mod roles;
mod state;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eon_common::error::sqlstate;
use eon_common::schema::{for_each_stored_table, stored_tables};
use eon_common::stats::Recorder;
use eon_common::{Error, unix_ms, unix_us};
use eon_proto::v1 as pb;
use eon_proto::v1::meta_server::{Meta, MetaServer};
use tonic::{Request, Response, Status};

pub use state::Persisted;

/// A node that has not heartbeated for this long is considered down.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// How far ahead of the last issued timestamp the persisted limit is set.
const TS_WINDOW_US: u64 = 3_000_000;
const ID_WINDOW: u64 = 100_000;
/// How many values of a sequence meta hands out per write of its state
/// (PostgreSQL logs 32 ahead): a restart skips at most this many.
const SEQ_WINDOW: i64 = 1000;

pub struct MetaService {
    dir: PathBuf,
    inner: Mutex<Inner>,
    repl: replication::Replication,
    stats: Arc<Recorder>,
    /// Statistics reported by agents, the last [`HISTORY_WINDOW`].
    history: Mutex<std::collections::VecDeque<pb::StatsSample>>,
}

/// How much statistics history meta keeps (in memory: it is for deciding
/// and looking, not for records).
pub const HISTORY_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
const HISTORY_MAX_SAMPLES: usize = 50_000;

struct Inner {
    persisted: Persisted,
    last_ts: u64,
    next_id: u64,
    /// Each sequence's last value handed out and whether one was, by id
    /// (the persisted `last_value` runs ahead of it).
    seq_values: HashMap<u64, (i64, bool)>,
    nodes: HashMap<(i32, u64), (pb::NodeInfo, i64)>,
    /// Bumped by every change of `persisted` (see [`replication`]).
    version: u64,
    /// The newest version a majority of replicas has.
    durable: u64,
    /// The leader of each replicated shard, as its data engine reported it
    /// (engine, Raft term). Not replicated: a new meta leader hears the
    /// leaderships again within a heartbeat.
    leaders: HashMap<(u64, u32), (u64, u64)>,
    /// Changes with `leaders` (see GetCatalogResponse.leaders_version).
    leaders_version: u64,
}

impl Inner {
    fn new(persisted: Persisted) -> Inner {
        let mut inner = Inner {
            persisted: Persisted::default(),
            last_ts: 0,
            next_id: 0,
            seq_values: HashMap::new(),
            nodes: HashMap::new(),
            version: 0,
            durable: 0,
            leaders: HashMap::new(),
            leaders_version: unix_ms() as u64,
        };
        inner.reset(persisted);
        inner
    }

    /// Start over from `persisted` (a new leader's committed state): the
    /// allocators continue above their committed limits, which no earlier
    /// leader passed.
    fn reset(&mut self, persisted: Persisted) {
        // Registered nodes count as just seen: up until a heartbeat is
        // missed, as after a registration.
        let now = unix_ms();
        self.nodes = persisted
            .nodes
            .iter()
            .map(|n| ((n.kind, n.id), (n.clone(), now)))
            .collect();
        self.last_ts = persisted.ts_limit;
        self.next_id = persisted.id_limit;
        self.seq_values = persisted
            .sequences
            .iter()
            .map(|q| (q.id, (q.last_value, q.is_called)))
            .collect();
        self.persisted = persisted;
    }

    /// A new id for a catalog object (table, sequence, role): never reused.
    fn new_catalog_id(&mut self) -> u64 {
        self.persisted.next_table_id += 1;
        self.persisted.next_table_id
    }
}

impl MetaService {
    /// Open meta's replica `opts.id` in `opts.dir` (creating it), join or
    /// start its Raft group, and watch for leadership. `opts.members`
    /// lists every replica's address (host:port), this one's included.
    pub async fn start(opts: &ReplicaOptions) -> Result<Arc<MetaService>, Error> {
        std::fs::create_dir_all(&opts.dir)?;
        // Before replication, meta kept its state in this file; a group
        // that has no state yet starts from it.
        let persisted = Persisted::load(&opts.dir)?;
        let raft_error = |e: eon_raft::Error| Error::internal(format!("meta's raft: {e}"));
        let raft_options = eon_raft::Options {
            authorization: eon_common::node::cluster_secret().map(|s| format!("Bearer {s}")),
            // Meta's group is small and its entries tiny: elect quickly, so
            // the cluster waits little for timestamps after losing a leader.
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            ..Default::default()
        };
        let node = eon_raft::Node::open(opts.id, &opts.dir.join("raft"), raft_options)
            .map_err(raft_error)?;
        let (raft, replica) = node
            .start(
                eon_raft::META_GROUP,
                replication::MetaState(persisted.clone()),
            )
            .await
            .map_err(raft_error)?;
        let first = opts.members.keys().next() == Some(&opts.id);
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::internal(format!("meta's raft: {e}")))?;
        if first && !initialized {
            let members = opts
                .members
                .iter()
                .map(|(id, addr)| (*id, format!("http://{addr}")))
                .collect();
            node.initialize(eon_raft::META_GROUP, members)
                .await
                .map_err(raft_error)?;
        }
        let service = Arc::new(MetaService {
            dir: opts.dir.clone(),
            inner: Mutex::new(Inner::new(persisted)),
            repl: replication::Replication {
                id: opts.id,
                node,
                raft,
                replica,
                members: opts.members.clone(),
                proposing: Default::default(),
                ready: Default::default(),
            },
            stats: Recorder::new("meta", opts.id),
            history: Default::default(),
        });
        service.watch_leadership(opts.admin.clone());
        Ok(service)
    }

    /// Stop this replica's part in Raft (the process is stopping).
    pub async fn shutdown(&self) {
        self.repl
            .ready
            .store(false, std::sync::atomic::Ordering::Release);
        self.repl.node.shutdown().await;
    }

    /// Wait until this replica leads and serves (tests, and a single
    /// replica's start).
    pub async fn until_serving(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.serving() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The gRPC services of this replica: Meta (forwarded to the leader
    /// when this replica does not lead) and Raft.
    pub fn raft_service(
        &self,
    ) -> eon_proto::v1::raft_server::RaftServer<eon_raft::network::Service> {
        self.repl.node.service()
    }

    /// Note a change of `inner.persisted`: the RPC commits it (see
    /// [`MetaService::commit`]) before answering.
    fn save(&self, inner: &mut Inner) -> Result<(), Error> {
        inner.version += 1;
        Ok(())
    }

    /// A change of the catalog: a new version, on disk before anyone hears
    /// of it.
    fn bump(&self, inner: &mut Inner) -> Result<(), Error> {
        inner.persisted.catalog_version += 1;
        self.save(inner)
    }

    /// The next timestamp (see the module docs).
    fn next_ts(&self) -> Result<(u64, u64), Error> {
        self.next_ts_block(1).map(|(ts, catalog, _)| (ts, catalog))
    }

    /// Reserve `count` consecutive timestamps; returns the first.
    fn next_ts_block(&self, count: u64) -> Result<(u64, u64, u64), Error> {
        let mut inner = self.inner.lock().unwrap();
        let ts = (inner.last_ts + 1).max(unix_us());
        let last = ts + count.max(1) - 1;
        if last >= inner.persisted.ts_limit {
            inner.persisted.ts_limit = last + TS_WINDOW_US;
            self.save(&mut inner)?;
        }
        inner.last_ts = last;
        Ok((ts, inner.persisted.catalog_version, inner.leaders_version))
    }

    fn alloc_ids(&self, count: u64) -> Result<u64, Error> {
        let mut inner = self.inner.lock().unwrap();
        let start = inner.next_id.max(1);
        let end = start + count;
        if end > inner.persisted.id_limit {
            inner.persisted.id_limit = end + ID_WINDOW;
            self.save(&mut inner)?;
        }
        inner.next_id = end;
        Ok(start)
    }

    /// The up data engines that take new copies: those not being drained
    /// (or, when every one is, all of them: the cluster still serves).
    fn up_data_engines(inner: &Inner) -> Vec<placement::Engine> {
        let now = unix_ms();
        let mut engines: Vec<placement::Engine> = inner
            .nodes
            .values()
            .filter(|(n, seen)| {
                n.kind == pb::NodeKind::DataEngine as i32
                    && now - seen <= NODE_TIMEOUT.as_millis() as i64
            })
            .map(|(n, _)| placement::Engine {
                id: n.id,
                host: placement::host_of(&n.grpc_address),
            })
            .collect();
        engines.sort_by_key(|e| e.id);
        let staying: Vec<placement::Engine> = engines
            .iter()
            .filter(|e| !inner.persisted.draining.contains(&e.id))
            .cloned()
            .collect();
        if staying.is_empty() { engines } else { staying }
    }

    /// Start or stop draining a data engine (see `DrainDataEngine`).
    fn drain(&self, req: pb::DrainDataEngineRequest) -> Result<pb::DrainDataEngineResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let known = inner
            .nodes
            .values()
            .any(|(n, _)| n.kind == pb::NodeKind::DataEngine as i32 && n.id == req.engine);
        if !known {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("there is no data engine {}", req.engine),
            ));
        }
        let draining = inner.persisted.draining.contains(&req.engine);
        if req.cancel == draining {
            if req.cancel {
                inner.persisted.draining.retain(|e| *e != req.engine);
            } else {
                inner.persisted.draining.push(req.engine);
                inner.persisted.draining.sort();
            }
            self.save(&mut inner)?;
            tracing::info!(
                engine = req.engine,
                cancel = req.cancel,
                "draining a data engine"
            );
        }
        let (mut copies, mut single) = (0, 0);
        for t in stored_tables(&inner.persisted.tables) {
            for r in t
                .replicas
                .iter()
                .filter(|r| r.engines.contains(&req.engine))
            {
                copies += 1;
                if r.engines.len() < 2 {
                    single += 1;
                }
            }
        }
        Ok(pb::DrainDataEngineResponse {
            copies,
            single,
            draining: inner.persisted.draining.clone(),
        })
    }

    /// Replace the data engines not heard from for `after` in every
    /// replicated shard that lists them (see [`placement::replace`]).
    /// Returns the replacements made, as (table, shard, lost, new).
    fn replace_lost(&self, after: Duration) -> Vec<(u64, u32, u64, u64)> {
        let mut inner = self.inner.lock().unwrap();
        let now = unix_ms();
        let lost: std::collections::HashSet<u64> = inner
            .nodes
            .values()
            .filter(|(n, seen)| {
                n.kind == pb::NodeKind::DataEngine as i32 && now - seen > after.as_millis() as i64
            })
            .map(|(n, _)| n.id)
            .collect();
        let listed = |t: &pb::Table| {
            t.replicas
                .iter()
                .any(|r| r.engines.len() > 1 && r.engines.iter().any(|e| lost.contains(e)))
        };
        if !stored_tables(&inner.persisted.tables).any(listed) {
            return vec![];
        }
        let up = Self::up_data_engines(&inner);
        let mut copies: HashMap<u64, usize> = HashMap::new();
        for t in stored_tables(&inner.persisted.tables) {
            for e in t.replicas.iter().flat_map(|r| &r.engines) {
                *copies.entry(*e).or_default() += 1;
            }
        }
        // A shard's copies that were alike (colocated tables' shard i) stay
        // alike: the same list gets the same replacement.
        let mut done: HashMap<Vec<u64>, pb::ShardReplicas> = HashMap::new();
        let mut made = Vec::new();
        let replace_in = |t: &mut pb::Table| {
            for (i, r) in t.replicas.iter_mut().enumerate() {
                if !r.engines.iter().any(|e| lost.contains(e)) {
                    continue;
                }
                let old = r.engines.clone();
                let changes = match done.get(&old) {
                    Some(new) => {
                        let changes: Vec<(u64, u64)> = old
                            .iter()
                            .zip(&new.engines)
                            .filter(|(a, b)| a != b)
                            .map(|(a, b)| (*a, *b))
                            .collect();
                        r.engines = new.engines.clone();
                        if !changes.is_empty() {
                            r.generation += 1;
                        }
                        changes
                    }
                    None => {
                        let changes = placement::replace(r, &lost, &up, &mut copies);
                        done.insert(old, r.clone());
                        changes
                    }
                };
                if changes.is_empty() {
                    continue;
                }
                // Route to a copy that is there until a leader is known.
                if let Some(p) = t.placement.get_mut(i)
                    && lost.contains(p)
                    && let Some(first) = r.engines.iter().find(|e| !lost.contains(e))
                {
                    *p = *first;
                }
                for (old, new) in changes {
                    made.push((t.id, i as u32, old, new));
                }
            }
        };
        for_each_stored_table(&mut inner.persisted.tables, replace_in);
        if !made.is_empty() && self.bump(&mut inner).is_err() {
            return vec![];
        }
        made
    }

    /// Move one copy of a replicated shard (see `MoveReplica`); the shards
    /// of the tables colocated with it that had the same copies move along.
    fn move_replica(&self, req: pb::MoveReplicaRequest) -> Result<pb::MoveReplicaResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let bad = |m: String| Error::user(sqlstate::INVALID_PARAMETER_VALUE, m);
        let t = stored_tables(&inner.persisted.tables)
            .find(|t| t.id == req.table)
            .cloned()
            .ok_or_else(|| {
                Error::user(
                    sqlstate::UNDEFINED_TABLE,
                    format!("no table has id {}", req.table),
                )
            })?;
        let old = t
            .replicas
            .get(req.shard as usize)
            .ok_or_else(|| {
                bad(format!(
                    "\"{}\" has {} shards; there is no shard {}",
                    t.name,
                    t.replicas.len(),
                    req.shard
                ))
            })?
            .clone();
        if old.engines.len() < 2 {
            return Err(Error::user(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "shard {} of \"{}\" has one copy: only a replicated shard moves online",
                    req.shard, t.name
                ),
            ));
        }
        if !old.engines.contains(&req.from) {
            return Err(bad(format!(
                "data engine {} keeps no copy of shard {} of \"{}\"",
                req.from, req.shard, t.name
            )));
        }
        if old.engines.contains(&req.to) {
            return Err(bad(format!(
                "data engine {} keeps a copy of shard {} of \"{}\" already",
                req.to, req.shard, t.name
            )));
        }
        if inner.persisted.draining.contains(&req.to) {
            return Err(Error::user(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("data engine {} is being drained", req.to),
            ));
        }
        if !Self::up_data_engines(&inner).iter().any(|e| e.id == req.to) {
            return Err(Error::unavailable(format!(
                "data engine {} is not up",
                req.to
            )));
        }
        // The colocation group: the root table and those colocated with it.
        let root = if t.colocated_with != 0 {
            t.colocated_with
        } else {
            t.id
        };
        let mut new = old.clone();
        for e in &mut new.engines {
            if *e == req.from {
                *e = req.to;
            }
        }
        new.generation += 1;
        let mut also = Vec::new();
        let apply = |t: &mut pb::Table| {
            let same = t.id == req.table
                || ((t.id == root || t.colocated_with == root)
                    && t.replicas.get(req.shard as usize) == Some(&old));
            if !same {
                return;
            }
            t.replicas[req.shard as usize] = new.clone();
            if let Some(p) = t.placement.get_mut(req.shard as usize)
                && *p == req.from
            {
                *p = new
                    .engines
                    .iter()
                    .copied()
                    .find(|e| *e != req.to)
                    .unwrap_or(req.to);
            }
            if t.id != req.table {
                also.push(t.id);
            }
        };
        for_each_stored_table(&mut inner.persisted.tables, apply);
        self.bump(&mut inner)?;
        tracing::info!(
            table = req.table,
            shard = req.shard,
            from = req.from,
            to = req.to,
            "moving a shard's copy"
        );
        Ok(pb::MoveReplicaResponse {
            replicas: Some(new),
            catalog_version: inner.persisted.catalog_version,
            also_moved: also,
        })
    }

    /// While this replica leads: replace lost data engines (see
    /// [`MetaService::replace_lost`]) once a second.
    pub fn replace_lost_engines(self: &Arc<Self>, after: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if !me.serving() {
                    continue;
                }
                let made = me.replace_lost(after);
                if made.is_empty() {
                    continue;
                }
                for (table, shard, lost, new) in &made {
                    tracing::info!(
                        table,
                        shard,
                        lost,
                        new,
                        "data engine {lost} lost for over {after:?}: its copy of the shard goes to {new}"
                    );
                }
                if let Err(e) = me.commit().await {
                    tracing::warn!("committing replaced engines: {e}");
                }
            }
        });
    }

    /// How many copies of each shard a new table gets: what it asks for
    /// (at most the engines up), else the default.
    fn replication(asked: u32, engines: usize) -> Result<u32, Error> {
        match asked {
            0 => Ok(placement::default_replication(engines)),
            n if n as usize > engines => Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "replication = {n} needs {n} data engines, and {engines} {} up",
                    if engines == 1 { "is" } else { "are" }
                ),
            )),
            n => Ok(n),
        }
    }

    fn create_table(&self, req: pb::CreateTableRequest) -> Result<pb::CreateTableResponse, Error> {
        let mut table = req
            .table
            .ok_or_else(|| Error::internal("CreateTable without a table"))?;
        if table.schema.is_empty() {
            table.schema = "public".into();
        }
        let mut inner = self.inner.lock().unwrap();
        if let Some(existing) = inner
            .persisted
            .tables
            .iter()
            .find(|t| t.schema == table.schema && t.name == table.name)
        {
            if req.if_not_exists {
                return Ok(pb::CreateTableResponse {
                    table: Some(existing.clone()),
                    created: false,
                    catalog_version: inner.persisted.catalog_version,
                });
            }
            return Err(Error::user(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", table.name),
            ));
        }
        if table.columns.is_empty() || table.primary_key.is_empty() {
            return Err(Error::internal(
                "CreateTable needs columns and a primary key",
            ));
        }
        Self::check_relation_name(&inner, &table.schema, &table.name, req.replaces)?;
        Self::check_type_name(&inner, &table.schema, &table.name)?;
        Self::fresh_enum_columns(&inner, &mut table)?;
        for q in &req.sequences {
            Self::check_relation_name(&inner, &table.schema, &q.name, 0)?;
        }
        for (i, ix) in table.indexes.iter().enumerate() {
            Self::check_relation_name(&inner, &table.schema, &ix.name, req.replaces)?;
            let again = table.indexes[..i].iter().any(|o| o.name == ix.name)
                || ix.name == table.name
                || req.sequences.iter().any(|q| q.name == ix.name);
            if again {
                return Err(Error::user(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{}\" already exists", ix.name),
                ));
            }
        }
        for f in &table.foreign_keys {
            let self_reference = f.ref_schema == table.schema && f.ref_table == table.name;
            let exists = inner
                .persisted
                .tables
                .iter()
                .any(|t| t.schema == f.ref_schema && t.name == f.ref_table);
            if !exists && !self_reference {
                return Err(Error::user(
                    sqlstate::UNDEFINED_TABLE,
                    format!("relation \"{}\" does not exist", f.ref_table),
                ));
            }
        }
        let engines = Self::up_data_engines(&inner);
        if engines.is_empty() {
            return Err(Error::unavailable(
                "no data engine is up to hold the table's shards",
            ));
        }
        if table.shard_count == 0 {
            table.shard_count = eon_common::schema::DEFAULT_SHARD_COUNT;
        }
        if table.shard_count > 4096 {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                "a table can have at most 4096 shards",
            ));
        }
        if req.restore {
            if table.id == 0
                || table.id > inner.persisted.next_table_id
                || table.placement.len() != table.shard_count as usize
            {
                return Err(Error::internal(
                    "a restored table keeps its id and placement",
                ));
            }
        } else {
            table.id = inner.new_catalog_id();
            if table.colocated_with != 0 {
                // Shard i beside the other table's shard i.
                let other = inner
                    .persisted
                    .tables
                    .iter()
                    .find(|t| t.id == table.colocated_with)
                    .ok_or_else(|| {
                        Error::user(
                            sqlstate::UNDEFINED_TABLE,
                            "the table to colocate with does not exist",
                        )
                    })?;
                table.shard_count = other.shard_count;
                table.placement = other.placement.clone();
                table.replicas = other.replicas.clone();
                table.replication = other.replication;
            } else {
                // Start each table at a different engine so small tables
                // spread too.
                let factor = Self::replication(table.replication, engines.len())?;
                (table.placement, table.replicas) = placement::place(
                    table.shard_count as usize,
                    factor as usize,
                    &engines,
                    table.id as usize,
                );
            }
            let factor = table.replicas.first().map_or(1, |r| r.engines.len() as u32);
            let (schema, shards) = (table.schema.clone(), table.shard_count);
            for ix in &mut table.indexes {
                Self::place_index(&mut inner, &schema, ix, shards, factor, &engines)?;
            }
        }
        inner.persisted.tables.push(table.clone());
        for q in req.sequences {
            Self::add_sequence(&mut inner, q, &table.schema, req.restore);
        }
        self.bump(&mut inner)?;
        tracing::info!(table = %table.name, id = table.id, shards = table.shard_count, "table created");
        Ok(pb::CreateTableResponse {
            table: Some(table),
            created: true,
            catalog_version: inner.persisted.catalog_version,
        })
    }

    fn drop_table(&self, req: pb::DropTableRequest) -> Result<pb::DropTableResponse, Error> {
        let schema = schema_or_public(&req.schema);
        let mut inner = self.inner.lock().unwrap();
        let pos = inner
            .persisted
            .tables
            .iter()
            .position(|t| t.schema == schema && t.name == req.name);
        let Some(pos) = pos else {
            if req.if_exists {
                return Ok(pb::DropTableResponse {
                    table: None,
                    catalog_version: inner.persisted.catalog_version,
                    sequences: vec![],
                });
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{}\" does not exist", req.name),
            ));
        };
        let dropped = &inner.persisted.tables[pos];
        let referencing = inner.persisted.tables.iter().find_map(|t| {
            t.foreign_keys
                .iter()
                .find(|f| {
                    t.id != dropped.id && f.ref_schema == schema && f.ref_table == dropped.name
                })
                .map(|f| (t, f))
        });
        if let Some((t, f)) = referencing {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop table {} because other objects depend on it: constraint {} on table {} depends on table {}",
                    req.name, f.name, t.name, req.name
                ),
            ));
        }
        let table = inner.persisted.tables.remove(pos);
        let (owned, kept): (Vec<pb::Sequence>, Vec<pb::Sequence>) =
            std::mem::take(&mut inner.persisted.sequences)
                .into_iter()
                .partition(|q| q.schema == table.schema && q.owner_table == table.name);
        inner.persisted.sequences = kept;
        let mut sequences = owned;
        for q in &mut sequences {
            // Put back as it was if a rolled back block restores the table.
            if let Some((last, called)) = inner.seq_values.remove(&q.id) {
                (q.last_value, q.is_called) = (last, called);
            }
        }
        self.bump(&mut inner)?;
        tracing::info!(table = %table.name, id = table.id, "table dropped");
        Ok(pb::DropTableResponse {
            table: Some(table),
            catalog_version: inner.persisted.catalog_version,
            sequences,
        })
    }

    /// Give a new index's storage table an id and shards: as many as its
    /// table has, spread like a table's.
    fn place_index(
        inner: &mut Inner,
        schema: &str,
        ix: &mut pb::Index,
        shard_count: u32,
        factor: u32,
        engines: &[placement::Engine],
    ) -> Result<(), Error> {
        let storage = ix
            .storage
            .as_mut()
            .ok_or_else(|| Error::internal("an index without a storage table"))?;
        if storage.columns.is_empty() || storage.primary_key.is_empty() {
            return Err(Error::internal("an index storage needs columns and a key"));
        }
        storage.id = inner.new_catalog_id();
        storage.schema = schema.to_string();
        storage.name = ix.name.clone();
        storage.index_name = ix.name.clone();
        storage.shard_count = shard_count;
        (storage.placement, storage.replicas) = placement::place(
            shard_count as usize,
            factor.clamp(1, engines.len() as u32) as usize,
            engines,
            storage.id as usize,
        );
        Ok(())
    }

    /// Tables, their indexes and sequences share a namespace (PostgreSQL's
    /// relations). The indexes of table `replacing` (the one a rewrite
    /// replaces) do not count.
    fn check_relation_name(
        inner: &Inner,
        schema: &str,
        name: &str,
        replacing: u64,
    ) -> Result<(), Error> {
        Self::check_schema(inner, schema)?;
        let p = &inner.persisted;
        if p.tables
            .iter()
            .any(|t| t.schema == schema && t.name == name)
            || p.tables.iter().any(|t| {
                t.schema == schema && t.id != replacing && t.indexes.iter().any(|i| i.name == name)
            })
            || p.sequences
                .iter()
                .any(|q| q.schema == schema && q.name == name)
            || p.views.iter().any(|v| v.schema == schema && v.name == name)
        {
            return Err(Error::user(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        Ok(())
    }

    /// Add a sequence (a new id unless restored) to the state.
    fn add_sequence(
        inner: &mut Inner,
        mut q: pb::Sequence,
        schema: &str,
        restore: bool,
    ) -> pb::Sequence {
        if q.schema.is_empty() {
            q.schema = schema.to_string();
        }
        if !restore || q.id == 0 {
            q.id = inner.new_catalog_id();
            q.last_value = q.start;
            q.is_called = false;
        }
        inner.seq_values.insert(q.id, (q.last_value, q.is_called));
        inner.persisted.sequences.push(q.clone());
        q
    }

    fn create_sequence(
        &self,
        req: pb::CreateSequenceRequest,
    ) -> Result<pb::CreateSequenceResponse, Error> {
        let q = req
            .sequence
            .ok_or_else(|| Error::internal("CreateSequence without a sequence"))?;
        let schema = if q.schema.is_empty() {
            "public".to_string()
        } else {
            q.schema.clone()
        };
        let mut inner = self.inner.lock().unwrap();
        if let Some(existing) = inner
            .persisted
            .sequences
            .iter()
            .find(|x| x.schema == schema && x.name == q.name)
        {
            if req.if_not_exists {
                return Ok(pb::CreateSequenceResponse {
                    sequence: Some(existing.clone()),
                    created: false,
                });
            }
        }
        Self::check_relation_name(&inner, &schema, &q.name, 0)?;
        let q = Self::add_sequence(&mut inner, q, &schema, false);
        self.bump(&mut inner)?;
        Ok(pb::CreateSequenceResponse {
            sequence: Some(q),
            created: true,
        })
    }

    fn sequence_pos(inner: &Inner, schema: &str, name: &str) -> Result<usize, Error> {
        let schema = if schema.is_empty() { "public" } else { schema };
        inner
            .persisted
            .sequences
            .iter()
            .position(|q| q.schema == schema && q.name == name)
            .ok_or_else(|| {
                Error::user(
                    sqlstate::UNDEFINED_TABLE,
                    format!("relation \"{name}\" does not exist"),
                )
            })
    }

    fn drop_sequence(
        &self,
        req: pb::DropSequenceRequest,
    ) -> Result<pb::DropSequenceResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let pos = match Self::sequence_pos(&inner, &req.schema, &req.name) {
            Ok(pos) => pos,
            Err(_) if req.if_exists => return Ok(pb::DropSequenceResponse { sequence: None }),
            Err(_) => {
                return Err(Error::user(
                    sqlstate::UNDEFINED_TABLE,
                    format!("sequence \"{}\" does not exist", req.name),
                ));
            }
        };
        let q = inner.persisted.sequences.remove(pos);
        inner.seq_values.remove(&q.id);
        self.bump(&mut inner)?;
        Ok(pb::DropSequenceResponse { sequence: Some(q) })
    }

    /// Hand out `count` values of a sequence, persisting its state
    /// [`SEQ_WINDOW`] values ahead when it gets there.
    fn next_val(&self, req: pb::NextValRequest) -> Result<pb::NextValResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let pos = Self::sequence_pos(&inner, &req.schema, &req.name)?;
        let q = inner.persisted.sequences[pos].clone();
        let (mut last, mut called) = inner
            .seq_values
            .get(&q.id)
            .copied()
            .unwrap_or((q.start, false));
        let count = req.count.max(1) as usize;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let next = if !called {
                Some(last)
            } else {
                last.checked_add(q.increment)
                    .filter(|v| (q.min_value..=q.max_value).contains(v))
            };
            let next = match next {
                Some(v) => v,
                None if q.cycle => {
                    if q.increment > 0 {
                        q.min_value
                    } else {
                        q.max_value
                    }
                }
                None => {
                    let (which, bound) = if q.increment > 0 {
                        ("maximum", q.max_value)
                    } else {
                        ("minimum", q.min_value)
                    };
                    // What was handed out stays handed out.
                    inner.seq_values.insert(q.id, (last, called));
                    return Err(Error::user(
                        "2200H",
                        format!(
                            "nextval: reached {which} value of sequence \"{}\" ({bound})",
                            q.name
                        ),
                    ));
                }
            };
            values.push(next);
            (last, called) = (next, true);
        }
        inner.seq_values.insert(q.id, (last, true));
        let stored = &inner.persisted.sequences[pos];
        let beyond = if q.increment > 0 {
            last > stored.last_value
        } else {
            last < stored.last_value
        };
        if beyond || q.cycle || !stored.is_called {
            let ahead = last
                .saturating_add(q.increment.saturating_mul(SEQ_WINDOW - 1))
                .clamp(q.min_value, q.max_value);
            let stored = &mut inner.persisted.sequences[pos];
            stored.last_value = if q.cycle { last } else { ahead };
            stored.is_called = true;
            self.save(&mut inner)?;
        }
        Ok(pb::NextValResponse { values })
    }

    fn set_val(&self, req: pb::SetValRequest) -> Result<pb::SetValResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let pos = Self::sequence_pos(&inner, &req.schema, &req.name)?;
        let q = &inner.persisted.sequences[pos];
        if !(q.min_value..=q.max_value).contains(&req.value) {
            return Err(Error::user(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!(
                    "setval: value {} is out of bounds for sequence \"{}\" ({}..{})",
                    req.value, q.name, q.min_value, q.max_value
                ),
            ));
        }
        let id = q.id;
        inner.seq_values.insert(id, (req.value, req.is_called));
        let stored = &mut inner.persisted.sequences[pos];
        (stored.last_value, stored.is_called) = (req.value, req.is_called);
        self.save(&mut inner)?;
        Ok(pb::SetValResponse {})
    }

    fn update_table(&self, req: pb::UpdateTableRequest) -> Result<pb::UpdateTableResponse, Error> {
        let mut table = req
            .table
            .ok_or_else(|| Error::internal("UpdateTable without a table"))?;
        let mut inner = self.inner.lock().unwrap();
        let Some(pos) = inner.persisted.tables.iter().position(|t| t.id == table.id) else {
            return Err(Error::write_conflict(format!(
                "table \"{}\" was replaced meanwhile",
                table.name
            )));
        };
        let old = inner.persisted.tables[pos].clone();
        Self::fresh_enum_columns(&inner, &mut table)?;
        let types = |t: &pb::Table| -> Vec<_> {
            t.columns
                .iter()
                .map(|c| (c.r#type.clone(), c.hidden))
                .collect()
        };
        if types(&old) != types(&table)
            || old.primary_key != table.primary_key
            || old.shard_count != table.shard_count
            // (A replicated table's placement follows its shards' leaders.)
            || (old.replicas.is_empty() && old.placement != table.placement)
            || old.replicas != table.replicas
            || old.schema != table.schema
        {
            return Err(Error::internal(
                "UpdateTable cannot change how a table is stored",
            ));
        }
        if table.name != old.name {
            Self::check_relation_name(&inner, &table.schema, &table.name, table.id)?;
            Self::check_type_name(&inner, &table.schema, &table.name)?;
        }
        // Indexes are kept or dropped here, never made (they need their
        // entries written: a rewrite does that).
        for ix in &table.indexes {
            let id = ix.storage.as_ref().map_or(0, |s| s.id);
            if !old
                .indexes
                .iter()
                .any(|o| o.storage.as_ref().map_or(0, |s| s.id) == id)
            {
                return Err(Error::internal("UpdateTable cannot add an index"));
            }
        }
        let dropped: Vec<pb::Table> = old
            .indexes
            .iter()
            .filter(|o| {
                let id = o.storage.as_ref().map_or(0, |s| s.id);
                !table
                    .indexes
                    .iter()
                    .any(|i| i.storage.as_ref().map_or(0, |s| s.id) == id)
            })
            .filter_map(|o| o.storage.clone())
            .collect();
        // What stays the table's own: owner and grants change elsewhere.
        table.owner = old.owner.clone();
        table.grants = old.grants.clone();
        if table.name != old.name {
            // A rename: what refers to the table by name follows.
            let new_name = table.name.clone();
            let p = &mut inner.persisted;
            for t in p.tables.iter_mut().chain(std::iter::once(&mut table)) {
                for fk in &mut t.foreign_keys {
                    if fk.ref_schema == old.schema && fk.ref_table == old.name {
                        fk.ref_table = new_name.clone();
                    }
                }
            }
            for q in &mut p.sequences {
                if q.schema == old.schema && q.owner_table == old.name {
                    q.owner_table = new_name.clone();
                }
            }
        }
        for view in req.views {
            if let Some(v) = inner.persisted.views.iter_mut().find(|v| v.id == view.id) {
                v.query = view.query;
            }
        }
        inner.persisted.tables[pos] = table.clone();
        self.bump(&mut inner)?;
        tracing::info!(table = %table.name, id = table.id, "table changed in the catalog");
        Ok(pb::UpdateTableResponse {
            table: Some(table),
            dropped,
            catalog_version: inner.persisted.catalog_version,
        })
    }

    fn create_view(&self, req: pb::CreateViewRequest) -> Result<pb::CreateViewResponse, Error> {
        let mut view = req
            .view
            .ok_or_else(|| Error::internal("CreateView without a view"))?;
        if view.schema.is_empty() {
            view.schema = "public".into();
        }
        let mut inner = self.inner.lock().unwrap();
        let existing = inner
            .persisted
            .views
            .iter()
            .position(|v| v.schema == view.schema && v.name == view.name);
        match existing {
            Some(pos) if req.or_replace => {
                view.id = inner.persisted.views[pos].id;
                view.owner = inner.persisted.views[pos].owner.clone();
                inner.persisted.views[pos] = view.clone();
            }
            _ => {
                Self::check_relation_name(&inner, &view.schema, &view.name, 0)?;
                Self::check_type_name(&inner, &view.schema, &view.name)?;
                view.id = inner.new_catalog_id();
                inner.persisted.views.push(view.clone());
            }
        }
        self.bump(&mut inner)?;
        tracing::info!(view = %view.name, id = view.id, "view created");
        Ok(pb::CreateViewResponse {
            view: Some(view),
            catalog_version: inner.persisted.catalog_version,
        })
    }

    fn drop_view(&self, req: pb::DropViewRequest) -> Result<pb::DropViewResponse, Error> {
        let schema = schema_or_public(&req.schema);
        let mut inner = self.inner.lock().unwrap();
        let pos = inner
            .persisted
            .views
            .iter()
            .position(|v| v.schema == schema && v.name == req.name);
        let Some(pos) = pos else {
            if req.if_exists {
                return Ok(pb::DropViewResponse {
                    view: None,
                    catalog_version: inner.persisted.catalog_version,
                });
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("view \"{}\" does not exist", req.name),
            ));
        };
        let view = inner.persisted.views.remove(pos);
        self.bump(&mut inner)?;
        Ok(pb::DropViewResponse {
            view: Some(view),
            catalog_version: inner.persisted.catalog_version,
        })
    }

    fn create_schema(
        &self,
        req: pb::CreateSchemaRequest,
    ) -> Result<pb::CreateSchemaResponse, Error> {
        let mut schema = req
            .schema
            .ok_or_else(|| Error::internal("CreateSchema without a schema"))?;
        let mut inner = self.inner.lock().unwrap();
        if Self::check_schema(&inner, &schema.name).is_ok() {
            if req.if_not_exists {
                let existing = inner
                    .persisted
                    .schemas
                    .iter()
                    .find(|s| s.name == schema.name)
                    .cloned();
                return Ok(pb::CreateSchemaResponse {
                    schema: existing,
                    created: false,
                    catalog_version: inner.persisted.catalog_version,
                });
            }
            return Err(Error::user(
                sqlstate::DUPLICATE_SCHEMA,
                format!("schema \"{}\" already exists", schema.name),
            ));
        }
        if schema.name.starts_with("pg_") {
            return Err(Error::user(
                sqlstate::RESERVED_NAME,
                format!("unacceptable schema name \"{}\"", schema.name),
            ));
        }
        schema.id = inner.new_catalog_id();
        inner.persisted.schemas.push(schema.clone());
        self.bump(&mut inner)?;
        tracing::info!(schema = %schema.name, "schema created");
        Ok(pb::CreateSchemaResponse {
            schema: Some(schema),
            created: true,
            catalog_version: inner.persisted.catalog_version,
        })
    }

    fn drop_schema(&self, req: pb::DropSchemaRequest) -> Result<pb::DropSchemaResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let Some(pos) = inner
            .persisted
            .schemas
            .iter()
            .position(|s| s.name == req.name)
        else {
            if req.if_exists {
                return Ok(pb::DropSchemaResponse {
                    schema: None,
                    catalog_version: inner.persisted.catalog_version,
                });
            }
            if req.name == "public" {
                return Err(Error::unsupported("dropping schema public"));
            }
            return Err(Error::user(
                sqlstate::INVALID_SCHEMA_NAME,
                format!("schema \"{}\" does not exist", req.name),
            ));
        };
        let p = &inner.persisted;
        if p.tables.iter().any(|t| t.schema == req.name)
            || p.views.iter().any(|v| v.schema == req.name)
            || p.sequences.iter().any(|q| q.schema == req.name)
            || p.types.iter().any(|t| t.schema == req.name)
        {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop schema {} because other objects depend on it",
                    req.name
                ),
            ));
        }
        let schema = inner.persisted.schemas.remove(pos);
        self.bump(&mut inner)?;
        Ok(pb::DropSchemaResponse {
            schema: Some(schema),
            catalog_version: inner.persisted.catalog_version,
        })
    }

    /// `schema` exists: `public`, a session's temporary one, or made by
    /// CREATE SCHEMA (3F000 otherwise).
    fn check_schema(inner: &Inner, schema: &str) -> Result<(), Error> {
        if eon_common::schema::is_implied_schema(schema)
            || inner.persisted.schemas.iter().any(|s| s.name == schema)
        {
            return Ok(());
        }
        Err(Error::user(
            sqlstate::INVALID_SCHEMA_NAME,
            format!("schema \"{schema}\" does not exist"),
        ))
    }

    fn swap_table(&self, req: pb::SwapTableRequest) -> Result<pb::SwapTableResponse, Error> {
        let schema = schema_or_public(&req.schema);
        let mut inner = self.inner.lock().unwrap();
        let tables = &mut inner.persisted.tables;
        let find = |name: &str| {
            tables
                .iter()
                .position(|t| t.schema == schema && t.name == name)
        };
        let (Some(old), Some(new)) = (find(&req.name), find(&req.new_name)) else {
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{}\" does not exist", req.name),
            ));
        };
        if tables[old].id != req.old_id {
            return Err(Error::write_conflict(format!(
                "table \"{}\" was replaced meanwhile",
                req.name
            )));
        }
        tables[new].name = req.name.clone();
        // The replacement is the same table to its users: same owner, and
        // the grants as they are now.
        tables[new].owner = tables[old].owner.clone();
        tables[new].grants = tables[old].grants.clone();
        // It takes the old one's place among its parent's partitions, and
        // its own partitions now belong to it.
        tables[new].partition_of = tables[old].partition_of.clone();
        let (old_id, new_id) = (tables[old].id, tables[new].id);
        for t in tables.iter_mut() {
            if let Some(b) = t.partition_of.as_mut().filter(|b| b.parent == old_id) {
                b.parent = new_id;
            }
        }
        let table = tables[new].clone();
        let old = tables.remove(old);
        self.bump(&mut inner)?;
        tracing::info!(table = %table.name, old = old.id, id = table.id, "table replaced");
        Ok(pb::SwapTableResponse {
            old: Some(old),
            table: Some(table),
            catalog_version: inner.persisted.catalog_version,
        })
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// A request's schema: the one named, or `public`.
fn schema_or_public(schema: &str) -> &str {
    if schema.is_empty() { "public" } else { schema }
}

impl MetaService {
    /// Answer a request with `f`'s result, counted in the statistics, once
    /// what `f` changed is committed.
    async fn counted<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Reply<T> {
        let r = self.stats.start();
        let out = f().map_err(Status::from)?;
        self.commit().await.map_err(Status::from)?;
        r.ok();
        Ok(Response::new(out))
    }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Reply<pb::RegisterNodeResponse> {
        let req_guard = self.stats.start();
        let node = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("node missing"))?;
        tracing::info!(kind = node.kind, id = node.id, addr = %node.grpc_address, "node registered");
        let current_ts = self.next_ts().map_err(Status::from)?.0;
        {
            let mut inner = self.inner.lock().unwrap();
            inner
                .nodes
                .insert((node.kind, node.id), (node.clone(), unix_ms()));
            let known = &mut inner.persisted.nodes;
            known.retain(|n| (n.kind, n.id) != (node.kind, node.id));
            known.push(node);
            self.save(&mut inner).map_err(Status::from)?;
        }
        self.commit().await.map_err(Status::from)?;
        req_guard.ok();
        Ok(Response::new(pb::RegisterNodeResponse { current_ts }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Reply<pb::HeartbeatResponse> {
        let req = req.into_inner();
        let mut inner = self.inner.lock().unwrap();
        let known = match inner.nodes.get_mut(&(req.kind, req.id)) {
            Some(entry) => {
                entry.1 = unix_ms();
                true
            }
            None => false,
        };
        let mut changed = false;
        for l in &req.leading {
            let now = (req.id, l.term);
            match inner.leaders.get(&(l.table, l.shard)) {
                Some(&(engine, term)) if engine == req.id || term > l.term => {}
                _ => {
                    inner.leaders.insert((l.table, l.shard), now);
                    changed = true;
                }
            }
        }
        if changed {
            inner.leaders_version = (inner.leaders_version + 1).max(unix_ms() as u64);
        }
        Ok(Response::new(pb::HeartbeatResponse {
            known,
            catalog_version: inner.persisted.catalog_version,
        }))
    }

    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Reply<pb::ListNodesResponse> {
        let inner = self.inner.lock().unwrap();
        let now = unix_ms();
        let mut nodes: Vec<pb::NodeInfo> = inner
            .nodes
            .values()
            .map(|(n, seen)| {
                let mut n = n.clone();
                n.last_heartbeat_unix_ms = *seen;
                n.up = now - seen <= NODE_TIMEOUT.as_millis() as i64;
                n.draining = inner.persisted.draining.contains(&n.id)
                    && n.kind == pb::NodeKind::DataEngine as i32;
                n
            })
            .collect();
        nodes.sort_by_key(|n| (n.kind, n.id));
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn create_table(
        &self,
        req: Request<pb::CreateTableRequest>,
    ) -> Reply<pb::CreateTableResponse> {
        self.counted(|| self.create_table(req.into_inner())).await
    }

    async fn drop_table(&self, req: Request<pb::DropTableRequest>) -> Reply<pb::DropTableResponse> {
        self.counted(|| self.drop_table(req.into_inner())).await
    }

    async fn create_sequence(
        &self,
        req: Request<pb::CreateSequenceRequest>,
    ) -> Reply<pb::CreateSequenceResponse> {
        self.counted(|| self.create_sequence(req.into_inner()))
            .await
    }

    async fn drop_sequence(
        &self,
        req: Request<pb::DropSequenceRequest>,
    ) -> Reply<pb::DropSequenceResponse> {
        self.counted(|| self.drop_sequence(req.into_inner())).await
    }

    async fn next_val(&self, req: Request<pb::NextValRequest>) -> Reply<pb::NextValResponse> {
        self.counted(|| self.next_val(req.into_inner())).await
    }

    async fn set_val(&self, req: Request<pb::SetValRequest>) -> Reply<pb::SetValResponse> {
        self.counted(|| self.set_val(req.into_inner())).await
    }

    async fn swap_table(&self, req: Request<pb::SwapTableRequest>) -> Reply<pb::SwapTableResponse> {
        self.counted(|| self.swap_table(req.into_inner())).await
    }

    async fn update_table(
        &self,
        req: Request<pb::UpdateTableRequest>,
    ) -> Reply<pb::UpdateTableResponse> {
        self.counted(|| self.update_table(req.into_inner())).await
    }

    async fn create_view(
        &self,
        req: Request<pb::CreateViewRequest>,
    ) -> Reply<pb::CreateViewResponse> {
        self.counted(|| self.create_view(req.into_inner())).await
    }

    async fn drop_view(&self, req: Request<pb::DropViewRequest>) -> Reply<pb::DropViewResponse> {
        self.counted(|| self.drop_view(req.into_inner())).await
    }

    async fn create_schema(
        &self,
        req: Request<pb::CreateSchemaRequest>,
    ) -> Reply<pb::CreateSchemaResponse> {
        self.counted(|| self.create_schema(req.into_inner())).await
    }

    async fn drop_schema(
        &self,
        req: Request<pb::DropSchemaRequest>,
    ) -> Reply<pb::DropSchemaResponse> {
        self.counted(|| self.drop_schema(req.into_inner())).await
    }

    async fn create_type(
        &self,
        req: Request<pb::CreateTypeRequest>,
    ) -> Reply<pb::CreateTypeResponse> {
        self.counted(|| self.create_type(req.into_inner())).await
    }

    async fn alter_type(&self, req: Request<pb::AlterTypeRequest>) -> Reply<pb::AlterTypeResponse> {
        self.counted(|| self.alter_type(req.into_inner())).await
    }

    async fn drop_type(&self, req: Request<pb::DropTypeRequest>) -> Reply<pb::DropTypeResponse> {
        self.counted(|| self.drop_type(req.into_inner())).await
    }

    async fn create_role(
        &self,
        req: Request<pb::CreateRoleRequest>,
    ) -> Reply<pb::CreateRoleResponse> {
        self.counted(|| self.create_role(req.into_inner())).await
    }

    async fn alter_role(&self, req: Request<pb::AlterRoleRequest>) -> Reply<pb::AlterRoleResponse> {
        self.counted(|| self.alter_role(req.into_inner())).await
    }

    async fn drop_role(&self, req: Request<pb::DropRoleRequest>) -> Reply<pb::DropRoleResponse> {
        self.counted(|| self.drop_role(req.into_inner())).await
    }

    async fn set_table_grants(
        &self,
        req: Request<pb::SetTableGrantsRequest>,
    ) -> Reply<pb::SetTableGrantsResponse> {
        self.counted(|| self.set_table_grants(req.into_inner()))
            .await
    }

    async fn move_replica(
        &self,
        req: Request<pb::MoveReplicaRequest>,
    ) -> Reply<pb::MoveReplicaResponse> {
        self.counted(|| self.move_replica(req.into_inner())).await
    }

    async fn drain_data_engine(
        &self,
        req: Request<pb::DrainDataEngineRequest>,
    ) -> Reply<pb::DrainDataEngineResponse> {
        self.counted(|| self.drain(req.into_inner())).await
    }

    async fn get_catalog(
        &self,
        _req: Request<pb::GetCatalogRequest>,
    ) -> Reply<pb::GetCatalogResponse> {
        let inner = self.inner.lock().unwrap();
        // Route to the shards' leaders: each placement[i] becomes shard i's
        // current leader, when meta knows one among its replicas.
        let lead = |t: &mut pb::Table| {
            for (i, r) in t.replicas.iter().enumerate() {
                if let Some(&(engine, _)) = inner.leaders.get(&(t.id, i as u32))
                    && r.engines.contains(&engine)
                    && let Some(p) = t.placement.get_mut(i)
                {
                    *p = engine;
                }
            }
        };
        let mut tables = inner.persisted.tables.clone();
        for_each_stored_table(&mut tables, lead);
        Ok(Response::new(pb::GetCatalogResponse {
            version: inner.persisted.catalog_version,
            leaders_version: inner.leaders_version,
            tables,
            sequences: inner.persisted.sequences.clone(),
            roles: inner.persisted.roles.clone(),
            views: inner.persisted.views.clone(),
            schemas: inner.persisted.schemas.clone(),
            types: inner.persisted.types.clone(),
        }))
    }

    async fn get_timestamp(
        &self,
        req: Request<pb::GetTimestampRequest>,
    ) -> Reply<pb::GetTimestampResponse> {
        let r = self.stats.start();
        let count = req.into_inner().count.clamp(1, 100_000) as u64;
        let (ts, catalog_version, leaders_version) =
            self.next_ts_block(count).map_err(Status::from)?;
        self.commit().await.map_err(Status::from)?;
        r.ok();
        Ok(Response::new(pb::GetTimestampResponse {
            ts,
            catalog_version,
            leaders_version,
        }))
    }

    async fn allocate_ids(
        &self,
        req: Request<pb::AllocateIdsRequest>,
    ) -> Reply<pb::AllocateIdsResponse> {
        let count = req.into_inner().count.clamp(1, 1_000_000);
        let start = self.alloc_ids(count).map_err(Status::from)?;
        self.commit().await.map_err(Status::from)?;
        Ok(Response::new(pb::AllocateIdsResponse { start, count }))
    }

    async fn stats(&self, _req: Request<pb::StatsRequest>) -> Reply<pb::Stats> {
        Ok(Response::new(self.stats_snapshot()))
    }

    async fn report_stats(
        &self,
        req: Request<pb::ReportStatsRequest>,
    ) -> Reply<pb::ReportStatsResponse> {
        let now = eon_common::unix_ms();
        let oldest = now - HISTORY_WINDOW.as_millis() as i64;
        let own = self.stats_snapshot();
        let mut h = self.history.lock().unwrap();
        h.push_back(pb::StatsSample {
            at_unix_ms: now,
            instance: "meta".into(),
            stats: Some(own),
        });
        h.extend(req.into_inner().samples);
        while h.front().is_some_and(|s| s.at_unix_ms < oldest) || h.len() > HISTORY_MAX_SAMPLES {
            h.pop_front();
        }
        Ok(Response::new(pb::ReportStatsResponse {}))
    }

    async fn stats_history(
        &self,
        req: Request<pb::StatsHistoryRequest>,
    ) -> Reply<pb::StatsHistoryResponse> {
        let req = req.into_inner();
        let h = self.history.lock().unwrap();
        let samples = h
            .iter()
            .filter(|s| {
                s.at_unix_ms >= req.since_unix_ms
                    && (req.instance.is_empty() || s.instance == req.instance)
            })
            .cloned()
            .collect();
        Ok(Response::new(pb::StatsHistoryResponse {
            samples,
            window_ms: HISTORY_WINDOW.as_millis() as u64,
        }))
    }
}

impl MetaService {
    /// Meta's statistics (the `Stats` RPC and `GET /metrics`).
    pub fn stats_snapshot(&self) -> pb::Stats {
        let bytes = ["raft/log", "raft/snapshots"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.dir.join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        let mut s = self.stats.snapshot(bytes);
        {
            let m = self.repl.raft.metrics();
            let m = m.borrow();
            s.counters
                .insert("raft_leader".into(), self.serving() as u64);
            s.counters.insert("raft_term".into(), m.current_term);
            s.counters.insert(
                "raft_applied".into(),
                m.last_applied.map(|l| l.index).unwrap_or(0),
            );
        }
        let inner = self.inner.lock().unwrap();
        s.counters
            .insert("tables".into(), inner.persisted.tables.len() as u64);
        s.counters
            .insert("catalog_version".into(), inner.persisted.catalog_version);
        s.counters.insert("nodes".into(), inner.nodes.len() as u64);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> pb::Table {
        eon_common::TableDef::new_proto(
            "public",
            name,
            vec![eon_common::schema::ColumnDef {
                name: "id".into(),
                ty: eon_common::SqlType::Int4,
                nullable: false,
                default_sql: None,
                hidden: false,
            }],
            vec![0],
            0,
        )
    }

    /// A single replica in `dir`, leading.
    async fn open(dir: &std::path::Path) -> Arc<MetaService> {
        let meta = MetaService::start(&ReplicaOptions {
            dir: dir.to_path_buf(),
            id: 1,
            members: BTreeMap::from([(1, "127.0.0.1:1".to_string())]),
            admin: None,
        })
        .await
        .unwrap();
        assert!(meta.until_serving(Duration::from_secs(10)).await);
        meta
    }

    /// Create `t` as a plain CREATE TABLE does.
    fn create(meta: &MetaService, t: pb::Table) -> Result<pb::CreateTableResponse, Error> {
        meta.create_table(pb::CreateTableRequest {
            table: Some(t),
            if_not_exists: false,
            restore: false,
            sequences: vec![],
            replaces: 0,
        })
    }

    fn register(meta: &MetaService, id: u64) {
        register_on(meta, id, "127.0.0.1");
    }

    fn register_on(meta: &MetaService, id: u64, host: &str) {
        meta.inner.lock().unwrap().nodes.insert(
            (pb::NodeKind::DataEngine as i32, id),
            (
                pb::NodeInfo {
                    kind: pb::NodeKind::DataEngine as i32,
                    id,
                    grpc_address: format!("{host}:{}", 5000 + id),
                    ..Default::default()
                },
                unix_ms(),
            ),
        );
    }

    #[tokio::test]
    async fn tables_and_timestamps_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let last_ts;
        {
            let meta = open(dir.path()).await;
            assert_eq!(
                meta.create_table(pb::CreateTableRequest {
                    table: Some(table("t")),
                    if_not_exists: false,
                    restore: false,
                    sequences: vec![],
                    replaces: 0,
                })
                .unwrap_err()
                .code,
                sqlstate::CANNOT_CONNECT_NOW,
                "no data engine: unavailable"
            );
            register(&meta, 1);
            register(&meta, 2);
            let t = meta
                .create_table(pb::CreateTableRequest {
                    table: Some(table("t")),
                    if_not_exists: false,
                    restore: false,
                    sequences: vec![],
                    replaces: 0,
                })
                .unwrap()
                .table
                .unwrap();
            assert_eq!(t.shard_count, 8);
            assert_eq!(t.placement.iter().filter(|&&e| e == 1).count(), 4);
            let dup = meta.create_table(pb::CreateTableRequest {
                table: Some(table("t")),
                if_not_exists: false,
                restore: false,
                sequences: vec![],
                replaces: 0,
            });
            assert_eq!(dup.unwrap_err().code, sqlstate::DUPLICATE_TABLE);
            let again = meta
                .create_table(pb::CreateTableRequest {
                    table: Some(table("t")),
                    if_not_exists: true,
                    restore: false,
                    sequences: vec![],
                    replaces: 0,
                })
                .unwrap();
            assert!(!again.created);
            let mut prev = 0;
            for _ in 0..1000 {
                let (ts, _) = meta.next_ts().unwrap();
                assert!(ts > prev);
                prev = ts;
            }
            last_ts = prev;
            meta.commit().await.unwrap();
            meta.shutdown().await;
        }
        let meta = open(dir.path()).await;
        assert!(meta.next_ts().unwrap().0 > last_ts);
        let inner = meta.inner.lock().unwrap();
        assert_eq!(inner.persisted.tables.len(), 1);
        drop(inner);
        let dropped = meta
            .drop_table(pb::DropTableRequest {
                schema: "".into(),
                name: "t".into(),
                if_exists: false,
            })
            .unwrap();
        assert_eq!(dropped.table.unwrap().name, "t");
        let missing = meta.drop_table(pb::DropTableRequest {
            schema: "".into(),
            name: "t".into(),
            if_exists: false,
        });
        assert_eq!(missing.unwrap_err().code, sqlstate::UNDEFINED_TABLE);
    }

    #[tokio::test]
    async fn indexes_get_storage_share_names_and_drop_in_the_catalog_alone() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path()).await;
        register(&meta, 1);
        let create = |t: pb::Table, replaces: u64| {
            meta.create_table(pb::CreateTableRequest {
                table: Some(t),
                if_not_exists: false,
                restore: false,
                sequences: vec![],
                replaces,
            })
        };
        let mut t = table("t");
        t.indexes.push(pb::Index {
            name: "t_id_key".into(),
            columns: vec![0],
            unique: true,
            constraint: true,
            storage: Some(table("")),
        });
        let t = create(t, 0).unwrap().table.unwrap();
        let storage = t.indexes[0].storage.clone().unwrap();
        assert!(storage.id > t.id);
        assert_eq!(
            (storage.name.as_str(), storage.index_name.as_str()),
            ("t_id_key", "t_id_key")
        );
        assert_eq!(storage.placement.len(), t.shard_count as usize);
        // Index names are relation names...
        assert_eq!(
            create(table("t_id_key"), 0).unwrap_err().code,
            sqlstate::DUPLICATE_TABLE
        );
        // ...except for the table a rewrite replaces.
        let mut copy = t.clone();
        copy.name = "t$rewrite".into();
        assert!(create(copy.clone(), t.id).is_ok());
        // UpdateTable drops an index, hands back its storage, and refuses
        // to change how rows are stored.
        let mut changed = t.clone();
        changed.indexes.clear();
        let r = meta
            .update_table(pb::UpdateTableRequest {
                table: Some(changed.clone()),
                views: vec![],
            })
            .unwrap();
        assert_eq!(r.dropped, vec![storage]);
        assert!(r.table.unwrap().indexes.is_empty());
        changed.primary_key = vec![];
        assert!(
            meta.update_table(pb::UpdateTableRequest {
                table: Some(changed),
                views: vec![],
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn shards_get_copies_on_different_hosts_and_engines() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path()).await;
        let create = |t: pb::Table| create(&meta, t);
        register_on(&meta, 1, "10.0.0.1");
        register_on(&meta, 2, "10.0.0.1");
        // Two engines: one copy by default, and three cannot be had.
        let one = create(table("one")).unwrap().table.unwrap();
        assert!(one.replicas.iter().all(|r| r.engines.len() == 1));
        let mut three = table("three");
        three.replication = 3;
        let refused = create(three.clone()).unwrap_err();
        assert_eq!(refused.code, sqlstate::INVALID_PARAMETER_VALUE);
        assert!(
            refused.message.contains("needs 3 data engines"),
            "{refused:?}"
        );
        // A third engine on another host: three copies, on both hosts, each
        // shard's engine first.
        register_on(&meta, 3, "10.0.0.2");
        let mut t = table("t");
        t.replication = 3;
        t.indexes.push(pb::Index {
            name: "t_id_key".into(),
            columns: vec![0],
            unique: true,
            constraint: true,
            storage: Some(table("")),
        });
        let t = create(t).unwrap().table.unwrap();
        assert_eq!(t.replicas.len(), t.shard_count as usize);
        for (i, r) in t.replicas.iter().enumerate() {
            assert_eq!(r.engines[0], t.placement[i]);
            let mut ids = r.engines.clone();
            ids.sort();
            assert_eq!(ids, vec![1, 2, 3]);
        }
        let storage = t.indexes[0].storage.as_ref().unwrap();
        assert!(storage.replicas.iter().all(|r| r.engines.len() == 3));
        // Asked for one copy: one.
        let mut single = table("single");
        single.replication = 1;
        let single = create(single).unwrap().table.unwrap();
        assert!(single.replicas.iter().all(|r| r.engines.len() == 1));
    }

    #[tokio::test]
    async fn a_copy_moves_with_its_colocated_shards_and_bad_moves_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path()).await;
        for id in 1..=4 {
            register(&meta, id);
        }
        let create = |t: pb::Table| create(&meta, t).unwrap().table.unwrap();
        let mut a = table("a");
        a.replication = 3;
        let a = create(a);
        let mut b = table("b");
        b.colocated_with = a.id;
        let b = create(b);
        let mut one = table("one");
        one.replication = 1;
        let one = create(one);
        let list = a.replicas[2].engines.clone();
        let to = (1..=4).find(|e| !list.contains(e)).unwrap();
        let mv = |table: u64, from: u64, to: u64| {
            meta.move_replica(pb::MoveReplicaRequest {
                table,
                shard: 2,
                from,
                to,
            })
        };
        let moved = mv(a.id, list[1], to).unwrap();
        let copies = moved.replicas.unwrap();
        assert_eq!(copies.generation, 1);
        assert!(copies.engines.contains(&to) && !copies.engines.contains(&list[1]));
        assert_eq!(moved.also_moved, vec![b.id]);
        let inner = meta.inner.lock().unwrap();
        let now = |id: u64| {
            inner
                .persisted
                .tables
                .iter()
                .find(|t| t.id == id)
                .unwrap()
                .replicas[2]
                .clone()
        };
        assert_eq!(now(a.id), copies);
        assert_eq!(now(b.id), copies);
        drop(inner);
        // Refused: no copy there, a copy there already, one copy only, an
        // engine that is not up, a shard that does not exist.
        let code = |r: Result<pb::MoveReplicaResponse, Error>| r.unwrap_err().code;
        assert_eq!(
            code(mv(a.id, list[1], to)),
            sqlstate::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(mv(a.id, to, list[0])),
            sqlstate::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(mv(one.id, one.replicas[2].engines[0], to)),
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE
        );
        let refused = mv(a.id, to, 9).unwrap_err();
        assert!(refused.message.contains("not up"), "{refused:?}");
        let far = meta.move_replica(pb::MoveReplicaRequest {
            table: a.id,
            shard: 99,
            from: 1,
            to: 2,
        });
        assert_eq!(code(far), sqlstate::INVALID_PARAMETER_VALUE);
    }

    #[tokio::test]
    async fn a_lost_engines_copies_go_to_engines_that_are_up() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path()).await;
        for id in 1..=4 {
            register(&meta, id);
        }
        let mut t = table("t");
        t.replication = 3;
        let t = create(&meta, t).unwrap().table.unwrap();
        let on_3 = t.replicas.iter().filter(|r| r.engines.contains(&3)).count();
        assert!(on_3 > 0);
        // Nobody lost yet.
        assert!(meta.replace_lost(Duration::from_secs(10)).is_empty());
        // Engine 3 silent for a minute.
        let version = meta.inner.lock().unwrap().persisted.catalog_version;
        meta.inner
            .lock()
            .unwrap()
            .nodes
            .get_mut(&(pb::NodeKind::DataEngine as i32, 3))
            .unwrap()
            .1 -= 60_000;
        let made = meta.replace_lost(Duration::from_secs(10));
        assert_eq!(made.len(), on_3);
        assert!(
            made.iter()
                .all(|(id, _, lost, _)| *id == t.id && *lost == 3)
        );
        let inner = meta.inner.lock().unwrap();
        assert!(inner.persisted.catalog_version > version);
        let now = &inner.persisted.tables[0];
        for (i, r) in now.replicas.iter().enumerate() {
            let mut ids = r.engines.clone();
            ids.sort();
            assert_eq!(ids, vec![1, 2, 4], "shard {i}");
            let changed = t.replicas[i].engines.contains(&3);
            assert_eq!(r.generation, changed as u32, "shard {i}");
            assert_ne!(now.placement[i], 3);
        }
        drop(inner);
        // Done once.
        assert!(meta.replace_lost(Duration::from_secs(10)).is_empty());
    }
}

#[derive(Debug, Clone)]
pub struct MetaOptions {
    pub dir: PathBuf,
    pub listen: String,
    /// 0: a free port (a single replica only).
    pub port: u16,
    /// The admin's name and the file holding its password (see
    /// [`MetaService::ensure_admin`]); none: roles are left as they are.
    pub admin: Option<(String, PathBuf)>,
    /// This replica's id, and every replica's address (host:port) by id;
    /// empty: meta runs as one replica, id 1, on `listen`:`port`.
    pub replica: u64,
    pub peers: BTreeMap<u64, String>,
    /// A data engine not heard from for this long is lost: its shard
    /// copies are rebuilt on other engines.
    pub replace_after: Duration,
}

/// What [`MetaService::start`] needs to know about its replica.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    pub dir: PathBuf,
    pub id: u64,
    /// Every replica's address (host:port) by id, this one's included.
    pub members: BTreeMap<u64, String>,
    /// The admin's name and password, made sure of by each new leader.
    pub admin: Option<(String, String)>,
}

/// Run `eon meta` until SIGTERM/SIGINT.
pub async fn run(opts: MetaOptions) -> Result<(), Error> {
    eon_common::stall::watch("meta");
    std::fs::create_dir_all(&opts.dir)?;
    let _lock = eon_common::node::lock_dir(&opts.dir)?;
    let admin = match &opts.admin {
        Some((name, file)) => {
            let password = eon_common::scram::read_password(file)
                .map_err(|e| Error::internal(format!("cannot read {}: {e}", file.display())))?;
            Some((name.clone(), password))
        }
        None => None,
    };
    let (listener, addr) = eon_common::node::bind(&opts.listen, opts.port).await?;
    let (id, members) = if opts.peers.is_empty() {
        (1, BTreeMap::from([(1, addr.to_string())]))
    } else {
        if !opts.peers.contains_key(&opts.replica) {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("replica {} is not among the peers", opts.replica),
            ));
        }
        (opts.replica, opts.peers.clone())
    };
    let service = MetaService::start(&ReplicaOptions {
        dir: opts.dir.clone(),
        id,
        members,
        admin,
    })
    .await?;
    service.replace_lost_engines(opts.replace_after);
    tracing::info!(%addr, replica = id, "meta serving");
    let metrics = service.clone();
    let raft = service.raft_service();
    let meta = eon_common::node::guarded(replication::LeaderOnly::new(
        MetaServer::from_arc(service.clone()),
        service.clone(),
    ));
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(eon_common::node::metrics_routes(move || {
            metrics.stats_snapshot()
        }))
        .add_service(meta)
        .add_service(eon_common::node::guarded(raft))
        .serve_with_incoming_shutdown(
            eon_common::node::incoming(listener),
            eon_common::node::shutdown_signal(),
        );
    // Ready once serving: a single replica as soon as it leads; one of
    // several at once (its peers may not be up yet, and it forwards).
    let announce = async {
        if service.repl.members.len() == 1 {
            service.until_serving(Duration::from_secs(30)).await;
        }
        eon_common::node::announce_ready(&[("grpc", addr.to_string())]);
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = server => r.map_err(|e| Error::internal(format!("gRPC server: {e}")))?,
        _ = announce => {}
    }
    service.shutdown().await;
    tracing::info!("meta stopped");
    Ok(())
}
