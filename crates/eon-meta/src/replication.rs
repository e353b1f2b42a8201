//! Meta as a Raft group: one replica, or three (`eon up --meta 3`).
//!
//! Meta's durable state ([`Persisted`]: the catalog, the limits of the
//! timestamp and id allocators, sequences, roles) is the state machine of
//! the Raft group [`META_GROUP`](eon_raft::META_GROUP). Every change is one
//! log entry carrying the whole new state (the catalog is small, so this is
//! simpler than a command per kind of change and cannot drift between
//! replicas); a change is answered only once a majority has the entry.
//!
//! **The leader serves, the others forward.** Only the leader runs the RPCs
//! that read or change the catalog, hand out timestamps and track nodes; its
//! working state ([`Inner`](super::Inner)) is the committed state plus what
//! needs no log (the last timestamp handed out, heartbeats). A follower
//! passes each request on to the leader ([`LeaderOnly`]), so any replica's
//! address works, and a client that lists all of them
//! (`eon_common::node::Failover`) finds one that answers.
//!
//! **Changes.** An RPC changes `Inner` under its lock, which bumps
//! `version`; before answering it calls [`MetaService::commit`], which
//! proposes the state as of the newest version unless a proposal covering
//! its version is already committed. Proposals go one at a time, each
//! carrying every change made while the previous was in flight. A
//! timestamp handed out below a raised limit waits for the raise to commit,
//! so a new leader, which starts at the committed limit, never repeats one.
//!
//! **A new leader** first makes sure it has applied everything committed
//! (`ensure_linearizable`), then rebuilds `Inner` from the state machine
//! (registered nodes count as just seen), commits that state once (so the
//! log holds it even if it came from an old `meta.pb`), and only then
//! serves.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eon_common::Error;
use eon_raft::openraft::ServerState;
use prost::Message;
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::{MetaService, Persisted};

/// The state machine: meta's durable state, replaced whole by each entry.
#[derive(Default)]
pub struct MetaState(pub Persisted);

impl eon_raft::Machine for MetaState {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        match Persisted::decode(command) {
            Ok(state) => self.0 = state,
            // Every replica decodes the same bytes the same way, so they
            // stay equal even then; the leader wrote these bytes itself.
            Err(e) => tracing::error!("undecodable meta state in the log: {e}"),
        }
        Vec::new()
    }

    fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.0.encode_to_vec())
    }

    fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        self.0 = Persisted::decode(bytes.as_slice()).map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// This replica's part in the group.
pub struct Replication {
    pub(crate) id: u64,
    pub(crate) node: Arc<eon_raft::Node>,
    pub(crate) raft: eon_raft::Raft,
    pub(crate) replica: eon_raft::Replica<MetaState>,
    /// Members (id → host:port), to tell a follower where the leader is.
    pub(crate) members: BTreeMap<u64, String>,
    /// One proposal at a time (see the module docs).
    pub(crate) proposing: tokio::sync::Mutex<()>,
    /// This replica is the leader and has rebuilt its working state.
    pub(crate) ready: AtomicBool,
}

impl Replication {
    /// The leader's address (host:port), if one is known and it is not
    /// this replica.
    fn leader_elsewhere(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        if leader == self.id {
            return None;
        }
        self.members.get(&leader).cloned()
    }

    /// The leader's address as this replica knows it (its own included).
    fn leader(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.members.get(&leader).cloned()
    }

