//! `eon`: one binary for every role of a distributed data framework.
//!
//! ```text
//!   eon up              start a local cluster (meta, data engines, query engines, front ends) and supervise it
//!   eon status          show the components of a running cluster and where each table's shards live
//!   eon recipe          check, apply, list and remove front ends' recipes
//!   eon shard move      move a copy of a replicated shard to another data engine, online
//!   eon shard drain     empty a data engine of its shards' copies, online
//!   eon agent --join    run the agent of another host (front ends placed there)
//!   eon load            load a CSV or Parquet file into a table (COPY over the PostgreSQL wire)
//!   eon bench           measure point-SELECT QPS and INSERT rows/s over the PostgreSQL wire
//!   eon bench tpch      run TPC-H's 22 queries, check the answers, compare with PostgreSQL and DataFusion
//!   eon bench-load      measure `eon load` rows/s against another server's COPY
//!   eon bench-scale     measure the balancer and the ingress on a cluster of its own
//!   eon bench-replication  writes with one copy vs three, failover, moving a shard, on a cluster of its own
//!   eon conformance     check that a service implements one of eon's interfaces
//!   eon meta | data-engine | query-engine    run one component (started by `eon up`)
//! ```
//!
//! The role is always the first argument, so `ps` shows which process is
//! which.

mod bench;
mod bench_load;
mod bench_repl;
mod bench_scale;
mod bench_tpch;
mod client;
mod load;
mod own_cluster;
mod recipe_cmd;
mod shard_cmd;
mod status;

// Planning and executing a statement allocates many small objects across
// threads; mimalloc does that markedly cheaper than glibc's malloc (the
// largest item in a profile of point selects).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "eon",
    version,
    about = "eon: a distributed data framework in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum ShardAction {
    /// Move one copy of a replicated shard to another data engine, online
    /// (`eon status` shows the engines and where each table's shards live).
    Move {
        /// The table (`schema.table`, or a table of `public`), or an
        /// index's storage table.
        table: String,
        /// The shard's number.
        shard: u32,
        /// The data engine giving up its copy.
        #[arg(long)]
        from: u64,
        /// The data engine taking it.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        find: client::Find,
    },
    /// Empty a data engine of its shards' copies, online: it takes no new
    /// copies, and the balancer moves its copies to the other engines.
    /// Waits until it keeps none (Ctrl-C leaves it draining).
    Drain {
        /// The data engine (`eon status` lists them).
        engine: u64,
        /// Stop draining it: it takes copies again.
        #[arg(long)]
        cancel: bool,
        /// Return at once instead of waiting until it is empty.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        find: client::Find,
    },
}

