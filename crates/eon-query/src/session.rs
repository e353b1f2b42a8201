//! Sessions: one per client connection (PostgreSQL wire), per REST request,
//! or per gRPC call. A session parses SQL, sends each statement down the
//! right path, and hands back an [`Output`] for the front door to encode.
//!
//! ```text
//!   SELECT / EXPLAIN ──► timestamp from meta ──► DataFusion plan (EonTable scans) ──► stream of batches
//!   INSERT/UPDATE/DELETE ──► dml.rs: read with DataFusion, write to data engines (1PC or 2PC)
//!   CREATE/DROP TABLE ──► ddl.rs: meta, then data engines
//!   SET / SHOW / BEGIN / COMMIT ──► here
//! ```
//!
//! Every statement runs at its own snapshot: the timestamp meta hands out
//! when the statement starts. The snapshot travels to the scans through a
//! [`StatementContext`] in the statement's copy of the DataFusion session
//! state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemoryCatalogProvider, MemoryCatalogProviderList};
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectName, ObjectType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use eon_common::error::sqlstate;
use eon_common::{Error, Result, SqlType};
use futures::TryStreamExt;

use crate::cluster::Cluster;
use crate::errors::from_df;
use crate::provider::{EonCatalog, StatementContext};
use crate::txn::{Isolation, TxnState};
use crate::{ddl, dml};

/// The database name clients see (`current_database()`).
pub const DATABASE: &str = "eon";
/// How long a block waits for a row another block is writing when that
/// block has the smaller id (see `Session::undo_for_retry`).
const DIE_AFTER: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a statement keeps retrying write conflicts.
pub const CONFLICT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// What `server_version` reports: the PostgreSQL release eon follows.
pub const SERVER_VERSION: &str = "15.0";

/// The result of one statement.
pub enum Output {
    /// Rows. `tag` is the command tag without the row count ("SELECT",
    /// "INSERT 0" for INSERT … RETURNING): front doors append the count.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        tag: String,
    },
    /// A complete command tag ("CREATE TABLE", "INSERT 0 3").
    Command(String),
    /// BEGIN: a transaction block started (tag "BEGIN").
    TxnStart(String),
    /// COMMIT or ROLLBACK: the transaction block ended (the tag says how).
    TxnEnd(String),
    /// COPY FROM STDIN: the client sends the rows next (PostgreSQL wire
    /// only), then `copy::finish` writes them.
    CopyIn(crate::copy::CopyIn),
    /// COPY TO STDOUT: rows to send in a COPY format.
    CopyOut {
        format: crate::copy::CopyFormat,
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
}

impl Output {
    pub fn rows(batches: Vec<RecordBatch>, schema: SchemaRef, tag: &str) -> Result<Output> {
        let stream = MemoryStream::try_new(batches, schema.clone(), None).map_err(from_df)?;
        Ok(Output::Rows {
            schema,
            stream: Box::pin(stream),
            tag: tag.to_string(),
        })
    }
}

/// How many bytes of a query's first rows are held back before any goes
/// to the client (see [`hold_back`]).
const RETRY_BUFFER: usize = 512 * 1024;

/// Read the first `limit` bytes of `stream` (or all of it) before handing
/// it on, so that an error there — a serialization failure from a data
/// engine whose table was dropped or rewritten under the statement's
/// catalog — comes back as the statement's error, which can be retried,
/// rather than after rows were sent (CockroachDB's result buffer, for the
/// same reason).
async fn hold_back(
    mut stream: SendableRecordBatchStream,
    limit: usize,
) -> Result<SendableRecordBatchStream> {
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;
    let schema = stream.schema();
    let mut held = vec![];
    let mut size = 0;
    while size < limit {
        match stream.next().await {
            None => {
                let all = MemoryStream::try_new(held, schema, None).map_err(from_df)?;
                return Ok(Box::pin(all));
            }
            Some(Err(e)) => return Err(from_df(e)),
            Some(Ok(batch)) => {
                size += batch.get_array_memory_size();
                held.push(batch);
            }
        }
    }
    let rest = futures::stream::iter(held.into_iter().map(Ok)).chain(stream);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rest)))
}

/// A parsed statement with what a client may ask about it before running it
/// (the extended protocol's Describe).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub statement: Statement,
    /// Type of each `$n` parameter (None: unknown, treated as text).
    pub param_types: Vec<Option<SqlType>>,
    /// Columns of the result, for statements that return rows.
    pub result: Option<SchemaRef>,
}

/// What all sessions of a query engine share.
pub struct Engine {
    pub cluster: Arc<Cluster>,
    /// How clients log in (both front doors).
    pub auth: crate::auth::Authenticator,
    /// What pg_catalog's oids stand for (see `pgcatalog`).
    pub definitions: Arc<crate::pgcatalog::Definitions>,
    base: SessionState,
    catalog_sql: crate::catalogsql::CatalogParser,
}

impl Engine {
    /// The session state every statement's is cloned from (functions,
    /// settings; no statement context).
    pub(crate) fn base_state(&self) -> &SessionState {
        &self.base
    }

    pub fn new(cluster: Arc<Cluster>, auth: crate::auth::Authenticator) -> Result<Arc<Engine>> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE, "public")
            .with_create_default_catalog_and_schema(false)
            // eon's own information_schema (infoschema.rs), not DataFusion's.
            .with_information_schema(false)
            .with_target_partitions(4);
        let opts = config.options_mut();
        opts.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        // 1.5 is numeric in PostgreSQL, not double precision.
        opts.sql_parser.parse_float_as_decimal = true;
        // A window runs in one partition, sorted by its PARTITION BY and
        // ORDER BY keys, as PostgreSQL runs it: rows come out grouped by
        // partition in key order (what clients without an ORDER BY of their
        // own see from PostgreSQL), not in the order of a hash split.
        opts.optimizer.repartition_windows = false;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        let catalog = Arc::new(EonCatalog {
            cluster: cluster.clone(),
            fixed: MemoryCatalogProvider::new(),
        });
        datafusion::catalog::CatalogProviderList::register_catalog(
            catalogs.as_ref(),
            DATABASE.into(),
            catalog,
        );
        let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> = vec![
            Arc::new(crate::decorrelate::DecorrelateScalarSubquery),
            Arc::new(crate::pgcasts::PostgresNumericCasts),
            Arc::new(crate::numeric::GuardSpecials),
            Arc::new(crate::overflow::CheckedConstants),
        ];
        // What DataFusion's decorrelation rules leave is run per row: right
        // after them, before projections are pruned and joins reordered
        // without regard to the outer references.
        for rule in datafusion::optimizer::Optimizer::new().rules {
            let last_decorrelation = rule.name() == "decorrelate_lateral_join";
            rules.push(rule);
            if last_decorrelation {
                rules.push(Arc::new(crate::apply::ApplyRule));
            }
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_catalog_list(catalogs)
            // Before DataFusion's own (with_default_features adds them).
            .with_expr_planners(vec![Arc::new(crate::pgmath::UnknownOperands)])
            .with_default_features()
            .with_optimizer_rules(rules)
            .with_physical_optimizer_rule(Arc::new(crate::overflow::CheckedArithmetic))
            // Last: cut what runs on the data engines out of the final plan.
            .with_physical_optimizer_rule(Arc::new(crate::stages::Distribute))
            .with_query_planner(Arc::new(crate::apply::EonQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        datafusion_pg_catalog::setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider)
            .map_err(|e| Error::internal(format!("pg_catalog: {e}")))?;
        // Before eon's functions are registered: rebuilding the state
        // registers its functions again, in no fixed order, and a function
        // eon replaces under an alias (to_char) could win back its name.
        crate::catalogsql::plan_oid_types(&ctx);
        crate::pgfuncs::register(&ctx);
        let definitions = Arc::new(crate::pgcatalog::Definitions::default());
        crate::pgcatalog::register(&ctx, &definitions, &cluster);
        let db = ctx
            .catalog(DATABASE)
            .ok_or_else(|| Error::internal("no database catalog"))?;
        let inner = db
            .schema("pg_catalog")
            .ok_or_else(|| Error::internal("no pg_catalog"))?;
        db.register_schema(
            "pg_catalog",
            Arc::new(crate::pgcatalog::EonPgCatalog {
                inner,
                cluster: cluster.clone(),
                definitions: definitions.clone(),
            }),
        )
        .map_err(from_df)?;
        db.register_schema(
            "information_schema",
            Arc::new(crate::infoschema::InformationSchema {
                cluster: cluster.clone(),
            }),
        )
        .map_err(from_df)?;
        Ok(Arc::new(Engine {
            cluster,
            definitions,
            auth,
            base: ctx.state(),
            catalog_sql: Default::default(),
        }))
    }

    /// A session of role `user` (empty until a PostgreSQL client has
    /// authenticated).
    pub fn session(self: &Arc<Self>, user: &str) -> Session {
        Session {
            engine: self.clone(),
            user: std::sync::RwLock::new(user.to_string()),
            authenticated: std::sync::RwLock::new(user.to_string()),
            session_user: std::sync::RwLock::new(user.to_string()),
            cancel: tokio::sync::watch::Sender::new(0),
            vars: Mutex::new(BTreeMap::new()),
            startup_vars: Mutex::new(BTreeMap::new()),
            notices: Mutex::new(Vec::new()),
            txn: Arc::new(Mutex::new(None)),
            idle: Arc::new(Idle::default()),
            default_isolation: Mutex::new(Isolation::Serializable),
            sequence_functions: crate::sequences::functions(&self.cluster, &Default::default())
                .into_iter()
                .map(Arc::new)
                .collect(),
            temp_schema: format!("{TEMP_SCHEMA_PREFIX}{}", rand::random::<u32>()),
            has_temp: Default::default(),
            cursors: Default::default(),
        }
    }
}

use eon_common::schema::TEMP_SCHEMA_PREFIX;
use eon_common::schema::is_temp_schema;

pub struct Session {
    pub engine: Arc<Engine>,
    /// The role it runs as (`current_user`): the session user, or the
    /// role `SET ROLE` chose.
    user: std::sync::RwLock<String>,
    /// The role that logged in; only a superuser may change the session
    /// user (`SET SESSION AUTHORIZATION`), and `DEFAULT` goes back to it.
    authenticated: std::sync::RwLock<String>,
    /// The session user: the role that logged in, or the one `SET SESSION
    /// AUTHORIZATION` chose; `RESET ROLE` goes back to it.
    session_user: std::sync::RwLock<String>,
    /// Bumped by a cancel request: the running statement stops (57014).
    cancel: tokio::sync::watch::Sender<u64>,
    vars: Mutex<BTreeMap<String, String>>,
    /// The parameters as the client's startup message set them: what
    /// RESET goes back to (PostgreSQL's "session default").
    startup_vars: Mutex<BTreeMap<String, String>>,
    /// Notices and warnings for the client, sent before the statement's
    /// result (PostgreSQL's NoticeResponse).
    notices: Mutex<Vec<Notice>>,
    /// The open transaction block, if any.
    txn: Arc<Mutex<Option<TxnState>>>,
    /// Watch for idle_in_transaction_session_timeout.
    idle: Arc<Idle>,
    /// Isolation of new transactions (SET SESSION CHARACTERISTICS, SET
    /// default_transaction_isolation).
    default_isolation: Mutex<Isolation>,
    /// nextval & co., bound to its memory of what its nextval calls
    /// returned (currval, lastval); made once, registered per statement.
    sequence_functions: Vec<Arc<datafusion::logical_expr::ScalarUDF>>,
    /// The schema of its temporary tables (PostgreSQL's `pg_temp_N`; N is
    /// random, so unique across query engines), and whether it has made
    /// any: they shadow permanent tables of the same name and are dropped
    /// when the session ends.
    temp_schema: String,
    has_temp: std::sync::atomic::AtomicBool,
    /// Its open cursors (DECLARE … CURSOR).
    cursors: crate::cursors::Cursors,
}