    /// Resolves when `addr` is no longer the leader this replica knows
    /// (it stopped beating and an election began, or another replica won).
    async fn no_longer_leads(&self, addr: &str) {
        let mut metrics = self.raft.metrics();
        loop {
            let leads = metrics
                .borrow_and_update()
                .current_leader
                .and_then(|l| self.members.get(&l))
                .is_some_and(|a| a == addr);
            if !leads || metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// The new leader's address, once one other than `old` is known
    /// (waiting up to `wait`).
    async fn new_leader(&self, old: &str, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(addr) = self.leader().filter(|a| a != old) {
                return Some(addr);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }
}

impl MetaService {
    /// Make the changes made so far durable on a majority of replicas.
    pub async fn commit(&self) -> Result<(), Error> {
        let wanted = self.inner.lock().unwrap().version;
        if self.inner.lock().unwrap().durable >= wanted {
            return Ok(());
        }
        let _one_at_a_time = self.repl.proposing.lock().await;
        let (state, version) = {
            let inner = self.inner.lock().unwrap();
            if inner.durable >= wanted {
                return Ok(());
            }
            (inner.persisted.encode_to_vec(), inner.version)
        };
        self.repl
            .raft
            .client_write(state)
            .await
            .map_err(|e| Error::unavailable(format!("meta could not replicate the change: {e}")))?;
        let mut inner = self.inner.lock().unwrap();
        inner.durable = inner.durable.max(version);
        Ok(())
    }

    /// Is this replica serving (the leader, ready)?
    pub fn serving(&self) -> bool {
        self.repl.ready.load(Ordering::Acquire)
    }

    /// Watch leadership for as long as the process runs: become ready on
    /// winning an election, stop serving on losing it.
    pub(crate) fn watch_leadership(self: &Arc<Self>, admin: Option<(String, String)>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut metrics = me.repl.raft.metrics();
            loop {
                if me.repl.is_leader() {
                    if !me.serving() {
                        match me.take_over(admin.as_ref()).await {
                            Ok(()) => tracing::info!(id = me.repl.id, "meta replica leads"),
                            Err(e) => {
                                // Try again while it still leads.
                                tracing::warn!("taking over as meta leader failed: {e}");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        }
                    }
                } else if me.repl.ready.swap(false, Ordering::AcqRel) {
                    tracing::info!(id = me.repl.id, "meta replica no longer leads");
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Rebuild the working state from the committed state and start serving.
    async fn take_over(&self, admin: Option<&(String, String)>) -> Result<(), Error> {
        self.repl
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| Error::unavailable(format!("meta leadership: {e}")))?;
        let committed = self.repl.replica.read(|m| m.0.clone());
        {
            // (A group whose log holds no state yet has the state machine
            // it was started with: a `meta.pb` from before replication, or
            // an empty one.)
            let mut inner = self.inner.lock().unwrap();
            inner.reset(committed);
            inner.version += 1;
        }
        if let Some((name, password)) = admin {
            self.ensure_admin(name, password)?;
        }
        self.commit().await?;
        self.retire_old_file();
        if self.repl.is_leader() {
            self.repl.ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Once the log holds meta's state, a `meta.pb` from before replication
    /// is out of date: rename it so nobody mistakes it for the truth.
    fn retire_old_file(&self) {
        let old = self.dir.join(crate::state::FILE);
        if old.exists() {
            let _ = std::fs::rename(&old, old.with_extension("pb.before-raft"));
        }
    }
}

/// Meta's gRPC service as a replica serves it: the leader handles requests,
/// a follower forwards them to the leader (all but `Stats`, which is about
/// the replica itself). While no leader is known, requests wait up to
/// [`LEADER_WAIT`], then fail UNAVAILABLE.
#[derive(Clone)]
pub struct LeaderOnly<S> {
    inner: S,
    meta: Arc<MetaService>,
    channels: Arc<std::sync::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>>,
}

/// How long a request waits for a leader to be elected (less than a
/// client waits for an answer, [`eon_common::node::REPLICA_TIMEOUT`]).
const LEADER_WAIT: Duration = Duration::from_millis(1500);

impl<S> LeaderOnly<S> {
    pub fn new(inner: S, meta: Arc<MetaService>) -> LeaderOnly<S> {
        LeaderOnly {
            inner,
            meta,
            channels: Default::default(),
        }
    }

    fn channel(&self, addr: &str) -> Option<tonic::transport::Channel> {
        let mut channels = self.channels.lock().unwrap();
        if let Some(c) = channels.get(addr) {
            return Some(c.clone());
        }
        let c = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(eon_common::node::REPLICA_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Some(c)
    }
}

impl<S: NamedService> NamedService for LeaderOnly<S> {
    const NAME: &'static str = S::NAME;
}

type Body = tonic::body::Body;

impl<S> tonic::codegen::Service<http::Request<Body>> for LeaderOnly<S>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path().ends_with("/Stats") {
                return inner.call(req).await;
            }
            let deadline = tokio::time::Instant::now() + LEADER_WAIT;
            loop {
                if this.meta.serving() {
                    return inner.call(req).await;
                }
                if let Some(addr) = this.meta.repl.leader_elsewhere()
                    && let Some(mut channel) = this.channel(&addr)
                {
                    let forwarded = async {
                        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                        channel.call(req).await
                    };
                    // A leader that froze holds the request until the
                    // client's timeout. Once this replica sees it lose the
                    // leadership, it answers UNAVAILABLE (the outcome is
                    // unknown, as after a timeout) naming the new leader
                    // when one is elected soon, so the client's next
                    // request goes there rather than round the replicas
                    // (see eon_common::node::Failover).
                    return Ok(tokio::select! {
                        answer = forwarded => answer.unwrap_or_else(|e| {
                            tonic::Status::unavailable(format!("meta leader {addr}: {e}"))
                                .into_http()
                        }),
                        () = this.meta.repl.no_longer_leads(&addr) => {
                            let mut status = tonic::Status::unavailable(format!(
                                "meta leader {addr} lost its leadership while it had the request"
                            ));
                            if let Some(new) = this.meta.repl.new_leader(&addr, LEADER_WAIT).await
                                && let Ok(value) = new.parse()
                            {
                                status.metadata_mut().insert(eon_common::node::LEADER_HINT, value);
                            }
                            status.into_http()
                        }
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(tonic::Status::unavailable(
                        "meta has no leader: a majority of its replicas is not reachable",
                    )
                    .into_http());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}
