//! The PostgreSQL wire protocol front door (pgwire).
//!
//! Every accepted connection gets its own [`Session`]. The simple query
//! protocol runs each statement of the string in turn; the extended protocol
//! (Parse/Bind/Describe/Execute/Sync) prepares a statement once — working out
//! its parameter types and result columns — and executes it with decoded
//! parameters. A failed statement answers with an ErrorResponse carrying
//! its SQLSTATE; the connection stays usable. Authentication (SCRAM-SHA-256)
//! is [`crate::auth`]'s.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use eon_common::Error;
use eon_common::error::sqlstate;
use futures::{Sink, StreamExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireServerHandlers, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::DataRow;
use pgwire::messages::response::TransactionStatus;
use tokio::net::TcpListener;

use crate::auth::Startup;
use crate::errors::from_df;
use crate::pgtypes::{ColumnEncoder, decode_param, param_pg_type, pg_type_of};
use crate::session::{Engine, Output, Prepared, Session};

/// Serve PostgreSQL clients on `listener` until `shutdown` resolves; a
/// client that sends an SSLRequest gets TLS if `tls` is given (a refusal,
/// `N`, otherwise — and the client decides whether to go on in the clear).
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let pids = Arc::new(RandomPidSecretKeyGenerator::default());
    let cancels = Arc::new(Cancels::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    let _ = socket.set_nodelay(true);
                    let conn = Arc::new(Connection::new(engine.clone(), pids.clone(), cancels.clone()));
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, conn).await {
                            tracing::debug!(%addr, "connection ended: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        }
    }
}

/// The sessions a cancel request can reach, by the process id and secret
/// key each connection was given at startup (BackendKeyData).
#[derive(Default)]
pub struct Cancels {
    sessions: std::sync::Mutex<HashMap<(i32, bytes::Bytes), std::sync::Weak<Session>>>,
}

impl Cancels {
    pub(crate) fn register(&self, pid: i32, key: bytes::Bytes, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|_, s| s.strong_count() > 0);
        sessions.insert((pid, key), Arc::downgrade(session));
    }
}

#[async_trait]
impl pgwire::api::cancel::CancelHandler for Cancels {
    /// A CancelRequest (on a connection of its own, as PostgreSQL clients
    /// send it) stops the statement its session is running; a wrong key
    /// does nothing, as in PostgreSQL.
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        let session = self
            .sessions
            .lock()
            .unwrap()
            .get(&key)
            .and_then(|s| s.upgrade());
        if let Some(session) = session {
            session.cancel();
        }
    }
}

/// The handlers of one client connection.
pub struct Connection {
    handler: Arc<Handler>,
    startup: Arc<Startup>,
    cancels: Arc<Cancels>,
}

impl Connection {
    fn new(
        engine: Arc<Engine>,
        pids: Arc<RandomPidSecretKeyGenerator>,
        cancels: Arc<Cancels>,
    ) -> Connection {
        // Whose session it is is known once the client has authenticated.
        let session = Arc::new(engine.session(""));
        Connection {
            handler: Arc::new(Handler {
                parser: Arc::new(StatementParser {
                    session: session.clone(),
                }),
                session: session.clone(),
                copy_in: Default::default(),
            }),
            startup: Arc::new(Startup {
                pids,
                cancels: cancels.clone(),
                session,
                exchange: Default::default(),
            }),
            cancels,
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.handler.clone()
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancels.clone()
    }
}

pub struct Handler {
    session: Arc<Session>,
    parser: Arc<StatementParser>,
    /// The COPY FROM STDIN in progress and the data received so far.
    copy_in: std::sync::Mutex<Option<(crate::copy::CopyIn, Vec<u8>)>>,
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, _client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.copy_in.lock().unwrap();
        let Some((_, buf)) = guard.as_mut() else {
            return Err(pg_error(Error::user(
                sqlstate::PROTOCOL_VIOLATION,
                "CopyData without a COPY in progress",
            )));
        };
        if buf.len() + data.data.len() > crate::copy::MAX_COPY_BYTES {
            *guard = None;
            drop(guard);
            self.session.note_error();
            return Err(pg_error(Error::user(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "COPY data exceeds {} bytes; split it into several COPY statements",
                    crate::copy::MAX_COPY_BYTES
                ),
            )));
        }
        buf.extend_from_slice(&data.data);
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        let taken = self.copy_in.lock().unwrap().take();
        let Some((copy, data)) = taken else {
            return Err(pg_error(Error::user(
                sqlstate::PROTOCOL_VIOLATION,
                "CopyDone without a COPY in progress",
            )));
        };
        match crate::copy::finish(&self.session, &copy, &data).await {
            Ok(n) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("COPY").with_rows(n as usize).into(),
                    ))
                    .await?;
                Ok(())
            }
            Err(e) => {
                self.session.note_error();
                Err(pg_error(e))
            }
        }
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        *self.copy_in.lock().unwrap() = None;
        self.session.note_error();
        pg_error(Error::user(
            sqlstate::QUERY_CANCELED,
            format!("COPY from stdin failed: {}", fail.message),
        ))
    }
}

