//! `eon bench-replication`: what three copies of each shard cost and buy,
//! measured on a cluster of its own (four data engines), one table with
//! one copy beside one with three, in the same run:
//!
//! - **writes**: single-row INSERTs per second from `--clients` loops for
//!   `--seconds`, and rows per second of one bulk `INSERT … SELECT` of
//!   `--rows` rows, into each table;
//! - **failover**: how long after `kill -9` of a data engine, and after
//!   SIGSTOP of another (alive but silent, as a hung machine is), a write
//!   to every shard of the three-copy table works again;
//! - **moving a shard**: a one-shard table of `--move-mb` MB with three
//!   copies; one copy is moved to the fourth engine (`MoveReplica`, as `eon
//!   shard move` does), timed until the new copy caught up, became a voter
//!   and the old one is gone.

use std::time::{Duration, Instant};

use anyhow::Context;
use eon_proto::v1 as pb;
use eon_proto::v1::agent_client::AgentClient;

use crate::client::pg_connect as connect;
use crate::own_cluster::OwnCluster;

#[derive(clap::Args, Debug)]
pub struct ReplicationArgs {
    /// Concurrent clients of the single-row INSERT phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of single-row INSERTs into each table.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rows of the bulk INSERT into each table.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Size in MB of the shard that is moved (0: no move).
    #[arg(long, default_value_t = 1024)]
    move_mb: u64,
}

/// A data engine's counters, by instance name.
async fn engine_counters(
    agent: &mut AgentClient<eon_common::node::Channel>,
    secret: &str,
) -> anyhow::Result<Vec<(String, std::collections::HashMap<String, u64>)>> {
    let mut out = Vec::new();
    let instances = agent
        .list(pb::ListInstancesRequest {})
        .await?
        .into_inner()
        .instances;
    for i in instances.into_iter().filter(|i| i.kind == "data-engine") {
        let channel = eon_common::node::channel_with(&i.address, Some(secret))?;
        let mut client = eon_proto::v1::data_engine_client::DataEngineClient::new(channel);
        if let Ok(s) = client.stats(pb::StatsRequest {}).await {
            out.push((i.name, s.into_inner().counters));
        }
    }
    Ok(out)
}