/// A message for the client that is not an error: PostgreSQL's NOTICE
/// (`table "x" does not exist, skipping`) and WARNING (`there is no
/// transaction in progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `NOTICE` or `WARNING`.
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
}

/// SQLSTATE of the error that ends a session idle too long in a block.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";

/// idle_in_transaction_session_timeout: a session that stays idle inside a
/// transaction block longer than that has its block rolled back (releasing
/// what its writes hold) and is then ended, as PostgreSQL ends it — eon
/// sends the FATAL error when the client next speaks.
#[derive(Default)]
struct Idle {
    /// Bumped, under the block's lock, as each statement starts.
    epoch: std::sync::atomic::AtomicU64,
    /// Result streams still being sent.
    busy: std::sync::atomic::AtomicU64,
    /// The timeout ended the block: the session ends at its next statement.
    expired: std::sync::atomic::AtomicBool,
}

/// Keeps a session counted busy while a result stream is being sent.
struct Busy(Arc<Idle>);

impl Busy {
    fn new(idle: &Arc<Idle>) -> Busy {
        idle.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(idle.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a statement's writes are made.
#[derive(Debug, Clone, Copy)]
pub enum WriteMode {
    /// All or nothing, committed before the statement answers (refused
    /// when the session's default_transaction_read_only is on).
    Autocommit { read_only: bool },
    /// Staged under the open transaction.
    Txn { id: u64, read_only: bool, seq: u32 },
}

impl Drop for Session {
    fn drop(&mut self) {
        // A client that goes away in a transaction block rolls it back;
        // then its temporary tables go.
        let txn = self
            .txn
            .lock()
            .unwrap()
            .take()
            .filter(|t| !t.touched.is_empty() || !t.ddl.is_empty());
        let temp = self
            .has_temp
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.temp_schema.clone());
        if txn.is_none() && temp.is_none() {
            return;
        }
        let cluster = self.engine.cluster.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(t) = txn {
                    roll_back(&cluster, t).await;
                }
                if let Some(schema) = temp {
                    ddl::drop_schema_tables(&cluster, &schema).await;
                }
            });
        }
    }
}

/// Roll back a block: its staged writes, then its DDL.
async fn roll_back(cluster: &Arc<Cluster>, mut t: TxnState) {
    crate::txn::abort(cluster, t.id, &t.touched).await;
    crate::ddl::undo(cluster, std::mem::take(&mut t.ddl)).await;
}

/// True when a statement reads PostgreSQL's system catalogs: only those
/// get datafusion-pg-catalog's rewrites (written for the queries psql and
/// drivers send), so user queries keep exact semantics.
fn is_catalog_query(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("pg_") || lower.contains("information_schema") || lower.contains("::reg")
}

/// An identifier as PostgreSQL resolves it: folded to lower case unless
/// quoted.
fn ident_name(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// A savepoint command outside a transaction block.
fn no_block(what: &str) -> Error {
    Error::user(
        "25P01",
        format!("{what} can only be used in transaction blocks"),
    )
}

/// The open block a savepoint command works on: an error outside one, or
/// (unless the command may run there) in a failed one.
fn savepoint_block<'a>(
    txn: &'a mut Option<TxnState>,
    what: &str,
    in_failed: bool,
) -> Result<&'a mut TxnState> {
    let t = txn.as_mut().ok_or_else(|| no_block(what))?;
    if t.failed && !in_failed {
        return Err(crate::txn::aborted_error());
    }
    Ok(t)
}

/// The position of the newest savepoint called `name`; naming one that
/// does not exist fails the block, as any error in it does.
fn find_savepoint(
    t: &mut TxnState,
    name: &datafusion::sql::sqlparser::ast::Ident,
) -> Result<usize> {
    let name = ident_name(name);
    t.savepoints
        .iter()
        .rposition(|(n, _)| *n == name)
        .ok_or_else(|| {
            t.failed = true;
            Error::user("3B001", format!("savepoint \"{name}\" does not exist"))
        })
}

/// The plan's rows as one stream. A `UNION ALL` on top (under
/// projections) gives its branches' rows in the query's order, as
/// PostgreSQL's Append does: its partitions are read one after another
/// rather than merged as they come.
fn in_branch_order(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ctx: Arc<datafusion::execution::TaskContext>,
) -> datafusion::common::Result<datafusion::execution::SendableRecordBatchStream> {
    use datafusion::physical_plan::ExecutionPlanProperties;
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::physical_plan::union::UnionExec;
    use futures::StreamExt;
    let mut top = plan.clone();
    while let Some(p) = top.downcast_ref::<ProjectionExec>() {
        top = p.input().clone();
    }
    let partitions = plan.output_partitioning().partition_count();
    if partitions <= 1 || top.downcast_ref::<UnionExec>().is_none() {
        return execute_stream(plan, ctx);
    }
    let schema = plan.schema();
    let streams = futures::stream::iter(0..partitions)
        .map(move |i| plan.execute(i, ctx.clone()))
        .map(|s| match s {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        })
        .flatten();
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, streams)))
}

/// sqlparser's error as PostgreSQL words it, with the error cursor at the
/// offending token when `sql` is the text that was parsed.
fn syntax_error(e: datafusion::sql::sqlparser::parser::ParserError, sql: Option<&str>) -> Error {
    let msg = e.to_string();
    let msg = msg
        .strip_prefix("sql parser error: ")
        .unwrap_or(&msg)
        .to_string();
    let position = sql.and_then(|sql| {
        let (_, at) = msg.rsplit_once(" at Line: ")?;
        let (line, column) = at.split_once(", Column: ")?;
        eon_common::error::Cursor::LineColumn(
            line.trim().parse().ok()?,
            column.trim().parse().ok()?,
        )
        .resolve(sql)
    });
    let error = match msg.split_once(", found: ") {
        Some((_, found)) => {
            let token = found.split(" at Line").next().unwrap_or(found).trim();
            Error::syntax(if token == "EOF" {
                "syntax error at end of input".to_string()
            } else {
                format!("syntax error at or near \"{token}\"")
            })
        }
        None => Error::syntax(msg.split(" at Line: ").next().unwrap_or(&msg).to_string()),
    };
    match position {
        Some(p) => error.with_position(p),
        None => error,
    }
}

