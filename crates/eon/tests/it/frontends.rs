//! Front ends from recipes, end to end: a real front end (the Python
//! example) behind the ingress, scaled by the balancer under a bounded
//! load — from zero, up, down, back to zero — with zero failed requests.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eon_proto::v1 as pb;
use eon_proto::v1::agent_client::AgentClient;
use eon_testkit::{TestCluster, eon_bin};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/frontends")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// What the load generator saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    served_by: Mutex<BTreeSet<String>>,
}

/// `clients` loops of GET `url` until `stop`.
fn load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (url, stop, tally) = (url.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).timeout(Duration::from_secs(30)).send().await {
                        Ok(r) if r.status() == 200 => {
                            let text = r.text().await.unwrap_or_default();
                            if let Some(who) = text.split_whitespace().last() {
                                tally.served_by.lock().unwrap().insert(who.to_string());
                            }
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            let what = match other {
                                Ok(r) => {
                                    format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                                }
                                Err(e) => e.to_string(),
                            };
                            tally.failures.lock().unwrap().push(what);
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

async fn agent_frontend(cluster: &TestCluster, name: &str) -> pb::Frontend {
    let mut agent = cluster.agent().unwrap();
    frontend(&mut agent, name).await
}

async fn frontend(agent: &mut AgentClient<eon_common::node::Channel>, name: &str) -> pb::Frontend {
    let list = agent
        .list_frontends(pb::ListFrontendsRequest {})
        .await
        .unwrap()
        .into_inner()
        .frontends;
    list.into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no front end {name}"))
}

/// Instances not draining, and those of them ready.
fn counts(f: &pb::Frontend) -> (usize, usize) {
    let live: Vec<_> = f.instances.iter().filter(|i| !i.draining).collect();
    let ready = live
        .iter()
        .filter(|i| i.instance.as_ref().is_some_and(|x| x.state == "running"))
        .count();
    (live.len(), ready)
}

async fn wait_for(
    agent: &mut AgentClient<eon_common::node::Channel>,
    name: &str,
    what: &str,
    within: Duration,
    mut done: impl FnMut(&pb::Frontend) -> bool,
) -> pb::Frontend {
    let deadline = Instant::now() + within;
    loop {
        let f = frontend(agent, name).await;
        if done(&f) {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what} did not happen within {within:?}; now {f:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_front_end_scales_from_zero_up_down_and_to_zero_without_failing_a_request() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("gb.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"
name = "gb"
command = "exec python3 app.py"
dir = "{dir}"
[ready]
http = "/healthz"
interval = "100ms"
[load]
target = 2
[scale]
min = 0
max = 3
idle = "3s"
down_window = "2s"
[stop]
drain = "200ms"
timeout = "5s"
"#,
            dir = example("python-guestbook").display()
        ),
    )
    .unwrap();
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .arg("--recipe")
        .arg(recipe.display().to_string())
        .start()
        .unwrap();
    let mut agent = cluster.agent().unwrap();
    let base = format!("http://127.0.0.1:{}/gb", cluster.ingress_port);

    // min = 0: nothing runs until a request comes; the first request is
    // held while an instance starts, then answered.
    let f = frontend(&mut agent, "gb").await;
    assert_eq!(counts(&f), (0, 0), "{f:#?}");
    let first = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.text().await.unwrap().contains("served by gb-1"));
    // It runs as its recipe's own role (not the admin): it owns the table
    // it made, and cannot read one it was not granted.
    let admin = cluster.pg().await.unwrap();
    admin
        .batch_execute("CREATE TABLE admins_only (id int PRIMARY KEY)")
        .await
        .unwrap();
    let owner: String = admin
        .query_one(
            "SELECT rolname FROM pg_roles WHERE rolname = 'gb' AND rolcanlogin",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "gb");
    let file = cluster.dir.join("recipe-roles").join("gb");
    let password = std::fs::read_to_string(&file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let gb = reqwest::Client::new();
    let as_gb = |sql: &str| {
        gb.post(format!("http://127.0.0.1:{}/v1/sql", cluster.http_port))
            .basic_auth("gb", Some(password.trim()))
            .json(&serde_json::json!({"sql": sql}))
            .send()
    };
    assert_eq!(
        as_gb("SELECT count(*) FROM guestbook")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        as_gb("SELECT * FROM admins_only").await.unwrap().status(),
        403
    );

    // Load: 8 clients; the target is 2 in flight per instance, so the
    // balancer goes to its max of 3.
    let tally = Arc::new(Tally::default());
    let heavy = Arc::new(AtomicBool::new(false));
    let light = Arc::new(AtomicBool::new(false));
    let mut tasks = load(
        format!("{base}/work?ms=100"),
        6,
        heavy.clone(),
        tally.clone(),
    );
    // Slow requests, so instances being drained have some in flight.
    tasks.extend(load(
        format!("{base}/work?ms=400"),
        2,
        light.clone(),
        tally.clone(),
    ));
    wait_for(
        &mut agent,
        "gb",
        "scale up to 3 ready",
        Duration::from_secs(30),
        |f| counts(f).1 == 3,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served = tally.served_by.lock().unwrap().clone();
    assert!(served.len() >= 2, "requests went to {served:?} only");

    // The load drops to two clients: back down to one instance, one at a
    // time, draining each — while those clients keep going.
    heavy.store(true, Ordering::Relaxed);
    wait_for(
        &mut agent,
        "gb",
        "scale down to 1",
        Duration::from_secs(30),
        |f| counts(f) == (1, 1) && f.instances.len() == 1,
    )
    .await;
    // No load at all: to zero after the idle period.
    light.store(true, Ordering::Relaxed);
    futures::future::join_all(tasks).await;
    wait_for(
        &mut agent,
        "gb",
        "scale to zero",
        Duration::from_secs(30),
        |f| f.instances.is_empty(),
    )
    .await;

    let failures = tally.failures.lock().unwrap().clone();
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "failed requests: {failures:?}"
    );
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(ok > 100, "only {ok} requests");

    // Every step is in the decision log, over gRPC and REST.
    let decisions = agent
        .decisions(pb::DecisionsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let actions: Vec<String> = decisions.iter().flat_map(|d| d.actions.clone()).collect();
    assert!(
        decisions
            .iter()
            .any(|d| d.rule.starts_with("scale from zero")),
        "{decisions:#?}"
    );
    assert!(
        actions
            .iter()
            .filter(|a| a.starts_with("start gb-"))
            .count()
            >= 3,
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .filter(|a| a.starts_with("drain gb-"))
            .count()
            >= 3,
        "{actions:?}"
    );
    assert!(
        decisions.iter().any(|d| d.rule.contains("scale to zero")),
        "{decisions:#?}"
    );
    let rest: serde_json::Value =
        reqwest::get(format!("{}/v1/cluster/decisions", cluster.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        rest["decisions"].as_array().unwrap().len(),
        decisions.len().min(100),
        "{rest}"
    );
    assert!(
        rest["decisions"][0]["inputs"]["target"].as_f64() == Some(2.0),
        "{rest}"
    );
    let out = Command::new(eon_bin())
        .args([
            "status",
            "--decisions",
            "--http-port",
            &cluster.http_port.to_string(),
        ])
        .env("EON_CLUSTER_SECRET", cluster.secret())
        .env("EON_PASSWORD", cluster.admin_password())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("scale from zero") && text.contains("drain gb-"),
        "{text}"
    );

    // After all that, a request still wakes it.
    let again = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(again.status(), 200);
    let text = again.text().await.unwrap();
    assert!(text.starts_with("guestbook (0 entries)"), "{text}");
}

#[tokio::test]
async fn recipes_are_applied_listed_and_removed_on_a_running_cluster() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let eon = |args: &[&str]| {
        let out = Command::new(eon_bin())
            .args(args)
            .args(["--data-dir"])
            .arg(&cluster.dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ingress = format!("http://127.0.0.1:{}", cluster.ingress_port);

    // Nothing routes yet: a clear 404.
    let r = reqwest::get(format!("{ingress}/visits/")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no front end routes /visits/")
    );

    // A bad recipe is refused, naming the field; nothing changes.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\ncommand = \"true\"\n[scale]\nmin = 3\nmax = 1\n",
    )
    .unwrap();
    let (ok, text) = eon(&["recipe", "apply", bad.to_str().unwrap()]);
    assert!(
        !ok && text.contains("scale.min") && text.lines().count() == 1,
        "{text}"
    );
    let (ok, text) = eon(&["recipe", "list"]);
    assert!(ok && text.contains("no front ends"), "{text}");

    // The Node.js and Rust examples, as their folders have them.
    let visits = example("node-visits").join("recipe.toml");
    let kv = example("rust-kv").join("recipe.toml");
    for file in [&visits, &kv] {
        let (ok, text) = eon(&["recipe", "apply", file.to_str().unwrap()]);
        assert!(ok, "{text}");
    }
    // The visit counter has min = 0: the first request wakes it.
    let r = reqwest::get(format!("{ingress}/visits/")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("visit number 1, served by visits-1")
    );
    let r = reqwest::get(format!("{ingress}/visits/")).await.unwrap();
    assert!(r.text().await.unwrap().starts_with("visit number 2"));
    // The key-value store compiles on start (min = 1): held until ready.
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{ingress}/kv/colour"))
        .body("blue")
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http
        .get(format!("{ingress}/kv/colour"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), "blue");
    // The data is in eon.
    let client = cluster.pg().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM visits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    let (ok, text) = eon(&["recipe", "list"]);
    assert!(
        ok && text.contains("visits  route /visits")
            && text.contains("kv-1")
            && text.contains("running"),
        "{text}"
    );
    let (ok, text) = eon(&["status"]);
    assert!(
        ok && text.contains("visits-1") && text.contains("http 127.0.0.1:"),
        "{text}"
    );

    // Statistics: every component's, in Prometheus text, on the REST port;
    // each component's own on its gRPC port; and meta's history window.
    let text = reqwest::get(format!("{}/metrics", cluster.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for instance in [
        "agent",
        "meta",
        "data-engine-1",
        "query-engine-1",
        "router-http",
        "visits",
        "kv",
    ] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("eon_requests_total{")
                    && l.contains(&format!("instance=\"{instance}\""))
            })
            .unwrap_or_else(|| panic!("no eon_requests_total of {instance}:\n{text}"));
        assert!(
            line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
            "{line}"
        );
    }
    let visits = agent_frontend(&cluster, "visits").await;
    let s = visits.stats.expect("a front end's Stats over gRPC");
    assert_eq!(
        (s.component.as_str(), s.requests_total, s.errors_total),
        ("frontend", 2, 0)
    );
    assert!(
        s.memory_bytes > 0 && s.latency_counts.iter().sum::<u64>() == 2,
        "{s:?}"
    );
    let visits_requests = text
        .lines()
        .find(|l| l.starts_with("eon_requests_total{component=\"frontend\",instance=\"visits\"}"))
        .unwrap();
    assert!(visits_requests.ends_with(" 2"), "{visits_requests}");
    assert!(text.contains("eon_request_duration_seconds_bucket{component=\"data-engine\",instance=\"data-engine-1\",le=\"+Inf\"}"));
    assert!(text.contains("eon_host_cpus{component=\"agent\""), "{text}");
    assert!(
        text.lines()
            .all(|l| l.is_empty() || l.starts_with("# ") || l.starts_with("eon_")),
        "{text}"
    );
    let de = cluster.data_engines().await.unwrap()[0].1.clone();
    let own = reqwest::get(format!("http://{de}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        own.contains("eon_rows_scanned{component=\"data-engine\",instance=\"data-engine-1\"}"),
        "{own}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h: serde_json::Value = reqwest::get(format!(
            "{}/v1/cluster/stats?instance=kv",
            cluster.http_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if h["instances"]["kv"]
            .as_array()
            .is_some_and(|a| a.len() >= 2)
        {
            assert!(
                h["instances"]["kv"][0]["memory_bytes"].as_u64().unwrap() > 0,
                "{h}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no history of kv: {h}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Removing one stops it and its route; the other goes on.
    let (ok, text) = eon(&["recipe", "rm", "visits"]);
    assert!(ok, "{text}");
    let r = reqwest::get(format!("{ingress}/visits/")).await.unwrap();
    assert_eq!(r.status(), 404);
    let (ok, text) = eon(&["recipe", "rm", "visits"]);
    assert!(
        !ok && text.contains("no front end named \"visits\""),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster
        .instances()
        .await
        .unwrap()
        .iter()
        .any(|i| i.name.starts_with("visits-"))
    {
        assert!(Instant::now() < deadline, "visits-1 still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http.get(format!("{ingress}/kv/colour"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_parked_host_is_woken_when_load_returns_and_parked_again_after() {
    let tmp = tempfile::tempdir().unwrap();
    let host_dir = tmp.path().join("host-b");
    let hosts = tmp.path().join("hosts.toml");
    std::fs::write(
        &hosts,
        format!(
            r#"
[[host]]
name = "local"
slots = 1

# Host b: "powering on" starts its agent, "powering off" stops it.
[[host]]
name = "b"
slots = 2
power_on = 'exec "$EON_BIN" agent --join "$EON_AGENT" --name "$EON_HOST" --data-dir {dir}'
power_off = 'kill $(cat {dir}/agent.pid)'
park_after = "2s"
"#,
            dir = host_dir.display()
        ),
    )
    .unwrap();
    let recipe = tmp.path().join("gb.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"gb\"\ncommand = \"exec python3 app.py\"\ndir = \"{}\"\n[ready]\nhttp = \"/healthz\"\ninterval = \"100ms\"\n\
             [load]\ntarget = 2\n[scale]\nmin = 1\nmax = 3\ndown_window = \"2s\"\n[stop]\ndrain = \"200ms\"\n",
            example("python-guestbook").display()
        ),
    )
    .unwrap();
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .arg("--hosts")
        .arg(hosts.display().to_string())
        .arg("--recipe")
        .arg(recipe.display().to_string())
        .start()
        .unwrap();
    let mut agent = cluster.agent().unwrap();
    let url = format!("http://127.0.0.1:{}/gb/work?ms=200", cluster.ingress_port);
    let host_state = |hosts: &[pb::Host], name: &str| {
        hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.state.clone())
            .unwrap_or_default()
    };
    let hosts_now = |agent: &mut AgentClient<eon_common::node::Channel>| {
        let mut agent = agent.clone();
        async move {
            agent
                .list_hosts(pb::ListHostsRequest {})
                .await
                .unwrap()
                .into_inner()
                .hosts
        }
    };
    assert_eq!(host_state(&hosts_now(&mut agent).await, "b"), "parked");
    let tally = Arc::new(Tally::default());

    for round in 1..=2 {
        // Load that needs three instances; local has room for one.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = load(url.clone(), 6, stop.clone(), tally.clone());
        let f = wait_for(
            &mut agent,
            "gb",
            "instances on host b",
            Duration::from_secs(60),
            |f| {
                f.instances
                    .iter()
                    .filter(|i| {
                        i.instance
                            .as_ref()
                            .is_some_and(|x| x.host == "b" && x.state == "running")
                    })
                    .count()
                    == 2
            },
        )
        .await;
        assert_eq!(
            host_state(&hosts_now(&mut agent).await, "b"),
            "awake",
            "round {round}"
        );
        assert!(host_dir.join("agent.pid").exists());
        // Host b's instances serve requests.
        let on_b: Vec<String> = f
            .instances
            .iter()
            .filter_map(|i| i.instance.as_ref())
            .filter(|x| x.host == "b")
            .map(|x| x.name.clone())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !on_b
            .iter()
            .any(|n| tally.served_by.lock().unwrap().contains(n))
        {
            assert!(Instant::now() < deadline, "no request served by {on_b:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        futures::future::join_all(tasks).await;
        // Load gone: instances on b drain first, then b is parked (its agent
        // stopped) and runs nothing.
        let deadline = Instant::now() + Duration::from_secs(30);
        while host_state(&hosts_now(&mut agent).await, "b") != "parked" {
            assert!(
                Instant::now() < deadline,
                "round {round}: host b not parked: {:#?}",
                hosts_now(&mut agent).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let f = frontend(&mut agent, "gb").await;
        assert!(
            f.instances
                .iter()
                .all(|i| i.instance.as_ref().is_some_and(|x| x.host == "local")),
            "{f:#?}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while host_dir.join("agent.pid").exists() {
            assert!(
                Instant::now() < deadline,
                "host b's agent still runs after parking"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let failures = tally.failures.lock().unwrap().clone();
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "failed requests: {failures:?}"
    );
    let decisions = agent
        .decisions(pb::DecisionsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let actions: Vec<String> = decisions.iter().flat_map(|d| d.actions.clone()).collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "wake b").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "park b").count(),
        2,
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_prometheus_signal_scales_a_host_routed_front_end_and_a_front_end_that_never_gets_ready_gets_503()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-guestbook");
    // Scaled on the instances' own gauge of requests being served, and
    // reached by its Host header.
    let pm = tmp.path().join("pm.toml");
    std::fs::write(
        &pm,
        format!(
            "name = \"pm\"\ncommand = \"exec python3 app.py\"\ndir = \"{}\"\n[ready]\nhttp = \"/healthz\"\ninterval = \"100ms\"\n\
             [load]\nsignal = \"prometheus\"\nmetric = \"guestbook_in_flight\"\ntarget = 2\n\
             [scale]\nmin = 1\nmax = 3\n[route]\nhost = \"pm.test\"\n",
            dir.display()
        ),
    )
    .unwrap();
    // Never ready: its readiness command always fails.
    let never = tmp.path().join("never.toml");
    std::fs::write(
        &never,
        format!(
            "name = \"never\"\ncommand = \"exec python3 app.py\"\ndir = \"{}\"\n[ready]\ncommand = \"false\"\ninterval = \"100ms\"\ngrace = \"1s\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .arg("--recipe")
        .arg(pm.display().to_string())
        .arg(never.display().to_string())
        .start()
        .unwrap();
    let mut agent = cluster.agent().unwrap();
    let ingress = format!("http://127.0.0.1:{}", cluster.ingress_port);
    let http = reqwest::Client::new();

    // Routed by Host only.
    let r = http
        .get(format!("{ingress}/work?ms=1"))
        .header("host", "pm.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.get(format!("{ingress}/work?ms=1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Six clients, each request 200 ms, straight at the first instance —
    // not through the ingress, which therefore counts nothing in flight:
    // only the instance's own gauge (about six, against a target of two
    // each) can tell the balancer.
    let first = frontend(&mut agent, "pm").await.instances[0]
        .instance
        .clone()
        .unwrap()
        .address;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let tasks = load(
        format!("http://{first}/work?ms=200"),
        6,
        stop.clone(),
        tally.clone(),
    );
    let f = wait_for(
        &mut agent,
        "pm",
        "scale to 3 on the metric",
        Duration::from_secs(30),
        |f| counts(f).1 == 3,
    )
    .await;
    assert_eq!(f.signal, "guestbook_in_flight");
    stop.store(true, Ordering::Relaxed);
    futures::future::join_all(tasks).await;
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    let decisions = agent
        .decisions(pb::DecisionsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert!(
        decisions
            .iter()
            .any(|d| d.service == "pm" && d.desired > d.current && d.load >= 3.0),
        "{decisions:#?}"
    );

    // A front end whose instances never pass their readiness check: a
    // request is held for the start-up grace, then refused with 503 and
    // Retry-After — and the instance never got it.
    let started = Instant::now();
    let r = http.get(format!("{ingress}/never/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no instance became ready in time")
    );
    let f = frontend(&mut agent, "never").await;
    assert!(
        f.instances
            .iter()
            .all(|i| i.instance.as_ref().is_some_and(|x| x.state != "running")),
        "{f:#?}"
    );
}
