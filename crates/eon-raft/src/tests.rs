//! Three replicas on real sockets: replication, failover, catching up from
//! the log and from a snapshot, compaction of the shared log.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::*;

/// A replicated list of notes; a command appends one and replies with the
/// new length.
#[derive(Default)]
struct Notes(Vec<String>);

impl Machine for Notes {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        self.0.push(String::from_utf8_lossy(command).into_owned());
        (self.0.len() as u64).to_le_bytes().to_vec()
    }
    fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&postcard::to_stdvec(&self.0).map_err(std::io::Error::other)?)
    }
    fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        self.0 = postcard::from_bytes(&bytes).map_err(std::io::Error::other)?;
        Ok(())
    }
}

const GROUP: GroupId = 7;

fn options() -> Options {
    Options {
        heartbeat: Duration::from_millis(50),
        append_deadline: Duration::from_millis(150),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        snapshot_every: 50,
        keep_behind_snapshot: 10,
        compact_bytes: 4 << 10,
        authorization: None,
        quiet: false,
    }
}

/// One process: a node, its group, its gRPC server.
struct Proc {
    node: Arc<Node>,
    raft: Raft,
    notes: Replica<Notes>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: NodeId, dir: &Path, addr: SocketAddr) -> Proc {
    start_with(id, dir, addr, options()).await
}

async fn start_with(id: NodeId, dir: &Path, addr: SocketAddr, options: Options) -> Proc {
    let node = Node::open(id, dir, options).unwrap();
    node.watch_peers();
    let (raft, notes) = node.start(GROUP, Notes::default()).await.unwrap();
    let (stop, server) = serve(&node, addr).await;
    Proc {
        node,
        raft,
        notes,
        stop: Some(stop),
        server,
    }
}

/// Three processes (nodes 1 to 3, in `tmp`) with `options`, the group
/// initialized on the first: their directories, addresses and processes.
async fn start_three(
    tmp: &Path,
    options: impl Fn() -> Options,
) -> (Vec<PathBuf>, Vec<SocketAddr>, Vec<Option<Proc>>) {
    let dirs: Vec<PathBuf> = (1..=3).map(|i| tmp.join(format!("n{i}"))).collect();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut procs = Vec::new();
    for i in 0..3 {
        procs.push(Some(
            start_with(i as NodeId + 1, &dirs[i], addrs[i], options()).await,
        ));
    }
    let members: BTreeMap<NodeId, String> = (0..3)
        .map(|i| (i as NodeId + 1, format!("http://{}", addrs[i])))
        .collect();
    let first = procs[0].as_ref().unwrap();
    first.node.initialize(GROUP, members).await.unwrap();
    (dirs, addrs, procs)
}

/// Serve `node`'s Raft service on `addr` until told to stop.
pub(crate) async fn serve(
    node: &Node,
    addr: SocketAddr,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    // The port was just freed by a stopped predecessor: retry briefly.
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener.expect("bind"));
    let (stop, stopped) = oneshot::channel::<()>();
    let service = node.service();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, server)
}

