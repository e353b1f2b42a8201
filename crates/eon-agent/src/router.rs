//! The router: the public PostgreSQL port of a cluster.
//!
//! Clients connect to one address whatever the number of query engines; the
//! router hands each new connection to a query engine of its [`Pool`] (least
//! open connections of two random choices) and then copies bytes both ways.
//! While no query engine is ready (at start, or during a restart) a new
//! connection is held for up to [`HOLD`] before it is refused with SQLSTATE
//! 57P03. (The REST port spreads each HTTP *request* the same way; see
//! `ingress`.)

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::ingress::Pool;

/// How long a connection waits for a query engine to become ready.
pub const HOLD: Duration = Duration::from_secs(10);

/// Accept PostgreSQL connections on `listener` and proxy each, whole, to a
/// query engine of `pool` until `stop` fires.
pub async fn serve_pg(
    pool: Arc<Pool>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let pool = pool.clone();
                tokio::spawn(async move { proxy(pool, client).await });
            }
        }
    }
}

async fn proxy(pool: Arc<Pool>, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let tracked = pool.stats.start();
    let mut tried = Vec::new();
    loop {
        let Ok((lease, addr)) = pool.pick_or_hold(&tried).await else {
            refuse(client).await;
            return;
        };
        match TcpStream::connect(&addr).await {
            Ok(mut upstream) => {
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                tracked.ok();
                return;
            }
            Err(e) if tried.len() < 3 => {
                tracing::warn!(%addr, "query engine unreachable, trying another: {e}");
                tried.push(lease.backend.instance.name.clone());
            }
            Err(e) => {
                tracing::warn!(%addr, "query engine unreachable: {e}");
                refuse(client).await;
                return;
            }
        }
    }
}

/// Tell the client no query engine is available: an ErrorResponse before
/// authentication (severity, SQLSTATE, message).
async fn refuse(mut client: TcpStream) {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P03"),
        (b'M', "no query engine is available"),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&fields);
    let _ = client.write_all(&msg).await;
    let _ = client.shutdown().await;
}
