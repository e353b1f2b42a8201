//! `eon bench scale`: how well the balancer scales a front end, measured on
//! a cluster of its own.
//!
//! It starts `eon up` in a temporary directory with the Python example
//! front end (`GET /work?ms=100`: a request that takes 100 ms; target 2 in
//! flight per instance, 1..6 instances), drives it with a closed-loop load
//! generator whose number of clients changes by phase, and prints one
//! table:
//!
//! - **step**: 2 clients, then 10 (a 5× step): the time until the balancer
//!   first adds instances, and until the instances the new load needs are
//!   ready;
//! - **noise**: 10 clients ± 20 % (8 to 12, changing every second): scaling
//!   actions taken (the ideal is none);
//! - **scale-down**: back to 1 client: the instances drained, and failed
//!   requests (the goal is zero) — and failed requests over the whole run;
//! - **ingress**: requests per second through the ingress against hitting
//!   one instance directly, in the same run (the ratio is the ingress's
//!   cost).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use eon_proto::v1 as pb;
use eon_proto::v1::agent_client::AgentClient;

use crate::own_cluster::OwnCluster;

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// The example front end to scale (its folder).
    #[arg(long, default_value = "examples/frontends/python-guestbook")]
    example: PathBuf,
    /// Seconds of the noise phase.
    #[arg(long, default_value_t = 30)]
    noise_seconds: u64,
    /// Seconds each side of the ingress comparison runs.
    #[arg(long, default_value_t = 5)]
    compare_seconds: u64,
}

/// Requests answered and failed, per phase.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Load {
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Arc<Tally>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Up to `max` closed-loop clients of `url`; `set(n)` makes n of them
    /// send.
    fn new(url: String, max: usize) -> Load {
        let active = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Arc::new(Tally::default())));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client");
        let tasks = (0..max)
            .map(|i| {
                let (url, active, stop, tally, http) = (url.clone(), active.clone(), stop.clone(), tally.clone(), http.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if i >= active.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        let ok = matches!(http.get(&url).timeout(Duration::from_secs(30)).send().await, Ok(r) if r.status() == 200);
                        let t = tally.lock().unwrap().clone();
                        if ok { &t.ok } else { &t.failed }.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            active,
            stop,
            tally,
            tasks,
        }
    }

    fn set(&self, n: usize) {
        self.active.store(n, Ordering::Relaxed);
    }

    /// Start counting into a fresh tally; the previous one is returned.
    fn phase(&self) -> Arc<Tally> {
        std::mem::replace(&mut *self.tally.lock().unwrap(), Arc::new(Tally::default()))
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        futures::future::join_all(self.tasks).await;
    }
}

/// `eon up` with the example front end's recipe; stopped on drop.
struct Cluster {
    _own: OwnCluster,
    ingress: String,
    agent: String,
    /// The cluster's secret, for calls to its agent.
    secret: String,
    /// The front end's recipe, and its directory.
    recipe: String,
    recipe_dir: tempfile::TempDir,
}

fn start_cluster(example: &std::path::Path) -> anyhow::Result<Cluster> {
    let recipe_dir = tempfile::Builder::new()
        .prefix("eon-bench-scale-recipe-")
        .tempdir()?;
    let example = example
        .canonicalize()
        .with_context(|| format!("no example front end at {}", example.display()))?;
    let recipe = recipe_dir.path().join("recipe.toml");
    let text = format!(
        "name = \"app\"\ncommand = \"exec python3 app.py\"\ndir = \"{}\"\n\
             [ready]\nhttp = \"/healthz\"\ninterval = \"100ms\"\n\
             [load]\ntarget = 2\n\
             [scale]\nmin = 1\nmax = 6\nup_window = \"0s\"\ndown_window = \"10s\"\nup_step = 4\ndown_step = 1\n\
             [stop]\ndrain = \"200ms\"\ntimeout = \"5s\"\n",
        example.display()
    );
    std::fs::write(&recipe, &text)?;
    let own = OwnCluster::start(
        "eon-bench-scale-",
        &[
            "--data-engines".into(),
            "1".into(),
            "--shards".into(),
            "2".into(),
            "--recipe".into(),
            recipe.display().to_string(),
        ],
    )?;
    let file = eon_agent::read_cluster_file(&own.data_dir()).context("no cluster.json")?;
    let secret = eon_common::node::read_cluster_secret(&own.data_dir())?;
    Ok(Cluster {
        ingress: own.ingress.to_string(),
        _own: own,
        agent: file.agent,
        secret,
        recipe: text,
        recipe_dir,
    })
}

async fn frontend(
    agent: &mut AgentClient<eon_common::node::Channel>,
) -> anyhow::Result<pb::Frontend> {
    let list = agent
        .list_frontends(pb::ListFrontendsRequest {})
        .await?
        .into_inner()
        .frontends;
    list.into_iter().next().context("the front end is gone")
}

fn ready(f: &pb::Frontend) -> usize {
    f.instances
        .iter()
        .filter(|i| !i.draining && i.instance.as_ref().is_some_and(|x| x.state == "running"))
        .count()
}

async fn actions_since(
    agent: &mut AgentClient<eon_common::node::Channel>,
    since_ms: i64,
) -> anyhow::Result<Vec<(i64, String)>> {
    let d = agent
        .decisions(pb::DecisionsRequest { limit: 0 })
        .await?
        .into_inner()
        .decisions;
    Ok(d.into_iter()
        .filter(|d| d.at_unix_ms >= since_ms && d.service == "app")
        .flat_map(|d| d.actions.into_iter().map(move |a| (d.at_unix_ms, a)))
        .collect())
}