/// Load a one-shard, three-copy table of about `mb` MB, move one copy to an
/// engine keeping none; how long until the new copy is a voter in the old
/// one's place, and until the old one is deleted (a removed replica is not
/// told: it deletes its copy after `eon_data::replicas::REMOVE_GRACE`).
async fn move_shard(
    url: &str,
    own: &OwnCluster,
    agent: &mut AgentClient<eon_common::node::Channel>,
    secret: &str,
    mb: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let admin = connect(url).await?;
    admin
        .batch_execute(
            "CREATE TABLE moved (id bigint PRIMARY KEY, v text NOT NULL) \
             WITH (replication = 3, shards = 1)",
        )
        .await?;
    // 1 KB rows, 10 000 per statement.
    let rows = mb * 1024;
    let mut from = 0;
    while from < rows {
        let to = (from + 10_000).min(rows);
        // A statement whose leader stalls mid-write fails with its outcome
        // unknown; it is run again, and rows already there are skipped.
        let mut tries = 0;
        loop {
            let done = admin
                .batch_execute(&format!(
                    "INSERT INTO moved SELECT g, repeat('x', 1000) \
                     FROM generate_series({from}, {}) g ON CONFLICT DO NOTHING",
                    to - 1
                ))
                .await;
            match done {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("  loading rows {from}..{to} failed ({e}); again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        from = to;
    }
    let file = eon_agent::read_cluster_file(&own.data_dir()).context("no cluster.json")?;
    let mut meta = eon_proto::v1::meta_client::MetaClient::new(eon_common::node::channel_with(
        &file.meta,
        Some(secret),
    )?);
    let catalog = meta
        .get_catalog(pb::GetCatalogRequest {})
        .await?
        .into_inner();
    let t = catalog
        .tables
        .iter()
        .find(|t| t.name == "moved")
        .context("no table moved")?;
    let list = t.replicas[0].engines.clone();
    let engines: Vec<u64> = agent
        .list(pb::ListInstancesRequest {})
        .await?
        .into_inner()
        .instances
        .iter()
        .filter(|i| i.kind == "data-engine")
        .map(|i| i.id)
        .collect();
    let to = *engines
        .iter()
        .find(|e| !list.contains(e))
        .context("no data engine to move to")?;
    // A follower's copy: the leader keeps serving throughout.
    let from = *list
        .iter()
        .rev()
        .find(|e| **e != t.placement[0])
        .context("no follower")?;
    let replicas_on = |counters: &[(String, std::collections::HashMap<String, u64>)], e: u64| {
        counters
            .iter()
            .find(|(n, _)| *n == format!("data-engine-{e}"))
            .and_then(|(_, c)| c.get("shard_replicas").copied())
            .unwrap_or(0)
    };
    let before = engine_counters(agent, secret).await?;
    let (from_before, to_before) = (replicas_on(&before, from), replicas_on(&before, to));
    let start = Instant::now();
    meta.move_replica(pb::MoveReplicaRequest {
        table: t.id,
        shard: 0,
        from,
        to,
    })
    .await?;
    // Moved when the new copy runs and every group's voters are its list;
    // done when the old copy is deleted too.
    let mut voting = None;
    loop {
        let counters = engine_counters(agent, secret).await?;
        let changing: u64 = counters
            .iter()
            .map(|(_, c)| c.get("shard_groups_changing").copied().unwrap_or(0))
            .sum();
        if voting.is_none() && changing == 0 && replicas_on(&counters, to) > to_before {
            voting = Some(start.elapsed());
        }
        if let Some(voting) = voting
            && replicas_on(&counters, from) < from_before
        {
            return Ok((voting, start.elapsed()));
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(3600),
            "the move did not finish within an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Single-row INSERTs per second into `table` from `clients` loops.
async fn single_rows(url: &str, table: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = connect(url).await?;
        let sql = format!("INSERT INTO {table} VALUES ($1, 'single')");
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare(&sql).await?;
            let mut done = 0u64;
            while Instant::now() < deadline {
                let id = (done * clients as u64 + c as u64) as i64;
                client.execute(&stmt, &[&id]).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Rows per second of one bulk INSERT of `rows` rows into `table`.
async fn bulk(url: &str, table: &str, rows: u64) -> anyhow::Result<f64> {
    let client = connect(url).await?;
    let from = 1_000_000_000u64;
    let start = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series({from}, {}) g",
            from + rows - 1
        ))
        .await?;
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// How long until `sql` works (each try given 10 s, at most a minute).
async fn until_it_works(url: &str, sql: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let tried = async {
            let client = connect(url).await?;
            client.batch_execute(sql).await?;
            anyhow::Ok(())
        };
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(10), tried).await {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "{sql} did not work again within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn instance(
    agent: &mut AgentClient<eon_common::node::Channel>,
    name: &str,
) -> anyhow::Result<pb::Instance> {
    agent
        .list(pb::ListInstancesRequest {})
        .await?
        .into_inner()
        .instances
        .into_iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no instance {name}"))
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub async fn run(args: ReplicationArgs) -> anyhow::Result<()> {
    println!("starting a cluster with 4 data engines ...");
    let own = OwnCluster::start(
        "eon-bench-replication-",
        &["--data-engines".into(), "4".into()],
    )?;
    let url = own.pg_url()?;
    let file = eon_agent::read_cluster_file(&own.data_dir()).context("no cluster.json")?;
    let secret = eon_common::node::read_cluster_secret(&own.data_dir())?;
    let mut agent = AgentClient::new(eon_common::node::channel_with(&file.agent, Some(&secret))?);

    let admin = connect(&url).await?;
    for (table, copies) in [("one", 1), ("three", 3)] {
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, v text NOT NULL) \
                 WITH (replication = {copies}); \
                 INSERT INTO {table} SELECT -g, 'warm' FROM generate_series(1, 100) g"
            ))
            .await?;
    }

    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut single = Vec::new();
    let mut bulks = Vec::new();
    for table in ["one", "three"] {
        println!("single-row INSERTs into {table} ...");
        single.push(single_rows(&url, table, args.clients, args.seconds).await?);
        println!("bulk INSERT into {table} ...");
        bulks.push(bulk(&url, table, args.rows).await?);
    }
    rows.push((
        format!("single-row INSERTs/s ({} clients)", args.clients),
        format!("{:.0}", single[0]),
        format!("{:.0} ({:.0} %)", single[1], 100.0 * single[1] / single[0]),
    ));
    rows.push((
        format!("bulk INSERT rows/s ({} rows)", args.rows),
        format!("{:.0}", bulks[0]),
        format!("{:.0} ({:.0} %)", bulks[1], 100.0 * bulks[1] / bulks[0]),
    ));

    // Failover: writes to every shard of the three-copy table (40 rows
    // over its shards; a retry may find its first try committed).
    let write = |from: i64| {
        format!(
            "INSERT INTO three SELECT g, 'failover' FROM generate_series({from}, {}) g \
             ON CONFLICT DO NOTHING",
            from + 39
        )
    };
    println!("kill -9 of data-engine-1 ...");
    let killed = instance(&mut agent, "data-engine-1").await?;
    // SAFETY: plain syscall on a process of this benchmark's cluster.
    unsafe { libc::kill(killed.pid as i32, libc::SIGKILL) };
    let after_kill = until_it_works(&url, &write(2_000_000_000)).await?;
    // Let the supervisor restart it and its copies catch up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = instance(&mut agent, "data-engine-1").await?;
        if i.state == "running" && i.pid > 0 && i.pid != killed.pid {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "data-engine-1 did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("SIGSTOP of data-engine-2 ...");
    let frozen = instance(&mut agent, "data-engine-2").await?;
    // SAFETY: as above.
    unsafe { libc::kill(frozen.pid as i32, libc::SIGSTOP) };
    let after_stop = until_it_works(&url, &write(2_000_000_100)).await;
    // SAFETY: as above.
    unsafe { libc::kill(frozen.pid as i32, libc::SIGCONT) };
    let after_stop = after_stop?;
    rows.push((
        "writes resume after kill -9 of an engine".into(),
        "(lost until it restarts)".into(),
        seconds(after_kill),
    ));
    rows.push((
        "writes resume after SIGSTOP of an engine".into(),
        "(lost until it resumes)".into(),
        seconds(after_stop),
    ));
    if args.move_mb > 0 {
        // Let the restarted and resumed engines settle first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "loading {} MB into a one-shard table, then moving a copy ...",
            args.move_mb
        );
        let (voting, deleted) = move_shard(&url, &own, &mut agent, &secret, args.move_mb).await?;
        rows.push((
            format!("moving a {} MB shard's copy", args.move_mb),
            "(one copy: not moved online)".into(),
            format!(
                "{} (old copy deleted after {})",
                seconds(voting),
                seconds(deleted)
            ),
        ));
    }

    println!();
    println!("{:<42} {:>26}   {}", "measure", "1 copy", "3 copies");
    for (what, one, three) in rows {
        println!("{what:<42} {one:>26}   {three}");
    }
    Ok(())
}
