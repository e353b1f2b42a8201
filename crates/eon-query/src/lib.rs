//! eon's query engine: the SQL front door of the data store.
//!
//! A query engine is stateless: it keeps no data, only a cache of the
//! catalog. For every statement it gets a timestamp from meta, plans with
//! Apache DataFusion over eon's tables, sends scans (with pushed-down
//! projections, filters and point lookups) and writes to the data engines
//! that hold the shards, merges what comes back and delivers it — over the
//! PostgreSQL wire protocol, REST/JSON, or its own gRPC service.
//!
//! | module       | owns                                                        |
//! |--------------|-------------------------------------------------------------|
//! | [`cluster`]  | clients to meta and data engines, the catalog cache         |
//! | [`session`]  | statement dispatch, snapshots, SET/SHOW                     |
//! | [`provider`] | eon tables in DataFusion; the scan operator and pushdown    |
//! | [`stages`]   | distributed plans: aggregates, joins and top-k cut out as stages run on the data engines, shuffles between them |
//! | [`fragment`] | plan fragments: their codec, and running one on a data engine over its shards and shuffle reads |
//! | [`dml`]      | INSERT/UPDATE/DELETE, RETURNING, the statement's 2PC        |
//! | [`ddl`]      | CREATE/DROP TABLE, DDL undone by a block's ROLLBACK         |
//! | [`alter`]    | ALTER TABLE; rewriting a table under a new key (fences)     |
//! | [`sequences`]| sequences, SERIAL/IDENTITY, nextval & co.                   |
//! | [`fk`]       | FOREIGN KEY enforcement across shards                       |
//! | [`checks`]   | CHECK constraints                                           |
//! | [`indexes`]  | secondary indexes and UNIQUE: entries kept by every write   |
//! | [`withdml`]  | WITH queries attached to INSERT/UPDATE/DELETE               |
//! | [`views`]    | CREATE/DROP VIEW; views expanded into the statements reading them; partial column aliases completed |
//! | [`windows`]  | window frames as PostgreSQL writes them: offsets, EXCLUDE    |
//! | [`searchcycle`] | SEARCH / CYCLE clauses of recursive WITH queries, rewritten as PostgreSQL does |
//! | [`recursion`] | which recursive WITH queries are well formed (PostgreSQL's rules and 42P19 errors) |
//! | [`rowin`] | `(a, b) [NOT] IN (subquery)` in WHERE/HAVING, as EXISTS |
//! | [`setops`]   | INTERSECT ALL / EXCEPT ALL counting copies as PostgreSQL does |
//! | [`decorrelate`] | correlated subqueries DataFusion cannot decorrelate       |
//! | [`apply`]    | what is still correlated after that: LATERAL and subqueries run per outer row |
//! | [`coerce`]   | assignment casts and column checks with PostgreSQL's rules  |
//! | [`cursors`]  | DECLARE … CURSOR, FETCH, MOVE, CLOSE                        |
//! | [`copy`]     | COPY FROM STDIN / TO STDOUT, text and CSV                   |
//! | [`errors`]   | DataFusion errors → SQLSTATEs; planner errors placed in the statement |
//! | [`naming`]   | PostgreSQL's result column names; duplicate names          |
//! | [`moments`] | avg, variance and stddev of integers and numerics: exact, numeric, PostgreSQL's display scale |
//! | [`numeric`] | numeric input and rounding, NaN and ±Infinity in arithmetic and casts |
//! | [`numfmt`]   | to_char and to_number for numbers: PostgreSQL's number pictures |
//! | [`dtfmt`]    | to_char for dates and timestamps: PostgreSQL's date/time pictures |
//! | [`ordered`]  | ordered-set aggregates (percentile_cont/disc, mode) and hypothetical rank & co. |
//! | [`overflow`] | integer +, -, * that fail on overflow (22003); decimal arithmetic and casts handed to [`numeric`] |
//! | [`partitions`] | PARTITION BY / PARTITION OF: routing rows to partitions, reading them in bound order |
//! | [`pgcasts`]  | numeric → integer casts that round like PostgreSQL          |
//! | [`pgcatalog`]| pg_catalog completed from eon's table definitions (psql `\d`) |
//! | [`catalogsql`]| parsing the catalog queries tools send                    |
//! | [`infoschema`]| information_schema from eon's catalog                      |
//! | [`pgfuncs`]  | PostgreSQL functions drivers call; rewrites before planning |
//! | [`pgmath`]   | untyped literals in arithmetic; ln, sqrt, power … with PostgreSQL's errors |
//! | [`pgscalar`] | smaller scalar functions: sind & co., make_timestamp, isfinite, quote_literal |
//! | [`pgformat`] | format(), quote_ident, quote_literal as PostgreSQL has them |
//! | [`pgtypes`]  | PostgreSQL wire encodings of values                         |
//! | [`datetime`] | dates and timestamps read and written as PostgreSQL does (DateStyle) |
//! | [`intervals`]| interval and time input as PostgreSQL reads it; interval literals |
//! | [`joins`]    | USING join columns merged as PostgreSQL merges them         |
//! | [`jsonops`]  | jsonb's operators (`->`, `@>`, `?`, …) and JSON functions   |
//! | [`enums`]    | enum types: CREATE/ALTER/DROP TYPE, casts, label order      |
//! | [`schemas`]  | CREATE/DROP SCHEMA and the search path                      |
//! | [`extract`]  | EXTRACT and date_part with PostgreSQL's calendar, units and types |
//! | [`pg`]       | the PostgreSQL wire protocol (pgwire)                       |
//! | [`auth`]     | SCRAM-SHA-256 on the wire, HTTP basic over REST, `--trust`  |
//! | [`roles`]    | CREATE/ALTER/DROP ROLE and USER, who may run them           |
//! | [`privileges`]| table owners, GRANT/REVOKE, the checks statements pass     |
//! | [`rest`]     | REST/JSON (axum)                                            |
//! | [`txn`]      | transaction blocks: isolation, commit protocol, refresh     |
//! | [`grpc`]     | the `QueryEngine` gRPC service                              |

