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

/// PostgreSQL's CancelRequest: length 16, code 80877102, then the process
/// id and secret key of the connection to cancel.
const CANCEL_REQUEST: [u8; 8] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];

/// A cancel request arrives on a connection of its own, so it may land on
/// another query engine than the session it names: it goes to every query
/// engine (only the one holding that process id and key acts on it).
async fn forward_cancel(pool: &Pool, client: &mut TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = [0u8; 16];
    if client.read_exact(&mut request).await.is_err() {
        return;
    }
    for addr in pool.addresses() {
        if let Ok(Ok(mut upstream)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), TcpStream::connect(&addr)).await
        {
            let _ = upstream.write_all(&request).await;
            let _ = upstream.shutdown().await;
        }
    }
}

async fn proxy(pool: Arc<Pool>, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let mut first = [0u8; 8];
    let peeked =
        tokio::time::timeout(std::time::Duration::from_secs(5), client.peek(&mut first)).await;
    if let Ok(Ok(8)) = peeked {
        if first == CANCEL_REQUEST {
            forward_cancel(&pool, &mut client).await;
            return;
        }
    }
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
