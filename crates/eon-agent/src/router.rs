//! The router: the public PostgreSQL and REST ports of a local cluster.
//!
//! Clients connect to one address whatever the number of query engines; the
//! router hands each new connection to the running query engine with the
//! fewest open connections (least-connections) and then copies bytes both
//! ways. While no query engine is ready (at start, or during a restart) a
//! new connection is held for up to [`HOLD`] before it is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::supervisor::{Instance, State};

/// How long a connection waits for a query engine to become ready.
pub const HOLD: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Router {
    pub engines: RwLock<Vec<Arc<Instance>>>,
    active: Mutex<HashMap<String, usize>>,
}

/// Which port of a query engine a connection goes to.
#[derive(Clone, Copy)]
pub enum Protocol {
    Pg,
    Http,
}

impl Protocol {
    fn key(self) -> &'static str {
        match self {
            Protocol::Pg => "pg",
            Protocol::Http => "http",
        }
    }
}

/// Decrements the connection count of an engine when the connection ends.
struct Lease {
    router: Arc<Router>,
    name: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(n) = self.router.active.lock().unwrap().get_mut(&self.name) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Router {
    /// The least-loaded running engine's address for `proto`.
    fn pick(self: &Arc<Self>, proto: Protocol) -> Option<(Lease, String)> {
        let engines = self.engines.read().unwrap();
        let mut active = self.active.lock().unwrap();
        let best = engines
            .iter()
            .filter_map(|e| {
                let s = e.status();
                (s.state == State::Running).then(|| s.addresses.get(proto.key()).cloned()).flatten().map(|a| (e.name.clone(), a))
            })
            .min_by_key(|(name, _)| active.get(name).copied().unwrap_or(0))?;
        *active.entry(best.0.clone()).or_default() += 1;
        Some((Lease { router: self.clone(), name: best.0 }, best.1))
    }

    async fn pick_or_wait(self: &Arc<Self>, proto: Protocol) -> Option<(Lease, String)> {
        let deadline = tokio::time::Instant::now() + HOLD;
        loop {
            if let Some(p) = self.pick(proto) {
                return Some(p);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Accept connections on `listener` and proxy them until `stop` fires.
pub async fn serve(router: Arc<Router>, listener: TcpListener, proto: Protocol, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let router = router.clone();
                tokio::spawn(async move { proxy(router, client, proto).await });
            }
        }
    }
}

async fn proxy(router: Arc<Router>, mut client: TcpStream, proto: Protocol) {
    let _ = client.set_nodelay(true);
    let Some((_lease, addr)) = router.pick_or_wait(proto).await else {
        refuse(client, proto).await;
        return;
    };
    match TcpStream::connect(&addr).await {
        Ok(mut upstream) => {
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        Err(e) => {
            tracing::warn!(%addr, "query engine unreachable: {e}");
            refuse(client, proto).await;
        }
    }
}

/// Tell the client no query engine is available, in its own protocol.
async fn refuse(mut client: TcpStream, proto: Protocol) {
    match proto {
        Protocol::Http => {
            let body = r#"{"error":{"code":"57P03","message":"no query engine is available"}}"#;
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes()).await;
        }
        Protocol::Pg => {
            // An ErrorResponse before authentication: severity, SQLSTATE,
            // message.
            let mut fields = Vec::new();
            for (tag, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "57P03"), (b'M', "no query engine is available")] {
                fields.push(tag);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
            msg.extend_from_slice(&fields);
            let _ = client.write_all(&msg).await;
        }
    }
    let _ = client.shutdown().await;
}