/// Requests per second of `clients` closed loops on `url` for `secs`.
async fn throughput(url: String, clients: usize, secs: u64) -> (f64, u64) {
    let load = Load::new(url, clients);
    load.set(clients);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let t = load.phase();
    let elapsed = started.elapsed().as_secs_f64();
    load.finish().await;
    (
        t.ok.load(Ordering::Relaxed) as f64 / elapsed,
        t.failed.load(Ordering::Relaxed),
    )
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    println!(
        "starting a cluster with the example front end {} ...",
        args.example.display()
    );
    let cluster = start_cluster(&args.example)?;
    let mut agent = AgentClient::new(eon_common::node::channel_with(
        &cluster.agent,
        Some(&cluster.secret),
    )?);
    let url = format!("http://{}/app/work?ms=100", cluster.ingress);
    let load = Load::new(url, 16);
    let mut total_failed = 0;
    let mut rows: Vec<(String, String)> = Vec::new();

    // Step: 2 clients until steady, then 10.
    load.set(2);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = ready(&frontend(&mut agent).await?);
    total_failed += load.phase().failed.load(Ordering::Relaxed);
    let step_at = eon_common::unix_ms();
    let t0 = Instant::now();
    load.set(10);
    let needed = 5; // 10 in flight / 2 per instance
    let mut first_action = None;
    let mut all_ready = None;
    while t0.elapsed() < Duration::from_secs(60) && all_ready.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if first_action.is_none() && !actions_since(&mut agent, step_at).await?.is_empty() {
            first_action = Some(t0.elapsed());
        }
        if ready(&frontend(&mut agent).await?) >= needed {
            all_ready = Some(t0.elapsed());
        }
    }
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "not within 60 s".into())
    };
    rows.push((
        "step 2 → 10 clients: instances before".into(),
        before.to_string(),
    ));
    rows.push((
        "step: first scale-up decision after".into(),
        secs(first_action),
    ));
    rows.push((
        format!("step: {needed} instances ready after"),
        secs(all_ready),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    total_failed += load.phase().failed.load(Ordering::Relaxed);

    // Noise: 10 ± 20 %.
    let noise_at = eon_common::unix_ms();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..args.noise_seconds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        load.set(8 + (seed % 5) as usize);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let noise_actions = actions_since(&mut agent, noise_at).await?;
    rows.push((
        format!(
            "noise 10 ± 20 % clients, {} s: scaling actions",
            args.noise_seconds
        ),
        noise_actions.len().to_string(),
    ));
    rows.push((
        "noise: instances at the end".into(),
        ready(&frontend(&mut agent).await?).to_string(),
    ));
    total_failed += load.phase().failed.load(Ordering::Relaxed);

    // Scale-down: 1 client until back at the minimum.
    let down_at = eon_common::unix_ms();
    let t0 = Instant::now();
    load.set(1);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let f = frontend(&mut agent).await?;
        if f.instances.len() == 1 || t0.elapsed() > Duration::from_secs(90) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = load.phase();
    let drains = actions_since(&mut agent, down_at)
        .await?
        .iter()
        .filter(|(_, a)| a.starts_with("drain"))
        .count();
    rows.push((
        "scale-down to 1 client: instances drained".into(),
        drains.to_string(),
    ));
    rows.push((
        "scale-down: back to 1 instance after".into(),
        format!("{:.1} s", t0.elapsed().as_secs_f64()),
    ));
    rows.push((
        "scale-down: requests / failed".into(),
        format!(
            "{} / {}",
            down.ok.load(Ordering::Relaxed),
            down.failed.load(Ordering::Relaxed)
        ),
    ));
    total_failed += down.failed.load(Ordering::Relaxed);
    load.finish().await;
    rows.push((
        "whole run: failed requests".into(),
        total_failed.to_string(),
    ));

    // Ingress against direct, on one instance (the recipe now says at most
    // one), the same clients.
    let one = cluster.recipe.replace("max = 6", "max = 1");
    agent
        .apply_recipe(pb::ApplyRecipeRequest {
            toml: one,
            base_dir: cluster.recipe_dir.path().display().to_string(),
        })
        .await
        .context("re-applying the recipe with max = 1")?;
    let f = frontend(&mut agent).await?;
    let direct = f
        .instances
        .iter()
        .find_map(|i| {
            i.instance
                .as_ref()
                .filter(|x| x.state == "running")
                .map(|x| x.address.clone())
        })
        .context("no running instance")?;
    let (via_ingress, failed_i) = throughput(
        format!("http://{}/app/healthz", cluster.ingress),
        8,
        args.compare_seconds,
    )
    .await;
    let (direct_rps, failed_d) =
        throughput(format!("http://{direct}/healthz"), 8, args.compare_seconds).await;
    rows.push((
        "GET /healthz, 8 clients: via ingress (req/s)".into(),
        format!("{via_ingress:.0}"),
    ));
    rows.push((
        "GET /healthz, 8 clients: direct (req/s)".into(),
        format!("{direct_rps:.0}"),
    ));
    rows.push((
        "ingress / direct".into(),
        format!("{:.2}", via_ingress / direct_rps.max(1.0)),
    ));
    if failed_i + failed_d > 0 {
        rows.push((
            "comparison: failed requests".into(),
            (failed_i + failed_d).to_string(),
        ));
    }

    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(10);
    println!();
    println!("{:<width$}  {}", "measure", "value");
    println!("{}  {}", "-".repeat(width), "-".repeat(16));
    for (k, v) in &rows {
        println!("{k:<width$}  {v}");
    }
    drop(cluster);
    Ok(())
}