impl Session {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.engine.cluster
    }

    /// Schema and name of the relation `name` as this session sees it: an
    /// unqualified name is found in the first schema of the search path
    /// that has a relation (table, index, sequence, view) of that name —
    /// the session's temporary schema first — else it names one in the
    /// first schema new relations go to; `pg_temp.x` is the session's own;
    /// a schema that does not exist is 3F000.
    pub fn relation(&self, name: &ObjectName) -> Result<(String, String)> {
        let (schema, table) = dml::name_parts(name)?;
        let schema = match schema {
            None => {
                // Where it is along the path, else where it would be made.
                let path = self.search_path();
                path.iter()
                    .find(|s| crate::indexes::relation_exists(self, s, &table))
                    .or_else(|| path.iter().find(|s| !is_temp_schema(s)))
                    .cloned()
                    .unwrap_or_else(|| "public".to_string())
            }
            Some(s) if s == "pg_temp" => self.temp_schema.clone(),
            Some(s) if self.cluster().schema_exists(&s) => s,
            Some(s) => {
                return Err(Error::user(
                    sqlstate::INVALID_SCHEMA_NAME,
                    format!("schema \"{s}\" does not exist"),
                ));
            }
        };
        Ok((schema, table))
    }

    /// Schema and name of a relation CREATE makes: a temporary one (or
    /// one named `pg_temp.x`) goes into the session's temporary schema.
    pub fn new_relation(&self, name: &ObjectName, temporary: bool) -> Result<(String, String)> {
        let (schema, table) = dml::name_parts(name)?;
        match schema.as_deref() {
            None if !temporary => {
                let schema = self
                    .search_path()
                    .into_iter()
                    .find(|s| !is_temp_schema(s))
                    .ok_or_else(|| {
                        Error::user(
                            sqlstate::INVALID_SCHEMA_NAME,
                            "no schema has been selected to create in",
                        )
                    })?;
                return Ok((schema, table));
            }
            None | Some("pg_temp") => {}
            Some(s) if s == self.temp_schema => {}
            Some(_) if temporary => {
                return Err(Error::user(
                    sqlstate::INVALID_TABLE_DEFINITION,
                    "cannot create temporary relation in non-temporary schema",
                ));
            }
            Some(_) => return self.relation(name),
        }
        self.has_temp
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok((self.temp_schema.clone(), table))
    }

    /// `pg_temp.x` in a query names the session's own temporary schema.
    fn own_temp_schema(&self, statement: &mut Statement) {
        use datafusion::sql::sqlparser::ast::{Ident, ObjectNamePart, visit_relations_mut};
        let _ = visit_relations_mut(statement, |name| {
            if name.0.len() == 2
                && name.0[0]
                    .as_ident()
                    .is_some_and(|i| dml::ident(i) == "pg_temp")
            {
                name.0[0] = ObjectNamePart::Identifier(Ident::with_quote('"', &self.temp_schema));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
    }

    /// Where unqualified names are looked up, in order: the session's
    /// temporary schema (once it has one), then the schemas of
    /// `search_path` that exist (see [`crate::schemas`]).
    pub fn search_path(&self) -> Vec<String> {
        let setting = self
            .vars
            .lock()
            .unwrap()
            .get("search_path")
            .cloned()
            .unwrap_or_else(|| "\"$user\", public".to_string());
        let cluster = self.cluster();
        let mut path = crate::schemas::search_path(&setting, &self.user(), |s| {
            !is_temp_schema(s) && cluster.schema_exists(s)
        });
        if self.has_temp() {
            path.insert(0, self.temp_schema.clone());
        }
        path
    }

    /// Whether the session has made temporary tables.
    fn has_temp(&self) -> bool {
        self.has_temp.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The role this session runs as.
    pub fn user(&self) -> String {
        self.user.read().unwrap().clone()
    }

    /// The role that logged in.
    pub fn set_user(&self, user: &str) {
        *self.user.write().unwrap() = user.to_string();
        *self.authenticated.write().unwrap() = user.to_string();
        *self.session_user.write().unwrap() = user.to_string();
    }

    /// `SET SESSION AUTHORIZATION role | DEFAULT` (`None`): the session and
    /// current user become `role` — for a superuser only, as in
    /// PostgreSQL — or the role that logged in.
    fn set_session_authorization(&self, role: Option<String>) -> Result<Output> {
        let authenticated = self.authenticated.read().unwrap().clone();
        let role = role.unwrap_or_else(|| authenticated.clone());
        if role != authenticated {
            if !self.is_superuser(&authenticated) {
                return Err(Error::user(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "permission denied to set session authorization",
                ));
            }
            self.existing_role(&role)?;
        }
        *self.session_user.write().unwrap() = role.clone();
        *self.user.write().unwrap() = role;
        Ok(Output::Command("SET".into()))
    }

    /// `SET ROLE role | NONE` (`None`): the current user becomes `role` —
    /// if the session user is a superuser or that role — or the session
    /// user again.
    fn set_role(&self, role: Option<String>) -> Result<Output> {
        let session_user = self.session_user.read().unwrap().clone();
        let role = role.unwrap_or_else(|| session_user.clone());
        if role != session_user {
            self.existing_role(&role)?;
            if !self.is_superuser(&session_user) {
                return Err(Error::user(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("permission denied to set role \"{role}\""),
                ));
            }
        }
        *self.user.write().unwrap() = role;
        Ok(Output::Command("SET".into()))
    }

    fn is_superuser(&self, role: &str) -> bool {
        self.engine.cluster.role(role).is_some_and(|r| r.superuser)
    }

    fn existing_role(&self, role: &str) -> Result<()> {
        match self.engine.cluster.role(role) {
            Some(_) => Ok(()),
            None => Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("role \"{role}\" does not exist"),
            )),
        }
    }

    /// Whom this session's privileges are checked for: its role, or (if
    /// it was dropped meanwhile) a role of that name with no rights.
    pub fn actor(&self) -> eon_proto::v1::Role {
        self.role().unwrap_or_else(|| eon_proto::v1::Role {
            name: self.user(),
            ..Default::default()
        })
    }

    /// This session's role, as of the cached catalog (none if it was
    /// dropped meanwhile).
    pub fn role(&self) -> Option<eon_proto::v1::Role> {
        self.engine.cluster.role(&self.user.read().unwrap())
    }

    /// Split SQL text into statements. Catalog queries go through
    /// datafusion-pg-catalog's parser, which matches the exact text psql and
    /// drivers send and rewrites what DataFusion cannot plan.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        if let Some(statement) = self.maintenance(sql) {
            return Ok(vec![statement?]);
        }
        let normalized = crate::copy::normalize_options(sql);
        let sql = normalized.as_deref().unwrap_or(sql);
        let respelled = transaction_spelling(sql);
        let sql = respelled.as_deref().unwrap_or(sql);
        let mut statements = match is_catalog_query(sql)
            .then(|| self.engine.catalog_sql.parse(sql))
            .flatten()
        {
            Some(statements) => statements,
            None => {
                crate::sequences::parse_statements(sql).map_err(|e| syntax_error(e, Some(sql)))?
            }
        };
        crate::pgfuncs::sequence_names_as_text(&mut statements);
        crate::partitions::rewrite_tableoid(self, &mut statements);
        crate::withdml::hoist(&mut statements);
        crate::setops::zero_columns(&mut statements);
        // Before pgfuncs: the select lists it makes are rewritten there.
        crate::apply::lateral_functions(&mut statements);
        crate::pgfuncs::rewrite(&mut statements);
        crate::jsonops::rewrite(&mut statements);
        crate::windows::rewrite(&mut statements);
        crate::joins::merge_using_columns(&mut statements);
        crate::pgmath::rewrite_unknown_args(&mut statements);
        crate::datetime::rewrite_literals(&mut statements, self.date_style().order)?;
        crate::intervals::rewrite_literals(&mut statements)?;
        crate::enums::rewrite_casts(self, &mut statements)?;
        crate::pgfuncs::array_literals(&mut statements)?;
        self.apply_set_config(&mut statements)?;
        Ok(statements)
    }

    /// `set_config(name, value, is_local)` with literal arguments, as
    /// drivers call it (asyncpg: `set_config('jit', 'off', false)`): the
    /// setting is made as `SET` makes it and the call becomes its value.
    /// eon has no transaction-scoped settings, so `is_local` sets it for the
    /// session too.
    fn apply_set_config(&self, statements: &mut [Statement]) -> Result<()> {
        use datafusion::sql::sqlparser::ast::{
            Expr as E, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
        };
        let text = |a: &FunctionArg| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(E::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        crate::pgfuncs::try_rewrite_expressions(statements, |e: &mut E| {
            let E::Function(f) = e else { return Ok(()) };
            if !f.name.to_string().eq_ignore_ascii_case("set_config") {
                return Ok(());
            }
            let FunctionArguments::List(list) = &f.args else {
                return Ok(());
            };
            let (3, Some(name), Some(value)) = (
                list.args.len(),
                list.args.first().and_then(text),
                list.args.get(1).and_then(text),
            ) else {
                return Ok(());
            };
            self.set_parameter(&name.to_ascii_lowercase(), &value)?;
            *e = E::value(Value::SingleQuotedString(value));
            Ok(())
        })
    }

    /// `VACUUM` and `ANALYZE` as PostgreSQL writes them (`VACUUM (VERBOSE)
    /// ANALYZE a, b`), which the SQL parser does not read. eon's storage
    /// needs neither — old versions are collected by the data engines, and
    /// the planner's size estimates are asked of them as it plans — so they
    /// check that the tables exist; ANALYZE also makes the next plan ask for
    /// fresh estimates. None when `sql` is neither.
    fn maintenance(&self, sql: &str) -> Option<Result<Statement>> {
        let text = sql.trim().trim_end_matches(';').trim();
        let (word, mut rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let word = word.to_ascii_lowercase();
        if !matches!(word.as_str(), "vacuum" | "analyze" | "analyse") {
            return None;
        }
        rest = rest.trim_start();
        if rest.starts_with('(') {
            rest = rest
                .split_once(')')
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        }
        loop {
            let (w, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let option = [
                "full",
                "freeze",
                "verbose",
                "analyze",
                "analyse",
                "skip_locked",
            ];
            if w.is_empty() || !option.contains(&w.to_ascii_lowercase().as_str()) {
                break;
            }
            rest = r.trim_start();
        }
        let check = || -> Result<()> {
            for name in rest
                .split(',')
                .map(|n| n.split('(').next().unwrap_or("").trim())
            {
                if name.is_empty() {
                    continue;
                }
                let object = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(name)
                    .and_then(|mut p| p.parse_object_name(false))
                    .map_err(|e| syntax_error(e, None))?;
                crate::dml::resolve_table(self, &object)?;
            }
            Ok(())
        };
        Some(check().map(|()| {
            if word == "vacuum" {
                Statement::Vacuum(datafusion::sql::sqlparser::ast::VacuumStatement {
                    full: false,
                    sort_only: false,
                    delete_only: false,
                    reindex: false,
                    recluster: false,
                    table_name: None,
                    threshold: None,
                    boost: false,
                })
            } else {
                Statement::Analyze(datafusion::sql::sqlparser::ast::Analyze {
                    table_name: None,
                    partitions: None,
                    for_columns: false,
                    columns: vec![],
                    cache_metadata: false,
                    noscan: false,
                    compute_statistics: false,
                    has_table_keyword: false,
                })
            }
        }))
    }

    /// A copy of the session state for one statement, carrying its context.
    pub fn statement_state(&self, ctx: Arc<StatementContext>) -> SessionState {
        let mut state = match ctx.memory_limit {
            Some(limit) => with_memory_limit(&self.engine.base, limit),
            None => self.engine.base.clone(),
        };
        let path = self.search_path();
        state.config_mut().set_extension(ctx);
        if !self.broadcasts() {
            // No join input is small enough to collect whole (and, in a
            // stage, to broadcast): every join of two tables is
            // partitioned, shuffled between data engines.
            let optimizer = &mut state.config_mut().options_mut().optimizer;
            optimizer.hash_join_single_partition_threshold = 0;
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        if path != ["public"] {
            // Unqualified names are looked up along the path (a provider
            // made from this name; see crate::schemas).
            state.config_mut().options_mut().catalog.default_schema =
                format!("{}{}", crate::schemas::PATH_PREFIX, path.join(","));
        }
        // current_setting() and pg_settings see this session's SETs as of
        // the statement.
        let mut settings = self.vars.lock().unwrap().clone();
        let (isolation, default_isolation) = self.isolations();
        settings.insert("transaction_isolation".into(), isolation.name().into());
        settings.insert(
            "default_transaction_isolation".into(),
            default_isolation.name().into(),
        );
        let user = self.user();
        settings.insert("session_authorization".into(), user.clone());
        state
            .config_mut()
            .set_extension(Arc::new(crate::privileges::Actor(Some(self.actor()))));
        let settings = Arc::new(SessionSettings(settings));
        state.config_mut().set_extension(settings.clone());
        let _ = datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(crate::pgfuncs::session_user(user)),
        );
        let _ = datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(crate::pgfuncs::table_is_visible(
                self.engine.definitions.clone(),
                self.engine.cluster.clone(),
                path.clone(),
            )),
        );
        let _ = datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(crate::auth::create_token_udf(
                self.engine.clone(),
                self.actor(),
            )),
        );
        let _ = datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(crate::privileges::has_table_privilege(
                self.engine.clone(),
                self.actor(),
            )),
        );
        let _ = datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(crate::pgfuncs::current_setting(settings)),
        );
        for f in &self.sequence_functions {
            let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, f.clone());
        }
        state
    }

    /// The snapshot and write mode of a statement that is starting: in a
    /// transaction block its snapshot (REPEATABLE READ, SERIALIZABLE) or a
    /// fresh one (READ COMMITTED); otherwise a fresh one. Getting a fresh
    /// one also brings the catalog up to date.
    pub async fn begin_statement(&self) -> Result<(Arc<StatementContext>, WriteMode)> {
        // A block with one snapshot for all its statements (REPEATABLE READ,
        // SERIALIZABLE) took its timestamp at BEGIN: no round trip to meta.
        let needs_fresh = self
            .txn
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|t| t.isolation == Isolation::ReadCommitted);
        let fresh = if needs_fresh {
            self.cluster().timestamp().await?
        } else {
            0
        };
        let mut guard = self.txn.lock().unwrap();
        let Some(t) = guard.as_mut() else {
            // A statement outside a block is a transaction of its own: under
            // SERIALIZABLE its reads are refreshed when it writes.
            let track_reads = *self.default_isolation.lock().unwrap() == Isolation::Serializable;
            let ctx = StatementContext {
                read_ts: fresh,
                track_reads,
                distribute: self.distributes(),
                memory_limit: self.query_memory(),
                ..Default::default()
            };
            let read_only = self.default_read_only();
            return Ok((Arc::new(ctx), WriteMode::Autocommit { read_only }));
        };
        if t.failed {
            return Err(crate::txn::aborted_error());
        }
        t.started = true;
        t.seq += 1;
        let read_ts = if t.isolation == Isolation::ReadCommitted {
            fresh
        } else {
            t.read_ts
        };
        let ctx = Arc::new(StatementContext {
            read_ts,
            txn_id: t.id,
            track_reads: t.isolation == Isolation::Serializable,
            reads: Default::default(),
            distribute: self.distributes(),
            memory_limit: self.query_memory(),
        });
        if ctx.track_reads {
            t.statements.push(ctx.clone());
        }
        Ok((
            ctx,
            WriteMode::Txn {
                id: t.id,
                read_only: t.read_only,
                seq: t.seq,
            },
        ))
    }

    /// Note that the open transaction sent writes to `touched` engines and
    /// staged them on `staged` (engine, incarnation).
    pub fn staged_on(
        &self,
        staged: impl IntoIterator<Item = (u64, u64)>,
        touched: impl IntoIterator<Item = u64>,
    ) {
        if let Some(t) = self.txn.lock().unwrap().as_mut() {
            for (engine, epoch) in staged {
                // The first incarnation that took a write is the one that
                // must still be there at commit.
                t.engines.entry(engine).or_insert(epoch);
            }
            t.touched.extend(touched);
        }
    }

    /// True when the open transaction block has failed (only ROLLBACK, or
    /// ROLLBACK TO a savepoint, is accepted).
    pub fn txn_failed(&self) -> bool {
        self.txn.lock().unwrap().as_ref().is_some_and(|t| t.failed)
    }

    /// The anchor engine of the open transaction: the one it already has,
    /// or `candidate` (an engine of its first staged write), which then
    /// starts receiving heartbeats.
    pub fn anchor(&self, candidate: u64) -> u64 {
        let mut guard = self.txn.lock().unwrap();
        let Some(t) = guard.as_mut() else {
            return candidate;
        };
        if let Some(a) = t.anchor {
            return a;
        }
        t.anchor = Some(candidate);
        t.heartbeat = Some(crate::txn::spawn_heartbeat(
            self.cluster().clone(),
            t.id,
            candidate,
            t.aborted_remotely.clone(),
        ));
        candidate
    }

    /// A statement failed: an open transaction block is now aborted (25P02
    /// until ROLLBACK), as in PostgreSQL. Front doors call this for errors
    /// that happen before `execute` (parse errors).
    pub fn note_error(&self) {
        if let Some(t) = self.txn.lock().unwrap().as_mut() {
            t.failed = true;
        }
    }

    /// True inside a transaction block.
    pub fn in_transaction(&self) -> bool {
        self.txn.lock().unwrap().is_some()
    }

    /// Plan a query (no snapshot needed: scans are bound at execution).
    pub async fn plan_query(
        &self,
        state: &SessionState,
        mut statement: Statement,
    ) -> Result<LogicalPlan> {
        self.own_temp_schema(&mut statement);
        crate::views::expand(self, &mut statement)?;
        crate::recursion::check(&statement)?;
        crate::pgfuncs::check_distinct_order(&statement)?;
        crate::windows::check_offsets(&statement)?;
        crate::pgfuncs::values_with_subqueries(&mut statement);
        crate::rowin::rewrite(&mut statement);
        let exclusions = crate::windows::exclusions(&statement, state)?;
        let with_exclusions;
        let state = if exclusions.is_empty() {
            state
        } else {
            let mut s = state.clone();
            for f in exclusions {
                datafusion::execution::FunctionRegistry::register_udwf(&mut s, Arc::new(f))
                    .map_err(from_df)?;
            }
            with_exclusions = s;
            &with_exclusions
        };
        let places = crate::errors::Places::of(&statement);
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(|e| {
                places.explain(e, &|name| {
                    let (schema, table) = self.relation(name).ok()?;
                    let table = table
                        .strip_suffix(crate::provider::DML_SUFFIX)
                        .unwrap_or(&table);
                    let def = self.cluster().table(&schema, table)?;
                    let fields = def.visible_schema().fields();
                    Some(fields.iter().map(|f| f.name().clone()).collect())
                })
            })?;
        crate::setops::count_copies(plan)
    }

    /// Describe a statement: its parameters and result columns.
    pub async fn prepare(&self, statement: Statement) -> Result<Prepared> {
        // A fresh timestamp also refreshes the catalog if it changed.
        self.cluster().timestamp().await?;
        let state = self.statement_state(Arc::new(StatementContext::default()));
        let (param_types, result) = match &statement {
            Statement::Query(_) | Statement::Explain { .. } => {
                let mut planned = statement.clone();
                let names = match &mut planned {
                    Statement::Query(q) => crate::naming::prepare(q),
                    _ => None,
                };
                let plan = self.plan_query(&state, planned).await?;
                let result = if matches!(statement, Statement::Explain { .. }) {
                    explain_schema()
                } else {
                    let schema = Arc::new(plan.schema().as_arrow().clone());
                    crate::naming::rename(&schema, names.as_deref())
                };
                (param_types_of(&plan)?, Some(result))
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                dml::describe(self, &state, &statement).await?
            }
            Statement::Fetch { name, into, .. } if !crate::cursors::is_move(into) => {
                (vec![], Some(self.cursors.schema(self, name)?))
            }
            Statement::Declare { stmts } => match stmts.as_slice() {
                [d] if d.for_query.is_some() => {
                    let query = Statement::Query(d.for_query.clone().unwrap());
                    let plan = self.plan_query(&state, query).await?;
                    (param_types_of(&plan)?, None)
                }
                _ => (vec![], None),
            },
            Statement::ShowVariable { variable } => {
                let name = show_name(variable, |i| i.value.clone());
                (vec![], Some(show_schema(&name)))
            }
            _ => (vec![], None),
        };
        Ok(Prepared {
            statement,
            param_types,
            result,
        })
    }

    /// Run one statement with parameter values. Outside a transaction
    /// block, write conflicts are retried at a fresh snapshot (the statement
    /// is all-or-nothing, so a retry is safe); inside one, any error aborts
    /// the block.
    pub async fn execute(&self, statement: &Statement, params: &[ScalarValue]) -> Result<Output> {
        let epoch = {
            let _block = self.txn.lock().unwrap();
            if self.idle.expired.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::user(
                    IDLE_IN_TRANSACTION_TIMEOUT,
                    "terminating connection due to idle-in-transaction timeout",
                ));
            }
            self.idle
                .epoch
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1
        };
        let out = self.execute_interruptible(statement, params).await;
        if let Some(after) = self.duration_setting("idle_in_transaction_session_timeout") {
            if self.in_transaction() {
                self.arm_idle_timeout(epoch, after);
            }
        }
        out
    }

    /// Roll the block back if the session is still idle in it `after` from
    /// now (see [`Idle`]).
    fn arm_idle_timeout(&self, epoch: u64, after: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        let (idle, txn, cluster) = (
            self.idle.clone(),
            self.txn.clone(),
            self.engine.cluster.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(after).await;
                let taken = {
                    let mut block = txn.lock().unwrap();
                    if idle.epoch.load(SeqCst) != epoch {
                        return;
                    }
                    if idle.busy.load(SeqCst) > 0 {
                        continue;
                    }
                    idle.expired.store(true, SeqCst);
                    block.take()
                };
                if let Some(t) = taken {
                    tracing::info!(txn = t.id, "idle in transaction too long: rolled back");
                    roll_back(&cluster, t).await;
                }
                return;
            }
        });
    }

    async fn execute_interruptible(
        &self,
        statement: &Statement,
        params: &[ScalarValue],
    ) -> Result<Output> {
        let request = self.cluster().stats.start();
        let limit = self.duration_setting("statement_timeout");
        let deadline = limit.map(|t| tokio::time::Instant::now() + t);
        let run = async {
            match statement {
                Statement::StartTransaction { .. }
                | Statement::Commit { .. }
                | Statement::Rollback { .. }
                | Statement::Savepoint { .. }
                | Statement::ReleaseSavepoint { .. } => self.transaction_control(statement).await,
                _ if self.in_transaction() => {
                    let out = self.execute_retrying(statement, params).await;
                    if out.is_err() {
                        self.note_error();
                    }
                    out
                }
                _ => self.execute_retrying(statement, params).await,
            }
        };
        let cancel = self.cancel.subscribe();
        let start = *cancel.borrow();
        let interrupt = Interrupt {
            deadline,
            start,
            cancel,
        };
        let out = match interrupt.clone().run(run).await {
            // Rows still to come can be interrupted too.
            Ok(Output::Rows {
                schema,
                stream,
                tag,
            }) => Ok(Output::Rows {
                schema,
                stream: interrupt.stream(stream, Busy::new(&self.idle)),
                tag,
            }),
            Err(e) => {
                if e.code == sqlstate::QUERY_CANCELED && self.in_transaction() {
                    self.note_error();
                }
                Err(e)
            }
            other => other,
        };
        if out.is_ok() {
            request.ok();
        }
        out
    }

    /// Stop the statement running now, if any (PostgreSQL's cancel
    /// request).
    pub fn cancel(&self) {
        self.cancel.send_modify(|v| *v += 1);
    }

    /// A timeout setting's value (checked when it was SET); None when 0.
    fn duration_setting(&self, name: &str) -> Option<std::time::Duration> {
        let v = self.vars.lock().unwrap().get(name).cloned()?;
        parse_duration(name, &v).ok().flatten()
    }

    /// A new transaction block.
    async fn open_block(&self, isolation: Isolation, read_only: bool) -> Result<()> {
        let read_ts = self.cluster().timestamp().await?;
        *self.txn.lock().unwrap() = Some(TxnState {
            id: crate::txn::new_txn_id(),
            read_ts,
            isolation,
            read_only,
            failed: false,
            started: false,
            engines: Default::default(),
            touched: Default::default(),
            seq: 0,
            savepoints: vec![],
            statements: vec![],
            anchor: None,
            heartbeat: None,
            aborted_remotely: Default::default(),
            ddl: vec![],
        });
        Ok(())
    }

    /// BEGIN, COMMIT, ROLLBACK (AND CHAIN: a new block with the same
    /// characteristics starts at once), and savepoints.
    async fn transaction_control(&self, statement: &Statement) -> Result<Output> {
        let chained = match statement {
            Statement::Commit { chain: true, .. } => Some("COMMIT"),
            Statement::Rollback {
                chain: true,
                savepoint: None,
            } => Some("ROLLBACK"),
            _ => None,
        };
        let Some(what) = chained else {
            return self.end_or_mark(statement).await;
        };
        let Some((isolation, read_only)) = self
            .txn
            .lock()
            .unwrap()
            .as_ref()
            .map(|t| (t.isolation, t.read_only))
        else {
            return Err(Error::user(
                "25P01",
                format!("{what} AND CHAIN can only be used in transaction blocks"),
            ));
        };
        let plain = match statement.clone() {
            Statement::Commit { end, modifier, .. } => Statement::Commit {
                chain: false,
                end,
                modifier,
            },
            _ => Statement::Rollback {
                chain: false,
                savepoint: None,
            },
        };
        let ended = self.end_or_mark(&plain).await;
        self.open_block(isolation, read_only).await?;
        // Still in a block: the tag alone, not the end of the block.
        ended.map(|out| match out {
            Output::TxnEnd(tag) => Output::Command(tag),
            other => other,
        })
    }

    /// BEGIN, COMMIT, ROLLBACK, and savepoints.
    async fn end_or_mark(&self, statement: &Statement) -> Result<Output> {
        use datafusion::sql::sqlparser::ast::{
            TransactionAccessMode, TransactionIsolationLevel, TransactionMode,
        };
        match statement {
            Statement::StartTransaction { modes, .. } => {
                let mut isolation = *self.default_isolation.lock().unwrap();
                let mut read_only = self.default_read_only();
                for m in modes {
                    match m {
                        TransactionMode::IsolationLevel(l) => {
                            isolation = match l {
                                TransactionIsolationLevel::ReadUncommitted
                                | TransactionIsolationLevel::ReadCommitted => {
                                    Isolation::ReadCommitted
                                }
                                TransactionIsolationLevel::RepeatableRead
                                | TransactionIsolationLevel::Snapshot => Isolation::RepeatableRead,
                                TransactionIsolationLevel::Serializable => Isolation::Serializable,
                            }
                        }
                        TransactionMode::AccessMode(a) => {
                            read_only = matches!(a, TransactionAccessMode::ReadOnly)
                        }
                    }
                }
                if self.in_transaction() {
                    // PostgreSQL warns and stays in the block.
                    self.notice(
                        "WARNING",
                        "25001",
                        "there is already a transaction in progress",
                    );
                    return Ok(Output::TxnStart("BEGIN".into()));
                }
                self.open_block(isolation, read_only).await?;
                Ok(Output::TxnStart("BEGIN".into()))
            }
            Statement::Savepoint { name } => {
                let mut guard = self.txn.lock().unwrap();
                let t = savepoint_block(&mut guard, "SAVEPOINT", false)?;
                let seq = t.seq;
                t.savepoints.push((ident_name(name), seq));
                Ok(Output::Command("SAVEPOINT".into()))
            }
            Statement::ReleaseSavepoint { name } => {
                let mut guard = self.txn.lock().unwrap();
                let t = savepoint_block(&mut guard, "RELEASE SAVEPOINT", false)?;
                let pos = find_savepoint(t, name)?;
                // Releasing a savepoint also releases the ones after it.
                t.savepoints.truncate(pos);
                Ok(Output::Command("RELEASE".into()))
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let (id, seq, touched, ddl) = {
                    let mut guard = self.txn.lock().unwrap();
                    let t = savepoint_block(&mut guard, "ROLLBACK TO SAVEPOINT", true)?;
                    let pos = find_savepoint(t, name)?;
                    // The savepoint stays; later ones are gone.
                    t.savepoints.truncate(pos + 1);
                    let seq = t.savepoints[pos].1;
                    let later = t.ddl.iter().position(|(s, _)| *s > seq);
                    let ddl = later.map(|i| t.ddl.split_off(i)).unwrap_or_default();
                    (t.id, seq, t.touched.clone(), ddl)
                };
                crate::ddl::undo(self.cluster(), ddl).await;
                if let Err(e) = crate::txn::rollback_to(self.cluster(), id, seq, &touched).await {
                    self.note_error();
                    return Err(e);
                }
                if let Some(t) = self.txn.lock().unwrap().as_mut() {
                    t.failed = false;
                }
                Ok(Output::Command("ROLLBACK".into()))
            }
            Statement::Rollback { .. } => {
                let t = self.txn.lock().unwrap().take();
                match t {
                    Some(t) => self.abort(t).await,
                    None => self.no_transaction(),
                }
                Ok(Output::TxnEnd("ROLLBACK".into()))
            }
            Statement::Commit { .. } => {
                let t = self.txn.lock().unwrap().take();
                let Some(mut t) = t else {
                    self.no_transaction();
                    return Ok(Output::TxnEnd("COMMIT".into()));
                };
                if t.failed {
                    self.abort(t).await;
                    return Ok(Output::TxnEnd("ROLLBACK".into()));
                }
                let reads = t.reads();
                if t.aborted_remotely.load(std::sync::atomic::Ordering::SeqCst) {
                    self.abort(t).await;
                    return Err(Error::write_conflict(
                        "the transaction was aborted: it was idle longer than its data engines wait",
                    ));
                }
                let refresh = (t.isolation == Isolation::Serializable)
                    .then_some((t.read_ts, reads.as_slice()));
                let committed =
                    crate::txn::commit(self.cluster(), t.id, &t.engines, t.anchor, refresh).await;
                match committed {
                    Ok(_) => {
                        self.cursors.committed(t.id);
                        crate::ddl::committed(self.cluster(), std::mem::take(&mut t.ddl)).await
                    }
                    // The block is gone either way; its writes were
                    // rolled back, so its DDL is too.
                    Err(e) => {
                        crate::ddl::undo(self.cluster(), std::mem::take(&mut t.ddl)).await;
                        return Err(e);
                    }
                }
                Ok(Output::TxnEnd("COMMIT".into()))
            }
            _ => Err(Error::internal("not a transaction statement")),
        }
    }

    /// Roll back a block (see [`roll_back`]).
    async fn abort(&self, t: TxnState) {
        roll_back(self.cluster(), t).await;
    }

    /// Note DDL done in the open block (nothing outside one: it is final).
    pub fn note_ddl(&self, step: crate::ddl::DdlUndo) {
        if let Some(t) = self.txn.lock().unwrap().as_mut() {
            t.started = true;
            t.seq += 1;
            let seq = t.seq;
            t.ddl.push((seq, step));
        }
    }

    /// A statement that lost a write conflict runs again at a new
    /// snapshot — where PostgreSQL would wait for the other writer's row
    /// lock — with jittered back-off (0.5 ms doubling to 16 ms), for up to
    /// [`CONFLICT_PATIENCE`]; then the 40001 reaches the client.
    ///
    /// In a transaction block only INSERT, UPDATE and DELETE are run again,
    /// once [`Session::undo_for_retry`] has undone what they staged and
    /// moved the block's snapshot.
    async fn execute_retrying(
        &self,
        statement: &Statement,
        params: &[ScalarValue],
    ) -> Result<Output> {
        let start = tokio::time::Instant::now();
        let deadline = start + CONFLICT_PATIENCE;
        let mut attempt = 0u32;
        let dml = matches!(
            statement,
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
        );
        // A query outside a block that lost a data engine mid-way runs
        // again: a replicated shard's new leader answers it.
        let query = matches!(statement, Statement::Query(_));
        loop {
            let mark = self
                .txn
                .lock()
                .unwrap()
                .as_ref()
                .map(|t| (t.seq, t.statements.len()));
            match self.execute_once(statement, params).await {
                Err(e)
                    if (e.is_retryable_conflict()
                        || (query
                            && mark.is_none()
                            && e.kind == eon_common::ErrorKind::Unavailable
                            && e.code != eon_common::error::sqlstate::OUT_OF_MEMORY))
                        && tokio::time::Instant::now() < deadline
                        && match mark {
                            None => true,
                            Some(mark) => {
                                dml && self.undo_for_retry(mark, &e, start.elapsed()).await
                            }
                        } =>
                {
                    attempt += 1;
                    let base = 500u64 << attempt.min(5);
                    let backoff = std::time::Duration::from_micros(base / 2 + rand_jitter() % base);
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Make a block's statement that lost a write conflict ready to run
    /// again (false: it cannot; its 40001 stands). `mark` is the block's
    /// statement number and count of tracked statements before it ran.
    ///
    /// What the statement staged is rolled back (as to a savepoint just
    /// before it). Under READ COMMITTED the next attempt takes a new
    /// snapshot anyway; under SERIALIZABLE the block's snapshot moves up to
    /// a new timestamp if nothing the block read so far changed in between
    /// — the commit's Refresh check, done early: the block could as well
    /// have started there, so no anomaly is possible (CockroachDB's read
    /// refresh). Without it a busy row (pgbench's branch) would fail most
    /// blocks that write it. REPEATABLE READ does not track its reads, so
    /// its 40001 stands, as in PostgreSQL.
    async fn undo_for_retry(
        &self,
        (seq, tracked): (u32, usize),
        e: &Error,
        waited: std::time::Duration,
    ) -> bool {
        if e.message.contains("transaction was aborted") {
            return false;
        }
        // The row holds another open block's write. The block with the
        // smaller id may wait for it as long as any conflict; the other
        // only briefly (wait-die, softened: most holders are about to
        // commit), so two blocks waiting for each other's rows — a
        // deadlock — end within DIE_AFTER with one of them failing.
        let holder = e
            .message
            .split(eon_common::error::WRITTEN_BY_TRANSACTION)
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<u64>().ok());
        let (id, touched, isolation, read_ts, reads) = {
            let mut guard = self.txn.lock().unwrap();
            let Some(t) = guard.as_mut() else {
                return false;
            };
            if t.failed
                || t.aborted_remotely.load(std::sync::atomic::Ordering::SeqCst)
                || (holder.is_some_and(|h| h < t.id) && waited >= DIE_AFTER)
            {
                return false;
            }
            // The failed attempt's reads are not the block's.
            t.statements.truncate(tracked);
            (t.id, t.touched.clone(), t.isolation, t.read_ts, t.reads())
        };
        if crate::txn::rollback_to(self.cluster(), id, seq, &touched)
            .await
            .is_err()
        {
            return false;
        }
        match isolation {
            Isolation::ReadCommitted => return true,
            // Its reads are not tracked: nothing tells whether moving its
            // snapshot would be safe.
            Isolation::RepeatableRead => return false,
            Isolation::Serializable => {}
        }
        let Ok(ts) = self.cluster().timestamp().await else {
            return false;
        };
        if !reads.is_empty()
            && !crate::txn::refresh_reads(self.cluster(), id, read_ts, ts, &reads)
                .await
                .unwrap_or(false)
        {
            return false;
        }
        match self.txn.lock().unwrap().as_mut() {
            Some(t) if t.id == id => {
                t.read_ts = ts;
                true
            }
            _ => false,
        }
    }

    async fn execute_once(&self, statement: &Statement, params: &[ScalarValue]) -> Result<Output> {
        let read_only = match self.txn.lock().unwrap().as_ref() {
            Some(t) if t.failed => return Err(crate::txn::aborted_error()),
            Some(t) => t.read_only,
            None => self.default_read_only(),
        };
        if read_only
            && matches!(
                statement,
                Statement::CreateTable(_)
                    | Statement::CreateIndex(_)
                    | Statement::CreateView(_)
                    | Statement::CreateSchema { .. }
                    | Statement::CreateType { .. }
                    | Statement::AlterType(_)
                    | Statement::AlterTable(_)
                    | Statement::Comment { .. }
                    | Statement::CreateSequence { .. }
                    | Statement::Drop { .. }
                    | Statement::CreateRole(_)
                    | Statement::AlterRole { .. }
                    | Statement::Grant(_)
                    | Statement::Revoke(_)
            )
        {
            return Err(crate::txn::read_only_error(&command_name(statement)));
        }
        match statement {
            Statement::Query(q) if crate::withdml::modifies_data(q) => {
                Box::pin(self.with_modifying(q, params)).await
            }
            Statement::Query(_) => self.query(statement.clone(), params).await,
            Statement::Explain {
                analyze,
                verbose,
                statement: inner,
                ..
            } => {
                self.explain(statement.clone(), inner, *analyze, *verbose, params)
                    .await
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                dml::execute(self, statement, params).await
            }
            Statement::CreateTable(ct) => ddl::create_table(self, ct).await,
            Statement::AlterTable(at) => crate::alter::alter_table(self, at).await,
            Statement::Comment {
                object_type,
                object_name,
                comment,
                if_exists,
            } => {
                crate::alter::comment_on(
                    self,
                    object_type,
                    object_name,
                    comment.as_deref(),
                    *if_exists,
                )
                .await
            }
            Statement::CreateIndex(ci) => crate::indexes::create_index(self, ci).await,
            Statement::CreateView(cv) => crate::views::create_view(self, cv).await,
            Statement::Drop {
                object_type: ObjectType::View,
                if_exists,
                names,
                ..
            } => crate::views::drop_views(self, names, *if_exists).await,
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => crate::schemas::create_schema(self, schema_name, *if_not_exists).await,
            Statement::Drop {
                object_type: ObjectType::Schema,
                if_exists,
                names,
                cascade,
                ..
            } => crate::schemas::drop_schemas(self, names, *if_exists, *cascade).await,
            Statement::CreateType {
                name,
                representation,
            } => crate::enums::create_type(self, name, representation).await,
            Statement::AlterType(at) => crate::enums::alter_type(self, at).await,
            Statement::Drop {
                object_type: ObjectType::Type,
                if_exists,
                names,
                ..
            } => crate::enums::drop_types(self, names, *if_exists).await,
            Statement::Drop {
                object_type: ObjectType::Index,
                if_exists,
                names,
                ..
            } => crate::indexes::drop_indexes(self, names, *if_exists).await,
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => ddl::drop_tables(self, names, *if_exists).await,
            Statement::Drop {
                object_type: ObjectType::Sequence,
                if_exists,
                names,
                ..
            } => crate::sequences::drop_sequences(self, names, *if_exists).await,
            Statement::Drop {
                object_type: ObjectType::Role | ObjectType::User,
                if_exists,
                names,
                ..
            } => crate::roles::drop_roles(self, names, *if_exists).await,
            Statement::CreateRole(c) => crate::roles::create_role(self, c).await,
            Statement::Grant(g) => {
                crate::privileges::grant_or_revoke(
                    self,
                    &g.privileges,
                    g.objects.as_ref(),
                    &g.grantees,
                    false,
                )
                .await
            }
            Statement::Revoke(r) => {
                crate::privileges::grant_or_revoke(
                    self,
                    &r.privileges,
                    r.objects.as_ref(),
                    &r.grantees,
                    true,
                )
                .await
            }
            Statement::AlterRole { name, operation } => {
                crate::roles::alter_role(self, name, operation).await
            }
            Statement::CreateSequence {
                temporary: false,
                if_not_exists,
                name,
                data_type,
                sequence_options,
                owned_by,
            } => {
                crate::sequences::create_sequence(
                    self,
                    *if_not_exists,
                    name,
                    data_type.as_ref(),
                    sequence_options,
                    owned_by.as_ref(),
                )
                .await
            }
            // Prepared statements live in the connection (pgwire's store),
            // which drops a named one itself (see pg.rs); DEALLOCATE ALL
            // needs nothing more, as Parse replaces a statement of the same
            // name.
            Statement::Deallocate { name, .. } => {
                Ok(Output::Command(if name.value.eq_ignore_ascii_case("all") {
                    "DEALLOCATE ALL".into()
                } else {
                    "DEALLOCATE".into()
                }))
            }
            Statement::Truncate(t) => dml::truncate(self, t).await,
            Statement::Declare { stmts } => crate::cursors::declare(self, stmts, params).await,
            Statement::Fetch {
                name,
                direction,
                into,
                ..
            } => crate::cursors::fetch(self, name, direction, into).await,
            Statement::Close { cursor } => crate::cursors::close(self, cursor),
            Statement::Vacuum(_) => Ok(Output::Command("VACUUM".into())),
            Statement::Analyze(_) => {
                // The planner's size estimates are read again.
                self.cluster().forget_sizes();
                Ok(Output::Command("ANALYZE".into()))
            }
            Statement::Copy { .. } => match crate::copy::start(self, statement).await? {
                crate::copy::Start::In(copy) => Ok(Output::CopyIn(copy)),
                crate::copy::Start::Out { format, query } => match self.query(query, params).await?
                {
                    Output::Rows { schema, stream, .. } => Ok(Output::CopyOut {
                        format,
                        schema,
                        stream,
                    }),
                    _ => Err(Error::syntax("COPY query must return rows")),
                },
            },
            Statement::Set(set) => self.set(set),
            Statement::Reset(r) => self.reset(&r.reset),
            Statement::ShowVariable { variable } => {
                let name = show_name(variable, |i| i.value.to_ascii_lowercase());
                self.show(&name)
            }
            other => Err(Error::unsupported(format!(
                "statement not supported yet: {}",
                other
                    .to_string()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }

    /// The session's cursors.
    pub(crate) fn cursors(&self) -> &crate::cursors::Cursors {
        &self.cursors
    }

    /// The open transaction block's id, if there is one.
    pub(crate) fn block_id(&self) -> Option<u64> {
        self.txn.lock().unwrap().as_ref().map(|t| t.id)
    }

    pub(crate) async fn query(
        &self,
        mut statement: Statement,
        params: &[ScalarValue],
    ) -> Result<Output> {
        let names = match &mut statement {
            Statement::Query(q) => crate::naming::prepare(q),
            _ => None,
        };
        let (ctx, _) = self.begin_statement().await?;
        let state = self.statement_state(ctx);
        let plan = self.plan_query(&state, statement).await?;
        let plan = bind(plan, params)?;
        let physical = state.create_physical_plan(&plan).await.map_err(from_df)?;
        let mut stream = in_branch_order(physical, state.task_ctx()).map_err(from_df)?;
        stream = crate::naming::rename_stream(stream, names.as_deref());
        if !self.in_transaction() {
            // A serialization failure outside a block runs the statement
            // again (`execute_retrying`), but only until its first rows
            // have gone to the client.
            stream = hold_back(stream, RETRY_BUFFER).await?;
        }
        Ok(Output::Rows {
            schema: stream.schema(),
            stream,
            tag: "SELECT".into(),
        })
    }

    /// A statement with data-modifying `WITH` queries (see
    /// [`crate::withdml`]): they run first, in order, and what they return
    /// becomes their rows; all of it in one transaction.
    async fn with_modifying(
        &self,
        query: &datafusion::sql::sqlparser::ast::Query,
        params: &[ScalarValue],
    ) -> Result<Output> {
        let control = |sql: &str| {
            crate::sequences::parse_statements(sql)
                .map_err(|e| Error::internal(e.to_string()))
                .map(|mut s| s.remove(0))
        };
        let implicit = !self.in_transaction();
        if implicit {
            self.transaction_control(&control("BEGIN")?).await?;
        }
        let run = async {
            let mut query = query.clone();
            let mut with = query.with.take().expect("a WITH list");
            let mut earlier = datafusion::sql::sqlparser::ast::With {
                cte_tables: vec![],
                ..with.clone()
            };
            for cte in with.cte_tables.iter_mut() {
                if let Some(statement) = crate::withdml::statement_of(cte, &earlier) {
                    let (schema, batches) = match self.execute_once(&statement, params).await? {
                        Output::Rows { schema, stream, .. } => (
                            schema,
                            stream.try_collect::<Vec<_>>().await.map_err(from_df)?,
                        ),
                        _ => (Arc::new(Schema::empty()), vec![]),
                    };
                    cte.query = Box::new(crate::withdml::returned_rows(&schema, &batches)?);
                }
                earlier.cte_tables.push(cte.clone());
            }
            query.with = Some(with);
            let main = crate::withdml::main_statement(query);
            match self.execute_once(&main, params).await? {
                Output::Rows {
                    schema,
                    stream,
                    tag,
                } => {
                    // Read before the block ends.
                    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(from_df)?;
                    let stream =
                        MemoryStream::try_new(batches, schema.clone(), None).map_err(from_df)?;
                    Ok(Output::Rows {
                        schema,
                        stream: Box::pin(stream),
                        tag,
                    })
                }
                other => Ok(other),
            }
        };
        let out = run.await;
        if implicit {
            let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = self.transaction_control(&control(end)?).await;
            if out.is_ok() {
                ended?;
            }
        }
        out
    }

    /// EXPLAIN answers like PostgreSQL: one text column, "QUERY PLAN".
    async fn explain(
        &self,
        statement: Statement,
        inner: &Statement,
        analyze: bool,
        verbose: bool,
        params: &[ScalarValue],
    ) -> Result<Output> {
        if !matches!(inner, Statement::Query(_)) {
            return Err(Error::unsupported("EXPLAIN is supported for queries only"));
        }
        // Duplicate output names made unique, as the query itself would be.
        let mut statement = statement;
        if let Statement::Explain {
            statement: query, ..
        } = &mut statement
            && let Statement::Query(q) = query.as_mut()
        {
            let _ = crate::naming::prepare(q);
        }
        let (ctx, _) = self.begin_statement().await?;
        let state = self.statement_state(ctx);
        let plan = bind(self.plan_query(&state, statement).await?, params)?;
        let physical = state.create_physical_plan(&plan).await.map_err(from_df)?;
        let batches: Vec<RecordBatch> = execute_stream(physical, state.task_ctx())
            .map_err(from_df)?
            .try_collect()
            .await
            .map_err(from_df)?;
        let mut lines = Vec::new();
        for b in &batches {
            let kinds = b.column(0).as_any().downcast_ref::<StringArray>();
            let plans = b.column(1).as_any().downcast_ref::<StringArray>();
            let (Some(kinds), Some(plans)) = (kinds, plans) else {
                continue;
            };
            for i in 0..b.num_rows() {
                let kind = kinds.value(i);
                let show =
                    verbose || kind == "physical_plan" || (analyze && kind == "Plan with Metrics");
                if !show {
                    continue;
                }
                if verbose {
                    lines.push(format!("{kind}:"));
                }
                lines.extend(plans.value(i).lines().map(str::to_string));
            }
        }
        // The query engine's part of a distributed plan is stage 0.
        if lines.iter().any(|l| l.trim_start().starts_with("Stage ")) {
            let at = usize::from(verbose);
            lines.insert(at, "Stage 0: on the query engine".to_string());
        }
        let schema = explain_schema();
        let col: ArrayRef = Arc::new(StringArray::from(lines));
        Output::rows(
            vec![RecordBatch::try_new(schema.clone(), vec![col])?],
            schema,
            "EXPLAIN",
        )
    }

    /// Set parameter `name` (lower case) to `value` for the session, as
    /// `SET name = value` does: checked, and stored in its canonical form.
    pub fn set_parameter(&self, name: &str, value: &str) -> Result<()> {
        let invalid = || {
            Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid value for parameter \"{name}\": \"{value}\""),
            )
        };
        let name = if name == "time zone" {
            "timezone"
        } else {
            name
        };
        if name == "default_transaction_isolation" || name == "transaction_isolation" {
            let level = Isolation::parse(value).ok_or_else(invalid)?;
            self.set_isolation(level, name == "default_transaction_isolation")?;
            return Ok(());
        }
        if name == "statement_timeout" || name == "idle_in_transaction_session_timeout" {
            parse_duration(name, value)?;
        }
        if name == "eon.query_memory" {
            eon_common::parse_size(value).map_err(|e| {
                Error::user(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("invalid value for parameter \"{name}\": {e}"),
                )
            })?;
        }
        if name == "extra_float_digits" {
            let n: i32 = value.trim().parse().map_err(|_| invalid())?;
            if !(-15..=3).contains(&n) {
                return Err(Error::user(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("{n} is outside the valid range for parameter \"{name}\" (-15 .. 3)"),
                ));
            }
        }
        let mut vars = self.vars.lock().unwrap();
        let value = if name == "datestyle" {
            let current = crate::datetime::DateStyle::of(lookup(&vars, name).as_deref());
            crate::datetime::DateStyle::apply(current, value)
                .ok_or_else(invalid)?
                .setting()
        } else {
            value.to_string()
        };
        vars.insert(name.to_string(), value);
        Ok(())
    }

    /// Whether statements run what they can on the data engines
    /// (`eon.distribute`, on by default; see [`crate::stages`]).
    fn distributes(&self) -> bool {
        self.setting("eon.distribute")
            .and_then(|v| crate::coerce::parse_bool(&v).ok())
            .unwrap_or(true)
    }

    /// Whether a join's small side is collected whole and, in a stage,
    /// broadcast to every data engine (`eon.broadcast`, on by default; see
    /// [`crate::stages`]).
    fn broadcasts(&self) -> bool {
        self.setting("eon.broadcast")
            .and_then(|v| crate::coerce::parse_bool(&v).ok())
            .unwrap_or(true)
    }

    /// The memory limit of each statement's operators in each process
    /// (`eon.query_memory`; 0 is none).
    fn query_memory(&self) -> Option<usize> {
        self.setting("eon.query_memory")
            .and_then(|v| eon_common::parse_size(&v).ok())
            .filter(|&n| n > 0)
            .map(|n| n as usize)
    }

    /// Whether transactions start read-only (default_transaction_read_only,
    /// or SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY).
    fn default_read_only(&self) -> bool {
        self.setting("default_transaction_read_only")
            .and_then(|v| crate::coerce::parse_bool(&v).ok())
            .unwrap_or(false)
    }

    /// COMMIT or ROLLBACK outside a block: PostgreSQL warns.
    fn no_transaction(&self) {
        self.notice("WARNING", "25P01", "there is no transaction in progress");
    }

    /// Queue a notice for the client.
    pub fn notice(&self, severity: &'static str, code: &'static str, message: impl Into<String>) {
        let mut notices = self.notices.lock().unwrap();
        // A front door that sends none (REST) keeps only the latest.
        if notices.len() >= 64 {
            notices.remove(0);
        }
        notices.push(Notice {
            severity,
            code,
            message: message.into(),
        });
    }

    /// The notices queued since the last call.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap())
    }

    /// The session's DateStyle.
    pub fn date_style(&self) -> crate::datetime::DateStyle {
        crate::datetime::DateStyle::of(self.setting("datestyle").as_deref())
    }

    /// The session's extra_float_digits: how many digits floats are
    /// written with (1, the default: the shortest exact ones).
    pub fn extra_float_digits(&self) -> i32 {
        self.setting("extra_float_digits")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    }

    /// The parameters a client sent in its startup message (libpq sends
    /// PGDATESTYLE and PGTZ so, and PGOPTIONS as `options`: `-c name=value`
    /// and `--name=value`), applied as SETs, as PostgreSQL does.
    pub fn apply_startup(&self, params: &[(String, String)]) -> Result<()> {
        for (name, value) in params {
            match name.to_ascii_lowercase().as_str() {
                "user" | "database" | "replication" => {}
                "options" => {
                    let mut words = value.split_whitespace();
                    while let Some(word) = words.next() {
                        let setting = match word {
                            "-c" => words.next().unwrap_or_default(),
                            w => w.strip_prefix("--").or(w.strip_prefix("-c")).unwrap_or(w),
                        };
                        let Some((n, v)) = setting.split_once('=') else {
                            return Err(Error::user(
                                sqlstate::SYNTAX_ERROR,
                                format!("invalid command-line argument for server process: {word}"),
                            ));
                        };
                        self.set_parameter(&n.to_ascii_lowercase().replace('-', "_"), v)?;
                    }
                }
                other => self.set_parameter(other, value)?,
            }
        }
        *self.startup_vars.lock().unwrap() = self.vars.lock().unwrap().clone();
        Ok(())
    }

    fn set(&self, set: &datafusion::sql::sqlparser::ast::Set) -> Result<Output> {
        use datafusion::sql::sqlparser::ast::Set as S;
        match set {
            S::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_ascii_lowercase();
                let value = values
                    .iter()
                    .map(|v| v.to_string().trim_matches('\'').to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.set_parameter(&name, &value)?;
            }
            S::SetTransaction { modes, session, .. } => {
                use datafusion::sql::sqlparser::ast::{
                    TransactionAccessMode, TransactionIsolationLevel, TransactionMode,
                };
                for m in modes {
                    match m {
                        TransactionMode::IsolationLevel(l) => {
                            let level = match l {
                                TransactionIsolationLevel::ReadUncommitted
                                | TransactionIsolationLevel::ReadCommitted => {
                                    Isolation::ReadCommitted
                                }
                                TransactionIsolationLevel::RepeatableRead
                                | TransactionIsolationLevel::Snapshot => Isolation::RepeatableRead,
                                TransactionIsolationLevel::Serializable => Isolation::Serializable,
                            };
                            self.set_isolation(level, *session)?;
                        }
                        TransactionMode::AccessMode(a) => {
                            let read_only = matches!(a, TransactionAccessMode::ReadOnly);
                            if *session {
                                self.set_parameter(
                                    "default_transaction_read_only",
                                    if read_only { "on" } else { "off" },
                                )?;
                            } else if let Some(t) = self.txn.lock().unwrap().as_mut() {
                                t.read_only = read_only;
                            }
                        }
                    }
                }
                return Ok(Output::Command("SET".into()));
            }
            S::SetTimeZone { value, .. } => {
                self.set_parameter("timezone", value.to_string().trim_matches('\''))?;
            }
            S::SetNames { charset_name, .. } => {
                self.set_parameter("client_encoding", &charset_name.value)?;
            }
            S::SetSessionAuthorization(param) => {
                use datafusion::sql::sqlparser::ast::SetSessionAuthorizationParamKind as K;
                return self.set_session_authorization(match &param.kind {
                    K::Default => None,
                    K::User(name) => Some(ident_name(name)),
                });
            }
            S::SetRole { role_name, .. } => {
                return self.set_role(role_name.as_ref().map(ident_name));
            }
            _ => {}
        }
        Ok(Output::Command("SET".into()))
    }

    /// RESET name | RESET ALL: back to the session's default — the value
    /// the client's startup message gave, else the server's.
    fn reset(&self, what: &datafusion::sql::sqlparser::ast::Reset) -> Result<Output> {
        use datafusion::sql::sqlparser::ast::Reset;
        match what {
            Reset::ALL => {
                *self.vars.lock().unwrap() = self.startup_vars.lock().unwrap().clone();
                *self.default_isolation.lock().unwrap() = Isolation::Serializable;
            }
            Reset::ConfigurationParameter(name) => {
                let name = name.to_string().to_ascii_lowercase();
                if name == "role" {
                    return self.set_role(None);
                }
                if name == "default_transaction_isolation" || name == "transaction_isolation" {
                    *self.default_isolation.lock().unwrap() = Isolation::Serializable;
                }
                let name = if name == "time zone" {
                    "timezone".to_string()
                } else {
                    name
                };
                let startup = self.startup_vars.lock().unwrap().get(&name).cloned();
                let mut vars = self.vars.lock().unwrap();
                match startup {
                    Some(value) => vars.insert(name, value),
                    None => vars.remove(&name),
                };
            }
        }
        Ok(Output::Command("RESET".into()))
    }

    /// SET TRANSACTION ISOLATION LEVEL (this block) or the session default.
    fn set_isolation(&self, level: Isolation, session_default: bool) -> Result<Output> {
        if session_default {
            *self.default_isolation.lock().unwrap() = level;
            return Ok(Output::Command("SET".into()));
        }
        match self.txn.lock().unwrap().as_mut() {
            Some(t) if t.started => Err(Error::user(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                "SET TRANSACTION ISOLATION LEVEL must be called before any query",
            )),
            Some(t) => {
                t.isolation = level;
                Ok(Output::Command("SET".into()))
            }
            // PostgreSQL warns and does nothing outside a block.
            None => Ok(Output::Command("SET".into())),
        }
    }

    fn show(&self, name: &str) -> Result<Output> {
        if matches!(
            name,
            "transaction isolation level"
                | "transaction_isolation"
                | "default_transaction_isolation"
        ) {
            let (current, default) = self.isolations();
            let level = if name == "default_transaction_isolation" {
                default
            } else {
                current
            };
            let schema = show_schema(name);
            let col: ArrayRef = Arc::new(StringArray::from(vec![level.name()]));
            return Output::rows(
                vec![RecordBatch::try_new(schema.clone(), vec![col])?],
                schema,
                "SHOW",
            );
        }
        let value = match name {
            // The current transaction's access mode (eon has no deferrable
            // transactions: every read-only one already reads a snapshot).
            "transaction_read_only" => {
                let read_only = match self.txn.lock().unwrap().as_ref() {
                    Some(t) => t.read_only,
                    None => self.default_read_only(),
                };
                Some(if read_only { "on" } else { "off" }.to_string())
            }
            "transaction_deferrable" => Some("off".to_string()),
            _ => self.setting(name),
        }
        .ok_or_else(|| {
            Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        let schema = show_schema(name);
        let col: ArrayRef = Arc::new(StringArray::from(vec![value]));
        Output::rows(
            vec![RecordBatch::try_new(schema.clone(), vec![col])?],
            schema,
            "SHOW",
        )
    }

    /// The isolation of the open block (else of new ones), and of new ones.
    fn isolations(&self) -> (Isolation, Isolation) {
        let default = *self.default_isolation.lock().unwrap();
        let current = match self.txn.lock().unwrap().as_ref() {
            Some(t) => t.isolation,
            None => default,
        };
        (current, default)
    }

    /// A configuration parameter's value (lower-case name), set or default.
    pub fn setting(&self, name: &str) -> Option<String> {
        lookup(&self.vars.lock().unwrap(), name)
    }

    /// The parameters PostgreSQL reports to the client (ParameterStatus)
    /// whenever they change, with their values now.
    pub fn reported_settings(&self) -> Vec<(&'static str, String)> {
        [
            ("application_name", "application_name"),
            ("client_encoding", "client_encoding"),
            ("DateStyle", "datestyle"),
            ("IntervalStyle", "intervalstyle"),
            ("TimeZone", "timezone"),
            ("standard_conforming_strings", "standard_conforming_strings"),
        ]
        .into_iter()
        .map(|(reported, name)| (reported, self.setting(name).unwrap_or_default()))
        .collect()
    }

    /// Parse and run a whole SQL string (simple query protocol, REST):
    /// statements run in order, stopping at the first error.
    pub async fn run(&self, sql: &str, params: &[ScalarValue]) -> Vec<Result<Output>> {
        let statements = match self.parse(sql) {
            Ok(s) => s,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::with_capacity(statements.len());
        let n = statements.len();
        for (i, s) in statements.iter().enumerate() {
            let mut r = self.execute(s, params).await;
            // Rows of all but the last statement are read to the end before
            // the next one runs, so an error while reading them stops the
            // string there, as in PostgreSQL.
            if i + 1 < n {
                if let Ok(Output::Rows {
                    schema,
                    stream,
                    tag,
                }) = r
                {
                    r = match stream.try_collect::<Vec<RecordBatch>>().await {
                        Ok(batches) => Output::rows(batches, schema, &tag),
                        Err(e) => {
                            self.note_error();
                            Err(from_df(e))
                        }
                    };
                }
            }
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }
}

/// Substitute parameter values.
pub fn bind(plan: LogicalPlan, params: &[ScalarValue]) -> Result<LogicalPlan> {
    if params.is_empty() {
        return Ok(plan);
    }
    plan.with_param_values(params.to_vec()).map_err(from_df)
}

/// Parameter types of a plan, in `$1..$n` order. A parameter DataFusion
/// leaves untyped but casts to a type eon marks (`$1::oid[]`, as asyncpg's
/// type lookup writes it) has that type, as in PostgreSQL.
pub fn param_types_of(plan: &LogicalPlan) -> Result<Vec<Option<SqlType>>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    use datafusion::logical_expr::expr::{Cast, Placeholder};
    let mut fields = plan.get_parameter_fields().map_err(from_df)?;
    plan.apply_with_subqueries(|p| {
        p.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) = e
                    && let Expr::Placeholder(Placeholder { id, field: None }) = expr.as_ref()
                    && SqlType::from_field(field).is_some()
                    && fields.get(id).is_some_and(Option::is_none)
                {
                    fields.insert(id.clone(), Some(field.clone()));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(from_df)?;
    let max = fields
        .keys()
        .filter_map(|k| k.trim_start_matches('$').parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    Ok((1..=max)
        .map(|i| {
            fields
                .get(&format!("${i}"))
                .cloned()
                .flatten()
                .and_then(|f| crate::pgtypes::sql_type_of(&f))
        })
        .collect())
}

fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "QUERY PLAN",
        DataType::Utf8,
        false,
    )]))
}

/// A timeout (`statement_timeout`, `idle_in_transaction_session_timeout`):
/// milliseconds, or with a unit (ms, s, min, h, d) as PostgreSQL reads it;
/// 0 (the default) is no limit.
fn parse_duration(name: &str, v: &str) -> Result<Option<std::time::Duration>> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"{name}\": \"{v}\""),
        )
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(bad()),
    };
    Ok((ms > 0).then(|| std::time::Duration::from_millis(ms)))
}

