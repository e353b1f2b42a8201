//! Spreading requests over instances: the pools behind eon's public ports.
//!
//! A [`Pool`] is the set of instances that serve one thing — the query
//! engines behind the PostgreSQL and REST ports, or the instances of one
//! front end behind the ingress port. Every request (every connection, for
//! the PostgreSQL wire) goes to one of them, chosen by *least in-flight over
//! two random choices* (Envoy's least-request balancer): pick two ready
//! instances at random and take the one with fewer requests in flight. It
//! spreads load nearly as well as scanning every instance, without herding
//! all new requests onto the one instance that just looked idlest.
//!
//! Three rules make scaling invisible to clients:
//!
//! - **Only ready instances get traffic.** An instance enters the choice
//!   when it is running (an eon component announced itself; a front end
//!   passed its readiness check) and leaves it when it fails, restarts or
//!   is drained.
//! - **Requests wait for a first instance.** When nothing is ready — a
//!   front end scaled to zero, a query engine restarting — a request is held
//!   (at most [`Pool::hold_limit`] of them, each at most
//!   [`Pool::hold_timeout`]) until one is; past either bound it gets
//!   `503 Service Unavailable` with `Retry-After`. Held requests count as
//!   load, which is what wakes a front end scaled to zero.
//! - **Draining before stopping.** Scale-down first marks an instance
//!   draining (no new requests), waits for its in-flight requests to finish,
//!   and only then signals it (see `frontends`). A request whose connection
//!   is refused (an instance that died) is retried on another instance.
//!
//! HTTP is proxied per request with hyper (client connections pooled per
//! instance); request bodies are read whole first (up to [`MAX_BODY`]) so
//! a refused connection can be retried elsewhere.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use eon_common::stats::Recorder;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use tokio::net::TcpListener;

use crate::supervisor::{Instance, State};

/// The largest request body the proxy accepts.
pub const MAX_BODY: usize = 16 << 20;

/// A response body: streamed from an instance, or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// One instance in a pool.
pub struct Backend {
    pub instance: Arc<Instance>,
    in_flight: AtomicU64,
    draining: AtomicBool,
    /// Started from an older version of the recipe; replaced once the new
    /// version's instances are ready.
    pub outdated: AtomicBool,
}

impl Backend {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
    pub fn ready(&self) -> bool {
        self.instance.status().state == State::Running
    }
}

/// Instances serving one thing, and the requests waiting for them.
pub struct Pool {
    pub name: String,
    /// Its `instance` label in statistics.
    label: String,
    /// Its instances are users' front ends (whose CPU and memory are
    /// theirs, not the agent's).
    frontend: bool,
    /// Which announced address of an instance to use ("pg", "http").
    key: &'static str,
    backends: RwLock<Vec<Arc<Backend>>>,
    held: AtomicU64,
    /// At most this many requests wait for an instance …
    pub hold_limit: u64,
    /// … each at most this long.
    pub hold_timeout: RwLock<Duration>,
    /// Requests through this pool (the front end's statistics as the
    /// ingress sees them).
    pub stats: Arc<Recorder>,
}

/// Why no instance was found for a request.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// Too many requests are already waiting.
    Full,
    /// No instance became ready in time.
    Timeout,
}