impl Proc {
    async fn stop(mut self) {
        self.node.shutdown().await;
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}

pub(crate) fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn leader(procs: &[Option<Proc>]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (i, p) in procs.iter().enumerate() {
            if let Some(p) = p
                && p.raft.current_leader().await == Some(p.node.id())
            {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(p: &Proc, note: String) -> u64 {
    let reply = p.raft.client_write(note.into_bytes()).await.unwrap();
    u64::from_le_bytes(reply.data.try_into().unwrap())
}

/// Wait until every running replica holds `n` notes, and check they are
/// the same notes.
async fn converged(procs: &[Option<Proc>], n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<Vec<String>> = procs
            .iter()
            .flatten()
            .map(|p| p.notes.read(|m| m.0.clone()))
            .collect();
        if states.iter().all(|s| s.len() == n) {
            assert!(states.windows(2).all(|w| w[0] == w[1]), "replicas differ");
            let want: Vec<String> = (0..n).map(|i| format!("note {i}")).collect();
            assert_eq!(states[0], want);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas did not converge to {n}: {:?}",
            states.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_replicate_fail_over_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, addrs, mut procs) = start_three(tmp.path(), options).await;

    // Replication: every write acknowledged by the leader reaches all.
    let l = leader(&procs).await;
    for i in 0..100 {
        let len = write(procs[l].as_ref().unwrap(), format!("note {i}")).await;
        assert_eq!(len, i + 1);
    }
    converged(&procs, 100).await;

    // Failover: stop the leader; the other two elect one and go on.
    let old = procs[l].take().unwrap();
    old.stop().await;
    let l2 = leader(&procs).await;
    assert_ne!(l2, l);
    for i in 100..200 {
        write(procs[l2].as_ref().unwrap(), format!("note {i}")).await;
    }
    converged(&procs, 200).await;

    // The stopped replica comes back from its own disk (log and snapshot)
    // and catches up; its peers purged the entries it missed behind their
    // snapshots, so it is sent a snapshot.
    let back = start(l as NodeId + 1, &dirs[l], addrs[l]).await;
    assert!(
        back.notes.read(|m| m.0.len()) >= 50,
        "restart lost the replica's state"
    );
    procs[l] = Some(back);
    converged(&procs, 200).await;
    assert!(procs[l].as_ref().unwrap().notes.snapshots_installed() >= 1);
    for i in 200..220 {
        let p = procs[leader(&procs).await].as_ref().unwrap();
        write(p, format!("note {i}")).await;
    }
    converged(&procs, 220).await;

    // The shared log was compacted along the way (in the background: give
    // the last compaction a moment): what is left of it is far smaller than
    // everything ever written.
    for dir in &dirs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let segments = eon_storage::wal::segments(&dir.join("log")).unwrap();
            if segments.len() <= 3 && segments[0] > 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{segments:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for p in procs.into_iter().flatten() {
        p.stop().await;
    }
}

/// Quiet groups: no message while idle, yet a leader lost is replaced and a
/// replica back from a restart catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_groups_are_silent_when_idle_and_still_fail_over() {
    let tmp = tempfile::tempdir().unwrap();
    let quiet = || Options {
        quiet: true,
        ..options()
    };
    let (dirs, addrs, mut procs) = start_three(tmp.path(), quiet).await;
    let l = leader(&procs).await;
    for i in 0..20 {
        write(procs[l].as_ref().unwrap(), format!("note {i}")).await;
    }
    converged(&procs, 20).await;

    // Idle: the group sends nothing (the processes beat to each other).
    let delivered = |procs: &[Option<Proc>]| -> u64 {
        procs.iter().flatten().map(|p| p.node.delivered()).sum()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = delivered(&procs);
    tokio::time::sleep(quiet::SILENCE * 2).await;
    assert_eq!(
        delivered(&procs),
        before,
        "an idle quiet group sent messages"
    );
    assert_eq!(
        leader(&procs).await,
        l,
        "an idle quiet group changed leaders"
    );

    // The leader's process stops: the others elect one and go on.
    let old = procs[l].take().unwrap();
    old.stop().await;
    let stopped = tokio::time::Instant::now();
    let l2 = leader(&procs).await;
    assert_ne!(l2, l);
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    for i in 20..40 {
        write(procs[l2].as_ref().unwrap(), format!("note {i}")).await;
    }
    converged(&procs, 40).await;

    // Back from a restart, it catches up though the group is idle again.
    procs[l] = Some(start_with(l as NodeId + 1, &dirs[l], addrs[l], quiet()).await);
    converged(&procs, 40).await;
    for p in procs.into_iter().flatten() {
        p.stop().await;
    }
}

/// The shared log alone: what a group wrote is what it reads back after a
/// reopen, through truncation, purging and compaction.
#[tokio::test]
async fn the_shared_log_survives_a_reopen() {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

    let tmp = tempfile::tempdir().unwrap();
    let entry = |term: u64, index: u64| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(format!("{term}/{index}").into_bytes()),
    };
    let append = |log: &mut log::GroupLog, entries: Vec<Entry<TypeConfig>>| {
        let wait = log.append_entries(entries).unwrap();
        async move { wait.await.unwrap() }
    };
    {
        let shared = log::SharedLog::open(tmp.path(), 1 << 30).unwrap();
        let mut a = log::GroupLog::new(1, shared.clone());
        let mut b = log::GroupLog::new(2, shared.clone());
        a.save_vote(&Vote::new(3, 1)).await.unwrap();
        append(&mut a, (1..=10).map(|i| entry(1, i)).collect()).await;
        append(&mut b, (1..=5).map(|i| entry(2, i)).collect()).await;
        // A new leader overrides a's entries from 8 on.
        a.truncate(LogId::new(CommittedLeaderId::new(1, 1), 8))
            .await
            .unwrap();
        append(&mut a, (8..=9).map(|i| entry(3, i)).collect()).await;
        a.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        shared.compact().await.unwrap();
        append(&mut b, vec![entry(2, 6)]).await;
    }
    let shared = log::SharedLog::open(tmp.path(), 1 << 30).unwrap();
    let mut a = log::GroupLog::new(1, shared.clone());
    let mut b = log::GroupLog::new(2, shared.clone());
    assert_eq!(a.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    let state = a.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    assert_eq!(
        state.last_log_id.map(|l| (l.leader_id.term, l.index)),
        Some((3, 9))
    );
    let got: Vec<(u64, u64)> = a
        .try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect();
    assert_eq!(got, vec![(1, 4), (1, 5), (1, 6), (1, 7), (3, 8), (3, 9)]);
    assert_eq!(b.try_get_log_entries(0..).await.unwrap().len(), 6);
    assert_eq!(b.read_vote().await.unwrap(), None);
}

/// A message to a follower carries about a megabyte of entries at most
/// (but always one), so large entries are not sent sixteen at a time.
#[tokio::test]
async fn a_message_carries_about_a_megabyte_of_entries() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};

    let tmp = tempfile::tempdir().unwrap();
    let shared = log::SharedLog::open(tmp.path(), 1 << 30).unwrap();
    let mut a = log::GroupLog::new(1, shared.clone());
    let entry = |index: u64, bytes: usize| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(vec![7; bytes]),
    };
    // Ten entries of 300 KB, then one of 3 MB, then small ones.
    let mut entries: Vec<_> = (1..=10).map(|i| entry(i, 300 << 10)).collect();
    entries.push(entry(11, 3 << 20));
    entries.extend((12..=20).map(|i| entry(i, 100)));
    a.append_entries(entries).unwrap().await.unwrap();
    let indexes =
        |es: Vec<Entry<TypeConfig>>| -> Vec<u64> { es.iter().map(|e| e.log_id.index).collect() };
    assert_eq!(
        indexes(a.limited_get_log_entries(1, 21).await.unwrap()),
        vec![1, 2, 3],
        "three 300 KB entries fit in a megabyte, four do not"
    );
    assert_eq!(
        indexes(a.limited_get_log_entries(10, 21).await.unwrap()),
        vec![10],
        "the 3 MB entry goes in a message of its own"
    );
    assert_eq!(
        indexes(a.limited_get_log_entries(11, 21).await.unwrap()),
        vec![11]
    );
    assert_eq!(
        indexes(a.limited_get_log_entries(12, 21).await.unwrap()),
        (12..=20).collect::<Vec<_>>()
    );
}
