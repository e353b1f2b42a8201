//! Tables as REST resources, after PostgREST's conventions.
//!
//! ```text
//!   GET    /v1/tables/{table}?select=…&{column}={op}.{value}&order=…&limit=…&offset=…
//!   POST   /v1/tables/{table}            body: an object or an array of objects → rows inserted
//!   PATCH  /v1/tables/{table}?{filters}  body: an object of new values        → rows updated
//!   DELETE /v1/tables/{table}?{filters}                                        → rows deleted
//!   GET    /v1/openapi.json              an OpenAPI 3 document of every table, from the catalog
//! ```
//!
//! - `select=a,b,total:amount` picks (and renames) columns; aggregates are
//!   `count()`, `amount.sum()`, `amount.avg()`, `amount.min()`,
//!   `amount.max()`, `amount.count()`, grouped by the plain columns beside
//!   them (`select=customer,amount.sum()`).
//! - Filters: `eq neq gt gte lt lte like ilike` (`*` is the wildcard),
//!   `is.null|true|false`, `in.(1,2,3)`, each negated by `not.`
//!   (`?status=not.in.(a,b)`); all filters must hold.
//! - `order=a.desc,b.asc.nullsfirst`; `limit`, `offset`.
//!
//! Every request is one SQL statement (so it is atomic), built with quoted
//! identifiers checked against the catalog and values passed as parameters
//! cast to the column's type — never spliced into the SQL text. Answers are
//! JSON arrays of objects (`POST` answers 201). `PATCH` and `DELETE` need a
//! filter (or `?all=true`), so an empty query string cannot empty a table.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datafusion::common::ScalarValue;
use eon_common::schema::TableDef;
use eon_common::{Error, SqlType};
use serde_json::{Value, json};

use super::{ApiError, Caller, bad_request, param, run};
use crate::session::Engine;

type Params = Query<Vec<(String, String)>>;

use crate::dml::quote;

/// A table resource; an unknown one is 404 (it is a missing resource).
async fn table(engine: &Engine, name: &str) -> Result<Arc<TableDef>, Response> {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    if let Some(t) = engine.cluster.table(schema, table) {
        return Ok(t);
    }
    // Created through another query engine a moment ago?
    let _ = engine.cluster.refresh_catalog().await;
    engine.cluster.table(schema, table).ok_or_else(|| {
        ApiError(Error::user(
            "42P01",
            format!("relation \"{name}\" does not exist"),
        ))
        .into_response_with(StatusCode::NOT_FOUND)
    })
}

fn column<'a>(t: &'a TableDef, name: &str) -> Result<&'a eon_common::schema::ColumnDef, ApiError> {
    t.columns
        .iter()
        .find(|c| c.name == name && !c.hidden)
        .ok_or_else(|| {
            ApiError(Error::user(
                "42703",
                format!(
                    "column \"{name}\" of relation \"{}\" does not exist",
                    t.name
                ),
            ))
        })
}

/// SQL under construction: text and its parameters.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<ScalarValue>,
}

impl Sql {
    /// A value as a parameter cast to `ty`.
    fn value(&mut self, v: ScalarValue, ty: &SqlType) -> String {
        self.params.push(v);
        format!("CAST(${} AS {ty})", self.params.len())
    }
}