/// An eon error as a PostgreSQL ErrorResponse.
pub fn pg_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e, None)))
}

/// Where in `query` an error that names a piece of it (a literal that is
/// not valid input, a relation, column or function that does not exist)
/// is, as PostgreSQL's error cursor: the first place the piece occurs —
/// the quoted literal, or the name as a whole word, case-insensitively.
/// An error raised while the statement ran (a value read from a table)
/// names nothing in the text and gets no cursor, as in PostgreSQL.
fn error_position(query: &str, code: &str, message: &str) -> Option<u32> {
    let quoted = || -> Option<&str> {
        let start = message.find('"')? + 1;
        let len = message[start..].find('"')?;
        Some(&message[start..start + len])
    };
    let byte = match code {
        sqlstate::INVALID_TEXT_REPRESENTATION
        | sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        | sqlstate::INVALID_DATETIME_FORMAT
        | sqlstate::DATETIME_FIELD_OVERFLOW
            if message.starts_with("invalid input syntax for type ")
                || message.starts_with("value \"")
                || (message.starts_with('"')
                    && message.contains("\" is out of range for type "))
                || message.starts_with("date/time field value out of range: ")
                || message.starts_with("date out of range: \"")
                || message.starts_with("timestamp out of range: \"") =>
        {
            let value = message
                .rsplit_once(": \"")
                .map_or_else(|| quoted(), |(_, v)| v.strip_suffix('"'))?;
            let literal = format!("'{}'", value.replace('\'', "''"));
            let at = query.find(&literal)?;
            // A literal made text first (`'x'::text::boolean`) is converted
            // as the statement runs, where PostgreSQL points at nothing.
            let after = query[at + literal.len()..]
                .trim_start()
                .to_ascii_lowercase();
            if after.starts_with("::text") || after.starts_with("::varchar") {
                return None;
            }
            at
        }
        sqlstate::AMBIGUOUS_COLUMN if message.starts_with("column reference \"") => {
            crate::pgfuncs::find_word(&query.to_ascii_lowercase(), &quoted()?.to_ascii_lowercase())?
        }
        sqlstate::UNDEFINED_COLUMN
            if message.starts_with("column ")
                && !message.starts_with("column \"")
                && message.ends_with(" does not exist") =>
        {
            // `column t1.x does not exist`: the qualified name as written.
            let name = message
                .strip_prefix("column ")?
                .strip_suffix(" does not exist")?;
            crate::pgfuncs::find_word(&query.to_ascii_lowercase(), &name.to_ascii_lowercase())?
        }
        sqlstate::UNDEFINED_TABLE | sqlstate::UNDEFINED_COLUMN | sqlstate::UNDEFINED_FUNCTION
            if message.ends_with("does not exist")
                && ["relation \"", "column \"", "function "]
                    .iter()
                    .any(|p| message.starts_with(p)) =>
        {
            let name = match message.strip_prefix("function ") {
                Some(rest) => rest.split(['(', ' ']).next()?,
                None => quoted()?,
            };
            let name = name.rsplit('.').next()?.to_ascii_lowercase();
            crate::pgfuncs::find_word(&query.to_ascii_lowercase(), &name)?
        }
        _ => return None,
    };
    u32::try_from(query[..byte].chars().count() + 1).ok()
}

