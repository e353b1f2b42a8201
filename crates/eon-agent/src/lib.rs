//! eon's host agent: it starts, supervises and stops the processes of eon's
//! components on one host, and routes client connections to query engines.
//!
//! `eon up` is the agent of a one-host cluster: it starts `eon meta`, the
//! data engines and the query engines as child processes
//! ([`supervisor`]), listens on the public PostgreSQL and REST ports
//! ([`router`]), and serves the `Agent` gRPC interface (List, Start, Stop,
//! Stats) so that tools — `eon status` today, the balancer later — can see
//! and change what runs.
//!
//! Layout of a data directory:
//!
//! ```text
//!   <data-dir>/eon.lock           held by the running `eon up`
//!   <data-dir>/cluster.json       addresses of the running cluster (for `eon status`)
//!   <data-dir>/meta/              meta's state
//!   <data-dir>/data-engine-<n>/   a data engine's log and checkpoints
//!   <data-dir>/logs/<name>.log    one log per process
//! ```

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

use crate::router::{Protocol, Router};
use crate::supervisor::{Instance, READY_TIMEOUT, STOP_TIMEOUT};

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The `eon` executable to start children with.
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub data_engines: u32,
    pub query_engines: u32,
    pub pg_port: u16,
    pub http_port: u16,
    pub listen: String,
    /// Default shard count of new tables.
    pub shards: u32,
    /// Extra flags for every data engine (`--gc-retention 300`, …).
    pub data_engine_args: Vec<String>,
}

/// Where a running cluster can be reached; written to `cluster.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterFile {
    pub pid: u32,
    pub agent: String,
    pub meta: String,
    pub pg: String,
    pub http: String,
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
    instances: RwLock<Vec<Arc<Instance>>>,
    router: Arc<Router>,
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
            "query-engine" => vec![
                "--id".into(),
                id.to_string(),
                "--meta".into(),
                self.meta_addr.clone(),
                "--default-shards".into(),
                self.shards.to_string(),
            ],
            other => return Err(format!("cannot start a {other:?}; kinds are data-engine and query-engine")),
        };
        let inst = supervisor::spawn(self.exe.clone(), &name, kind, id, args, self.log_path(&name));
        if kind == "query-engine" {
            self.router.engines.write().unwrap().push(inst.clone());
        }
        self.instances.write().unwrap().push(inst.clone());
        Ok(inst)
    }

    fn find(&self, name: &str) -> Option<Arc<Instance>> {
        self.instances.read().unwrap().iter().find(|i| i.name == name).cloned()
    }

    /// Stop everything: query engines first (no new work), then data
    /// engines, then meta.
    async fn stop_all(&self) {
        let all = self.instances.read().unwrap().clone();
        for kind in ["query-engine", "data-engine", "meta"] {
            let group: Vec<_> = all.iter().filter(|i| i.kind == kind).cloned().collect();
            futures::future::join_all(group.iter().map(|i| i.stop(STOP_TIMEOUT))).await;
        }
    }
}

fn check_dir(dir: &Path) -> Result<(), UpError> {
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| UpError(format!("cannot create data directory {}: {e}", dir.display())))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .map_err(|e| UpError(format!("data directory {} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Take the data directory's lock, or say who holds it.
fn lock(dir: &Path) -> Result<std::fs::File, UpError> {
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
        Err(std::fs::TryLockError::Error(e)) => Err(UpError(format!("cannot lock {}: {e}", path.display()))),
    }
}

async fn bind_public(listen: &str, port: u16, what: &str) -> Result<tokio::net::TcpListener, UpError> {
    tokio::net::TcpListener::bind((listen, port)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            UpError(format!("{what} port {listen}:{port} is already in use (choose another with --{}-port)", if what == "PostgreSQL" { "pg" } else { "http" }))
        } else {
            UpError(format!("cannot listen on {listen}:{port} for {what}: {e}"))
        }
    })
}

