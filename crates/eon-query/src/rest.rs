//! The REST front door (axum).
//!
//! `POST /v1/sql` runs SQL with optional parameters and answers
//!
//! ```json
//! {"columns":[{"name":"id","type":"int4"}],"rows":[[1]],"row_count":1}
//! ```
//!
//! Integers and floats are JSON numbers, numeric is a string (exact), dates
//! and times are ISO-8601 strings, bytea is base64, jsonb is nested JSON.
//! Errors are `{"error":{"code":"<SQLSTATE>","message":"..."}}` with 400
//! for bad input, 409 for conflicts, 503 when a needed component is down and
//! 500 only for bugs. `POST /v1/transaction` runs
//! `{"statements": [{"sql": ..., "params": [...]}, ...]}` atomically and
//! answers `{"results": [...]}` (each as `/v1/sql` would), or the first
//! error with nothing applied. `GET /v1/health` reports whether this query
//! engine can reach meta and how many data engines are up. Tables are also
//! resources (`/v1/tables/{table}`, PostgREST's conventions) described by an
//! OpenAPI document at `/v1/openapi.json` — see [`resources`]. `GET
//! /v1/whoami` names the role the credentials log in as. Every
//! endpoint but health needs a role's name and password (HTTP basic
//! authentication, [`crate::auth`]) and runs as that role.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::common::ScalarValue;
use eon_common::error::sqlstate;
use eon_common::{Error, SqlType};
use eon_proto::v1 as pb;
use futures::TryStreamExt;
use serde_json::{Value, json};

mod resources;

use crate::errors::from_df;
use crate::pgtypes::{ColumnEncoder, sql_type_of};
use crate::session::{Engine, Output};

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/sql", post(sql))
        .route("/v1/transaction", post(transaction))
        .route(
            "/v1/tables/{table}",
            get(resources::list)
                .post(resources::insert)
                .patch(resources::update)
                .delete(resources::remove),
        )
        .route("/v1/openapi.json", get(resources::openapi))
        .route("/v1/whoami", get(whoami))
        // Everything above needs a role's credentials; health does not.
        .route_layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            crate::auth::rest_auth,
        ))
        .route("/v1/health", get(health))
        .fallback(|| async {
            ApiError(Error::user(
                "42704",
                "no such endpoint; try POST /v1/sql or GET /v1/health",
            ))
            .into_response_with(StatusCode::NOT_FOUND)
        })
        .with_state(engine)
}

/// `GET /v1/whoami`: the role the credentials name, as
/// `{"user": "eon", "superuser": true}` (the agent asks it before it
/// shows `/v1/cluster`).
async fn whoami(caller: Caller) -> Response {
    let role = caller.cluster.role(&caller.1);
    axum::Json(json!({
        "user": caller.1,
        "superuser": role.is_some_and(|r| r.superuser),
    }))
    .into_response()
}

/// What a REST handler runs with: the engine and the role the request
/// authenticated as ([`crate::auth::rest_auth`] put it there).
pub(crate) struct Caller(Arc<Engine>, String);

impl Caller {
    /// A session of the request's role.
    pub(crate) fn session(&self) -> crate::session::Session {
        self.0.session(&self.1)
    }
}

impl std::ops::Deref for Caller {
    type Target = Arc<Engine>;
    fn deref(&self) -> &Arc<Engine> {
        &self.0
    }
}

impl axum::extract::FromRequestParts<Arc<Engine>> for Caller {
    type Rejection = Response;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        engine: &Arc<Engine>,
    ) -> Result<Caller, Response> {
        match parts.extensions.get::<crate::auth::RestUser>() {
            Some(user) => Ok(Caller(engine.clone(), user.0.clone())),
            None => Err(ApiError(Error::internal("request was not authenticated")).into_response()),
        }
    }
}

pub(crate) struct ApiError(pub(crate) Error);

impl ApiError {
    fn into_response_with(self, status: StatusCode) -> Response {
        let mut body = json!({"error": {"code": self.0.code, "message": self.0.message}});
        if let Some(d) = &self.0.detail {
            body["error"]["detail"] = json!(d);
        }
        (status, axum::Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.into_response_with(status)
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(Error::user(sqlstate::PROTOCOL_VIOLATION, message))
}

/// A JSON parameter as a SQL value.
fn param(v: &Value) -> ScalarValue {
    match v {
        Value::Null => ScalarValue::Utf8(None),
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => match crate::pgtypes::parse_numeric(&n.to_string()) {
                Ok(d) if !n.to_string().contains(['e', 'E']) => d,
                _ => ScalarValue::Float64(n.as_f64()),
            },
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => ScalarValue::Utf8(Some(other.to_string())),
    }
}

/// The `sql` and `params` of a request object.
fn statement(req: &Value) -> Result<(&str, Vec<ScalarValue>), ApiError> {
    let Some(sql) = req.get("sql").and_then(Value::as_str) else {
        return Err(bad_request("each statement needs a \"sql\" string"));
    };
    let params: Vec<ScalarValue> = match req.get("params") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => items.iter().map(param).collect(),
        Some(_) => return Err(bad_request("\"params\" must be an array")),
    };
    Ok((sql, params))
}

/// Run SQL in a session; the answer of its last statement.
async fn run(
    session: &crate::session::Session,
    sql: &str,
    params: &[ScalarValue],
) -> Result<Value, ApiError> {
    let mut outputs = session.run(sql, params).await;
    let last = outputs.pop().ok_or_else(|| bad_request("empty query"))?;
    if let Some(Err(e)) = outputs.into_iter().find(|o| o.is_err()) {
        return Err(ApiError(e));
    }
    output_json(last.map_err(ApiError)?).await
}

async fn sql(engine: Caller, body: Bytes) -> Result<axum::Json<Value>, ApiError> {
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("malformed JSON body: {e}")))?;
    let (sql, params) = statement(&req)?;
    let session = engine.session();
    Ok(axum::Json(run(&session, sql, &params).await?))
}

