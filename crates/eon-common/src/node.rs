//! What every component process does the same way: bind its gRPC listener,
//! find meta, register, heartbeat, tell its supervisor it is ready, and stop
//! when asked.
//!
//! Readiness is one line on standard output, `EON-READY {json}`, printed
//! once the process serves requests; the supervisor (`eon up`) waits for it
//! to learn the addresses the process chose. Logs go to standard error.
//!
//! Components prove to each other that they belong to the cluster with the
//! cluster's secret: `eon up` keeps it in `<data-dir>/cluster-secret`
//! (readable by its owner only) and gives it to the processes it starts in
//! the environment (`EON_CLUSTER_SECRET`, never on the command line, where
//! `ps` would show it). Every gRPC request carries it
//! (`authorization: Bearer …`, added by [`channel`]), and every component's
//! gRPC services refuse a request without it ([`SecretCheck`]) with
//! UNAUTHENTICATED — so a process that is not part of the cluster cannot
//! call a data engine, meta, a query engine or an agent. (`GET /metrics`
//! stays open: statistics only.) A component started by hand without a
//! secret accepts every caller, as before.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use eon_proto::v1 as pb;
use eon_proto::v1::meta_client::MetaClient;
use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use crate::error::{Error, Result};

/// How long a request to one of several replicas may take before the next
/// replica is tried (meta answers in milliseconds; a replica that takes
/// this long is frozen or cut off).
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(2);

/// The line prefix a process prints once it is ready.
pub const READY_PREFIX: &str = "EON-READY ";

/// Bind a TCP listener; port 0 picks a free port.
pub async fn bind(host: &str, port: u16) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((host, port))
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {host}:{port}: {e}")))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// The environment variable that hands a component the cluster's secret.
pub const SECRET_ENV: &str = "EON_CLUSTER_SECRET";

/// Where `eon up` keeps the cluster's secret, in its data dir.
pub const SECRET_FILE: &str = "cluster-secret";

static SECRET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// This process's cluster secret: the one set with [`set_cluster_secret`]
/// (the agent), else `EON_CLUSTER_SECRET` (the components it starts).
pub fn cluster_secret() -> Option<&'static str> {
    SECRET
        .get_or_init(|| std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// The secret of the cluster whose data dir is `data_dir` (for tools
/// that talk to its components from outside).
pub fn read_cluster_secret(data_dir: &Path) -> std::io::Result<String> {
    crate::scram::read_password(&data_dir.join(SECRET_FILE))
}

/// Make `secret` this process's cluster secret (before any channel is
/// made or service served; later calls change nothing).
pub fn set_cluster_secret(secret: String) {
    let _ = SECRET.set(Some(secret));
}

/// A gRPC channel whose requests carry a cluster secret.
pub type Channel = InterceptedService<Failover, WithSecret>;

/// An UNAVAILABLE answer may name the replica that leads now (its
/// host:port) in this metadata key; [`Failover`] goes there next.
pub const LEADER_HINT: &str = "eon-leader";

/// A channel to one of several replicas of a service (meta run as
/// `--meta 3`): requests go to one replica until it fails them (it cannot
/// be reached, does not answer in time, or answers UNAVAILABLE), then to the
/// next, or to the one the UNAVAILABLE answer names ([`LEADER_HINT`]). A failed request is not sent again — its caller sees the error and
/// may retry, which then goes to the next replica. With one address it is
/// just that address's channel.
///
/// Hand-rolled rather than tonic's `Channel::balance_list`: a balancer
/// spreads load over endpoints it believes healthy, and keeps picking a
/// lazily connected endpoint that is down or frozen; failing over in order
/// is what replicas behind a leader need.
#[derive(Clone)]
pub struct Failover {
    replicas: std::sync::Arc<[tonic::transport::Channel]>,
    /// Their addresses, in the same order.
    addrs: std::sync::Arc<[String]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Failover {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        // Readiness is awaited per request on the chosen replica's channel.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        use std::sync::atomic::Ordering;
        let n = self.replicas.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        let mut channel = self.replicas[i].clone();
        let current = self.current.clone();
        let addrs = self.addrs.clone();
        Box::pin(async move {
            let go = |to: usize| {
                let _ = current.compare_exchange(i, to, Ordering::Relaxed, Ordering::Relaxed);
            };
            let next = || go((i + 1) % n);
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            match channel.call(req).await {
                Ok(response) => {
                    // A trailers-only answer carries its status in the headers.
                    let unavailable = response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|v| v.as_bytes() == b"14");
                    if unavailable && n > 1 {
                        let hinted = response
                            .headers()
                            .get(LEADER_HINT)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|leader| addrs.iter().position(|a| a == leader));
                        match hinted {
                            Some(j) => go(j),
                            None => next(),
                        }
                    }
                    Ok(response)
                }
                Err(e) => {
                    if n > 1 {
                        next();
                    }
                    Err(e)
                }
            }
        })
    }
}