/// A request's claim on an instance; dropping it ends the request.
pub struct Lease {
    pub backend: Arc<Backend>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(
        name: &str,
        key: &'static str,
        component: &'static str,
        hold_timeout: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            name: name.into(),
            label: if component == "router" {
                format!("router-{key}")
            } else {
                name.to_string()
            },
            frontend: component == "frontend",
            key,
            backends: RwLock::new(Vec::new()),
            held: AtomicU64::new(0),
            hold_limit: 1024,
            hold_timeout: RwLock::new(hold_timeout),
            stats: Recorder::new(component, 0),
        })
    }

    pub fn add(&self, instance: Arc<Instance>) -> Arc<Backend> {
        let b = Arc::new(Backend {
            instance,
            in_flight: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            outdated: AtomicBool::new(false),
        });
        self.backends.write().unwrap().push(b.clone());
        b
    }

    /// Take an instance out of the choice; requests already on it go on.
    pub fn drain(&self, backend: &Backend) {
        backend.draining.store(true, Ordering::Relaxed);
    }

    pub fn remove(&self, name: &str) {
        self.backends
            .write()
            .unwrap()
            .retain(|b| b.instance.name != name);
    }

    pub fn find(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends
            .read()
            .unwrap()
            .iter()
            .find(|b| b.instance.name == name)
            .cloned()
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.backends.read().unwrap().clone()
    }

    /// Requests in flight on instances plus requests waiting for one.
    pub fn load(&self) -> u64 {
        let on = self
            .backends
            .read()
            .unwrap()
            .iter()
            .map(|b| b.in_flight())
            .sum::<u64>();
        on + self.held()
    }

    /// The requests through this pool as one `Stats` (a front end's, as the
    /// ingress counts them), with its `instance` label.
    pub fn snapshot(&self) -> (String, eon_proto::v1::Stats) {
        self.stats.set_queue_depth(self.held());
        let mut s = self.stats.snapshot(0);
        let backends = self.backends.read().unwrap();
        s.counters.insert("instances".into(), backends.len() as u64);
        if self.frontend {
            // A front end's memory and CPU are its instances' processes'
            // (not the agent's).
            let usage = backends
                .iter()
                .map(|b| eon_common::stats::process_usage_of(&b.instance.status().pid.to_string()));
            (s.memory_bytes, s.cpu_seconds) =
                usage.fold((0, 0.0), |(m, c), (m2, c2)| (m + m2, c + c2));
        }
        drop(backends);
        (self.label.clone(), s)
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Least in-flight of two random ready instances (skipping `exclude`).
    /// The addresses of every running instance, draining ones included
    /// (they still have clients).
    pub fn addresses(&self) -> Vec<String> {
        self.backends
            .read()
            .unwrap()
            .iter()
            .filter_map(|b| {
                let s = b.instance.status();
                (s.state == State::Running)
                    .then(|| s.addresses.get(self.key).cloned())
                    .flatten()
            })
            .collect()
    }

    pub fn pick(&self, exclude: &[String]) -> Option<(Lease, String)> {
        let backends = self.backends.read().unwrap();
        let ready: Vec<(&Arc<Backend>, String)> = backends
            .iter()
            .filter(|b| !b.draining() && !exclude.contains(&b.instance.name))
            .filter_map(|b| {
                let s = b.instance.status();
                (s.state == State::Running)
                    .then(|| s.addresses.get(self.key).cloned())
                    .flatten()
                    .map(|a| (b, a))
            })
            .collect();
        let (b, addr) = match ready.len() {
            0 => return None,
            1 => &ready[0],
            n => {
                let mut rng = rand::rng();
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..n)) % n;
                if ready[j].0.in_flight() < ready[i].0.in_flight() {
                    &ready[j]
                } else {
                    &ready[i]
                }
            }
        };
        b.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((
            Lease {
                backend: (*b).clone(),
            },
            addr.clone(),
        ))
    }

    /// [`Pool::pick`], waiting (bounded) while no instance is ready.
    pub async fn pick_or_hold(&self, exclude: &[String]) -> Result<(Lease, String), Refused> {
        if let Some(p) = self.pick(exclude) {
            return Ok(p);
        }
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.hold_limit {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        struct Held<'a>(&'a AtomicU64);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _held = Held(&self.held);
        let deadline = tokio::time::Instant::now() + *self.hold_timeout.read().unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(p) = self.pick(exclude) {
                return Ok(p);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Refused::Timeout);
            }
        }
    }
}