/// Run `eon up` until Ctrl-C or SIGTERM. `on_ready` gets the cluster's
/// addresses once every component is running.
pub async fn up(opts: UpOptions, on_ready: impl FnOnce(&ClusterFile)) -> Result<(), UpError> {
    check_dir(&opts.data_dir)?;
    let _lock = lock(&opts.data_dir)?;
    let pg_listener = bind_public(&opts.listen, opts.pg_port, "PostgreSQL").await?;
    let http_listener = bind_public(&opts.listen, opts.http_port, "REST").await?;
    let pg_addr = pg_listener.local_addr().map_err(|e| UpError(e.to_string()))?;
    let http_addr = http_listener.local_addr().map_err(|e| UpError(e.to_string()))?;
    let mut signals = Signals::new();

    // Meta first: everyone else needs its address. After the first start it
    // keeps its port, so restarts are invisible to the other components.
    let meta_log = opts.data_dir.join("logs").join("meta.log");
    let meta_args = vec!["--data-dir".to_string(), opts.data_dir.join("meta").display().to_string()];
    let meta = supervisor::spawn(opts.exe.clone(), "meta", "meta", 0, meta_args.clone(), meta_log);
    let meta_addr = tokio::select! {
        r = meta.wait_ready(READY_TIMEOUT) => r.map_err(UpError)?,
        _ = signals.recv() => { meta.stop(STOP_TIMEOUT).await; return Ok(()); }
    };
    let meta_addr = meta_addr.get("grpc").cloned().ok_or_else(|| UpError("meta announced no address".into()))?;
    {
        let port = meta_addr.rsplit(':').next().unwrap_or("0").to_string();
        let mut args = meta.args.lock().unwrap();
        *args = [meta_args, vec!["--port".into(), port]].concat();
    }

    let state = Arc::new(AgentState {
        exe: opts.exe.clone(),
        data_dir: opts.data_dir.clone(),
        meta_addr: meta_addr.clone(),
        shards: opts.shards,
        data_engine_args: opts.data_engine_args.clone(),
        instances: RwLock::new(vec![meta.clone()]),
        router: Arc::new(Router::default()),
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
    let (agent_listener, agent_addr) = eon_common::node::bind("127.0.0.1", 0).await.map_err(|e| UpError(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent_service = AgentServer::new(AgentService { state: state.clone() });
    let mut agent_stop = stop_rx.clone();
    let agent_task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(agent_service)
            .serve_with_incoming_shutdown(eon_common::node::incoming(agent_listener), async move {
                let _ = agent_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let pg_task = tokio::spawn(router::serve(state.router.clone(), pg_listener, Protocol::Pg, stop_rx.clone()));
    let http_task = tokio::spawn(router::serve(state.router.clone(), http_listener, Protocol::Http, stop_rx.clone()));

    let ready = futures::future::try_join_all(starting.iter().map(|i| i.wait_ready(READY_TIMEOUT)));
    let outcome = tokio::select! {
        r = ready => r.map(|_| true).map_err(UpError),
        _ = signals.recv() => Ok(false),
    };
    let cluster = ClusterFile {
        pid: std::process::id(),
        agent: agent_addr.to_string(),
        meta: meta_addr,
        pg: pg_addr.to_string(),
        http: http_addr.to_string(),
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
    })
    .await;
    result
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
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn recv(&mut self) {
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
    async fn list(&self, _req: Request<pb::ListInstancesRequest>) -> Reply<pb::ListInstancesResponse> {
        let instances = self.state.instances.read().unwrap().iter().map(|i| i.to_proto()).collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }

    async fn start(&self, req: Request<pb::StartInstanceRequest>) -> Reply<pb::Instance> {
        let r = self.state.stats.start();
        let inst = self.state.start(&req.into_inner().kind).map_err(Status::invalid_argument)?;
        inst.wait_ready(READY_TIMEOUT).await.map_err(Status::unavailable)?;
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
            return Err(Status::failed_precondition("meta cannot be stopped while the cluster runs"));
        }
        let timeout = if req.timeout_ms == 0 { STOP_TIMEOUT } else { Duration::from_millis(req.timeout_ms as u64) };
        inst.stop(timeout).await;
        Ok(Response::new(inst.to_proto()))
    }

    async fn stats(&self, _req: Request<pb::StatsRequest>) -> Reply<pb::Stats> {
        let mut s = self.state.stats.snapshot(0);
        let instances = self.state.instances.read().unwrap();
        s.counters.insert("instances".into(), instances.len() as u64);
        s.counters.insert("restarts".into(), instances.iter().map(|i| i.status().restarts as u64).sum());
        Ok(Response::new(s))
    }
}
