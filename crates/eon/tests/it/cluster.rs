//! `eon up` and `eon status`: start, stop, restart, supervision, and
//! refusing bad starts with one clear line.

use std::process::Command;
use std::time::Duration;

use eon_testkit::{TestCluster, eon_bin, free_port};

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a running process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn status_stop_and_restart_keep_every_row() {
    let mut cluster = TestCluster::start().unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute("CREATE TABLE kept (id bigint PRIMARY KEY, v text)")
        .await
        .unwrap();
    let stmt = client
        .prepare("INSERT INTO kept VALUES ($1, $2)")
        .await
        .unwrap();
    for i in 0..200i64 {
        client
            .execute(&stmt, &[&i, &format!("row {i}")])
            .await
            .unwrap();
    }

    // `eon status` shows every component and where the shards are.
    let out = Command::new(eon_bin())
        .args(["status", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in [
        "meta",
        "data-engine-1",
        "data-engine-2",
        "data-engine-3",
        "query-engine-1",
        "public.kept",
    ] {
        assert!(text.contains(name), "status lacks {name}:\n{text}");
    }
    assert_eq!(text.matches("running").count(), 5, "{text}");
    assert!(text.contains("data-engine-1: ["), "{text}");

    // A graceful stop leaves no process behind.
    let pids: Vec<u32> = cluster
        .instances()
        .await
        .unwrap()
        .iter()
        .map(|i| i.pid)
        .collect();
    let up = cluster.up_pid().unwrap();
    drop(client);
    let status = cluster.stop().unwrap();
    assert!(status.success(), "eon up exited with {status}");
    for pid in pids.iter().chain([&up]) {
        assert!(!alive(*pid), "process {pid} outlived eon up");
    }
    assert!(!cluster.dir.join("cluster.json").exists());

    // Everything comes back.
    let mut cluster = TestCluster::builder()
        .dir(&cluster.dir.clone())
        .start()
        .unwrap();
    let client = cluster.pg().await.unwrap();
    let row = client
        .query_one("SELECT count(*), sum(id) FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 200);
    assert_eq!(row.get::<_, i64>(1), (0..200).sum::<i64>());
    let v: String = client
        .query_one("SELECT v FROM kept WHERE id = 123", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "row 123");
    // And the restarted cluster still writes.
    client
        .execute("INSERT INTO kept VALUES (1000, 'after')", &[])
        .await
        .unwrap();
    cluster.stop().unwrap();
}

#[tokio::test]
async fn crashed_components_are_restarted() {
    let cluster = TestCluster::start().unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE crash (id int PRIMARY KEY); INSERT INTO crash VALUES (1), (2), (3)",
        )
        .await
        .unwrap();
    drop(client);
    cluster
        .kill_and_wait_restart("data-engine-2")
        .await
        .unwrap();
    cluster
        .kill_and_wait_restart("query-engine-1")
        .await
        .unwrap();
    // The new query engine and data engine serve; the router found the new
    // query engine on its new port.
    let client = cluster.pg().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM crash", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let instances = cluster.instances().await.unwrap();
    for name in ["data-engine-2", "query-engine-1"] {
        let i = instances.iter().find(|i| i.name == name).unwrap();
        assert_eq!(i.restarts, 1, "{name} restarts");
        let log = std::fs::read_to_string(&i.log_path).unwrap();
        assert!(
            log.contains("exited unexpectedly: killed by signal 9"),
            "{name} log:\n{log}"
        );
    }
}

#[tokio::test]
async fn ctrl_c_stops_every_child() {
    let mut cluster = TestCluster::start().unwrap();
    let pids: Vec<u32> = cluster
        .instances()
        .await
        .unwrap()
        .iter()
        .map(|i| i.pid)
        .collect();
    assert_eq!(pids.len(), 5);
    let up = cluster.up_pid().unwrap();
    unsafe { libc::kill(up as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pids.iter().chain([&up]).any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "processes still alive after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = cluster.stop();
}

/// `eon up` with these arguments must fail fast with one line on stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(eon_bin())
        .arg("up")
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "eon up {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr, got:\n{stderr}"
    );
    assert!(stderr.starts_with("eon: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn bad_starts_are_refused_and_damage_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Port already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tmp.path().join("a");
    let http = free_port().to_string();
    let msg = refused(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--pg-port",
        &port,
        "--http-port",
        &http,
    ]);
    assert!(msg.contains("already in use"), "{msg}");

    // Unwritable data directory (its parent is a file).
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    let bad = tmp.path().join("file").join("data");
    let msg = refused(&[
        "--data-dir",
        bad.to_str().unwrap(),
        "--pg-port",
        &free_port().to_string(),
        "--http-port",
        &http,
    ]);
    assert!(msg.contains("cannot create data directory"), "{msg}");

    // A second `eon up` on a data directory in use.
    let cluster = TestCluster::start().unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute("CREATE TABLE busy (id int PRIMARY KEY); INSERT INTO busy VALUES (7)")
        .await
        .unwrap();
    let msg = refused(&[
        "--data-dir",
        cluster.dir.to_str().unwrap(),
        "--pg-port",
        &free_port().to_string(),
        "--http-port",
        &free_port().to_string(),
    ]);
    assert!(msg.contains("already in use by another eon"), "{msg}");
    // The running cluster did not notice.
    let v: i32 = client
        .query_one("SELECT id FROM busy", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
    assert!(cluster.dir.join("cluster.json").exists());
}

#[tokio::test]
async fn several_query_engines_share_the_ports() {
    let cluster = TestCluster::builder()
        .query_engines(2)
        .data_engines(2)
        .start()
        .unwrap();
    let a = cluster.pg().await.unwrap();
    a.batch_execute("CREATE TABLE shared (id int PRIMARY KEY)")
        .await
        .unwrap();
    // The second connection lands on the other query engine
    // (least connections), which sees the table at once.
    let b = cluster.pg().await.unwrap();
    b.execute("INSERT INTO shared VALUES (1)", &[])
        .await
        .unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM shared", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let mut meta = cluster.meta().unwrap();
    let nodes = meta
        .list_nodes(eon_proto::v1::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let qe = nodes
        .iter()
        .filter(|n| n.kind == eon_proto::v1::NodeKind::QueryEngine as i32 && n.up)
        .count();
    assert_eq!(qe, 2);
}

#[tokio::test]
async fn sql_load_makes_the_balancer_add_a_query_engine_that_takes_connections() {
    use eon_proto::v1 as pb;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .max_query_engines(2)
        .arg("--query-engine-target")
        .arg("2")
        .start()
        .unwrap();
    let setup = cluster.pg().await.unwrap();
    setup
        .batch_execute("CREATE TABLE busy (id bigint PRIMARY KEY, v bigint)")
        .await
        .unwrap();
    setup
        .batch_execute("INSERT INTO busy SELECT i, i % 97 FROM generate_series(1, 3000) AS s(i)")
        .await
        .unwrap();
    let mut agent = cluster.agent().unwrap();

    // Six connections, each running aggregates back to back: about six
    // statements in flight against a target of two per query engine.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..6 {
        let client = cluster.pg().await.unwrap();
        let (stop, done) = (stop.clone(), done.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .query_one(
                        "SELECT v, count(*), sum(id) FROM busy GROUP BY v ORDER BY v LIMIT 1",
                        &[],
                    )
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t0 = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let second = loop {
        let list = agent
            .list(pb::ListInstancesRequest {})
            .await
            .unwrap()
            .into_inner()
            .instances;
        if let Some(qe) = list
            .iter()
            .find(|i| i.name == "query-engine-2" && i.state == "running")
        {
            break qe.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second query engine after {} statements: {list:#?}",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "query-engine-2 running after {:?}, {} statements",
        t0.elapsed(),
        done.load(Ordering::Relaxed)
    );
    // New connections go to the new engine (it has none yet): it serves them.
    let mut qe2 = eon_proto::v1::query_engine_client::QueryEngineClient::new(
        cluster.channel(&second.address).unwrap(),
    );
    let before = qe2
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .requests_total;
    let fresh = cluster.pg().await.unwrap();
    for _ in 0..5 {
        let n: i64 = fresh
            .query_one("SELECT count(*) FROM busy", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 3000);
    }
    let after = qe2
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .requests_total;
    assert!(
        after >= before + 5,
        "query-engine-2 served {} of the new connection's statements",
        after - before
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let decisions = agent
        .decisions(pb::DecisionsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let d = decisions
        .iter()
        .find(|d| d.service == "query-engine")
        .expect("a query-engine decision");
    assert_eq!(d.actions, vec!["start query-engine-2".to_string()]);
    assert!(
        d.load > 2.0 && d.target == 2.0 && (d.current, d.desired) == (1, 2),
        "{d:?}"
    );
}

#[test]
fn recipe_check_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &good,
        "name = \"shop\"\ncommand = \"python3 -m http.server $PORT\"\n[scale]\nmin = 0\nmax = 3\n",
    )
    .unwrap();
    std::fs::write(
        &bad,
        "name = \"shop\"\ncommand = \"x\"\n[stop]\ntimeout = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(eon_bin())
        .args(["recipe", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("front end \"shop\""),
        "{out:?}"
    );
    let out = Command::new(eon_bin())
        .args(["recipe", "check"])
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("bad duration \"soon\"")
            && err.lines().count() == 1,
        "{err}"
    );
}

/// The statistics counters of each running meta replica that answers
/// within a second, by instance name.
async fn meta_counters(
    cluster: &TestCluster,
) -> Vec<(String, std::collections::HashMap<String, u64>)> {
    counters_of(cluster, "meta").await
}

/// Every running instance of `kind`'s Stats counters, by instance name
/// (those that answer within a second).
async fn counters_of(
    cluster: &TestCluster,
    kind: &str,
) -> Vec<(String, std::collections::HashMap<String, u64>)> {
    let mut out = Vec::new();
    for i in cluster.instances().await.unwrap() {
        if i.kind != kind || i.address.is_empty() {
            continue;
        }
        let Ok(channel) = cluster.channel(&i.address) else {
            continue;
        };
        let request = eon_proto::v1::StatsRequest {};
        let stats = tokio::time::timeout(Duration::from_secs(1), async {
            if kind == "meta" {
                eon_proto::v1::meta_client::MetaClient::new(channel)
                    .stats(request)
                    .await
            } else {
                eon_proto::v1::data_engine_client::DataEngineClient::new(channel)
                    .stats(request)
                    .await
            }
        })
        .await;
        if let Ok(Ok(s)) = stats {
            out.push((i.name, s.into_inner().counters));
        }
    }
    out
}

/// `key` summed over the instances of `counters_of`.
fn sum_of(counters: &[(String, std::collections::HashMap<String, u64>)], key: &str) -> u64 {
    counters
        .iter()
        .map(|(_, c)| c.get(key).copied().unwrap_or(0))
        .sum()
}

/// One instance's counter, by instance name.
fn counter_of(
    counters: &[(String, std::collections::HashMap<String, u64>)],
    name: &str,
    key: &str,
) -> Option<u64> {
    counters
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, c)| c.get(key).copied())
}

/// The meta replica that leads, by instance name.
async fn meta_leader(cluster: &TestCluster) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = meta_counters(cluster)
            .await
            .into_iter()
            .find(|(_, c)| c.get("raft_leader") == Some(&1));
        if let Some((name, _)) = leader {
            return name;
        }
        assert!(std::time::Instant::now() < deadline, "no meta leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `sql` until it succeeds (each try on a fresh connection: a failed
/// statement may have ended its transaction); returns how long that took.
async fn until_it_works(cluster: &TestCluster, sql: &str) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let tried = async {
            let client = cluster.pg().await?;
            client.batch_execute(sql).await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), tried).await {
            Ok(Ok(())) => return start.elapsed(),
            Ok(Err(e)) => eprintln!("while failing over ({:?}): {e:#}", start.elapsed()),
            Err(_) => eprintln!("while failing over: no answer in 10 s"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{sql} did not succeed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The engines listed for each shard of `table`, as meta's catalog has
/// them.
async fn copies_of(cluster: &TestCluster, table: &str) -> Vec<Vec<u64>> {
    let catalog = cluster
        .meta()
        .unwrap()
        .get_catalog(eon_proto::v1::GetCatalogRequest {})
        .await
        .unwrap()
        .into_inner();
    let t = catalog.tables.iter().find(|t| t.name == table).unwrap();
    t.replicas.iter().map(|r| r.engines.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_engines_copies_are_rebuilt_on_another() {
    // Four engines, three copies of each shard: each shard has one engine
    // to spare. An engine silent for over 2 s is lost.
    let cluster = TestCluster::builder()
        .data_engines(4)
        .arg("--replace-after")
        .arg("2")
        .start()
        .unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, v text); \
             INSERT INTO acct SELECT g, 'before' FROM generate_series(1, 200) g",
        )
        .await
        .unwrap();
    drop(client);
    let before = copies_of(&cluster, "acct").await;
    assert!(before.iter().all(|c| c.len() == 3), "{before:?}");
    let ids: std::collections::HashMap<String, u64> = cluster
        .instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == "data-engine")
        .map(|i| (i.name, i.id))
        .collect();
    let (lost, second) = (ids["data-engine-1"], ids["data-engine-2"]);
    // Some shards keep copies on both: losing both would stop them.
    assert!(
        before
            .iter()
            .any(|c| c.contains(&lost) && c.contains(&second)),
        "{before:?}"
    );

    // Freeze one (the agent does not restart a live process): meta gives
    // its copies to the engine each shard did not use.
    let lost_pid = cluster.pid_of("data-engine-1").await.unwrap();
    unsafe { libc::kill(lost_pid as i32, libc::SIGSTOP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let now = copies_of(&cluster, "acct").await;
        if now.iter().all(|c| !c.contains(&lost)) {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "meta did not replace the lost engine: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.len(), 3);
        let mut ids = new.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "{after:?}");
        if !old.contains(&lost) {
            assert_eq!(old, new, "a shard without the lost engine kept its copies");
        }
    }
    until_it_works(
        &cluster,
        "INSERT INTO acct SELECT g, 'replaced' FROM generate_series(201, 240) g \
         ON CONFLICT DO NOTHING",
    )
    .await;
    // The groups follow: every shard has a leader on a live engine, and
    // its voters are the new list (the new copies caught up), as every
    // live engine knows it.
    let version = cluster
        .meta()
        .unwrap()
        .get_catalog(eon_proto::v1::GetCatalogRequest {})
        .await
        .unwrap()
        .into_inner()
        .version;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let engines = counters_of(&cluster, "data-engine").await;
        let current = engines
            .iter()
            .all(|(_, c)| c.get("catalog_version").copied().unwrap_or(0) >= version);
        // (The frozen engine does not answer: it is not among them.)
        if current
            && sum_of(&engines, "shard_leaders") == 8
            && sum_of(&engines, "shard_groups_changing") == 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the groups did not follow the catalog: {engines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Then freeze a second engine: every group still has a majority once
    // its new copy caught up and became a voter (without the rebuilt
    // copies, shards on both frozen engines would have one of three).
    let second_pid = cluster.pid_of("data-engine-2").await.unwrap();
    unsafe { libc::kill(second_pid as i32, libc::SIGSTOP) };
    let start = std::time::Instant::now();
    let mut last;
    loop {
        let tried = async {
            let client = cluster.pg().await?;
            client
                .batch_execute(
                    "INSERT INTO acct SELECT g, 'two lost' FROM generate_series(241, 280) g \
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), tried).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "no answer in 10 s".into(),
        }
        if start.elapsed() > Duration::from_secs(60) {
            unsafe { libc::kill(lost_pid as i32, libc::SIGCONT) };
            unsafe { libc::kill(second_pid as i32, libc::SIGCONT) };
            panic!("writes did not resume with two engines frozen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "writes resumed {:?} after a second engine froze",
        start.elapsed()
    );
    let client = cluster.pg().await.unwrap();
    let rows = client
        .query("SELECT v, count(*) FROM acct GROUP BY v ORDER BY v", &[])
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("before".to_string(), 200),
            ("replaced".to_string(), 40),
            ("two lost".to_string(), 40)
        ]
    );
    drop(client);

    // Both come back. The second is still listed and catches up; the
    // lost one is not, and deletes its copies (the balancer may give it
    // new ones: it keeps exactly those the catalog lists for it).
    unsafe { libc::kill(lost_pid as i32, libc::SIGCONT) };
    unsafe { libc::kill(second_pid as i32, libc::SIGCONT) };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let engines = counters_of(&cluster, "data-engine").await;
        let replicas = |name: &str| counter_of(&engines, name, "shard_replicas");
        let listed = copies_of(&cluster, "acct")
            .await
            .iter()
            .filter(|l| l.contains(&lost))
            .count() as u64;
        let changing = sum_of(&engines, "shard_groups_changing");
        if replicas("data-engine-1") == Some(listed) && changing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lost engine kept its copies: {engines:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_copy_moves_online_while_reads_and_writes_go_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cluster = TestCluster::builder().data_engines(4).start().unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, v int); \
             INSERT INTO acct SELECT g, 0 FROM generate_series(1, 2000) g",
        )
        .await
        .unwrap();
    drop(client);
    // Meta routes each shard to its leader: move the leader's copy of
    // shard 0, so the group changes leaders as well as voters.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (from, list) = loop {
        let catalog = cluster
            .meta()
            .unwrap()
            .get_catalog(eon_proto::v1::GetCatalogRequest {})
            .await
            .unwrap()
            .into_inner();
        let t = catalog.tables.iter().find(|t| t.name == "acct").unwrap();
        let list = t.replicas[0].engines.clone();
        if sum_of(&counters_of(&cluster, "data-engine").await, "shard_leaders") == 8 {
            break (t.placement[0], list);
        }
        assert!(std::time::Instant::now() < deadline, "no leaders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let to = (1..=4).find(|e| !list.contains(e)).unwrap();
    let copies_on =
        |lists: &[Vec<u64>], e: u64| lists.iter().filter(|l| l.contains(&e)).count() as u64;

    // A writer adds rows one by one and a reader counts them, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, client) = (stop.clone(), cluster.pg().await.unwrap());
        tokio::spawn(async move {
            let (mut acked, mut errors) = (0i64, Vec::new());
            let mut id = 2001;
            while !stop.load(Ordering::Relaxed) {
                match client
                    .execute("INSERT INTO acct VALUES ($1, 1)", &[&id])
                    .await
                {
                    Ok(_) => acked += 1,
                    Err(e) => errors.push(format!("{e:#}")),
                }
                id += 1;
            }
            (acked, errors)
        })
    };
    let reader = {
        let (stop, client) = (stop.clone(), cluster.pg().await.unwrap());
        tokio::spawn(async move {
            let (mut last, mut reads, mut errors) = (0i64, 0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match client.query_one("SELECT count(*) FROM acct", &[]).await {
                    Ok(row) => {
                        let n: i64 = row.get(0);
                        if n < last {
                            errors.push(format!("the count went back from {last} to {n}"));
                        }
                        (last, reads) = (n, reads + 1);
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            (reads, errors)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = Command::new(eon_bin())
        .args([
            "shard",
            "move",
            "acct",
            "0",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ])
        .arg("--data-dir")
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("generation 1"), "{text}");
    let moved = std::time::Instant::now();
    // Done when the group's voters are the list, and the old copy is gone.
    let after = copies_of(&cluster, "acct").await;
    assert!(
        after[0].contains(&to) && !after[0].contains(&from),
        "{after:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let engines = counters_of(&cluster, "data-engine").await;
        let of = |e: u64, key: &str| counter_of(&engines, &format!("data-engine-{e}"), key);
        let changing = sum_of(&engines, "shard_groups_changing");
        if changing == 0
            && of(to, "shard_replicas") == Some(copies_on(&after, to))
            && of(from, "shard_replicas") == Some(copies_on(&after, from))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the move did not finish: {engines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("moving a copy of shard 0 took {:?}", moved.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, write_errors) = writer.await.unwrap();
    let (reads, read_errors) = reader.await.unwrap();
    assert!(write_errors.is_empty(), "{write_errors:?}");
    assert!(read_errors.is_empty(), "{read_errors:?}");
    assert!(acked > 0 && reads > 0);
    let client = cluster.pg().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2000 + acked);

    // Bad moves are refused with the reason.
    let out = Command::new(eon_bin())
        .args([
            "shard",
            "move",
            "acct",
            "0",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ])
        .arg("--data-dir")
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("keeps no copy"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_engine_gets_its_share_of_shard_copies() {
    let cluster = TestCluster::builder().data_engines(3).start().unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, v int); \
             INSERT INTO acct SELECT g, 0 FROM generate_series(1, 500) g",
        )
        .await
        .unwrap();
    // Three engines keep all 8 × 3 copies; a fourth comes.
    let started = cluster
        .agent()
        .unwrap()
        .start(eon_proto::v1::StartInstanceRequest {
            kind: "data-engine".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let new = started.id;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lists = copies_of(&cluster, "acct").await;
        let on = |e: u64| lists.iter().filter(|l| l.contains(&e)).count() as u64;
        let engines = counters_of(&cluster, "data-engine").await;
        let changing = sum_of(&engines, "shard_groups_changing");
        let kept = |name: &str| counter_of(&engines, name, "shard_replicas");
        // 24 copies over 4 engines: 6 is the mean, the band ±25 %.
        let settled = on(new) >= 5
            && changing == 0
            && (1..=4).all(|e| kept(&format!("data-engine-{e}")) == Some(on(e)) && on(e) <= 7);
        if settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copies did not spread to the new engine: {lists:?} {engines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every move is a decision with its reason.
    let out = Command::new(eon_bin())
        .args(["status", "--decisions", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("of the mean load"), "{text}");
    assert!(text.contains(&format!("to data-engine-{new}")), "{text}");
    // Nothing was lost, and writes go on.
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 500);
    client
        .batch_execute("INSERT INTO acct SELECT g, 1 FROM generate_series(501, 540) g")
        .await
        .unwrap();
}

/// `eon shard drain` empties a data engine of its copies while writes go
/// on; it gets no new copies until the drain is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_data_engine_gives_away_every_copy_online() {
    let cluster = TestCluster::builder().data_engines(4).start().unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, v int); \
             INSERT INTO acct SELECT g, 0 FROM generate_series(1, 400) g",
        )
        .await
        .unwrap();
    let drained = 2u64;
    assert!(
        copies_of(&cluster, "acct")
            .await
            .iter()
            .any(|l| l.contains(&drained))
    );
    // A writer goes on throughout.
    let writer = {
        let client = cluster.pg().await.unwrap();
        tokio::spawn(async move {
            for id in 401..=480 {
                client
                    .execute("INSERT INTO acct VALUES ($1, 1)", &[&id])
                    .await
                    .unwrap();
            }
        })
    };
    let drain = |extra: &'static [&'static str]| {
        let mut c = Command::new(eon_bin());
        c.args(["shard", "drain", &drained.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(&cluster.dir);
        c
    };
    let out = tokio::task::spawn_blocking({
        let mut c = drain(&[]);
        move || c.output().unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("the drain did not end")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("keeps no replicated copy"), "{text}");
    assert!(
        copies_of(&cluster, "acct")
            .await
            .iter()
            .all(|l| !l.contains(&drained) && l.len() == 3)
    );
    // The engine lets its copies go once the groups have followed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let engines = counters_of(&cluster, "data-engine").await;
        let kept = counter_of(
            &engines,
            &format!("data-engine-{drained}"),
            "shard_replicas",
        );
        if kept == Some(0) && sum_of(&engines, "shard_groups_changing") == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the drained engine still keeps copies: {engines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 480);
    // A new table gets no copy there, and no move may bring one.
    client
        .batch_execute("CREATE TABLE later (id int PRIMARY KEY)")
        .await
        .unwrap();
    assert!(
        copies_of(&cluster, "later")
            .await
            .iter()
            .all(|l| !l.contains(&drained))
    );
    let from = copies_of(&cluster, "acct").await[0][0];
    let out = Command::new(eon_bin())
        .args([
            "shard",
            "move",
            "acct",
            "0",
            "--from",
            &from.to_string(),
            "--to",
        ])
        .arg(drained.to_string())
        .arg("--data-dir")
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("being drained"),
        "{err}"
    );
    // Status shows it; the decisions say why each copy left.
    let out = Command::new(eon_bin())
        .args(["status", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("data-engine-{drained} ")) && l.contains("draining")),
        "{text}"
    );
    let out = Command::new(eon_bin())
        .args(["status", "--decisions", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("data engine {drained} is being drained")),
        "{text}"
    );
    // Cancelled, it takes copies again: the balancer brings some back.
    let out = drain(&["--cancel"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !copies_of(&cluster, "acct")
        .await
        .iter()
        .any(|l| l.contains(&drained))
    {
        assert!(std::time::Instant::now() < deadline, "no copy came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Unknown engines are refused.
    let out = Command::new(eon_bin())
        .args(["shard", "drain", "99", "--data-dir"])
        .arg(&cluster.dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no data engine 99"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_with_three_replicas_survives_losing_its_leader() {
    let cluster = TestCluster::builder()
        .arg("--meta")
        .arg("3")
        .data_engines(2)
        .start()
        .unwrap();
    let client = cluster.pg().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE ha (id int PRIMARY KEY, v text); \
             INSERT INTO ha SELECT g, 'before' FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    drop(client);

    // kill -9 the leader: the other two elect one; DDL (which needs meta to
    // commit) and writes (timestamps) go on.
    let first = meta_leader(&cluster).await;
    let pid = cluster.pid_of(&first).await.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let took = until_it_works(
        &cluster,
        "CREATE TABLE ha2 (id int PRIMARY KEY); INSERT INTO ha VALUES (101, 'after kill')",
    )
    .await;
    eprintln!("meta failover after kill -9 of {first}: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // (The supervisor restarts the killed replica at once; it may be
    // leading again already. The frozen replica below cannot.)
    let second = meta_leader(&cluster).await;

    // Freeze the new leader (alive, silent): the same.
    let pid = cluster.pid_of(&second).await.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let took = until_it_works(
        &cluster,
        "CREATE TABLE ha3 (id int PRIMARY KEY); INSERT INTO ha VALUES (102, 'after stop')",
    )
    .await;
    eprintln!("meta failover after SIGSTOP of {second}: {took:?}");
    let third = meta_leader(&cluster).await;
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_ne!(third, second, "the frozen replica still leads");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Nothing acknowledged was lost; the killed replica is back (restarted
    // by the supervisor) and has caught up.
    let client = cluster.pg().await.unwrap();
    let rows = client
        .query("SELECT v, count(*) FROM ha GROUP BY v ORDER BY v", &[])
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("after kill".to_string(), 1),
            ("after stop".to_string(), 1),
            ("before".to_string(), 100)
        ]
    );
    for t in ["ha2", "ha3"] {
        client
            .query(&format!("SELECT count(*) FROM {t}"), &[])
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let applied: Vec<u64> = meta_counters(&cluster)
            .await
            .iter()
            .map(|(_, c)| c.get("raft_applied").copied().unwrap_or(0))
            .collect();
        if applied.len() == 3 && applied.iter().all(|a| *a == applied[0]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "meta replicas did not catch up: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_with_three_copies_survive_losing_a_data_engine() {
    let cluster = TestCluster::builder().data_engines(3).start().unwrap();
    let client = cluster.pg().await.unwrap();
    // Three data engines: every shard gets three copies.
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, v text) WITH (replication = 3); \
             INSERT INTO acct SELECT g, 'before' FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    drop(client);
    // (Each engine counts its replicas a few times a second.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let engines = counters_of(&cluster, "data-engine").await;
        assert_eq!(engines.len(), 3);
        let short: Vec<_> = engines
            .iter()
            .filter(|(_, c)| c.get("shard_replicas") != Some(&8))
            .collect();
        if short.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every engine keeps a copy of each shard: {short:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes to every shard (40 rows over 8 shards). A retried INSERT may
    // find its first try committed after all (the answer was lost with the
    // engine): ON CONFLICT keeps each row once.
    let insert = |from: u32, v: &str| {
        format!(
            "INSERT INTO acct SELECT g, '{v}' FROM generate_series({from}, {}) g \
             ON CONFLICT DO NOTHING",
            from + 39
        )
    };

    // kill -9 a data engine: its shards' other copies elect leaders.
    let pid = cluster.pid_of("data-engine-1").await.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let took = until_it_works(&cluster, &insert(101, "after kill")).await;
    eprintln!("writes resumed {took:?} after kill -9 of a data engine");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Freeze another (alive, silent): the same, for writes and reads.
    let pid = cluster.pid_of("data-engine-2").await.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let took = until_it_works(&cluster, &insert(201, "after stop")).await;
    eprintln!("writes resumed {took:?} after SIGSTOP of a data engine");
    let read = until_it_works(&cluster, "SELECT count(*) FROM acct").await;
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(read < Duration::from_secs(5), "{read:?}");

    // Nothing acknowledged was lost.
    let client = cluster.pg().await.unwrap();
    let rows = client
        .query("SELECT v, count(*) FROM acct GROUP BY v ORDER BY v", &[])
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("after kill".to_string(), 40),
            ("after stop".to_string(), 40),
            ("before".to_string(), 100)
        ]
    );
    // The killed engine (restarted by the supervisor) and the frozen one
    // catch up: every copy applies the same entries.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied: Vec<u64> = counters_of(&cluster, "data-engine")
            .await
            .iter()
            .map(|(_, c)| c.get("raft_applied").copied().unwrap_or(0))
            .collect();
        if applied.len() == 3 && applied.iter().all(|a| *a == applied[0] && *a > 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "data engines did not catch up: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