pub mod alter;
pub mod apply;
pub mod auth;
pub mod catalogsql;
pub mod checks;
pub mod cluster;
pub mod coerce;
pub mod copy;
pub mod cursors;
pub mod datetime;
pub mod ddl;
pub mod decorrelate;
pub mod dml;
pub mod dtfmt;
pub mod enums;
pub mod errors;
pub mod extract;
pub mod fk;
pub mod fragment;
pub mod grpc;
pub mod indexes;
pub mod infoschema;
pub mod intervals;
pub mod joins;
pub mod jsonops;
pub mod moments;
pub mod naming;
pub mod numeric;
pub mod numfmt;
pub mod ordered;
pub mod overflow;
pub mod partitions;
pub mod pg;
pub mod pgcasts;
pub mod pgcatalog;
pub mod pgformat;
pub mod pgfuncs;
pub mod pgmath;
pub mod pgscalar;
pub mod pgtypes;
pub mod privileges;
pub mod provider;
pub mod recursion;
pub mod rest;
pub mod roles;
pub mod rowin;
pub mod schemas;
pub mod searchcycle;
pub mod sequences;
pub mod session;
pub mod setops;
pub mod stages;
pub mod txn;
pub mod views;
pub mod windows;
pub mod withdml;

use std::time::Duration;

use eon_common::stats::Recorder;
use eon_common::{Error, node};
use eon_proto::v1 as pb;
use eon_proto::v1::query_engine_server::QueryEngineServer;

pub use session::{Engine, Output, Session};

#[derive(Debug, Clone)]
pub struct QueryEngineOptions {
    pub id: u64,
    pub meta: String,
    pub listen: String,
    /// 0: pick free ports.
    pub pg_port: u16,
    pub http_port: u16,
    pub grpc_port: u16,
    pub default_shards: u32,
    /// Accept clients without passwords (`eon up --trust`).
    pub trust: bool,
    /// Offer TLS on the PostgreSQL port with this certificate.
    pub tls: Option<eon_common::tls::CertFiles>,
    /// Refuse PostgreSQL clients that did not ask for TLS.
    pub require_tls: bool,
}

/// Run `eon query-engine` until SIGTERM/SIGINT.
pub async fn run(opts: QueryEngineOptions) -> Result<(), Error> {
    eon_common::stall::watch("query-engine");
    let tls = match &opts.tls {
        Some(files) => Some(
            eon_common::tls::acceptor(files, &[b"postgresql"])
                .map_err(|e| Error::internal(format!("TLS: {e}")))?,
        ),
        None if opts.require_tls => {
            return Err(Error::internal(
                "--require-tls needs --tls-cert and --tls-key",
            ));
        }
        None => None,
    };
    let stats = Recorder::new("query-engine", opts.id);
    let cluster = cluster::Cluster::new(&opts.meta, stats, opts.default_shards)?;
    let (pg_listener, pg_addr) = node::bind(&opts.listen, opts.pg_port).await?;
    let (http_listener, http_addr) = node::bind(&opts.listen, opts.http_port).await?;
    let (grpc_listener, grpc_addr) = node::bind(&opts.listen, opts.grpc_port).await?;
    let info = pb::NodeInfo {
        kind: pb::NodeKind::QueryEngine as i32,
        id: opts.id,
        grpc_address: grpc_addr.to_string(),
        pg_address: pg_addr.to_string(),
        http_address: http_addr.to_string(),
        pid: std::process::id(),
        started_at_unix_ms: eon_common::unix_ms(),
        ..Default::default()
    };
    let mut meta = cluster.meta();
    node::register(&mut meta, &info, Duration::from_secs(30)).await?;
    node::spawn_heartbeat(meta, info);
    cluster.refresh_catalog().await?;
    let engine = Engine::new(
        cluster,
        auth::Authenticator::new(opts.trust, opts.require_tls),
    )?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let pg = tokio::spawn(pg::serve(
        engine.clone(),
        pg_listener,
        tls,
        stopped(stop_rx.clone()),
    ));
    let http = {
        let router = rest::router(engine.clone());
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("REST server: {e}");
            }
        })
    };
    let grpc = {
        let service = QueryEngineServer::new(grpc::QueryEngineService {
            engine: engine.clone(),
        });
        let shutdown = stopped(stop_rx.clone());
        let stats = engine.cluster.stats.clone();
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(node::metrics_routes(move || stats.snapshot(0)))
                .add_service(node::guarded(service))
                .serve_with_incoming_shutdown(node::incoming(grpc_listener), shutdown)
                .await
            {
                tracing::error!("gRPC server: {e}");
            }
        })
    };
    tracing::info!(id = opts.id, %pg_addr, %http_addr, %grpc_addr, "query engine serving");
    node::announce_ready(&[
        ("grpc", grpc_addr.to_string()),
        ("pg", pg_addr.to_string()),
        ("http", http_addr.to_string()),
    ]);
    node::shutdown_signal().await;
    tracing::info!("query engine stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = pg.await;
        let _ = http.await;
        let _ = grpc.await;
    })
    .await;
    Ok(())
}
