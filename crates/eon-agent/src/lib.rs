//! eon's host agent: it starts, supervises and stops the processes of eon's
//! components and of users' front ends on one host, and spreads requests
//! over them.
//!
//! `eon up` is the agent of a one-host cluster: it starts `eon meta`, the
//! data engines and the query engines as child processes
//! ([`supervisor`]); listens on the public PostgreSQL port ([`router`]),
//! the REST port and the ingress port ([`ingress`]); runs front ends from
//! recipes and scales them with the balancer's decision core
//! ([`frontends`]); and serves the `Agent` gRPC interface (List, Start,
//! Stop, Stats, ApplyRecipe, RemoveRecipe, ListFrontends, Decisions) that
//! `eon status` and `eon recipe …` use.
//!
//! The REST port answers a few paths itself — `GET /v1/cluster` (where the
//! cluster's parts are), `GET /v1/cluster/decisions` (the balancer's
//! decisions), `GET /v1/cluster/frontends`, `GET /metrics` — for
//! superusers only, and sends every other request to a query engine.
//!
//! Layout of a data directory:
//!
//! ```text
//!   <data-dir>/eon.lock           held by the running `eon up`
//!   <data-dir>/admin-password     the admin role's password (0600)
//!   <data-dir>/cluster-secret     what components show each other (0600)
//!   <data-dir>/tls/               the cluster's CA and the server's certificate
//!   <data-dir>/recipe-roles/      the passwords of the front ends' roles
//!   <data-dir>/cluster.json       addresses of the running cluster (for `eon status`)
//!   <data-dir>/meta/              meta's state
//!   <data-dir>/data-engine-<n>/   a data engine's log and checkpoints
//!   <data-dir>/logs/<name>.log    one log per process
//! ```

pub mod control;
pub mod frontends;
pub mod hosts;
pub mod ingress;
pub mod joined;
pub mod router;
pub mod supervisor;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use eon_common::stats::Recorder;
use eon_proto::v1 as pb;
use eon_proto::v1::agent_server::{Agent, AgentServer};
use tonic::{Request, Response, Status};

use crate::frontends::Frontends;
use crate::ingress::{Body, HttpClient, Pool};
use crate::supervisor::{Instance, Launch, READY_TIMEOUT, STOP_TIMEOUT};

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The `eon` executable to start children with.
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    /// Meta's replicas: 1, or 3 (or more) for a meta that survives the
    /// loss of one (`eon up --meta 3`).
    pub meta_replicas: u32,
    pub data_engines: u32,
    pub query_engines: u32,
    pub pg_port: u16,
    pub http_port: u16,
    /// Users' HTTP: routed to front ends.
    pub ingress_port: u16,
    pub listen: String,
    /// Default shard count of new tables.
    pub shards: u32,
    /// How the balancer scales query engines (from `query_engines` up).
    pub query_engine_scaling: control::QueryEngineScaling,
    /// Extra flags for every data engine (`--gc-retention 300`, …).
    pub data_engine_args: Vec<String>,
    /// Hosts declared with power commands (`eon up --hosts`).
    pub hosts: Vec<eon_common::hosts::HostSpec>,
    /// Front ends to run: each recipe's text and the directory it is
    /// relative to (checked by the caller; refused again here if bad).
    pub recipes: Vec<(String, PathBuf)>,
    /// Accept every client without a password (`eon up --trust`).
    pub trust: bool,
    /// The operator's certificate for the public ports (default: one from
    /// the cluster's own CA in `<data-dir>/tls`).
    pub tls: Option<eon_common::tls::CertFiles>,
    /// Refuse clients that do not use TLS, on every public port.
    pub require_tls: bool,
    /// How long a data engine may be unreachable before meta has its shard
    /// copies rebuilt elsewhere.
    pub replace_after: Duration,
}

/// Where a running cluster can be reached; written to `cluster.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterFile {
    pub pid: u32,
    pub agent: String,
    pub meta: String,
    pub pg: String,
    pub http: String,
    #[serde(default)]
    pub ingress: String,
    /// The CA certificate clients verify the cluster with (when it is the
    /// cluster's own).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

pub const CLUSTER_FILE: &str = "cluster.json";

/// A failure to bring the cluster up, worded for the command line.
#[derive(Debug)]
pub struct UpError(pub String);