/// `status=not.in.(a,b)` → a condition.
fn filter(sql: &mut Sql, t: &TableDef, col: &str, spec: &str) -> Result<String, ApiError> {
    let c = column(t, col)?;
    let q = quote(col);
    let (negate, spec) = match spec.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, spec),
    };
    let (op, operand) = spec.split_once('.').ok_or_else(|| {
        bad_request(format!(
            "filter on {col}: {spec:?} is not OPERATOR.VALUE (e.g. eq.5, gt.10, in.(1,2), is.null)"
        ))
    })?;
    let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
    let cond = match op {
        "eq" | "neq" | "gt" | "gte" | "lt" | "lte" => {
            let sym = match op {
                "eq" => "=",
                "neq" => "<>",
                "gt" => ">",
                "gte" => ">=",
                "lt" => "<",
                _ => "<=",
            };
            format!("{q} {sym} {}", sql.value(text(operand), &c.ty))
        }
        "like" | "ilike" => {
            let pattern = operand.replace('*', "%");
            let p = sql.value(text(&pattern), &SqlType::Text);
            format!("{q} {} {p}", op.to_ascii_uppercase())
        }
        "is" => match operand.to_ascii_lowercase().as_str() {
            "null" => format!("{q} IS NULL"),
            "true" => format!("{q} IS TRUE"),
            "false" => format!("{q} IS FALSE"),
            other => {
                return Err(bad_request(format!(
                    "filter on {col}: is.{other}: use is.null, is.true or is.false"
                )));
            }
        },
        "in" => {
            let inner = operand
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| {
                    bad_request(format!("filter on {col}: in needs a list: in.(1,2,3)"))
                })?;
            let items = split_list(inner);
            if items.is_empty() {
                return Err(bad_request(format!("filter on {col}: in.() is empty")));
            }
            let list: Vec<String> = items.iter().map(|i| sql.value(text(i), &c.ty)).collect();
            format!("{q} IN ({})", list.join(", "))
        }
        other => {
            return Err(bad_request(format!(
                "filter on {col}: unknown operator {other:?} (eq, neq, gt, gte, lt, lte, like, ilike, is, in; not. negates)"
            )));
        }
    };
    Ok(if negate {
        format!("NOT ({cond})")
    } else {
        cond
    })
}

/// `a,"b,c",d` → [a, b,c, d].
fn split_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out
}

/// The WHERE clause of the filters in `params` (all but the reserved keys).
fn where_clause(
    sql: &mut Sql,
    t: &TableDef,
    params: &[(String, String)],
) -> Result<Option<String>, ApiError> {
    let mut conds = Vec::new();
    for (k, v) in params {
        if matches!(k.as_str(), "select" | "order" | "limit" | "offset" | "all") {
            continue;
        }
        conds.push(filter(sql, t, k, v)?);
    }
    Ok((!conds.is_empty()).then(|| conds.join(" AND ")))
}

fn get_param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The select list and the GROUP BY it implies.
fn select_list(t: &TableDef, select: Option<&str>) -> Result<(String, Option<String>), ApiError> {
    let Some(select) = select.filter(|s| !s.trim().is_empty() && s.trim() != "*") else {
        let cols: Vec<String> = t
            .columns
            .iter()
            .filter(|c| !c.hidden)
            .map(|c| quote(&c.name))
            .collect();
        return Ok((cols.join(", "), None));
    };
    let mut items = Vec::new();
    let mut plain = Vec::new();
    let mut aggregated = false;
    for raw in select.split(',').map(str::trim) {
        let (alias, expr) = match raw.split_once(':') {
            Some((a, e)) => (Some(a.trim()), e.trim()),
            None => (None, raw),
        };
        let (sql, default_name) = if expr == "count()" {
            aggregated = true;
            ("count(*)".to_string(), "count".to_string())
        } else if let Some((col, func)) = expr.split_once('.') {
            let func = func.strip_suffix("()").ok_or_else(|| {
                bad_request(format!("select: {expr:?}: write an aggregate as column.sum() (sum, avg, min, max, count)"))
            })?;
            if !matches!(func, "sum" | "avg" | "min" | "max" | "count") {
                return Err(bad_request(format!(
                    "select: unknown aggregate {func:?} (sum, avg, min, max, count)"
                )));
            }
            column(t, col)?;
            aggregated = true;
            (format!("{func}({})", quote(col)), func.to_string())
        } else {
            column(t, expr)?;
            plain.push(quote(expr));
            (quote(expr), expr.to_string())
        };
        items.push(format!(
            "{sql} AS {}",
            quote(alias.unwrap_or(&default_name))
        ));
    }
    let group = (aggregated && !plain.is_empty()).then(|| plain.join(", "));
    Ok((items.join(", "), group))
}

fn order_clause(t: &TableDef, order: &str) -> Result<String, ApiError> {
    let mut keys = Vec::new();
    for item in order.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.split('.');
        let col = parts.next().unwrap_or_default();
        column(t, col)?;
        let mut key = quote(col);
        for p in parts {
            key.push_str(match p {
                "asc" => " ASC",
                "desc" => " DESC",
                "nullsfirst" => " NULLS FIRST",
                "nullslast" => " NULLS LAST",
                other => {
                    return Err(bad_request(format!(
                        "order: {other:?} is not asc, desc, nullsfirst or nullslast"
                    )));
                }
            });
        }
        keys.push(key);
    }
    Ok(keys.join(", "))
}