fn statement_timeout_error() -> Error {
    Error::user("57014", "canceling statement due to statement timeout")
}

/// What ends a statement early: its statement_timeout deadline, or a
/// cancel request (PostgreSQL's CancelRequest, which bumps the session's
/// cancel counter).
#[derive(Clone)]
struct Interrupt {
    deadline: Option<tokio::time::Instant>,
    cancel: tokio::sync::watch::Receiver<u64>,
    /// The cancel counter when the statement started.
    start: u64,
}

impl Interrupt {
    /// Resolves when the statement must stop, with the error to give.
    async fn fired(&self) -> Error {
        let start = self.start;
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let cancel = self.cancel.clone();
        let cancelled = async move {
            let mut cancel = cancel;
            // A closed channel (the session is gone) never cancels.
            if cancel.wait_for(|v| *v != start).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = deadline => statement_timeout_error(),
            _ = cancelled => Error::user(
                sqlstate::QUERY_CANCELED,
                "canceling statement due to user request",
            ),
        }
    }

    async fn run<T>(self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            out = work => out,
            e = self.fired() => Err(e),
        }
    }

    /// A result stream that fails with the interrupt's error once it fires
    /// (checked between batches: an operator computing inside one poll is
    /// not interrupted until it yields).
    /// `busy` is held until the stream is done with (see [`Idle`]).
    fn stream(self, stream: SendableRecordBatchStream, busy: Busy) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let rows = futures::stream::unfold(Some((stream, self, busy)), move |state| async move {
            let (mut stream, interrupt, busy) = state?;
            tokio::select! {
                item = futures::StreamExt::next(&mut stream) => {
                    item.map(|item| (item, Some((stream, interrupt, busy))))
                }
                e = interrupt.fired() => Some((
                    Err(datafusion::error::DataFusionError::External(Box::new(e))),
                    None,
                )),
            }
        });
        Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows))
    }
}