/// An eon error as a PostgreSQL ErrorResponse for `query`, the text the
/// client sent, with the error cursor when eon knows it.
fn error_info(e: Error, query: Option<&str>) -> ErrorInfo {
    let position = e
        .position
        .or_else(|| e.cursor.as_ref()?.resolve(query?))
        .or_else(|| error_position(query?, &e.code, &e.message));
    if e.kind == eon_common::ErrorKind::Internal {
        tracing::error!(code = %e.code, "internal error: {}", e.message);
    }
    // Errors that end the session are FATAL: pgwire then closes the
    // connection after sending them.
    let severity = if e.code == crate::session::IDLE_IN_TRANSACTION_TIMEOUT {
        "FATAL"
    } else {
        "ERROR"
    };
    let mut info = ErrorInfo::new(severity.into(), e.code, e.message);
    info.detail = e.detail;
    info.hint = e.hint;
    info.position = position.map(|p| p.to_string());
    info
}

/// Column descriptions for a result schema.
fn fields(schema: &SchemaRef, format: &Format) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                FieldInfo::new(
                    f.name().clone(),
                    None,
                    None,
                    pg_type_of(f),
                    format.format_for(i),
                )
            })
            .collect(),
    )
}

/// Encode a batch as DataRows.
fn encode_batch(
    batch: &RecordBatch,
    fields: &[FieldInfo],
    (style, extra_float_digits): (crate::datetime::DateStyle, i32),
) -> eon_common::Result<Vec<DataRow>> {
    let schema = batch.schema();
    let encoders: Vec<ColumnEncoder> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .zip(fields)
        .map(|((f, a), info)| {
            Ok(
                ColumnEncoder::new(f, a, info.format() == FieldFormat::Binary)?
                    .with_settings(style, extra_float_digits),
            )
        })
        .collect::<eon_common::Result<_>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut data = BytesMut::with_capacity(16 * encoders.len());
        for e in &encoders {
            e.encode(i, &mut data);
        }
        rows.push(DataRow::new(data, encoders.len() as i16));
    }
    Ok(rows)
}

/// Turn a statement's output into a pgwire response. An error while rows
/// stream aborts the session's transaction block, like any other error.
fn respond(output: Output, format: &Format, handler: &Handler) -> Response {
    let session = &handler.session;
    match output {
        Output::CopyIn(copy) => {
            let columns = copy.columns.len();
            *handler.copy_in.lock().unwrap() = Some((copy, Vec::new()));
            Response::CopyIn(CopyResponse::new(0, columns, futures::stream::empty()))
        }
        Output::CopyOut {
            format,
            schema,
            stream,
        } => {
            let header = format
                .header
                .then(|| Ok(crate::copy::header(&schema, &format)));
            let session = session.clone();
            let rows = futures::stream::iter(header)
                .chain(crate::copy::rows_of(stream, format))
                .map(move |r| match r {
                    Ok(data) => Ok(CopyData::new(data)),
                    Err(e) => {
                        session.note_error();
                        Err(pg_error(e))
                    }
                });
            Response::CopyOut(CopyResponse::new(0, schema.fields().len(), rows))
        }
        Output::Command(tag) => Response::Execution(Tag::new(&tag)),
        Output::TxnStart(tag) => Response::TransactionStart(Tag::new(&tag)),
        Output::TxnEnd(tag) => Response::TransactionEnd(Tag::new(&tag)),
        Output::Rows {
            schema,
            stream,
            tag,
        } => {
            let fields = fields(&schema, format);
            let encode_fields = fields.clone();
            let session = session.clone();
            let style = (session.date_style(), session.extra_float_digits());
            let rows = stream
                .map(move |batch| -> Vec<PgWireResult<DataRow>> {
                    match batch
                        .map_err(from_df)
                        .and_then(|b| encode_batch(&b, &encode_fields, style))
                    {
                        Ok(rows) => rows.into_iter().map(Ok).collect(),
                        Err(e) => {
                            session.note_error();
                            vec![Err(pg_error(e))]
                        }
                    }
                })
                .flat_map(futures::stream::iter);
            let mut response = QueryResponse::new(fields, rows);
            response.set_command_tag(&tag);
            Response::Query(response)
        }
    }
}

