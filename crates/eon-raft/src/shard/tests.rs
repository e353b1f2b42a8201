//! Three data engines' stores replicating one shard over real sockets:
//! one-phase and two-phase writes, a write at a follower, failover, and a
//! stopped replica catching up after a restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Bound, Range};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eon_common::Value;
use eon_common::key::Key;
use eon_storage::{Store, StoreOptions, TxnStatus, WriteKind, WriteMeta, WriteOp};
use tokio::sync::oneshot;

use super::*;
use crate::tests::{free_addr, serve};
use crate::{NodeId, Options};

const SHARD: ShardId = (5, 0);

fn options() -> Options {
    Options {
        heartbeat: Duration::from_millis(50),
        append_deadline: Duration::from_millis(150),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        snapshot_every: 20,
        keep_behind_snapshot: 5,
        compact_bytes: 64 << 10,
        authorization: None,
        quiet: false,
    }
}

/// One data engine: its store, its Raft node with the shard's replica, its
/// gRPC server.
struct Engine {
    id: NodeId,
    node: Arc<Node>,
    store: Arc<Store>,
    group: Arc<ShardGroup>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: NodeId, dir: &Path, addr: SocketAddr) -> Engine {
    let store = Arc::new(Store::open(&dir.join("store"), StoreOptions::default()).unwrap());
    let node = Node::open(id, &dir.join("raft"), options()).unwrap();
    let (_, group) = start_shard(&node, store.clone(), SHARD).await.unwrap();
    let (stop, server) = serve(&node, addr).await;
    Engine {
        id,
        node,
        store,
        group,
        stop: Some(stop),
        server,
    }
}

impl Engine {
    async fn stop(mut self) {
        self.node.shutdown().await;
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }

    async fn leads(&self) -> bool {
        self.group.raft().unwrap().current_leader().await == Some(self.id)
    }

    /// The keys visible now.
    fn keys(&self) -> Vec<i64> {
        let chunk = self
            .store
            .scan_chunk(
                SHARD,
                eon_common::unix_us(),
                None,
                (Bound::Unbounded, Bound::Unbounded),
                &[0, 1],
                usize::MAX,
                |rows| {
                    rows.iter()
                        .map(|r| match r[0] {
                            Value::Int(i) => i,
                            ref v => panic!("unexpected {v:?}"),
                        })
                        .collect::<Vec<_>>()
                },
            )
            .unwrap();
        chunk.out
    }
}

fn key(i: i64) -> Key {
    eon_common::key::encode_key([&Value::Int(i)]).unwrap()
}

fn insert(keys: Range<i64>) -> Vec<WriteOp> {
    vec![WriteOp {
        shard: SHARD,
        kind: WriteKind::Insert,
        rows: keys
            .map(|i| {
                (
                    key(i),
                    Some(vec![Value::Int(i), Value::Text(format!("row {i}"))]),
                )
            })
            .collect(),
    }]
}

fn meta(txn: u64, one_phase: bool) -> WriteMeta {
    WriteMeta {
        txn,
        read_ts: eon_common::unix_us(),
        one_phase,
        anchor: if one_phase { 0 } else { 1 },
        is_anchor: !one_phase,
        seq: 1,
    }
}

async fn leader(engines: &[Option<Engine>]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (i, e) in engines.iter().enumerate() {
            if let Some(e) = e
                && e.leads().await
            {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until every running engine shows exactly `want`.
async fn converged(engines: &[Option<Engine>], want: &[i64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen: Vec<Vec<i64>> = engines.iter().flatten().map(|e| e.keys()).collect();
        if seen.iter().all(|s| s == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas did not converge: {:?}",
            seen.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicated_shard_survives_its_leader_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..3).map(|i| tmp.path().join(format!("e{i}"))).collect();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut engines: Vec<Option<Engine>> = Vec::new();
    for i in 0..3 {
        engines.push(Some(start(i as u64 + 1, &dirs[i], addrs[i]).await));
    }
    let members: BTreeMap<NodeId, String> = (0..3)
        .map(|i| (i as u64 + 1, format!("http://{}", addrs[i])))
        .collect();
    let group = group_of(SHARD.0, SHARD.1);
    engines[0]
        .as_ref()
        .unwrap()
        .node
        .initialize(group, members)
        .await
        .unwrap();

    // One-phase writes, one row each: enough entries for snapshots.
    let l = leader(&engines).await;
    let store = engines[l].as_ref().unwrap().store.clone();
    for i in 0..60 {
        store
            .write(meta(i as u64 + 1, true), insert(i..i + 1))
            .await
            .unwrap();
    }
    // A duplicate key is refused, and nothing of it stays.
    let dup = store.write(meta(500, true), insert(59..61)).await;
    assert!(
        matches!(dup, Err(eon_storage::Error::Duplicate { .. })),
        "{dup:?}"
    );

    // A two-phase transaction that commits; its record lives in the group.
    let txn = 1000;
    store
        .write(meta(txn, false), insert(100..105))
        .await
        .unwrap();
    let min = store.finalize(txn).await.unwrap();
    let ts = min.max(eon_common::unix_us());
    assert_eq!(
        store.end_txn(txn, Some(ts)).await.unwrap(),
        TxnStatus::Committed(ts)
    );
    store.commit(txn, ts).await.unwrap();
    // One that aborts.
    store
        .write(meta(2000, false), insert(200..203))
        .await
        .unwrap();
    store.abort(2000).await.unwrap();

    // A follower refuses writes and names the leader.
    let f = (l + 1) % 3;
    let refused = engines[f]
        .as_ref()
        .unwrap()
        .store
        .write(meta(3000, true), insert(300..301))
        .await;
    let leader_id = engines[l].as_ref().unwrap().id;
    assert!(
        matches!(refused, Err(eon_storage::Error::NotLeader(Some(id))) if id == leader_id),
        "{refused:?}"
    );

    let mut want: Vec<i64> = (0..60).chain(100..105).collect();
    converged(&engines, &want).await;

    // The leader stops; another takes over and writes go on.
    engines[l].take().unwrap().stop().await;
    drop(store);
    let l2 = leader(&engines).await;
    let store = engines[l2].as_ref().unwrap().store.clone();
    assert_eq!(
        store.record(txn).map(|r| r.status),
        Some(TxnStatus::Committed(ts)),
        "the new leader has the transaction's record"
    );
    for i in 60..100 {
        store
            .write(meta(i as u64 + 1, true), insert(i..i + 1))
            .await
            .unwrap();
    }
    want = (0..105).collect();
    converged(&engines, &want).await;

    // The stopped engine comes back from its own disk and catches up.
    engines[l] = Some(start(leader_id, &dirs[l], addrs[l]).await);
    converged(&engines, &want).await;

    // Every engine stops and comes back: each rebuilds the shard from its
    // group's snapshot and log alone, and the group takes writes again.
    for e in engines.iter_mut() {
        e.take().unwrap().stop().await;
    }
    drop(store);
    for i in 0..3 {
        engines[i] = Some(start(i as u64 + 1, &dirs[i], addrs[i]).await);
    }
    converged(&engines, &want).await;
    let l3 = leader(&engines).await;
    let store = engines[l3].as_ref().unwrap().store.clone();
    store
        .write(meta(4000, true), insert(105..106))
        .await
        .unwrap();
    want.push(105);
    converged(&engines, &want).await;
    drop(store);
    for e in engines.into_iter().flatten() {
        e.stop().await;
    }
}