/// `base` with a memory pool of `limit` bytes for one statement: sorts,
/// aggregates and joins that can spill write to temporary files past it;
/// what cannot fails with 53200 (DataFusion's "resources exhausted").
pub(crate) fn with_memory_limit(base: &SessionState, limit: usize) -> SessionState {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env())
        .with_memory_pool(Arc::new(FairSpillPool::new(limit)))
        .build_arc();
    // Each sort sets aside memory to merge what it spilled (10 MB by
    // default): a share of the limit, so that a sort fits in it.
    let mut config = base.config().clone();
    let merge = &mut config.options_mut().execution.sort_spill_reservation_bytes;
    *merge = (*merge).min(limit / 8);
    match runtime {
        Ok(runtime) => rebuild_state(base, |b| b.with_config(config).with_runtime_env(runtime)),
        Err(e) => {
            tracing::warn!("no memory limit: {e}");
            base.clone()
        }
    }
}

/// `base` rebuilt through DataFusion's `SessionStateBuilder` as `change`
/// says, with every function name meaning what it meant in `base`.
///
/// The builder registers `base`'s functions again one by one, in hash-map
/// order, each under its name and its aliases: a built-in eon replaced
/// under one of its names (DataFusion's `to_char`, also registered as
/// `date_format`, which eon's `to_char` for numbers replaces) can take its
/// old name back, at random. Each name whose function changed kind is put
/// back (as the new settings update it).
pub(crate) fn rebuild_state(
    base: &SessionState,
    change: impl FnOnce(
        datafusion::execution::session_state::SessionStateBuilder,
    ) -> datafusion::execution::session_state::SessionStateBuilder,
) -> SessionState {
    use datafusion::execution::FunctionRegistry;
    let builder =
        datafusion::execution::session_state::SessionStateBuilder::new_from_existing(base.clone());
    let mut state = change(builder).build();
    use crate::fragment::same_type as same_kind;
    // Registering a function sets its name and all its aliases: entries
    // under an alias first, then those under a function's own name, which
    // so have the last word.
    let mut scalars: Vec<_> = base.scalar_functions().iter().collect();
    scalars.sort_by_key(|(name, f)| *name == f.name());
    for (name, f) in scalars {
        let now = state.scalar_functions().get(name).cloned();
        if now.is_none_or(|g| !same_kind(g.inner().as_ref(), f.inner().as_ref())) {
            let f = match f.inner().with_updated_config(state.config().options()) {
                Some(updated) => Arc::new(updated),
                None => f.clone(),
            };
            let _ = state.register_udf(f);
        }
    }
    let mut aggregates: Vec<_> = base.aggregate_functions().iter().collect();
    aggregates.sort_by_key(|(name, f)| *name == f.name());
    for (name, f) in aggregates {
        let now = state.aggregate_functions().get(name).cloned();
        if now.is_none_or(|g| !same_kind(g.inner().as_ref(), f.inner().as_ref())) {
            let _ = state.register_udaf(f.clone());
        }
    }
    let mut windows: Vec<_> = base.window_functions().iter().collect();
    windows.sort_by_key(|(name, f)| *name == f.name());
    for (name, f) in windows {
        let now = state.window_functions().get(name).cloned();
        if now.is_none_or(|g| !same_kind(g.inner().as_ref(), f.inner().as_ref())) {
            let _ = state.register_udwf(f.clone());
        }
    }
    state
}

fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

fn rand_jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(eon_common::unix_us());
    h.finish()
}

/// The configuration parameters eon knows, as pg_settings names them,
/// with their values when a session has not set them.
pub const SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("block_size", "8192"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("default_table_access_method", "heap"),
    // Broadcast a join's small side to the data engines (stages.rs).
    ("eon.broadcast", "on"),
    // Run aggregates, joins and top-k on the data engines (stages.rs).
    ("eon.distribute", "on"),
    // What a statement's operators may hold in memory in each process
    // running part of it, before spilling to disk or failing with 53200.
    ("eon.query_memory", "1GB"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("is_superuser", "on"),
    // eon compiles no query code (asyncpg turns PostgreSQL's off).
    ("jit", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("max_function_args", "100"),
    ("max_identifier_length", "63"),
    ("max_index_keys", "32"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "150000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("TimeZone", "UTC"),
];

/// A configuration parameter's value (lower-case name) when the session
/// has not set it.
pub fn default_setting(name: &str) -> Option<String> {
    let name = if name == "time zone" {
        "timezone"
    } else {
        name
    };
    SETTINGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_string())
}

/// A configuration parameter's value (lower-case name) among a session's
/// SETs, else its default.
/// The parameter `SHOW a b` or `SHOW a.b` names: sqlparser gives both as
/// words. A few of PostgreSQL's names are several words (`TIME ZONE`,
/// `TRANSACTION ISOLATION LEVEL`); any other is a dotted name
/// (`eon.distribute`).
fn show_name(
    words: &[datafusion::sql::sqlparser::ast::Ident],
    text: impl Fn(&datafusion::sql::sqlparser::ast::Ident) -> String,
) -> String {
    let spaced = words.iter().map(&text).collect::<Vec<_>>().join(" ");
    let multiword = [
        "time zone",
        "transaction isolation level",
        "session authorization",
    ];
    if words.len() > 1 && !multiword.contains(&spaced.to_ascii_lowercase().as_str()) {
        return words.iter().map(text).collect::<Vec<_>>().join(".");
    }
    spaced
}

fn lookup(set: &BTreeMap<String, String>, name: &str) -> Option<String> {
    set.get(name).cloned().or_else(|| default_setting(name))
}

/// A session's settings as a statement starts, for what reads them while
/// it runs (`current_setting()`, pg_settings).
#[derive(Debug, Clone, Default)]
pub struct SessionSettings(BTreeMap<String, String>);

impl SessionSettings {
    /// A parameter's value (lower-case name): set, or its default.
    pub fn value(&self, name: &str) -> Option<String> {
        lookup(&self.0, name)
    }

    /// True when the session SET it.
    pub fn is_set(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// A DDL statement's command as PostgreSQL names it in errors
/// (`cannot execute DROP TABLE in a read-only transaction`).
fn command_name(statement: &Statement) -> String {
    match statement {
        Statement::CreateTable(t) if t.query.is_some() => "CREATE TABLE AS".into(),
        Statement::CreateTable(_) => "CREATE TABLE".into(),
        Statement::CreateIndex(_) => "CREATE INDEX".into(),
        Statement::CreateView(_) => "CREATE VIEW".into(),
        Statement::CreateSchema { .. } => "CREATE SCHEMA".into(),
        Statement::AlterTable(_) => "ALTER TABLE".into(),
        Statement::Comment { .. } => "COMMENT".into(),
        Statement::CreateSequence { .. } => "CREATE SEQUENCE".into(),
        Statement::Drop { object_type, .. } => format!("DROP {object_type}"),
        Statement::CreateRole(_) => "CREATE ROLE".into(),
        Statement::AlterRole { .. } => "ALTER ROLE".into(),
        Statement::CreateType { .. } => "CREATE TYPE".into(),
        Statement::AlterType(_) => "ALTER TYPE".into(),
        Statement::Grant(_) => "GRANT".into(),
        Statement::Revoke(_) => "REVOKE".into(),
        _ => "DDL".into(),
    }
}

/// A transaction statement as the SQL parser reads it: `ABORT` is
/// PostgreSQL's `ROLLBACK`, and the `[NOT] DEFERRABLE` mode is dropped —
/// in eon it changes nothing (a read-only SERIALIZABLE transaction already
/// reads one consistent snapshot without waiting). None when `sql` is not
/// such a statement.
fn transaction_spelling(sql: &str) -> Option<String> {
    let lower = sql.trim_start().to_ascii_lowercase();
    let one_statement = !lower.trim_end().trim_end_matches(';').contains(';');
    if one_statement
        && lower.starts_with("abort")
        && lower[5..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || c == ';')
    {
        return Some(format!("ROLLBACK{}", &sql.trim_start()[5..]));
    }
    let is_transaction = [
        "start transaction",
        "begin",
        "set transaction",
        "set session characteristics",
    ]
    .iter()
    .any(|p| lower.starts_with(p));
    let one_statement = !lower.trim_end().trim_end_matches(';').contains(';');
    if !is_transaction || !one_statement || !lower.contains("deferrable") {
        return None;
    }
    let mut out = sql.to_string();
    while let Some(at) = out.to_ascii_lowercase().find("deferrable") {
        let mut start = at;
        let before = out[..start].trim_end();
        if before.to_ascii_lowercase().ends_with("not") {
            start = before.len() - 3;
        }
        let mut end = at + "deferrable".len();
        let before = out[..start].trim_end();
        if before.ends_with(',') {
            start = before.len() - 1;
        } else if let Some(comma) = out[end..].find(|c: char| !c.is_whitespace()) {
            if out[end + comma..].starts_with(',') {
                end += comma + 1;
            }
        }
        out.replace_range(start..end, " ");
    }
    Some(out)
}
