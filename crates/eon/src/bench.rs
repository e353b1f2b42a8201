//! `eon bench`: point-SELECT QPS and INSERT rows/s over the PostgreSQL wire,
//! with N concurrent clients, against a running cluster — and, with
//! `--baseline`, against another PostgreSQL-speaking server (say a local
//! PostgreSQL) in the same run, printed side by side.
//!
//! Workloads, each run for `--seconds`:
//!
//! - `insert 1 row`: prepared single-row INSERTs (one statement = one
//!   commit);
//! - `insert 100 rows`: prepared 100-row INSERTs;
//! - `point select`: prepared `SELECT v FROM eon_bench WHERE id = $1` on
//!   random existing keys.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::client::pg_connect as connect;

/// `eon bench [WORKLOAD]`: the point-SELECT and INSERT workloads below,
/// or another benchmark named by its subcommand.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    pub workload: Option<Workload>,
    #[command(flatten)]
    pub args: BenchArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Workload {
    /// TPC-H's 22 queries on a cluster of its own, every answer checked;
    /// with --compare also timed on PostgreSQL and DataFusion.
    Tpch(crate::bench_tpch::TpchArgs),
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The cluster to measure (default: `eon up`'s defaults — 127.0.0.1:5433
    /// as the admin, whose password is in ./eon-data/admin-password).
    #[arg(long)]
    url: Option<String>,
    /// Another server to run the same workloads against, for comparison.
    #[arg(long)]
    baseline: Option<String>,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

struct Result_ {
    target: String,
    workload: &'static str,
    clients: usize,
    ops: u64,
    rows: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

/// Run `clients` loops of `op` for `seconds`; `op(client, client_no, i)`
/// returns the rows it handled. Returns statements, rows, elapsed time,
/// latencies and the fewest statements any one client ran.
async fn drive<F, Fut>(
    url: &str,
    clients: usize,
    seconds: u64,
    prepare: &'static str,
    op: F,
) -> anyhow::Result<(u64, u64, Duration, Vec<u64>, u64)>
where
    F: Fn(Client, tokio_postgres::Statement, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(Client, u64)>> + Send,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = connect(url).await?;
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare(prepare).await?;
            let mut client = client;
            let (mut ops, mut rows, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (back, n) = op(client, stmt.clone(), c, i).await?;
                client = back;
                lat.push(t.elapsed().as_micros() as u64);
                ops += 1;
                rows += n;
                i += 1;
            }
            anyhow::Ok((ops, rows, lat))
        }));
    }
    let (mut ops, mut rows, mut lat, mut fewest) = (0, 0, Vec::new(), u64::MAX);
    for t in tasks {
        let (o, r, l) = t.await??;
        ops += o;
        rows += r;
        fewest = fewest.min(o);
        lat.extend(l);
    }
    Ok((ops, rows, start.elapsed(), lat, fewest))
}

async fn run_target(name: &str, url: &str, args: &BenchArgs) -> anyhow::Result<Vec<Result_>> {
    let admin = connect(url).await?;
    admin
        .batch_execute("DROP TABLE IF EXISTS eon_bench")
        .await?;
    admin
        .batch_execute("CREATE TABLE eon_bench (id bigint PRIMARY KEY, v text NOT NULL)")
        .await?;
    let n = args.clients as u64;
    let mut out = Vec::new();

    // Single-row inserts; client c writes ids c, c + n, c + 2n, ...
    let (ops, rows, elapsed, lat, fewest) = drive(
        url,
        args.clients,
        args.seconds,
        "INSERT INTO eon_bench VALUES ($1, $2)",
        move |client, stmt, c, i| async move {
            let id = (i * n + c as u64) as i64;
            client
                .execute(&stmt, &[&id, &format!("value-{id}")])
                .await?;
            Ok((client, 1))
        },
    )
    .await?;
    out.push(Result_ {
        target: name.into(),
        workload: "insert 1 row",
        clients: args.clients,
        ops,
        rows,
        elapsed,
        latencies_us: lat,
    });
    // Every id below this exists (each client wrote at least `fewest`).
    let dense = (fewest * n).max(1);

    // 100-row inserts, far above the single-row ids.
    let base = 1u64 << 40;
    let values: String = (0..100)
        .map(|k| format!("(${}, ${})", 2 * k + 1, 2 * k + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql: &'static str =
        Box::leak(format!("INSERT INTO eon_bench VALUES {values}").into_boxed_str());
    let (ops, rows, elapsed, lat, _) = drive(
        url,
        args.clients,
        args.seconds,
        sql,
        move |client, stmt, c, i| async move {
            let first = base as i64 + ((i * n + c as u64) * 100) as i64;
            let ids: Vec<i64> = (0..100).map(|k| first + k).collect();
            let texts: Vec<String> = ids.iter().map(|id| format!("value-{id}")).collect();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                Vec::with_capacity(200);
            for k in 0..100 {
                params.push(&ids[k]);
                params.push(&texts[k]);
            }
            client.execute(&stmt, &params).await?;
            Ok((client, 100))
        },
    )
    .await?;
    out.push(Result_ {
        target: name.into(),
        workload: "insert 100 rows",
        clients: args.clients,
        ops,
        rows,
        elapsed,
        latencies_us: lat,
    });

    // Point selects over ids that exist.
    let keys = dense;
    let (ops, rows, elapsed, lat, _) = drive(
        url,
        args.clients,
        args.seconds,
        "SELECT v FROM eon_bench WHERE id = $1",
        move |client, stmt, c, i| async move {
            // A cheap deterministic spread over the keys.
            let id = ((i.wrapping_mul(2_654_435_761) + c as u64 * 97) % keys) as i64;
            let rows = client.query(&stmt, &[&id]).await?;
            Ok((client, rows.len() as u64))
        },
    )
    .await?;
    out.push(Result_ {
        target: name.into(),
        workload: "point select",
        clients: args.clients,
        ops,
        rows,
        elapsed,
        latencies_us: lat,
    });
    admin.batch_execute("DROP TABLE eon_bench").await?;
    Ok(out)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let url = crate::client::pg_url_or_default(args.url.as_deref())?;
    let mut results = run_target("eon", &url, &args).await?;
    if let Some(b) = &args.baseline {
        results.extend(run_target("baseline", b, &args).await?);
    }
    println!(
        "{:<9} {:<16} {:>7} {:>12} {:>12} {:>9} {:>9}",
        "target", "workload", "clients", "stmts/s", "rows/s", "p50 ms", "p99 ms"
    );
    for r in &mut results {
        r.latencies_us.sort_unstable();
        let secs = r.elapsed.as_secs_f64();
        println!(
            "{:<9} {:<16} {:>7} {:>12.0} {:>12.0} {:>9.2} {:>9.2}",
            r.target,
            r.workload,
            r.clients,
            r.ops as f64 / secs,
            r.rows as f64 / secs,
            percentile(&r.latencies_us, 0.5),
            percentile(&r.latencies_us, 0.99)
        );
    }
    Ok(())
}