/// `POST /v1/transaction`: `{"statements": [{"sql": ..., "params": [...]}, ...]}`
/// run in one transaction; all their results, or the first error and
/// nothing applied.
async fn transaction(engine: Caller, body: Bytes) -> Result<axum::Json<Value>, ApiError> {
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("malformed JSON body: {e}")))?;
    let Some(items) = req.get("statements").and_then(Value::as_array) else {
        return Err(bad_request("the body needs a \"statements\" array"));
    };
    let statements = items.iter().map(statement).collect::<Result<Vec<_>, _>>()?;
    let session = engine.session();
    run(&session, "BEGIN", &[]).await?;
    let mut results = Vec::with_capacity(statements.len());
    for (sql, params) in &statements {
        match run(&session, sql, params).await {
            Ok(v) => results.push(v),
            Err(e) => {
                let _ = run(&session, "ROLLBACK", &[]).await;
                return Err(e);
            }
        }
    }
    let end = run(&session, "COMMIT", &[]).await?;
    if end["command"] != "COMMIT" {
        return Err(ApiError(eon_common::Error::write_conflict(
            "the transaction was rolled back",
        )));
    }
    Ok(axum::Json(json!({"results": results})))
}

/// A statement's output as `/v1/sql` answers it.
async fn output_json(out: Output) -> Result<Value, ApiError> {
    Ok(match out {
        Output::CopyIn(_) | Output::CopyOut { .. } => {
            return Err(ApiError(crate::copy::wire_only()));
        }
        Output::Command(tag) | Output::TxnStart(tag) | Output::TxnEnd(tag) => {
            let count: u64 = tag
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            json!({"columns": [], "rows": [], "row_count": count, "command": tag})
        }
        Output::Rows {
            schema,
            stream,
            tag,
        } => {
            let batches: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .map_err(|e| ApiError(from_df(e)))?;
            let columns: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": sql_type_of(f).map(|t| t.short_name()).unwrap_or("text")}))
                .collect();
            let mut rows = Vec::new();
            for b in &batches {
                rows.extend(json_rows(b).map_err(ApiError)?);
            }
            let n = rows.len();
            json!({"columns": columns, "rows": rows, "row_count": n, "command": format!("{tag} {n}")})
        }
    })
}

/// Rows of a batch as JSON arrays.
fn json_rows(batch: &RecordBatch) -> eon_common::Result<Vec<Value>> {
    let schema = batch.schema();
    let cols: Vec<(Option<SqlType>, ColumnEncoder, &std::sync::Arc<dyn Array>)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| Ok((sql_type_of(f), ColumnEncoder::new(f, a, false)?, a)))
        .collect::<eon_common::Result<_>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let row: Vec<Value> = cols
            .iter()
            .map(|(ty, enc, a)| json_value(*ty, enc, a.as_ref(), i))
            .collect();
        out.push(Value::Array(row));
    }
    Ok(out)
}

fn json_value(ty: Option<SqlType>, enc: &ColumnEncoder, array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    let text = enc.text_value(i);
    match ty {
        Some(SqlType::Int2 | SqlType::Int4 | SqlType::Int8 | SqlType::Oid) => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        Some(SqlType::Float4 | SqlType::Float8) => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::String(text)),
            _ => Value::String(text),
        },
        Some(SqlType::Bool) => Value::Bool(text == "t"),
        Some(SqlType::Jsonb | SqlType::Json) => {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        Some(SqlType::Bytea) => {
            let raw = crate::coerce::parse_bytea(&text).unwrap_or_default();
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
        }
        Some(SqlType::Timestamp) => Value::String(text.replacen(' ', "T", 1)),
        Some(SqlType::TimestampTz) => Value::String(format!("{}:00", text.replacen(' ', "T", 1))),
        // An array as a JSON array of its elements, each as a value of the
        // element type would be.
        Some(SqlType::Array(element)) => {
            let Some(list) = array.as_list_opt::<i32>() else {
                return Value::String(text);
            };
            let items = list.value(i);
            let field = element.field("item", true);
            match ColumnEncoder::new(&field, &items, false) {
                Ok(enc) => Value::Array(
                    (0..items.len())
                        .map(|j| json_value(Some(*element), &enc, items.as_ref(), j))
                        .collect(),
                ),
                Err(_) => Value::String(text),
            }
        }
        _ => Value::String(text),
    }
}

async fn health(State(engine): State<Arc<Engine>>) -> Response {
    let mut meta = engine.cluster.meta();
    let nodes = tokio::time::timeout(
        Duration::from_secs(2),
        meta.list_nodes(pb::ListNodesRequest {}),
    )
    .await;
    match nodes {
        Ok(Ok(r)) => {
            let nodes = r.into_inner().nodes;
            let de: Vec<&pb::NodeInfo> = nodes
                .iter()
                .filter(|n| n.kind == pb::NodeKind::DataEngine as i32)
                .collect();
            let up = de.iter().filter(|n| n.up).count();
            let status = if up == de.len() && !de.is_empty() {
                "ok"
            } else {
                "degraded"
            };
            (StatusCode::OK, axum::Json(json!({"status": status, "meta": "up", "data_engines": {"up": up, "total": de.len()}}))).into_response()
        }
        _ => ApiError(Error::unavailable("meta is unreachable")).into_response(),
    }
}