/// pgwire derives the ReadyForQuery status byte from the responses it
/// sends: an error in a block makes it "failed", and only the end of the
/// block makes it anything else. ROLLBACK TO SAVEPOINT also does, so a
/// failed block's status starts at "in transaction" for a query that may
/// roll back (an error puts it back to "failed").
fn may_leave_failed_block(query: &str) -> bool {
    query
        .trim_start()
        .get(..8)
        .is_some_and(|w| w.eq_ignore_ascii_case("rollback"))
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.session.txn_failed() && may_leave_failed_block(&query.query) {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let before = self.session.reported_settings();
        let outputs = self.session.run(query, &[]).await;
        if let Some(name) = deallocated(query) {
            client.portal_store().rm_statement(&name);
        }
        if outputs.iter().any(|o| o.is_err()) {
            self.session.note_error();
        }
        report_changes(client, &before, &self.session).await?;
        send_notices(client, &self.session).await?;
        Ok(outputs
            .into_iter()
            .map(|o| match o {
                Ok(out) => respond(out, &Format::UnifiedText, self),
                Err(e) => Response::Error(Box::new(error_info(e, Some(query)))),
            })
            .collect())
    }
}

/// The prepared statement a simple `DEALLOCATE [PREPARE] name` drops.
fn deallocated(query: &str) -> Option<String> {
    let mut words = query.trim().trim_end_matches(';').split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("deallocate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("prepare") {
        name = words.next()?;
    }
    Some(
        match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted.to_string(),
            None => name.to_ascii_lowercase(),
        },
    )
}