fn number(params: &[(String, String)], key: &str) -> Result<Option<u64>, ApiError> {
    get_param(params, key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad_request(format!("{key}: {v:?} is not a non-negative integer")))
        })
        .transpose()
}

/// Rows of a statement's answer as JSON objects.
async fn objects(engine: &Caller, sql: Sql) -> Result<Vec<Value>, ApiError> {
    let session = engine.session();
    let out = run(&session, &sql.text, &sql.params).await?;
    let names: Vec<String> = out["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows = out["rows"].as_array().cloned().unwrap_or_default();
    Ok(rows
        .into_iter()
        .map(|r| {
            let values = r.as_array().cloned().unwrap_or_default();
            Value::Object(names.iter().cloned().zip(values).collect())
        })
        .collect())
}

pub(super) async fn list(
    engine: Caller,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, Response> {
    let t = table(&engine, &name).await?;
    let (items, group) = select_list(&t, get_param(&params, "select"))?;
    let mut sql = Sql::default();
    let filters = where_clause(&mut sql, &t, &params)?;
    let mut text = format!(
        "SELECT {items} FROM {}.{}",
        quote(&t.schema),
        quote(&t.name)
    );
    if let Some(w) = filters {
        text.push_str(&format!(" WHERE {w}"));
    }
    if let Some(g) = group {
        text.push_str(&format!(" GROUP BY {g}"));
    }
    if let Some(o) = get_param(&params, "order") {
        let o = order_clause(&t, o)?;
        if !o.is_empty() {
            text.push_str(&format!(" ORDER BY {o}"));
        }
    }
    if let Some(n) = number(&params, "limit")? {
        text.push_str(&format!(" LIMIT {n}"));
    }
    if let Some(n) = number(&params, "offset")? {
        text.push_str(&format!(" OFFSET {n}"));
    }
    sql.text = text;
    Ok(Json(Value::Array(objects(&engine, sql).await?)))
}

/// The objects of a request body (one object, or an array of them).
fn body_objects(body: &Bytes) -> Result<Vec<serde_json::Map<String, Value>>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("malformed JSON body: {e}")))?;
    let items = match v {
        Value::Object(o) => vec![o],
        Value::Array(a) => a
            .into_iter()
            .map(|i| match i {
                Value::Object(o) => Ok(o),
                other => Err(bad_request(format!(
                    "each row must be a JSON object, not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(bad_request(format!(
                "the body must be an object or an array of objects, not {other}"
            )));
        }
    };
    if items.is_empty() {
        return Err(bad_request("no rows in the body"));
    }
    Ok(items)
}

/// A JSON value as a parameter for a column of type `ty`: a JSON array
/// for an array column as PostgreSQL's array text (`[1, null]` →
/// `{1,NULL}`); other objects and arrays as JSON text (for jsonb).
fn json_param(v: &Value, ty: &SqlType) -> Result<ScalarValue, ApiError> {
    let v = json_scalar(v, ty);
    // Text for the types DataFusion's casts read otherwise than PostgreSQL
    // (intervals, times, arrays): read here with PostgreSQL's input rules.
    match (&v, ty) {
        (ScalarValue::Utf8(Some(s)), SqlType::Interval | SqlType::Time | SqlType::Array(_)) => {
            crate::pgtypes::decode_param(
                Some(s.as_bytes()),
                false,
                &crate::pgtypes::pg_type(Some(*ty)),
            )
            .map_err(ApiError)
        }
        _ => Ok(v),
    }
}