/// Adds the cluster secret to each request (see the module doc).
#[derive(Clone)]
pub struct WithSecret(Option<tonic::metadata::AsciiMetadataValue>);

impl Interceptor for WithSecret {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A lazily connecting gRPC channel to `addr` ("host:port"), with this
/// process's cluster secret.
pub fn channel(addr: &str) -> Result<Channel> {
    channel_with(addr, cluster_secret())
}

/// A lazily connecting gRPC channel to `addr` ("host:port") whose requests
/// carry `secret` (tools and tests that talk to a cluster of their choice).
/// `addr` may list several replicas, comma-separated (see [`Failover`]).
pub fn channel_with(addr: &str, secret: Option<&str>) -> Result<Channel> {
    let inner = failover(addr)?;
    let header = match secret {
        Some(s) => Some(
            format!("Bearer {s}")
                .parse()
                .map_err(|_| Error::internal("the cluster secret is not printable ASCII"))?,
        ),
        None => None,
    };
    Ok(InterceptedService::new(inner, WithSecret(header)))
}

/// The channel(s) to `addr`. Replicas' channels are made once per process
/// and shared, so one client's failover moves every client of the process
/// to the next replica.
fn failover(addr: &str) -> Result<Failover> {
    static SHARED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Failover>>,
    > = std::sync::OnceLock::new();
    let addrs: Vec<&str> = addr.split(',').map(str::trim).collect();
    let replicated = addrs.len() > 1;
    let mut shared = replicated.then(|| SHARED.get_or_init(Default::default).lock().unwrap());
    if let Some(f) = shared.as_ref().and_then(|s| s.get(addr)) {
        return Ok(f.clone());
    }
    let replicas = addrs
        .iter()
        .map(|addr| {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| Error::internal(format!("bad address {addr}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                // While a request is under way, ping every second: a peer
                // that is frozen (alive but silent, as a hung machine is)
                // fails the request within about three seconds, instead of
                // holding it until the kernel gives up on the connection.
                // (Not less: a peer busy with a big write may answer a ping
                // late.)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2));
            // A frozen replica must not hold a request forever: give up on
            // it, so the next request goes to another.
            let endpoint = if replicated {
                endpoint.timeout(REPLICA_TIMEOUT)
            } else {
                endpoint
            };
            Ok(endpoint.connect_lazy())
        })
        .collect::<Result<Vec<_>>>()?;
    let failover = Failover {
        replicas: replicas.into(),
        addrs: addrs.iter().map(|a| a.to_string()).collect(),
        current: Default::default(),
    };
    if let Some(shared) = shared.as_mut() {
        shared.insert(addr.to_string(), failover.clone());
    }
    Ok(failover)
}

/// A list of replicas, `id=host:port,…` (`eon meta --peers`, and the
/// agent's `meta-peers` file joined by commas) → host:port by id.
pub fn parse_replicas(
    text: &str,
) -> std::result::Result<std::collections::BTreeMap<u64, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not id=host:port"))?;
            let id = id
                .parse::<u64>()
                .map_err(|_| format!("{id:?} is not a replica id"))?;
            Ok((id, addr.to_string()))
        })
        .collect()
}

/// A component's gRPC service behind the cluster-secret check.
pub fn guarded<S>(service: S) -> InterceptedService<S, SecretCheck> {
    InterceptedService::new(service, SecretCheck::new())
}

/// Checks that a request carries the cluster secret: the interceptor of
/// every component's gRPC services (see [`guarded`]).
#[derive(Clone)]
pub struct SecretCheck(Option<std::sync::Arc<[u8]>>);

impl SecretCheck {
    /// A check against this process's cluster secret (none: let all in).
    pub fn new() -> SecretCheck {
        SecretCheck(cluster_secret().map(|s| format!("Bearer {s}").into_bytes().into()))
    }
}

impl Default for SecretCheck {
    fn default() -> Self {
        SecretCheck::new()
    }
}

impl Interceptor for SecretCheck {
    fn call(
        &mut self,
        req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let Some(expected) = &self.0 else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // In constant time: how much of a guess was right must not show.
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(
                "not a member of this cluster: the request lacks the cluster's secret",
            ))
        }
    }
}

pub fn meta_client(addr: &str) -> Result<MetaClient<Channel>> {
    Ok(MetaClient::new(channel(addr)?))
}