#[derive(Subcommand)]
enum RecipeAction {
    /// Parse and check recipe files; print each front end or the field at
    /// fault.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a front end on the running cluster (or update the one of the
    /// recipe's name).
    Apply {
        file: PathBuf,
        #[command(flatten)]
        find: client::Find,
    },
    /// Show each front end with its instances, their state and load.
    List {
        #[command(flatten)]
        find: client::Find,
    },
    /// Drain and stop a front end's instances and forget its recipe.
    Rm {
        name: String,
        #[command(flatten)]
        find: client::Find,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster and supervise it until Ctrl-C.
    Up {
        /// Where all data and logs live.
        #[arg(long, default_value = "./eon-data")]
        data_dir: PathBuf,
        /// Meta's replicas: 1, or 3 to keep the catalog and the timestamp
        /// oracle up through the loss of one (fixed when the cluster is
        /// made).
        #[arg(long = "meta", default_value_t = 1)]
        meta_replicas: u32,
        #[arg(long, default_value_t = 3)]
        data_engines: u32,
        /// Query engines to start with (and the fewest the balancer keeps).
        #[arg(long, default_value_t = 1)]
        query_engines: u32,
        /// The most query engines the balancer runs under SQL load.
        #[arg(long, default_value_t = 4)]
        max_query_engines: u32,
        /// Statements in flight per query engine the balancer aims at.
        #[arg(long, default_value_t = 8.0)]
        query_engine_target: f64,
        /// PostgreSQL wire port.
        #[arg(long, default_value_t = 5433)]
        pg_port: u16,
        /// REST port.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Ingress port: users' HTTP, routed to front ends by their recipes.
        #[arg(long, default_value_t = 8000)]
        ingress_port: u16,
        /// Front ends to run (recipe files; see `eon recipe check`).
        #[arg(long = "recipe", num_args = 1..)]
        recipes: Vec<PathBuf>,
        /// Hosts for front ends, with their slots and power commands (TOML;
        /// see `eon_common::hosts`). Default: this machine only.
        #[arg(long)]
        hosts: Option<PathBuf>,
        /// Address the PostgreSQL, REST and ingress ports listen on.
        #[arg(long, default_value = "127.0.0.1")]
        listen: String,
        /// Shards of a new table (unless its CREATE TABLE says otherwise).
        #[arg(long, default_value_t = 8)]
        shards: u32,
        /// MVCC retention of the data engines, in seconds: older row
        /// versions are garbage-collected, and snapshots older than this
        /// fail with "snapshot too old".
        #[arg(long, env = "EON_GC_RETENTION", default_value_t = 300)]
        gc_retention: u64,
        /// Memory each data engine may use for rows in memory (e.g. 512MiB,
        /// 2GiB); older data moves to columnar segments on disk. Default:
        /// no limit.
        #[arg(long, env = "EON_MEMORY_LIMIT", value_parser = eon_common::parse_size)]
        memory_limit: Option<u64>,
        /// Seconds a data engine may be unreachable before its copies of
        /// shards are rebuilt on other data engines.
        #[arg(long, env = "EON_REPLACE_AFTER", default_value_t = 300)]
        replace_after: u64,
        /// Accept every client without a password, on the PostgreSQL wire
        /// and over REST (for experiments on a machine of your own only).
        #[arg(long)]
        trust: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Work with front-end recipes (TOML files describing how to run a
    /// front end).
    Recipe {
        #[command(subcommand)]
        action: RecipeAction,
    },
    /// Move shards' copies between data engines.
    Shard {
        #[command(subcommand)]
        action: ShardAction,
    },
    /// Run the agent of another host: join the cluster whose agent is at
    /// ADDR and run the front-end instances it places here.
    Agent {
        /// The cluster's agent (`eon status` shows its address).
        #[arg(long)]
        join: String,
        /// A file holding the cluster's secret (the cluster's
        /// `<data-dir>/cluster-secret`); or give it in EON_CLUSTER_SECRET.
        #[arg(long)]
        cluster_secret_file: Option<PathBuf>,
        /// This host's name in the cluster.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "./eon-agent-data")]
        data_dir: PathBuf,
        /// Address the agent's gRPC port listens on.
        #[arg(long, default_value = "127.0.0.1")]
        listen: String,
        /// Address the cluster reaches this host at (default: --listen).
        #[arg(long)]
        advertise: Option<String>,
    },
    /// Show the components of a running cluster and its tables' shards.
    Status {
        #[command(flatten)]
        find: client::Find,
        /// Show the balancer's latest decisions instead.
        #[arg(long)]
        decisions: bool,
        /// How many decisions.
        #[arg(long, default_value_t = 30)]
        limit: u32,
    },
    /// Load a CSV or Parquet file into a table (COPY over the PostgreSQL
    /// wire, in batches, with a progress bar).
    Load(load::LoadArgs),
    /// Measure point-SELECT QPS and INSERT rows/s over the PostgreSQL wire;
    /// `eon bench tpch`: TPC-H's 22 queries, answers checked.
    Bench(bench::BenchCommand),
    /// Measure `eon load` rows/s for CSV and Parquet, against a baseline
    /// server's COPY in the same run.
    BenchLoad(bench_load::BenchLoadArgs),
    /// Measure the balancer on a cluster of its own: reaction to a 5× load
    /// step, actions under ±20 % noise, failed requests on scale-down,
    /// ingress against direct throughput.
    BenchScale(bench_scale::ScaleArgs),
    /// Measure replication on a cluster of its own (four data engines):
    /// write throughput with one copy vs three, how long writes take to
    /// resume after kill -9 and SIGSTOP of a data engine, and how long
    /// moving a copy of a `--move-mb` MB shard takes.
    BenchReplication(bench_repl::ReplicationArgs),
    /// Run the conformance suite of an interface against a running service
    /// (a cluster's: with its secret in EON_CLUSTER_SECRET, e.g.
    /// `EON_CLUSTER_SECRET=$(cat eon-data/cluster-secret)`).
    Conformance {
        /// meta, data-engine, query-engine or agent
        interface: String,
        /// The service's gRPC address (host:port).
        #[arg(long)]
        addr: String,
        /// Meta's address (data-engine: the suite creates its test table there).
        #[arg(long)]
        meta: Option<String>,
    },
    /// Run meta (started by `eon up`).
    Meta {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        listen: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The admin's password, in a file: the admin role (`eon`) is made
        /// at the first start and its password set from this file at every
        /// start.
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
        /// This replica's id among `--peers`.
        #[arg(long, default_value_t = 1)]
        replica: u64,
        /// Every meta replica, `id=host:port,…` (none: a single replica).
        #[arg(long)]
        peers: Option<String>,
        /// Seconds a data engine may be unreachable before its copies of
        /// shards are rebuilt on other data engines.
        #[arg(long, default_value_t = 300)]
        replace_after: u64,
    },
    /// Run a data engine (started by `eon up`).
    DataEngine {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        meta: String,
        #[arg(long, default_value = "127.0.0.1")]
        listen: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Take a checkpoint after this many bytes of log.
        #[arg(long, env = "EON_CHECKPOINT_BYTES", default_value_t = 64 << 20)]
        checkpoint_bytes: u64,
        /// MVCC retention in seconds (see `eon up --gc-retention`).
        #[arg(long, env = "EON_GC_RETENTION", default_value_t = 300)]
        gc_retention: u64,
        /// See `eon up --memory-limit`.
        #[arg(long, env = "EON_MEMORY_LIMIT", value_parser = eon_common::parse_size)]
        memory_limit: Option<u64>,
    },
    /// Run a query engine (started by `eon up`).
    QueryEngine {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        meta: String,
        #[arg(long, default_value = "127.0.0.1")]
        listen: String,
        #[arg(long, default_value_t = 0)]
        pg_port: u16,
        #[arg(long, default_value_t = 0)]
        http_port: u16,
        #[arg(long, default_value_t = 0)]
        grpc_port: u16,
        #[arg(long, default_value_t = 8)]
        default_shards: u32,
        /// Accept every client without a password.
        #[arg(long)]
        trust: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// TLS on the PostgreSQL and REST ports (see `eon_common::tls`).
#[derive(clap::Args, Debug, Clone)]
struct TlsArgs {
    /// The server's certificate chain (PEM). Default for `eon up`: one
    /// issued at every start by the cluster's own CA, `<data-dir>/tls/ca.crt`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS (PostgreSQL clients without
    /// sslmode=require or stronger, plain HTTP on the REST port).
    #[arg(long)]
    require_tls: bool,
}

impl TlsArgs {
    fn files(&self) -> Option<eon_common::tls::CertFiles> {
        Some(eon_common::tls::CertFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }
}

fn init_logging(writer: Option<std::fs::File>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match writer {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How a command that returns nothing ends: success, or its error (with its
/// causes) as one line.
fn exit(r: Result<(), impl std::fmt::Display>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}

/// One line on stderr and a failure exit: how every command reports errors.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("eon: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Status { .. } | Command::Recipe { .. }) {
        // Client commands end quietly when their reader does (`| head`).
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Up {
            data_dir,
            meta_replicas,
            data_engines,
            query_engines,
            max_query_engines,
            query_engine_target,
            pg_port,
            http_port,
            ingress_port,
            recipes,
            hosts,
            listen,
            shards,
            gc_retention,
            memory_limit,
            replace_after,
            trust,
            tls,
        } => {
            if meta_replicas == 0 || meta_replicas == 2 {
                return fail("--meta must be 1 or at least 3: two replicas stop when either does");
            }
            if data_engines == 0 || query_engines == 0 {
                return fail("a cluster needs at least one data engine and one query engine");
            }
            if !(query_engine_target.is_finite() && query_engine_target > 0.0) {
                return fail(format!(
                    "--query-engine-target must be a positive number, not {query_engine_target}"
                ));
            }
            let hosts = match hosts {
                None => vec![],
                Some(file) => match std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read it: {e}"))
                    .and_then(|t| eon_common::hosts::HostsFile::parse(&t))
                {
                    Ok(f) => f.host,
                    Err(e) => return fail(format!("{}: {e}", file.display())),
                },
            };
            // Every recipe is checked before anything starts.
            let mut loaded = Vec::new();
            for file in &recipes {
                match recipe_cmd::load(file) {
                    Ok((text, recipe, dir)) => loaded.push((text, recipe, dir)),
                    Err(e) => return fail(format!("{e:#}")),
                }
            }
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => return fail(format!("cannot find the eon executable: {e}")),
            };
            // The log file needs the directory; `up` reports if it cannot
            // be created.
            let _ = std::fs::create_dir_all(data_dir.join("logs"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.join("logs").join("up.log"))
                .ok();
            init_logging(log);
            let opts = eon_agent::UpOptions {
                exe,
                data_dir: data_dir.clone(),
                meta_replicas,
                data_engines,
                query_engines,
                pg_port,
                http_port,
                ingress_port,
                listen,
                shards,
                query_engine_scaling: eon_agent::control::QueryEngineScaling::new(
                    query_engines,
                    max_query_engines,
                    query_engine_target,
                ),
                hosts,
                recipes: loaded
                    .iter()
                    .map(|(text, _, dir)| (text.clone(), dir.clone()))
                    .collect(),
                data_engine_args: [
                    vec!["--gc-retention".to_string(), gc_retention.to_string()],
                    memory_limit
                        .map(|m| vec!["--memory-limit".to_string(), m.to_string()])
                        .unwrap_or_default(),
                ]
                .concat(),
                trust,
                tls: tls.files(),
                require_tls: tls.require_tls,
                replace_after: std::time::Duration::from_secs(replace_after),
            };
            let require_tls = tls.require_tls;
            let started = std::time::Instant::now();
            let result = runtime().block_on(eon_agent::up(opts, |c| {
                let password = eon_agent::admin_password(&data_dir).unwrap_or_default();
                // The CA's path as clients anywhere can use it.
                let ca_cert = c.ca_cert.as_ref().map(|ca| std::path::absolute(ca).unwrap_or(ca.clone()));
                let link = eon_agent::Link::Tls { ca: ca_cert.clone() };
                let url = c.pg.parse().map(|a| eon_agent::pg_url(&a, eon_agent::ADMIN_ROLE, &password, &link)).unwrap_or_default();
                let rest = c.http.parse().map(|a| eon_agent::rest_url(&a, eon_agent::ADMIN_ROLE, &password, &link)).unwrap_or_default();
                let cacert = ca_cert.as_ref().map(|ca| format!("--cacert {} ", ca.display())).unwrap_or_default();
                let meta = if meta_replicas > 1 {
                    format!("meta ({meta_replicas} replicas)")
                } else {
                    "meta".to_string()
                };
                println!(
                    "eon is up in {:.1}s: {meta}, {data_engines} data engine(s), {query_engines} query engine(s)",
                    started.elapsed().as_secs_f64()
                );
                println!("  data:     {}", data_dir.display());
                println!("  logs:     {}", data_dir.join("logs").display());
                println!();
                println!("  PostgreSQL URL:  {url}");
                println!("  psql:            psql \"{url}\"");
                println!("  REST:            curl -s {cacert}{rest}/v1/sql -d '{{\"sql\": \"SELECT 1 AS one\"}}'");
                if let Some(ca) = &ca_cert {
                    println!("  TLS:             the cluster's CA is {} ({})", ca.display(), if require_tls { "clients must use TLS" } else { "plain connections are accepted too; --require-tls refuses them" });
                }
                if trust {
                    println!("  (--trust: clients connect without a password)");
                } else {
                    println!("  admin password:  {} (user {})", data_dir.join(eon_agent::ADMIN_PASSWORD_FILE).display(), eon_agent::ADMIN_ROLE);
                }
                println!("  status:          eon status --data-dir {}", data_dir.display());
                println!("  ingress:         http://{}/  (front ends: eon recipe list --data-dir {})", c.ingress, data_dir.display());
                for (_, r, _) in &loaded {
                    let route = r.route.prefix.clone().map(|p| format!("http://{}{}/", c.ingress, p.trim_end_matches('/')));
                    println!("    {:<14} {}", r.name, route.unwrap_or_else(|| format!("Host: {}", r.route.host.clone().unwrap_or_default())));
                }
                println!();
                println!("Press Ctrl-C to stop.");
            }));
            match result {
                Ok(()) => {
                    println!("eon stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Recipe {
            action: RecipeAction::Check { files },
        } => {
            let mut ok = true;
            for file in &files {
                match recipe_cmd::load(file) {
                    Ok((_, r, _)) => println!("{}: {}", file.display(), recipe_cmd::describe(&r)),
                    Err(e) => {
                        eprintln!("{e:#}");
                        ok = false;
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Recipe { action } => {
            let r = runtime().block_on(async {
                match &action {
                    RecipeAction::Apply { file, find } => recipe_cmd::apply(find, file).await,
                    RecipeAction::List { find } => recipe_cmd::list(find).await,
                    RecipeAction::Rm { name, find } => recipe_cmd::remove(find, name).await,
                    RecipeAction::Check { .. } => unreachable!("handled above"),
                }
            });
            exit(r)
        }
        Command::Agent {
            join,
            name,
            data_dir,
            listen,
            advertise,
            cluster_secret_file,
        } => {
            if let Some(file) = cluster_secret_file {
                match eon_common::scram::read_password(&file) {
                    Ok(secret) => eon_common::node::set_cluster_secret(secret),
                    Err(e) => return fail(format!("{}: {e}", file.display())),
                }
            }
            if eon_common::node::cluster_secret().is_none() {
                return fail(
                    "eon agent needs the cluster's secret (the cluster's <data-dir>/cluster-secret): --cluster-secret-file FILE or EON_CLUSTER_SECRET",
                );
            }
            let _ = std::fs::create_dir_all(data_dir.join("logs"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.join("logs").join("agent.log"))
                .ok();
            init_logging(log);
            let advertise = advertise.unwrap_or_else(|| {
                if listen == "0.0.0.0" {
                    "127.0.0.1".into()
                } else {
                    listen.clone()
                }
            });
            let opts = eon_agent::joined::JoinOptions {
                join,
                name,
                data_dir,
                listen,
                advertise,
            };
            exit(runtime().block_on(eon_agent::joined::run(opts)))
        }
        Command::Shard {
            action:
                ShardAction::Move {
                    table,
                    shard,
                    from,
                    to,
                    find,
                },
        } => exit(runtime().block_on(shard_cmd::move_copy(&find, &table, shard, from, to))),
        Command::Shard {
            action:
                ShardAction::Drain {
                    engine,
                    cancel,
                    no_wait,
                    find,
                },
        } => exit(runtime().block_on(shard_cmd::drain(&find, engine, cancel, !no_wait))),
        Command::Status {
            find,
            decisions,
            limit,
        } => {
            let r = runtime().block_on(async {
                if decisions {
                    status::decisions(&find, limit).await
                } else {
                    status::run(&find).await
                }
            });
            exit(r)
        }
        Command::BenchScale(args) => exit(runtime().block_on(bench_scale::run(args))),
        Command::BenchReplication(args) => exit(runtime().block_on(bench_repl::run(args))),
        Command::Bench(bench::BenchCommand {
            workload: Some(bench::Workload::Tpch(args)),
            ..
        }) => exit(runtime().block_on(bench_tpch::run(args))),
        Command::Bench(command) => exit(runtime().block_on(bench::run(command.args))),
        Command::Load(args) => exit(runtime().block_on(load::run(args))),
        Command::BenchLoad(args) => exit(runtime().block_on(bench_load::run(args))),
        Command::Conformance {
            interface,
            addr,
            meta,
        } => {
            let r = runtime().block_on(eon_conformance::run(
                &interface,
                &addr,
                meta.as_deref(),
                eon_common::node::cluster_secret(),
            ));
            match r {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Meta {
            data_dir,
            listen,
            port,
            admin_password_file,
            replica,
            peers,
            replace_after,
        } => {
            init_logging(None);
            let peers = match eon_common::node::parse_replicas(peers.as_deref().unwrap_or("")) {
                Ok(p) => p,
                Err(e) => return fail(format!("--peers: {e}")),
            };
            exit(runtime().block_on(eon_meta::run(eon_meta::MetaOptions {
                dir: data_dir,
                listen,
                port,
                admin: admin_password_file.map(|f| (eon_agent::ADMIN_ROLE.to_string(), f)),
                replica,
                peers,
                replace_after: std::time::Duration::from_secs(replace_after),
            })))
        }
        Command::DataEngine {
            id,
            data_dir,
            meta,
            listen,
            port,
            checkpoint_bytes,
            gc_retention,
            memory_limit,
        } => {
            init_logging(None);
            let store = eon_storage::StoreOptions {
                checkpoint_bytes,
                gc_after: std::time::Duration::from_secs(gc_retention),
                memory_limit,
            };
            let opts = eon_data::DataEngineOptions {
                id,
                dir: data_dir,
                meta,
                listen,
                port,
                store,
            };
            exit(runtime().block_on(eon_data::run(opts)))
        }
        Command::QueryEngine {
            id,
            meta,
            listen,
            pg_port,
            http_port,
            grpc_port,
            default_shards,
            trust,
            tls,
        } => {
            init_logging(None);
            let opts = eon_query::QueryEngineOptions {
                id,
                meta,
                listen,
                pg_port,
                http_port,
                grpc_port,
                default_shards,
                trust,
                tls: tls.files(),
                require_tls: tls.require_tls,
            };
            exit(runtime().block_on(eon_query::run(opts)))
        }
    }
}