impl std::fmt::Display for UpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The agent's state: every instance it supervises.
pub struct AgentState {
    exe: PathBuf,
    data_dir: PathBuf,
    meta_addr: String,
    shards: u32,
    data_engine_args: Vec<String>,
    /// Query engines accept clients without passwords.
    trust: bool,
    instances: RwLock<Vec<Arc<Instance>>>,
    /// Query engines behind the PostgreSQL port and behind the REST port.
    qe_pg: Arc<Pool>,
    qe_http: Arc<Pool>,
    frontends: Frontends,
    decisions: control::DecisionLog,
    hosts: hosts::HostTable,
    /// This agent's gRPC address, once it listens.
    agent_addr: std::sync::OnceLock<String>,
    /// The admin's EON_PG_URL and EON_REST_URL (joined hosts get them;
    /// each front end gets its own role's, see `recipe_role`).
    frontend_env: Vec<(String, String)>,
    /// The cluster's PostgreSQL and REST ports.
    pg_addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
    /// How front ends reach them: in the clear on this host unless the
    /// operator requires TLS.
    frontend_link: Link,
    /// The certificate query engines offer PostgreSQL clients.
    tls: eon_common::tls::CertFiles,
    /// Clients must use TLS (`eon up --require-tls`).
    require_tls: bool,
    /// The balancer's clock.
    clock: std::time::Instant,
    qe_scaling: control::QueryEngineScaling,
    qe_scaler: Mutex<eon_balancer::Scaler>,
    /// Statements in flight on the query engines, sampled since the last
    /// decision.
    qe_samples: Mutex<Vec<f64>>,
    /// Query engines started by hand (the Agent API's `Start`): the
    /// operator's to stop, so the autoscaler neither counts nor drains
    /// them (else an idle cluster's scaler would stop one as it starts).
    manual: Mutex<std::collections::HashSet<String>>,
    /// When the balancer last asked meta to move shards' copies.
    data_moves: Mutex<Vec<std::time::Instant>>,
    balancing: tokio::sync::Mutex<()>,
    http_client: HttpClient,
    /// gRPC channels to components, by address (kept: statistics are
    /// asked for ten times a second).
    channels: Mutex<HashMap<String, eon_common::node::Channel>>,
    next_id: Mutex<HashMap<String, u64>>,
    stats: Arc<Recorder>,
}

impl AgentState {
    fn log_path(&self, name: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{name}.log"))
    }

    /// Start one more instance of `kind` (data-engine or query-engine).
    fn start(&self, kind: &str) -> Result<Arc<Instance>, String> {
        let id = {
            let mut next = self.next_id.lock().unwrap();
            let n = next.entry(kind.to_string()).or_insert(1);
            let id = *n;
            *n += 1;
            id
        };
        let name = format!("{kind}-{id}");
        let args: Vec<String> = match kind {
            "data-engine" => [
                vec![
                    "--id".into(),
                    id.to_string(),
                    "--data-dir".into(),
                    self.data_dir.join(&name).display().to_string(),
                    "--meta".into(),
                    self.meta_addr.clone(),
                ],
                self.data_engine_args.clone(),
            ]
            .concat(),
            "query-engine" => [
                vec![
                    "--id".into(),
                    id.to_string(),
                    "--meta".into(),
                    self.meta_addr.clone(),
                    "--default-shards".into(),
                    self.shards.to_string(),
                ],
                if self.trust {
                    vec!["--trust".into()]
                } else {
                    vec![]
                },
                vec![
                    "--tls-cert".into(),
                    self.tls.cert.display().to_string(),
                    "--tls-key".into(),
                    self.tls.key.display().to_string(),
                ],
                if self.require_tls {
                    vec!["--require-tls".into()]
                } else {
                    vec![]
                },
            ]
            .concat(),
            other => {
                return Err(format!(
                    "cannot start a {other:?}; kinds are data-engine and query-engine"
                ));
            }
        };
        let inst = supervisor::spawn(
            Launch::Eon {
                exe: self.exe.clone(),
            },
            &name,
            kind,
            id,
            args,
            self.log_path(&name),
        );
        if kind == "query-engine" {
            self.qe_pg.add(inst.clone());
            self.qe_http.add(inst.clone());
        }
        self.instances.write().unwrap().push(inst.clone());
        Ok(inst)
    }

    /// A (shared) gRPC channel to a component.
    pub(crate) fn channel_to(&self, addr: &str) -> Option<eon_common::node::Channel> {
        let mut channels = self.channels.lock().unwrap();
        if let Some(c) = channels.get(addr) {
            return Some(c.clone());
        }
        let c = eon_common::node::channel(addr).ok()?;
        channels.insert(addr.to_string(), c.clone());
        Some(c)
    }

    /// The agent's statistics, with its host's.
    fn own_stats(&self) -> pb::Stats {
        let mut s = self.stats.snapshot(0);
        let instances = self.instances.read().unwrap();
        s.counters
            .insert("instances".into(), instances.len() as u64);
        s.counters.insert(
            "restarts".into(),
            instances.iter().map(|i| i.status().restarts as u64).sum(),
        );
        eon_common::stats::add_host_counters(&mut s);
        s
    }

    /// Statistics of every component this agent runs (asked over their
    /// gRPC interfaces, a second at most each), of itself, and of the
    /// requests through its pools (front ends, the query-engine router).
    pub(crate) async fn cluster_stats(&self) -> Vec<(String, pb::Stats)> {
        use eon_proto::v1::data_engine_client::DataEngineClient;
        use eon_proto::v1::meta_client::MetaClient;
        use eon_proto::v1::query_engine_client::QueryEngineClient;
        let running: Vec<(String, String, String)> = self
            .instances
            .read()
            .unwrap()
            .iter()
            .filter_map(|i| {
                let st = i.status();
                let addr = st.addresses.get("grpc")?.clone();
                (st.state == supervisor::State::Running)
                    .then(|| (i.name.clone(), i.kind.clone(), addr))
            })
            .collect();
        let asks = running.into_iter().map(|(name, kind, addr)| async move {
            let ch = self.channel_to(&addr)?;
            let ask = async {
                match kind.as_str() {
                    "meta" => MetaClient::new(ch).stats(pb::StatsRequest {}).await,
                    "data-engine" => DataEngineClient::new(ch).stats(pb::StatsRequest {}).await,
                    _ => QueryEngineClient::new(ch).stats(pb::StatsRequest {}).await,
                }
            };
            let s = tokio::time::timeout(Duration::from_secs(1), ask)
                .await
                .ok()?
                .ok()?
                .into_inner();
            Some((name, s))
        });
        let mut out = vec![("agent".to_string(), self.own_stats())];
        out.extend(futures::future::join_all(asks).await.into_iter().flatten());
        out.push(self.qe_pg.snapshot());
        out.push(self.qe_http.snapshot());
        out.extend(
            self.frontends
                .by_name
                .read()
                .unwrap()
                .values()
                .map(|fe| fe.pool.snapshot()),
        );
        out
    }