/// Register with meta, retrying until `deadline` passes (meta may be
/// starting too). Returns meta's current timestamp.
pub async fn register(
    meta: &mut MetaClient<Channel>,
    node: &pb::NodeInfo,
    deadline: Duration,
) -> Result<u64> {
    let start = tokio::time::Instant::now();
    loop {
        match meta
            .register_node(pb::RegisterNodeRequest {
                node: Some(node.clone()),
            })
            .await
        {
            Ok(r) => return Ok(r.into_inner().current_ts),
            Err(e) if start.elapsed() < deadline => {
                tracing::debug!("waiting for meta: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "cannot register with meta: {}",
                    e.message()
                )));
            }
        }
    }
}

/// What a heartbeat carries beyond "alive", and what is done with meta's
/// answer (data engines: their shard leaderships, and the catalog version).
pub trait HeartbeatExtra: Send + Sync + 'static {
    fn leading(&self) -> Vec<pb::ShardLeader>;
    fn answered(&self, response: &pb::HeartbeatResponse);
    /// Notified when there is news that should not wait for the next beat
    /// (a leadership taken over).
    fn news(&self) -> &tokio::sync::Notify;
}

/// Heartbeat meta every 500 ms for as long as the process runs, registering
/// again whenever meta does not know the node (meta restarted).
pub fn spawn_heartbeat(meta: MetaClient<Channel>, node: pb::NodeInfo) {
    spawn_heartbeat_with(meta, node, None)
}

/// [`spawn_heartbeat`], with more to say (see [`HeartbeatExtra`]).
pub fn spawn_heartbeat_with(
    mut meta: MetaClient<Channel>,
    node: pb::NodeInfo,
    extra: Option<std::sync::Arc<dyn HeartbeatExtra>>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            match &extra {
                Some(extra) => {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = extra.news().notified() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            let hb = pb::HeartbeatRequest {
                kind: node.kind,
                id: node.id,
                leading: extra.as_ref().map(|e| e.leading()).unwrap_or_default(),
            };
            let answer = meta.heartbeat(hb).await;
            if let (Some(extra), Ok(r)) = (&extra, &answer) {
                extra.answered(r.get_ref());
            }
            match answer {
                Ok(r) if r.get_ref().known => {}
                Ok(_) => {
                    let _ = meta
                        .register_node(pb::RegisterNodeRequest {
                            node: Some(node.clone()),
                        })
                        .await;
                }
                Err(e) => tracing::debug!("heartbeat failed: {e}"),
            }
        }
    });
}

/// Print the readiness line for the supervisor.
pub fn announce_ready(fields: &[(&str, String)]) {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    println!("{READY_PREFIX}{}", serde_json::Value::Object(map));
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Serve a listener as a tonic incoming stream. Accepted sockets get
/// TCP_NODELAY: a scan answers with several small messages, and Nagle's
/// algorithm would hold the last one back for a delayed ACK (~40 ms).
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Take an exclusive lock on `dir` (a `LOCK` file in it) for as long as the
/// returned file stays open, so two processes never share a directory.
pub fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            Error::user(
                crate::error::sqlstate::INVALID_PARAMETER_VALUE,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::user(
            crate::error::sqlstate::INVALID_PARAMETER_VALUE,
            format!("{} is in use by another eon process", dir.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// The HTTP routes every component serves on its gRPC port besides its
/// interface: `GET /metrics`, its [`Stats`](crate::stats) as Prometheus
/// text. (The gRPC server must accept HTTP/1.1 for curl and Prometheus:
/// `Server::builder().accept_http1(true)`.)
pub fn metrics_routes(
    snapshot: impl Fn() -> eon_proto::v1::Stats + Clone + Send + Sync + 'static,
) -> tonic::service::Routes {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let snapshot = snapshot.clone();
            async move {
                let s = snapshot();
                let text = crate::stats::prometheus(&[(crate::stats::instance_name(&s), s)]);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    );
    tonic::service::Routes::from(router)
}

/// A port nobody listens on now, for a process that will bind it soon. The
/// kernel may hand the same free port to two binds in a row, so ports this
/// process handed out recently are not handed out again.
pub fn free_port() -> std::io::Result<u16> {
    static RECENT: std::sync::Mutex<std::collections::VecDeque<u16>> =
        std::sync::Mutex::new(std::collections::VecDeque::new());
    let mut recent = RECENT.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        if !recent.contains(&port) {
            if recent.len() == 1024 {
                recent.pop_front();
            }
            recent.push_back(port);
            return Ok(port);
        }
    }
}

/// The host part of `host:port` (an IPv6 address may be bracketed): a
/// component's host, from the address it registered.
pub fn host_of(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']').into(),
        None => address.into(),
    }
}