fn json_scalar(v: &Value, ty: &SqlType) -> ScalarValue {
    match (v, ty) {
        (Value::Array(items), SqlType::Array(_)) => {
            let elements: Vec<String> = items
                .iter()
                .map(|x| match x {
                    Value::Null => "NULL".to_string(),
                    Value::String(s) => {
                        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                    other => format!("\"{other}\""),
                })
                .collect();
            ScalarValue::Utf8(Some(format!("{{{}}}", elements.join(","))))
        }
        (Value::Object(_) | Value::Array(_), _) => ScalarValue::Utf8(Some(v.to_string())),
        (other, _) => param(other),
    }
}

pub(super) async fn insert(
    engine: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Response> {
    let t = table(&engine, &name).await?;
    let rows = body_objects(&body)?;
    let mut cols: Vec<String> = Vec::new();
    for r in &rows {
        for k in r.keys() {
            if !cols.contains(k) {
                column(&t, k)?;
                cols.push(k.clone());
            }
        }
    }
    let mut sql = Sql::default();
    let mut tuples = Vec::new();
    for r in &rows {
        let mut values = Vec::new();
        for c in &cols {
            values.push(match r.get(c) {
                Some(v) => {
                    let ty = column(&t, c)?.ty.clone();
                    sql.value(json_param(v, &ty)?, &ty)
                }
                None => "DEFAULT".to_string(),
            });
        }
        tuples.push(format!("({})", values.join(", ")));
    }
    sql.text = format!(
        "INSERT INTO {}.{} ({}) VALUES {} RETURNING *",
        quote(&t.schema),
        quote(&t.name),
        cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "),
        tuples.join(", ")
    );
    Ok((
        StatusCode::CREATED,
        Json(Value::Array(objects(&engine, sql).await?)),
    )
        .into_response())
}

fn require_filter(
    params: &[(String, String)],
    verb: &str,
    filters: &Option<String>,
) -> Result<(), ApiError> {
    if filters.is_none() && get_param(params, "all") != Some("true") {
        return Err(bad_request(format!(
            "{verb} without a filter would touch every row: add one (e.g. ?id=eq.1), or ?all=true if that is what you mean"
        )));
    }
    Ok(())
}

pub(super) async fn update(
    engine: Caller,
    Path(name): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<Json<Value>, Response> {
    let t = table(&engine, &name).await?;
    let mut rows = body_objects(&body)?;
    if rows.len() != 1 {
        return Err(bad_request("PATCH takes one object of new values").into());
    }
    let set = rows.remove(0);
    let mut sql = Sql::default();
    let mut assignments = Vec::new();
    for (k, v) in &set {
        let ty = column(&t, k)?.ty.clone();
        let value = sql.value(json_param(v, &ty)?, &ty);
        assignments.push(format!("{} = {value}", quote(k)));
    }
    let filters = where_clause(&mut sql, &t, &params)?;
    require_filter(&params, "PATCH", &filters)?;
    sql.text = format!(
        "UPDATE {}.{} SET {}{} RETURNING *",
        quote(&t.schema),
        quote(&t.name),
        assignments.join(", "),
        filters.map(|w| format!(" WHERE {w}")).unwrap_or_default()
    );
    Ok(Json(Value::Array(objects(&engine, sql).await?)))
}

pub(super) async fn remove(
    engine: Caller,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, Response> {
    let t = table(&engine, &name).await?;
    let mut sql = Sql::default();
    let filters = where_clause(&mut sql, &t, &params)?;
    require_filter(&params, "DELETE", &filters)?;
    sql.text = format!(
        "DELETE FROM {}.{}{} RETURNING *",
        quote(&t.schema),
        quote(&t.name),
        filters.map(|w| format!(" WHERE {w}")).unwrap_or_default()
    );
    Ok(Json(Value::Array(objects(&engine, sql).await?)))
}

/// A column's JSON Schema.
fn json_schema(ty: &SqlType) -> Value {
    match ty {
        SqlType::Int2 | SqlType::Int4 | SqlType::Oid => {
            json!({"type": "integer", "format": "int32"})
        }
        SqlType::Int8 => json!({"type": "integer", "format": "int64"}),
        SqlType::Float4 => json!({"type": "number", "format": "float"}),
        SqlType::Float8 => json!({"type": "number", "format": "double"}),
        SqlType::Numeric { .. } => json!({"type": "string", "format": "decimal"}),
        SqlType::Bool => json!({"type": "boolean"}),
        SqlType::Date => json!({"type": "string", "format": "date"}),
        SqlType::Timestamp | SqlType::TimestampTz => {
            json!({"type": "string", "format": "date-time"})
        }
        SqlType::Bytea => json!({"type": "string", "format": "byte"}),
        SqlType::Uuid => json!({"type": "string", "format": "uuid"}),
        SqlType::Jsonb | SqlType::Json => json!({}),
        SqlType::Interval => json!({"type": "string", "format": "duration"}),
        SqlType::Time => json!({"type": "string", "format": "time"}),
        SqlType::Array(element) => json!({"type": "array", "items": json_schema(element)}),
        SqlType::Varchar {
            max_length: Some(n),
        } => json!({"type": "string", "maxLength": n}),
        SqlType::Char { length } => json!({"type": "string", "maxLength": length}),
        SqlType::Text | SqlType::Varchar { .. } | SqlType::PgChar => json!({"type": "string"}),
        SqlType::Enum(def) => json!({"type": "string", "enum": def.labels}),
    }
}

/// `GET /v1/openapi.json`: every table's resource, from the live catalog.
pub(super) async fn openapi(engine: Caller) -> Json<Value> {
    let _ = engine.cluster.refresh_catalog().await;
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let reserved = [
        (
            "select",
            "columns and aggregates: a,b,alias:c,count(),c.sum()",
        ),
        ("order", "a.desc,b.asc.nullslast"),
        ("limit", "at most this many rows"),
        ("offset", "skip this many rows"),
    ];
    for t in engine.cluster.tables() {
        let name = if t.schema == "public" {
            t.name.clone()
        } else {
            format!("{}.{}", t.schema, t.name)
        };
        let visible: Vec<_> = t.columns.iter().filter(|c| !c.hidden).collect();
        let mut props = serde_json::Map::new();
        let mut required = Vec::new();
        for c in &visible {
            let mut s = json_schema(&c.ty);
            s["description"] = json!(format!(
                "{}{}",
                c.ty,
                if t.primary_key.iter().any(|&i| t.columns[i].name == c.name) {
                    ", primary key"
                } else {
                    ""
                }
            ));
            if c.nullable {
                s["nullable"] = json!(true);
            } else if c.default_sql.is_none() {
                required.push(json!(c.name));
            }
            props.insert(c.name.clone(), s);
        }
        schemas.insert(
            name.clone(),
            json!({"type": "object", "properties": props, "required": required}),
        );
        let filters: Vec<Value> = visible
            .iter()
            .map(|c| json!({"name": c.name, "in": "query", "required": false, "schema": {"type": "string"},
                            "description": "a filter: eq.V, neq.V, gt.V, gte.V, lt.V, lte.V, like.P, ilike.P, is.null, in.(V,…); not. negates"}))
            .collect();
        let query: Vec<Value> = reserved
            .iter()
            .map(|(n, d)| json!({"name": n, "in": "query", "required": false, "schema": {"type": "string"}, "description": d}))
            .chain(filters.iter().cloned())
            .collect();
        let rows =
            json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}});
        let ok = |what: &str| json!({"description": what, "content": {"application/json": {"schema": rows.clone()}}});
        let error =
            json!({"description": "an error: {\"error\": {\"code\": SQLSTATE, \"message\": …}}"});
        paths.insert(
            format!("/v1/tables/{name}"),
            json!({
                "get": {"summary": format!("rows of {name}"), "parameters": query, "responses": {"200": ok("the rows"), "400": error}},
                "post": {"summary": format!("insert into {name}"),
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                             {"$ref": format!("#/components/schemas/{name}")}, rows.clone()]}}}},
                         "responses": {"201": ok("the rows inserted"), "400": error, "409": error}},
                "patch": {"summary": format!("update rows of {name} matching the filters"), "parameters": filters,
                          "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}},
                          "responses": {"200": ok("the rows updated"), "400": error, "409": error}},
                "delete": {"summary": format!("delete rows of {name} matching the filters"), "parameters": filters,
                           "responses": {"200": ok("the rows deleted"), "400": error}},
            }),
        );
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "eon", "version": env!("CARGO_PKG_VERSION"), "description": "eon's REST interface: SQL at /v1/sql, tables as resources"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        e.into_response()
    }
}