/// ParameterStatus for every reported parameter a statement changed (as
/// PostgreSQL sends after `SET application_name …`, `SET TimeZone …`).
async fn report_changes<C>(
    client: &mut C,
    before: &[(&'static str, String)],
    session: &Session,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use futures::SinkExt;
    for ((name, old), (_, new)) in before.iter().zip(session.reported_settings()) {
        if *old != new {
            client
                .send(PgWireBackendMessage::ParameterStatus(
                    pgwire::messages::startup::ParameterStatus::new(name.to_string(), new),
                ))
                .await?;
        }
    }
    Ok(())
}

/// The session's queued notices and warnings, as NoticeResponses.
async fn send_notices<C>(client: &mut C, session: &Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use futures::SinkExt;
    for n in session.take_notices() {
        let info = ErrorInfo::new(n.severity.to_string(), n.code.to_string(), n.message);
        client
            .send(PgWireBackendMessage::NoticeResponse(info.into()))
            .await?;
    }
    Ok(())
}

/// A statement prepared with the extended protocol.
#[derive(Clone, Debug)]
pub struct PgStatement {
    prepared: Prepared,
}

pub struct StatementParser {
    session: Arc<Session>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.session.parse(sql).map_err(|e| {
            self.session.note_error();
            pg_error(e)
        })?;
        match statements.len() {
            0 => Ok(None),
            1 => {
                let prepared = self
                    .session
                    .prepare(statements.remove(0))
                    .await
                    .map_err(|e| {
                        self.session.note_error();
                        pg_error(e)
                    })?;
                Ok(Some(PgStatement { prepared }))
            }
            _ => Err(pg_error(Error::syntax(
                "cannot insert multiple commands into a prepared statement",
            ))),
        }
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .prepared
            .param_types
            .iter()
            .map(param_pg_type)
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.prepared.result {
            Some(schema) => fields(schema, format.unwrap_or(&Format::UnifiedText))
                .as_ref()
                .clone(),
            None => vec![],
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = PgStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    /// A cursor's name is described as the portal it is in PostgreSQL.
    ///
    /// Describe of a statement that returns no rows but takes parameters
    /// (an INSERT with `$1`) must answer ParameterDescription and NoData;
    /// pgwire 0.41 sends an empty RowDescription there, which the JDBC
    /// driver takes for a result ("A result was returned when none was
    /// expected"). Everything else is pgwire's own.
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        use pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT;
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(stmt)) =
                client.portal_store().get_statement(name)
            {
                let described = self.do_describe_statement(client, &stmt).await?;
                if described.fields.is_empty() {
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            pgwire::messages::data::ParameterDescription::new(
                                described.parameters.iter().map(|t| t.oid()).collect(),
                            ),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(
                            pgwire::messages::data::NoData::new(),
                        ))
                        .await?;
                    return Ok(());
                }
                return pgwire::api::query::send_describe_response(client, &described).await;
            }
        } else if let Some(name) = message.name.as_deref()
            && client.portal_store().get_portal(name).is_none()
        {
            // A cursor DECLAREd by name is a portal in PostgreSQL: psycopg
            // describes it so before FETCHing from it.
            let ident = datafusion::sql::sqlparser::ast::Ident::with_quote('"', name);
            if let Ok(schema) = self.session.cursors().schema(&self.session, &ident) {
                let described = pgwire::api::results::DescribePortalResponse::new(
                    fields(&schema, &Format::UnifiedText).as_ref().clone(),
                );
                return pgwire::api::query::send_describe_response(client, &described).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn on_execute<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self._on_execute(client, message).await?;
        // The session knows the block's state (see `may_leave_failed_block`).
        if self.session.txn_failed() {
            client.set_transaction_status(TransactionStatus::Error);
        } else if self.session.in_transaction() {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &portal.statement;
        let declared = &stmt.statement.prepared.param_types;
        let mut params: Vec<ScalarValue> = Vec::with_capacity(portal.parameter_len());
        for i in 0..portal.parameter_len() {
            let ty = stmt
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| t.oid() != 0)
                .unwrap_or_else(|| param_pg_type(&declared.get(i).cloned().flatten()));
            let binary = portal.parameter_format.format_for(i) == FieldFormat::Binary;
            let value =
                decode_param(portal.parameters[i].as_deref(), binary, &ty).map_err(|e| {
                    self.session.note_error();
                    pg_error(e)
                })?;
            params.push(value);
        }
        let expected = declared.len();
        if params.len() < expected {
            return Err(pg_error(Error::user(
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {expected}",
                    params.len()
                ),
            )));
        }
        let before = self.session.reported_settings();
        let out = self
            .session
            .execute(&stmt.statement.prepared.statement, &params)
            .await;
        report_changes(client, &before, &self.session).await?;
        send_notices(client, &self.session).await?;
        match out {
            Ok(out) => Ok(respond(out, &portal.result_column_format, self)),
            Err(e) => Err(pg_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_position;

    #[test]
    fn the_error_cursor_points_at_what_the_error_names() {
        let q = "INSERT INTO t (f1) VALUES ('34.5')";
        let p = error_position(
            q,
            "22P02",
            "invalid input syntax for type integer: \"34.5\"",
        );
        assert_eq!(p, Some(28), "at the literal's quote");
        let p = error_position(
            q,
            "22003",
            "value \"34.5\" is out of range for type integer",
        );
        assert_eq!(p, Some(28));
        let q = "select t.nosuch, nosuchx from nosuch_t t";
        assert_eq!(
            error_position(q, "42703", "column \"nosuch\" does not exist"),
            Some(10)
        );
        assert_eq!(
            error_position(q, "42P01", "relation \"nosuch_t\" does not exist"),
            Some(31)
        );
        // An error about a table's value, or a name not in the text: none.
        assert_eq!(
            error_position(q, "22P02", "invalid input syntax for type integer: \"x\""),
            None
        );
        assert_eq!(
            error_position(q, "42P01", "table \"nosuch_t\" does not exist"),
            None
        );
        let q = "SELECT '10e400'::float8";
        assert_eq!(
            error_position(
                q,
                "22003",
                "\"10e400\" is out of range for type double precision"
            ),
            Some(8)
        );
        let q = "SELECT date '4714-11-23 BC'";
        assert_eq!(
            error_position(q, "22008", "date out of range: \"4714-11-23 BC\""),
            Some(13)
        );
    }
}