    /// Drop a stopped (or lost) instance from what `List` shows.
    fn forget(&self, inst: &Arc<Instance>) {
        self.instances
            .write()
            .unwrap()
            .retain(|i| !Arc::ptr_eq(i, inst));
    }

    /// Started by hand, not by the autoscaler (see `manual`).
    fn is_manual(&self, name: &str) -> bool {
        self.manual.lock().unwrap().contains(name)
    }

    fn find(&self, name: &str) -> Option<Arc<Instance>> {
        self.instances
            .read()
            .unwrap()
            .iter()
            .find(|i| i.name == name)
            .cloned()
    }

    /// Stop everything: front ends and query engines first (no new work),
    /// then data engines, then meta.
    async fn stop_all(&self) {
        let all = self.instances.read().unwrap().clone();
        for kind in ["frontend", "query-engine", "data-engine", "meta"] {
            let group: Vec<_> = all.iter().filter(|i| i.kind == kind).cloned().collect();
            futures::future::join_all(group.iter().map(|i| i.stop(STOP_TIMEOUT))).await;
        }
    }
}

fn check_dir(dir: &Path) -> Result<(), UpError> {
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| {
        UpError(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| {
        UpError(format!(
            "data directory {} is not writable: {e}",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Take the data directory's lock, or say who holds it.
pub(crate) fn lock(dir: &Path) -> Result<std::fs::File, UpError> {
    let path = dir.join("eon.lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| UpError(format!("cannot open {}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0).ok();
            let _ = writeln!(f, "{}", std::process::id());
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            Err(UpError(format!(
                "data directory {} is already in use by another eon (pid {})",
                dir.display(),
                pid.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(UpError(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

async fn bind_public(
    listen: &str,
    port: u16,
    what: &str,
) -> Result<tokio::net::TcpListener, UpError> {
    tokio::net::TcpListener::bind((listen, port)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            let flag = match what {
                "PostgreSQL" => "pg",
                "REST" => "http",
                _ => "ingress",
            };
            UpError(format!("{what} port {listen}:{port} is already in use (choose another with --{flag}-port)"))
        } else {
            UpError(format!("cannot listen on {listen}:{port} for {what}: {e}"))
        }
    })
}

/// One meta replica to start.
struct MetaReplica {
    id: u64,
    name: String,
    args: Vec<String>,
}

/// Where meta's replicas keep their addresses, once chosen (`id=host:port`
/// per line): a replica's address is part of its Raft group's membership,
/// so it must not change across restarts.
const META_PEERS_FILE: &str = "meta-peers";

/// The meta replicas to start: one (`<data-dir>/meta`, on a port it picks
/// at its first start), or `opts.meta_replicas` (`<data-dir>/meta-N`, on
/// ports chosen at the first start and kept in [`META_PEERS_FILE`]). The
/// number of replicas is fixed when the cluster is made.
fn meta_replicas(opts: &UpOptions) -> Result<Vec<MetaReplica>, UpError> {
    let common = vec![
        "--admin-password-file".to_string(),
        opts.data_dir
            .join(ADMIN_PASSWORD_FILE)
            .display()
            .to_string(),
        "--replace-after".to_string(),
        opts.replace_after.as_secs().to_string(),
    ];
    let peers_file = opts.data_dir.join(META_PEERS_FILE);
    let existing = std::fs::read_to_string(&peers_file).ok();
    let single_made = opts.data_dir.join("meta").join("raft").exists()
        || opts.data_dir.join("meta").join("meta.pb").exists();
    let made_with = match &existing {
        Some(text) => text.lines().filter(|l| !l.trim().is_empty()).count() as u32,
        None if single_made => 1,
        None => 0,
    };
    if made_with != 0 && made_with != opts.meta_replicas {
        return Err(UpError(format!(
            "this cluster's meta runs as {made_with} replica(s); start it with --meta {made_with} \
             (changing the number of meta replicas is not supported yet)"
        )));
    }
    if opts.meta_replicas <= 1 {
        let mut args = vec![
            "--data-dir".to_string(),
            opts.data_dir.join("meta").display().to_string(),
        ];
        args.extend(common);
        return Ok(vec![MetaReplica {
            id: 1,
            name: "meta".into(),
            args,
        }]);
    }
    let peers = match existing {
        Some(text) => text.trim().replace('\n', ","),
        None => {
            // Ports for every replica, before any starts: each must know
            // the others' addresses to form the group.
            let mut peers = Vec::new();
            for id in 1..=opts.meta_replicas {
                let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
                    .map_err(|e| UpError(format!("cannot pick a port for meta: {e}")))?;
                let addr = listener.local_addr().map_err(|e| UpError(e.to_string()))?;
                peers.push(format!("{id}={addr}"));
            }
            std::fs::write(&peers_file, peers.join("\n") + "\n")
                .map_err(|e| UpError(format!("cannot write {}: {e}", peers_file.display())))?;
            peers.join(",")
        }
    };
    let replicas = eon_common::node::parse_replicas(&peers)
        .map_err(|e| UpError(format!("{} is damaged: {e}", peers_file.display())))?;
    let mut out = Vec::new();
    for (id, addr) in replicas {
        let port = addr.rsplit(':').next().unwrap_or("0");
        let mut args = vec![
            "--data-dir".to_string(),
            opts.data_dir
                .join(format!("meta-{id}"))
                .display()
                .to_string(),
            "--port".to_string(),
            port.to_string(),
            "--replica".to_string(),
            id.to_string(),
            "--peers".to_string(),
            peers.clone(),
        ];
        args.extend(common.clone());
        out.push(MetaReplica {
            id,
            name: format!("meta-{id}"),
            args,
        });
    }
    Ok(out)
}

/// Run `eon up` until Ctrl-C or SIGTERM. `on_ready` gets the cluster's
/// addresses once every component is running.
pub async fn up(opts: UpOptions, on_ready: impl FnOnce(&ClusterFile)) -> Result<(), UpError> {
    check_dir(&opts.data_dir)?;
    let _lock = lock(&opts.data_dir)?;
    let pg_listener = bind_public(&opts.listen, opts.pg_port, "PostgreSQL").await?;
    let http_listener = bind_public(&opts.listen, opts.http_port, "REST").await?;
    let ingress_listener = bind_public(&opts.listen, opts.ingress_port, "ingress").await?;
    let pg_addr = pg_listener
        .local_addr()
        .map_err(|e| UpError(e.to_string()))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| UpError(e.to_string()))?;
    let ingress_addr = ingress_listener
        .local_addr()
        .map_err(|e| UpError(e.to_string()))?;
    let mut signals = Signals::new();
    let (tls_files, ca_cert) = match &opts.tls {
        Some(files) => (files.clone(), None),
        None => {
            let dir = opts.data_dir.join(eon_common::tls::TLS_DIR);
            let (files, ca) = eon_common::tls::cluster_certificates(
                &dir,
                &eon_common::tls::host_names(&opts.listen),
            )
            .map_err(UpError)?;
            (files, Some(ca))
        }
    };
    // Read now, so a bad certificate stops `eon up` with its reason.
    let https = eon_common::tls::acceptor(&tls_files, &[b"http/1.1"])
        .map_err(|e| UpError(format!("TLS: {e}")))?;
    let frontend_link = if opts.require_tls {
        Link::Tls {
            ca: ca_cert.clone(),
        }
    } else {
        Link::Plain
    };

    // Meta first: everyone else needs its address.
    let admin_password = admin_password(&opts.data_dir).map_err(UpError)?;
    // The cluster's secret: every component this agent starts gets it, and
    // presents it on every gRPC call (see `eon_common::node`).
    eon_common::node::set_cluster_secret(
        kept_password(&opts.data_dir.join(eon_common::node::SECRET_FILE)).map_err(UpError)?,
    );
    let mut metas = Vec::new();
    for replica in meta_replicas(&opts)? {
        metas.push(supervisor::spawn(
            Launch::Eon {
                exe: opts.exe.clone(),
            },
            &replica.name,
            "meta",
            replica.id,
            replica.args,
            opts.data_dir
                .join("logs")
                .join(format!("{}.log", replica.name)),
        ));
    }
    let mut meta_addrs = Vec::new();
    for meta in &metas {
        let addrs = tokio::select! {
            r = meta.wait_ready(READY_TIMEOUT) => r.map_err(UpError)?,
            _ = signals.recv() => {
                for m in &metas {
                    m.stop(STOP_TIMEOUT).await;
                }
                return Ok(());
            }
        };
        let addr = addrs
            .get("grpc")
            .cloned()
            .ok_or_else(|| UpError("meta announced no address".into()))?;
        // After the first start meta keeps its port, so restarts are
        // invisible to the other components.
        {
            let port = addr.rsplit(':').next().unwrap_or("0").to_string();
            let mut args = meta.args.lock().unwrap();
            if !args.iter().any(|a| a == "--port") {
                args.extend(["--port".to_string(), port]);
            }
        }
        meta_addrs.push(addr);
    }
    // Every component gets all replicas' addresses and fails over between
    // them (`eon_common::node::Failover`).
    let meta_addr = meta_addrs.join(",");

    let state = Arc::new(AgentState {
        exe: opts.exe.clone(),
        data_dir: opts.data_dir.clone(),
        meta_addr: meta_addr.clone(),
        shards: opts.shards,
        data_engine_args: opts.data_engine_args.clone(),
        instances: RwLock::new(metas.clone()),
        qe_pg: Pool::new("query-engine", "pg", "router", router::HOLD),
        qe_http: Pool::new("query-engine", "http", "router", router::HOLD),
        frontends: Frontends::default(),
        decisions: control::DecisionLog::default(),
        hosts: std::sync::Mutex::new(hosts::initial(&opts.hosts)),
        agent_addr: std::sync::OnceLock::new(),
        frontend_env: vec![
            (
                "EON_PG_URL".into(),
                pg_url(&pg_addr, ADMIN_ROLE, &admin_password, &frontend_link),
            ),
            (
                "EON_REST_URL".into(),
                rest_url(&http_addr, ADMIN_ROLE, &admin_password, &frontend_link),
            ),
        ],
        pg_addr,
        http_addr,
        frontend_link,
        tls: tls_files.clone(),
        require_tls: opts.require_tls,
        trust: opts.trust,
        clock: std::time::Instant::now(),
        qe_scaling: opts.query_engine_scaling.clone(),
        qe_scaler: Mutex::new(eon_balancer::Scaler::new()),
        qe_samples: Mutex::new(Vec::new()),
        manual: Mutex::new(Default::default()),
        data_moves: Mutex::new(Vec::new()),
        balancing: tokio::sync::Mutex::new(()),
        http_client: ingress::http_client(),
        channels: Mutex::new(HashMap::new()),
        next_id: Mutex::new(HashMap::new()),
        stats: Recorder::new("agent", 0),
    });
    let mut starting = Vec::new();
    for _ in 0..opts.data_engines {
        starting.push(state.start("data-engine").map_err(UpError)?);
    }
    for _ in 0..opts.query_engines {
        starting.push(state.start("query-engine").map_err(UpError)?);
    }

    // The Agent interface, on a free port.
    let (agent_listener, agent_addr) = eon_common::node::bind(&opts.listen, 0)
        .await
        .map_err(|e| UpError(e.to_string()))?;
    let _ = state.agent_addr.set(agent_addr.to_string());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_state = state.clone();
    let agent_task = serve_agent(
        agent_listener,
        AgentService {
            state: state.clone(),
        },
        move || metrics_state.own_stats(),
        stop_rx.clone(),
    );
    let cluster = ClusterFile {
        pid: std::process::id(),
        agent: agent_addr.to_string(),
        meta: meta_addr,
        pg: pg_addr.to_string(),
        http: http_addr.to_string(),
        ingress: ingress_addr.to_string(),
        ca_cert,
    };
    let doors = ingress::Doors {
        tls: Some(https),
        require_tls: opts.require_tls,
    };
    let pg_task = tokio::spawn(router::serve_pg(
        state.qe_pg.clone(),
        pg_listener,
        stop_rx.clone(),
    ));
    let http_task = tokio::spawn(ingress::serve_http(
        http_listener,
        rest_handler(state.clone(), cluster.clone()),
        doors.clone(),
        stop_rx.clone(),
    ));
    let ingress_task = tokio::spawn(ingress::serve_http(
        ingress_listener,
        ingress_handler(state.clone()),
        doors,
        stop_rx.clone(),
    ));
    let control_task = tokio::spawn(control::control_loop(state.clone(), stop_rx.clone()));

    let ready = futures::future::try_join_all(starting.iter().map(|i| i.wait_ready(READY_TIMEOUT)));
    let outcome = tokio::select! {
        r = ready => r.map(|_| true).map_err(UpError),
        _ = signals.recv() => Ok(false),
    };
    let outcome = match outcome {
        Ok(true) => {
            let mut applied = Ok(true);
            for (text, dir) in &opts.recipes {
                if let Err(e) = state.apply_recipe(text, dir).await {
                    applied = Err(UpError(format!("recipe refused: {e}")));
                    break;
                }
            }
            applied
        }
        other => other,
    };
    let result = match outcome {
        Ok(true) => {
            write_cluster_file(&opts.data_dir, &cluster);
            on_ready(&cluster);
            signals.recv().await;
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    tracing::info!("stopping");
    let _ = std::fs::remove_file(opts.data_dir.join(CLUSTER_FILE));
    let _ = stop_tx.send(true);
    state.stop_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = agent_task.await;
        let _ = pg_task.await;
        let _ = http_task.await;
        let _ = ingress_task.await;
        let _ = control_task.await;
    })
    .await;
    result
}

/// An address to connect to for one listened on (0.0.0.0 → 127.0.0.1).
fn connect_addr(addr: &std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The superuser `eon up` makes at the first start; its password is in
/// [`ADMIN_PASSWORD_FILE`] in the data dir.
pub use eon_common::ADMIN_ROLE;
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// The admin's password, if the data dir keeps one (and it is readable).
pub fn admin_password_if_kept(data_dir: &std::path::Path) -> Option<String> {
    eon_common::scram::read_password(&data_dir.join(ADMIN_PASSWORD_FILE)).ok()
}

/// The admin's password: read from the data dir, or made up (24 letters
/// and digits) and written there, readable by its owner only, at the first
/// start. Meta sets the admin's password from this file at every start.
pub fn admin_password(data_dir: &std::path::Path) -> Result<String, String> {
    kept_password(&data_dir.join(ADMIN_PASSWORD_FILE))
}

/// How a client reaches the cluster's public ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// In the clear.
    Plain,
    /// Over TLS, verifying the server against `ca` (the cluster's own CA),
    /// or — with an operator's certificate, `None` — only requiring TLS.
    Tls { ca: Option<PathBuf> },
}

/// The PostgreSQL URL of a cluster whose PostgreSQL port is `addr`, logging
/// in as `user`.
pub fn pg_url(addr: &std::net::SocketAddr, user: &str, password: &str, link: &Link) -> String {
    let ssl = match link {
        Link::Plain => "sslmode=disable".to_string(),
        Link::Tls { ca: Some(ca) } => {
            format!("sslmode=verify-full&sslrootcert={}", ca.display())
        }
        Link::Tls { ca: None } => "sslmode=require".to_string(),
    };
    format!(
        "postgresql://{user}:{password}@{}/eon?{ssl}",
        connect_addr(addr)
    )
}

/// The REST URL of a cluster whose REST port is `addr`, with `user`'s
/// credentials (HTTP basic authentication).
pub fn rest_url(addr: &std::net::SocketAddr, user: &str, password: &str, link: &Link) -> String {
    let scheme = match link {
        Link::Plain => "http",
        Link::Tls { .. } => "https",
    };
    format!("{scheme}://{user}:{password}@{}", connect_addr(addr))
}

/// A password kept in a file readable by its owner only: read, or made up
/// and written there.
fn kept_password(path: &std::path::Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match eon_common::scram::read_password(path) {
        Ok(password) => return Ok(password),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let password = eon_common::scram::random_password();
    path.parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(f, "{password}")?;
            f.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(password)
}

impl AgentState {
    /// The role a recipe's front end runs as — named as the recipe, able
    /// to log in, its password kept in `<data-dir>/recipe-roles/<name>` —
    /// made (or its password set back) in meta; the front end's
    /// EON_PG_URL and EON_REST_URL with its credentials. The role owns the
    /// tables the front end creates; others it must be granted.
    pub(crate) async fn recipe_role(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        let password = kept_password(&self.data_dir.join("recipe-roles").join(name))?;
        let mut meta = eon_common::node::meta_client(&self.meta_addr).map_err(|e| e.to_string())?;
        let catalog = meta
            .get_catalog(pb::GetCatalogRequest {})
            .await
            .map_err(|e| format!("meta: {}", e.message()))?
            .into_inner();
        let existing = catalog.roles.into_iter().find(|r| r.name == name);
        let verifier = || eon_common::scram::Verifier::generate(&password).to_string();
        let result = match existing {
            Some(r) if r.login && eon_common::scram::verifies(&r.password, &password) => Ok(()),
            Some(mut r) => {
                r.login = true;
                r.password = verifier();
                meta.alter_role(pb::AlterRoleRequest {
                    name: name.to_string(),
                    role: Some(r),
                })
                .await
                .map(|_| ())
            }
            None => meta
                .create_role(pb::CreateRoleRequest {
                    role: Some(pb::Role {
                        name: name.to_string(),
                        login: true,
                        inherit: true,
                        password: verifier(),
                        connection_limit: -1,
                        ..Default::default()
                    }),
                    if_not_exists: false,
                })
                .await
                .map(|_| ()),
        };
        result.map_err(|e| {
            format!(
                "cannot make the role of front end {name:?}: {}",
                e.message()
            )
        })?;
        Ok(vec![
            (
                "EON_PG_URL".into(),
                pg_url(&self.pg_addr, name, &password, &self.frontend_link),
            ),
            (
                "EON_REST_URL".into(),
                rest_url(&self.http_addr, name, &password, &self.frontend_link),
            ),
        ])
    }
}

fn json_response(v: serde_json::Value) -> hyper::Response<Body> {
    ingress::respond(hyper::StatusCode::OK, "application/json", v.to_string())
}

/// The cluster's own paths (`/v1/cluster…`, `/metrics`) are a superuser's:
/// a query engine says whose the request's credentials are (`GET
/// /v1/whoami`, where passwords and tokens are checked), so they are the
/// same credentials as for SQL. A refusal is the response to send.
async fn superuser_only(
    state: &AgentState,
    headers: &hyper::HeaderMap,
) -> Result<(), hyper::Response<Body>> {
    use http_body_util::BodyExt;
    let unavailable =
        |why: String| ingress::json_error(hyper::StatusCode::SERVICE_UNAVAILABLE, "57P03", &why);
    let (_lease, addr) = state
        .qe_http
        .pick_or_hold(&[])
        .await
        .map_err(|_| unavailable("no query engine is ready to check credentials".into()))?;
    let mut ask = hyper::Request::get(format!("http://{addr}/v1/whoami"));
    if let Some(auth) = headers.get(hyper::header::AUTHORIZATION) {
        ask = ask.header(hyper::header::AUTHORIZATION, auth.clone());
    }
    let ask = ask
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| unavailable(e.to_string()))?;
    let answer = state
        .http_client
        .request(ask)
        .await
        .map_err(|e| unavailable(format!("query engine {addr}: {e}")))?;
    let status = answer.status();
    let challenge = answer
        .headers()
        .get(hyper::header::WWW_AUTHENTICATE)
        .cloned();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(format!("query engine {addr}: {e}")))?
        .to_bytes();
    if !status.is_success() {
        // 401 with its challenge, 503, …: as the query engine said.
        let mut refused = ingress::respond(status, "application/json", body);
        if let Some(c) = challenge {
            refused
                .headers_mut()
                .insert(hyper::header::WWW_AUTHENTICATE, c);
        }
        return Err(refused);
    }
    let who: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if who["superuser"] == true {
        Ok(())
    } else {
        Err(ingress::json_error(
            hyper::StatusCode::FORBIDDEN,
            "42501",
            &format!(
                "permission denied: only a superuser may see the cluster (you are {})",
                who["user"]
            ),
        ))
    }
}

/// The REST port: the cluster's own paths here, SQL to a query engine.
fn rest_handler(state: Arc<AgentState>, cluster: ClusterFile) -> ingress::Handler {
    Arc::new(move |req, peer| {
        let state = state.clone();
        let cluster = cluster.clone();
        Box::pin(async move {
            let get = req.method() == hyper::Method::GET;
            let path = req.uri().path();
            if path == "/metrics" || path.starts_with("/v1/cluster") {
                if let Err(refused) = superuser_only(&state, req.headers()).await {
                    return refused;
                }
            }
            match req.uri().path() {
                "/v1/cluster" if get => {
                    json_response(serde_json::to_value(&cluster).unwrap_or_default())
                }
                "/v1/cluster/decisions" if get => {
                    let limit = query_param(req.uri(), "limit")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(100);
                    let list: Vec<serde_json::Value> = state
                        .decisions
                        .latest(limit)
                        .iter()
                        .map(decision_json)
                        .collect();
                    json_response(serde_json::json!({ "decisions": list }))
                }
                "/metrics" if get => {
                    let text = eon_common::stats::prometheus(&state.cluster_stats().await);
                    ingress::respond(hyper::StatusCode::OK, "text/plain; version=0.0.4", text)
                }
                "/v1/cluster/stats" if get => {
                    let instance = query_param(req.uri(), "instance").unwrap_or_default();
                    let since = query_param(req.uri(), "since_unix_ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    match state.stats_history(instance, since).await {
                        Ok(v) => json_response(v),
                        Err(e) => {
                            ingress::json_error(hyper::StatusCode::SERVICE_UNAVAILABLE, "57P03", &e)
                        }
                    }
                }
                "/v1/cluster/frontends" if get => {
                    let list: Vec<serde_json::Value> = state
                        .frontends
                        .by_name
                        .read()
                        .unwrap()
                        .values()
                        .map(|fe| frontend_json(&state.frontend_proto(fe)))
                        .collect();
                    json_response(serde_json::json!({ "frontends": list }))
                }
                p if p.starts_with("/v1/cluster") => ingress::json_error(
                    hyper::StatusCode::NOT_FOUND,
                    "42704",
                    &format!("no such cluster resource: {} {p}", req.method()),
                ),
                _ => ingress::proxy(&state.http_client, &state.qe_http, req, "", peer).await,
            }
        })
    })
}

/// The ingress port: each request to the front end its route names.
fn ingress_handler(state: Arc<AgentState>) -> ingress::Handler {
    Arc::new(move |req, peer| {
        let state = state.clone();
        Box::pin(async move {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            match state.frontends.route(host.as_deref(), req.uri().path()) {
                Some((fe, strip)) => {
                    ingress::proxy(&state.http_client, &fe.pool, req, &strip, peer).await
                }
                None => {
                    let routes: Vec<String> = state
                        .frontends
                        .by_name
                        .read()
                        .unwrap()
                        .values()
                        .map(|f| state.frontend_proto(f).route)
                        .collect();
                    ingress::json_error(
                        hyper::StatusCode::NOT_FOUND,
                        "42704",
                        &format!(
                            "no front end routes {} (routes: {})",
                            req.uri().path(),
                            if routes.is_empty() {
                                "none".into()
                            } else {
                                routes.join(", ")
                            }
                        ),
                    )
                }
            }
        })
    })
}

impl AgentState {
    /// Meta's statistics window as JSON: per instance, its samples.
    async fn stats_history(
        &self,
        instance: String,
        since_unix_ms: i64,
    ) -> Result<serde_json::Value, String> {
        let mut meta = eon_common::node::meta_client(&self.meta_addr).map_err(|e| e.to_string())?;
        let h = meta
            .stats_history(pb::StatsHistoryRequest {
                instance,
                since_unix_ms,
            })
            .await
            .map_err(|e| format!("meta: {}", e.message()))?
            .into_inner();
        let mut by: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
        for sample in h.samples {
            let s = sample.stats.unwrap_or_default();
            by.entry(sample.instance)
                .or_default()
                .push(serde_json::json!({
                    "at_unix_ms": sample.at_unix_ms,
                    "component": s.component,
                    "requests_total": s.requests_total,
                    "errors_total": s.errors_total,
                    "in_flight": s.in_flight,
                    "queue_depth": s.queue_depth,
                    "memory_bytes": s.memory_bytes,
                    "cpu_seconds": s.cpu_seconds,
                    "bytes_stored": s.bytes_stored,
                }));
        }
        Ok(serde_json::json!({ "window_ms": h.window_ms, "instances": by }))
    }
}

fn query_param(uri: &hyper::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

pub fn decision_json(d: &pb::Decision) -> serde_json::Value {
    serde_json::json!({
        "at_unix_ms": d.at_unix_ms,
        "service": d.service,
        "inputs": { "load": d.load, "ready": d.ready, "starting": d.starting, "target": d.target },
        "current": d.current,
        "desired": d.desired,
        "rule": d.rule,
        "actions": d.actions,
    })
}

pub fn frontend_json(f: &pb::Frontend) -> serde_json::Value {
    let instances: Vec<serde_json::Value> = f
        .instances
        .iter()
        .map(|i| {
            let inst = i.instance.clone().unwrap_or_default();
            serde_json::json!({
                "name": inst.name, "state": inst.state, "pid": inst.pid, "port": i.port,
                "restarts": inst.restarts, "in_flight": i.in_flight, "draining": i.draining, "outdated": i.outdated,
            })
        })
        .collect();
    serde_json::json!({
        "name": f.name, "route": f.route, "min": f.min, "max": f.max, "signal": f.signal, "target": f.target,
        "load": f.load, "held": f.held, "desired": f.desired, "rule": f.rule, "instances": instances,
    })
}

/// Serve the `Agent` interface (and `GET /metrics` of `stats`) on
/// `listener` until `stop` fires — the cluster's agent and joined ones alike.
pub(crate) fn serve_agent<A: Agent>(
    listener: tokio::net::TcpListener,
    service: A,
    stats: impl Fn() -> pb::Stats + Clone + Send + Sync + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(eon_common::node::metrics_routes(stats))
            .add_service(eon_common::node::guarded(AgentServer::new(service)))
            .serve_with_incoming_shutdown(eon_common::node::incoming(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    })
}

fn write_cluster_file(dir: &Path, c: &ClusterFile) {
    let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
    if std::fs::write(&tmp, serde_json::to_vec_pretty(c).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(tmp, dir.join(CLUSTER_FILE));
    }
}

/// Read the addresses of the cluster running on `dir`.
pub fn read_cluster_file(dir: &Path) -> Option<ClusterFile> {
    serde_json::from_slice(&std::fs::read(dir.join(CLUSTER_FILE)).ok()?).ok()
}

/// SIGINT and SIGTERM, both meaning "stop".
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

struct AgentService {
    state: Arc<AgentState>,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn list(
        &self,
        _req: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let instances = self
            .state
            .instances
            .read()
            .unwrap()
            .iter()
            .map(|i| i.to_proto())
            .collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }

    async fn start(&self, req: Request<pb::StartInstanceRequest>) -> Reply<pb::Instance> {
        let r = self.state.stats.start();
        let inst = self
            .state
            .start(&req.into_inner().kind)
            .map_err(Status::invalid_argument)?;
        self.state.manual.lock().unwrap().insert(inst.name.clone());
        inst.wait_ready(READY_TIMEOUT)
            .await
            .map_err(Status::unavailable)?;
        r.ok();
        Ok(Response::new(inst.to_proto()))
    }

    async fn stop(&self, req: Request<pb::StopInstanceRequest>) -> Reply<pb::Instance> {
        let req = req.into_inner();
        let inst = self
            .state
            .find(&req.name)
            .ok_or_else(|| Status::not_found(format!("no instance named {:?}", req.name)))?;
        if inst.kind == "meta" {
            return Err(Status::failed_precondition(
                "meta cannot be stopped while the cluster runs",
            ));
        }
        let timeout = if req.timeout_ms == 0 {
            STOP_TIMEOUT
        } else {
            Duration::from_millis(req.timeout_ms as u64)
        };
        inst.stop(timeout).await;
        self.state.manual.lock().unwrap().remove(&inst.name);
        Ok(Response::new(inst.to_proto()))
    }

    async fn apply_recipe(&self, req: Request<pb::ApplyRecipeRequest>) -> Reply<pb::Frontend> {
        let req = req.into_inner();
        let fe = self
            .state
            .apply_recipe(&req.toml, Path::new(&req.base_dir))
            .await
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(self.state.frontend_proto(&fe)))
    }

    async fn remove_recipe(&self, req: Request<pb::RemoveRecipeRequest>) -> Reply<pb::Frontend> {
        let name = req.into_inner().name;
        let fe = self
            .state
            .remove_recipe(&name)
            .ok_or_else(|| Status::not_found(format!("no front end named {name:?}")))?;
        Ok(Response::new(self.state.frontend_proto(&fe)))
    }

    async fn list_frontends(
        &self,
        _req: Request<pb::ListFrontendsRequest>,
    ) -> Reply<pb::ListFrontendsResponse> {
        let frontends = self
            .state
            .frontends
            .by_name
            .read()
            .unwrap()
            .values()
            .map(|fe| self.state.frontend_proto(fe))
            .collect();
        Ok(Response::new(pb::ListFrontendsResponse { frontends }))
    }

    async fn decisions(&self, req: Request<pb::DecisionsRequest>) -> Reply<pb::DecisionsResponse> {
        let decisions = self.state.decisions.latest(req.into_inner().limit as usize);
        Ok(Response::new(pb::DecisionsResponse { decisions }))
    }

    async fn stats(&self, _req: Request<pb::StatsRequest>) -> Reply<pb::Stats> {
        Ok(Response::new(self.state.own_stats()))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Reply<pb::JoinResponse> {
        self.state
            .join(&req.into_inner())
            .map_err(Status::invalid_argument)?;
        let env: HashMap<String, String> = self.state.frontend_env.iter().cloned().collect();
        Ok(Response::new(pb::JoinResponse {
            pg_url: env.get("EON_PG_URL").cloned().unwrap_or_default(),
            rest_url: env.get("EON_REST_URL").cloned().unwrap_or_default(),
        }))
    }

    async fn start_frontend(&self, _req: Request<pb::StartFrontendRequest>) -> Reply<pb::Instance> {
        Err(Status::failed_precondition(
            "the cluster's agent places front-end instances itself; apply a recipe",
        ))
    }

    async fn list_hosts(
        &self,
        _req: Request<pb::ListHostsRequest>,
    ) -> Reply<pb::ListHostsResponse> {
        Ok(Response::new(pb::ListHostsResponse {
            hosts: self.state.hosts_proto(),
        }))
    }
}