/// Wait until no request is in flight on any of `backends` (drained ones,
/// whose requests are finishing), or `timeout` has passed.
pub async fn wait_idle(backends: &[&Arc<Backend>], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while backends.iter().any(|b| b.in_flight() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The HTTP client the proxy and the health checks use.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// `GET http://addr/path` answers 2xx (a readiness or liveness check).
pub async fn http_get_ok(addr: &str, path: &str) -> bool {
    static CLIENT: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(http_client);
    let Ok(req) = Request::get(format!("http://{addr}{path}")).body(Full::new(Bytes::new())) else {
        return false;
    };
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

/// `GET http://addr/path`'s body, when it answers 2xx.
pub async fn http_get_text(client: &HttpClient, addr: &str, path: &str) -> Option<String> {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// A response made here (not by an instance).
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    r
}

/// A JSON error in the shape of eon's REST API.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    respond(status, "application/json", body.to_string())
}

fn unavailable(pool: &Pool, why: Refused) -> Response<Body> {
    let message = match why {
        Refused::Full => format!(
            "{}: too many requests are waiting for an instance",
            pool.name
        ),
        Refused::Timeout => format!("{}: no instance became ready in time", pool.name),
    };
    let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, "57P03", &message);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Headers that belong to one hop, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// A streamed response body that holds its instance's lease until the last
/// byte (so a long download counts as in flight, and drains wait for it).
struct LeasedBody {
    inner: Incoming,
    _lease: Lease,
}

impl http_body::Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Forward `req` to an instance of `pool`, with `strip` removed from the
/// front of its path (a front end sees `/` for the ingress's `/<prefix>/`;
/// the prefix goes in `X-Forwarded-Prefix`).
pub async fn proxy(
    client: &HttpClient,
    pool: &Arc<Pool>,
    req: Request<Incoming>,
    strip: &str,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let tracked = pool.stats.start();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "54000",
                &format!("request body larger than {MAX_BODY} bytes"),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let path = match path.strip_prefix(strip) {
        Some(rest) if !strip.is_empty() => {
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        }
        _ => path.to_string(),
    };
    let mut tried: Vec<String> = Vec::new();
    loop {
        let (lease, addr) = match pool.pick_or_hold(&tried).await {
            Ok(p) => p,
            Err(why) => return unavailable(pool, why),
        };
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(format!("http://{addr}{path}"));
        for (name, value) in parts.headers.iter() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                out = out.header(name, value);
            }
        }
        out = out.header("x-forwarded-for", peer.ip().to_string());
        if !strip.is_empty() {
            out = out.header("x-forwarded-prefix", strip);
        }
        let out = match out.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "22023",
                    &format!("cannot forward this request: {e}"),
                );
            }
        };
        match client.request(out).await {
            Ok(resp) => {
                if !resp.status().is_server_error() {
                    tracked.ok();
                }
                let (mut head, inner) = resp.into_parts();
                for h in HOP_BY_HOP {
                    head.headers.remove(h);
                }
                return Response::from_parts(
                    head,
                    LeasedBody {
                        inner,
                        _lease: lease,
                    }
                    .boxed(),
                );
            }
            // Refused before anything was sent (the instance is gone): try
            // another one.
            Err(e) if e.is_connect() && tried.len() < 3 => {
                tracing::debug!(pool = %pool.name, instance = %lease.backend.instance.name, "connect failed, retrying: {e}");
                tried.push(lease.backend.instance.name.clone());
            }
            Err(e) => {
                let name = lease.backend.instance.name.clone();
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    "08006",
                    &format!("{}: instance {name} failed: {e}", pool.name),
                );
            }
        }
    }
}

/// What answers an HTTP request on a public port.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, std::net::SocketAddr) -> BoxFuture<'static, Response<Body>>
        + Send
        + Sync,
>;

/// What a public HTTP port offers besides plain HTTP.
#[derive(Clone, Default)]
pub struct Doors {
    /// HTTPS on the same port: a connection whose first byte starts a TLS
    /// handshake is served over TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Plain HTTP requests get 400 and a JSON error instead.
    pub require_tls: bool,
}

/// Serve HTTP/1.1 (and HTTPS, per `doors`) on `listener` with `handler`
/// until `stop` fires.
pub async fn serve_http(
    listener: TcpListener,
    handler: Handler,
    doors: Doors,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let doors = doors.clone();
                tokio::spawn(async move {
                    let tls = match &doors.tls {
                        Some(acceptor) if eon_common::tls::starts_tls(&stream).await => {
                            match acceptor.accept(stream).await {
                                Ok(tls) => Ok(tls),
                                Err(e) => {
                                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                                    return;
                                }
                            }
                        }
                        _ => Err(stream),
                    };
                    let handler = if tls.is_err() && doors.require_tls {
                        plain_refused()
                    } else {
                        handler
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let fut = handler(req, peer);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.keep_alive(true);
                    let _ = match tls {
                        Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                        Err(plain) => http.serve_connection(TokioIo::new(plain), service).await,
                    };
                });
            }
        }
    }
}

/// The answer to plain HTTP on a port that requires TLS.
fn plain_refused() -> Handler {
    Arc::new(|_req, _peer| {
        Box::pin(async {
            json_error(
                StatusCode::BAD_REQUEST,
                "28000",
                "this port accepts HTTPS only (eon up --require-tls)",
            )
        })
    })
}
