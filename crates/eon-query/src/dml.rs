//! INSERT, UPDATE and DELETE: read with DataFusion, write to data engines.
//!
//! DataFusion computes what to write; eon writes it:
//!
//! - **INSERT** plans its source (VALUES or a query) with DataFusion, then
//!   converts each target column with PostgreSQL's assignment rules
//!   ([`coerce`]), fills defaults and row ids, and checks NOT NULL.
//!   `ON CONFLICT DO NOTHING` leaves out the rows whose key is taken;
//!   `ON CONFLICT (cols) DO UPDATE` turns them into an UPDATE of the row
//!   there, joined to the proposed rows as `excluded`, written with the
//!   inserted rows in one write.
//! - **UPDATE** and **DELETE** become a SELECT of the rows they touch (all
//!   columns, hidden row id included, via the `<table>$dml` name) and, for
//!   UPDATE, of the new values; every row then becomes a write.
//!
//! Rows are hashed to shards and sent to the data engines holding them as
//! Arrow batches. A statement that touches one data engine commits there in
//! one phase; otherwise the query engine runs two-phase commit: every engine
//! stages (Write, one_phase = false) and reports the lowest timestamp it
//! could commit at, the statement commits at the highest of those, and if
//! any engine refuses (23505 duplicate key, 40001 conflict) every engine
//! aborts, so a statement is all-or-nothing across shards. (A crash of the
//! query engine between the two phases is the transactions issue's
//! subject: then a durable transaction record decides.)
//!
//! Every write also keeps the table's secondary indexes in step: their
//! entries are written in the same statement, to the indexes' own storage
//! tables ([`crate::indexes`]), so they commit or abort with the rows.
//!
//! `RETURNING` is evaluated by DataFusion over the rows written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionState;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, ConflictTarget, Delete, DoUpdate, Expr as SqlExpr, FromTable, Ident, Insert,
    ObjectName, OnConflictAction, OnInsert, Query, SelectItem, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, Update, UpdateTableFromKind, Value as SqlValue,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use eon_common::error::sqlstate;
use eon_common::key::{Key, encode_keys};
use eon_common::schema::ColumnDef;
use eon_common::{Error, ErrorKind, Result, TableDef, ipc};
use eon_proto::v1 as pb;
use futures::TryStreamExt;

use crate::coerce::{coerce, coerce_with};
use crate::errors::from_df;
use crate::provider::DML_SUFFIX;
use crate::provider::StatementContext;
use crate::session::{Output, Session, WriteMode, bind, param_types_of};

/// An identifier as PostgreSQL folds it: unquoted names are lower-cased.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Quote an identifier for generated SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Split a relation name (`t`, `s.t`, `eon.s.t`) into its schema, if
/// named, and its name.
pub fn name_parts(name: &ObjectName) -> Result<(Option<String>, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident)
        .collect();
    match parts.as_slice() {
        [t] => Ok((None, t.clone())),
        [s, t] | [_, s, t] => Ok((Some(s.clone()), t.clone())),
        _ => Err(Error::syntax(format!("improper relation name: {name}"))),
    }
}

/// Resolve a table name to its definition, or 42P01.
pub fn resolve_table(session: &Session, name: &ObjectName) -> Result<Arc<TableDef>> {
    let (schema, table) = session.relation(name)?;
    session.cluster().table(&schema, &table).ok_or_else(|| {
        Error::user(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{table}\" does not exist"),
        )
    })
}

fn parse_query(sql: &str) -> Result<Statement> {
    let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| Error::internal(format!("generated SQL {sql}: {e}")))?;
    Ok(s.remove(0))
}

/// Run a query plan to completion.
async fn collect(
    session: &Session,
    state: &SessionState,
    stmt: Statement,
    params: &[ScalarValue],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = bind(session.plan_query(state, stmt).await?, params)?;
    let physical = state.create_physical_plan(&plan).await.map_err(from_df)?;
    let stream = execute_stream(physical, state.task_ctx()).map_err(from_df)?;
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(from_df)?;
    Ok((schema, batches))
}

/// Run generated SQL at a statement's snapshot, in its transaction.
pub(crate) async fn query_rows(
    session: &Session,
    ctx: &Arc<StatementContext>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let mut state = session.statement_state(ctx.clone());
    // eon's own lookups (foreign keys, rewrites): no privilege checks, as
    // PostgreSQL runs its referential checks as the table's owner.
    state
        .config_mut()
        .set_extension(Arc::new(crate::privileges::Actor(None)));
    Ok(collect(session, &state, parse_query(sql)?, &[]).await?.1)
}

fn one_batch(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<RecordBatch> {
    Ok(concat_batches(&schema, &batches)?)
}

// ------------------------------------------------------------------ INSERT

/// What an INSERT does with a row whose key a row already there has.
enum Conflict<'a> {
    /// Fail with 23505 (no ON CONFLICT).
    Fail,
    /// ON CONFLICT DO NOTHING: leave the row out.
    Skip,
    /// ON CONFLICT (arbiter) DO UPDATE: update the row there instead.
    Update {
        /// The columns of the unique constraint that decides (sorted).
        arbiter: Vec<usize>,
        action: &'a DoUpdate,
    },
}

/// Whether `columns` (sorted) are those of `table`'s primary key or of
/// one of its unique indexes.
fn unique_on(table: &TableDef, columns: &[usize]) -> bool {
    let same = |c: &[usize]| {
        let mut c = c.to_vec();
        c.sort();
        c == columns
    };
    (same(&table.primary_key) && !table.has_rowid())
        || table.indexes.iter().any(|i| i.unique && same(&i.columns))
}

struct InsertShape<'a> {
    table: Arc<TableDef>,
    /// Table column index for each source column.
    targets: Vec<usize>,
    /// No column list: a source with fewer columns fills the first ones
    /// (the rest get their defaults), as in PostgreSQL.
    implicit: bool,
    /// The column list as written (empty without one), for error cursors.
    named: &'a [ObjectName],
    source: Option<&'a Query>,
    conflict: Conflict<'a>,
    alias: String,
    returning: Option<&'a Vec<SelectItem>>,
}

impl InsertShape<'_> {
    /// PostgreSQL's error for a source of `got` columns, which are
    /// `cells` when they are a VALUES row: the cursor is at the first
    /// expression or named column too many.
    fn count_mismatch(&self, got: usize, cells: Option<&[SqlExpr]>) -> Error {
        use datafusion::sql::sqlparser::ast::Spanned;
        let wanted = self.targets.len();
        let (message, span) = if got > wanted {
            (
                "INSERT has more expressions than target columns",
                cells.and_then(|c| c.get(wanted)).map(|e| e.span()),
            )
        } else {
            (
                "INSERT has more target columns than expressions",
                self.named.get(got).map(|c| c.span()),
            )
        };
        crate::errors::at_span(Error::syntax(message), span)
    }
}

fn insert_shape<'a>(session: &Session, ins: &'a Insert) -> Result<InsertShape<'a>> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(Error::unsupported("INSERT into a table function"));
    };
    let table = resolve_table(session, name)?;
    crate::privileges::require(&session.actor(), &table, "INSERT")?;
    let mut targets: Vec<usize> = if ins.columns.is_empty() {
        (0..table.columns.len())
            .filter(|&i| !table.columns[i].hidden)
            .collect()
    } else {
        let mut t = Vec::with_capacity(ins.columns.len());
        for c in &ins.columns {
            let last =
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .map(ident)
                    .unwrap_or_default();
            let idx = table.visible_column(&last)?;
            if t.contains(&idx) {
                return Err(Error::user(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("column \"{last}\" specified more than once"),
                ));
            }
            t.push(idx);
        }
        t
    };
    let conflict = match &ins.on {
        None => Conflict::Fail,
        Some(OnInsert::OnConflict(oc)) => {
            // The columns of the unique constraint the conflict is judged
            // by (PostgreSQL's arbiter), when one is named.
            let arbiter: Option<Vec<usize>> = match &oc.conflict_target {
                None => None,
                Some(ConflictTarget::Columns(cols)) => {
                    let mut named: Vec<usize> = cols
                        .iter()
                        .filter_map(|c| table.column_index(&ident(c)))
                        .collect();
                    named.sort();
                    if !unique_on(&table, &named) || named.len() != cols.len() {
                        return Err(Error::user(
                            sqlstate::INVALID_COLUMN_REFERENCE,
                            "there is no unique or exclusion constraint matching the ON CONFLICT specification",
                        ));
                    }
                    Some(named)
                }
                Some(ConflictTarget::OnConstraint(c)) => {
                    let cname =
                        c.0.last()
                            .and_then(|p| p.as_ident())
                            .map(ident)
                            .unwrap_or_default();
                    let columns = if cname == table.pkey_name() && !table.has_rowid() {
                        Some(table.primary_key.clone())
                    } else {
                        table
                            .indexes
                            .iter()
                            .find(|i| i.unique && i.constraint && i.name == cname)
                            .map(|i| i.columns.clone())
                    };
                    let Some(mut columns) = columns else {
                        return Err(Error::user(
                            sqlstate::UNDEFINED_OBJECT,
                            format!(
                                "constraint \"{cname}\" for table \"{}\" does not exist",
                                table.name
                            ),
                        ));
                    };
                    columns.sort();
                    Some(columns)
                }
            };
            match (&oc.action, arbiter) {
                (OnConflictAction::DoNothing, _) => Conflict::Skip,
                (OnConflictAction::DoUpdate(action), Some(arbiter)) => {
                    Conflict::Update { arbiter, action }
                }
                (OnConflictAction::DoUpdate(_), None) => {
                    return Err(Error::syntax(
                        "ON CONFLICT DO UPDATE requires inference specification or constraint name",
                    )
                    .with_hint("For example, ON CONFLICT (column_name)."));
                }
            }
        }
        Some(_) => return Err(Error::unsupported("this INSERT form is not supported")),
    };
    let alias = ins
        .table_alias
        .as_ref()
        .map(|a| ident(&a.alias))
        .unwrap_or_else(|| table.name.clone());
    let implicit = ins.columns.is_empty();
    if let (true, Some(SetExpr::Values(values))) =
        (implicit, ins.source.as_deref().map(|q| q.body.as_ref()))
    {
        // Rows of other lengths are refused with the source (42601).
        if let Some(row) = values.rows.first() {
            targets.truncate(row.len());
        }
    }
    Ok(InsertShape {
        table,
        targets,
        implicit,
        named: &ins.columns,
        source: ins.source.as_deref(),
        conflict,
        alias,
        returning: ins.returning.as_ref(),
    })
}

/// Replace `$n` parameters in a query with literals of their values.
fn substitute_params(query: &mut Query, params: &[ScalarValue]) -> Result<()> {
    let mut err = None;
    let _ = visit_expressions_mut(query, |e: &mut SqlExpr| {
        if let SqlExpr::Value(v) = e {
            if let SqlValue::Placeholder(p) = &v.value {
                let idx = p
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i >= 1 && i <= params.len());
                match idx {
                    Some(i) => match sql_literal(&params[i - 1]).and_then(|text| {
                        Parser::new(&PostgreSqlDialect {})
                            .try_with_sql(&text)
                            .and_then(|mut p| p.parse_expr())
                            .map_err(|e| Error::internal(e.to_string()))
                    }) {
                        Ok(lit) => *e = lit,
                        Err(x) => err = Some(x),
                    },
                    None => {
                        err = Some(Error::user(
                            sqlstate::UNDEFINED_PARAMETER,
                            format!("there is no parameter {p}"),
                        ))
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// SQL text for a parameter value, typed so DataFusion reads it back as the
/// same value.
pub(crate) fn sql_literal(v: &ScalarValue) -> Result<String> {
    if v.is_null() {
        return Ok("NULL".into());
    }
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    Ok(match v {
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        ScalarValue::Int16(Some(i)) => format!("CAST({i} AS SMALLINT)"),
        ScalarValue::Int32(Some(i)) => format!("CAST({i} AS INT)"),
        ScalarValue::Int64(Some(i)) => format!("CAST({i} AS BIGINT)"),
        ScalarValue::Float32(Some(f)) => format!("CAST('{f:?}' AS REAL)"),
        ScalarValue::Float64(Some(f)) => format!("CAST('{f:?}' AS DOUBLE)"),
        ScalarValue::Decimal128(Some(d), p, s) => {
            format!(
                "CAST('{}' AS DECIMAL({p},{s}))",
                eon_common::value::format_decimal(*d, *s)
            )
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => quoted(s),
        ScalarValue::Binary(Some(b)) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            quoted(&format!("\\x{hex}"))
        }
        ScalarValue::Date32(Some(d)) => {
            format!("CAST({} AS DATE)", quoted(&crate::pgtypes::format_date(*d)))
        }
        ScalarValue::TimestampMicrosecond(Some(us), tz) => {
            let text = crate::pgtypes::format_timestamp(*us);
            match tz {
                None => format!("CAST({} AS TIMESTAMP)", quoted(&text)),
                Some(_) => format!("CAST({} AS TIMESTAMPTZ)", quoted(&format!("{text}+00"))),
            }
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            let iv = crate::intervals::Interval::from(*v);
            format!("CAST({} AS INTERVAL)", quoted(&iv.to_arrow_text()))
        }
        ScalarValue::List(list) => {
            let element = list.value_type();
            let values = list.value(0);
            let items = (0..values.len())
                .map(|i| sql_literal(&ScalarValue::try_from_array(&values, i).map_err(from_df)?))
                .collect::<Result<Vec<_>>>()?;
            let ty = eon_common::SqlType::from_arrow(&element)
                .map(|t| df_type_name(&t))
                .unwrap_or_else(|| "VARCHAR".into());
            format!("CAST(make_array({}) AS {ty}[])", items.join(", "))
        }
        ScalarValue::Time64Microsecond(Some(us)) => {
            format!(
                "CAST({} AS TIME)",
                quoted(&eon_common::value::format_time(*us))
            )
        }
        other => quoted(&other.to_string()),
    })
}

/// A value written by hand into a GENERATED ALWAYS AS IDENTITY column.
fn generated_always(column: &str) -> Error {
    Error::user(
        "428C9",
        format!("cannot insert a non-DEFAULT value into column \"{column}\""),
    )
    .with_detail(format!(
        "Column \"{column}\" is an identity column defined as GENERATED ALWAYS."
    ))
}

/// The source query of an INSERT, with DEFAULT cells replaced and, when
/// `cast` is set, every cell cast to its target column's type.
fn insert_source(shape: &InsertShape, params: &[ScalarValue], cast: bool) -> Result<Statement> {
    let table = &shape.table;
    // A query's values are all written by hand (VALUES cells are checked
    // one by one below).
    let by_query = shape
        .source
        .is_some_and(|q| !matches!(q.body.as_ref(), SetExpr::Values(_)));
    if let Some(&c) = shape
        .targets
        .iter()
        .find(|&&c| by_query && table.identity(c) == "a")
    {
        return Err(generated_always(&table.columns[c].name));
    }
    let mut query = match shape.source {
        Some(q) => {
            // Columns go in by position, so duplicate names (`SELECT i, i`)
            // are fine: give them unique internal aliases as a query's
            // select list gets.
            let mut q = q.clone();
            let _ = crate::naming::prepare(&mut q);
            q
        }
        None => {
            // DEFAULT VALUES: one row of defaults.
            let cells: Vec<String> = shape
                .targets
                .iter()
                .map(|_| "DEFAULT".to_string())
                .collect();
            match parse_query(&format!("VALUES ({})", cells.join(", ")))? {
                Statement::Query(q) => *q,
                _ => unreachable!(),
            }
        }
    };
    if let SetExpr::Values(values) = query.body.as_mut() {
        if values.rows.iter().any(|r| r.len() != values.rows[0].len()) {
            return Err(Error::syntax("VALUES lists must all be the same length"));
        }
        for row in values.rows.iter_mut() {
            if row.len() != shape.targets.len() {
                return Err(shape.count_mismatch(row.len(), Some(row)));
            }
            for (cell, &col) in row.iter_mut().zip(&shape.targets) {
                let is_default = matches!(cell, SqlExpr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"));
                if !is_default && table.identity(col) == "a" {
                    return Err(generated_always(&table.columns[col].name));
                }
                if is_default {
                    let sql = table.columns[col]
                        .default_sql
                        .clone()
                        .unwrap_or_else(|| "NULL".into());
                    *cell = Parser::new(&PostgreSqlDialect {})
                        .try_with_sql(&sql)
                        .and_then(|mut p| p.parse_expr())
                        .map_err(|e| Error::internal(e.to_string()))?;
                }
                if cast {
                    crate::intervals::normalize_literal(&table.columns[col].ty, cell)?;
                    let ty = df_type_name(&table.columns[col].ty);
                    let text = format!("CAST(({cell}) AS {ty})");
                    *cell = Parser::new(&PostgreSqlDialect {})
                        .try_with_sql(&text)
                        .and_then(|mut p| p.parse_expr())
                        .map_err(|e| Error::internal(e.to_string()))?;
                }
            }
        }
    }
    substitute_params(&mut query, params)?;
    Ok(Statement::Query(Box::new(query)))
}

/// A SQL type name DataFusion casts to, for a column type.
fn df_type_name(ty: &eon_common::SqlType) -> String {
    use eon_common::SqlType as T;
    match ty {
        T::Int2 => "SMALLINT".into(),
        T::Int4 | T::Oid => "INT".into(),
        T::Int8 => "BIGINT".into(),
        T::Float4 => "REAL".into(),
        T::Float8 => "DOUBLE".into(),
        t @ T::Numeric { .. } => match t.arrow_type() {
            DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
            _ => unreachable!("numeric is a Decimal128"),
        },
        T::Bool => "BOOLEAN".into(),
        T::Date => "DATE".into(),
        T::Timestamp => "TIMESTAMP".into(),
        T::TimestampTz => "TIMESTAMPTZ".into(),
        T::Bytea => "BYTEA".into(),
        T::Interval => "INTERVAL".into(),
        T::Time => "TIME".into(),
        T::Array(element) => format!("{}[]", df_type_name(element)),
        T::Text
        | T::Varchar { .. }
        | T::Char { .. }
        | T::Uuid
        | T::Jsonb
        | T::Json
        | T::PgChar
        | T::Enum(_) => "VARCHAR".into(),
    }
}

async fn insert(
    session: &Session,
    ins: &Insert,
    params: &[ScalarValue],
    ctx: Arc<StatementContext>,
    mode: WriteMode,
) -> Result<Output> {
    check_writable(mode, "INSERT")?;
    let mut shape = insert_shape(session, ins)?;
    let table = shape.table.clone();
    let state = session.statement_state(ctx.clone());
    let source = match collect(session, &state, insert_source(&shape, params, false)?, &[]).await {
        Ok(r) => r,
        // VALUES rows whose cells have different types: cast every cell to
        // its column's type, as PostgreSQL does for INSERT ... VALUES.
        Err(e)
            if e.kind == ErrorKind::User
                && matches!(
                    shape.source.map(|q| q.body.as_ref()),
                    Some(SetExpr::Values(_))
                ) =>
        {
            collect(session, &state, insert_source(&shape, params, true)?, &[]).await?
        }
        Err(e) => return Err(e),
    };
    let src = one_batch(source.0, source.1)?;
    if shape.implicit && src.num_columns() < shape.targets.len() {
        shape.targets.truncate(src.num_columns());
    }
    if src.num_columns() != shape.targets.len() {
        return Err(shape.count_mismatch(src.num_columns(), None));
    }
    let kind = match &shape.conflict {
        Conflict::Fail => pb::WriteKind::Insert,
        Conflict::Skip => pb::WriteKind::InsertIgnore,
        Conflict::Update { arbiter, action } => {
            return upsert(
                session, &ctx, &state, mode, &shape, params, arbiter, action, &src,
            )
            .await;
        }
    };
    let returning_items = shape
        .returning
        .map(|items| (shape.alias.as_str(), items.as_slice()));
    let (written, returned) = insert_rows(
        session,
        &ctx,
        &state,
        mode,
        &table,
        &shape.targets,
        &src,
        kind,
        returning_items,
    )
    .await?;
    match returned {
        Some(r) => r.output(Some(&written), "INSERT 0"),
        None => Ok(Output::Command(format!("INSERT 0 {}", written.len()))),
    }
}

/// Write `src` (one column per target column of `table`) as new rows:
/// converts each column with PostgreSQL's assignment rules, fills the
/// others (defaults, row ids, NULL), checks foreign keys, and writes. The
/// indexes of the rows not skipped (ON CONFLICT DO NOTHING) come back,
/// with the RETURNING list (`alias`, items) evaluated over the rows before
/// anything is written.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_rows(
    session: &Session,
    ctx: &Arc<StatementContext>,
    state: &SessionState,
    mode: WriteMode,
    table: &TableDef,
    targets: &[usize],
    src: &RecordBatch,
    kind: pb::WriteKind,
    returning_items: Option<(&str, &[SelectItem])>,
) -> Result<(Vec<u32>, Option<Returned>)> {
    let rows = proposed_rows(session, state, table, targets, src).await?;
    let n = rows.num_rows();
    crate::fk::check_references(session, ctx, table, &rows).await?;
    if crate::partitions::involved(table) {
        return insert_placed(session, ctx, mode, table, rows, kind, returning_items).await;
    }
    if kind == pb::WriteKind::InsertIgnore && !table.indexes.is_empty() {
        // ON CONFLICT DO NOTHING on a table with indexes: a skipped row
        // must leave no index entry, so the rows that would conflict are
        // found first and the others inserted. (One inserted meanwhile by
        // another transaction makes this statement fail with 23505.)
        let mut skip = crate::indexes::repeated_in_batch(table, &rows)?;
        for (s, e) in skip
            .iter_mut()
            .zip(crate::indexes::existing(session, ctx, table, &rows).await?)
        {
            *s |= e;
        }
        let written: Vec<u32> = (0..n as u32).filter(|&r| !skip[r as usize]).collect();
        let to_write = crate::indexes::keep(&rows, &skip)?;
        let returned = returning_before_write(table, &rows, returning_items).await?;
        let mut writes = Writes::default();
        writes.add(table, pb::WriteKind::Insert, &to_write, &table.primary_key)?;
        writes.add_index_changes(table, None, Some(&to_write))?;
        writes.apply(session, ctx, mode).await?;
        return Ok((written, returned));
    }
    let returned = returning_before_write(table, &rows, returning_items).await?;
    let mut writes = Writes::default();
    let op_rows = writes.add(table, kind, &rows, &table.primary_key)?;
    writes.add_index_changes(table, None, Some(&rows))?;
    let results = writes.apply(session, ctx, mode).await?;
    Ok((not_skipped(op_rows, &results), returned))
}

/// The whole rows an INSERT proposes: `src` (one column per target
/// column of `table`) converted with PostgreSQL's assignment rules, the
/// other columns filled (defaults, row ids, NULL); NOT NULL and CHECK
/// constraints hold for them (a partitioned table's are checked in the
/// partitions the rows go to).
async fn proposed_rows(
    session: &Session,
    state: &SessionState,
    table: &TableDef,
    targets: &[usize],
    src: &RecordBatch,
) -> Result<RecordBatch> {
    let n = src.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table.columns.len());
    for (i, col) in table.columns.iter().enumerate() {
        // NOT NULL is checked over whole rows below.
        let col = &ColumnDef {
            nullable: true,
            ..col.clone()
        };
        let array = if let Some(p) = targets.iter().position(|&t| t == i) {
            coerce_with(src.column(p), col, &table.name, session.date_style().order)?
        } else if col.hidden {
            session.cluster().rowid_column(n).await?
        } else if let Some(default) = &col.default_sql {
            let values = if crate::sequences::is_volatile_default(default) && n > 0 {
                per_row(session, state, default, n).await?
            } else {
                constant(session, state, default)
                    .await?
                    .to_array_of_size(n)
                    .map_err(from_df)?
            };
            coerce(&values, col, &table.name)?
        } else {
            coerce(
                &datafusion::arrow::array::new_null_array(&DataType::Null, n),
                col,
                &table.name,
            )?
        };
        columns.push(array);
    }
    crate::checks::enforce_not_null(table, &columns)?;
    let rows = RecordBatch::try_new_with_options(
        table.arrow_schema().clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    if crate::partitions::key_of(table).is_none() {
        // A partitioned table's rows are checked in the partitions they
        // go to, whose constraints include its own.
        crate::checks::enforce(session, table, &rows)?;
    }
    Ok(rows)
}

/// The encoded keys of `rows` in `columns`.
fn keys_of(rows: &RecordBatch, columns: &[usize]) -> Result<Vec<Key>> {
    encode_keys(
        &columns
            .iter()
            .map(|&c| rows.column(c).clone())
            .collect::<Vec<_>>(),
    )
}

/// The rows written (their numbers, ascending), given each op's rows and
/// what the data engines skipped of each (ON CONFLICT DO NOTHING).
fn not_skipped(
    op_rows: Vec<(usize, Vec<u32>)>,
    results: &HashMap<usize, pb::OpResult>,
) -> Vec<u32> {
    let mut written = Vec::new();
    for (op, rows_of_op) in op_rows {
        let skipped = &results[&op].skipped;
        written.extend(
            rows_of_op
                .iter()
                .enumerate()
                .filter(|(i, _)| !skipped.contains(&(*i as u32)))
                .map(|(_, r)| *r),
        );
    }
    written.sort();
    written
}

/// [`insert_rows`] into a partitioned table or a partition: the rows go to
/// the leaves [`crate::partitions::place`] finds for them (or fail its
/// bound checks), all in one write.
async fn insert_placed(
    session: &Session,
    ctx: &Arc<StatementContext>,
    mode: WriteMode,
    table: &TableDef,
    rows: RecordBatch,
    kind: pb::WriteKind,
    returning_items: Option<(&str, &[SelectItem])>,
) -> Result<(Vec<u32>, Option<Returned>)> {
    let placed = crate::partitions::place(session, &Arc::new(table.clone()), rows.clone()).await?;
    let returned = returning_before_write(table, &rows, returning_items).await?;
    let mut writes = Writes::default();
    let op_positions = add_placed(session, ctx, table, &placed, kind, &mut writes).await?;
    let results = writes.apply(session, ctx, mode).await?;
    Ok((not_skipped(op_positions, &results), returned))
}

/// The writes of rows bound for `table`'s leaves (`placed`), checked
/// against the constraints of each leaf and of `table`; per op, the
/// positions of its rows among the rows placed.
async fn add_placed(
    session: &Session,
    ctx: &Arc<StatementContext>,
    table: &TableDef,
    placed: &[crate::partitions::Placed],
    kind: pb::WriteKind,
    writes: &mut Writes,
) -> Result<Vec<(usize, Vec<u32>)>> {
    let mut op_positions: Vec<(usize, Vec<u32>)> = Vec::new();
    for p in placed {
        if p.table.id != table.id {
            crate::checks::enforce(
                session,
                &*crate::partitions::with_checks_of(&p.table, table)?,
                &p.rows,
            )?;
            crate::fk::check_references(session, ctx, &p.table, &p.rows).await?;
        }
        for (op, rows_of_op) in writes.add(&p.table, kind, &p.rows, &p.table.primary_key)? {
            op_positions.push((
                op,
                rows_of_op
                    .iter()
                    .map(|&r| p.positions[r as usize])
                    .collect(),
            ));
        }
        writes.add_index_changes(&p.table, None, Some(&p.rows))?;
    }
    Ok(op_positions)
}

/// INSERT … ON CONFLICT (arbiter) DO UPDATE: the proposed rows whose
/// arbiter key a row already has update that row instead, as the UPDATE
/// `UPDATE t SET … FROM (<those rows>) AS excluded WHERE t.key =
/// excluded.key [AND …]` would; the others are inserted. Both are one
/// write, and RETURNING lists the rows in the order proposed.
#[allow(clippy::too_many_arguments)]
async fn upsert(
    session: &Session,
    ctx: &Arc<StatementContext>,
    state: &SessionState,
    mode: WriteMode,
    shape: &InsertShape<'_>,
    params: &[ScalarValue],
    arbiter: &[usize],
    action: &DoUpdate,
    src: &RecordBatch,
) -> Result<Output> {
    let table = &shape.table;
    let rows = proposed_rows(session, state, table, &shape.targets, src).await?;
    let n = rows.num_rows();
    if crate::indexes::repeated_on(&rows, arbiter)?.contains(&true) {
        return Err(Error::user(
            sqlstate::CARDINALITY_VIOLATION,
            "ON CONFLICT DO UPDATE command cannot affect row a second time",
        )
        .with_hint(
            "Ensure that no rows proposed for insertion within the same command have duplicate constrained values.",
        ));
    }
    // Which rows conflict, judged in the leaf each goes to.
    let names: Vec<&str> = arbiter
        .iter()
        .map(|&c| table.columns[c].name.as_str())
        .collect();
    let mut conflicting = vec![false; n];
    let mut fresh = Vec::new();
    for p in crate::partitions::place(session, table, rows.clone()).await? {
        let columns = names
            .iter()
            .map(|name| p.table.column_index(name))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| Error::internal("a partition lacks the ON CONFLICT columns"))?;
        let hit =
            crate::indexes::existing_on(session, ctx, &p.table, &p.rows, Some(&columns)).await?;
        for (&h, &at) in hit.iter().zip(&p.positions) {
            conflicting[at as usize] = h;
        }
        fresh.push(crate::partitions::Placed {
            rows: crate::indexes::keep(&p.rows, &hit)?,
            positions: (0..hit.len())
                .filter(|&i| !hit[i])
                .map(|i| p.positions[i])
                .collect(),
            table: p.table,
        });
    }
    let inserted: Vec<u32> = (0..n as u32)
        .filter(|&r| !conflicting[r as usize])
        .collect();
    let new_rows = take_record_batch(&rows, &UInt32Array::from(inserted.clone()))?;
    crate::fk::check_references(session, ctx, table, &new_rows).await?;
    let mut writes = Writes::default();
    add_placed(
        session,
        ctx,
        table,
        &fresh,
        pb::WriteKind::Insert,
        &mut writes,
    )
    .await?;
    let mut count = inserted.len();
    // The rows written: the inserted ones, then the updated ones; and the
    // position proposed of each, for RETURNING's order.
    let mut written = vec![new_rows];
    let mut proposed_at = inserted;
    let clashing: Vec<u32> = (0..n as u32).filter(|&r| conflicting[r as usize]).collect();
    if !clashing.is_empty() {
        let excluded = take_record_batch(&rows, &UInt32Array::from(clashing.clone()))?;
        let sql = excluded_update(table, &shape.alias, arbiter, action, &excluded)?;
        let Statement::Update(up) = parse_query(&sql)? else {
            return Err(Error::internal("ON CONFLICT's update is not an UPDATE"));
        };
        let done = update_into(session, &up, params, ctx, &mut writes, true).await?;
        count += done.count;
        let keys = keys_of(&excluded, arbiter)?;
        let at: HashMap<&Key, u32> = keys.iter().zip(clashing).collect();
        let touched = concat_batches(table.arrow_schema(), &done.rows)?;
        // A row whose key the update changed is listed last.
        proposed_at.extend(
            keys_of(&touched, arbiter)?
                .iter()
                .map(|k| at.get(k).copied().unwrap_or(u32::MAX)),
        );
        written.push(touched);
    }
    let written = concat_batches(table.arrow_schema(), &written)?;
    let mut order: Vec<u32> = (0..written.num_rows() as u32).collect();
    order.sort_by_key(|&i| proposed_at[i as usize]);
    let ordered = [take_record_batch(&written, &UInt32Array::from(order))?];
    let returning = shape
        .returning
        .map(|items| (shape.alias.as_str(), items.as_slice()));
    write_and_answer(
        session, ctx, mode, writes, table, returning, &ordered, "INSERT 0", count,
    )
    .await
}

/// The UPDATE that ON CONFLICT DO UPDATE makes of the proposed rows that
/// conflict (`excluded`, whole rows of `table`): they are the `excluded`
/// relation, as literal VALUES, joined on the arbiter's columns.
fn excluded_update(
    table: &TableDef,
    alias: &str,
    arbiter: &[usize],
    action: &DoUpdate,
    excluded: &RecordBatch,
) -> Result<String> {
    let visible: Vec<usize> = (0..table.columns.len())
        .filter(|&i| !table.columns[i].hidden)
        .collect();
    let mut values = Vec::with_capacity(excluded.num_rows());
    for r in 0..excluded.num_rows() {
        let cells = visible
            .iter()
            .map(|&c| {
                let v = ScalarValue::try_from_array(excluded.column(c), r).map_err(from_df)?;
                Ok(if v.is_null() {
                    format!("CAST(NULL AS {})", df_type_name(&table.columns[c].ty))
                } else {
                    sql_literal(&v)?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        values.push(format!("({})", cells.join(", ")));
    }
    let names: Vec<String> = visible
        .iter()
        .map(|&c| quote(&table.columns[c].name))
        .collect();
    let mut filter: Vec<String> = arbiter
        .iter()
        .map(|&c| {
            let name = quote(&table.columns[c].name);
            format!("{}.{name} = excluded.{name}", quote(alias))
        })
        .collect();
    if let Some(w) = &action.selection {
        filter.push(format!("({w})"));
    }
    let assignments: Vec<String> = action.assignments.iter().map(|a| a.to_string()).collect();
    Ok(format!(
        "UPDATE {}.{} AS {} SET {} FROM (VALUES {}) AS excluded ({}) WHERE {}",
        quote(&table.schema),
        quote(&table.name),
        quote(alias),
        assignments.join(", "),
        values.join(", "),
        names.join(", "),
        filter.join(" AND ")
    ))
}

/// The RETURNING list over every row about to be written, if there is one.
async fn returning_before_write(
    table: &TableDef,
    rows: &RecordBatch,
    items: Option<(&str, &[SelectItem])>,
) -> Result<Option<Returned>> {
    match items {
        Some((alias, items)) => Ok(Some(
            Returned::evaluate(table, alias, rows.clone(), items).await?,
        )),
        None => Ok(None),
    }
}

/// Evaluate a default that differs per row (`nextval(…)`) `n` times.
async fn per_row(session: &Session, state: &SessionState, sql: &str, n: usize) -> Result<ArrayRef> {
    let query = parse_query(&format!("SELECT {sql} FROM generate_series(1, {n})"))?;
    let (_, batches) = collect(session, state, query, &[]).await?;
    let columns: Vec<&dyn datafusion::arrow::array::Array> =
        batches.iter().map(|b| b.column(0).as_ref()).collect();
    Ok(datafusion::arrow::compute::concat(&columns)?)
}

/// Evaluate a constant expression (a column default).
async fn constant(session: &Session, state: &SessionState, sql: &str) -> Result<ScalarValue> {
    let (_, batches) = collect(session, state, parse_query(&format!("SELECT {sql}"))?, &[]).await?;
    let b = batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::internal("default produced no value"))?;
    ScalarValue::try_from_array(b.column(0), 0).map_err(from_df)
}

// ------------------------------------------------------- UPDATE and DELETE

/// The target table of an UPDATE/DELETE and the name it is referred by.
/// `leaf` replaces the table named (a partitioned table's leaf, read and
/// written in its stead; privileges are the named table's).
fn target(
    session: &Session,
    twj: &TableWithJoins,
    privilege: &str,
    leaf: Option<&Arc<TableDef>>,
) -> Result<(Arc<TableDef>, String)> {
    if !twj.joins.is_empty() {
        return Err(Error::unsupported(
            "joins in the target of UPDATE or DELETE",
        ));
    }
    let TableFactor::Table { name, alias, .. } = &twj.relation else {
        return Err(Error::syntax("UPDATE/DELETE needs a table"));
    };
    let table = resolve_table(session, name)?;
    crate::privileges::require(&session.actor(), &table, privilege)?;
    let alias = alias
        .as_ref()
        .map(|a| ident(&a.name))
        .unwrap_or_else(|| table.name.clone());
    Ok((leaf.cloned().unwrap_or(table), alias))
}

/// The table an UPDATE or DELETE names.
fn named_target(session: &Session, twj: &TableWithJoins) -> Result<Arc<TableDef>> {
    match &twj.relation {
        TableFactor::Table { name, .. } => resolve_table(session, name),
        _ => Err(Error::syntax("UPDATE/DELETE needs a table")),
    }
}

/// `SELECT <all columns> [, extra] FROM t$dml AS alias [, more] [WHERE ...]`
fn select_rows(
    table: &TableDef,
    alias: &str,
    extra: &[String],
    more_from: &[TableWithJoins],
    selection: Option<&SqlExpr>,
) -> String {
    let mut items: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{}.{}", quote(alias), quote(&c.name)))
        .collect();
    items.extend(extra.iter().cloned());
    let mut from = vec![format!(
        "{}.{} AS {}",
        quote(&table.schema),
        quote(&format!("{}{DML_SUFFIX}", table.name)),
        quote(alias)
    )];
    from.extend(more_from.iter().map(|t| t.to_string()));
    let mut sql = format!("SELECT {} FROM {}", items.join(", "), from.join(", "));
    if let Some(w) = selection {
        sql.push_str(&format!(" WHERE {w}"));
    }
    sql
}

/// Run the SELECT of an UPDATE or DELETE at the statement's snapshot: the
/// rows it touches (all columns, then any computed values).
async fn matching_rows(
    session: &Session,
    ctx: &Arc<StatementContext>,
    select: &Statement,
    params: &[ScalarValue],
) -> Result<RecordBatch> {
    let state = session.statement_state(ctx.clone());
    let (schema, batches) = collect(session, &state, select.clone(), params).await?;
    one_batch(schema, batches)
}

/// `columns` (one per table column, as many rows as `found`) as a batch of
/// the table's schema.
fn table_rows(
    table: &TableDef,
    found: &RecordBatch,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new_with_options(
        table.arrow_schema().clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(found.num_rows())),
    )?)
}

struct UpdateShape {
    table: Arc<TableDef>,
    alias: String,
    /// Column index per assignment (a tuple assignment counts per column).
    assigned: Vec<usize>,
    /// The value assigned to each.
    values: Vec<SqlExpr>,
    select: Statement,
}

fn update_shape(
    session: &Session,
    up: &Update,
    leaf: Option<&Arc<TableDef>>,
) -> Result<UpdateShape> {
    let (table, alias) = target(session, &up.table, "UPDATE", leaf)?;
    let mut assigned = Vec::new();
    let mut extra = Vec::new();
    // `SET (a, b) = (x, y)` is `SET a = x, b = y`; `SET (a, b) = (SELECT
    // x, y …)` is `SET a = (SELECT x …), b = (SELECT y …)` — each a scalar
    // subquery: NULL when it finds no row, 21000 when it finds several.
    // (The query runs once per column, not once per row.)
    let mut pairs: Vec<(&ObjectName, SqlExpr)> = Vec::new();
    for a in &up.assignments {
        match &a.target {
            AssignmentTarget::ColumnName(c) => pairs.push((c, a.value.clone())),
            AssignmentTarget::Tuple(names) => {
                let values: Vec<SqlExpr> = match &a.value {
                    SqlExpr::Tuple(values) => values.clone(),
                    SqlExpr::Nested(one) if names.len() == 1 => vec![one.as_ref().clone()],
                    SqlExpr::Subquery(q) => match q.body.as_ref() {
                        SetExpr::Select(select)
                            if select.projection.iter().all(|i| {
                                matches!(
                                    i,
                                    SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
                                )
                            }) =>
                        {
                            select
                                .projection
                                .iter()
                                .map(|item| {
                                    let mut one = q.as_ref().clone();
                                    if let SetExpr::Select(s) = one.body.as_mut() {
                                        s.projection = vec![item.clone()];
                                    }
                                    SqlExpr::Subquery(Box::new(one))
                                })
                                .collect()
                        }
                        _ => {
                            return Err(Error::unsupported(
                                "UPDATE … SET (a, b) = (a query other than one SELECT) is not supported yet",
                            ));
                        }
                    },
                    SqlExpr::Nested(_) => {
                        return Err(Error::syntax(
                            "source for a multiple-column UPDATE item must be a sub-SELECT or ROW() expression",
                        ));
                    }
                    _ => {
                        return Err(Error::unsupported(format!(
                            "UPDATE … SET ({}) = {} is not supported yet",
                            names
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                            a.value
                        )));
                    }
                };
                if values.len() != names.len() {
                    return Err(Error::syntax(
                        "number of columns does not match number of values",
                    ));
                }
                pairs.extend(names.iter().zip(values));
            }
        }
    }
    let mut values = Vec::new();
    for (i, (c, value)) in pairs.into_iter().enumerate() {
        let value = &value;
        values.push(value.clone());
        let name =
            c.0.last()
                .and_then(|p| p.as_ident())
                .map(ident)
                .unwrap_or_default();
        let idx = table.visible_column(&name)?;
        if assigned.contains(&idx) {
            return Err(Error::user(
                sqlstate::DUPLICATE_COLUMN,
                format!("multiple assignments to same column \"{name}\""),
            ));
        }
        assigned.push(idx);
        let value = if matches!(value, SqlExpr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default"))
        {
            table.columns[idx]
                .default_sql
                .clone()
                .unwrap_or_else(|| "NULL".into())
        } else {
            value.to_string()
        };
        extra.push(format!("({value}) AS \"__eon_set_{i}\""));
    }
    let more: Vec<TableWithJoins> = match &up.from {
        None => vec![],
        Some(UpdateTableFromKind::AfterSet(f)) | Some(UpdateTableFromKind::BeforeSet(f)) => {
            f.clone()
        }
    };
    let select = parse_query(&select_rows(
        &table,
        &alias,
        &extra,
        &more,
        up.selection.as_ref(),
    ))?;
    Ok(UpdateShape {
        table,
        alias,
        assigned,
        values,
        select,
    })
}

async fn update(
    session: &Session,
    up: &Update,
    params: &[ScalarValue],
    ctx: Arc<StatementContext>,
    mode: WriteMode,
) -> Result<Output> {
    check_writable(mode, "UPDATE")?;
    let named = named_target(session, &up.table)?;
    let mut writes = Writes::default();
    let done = update_into(
        session,
        up,
        params,
        &ctx,
        &mut writes,
        up.returning.is_some(),
    )
    .await?;
    let returning = up
        .returning
        .as_deref()
        .map(|items| (done.alias.as_str(), items));
    write_and_answer(
        session, &ctx, mode, writes, &named, returning, &done.rows, "UPDATE", done.count,
    )
    .await
}

/// What an UPDATE of a table (and its partitions) does.
struct UpdatedAll {
    count: usize,
    /// The name the statement gives the table.
    alias: String,
    /// The new rows, in the named table's layout, when asked for.
    rows: Vec<RecordBatch>,
}

/// The writes of an UPDATE, added to `writes`; the new rows come back
/// when `want_rows` (for RETURNING).
async fn update_into(
    session: &Session,
    up: &Update,
    params: &[ScalarValue],
    ctx: &Arc<StatementContext>,
    writes: &mut Writes,
    want_rows: bool,
) -> Result<UpdatedAll> {
    let named = named_target(session, &up.table)?;
    let leaves = target_leaves(session, &named)?;
    let mut count = 0;
    let mut alias = named.name.clone();
    let mut touched: Vec<RecordBatch> = Vec::new();
    let mut leaving: Vec<(Arc<TableDef>, RecordBatch)> = Vec::new();
    for leaf in &leaves {
        let shape = update_shape(session, up, leaf.as_ref())?;
        alias = shape.alias.clone();
        let done = update_table(session, &shape, params, ctx, leaf.is_some(), writes).await?;
        count += done.count;
        if want_rows {
            touched.push(in_layout_of(session, done.touched, leaf.as_ref(), &named).await?);
        }
        if let Some(rows) = done.leaving {
            leaving.push((shape.table.clone(), rows));
        }
    }
    // Rows whose new key is outside their partition move to the one it
    // now belongs to (PostgreSQL's row movement: a delete and an insert).
    // (A moved row already has a fresh row id, as every updated row has,
    // so it is listed last in its new partition.)
    for (leaf, rows) in leaving {
        let rows = crate::partitions::relayout(session, &rows, &leaf, &named).await?;
        for p in crate::partitions::place(session, &named, rows).await? {
            crate::checks::enforce(session, &p.table, &p.rows)?;
            writes.add(
                &p.table,
                pb::WriteKind::Insert,
                &p.rows,
                &p.table.primary_key,
            )?;
            writes.add_index_changes(&p.table, None, Some(&p.rows))?;
        }
    }
    Ok(UpdatedAll {
        count,
        alias,
        rows: touched,
    })
}

/// Rows of `leaf` (when an UPDATE or DELETE read `named` through it) in
/// `named`'s layout, for RETURNING.
async fn in_layout_of(
    session: &Session,
    rows: RecordBatch,
    leaf: Option<&Arc<TableDef>>,
    named: &TableDef,
) -> Result<RecordBatch> {
    match leaf {
        Some(l) => crate::partitions::relayout(session, &rows, l, named).await,
        None => Ok(rows),
    }
}

/// The end of an UPDATE or DELETE of `named`: RETURNING (`alias`, items)
/// over `rows` is computed before the write, so an error in it leaves the
/// table as it was; then the writes, and the answer (`tag`, `count`).
#[allow(clippy::too_many_arguments)]
async fn write_and_answer(
    session: &Session,
    ctx: &Arc<StatementContext>,
    mode: WriteMode,
    writes: Writes,
    named: &TableDef,
    returning: Option<(&str, &[SelectItem])>,
    rows: &[RecordBatch],
    tag: &str,
    count: usize,
) -> Result<Output> {
    let returned = match returning {
        Some((alias, items)) => {
            let rows = concat_batches(named.arrow_schema(), rows)?;
            Some(Returned::evaluate(named, alias, rows, items).await?)
        }
        None => None,
    };
    writes.apply(session, ctx, mode).await?;
    match returned {
        Some(r) => r.output(None, tag),
        None => Ok(Output::Command(format!("{tag} {count}"))),
    }
}

/// The tables an UPDATE or DELETE of `named` reads and writes: the leaves
/// of a partitioned table (`Some`), else the table itself (`None`).
fn target_leaves(session: &Session, named: &Arc<TableDef>) -> Result<Vec<Option<Arc<TableDef>>>> {
    if crate::partitions::key_of(named).is_none() {
        return Ok(vec![None]);
    }
    Ok(
        crate::partitions::leaves(&crate::partitions::Cx::of(session), named)?
            .into_iter()
            .map(Some)
            .collect(),
    )
}

/// What an UPDATE did to one table.
struct Updated {
    count: usize,
    /// The new rows, in the table's layout (for RETURNING).
    touched: RecordBatch,
    /// New rows outside the table's partition bound, when updated through
    /// the partitioned table: deleted here, to be inserted where they now
    /// belong.
    leaving: Option<RecordBatch>,
}

/// The writes of an UPDATE of one table (`shape.table`), added to `writes`.
async fn update_table(
    session: &Session,
    shape: &UpdateShape,
    params: &[ScalarValue],
    ctx: &Arc<StatementContext>,
    via_parent: bool,
    writes: &mut Writes,
) -> Result<Updated> {
    let table = shape.table.clone();
    let found = matching_rows(session, ctx, &shape.select, params).await?;
    let ncols = table.columns.len();
    let mut new_columns: Vec<ArrayRef> = found.columns()[..ncols].to_vec();
    for (i, &col) in shape.assigned.iter().enumerate() {
        new_columns[col] = coerce_with(
            found.column(ncols + i),
            &ColumnDef {
                nullable: true,
                ..table.columns[col].clone()
            },
            &table.name,
            session.date_style().order,
        )?;
    }
    crate::checks::enforce_not_null(&table, &new_columns)?;
    if table.has_rowid() && found.num_rows() > 0 {
        // An updated row is a new version, listed after the rows there
        // were (as PostgreSQL's heap appends it): it takes a new row id.
        new_columns[table.primary_key[0]] =
            session.cluster().rowid_column(found.num_rows()).await?;
    }
    let old = table_rows(&table, &found, found.columns()[..ncols].to_vec())?;
    let new = table_rows(&table, &found, new_columns)?;
    crate::checks::enforce(session, &table, &new)?;
    let mut outside = vec![false; new.num_rows()];
    if crate::partitions::bound_of(&table).is_some() {
        if via_parent {
            outside = crate::partitions::outside(session, &table, &new)?;
        } else {
            crate::partitions::check_rows(session, &table, &new)?;
        }
    }
    let pk = &table.primary_key;
    let old_keys = keys_of(&old, pk)?;
    let new_keys = keys_of(&new, pk)?;
    // A row matched twice (UPDATE ... FROM) is updated once.
    let mut seen: HashMap<&Key, ()> = HashMap::new();
    let (mut same, mut moved, mut leaving) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..found.num_rows() {
        if seen.insert(&old_keys[i], ()).is_some() {
            continue;
        }
        if outside[i] {
            leaving.push(i as u32)
        } else if old_keys[i] == new_keys[i] {
            same.push(i as u32)
        } else {
            moved.push(i as u32)
        }
    }
    let fk_columns_set = table
        .foreign_keys
        .iter()
        .any(|f| f.columns.iter().any(|c| shape.assigned.contains(c)));
    if fk_columns_set {
        let written: Vec<u32> = same.iter().chain(&moved).copied().collect();
        let rows = take_record_batch(&new, &UInt32Array::from(written))?;
        crate::fk::check_references(session, ctx, &table, &rows).await?;
    }
    if !moved.is_empty() {
        // Keys that no row has any more (another row may take a key over).
        let kept: HashSet<&Key> = (0..found.num_rows()).map(|i| &new_keys[i]).collect();
        let gone: Vec<u32> = moved
            .iter()
            .copied()
            .filter(|&i| !kept.contains(&old_keys[i as usize]))
            .collect();
        let gone = take_record_batch(&old, &UInt32Array::from(gone))?.project(pk)?;
        crate::fk::check_unreferenced(session, ctx, &table, &gone).await?;
    }
    let touched: Vec<u32> = same.iter().chain(&moved).copied().collect();
    if !table.indexes.is_empty() && !touched.is_empty() {
        let at = UInt32Array::from(touched);
        writes.add_index_changes(
            &table,
            Some(&take_record_batch(&old, &at)?),
            Some(&take_record_batch(&new, &at)?),
        )?;
    }
    let key_cols: Vec<usize> = pk.clone();
    let deleted: Vec<u32> = moved.iter().chain(&leaving).copied().collect();
    if !deleted.is_empty() {
        let at = UInt32Array::from(deleted);
        writes.add(
            &table,
            pb::WriteKind::Delete,
            &take_record_batch(&old, &at)?.project(&key_cols)?,
            &(0..key_cols.len()).collect::<Vec<_>>(),
        )?;
    }
    let leaving_rows = if leaving.is_empty() {
        None
    } else {
        let at = UInt32Array::from(leaving.clone());
        writes.add_index_changes(&table, Some(&take_record_batch(&old, &at)?), None)?;
        Some(take_record_batch(&new, &at)?)
    };
    if !same.is_empty() {
        writes.add(
            &table,
            pb::WriteKind::Put,
            &take_record_batch(&new, &UInt32Array::from(same.clone()))?,
            pk,
        )?;
    }
    if !moved.is_empty() {
        writes.add(
            &table,
            pb::WriteKind::Insert,
            &take_record_batch(&new, &UInt32Array::from(moved.clone()))?,
            pk,
        )?;
    }
    let mut touched: Vec<u32> = same.into_iter().chain(moved).chain(leaving).collect();
    touched.sort();
    Ok(Updated {
        count: touched.len(),
        touched: take_record_batch(&new, &UInt32Array::from(touched))?,
        leaving: leaving_rows,
    })
}

struct DeleteShape {
    table: Arc<TableDef>,
    alias: String,
    select: Statement,
}

fn delete_shape(
    session: &Session,
    del: &Delete,
    leaf: Option<&Arc<TableDef>>,
) -> Result<DeleteShape> {
    let from = match &del.from {
        FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
    };
    let [twj] = from.as_slice() else {
        return Err(Error::unsupported("DELETE from more than one table"));
    };
    let (table, alias) = target(session, twj, "DELETE", leaf)?;
    let more = del.using.clone().unwrap_or_default();
    let select = parse_query(&select_rows(
        &table,
        &alias,
        &[],
        &more,
        del.selection.as_ref(),
    ))?;
    Ok(DeleteShape {
        table,
        alias,
        select,
    })
}

async fn delete(
    session: &Session,
    del: &Delete,
    params: &[ScalarValue],
    ctx: Arc<StatementContext>,
    mode: WriteMode,
) -> Result<Output> {
    check_writable(mode, "DELETE")?;
    let from = match &del.from {
        FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
    };
    let named = match from.as_slice() {
        [twj] => named_target(session, twj)?,
        _ => return Err(Error::unsupported("DELETE from more than one table")),
    };
    let mut writes = Writes::default();
    let mut count = 0;
    let mut alias = named.name.clone();
    let mut deleted: Vec<RecordBatch> = Vec::new();
    for leaf in target_leaves(session, &named)? {
        let shape = delete_shape(session, del, leaf.as_ref())?;
        alias = shape.alias.clone();
        let rows = delete_from(session, &shape, params, &ctx, &mut writes).await?;
        count += rows.num_rows();
        if del.returning.is_some() {
            deleted.push(in_layout_of(session, rows, leaf.as_ref(), &named).await?);
        }
    }
    let returning = del
        .returning
        .as_deref()
        .map(|items| (alias.as_str(), items));
    write_and_answer(
        session, &ctx, mode, writes, &named, returning, &deleted, "DELETE", count,
    )
    .await
}

/// The writes of a DELETE from one table (`shape.table`), added to
/// `writes`; the rows it deletes come back.
async fn delete_from(
    session: &Session,
    shape: &DeleteShape,
    params: &[ScalarValue],
    ctx: &Arc<StatementContext>,
    writes: &mut Writes,
) -> Result<RecordBatch> {
    let table = shape.table.clone();
    let found = matching_rows(session, ctx, &shape.select, params).await?;
    let rows = table_rows(
        &table,
        &found,
        found.columns()[..table.columns.len()].to_vec(),
    )?;
    let keys = keys_of(&rows, &table.primary_key)?;
    let mut seen = HashMap::new();
    let unique: Vec<u32> = (0..rows.num_rows())
        .filter(|&i| seen.insert(&keys[i], ()).is_none())
        .map(|i| i as u32)
        .collect();
    let rows = take_record_batch(&rows, &UInt32Array::from(unique))?;
    let key_batch = rows.project(&table.primary_key)?;
    crate::fk::check_unreferenced(session, ctx, &table, &key_batch).await?;
    writes.add_index_changes(&table, Some(&rows), None)?;
    writes.add(
        &table,
        pb::WriteKind::Delete,
        &key_batch,
        &(0..table.primary_key.len()).collect::<Vec<_>>(),
    )?;
    Ok(rows)
}

// ---------------------------------------------------------------- RETURNING

/// RETURNING items evaluated over the rows a statement is about to write:
/// one result row per written row. They are computed before the write is
/// applied, so that an error in them (a division by zero, a bad cast)
/// fails the statement with nothing written.
pub(crate) struct Returned {
    batch: RecordBatch,
}

impl Returned {
    async fn evaluate(
        table: &TableDef,
        alias: &str,
        rows: RecordBatch,
        items: &[SelectItem],
    ) -> Result<Returned> {
        let (ctx, sql) = returning_context(table, alias, Some(rows), items)?;
        let plan = ctx
            .state()
            .create_logical_plan(&sql)
            .await
            .map_err(from_df)?;
        refuse_in_returning(&plan)?;
        let df = ctx.execute_logical_plan(plan).await.map_err(from_df)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(from_df)?;
        let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        Ok(Returned { batch })
    }

    /// The rows of those `written` (indexes into the evaluated rows), or
    /// all of them.
    fn output(self, written: Option<&[u32]>, tag: &str) -> Result<Output> {
        let schema = self.batch.schema();
        let batch = match written {
            Some(w) if w.len() != self.batch.num_rows() => {
                take_record_batch(&self.batch, &UInt32Array::from(w.to_vec()))?
            }
            _ => self.batch,
        };
        Output::rows(vec![batch], schema, tag)
    }
}

/// PostgreSQL refuses aggregates and window functions in RETURNING (a
/// row per written row is what it means).
fn refuse_in_returning(plan: &datafusion::logical_expr::LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan as P;
    let mut refused = None;
    plan.apply(|p| {
        refused = match p {
            P::Aggregate(_) => Some((
                sqlstate::GROUPING_ERROR,
                "aggregate functions are not allowed in RETURNING",
            )),
            P::Window(_) => Some((
                sqlstate::WINDOWING_ERROR,
                "window functions are not allowed in RETURNING",
            )),
            _ => None,
        };
        Ok(if refused.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(from_df)?;
    match refused {
        Some((code, message)) => Err(Error::user(code, message)),
        None => Ok(()),
    }
}

/// A context where `alias` names the written rows (visible columns only).
fn returning_context(
    table: &TableDef,
    alias: &str,
    rows: Option<RecordBatch>,
    items: &[SelectItem],
) -> Result<(SessionContext, String)> {
    let visible: Vec<usize> = (0..table.columns.len())
        .filter(|&i| !table.columns[i].hidden)
        .collect();
    let schema = Arc::new(table.arrow_schema().project(&visible)?);
    let data = match rows {
        Some(r) => vec![vec![r.project(&visible)?]],
        None => vec![vec![]],
    };
    let mem = MemTable::try_new(schema, data).map_err(from_df)?;
    let ctx = SessionContext::new();
    ctx.register_table(quote(alias).as_str(), Arc::new(mem))
        .map_err(from_df)?;
    let list: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    Ok((
        ctx,
        format!("SELECT {} FROM {}", list.join(", "), quote(alias)),
    ))
}

// -------------------------------------------------------------- describe

/// Parameter types and result columns of a DML statement.
pub async fn describe(
    session: &Session,
    state: &SessionState,
    stmt: &Statement,
) -> Result<(Vec<Option<eon_common::SqlType>>, Option<SchemaRef>)> {
    let (table, alias, items, params) = match stmt {
        Statement::Insert(ins) => {
            let shape = insert_shape(session, ins)?;
            let mut types: Vec<Option<eon_common::SqlType>> = Vec::new();
            let mut set = |n: usize, t: eon_common::SqlType| {
                if types.len() < n {
                    types.resize(n, None);
                }
                if types[n - 1].is_none() {
                    types[n - 1] = Some(t);
                }
            };
            if let Some(q) = shape.source {
                if let SetExpr::Values(values) = q.body.as_ref() {
                    for row in &values.rows {
                        for (cell, &col) in row.iter().zip(&shape.targets) {
                            if let SqlExpr::Value(v) = cell {
                                if let SqlValue::Placeholder(p) = &v.value {
                                    if let Ok(n) = p.trim_start_matches('$').parse::<usize>() {
                                        set(n, shape.table.columns[col].ty);
                                    }
                                }
                            }
                        }
                    }
                } else if let Ok(plan) = session
                    .plan_query(state, Statement::Query(Box::new(q.clone())))
                    .await
                {
                    for (i, t) in param_types_of(&plan)?.into_iter().enumerate() {
                        if let Some(t) = t {
                            set(i + 1, t);
                        }
                    }
                }
            }
            (shape.table, shape.alias, shape.returning.cloned(), types)
        }
        Statement::Update(up) => {
            let shape = update_shape(session, up, None)?;
            let plan = session.plan_query(state, shape.select).await?;
            let mut types = param_types_of(&plan)?;
            // `SET col = $n`: the column's type.
            for (value, &col) in shape.values.iter().zip(&shape.assigned) {
                if let SqlExpr::Value(v) = value {
                    if let SqlValue::Placeholder(p) = &v.value {
                        if let Ok(n) = p.trim_start_matches('$').parse::<usize>() {
                            if types.len() < n {
                                types.resize(n, None);
                            }
                            types[n - 1] = Some(shape.table.columns[col].ty);
                        }
                    }
                }
            }
            (shape.table, shape.alias, up.returning.clone(), types)
        }
        Statement::Delete(del) => {
            let shape = delete_shape(session, del, None)?;
            let plan = session.plan_query(state, shape.select).await?;
            (
                shape.table,
                shape.alias,
                del.returning.clone(),
                param_types_of(&plan)?,
            )
        }
        _ => return Ok((vec![], None)),
    };
    let result = match items {
        Some(items) => {
            let (ctx, sql) = returning_context(&table, &alias, None, &items)?;
            let plan = ctx
                .state()
                .create_logical_plan(&sql)
                .await
                .map_err(from_df)?;
            Some(Arc::new(plan.schema().as_arrow().clone()))
        }
        None => None,
    };
    Ok((params, result))
}

/// TRUNCATE: every row of the tables goes, as by `DELETE FROM` each
/// (within the session's transaction, so a block's ROLLBACK brings them
/// back). Tables referencing one of them by a foreign key must be in the
/// list (or are added with CASCADE); referencing tables are emptied first.
pub async fn truncate(
    session: &Session,
    t: &datafusion::sql::sqlparser::ast::Truncate,
) -> Result<Output> {
    session.cluster().timestamp().await?;
    let mut tables: Vec<Arc<TableDef>> = Vec::new();
    for target in &t.table_names {
        match resolve_table(session, &target.name) {
            Ok(table) if !tables.iter().any(|x| x.id == table.id) => {
                crate::privileges::require(&session.actor(), &table, "TRUNCATE")?;
                tables.push(table)
            }
            Ok(_) => {}
            Err(_) if t.if_exists => {}
            Err(e) => return Err(e),
        }
    }
    let cascade = matches!(
        t.cascade,
        Some(datafusion::sql::sqlparser::ast::CascadeOption::Cascade)
    );
    let references = |child: &TableDef, parent: &TableDef| {
        child.id != parent.id
            && child
                .foreign_keys
                .iter()
                .any(|f| f.references(&parent.schema, &parent.name))
    };
    // Tables referencing a truncated one: added (CASCADE) or an error.
    loop {
        let all = session.cluster().tables();
        let missing = all.iter().find(|c| {
            !tables.iter().any(|t| t.id == c.id) && tables.iter().any(|p| references(c, p))
        });
        let Some(child) = missing else { break };
        if !cascade {
            let parent = tables.iter().find(|p| references(child, p)).unwrap();
            return Err(Error::user(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "cannot truncate a table referenced in a foreign key constraint",
            )
            .with_detail(format!(
                "Table \"{}\" references \"{}\".",
                child.name, parent.name
            )));
        }
        tables.push(child.clone());
    }
    for table in crate::ddl::children_first(tables, |c, p| references(c, p)) {
        let delete = parse_query(&format!(
            "DELETE FROM {}.{}",
            quote(&table.schema),
            quote(&table.name)
        ))?;
        execute(session, &delete, &[]).await?;
    }
    Ok(Output::Command("TRUNCATE TABLE".into()))
}

/// Run an INSERT, UPDATE or DELETE.
pub async fn execute(
    session: &Session,
    stmt: &Statement,
    params: &[ScalarValue],
) -> Result<Output> {
    // The statement's snapshot; getting it also brings the catalog up to
    // date, so tables created through other query engines resolve.
    let (ctx, mode) = session.begin_statement().await?;
    match stmt {
        Statement::Insert(ins) => insert(session, ins, params, ctx, mode).await,
        Statement::Update(up) => update(session, up, params, ctx, mode).await,
        Statement::Delete(del) => delete(session, del, params, ctx, mode).await,
        _ => Err(Error::internal("not a DML statement")),
    }
}

// ---------------------------------------------------------------- writing

pub(crate) fn check_writable(mode: WriteMode, what: &str) -> Result<()> {
    match mode {
        WriteMode::Txn {
            read_only: true, ..
        }
        | WriteMode::Autocommit { read_only: true } => Err(crate::txn::read_only_error(what)),
        _ => Ok(()),
    }
}

/// Write operations of one statement, grouped by data engine.
#[derive(Default)]
struct Writes {
    by_engine: BTreeMap<u64, Vec<pb::WriteOp>>,
    next_op: usize,
    /// (engine, position in its op list) of each op, by op number.
    locations: Vec<(u64, usize)>,
    /// Every key written, by table id.
    keys: HashSet<(u64, Vec<u8>)>,
}

impl Writes {
    /// Split `rows` (whose key columns are `key_cols`) by shard into ops.
    /// Returns, per op number, the row indexes of `rows` it carries.
    fn add(
        &mut self,
        table: &TableDef,
        kind: pb::WriteKind,
        rows: &RecordBatch,
        key_cols: &[usize],
    ) -> Result<Vec<(usize, Vec<u32>)>> {
        let keys = keys_of(rows, key_cols)?;
        self.keys.extend(keys.iter().map(|k| (table.id, k.clone())));
        let mut by_shard: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            by_shard
                .entry(table.shard_of_key(k))
                .or_default()
                .push(i as u32);
        }
        let mut out = Vec::with_capacity(by_shard.len());
        for (shard, idx) in by_shard {
            let part = take_record_batch(rows, &UInt32Array::from(idx.clone()))?;
            let engine = table
                .engine_of(shard)
                .ok_or_else(|| Error::internal(format!("shard {shard} has no placement")))?;
            let ops = self.by_engine.entry(engine).or_default();
            ops.push(pb::WriteOp {
                table: Some(table.proto().clone()),
                shard,
                kind: kind as i32,
                rows: ipc::encode_batch(&part)?.into(),
            });
            self.locations.push((engine, ops.len() - 1));
            out.push((self.next_op, idx));
            self.next_op += 1;
        }
        Ok(out)
    }

    /// The index writes that keep `table`'s indexes in step with rows
    /// changing from `old` to `new` (see [`crate::indexes::changes`]).
    fn add_index_changes(
        &mut self,
        table: &TableDef,
        old: Option<&RecordBatch>,
        new: Option<&RecordBatch>,
    ) -> Result<()> {
        for w in crate::indexes::changes(table, old, new)? {
            let key: Vec<usize> = match w.kind {
                pb::WriteKind::Delete => (0..w.storage.primary_key.len()).collect(),
                _ => w.storage.primary_key.clone(),
            };
            self.add(&w.storage, w.kind, &w.rows, &key)?;
        }
        Ok(())
    }

    /// Write everything: all or nothing now (autocommit), or staged under
    /// the open transaction. Returns each op's result by op number.
    async fn apply(
        self,
        session: &Session,
        ctx: &StatementContext,
        mode: WriteMode,
    ) -> Result<HashMap<usize, pb::OpResult>> {
        let cluster = session.cluster();
        let read_ts = ctx.read_ts;
        let (txn, staged_only, seq) = match mode {
            WriteMode::Autocommit { .. } => (crate::txn::new_txn_id(), false, 0),
            WriteMode::Txn { id, seq, .. } => (id, true, seq),
        };
        // A SERIALIZABLE statement outside a block is a transaction of its
        // own: what it read but did not write must not have changed by the
        // time it commits. (What it wrote is checked by the write itself: a
        // newer version of a written key is a conflict.)
        let reads: Vec<crate::provider::ReadSpan> = if staged_only || !ctx.track_reads {
            vec![]
        } else {
            ctx.reads.lock().unwrap().clone()
        };
        let covered = |r: &crate::provider::ReadSpan| {
            r.keys.as_ref().is_some_and(|keys| {
                keys.iter()
                    .all(|k| self.keys.contains(&(r.table, k.clone())))
            })
        };
        let refresh = !reads.iter().all(covered);
        // A statement on one engine outside a transaction commits there in
        // one phase (unless its reads need refreshing), if one log can hold
        // it: the engine's own, or one replicated shard's group.
        let one_phase = !staged_only
            && self.by_engine.len() == 1
            && !refresh
            && self.by_engine.values().all(|ops| one_log(ops));
        let engines: BTreeSet<u64> = self.by_engine.keys().copied().collect();
        let Some(&first) = engines.iter().next() else {
            return Ok(HashMap::new());
        };
        let anchor = if staged_only {
            session.anchor(first)
        } else {
            first
        };
        // A statement of its own writing to several engines commits in two
        // phases. Until it ends, its record on the anchor is kept alive as an
        // open block's is: else an engine whose part is slow to stage (a big
        // COPY under load) would see the transaction's staged parts older
        // than their patience and abort it as one whose coordinator is gone.
        let _heartbeat = (!staged_only && !one_phase).then(|| {
            crate::txn::HeartbeatWhile(crate::txn::spawn_heartbeat(
                cluster.clone(),
                txn,
                anchor,
                Default::default(),
            ))
        });
        let mut results: HashMap<u64, pb::WriteResponse> = HashMap::new();
        let mut failure: Option<Error> = None;
        let calls = self.by_engine.iter().map(|(&engine, ops)| {
            let req = pb::WriteRequest {
                txn_id: txn,
                read_ts,
                one_phase,
                ops: ops.clone(),
                anchor,
                seq,
            };
            async move {
                let r = cluster
                    .with_engine(engine, Duration::from_secs(3), false, |mut c| {
                        let req = req.clone();
                        async move { c.write(req).await }
                    })
                    .await;
                (engine, r)
            }
        });
        for (engine, r) in futures::future::join_all(calls).await {
            match r {
                Ok(resp) => {
                    results.insert(engine, resp.into_inner());
                }
                Err(e) => {
                    // Prefer reporting a constraint violation over a conflict.
                    let better = match &failure {
                        None => true,
                        Some(f) => f.code == sqlstate::SERIALIZATION_FAILURE && e.code != f.code,
                    };
                    if better {
                        failure = Some(e);
                    }
                }
            }
        }
        if staged_only {
            // Engines that staged something (even if another refused) take
            // part in the commit. Every engine written to is rolled back by
            // ROLLBACK and ROLLBACK TO SAVEPOINT: an unanswered write may
            // have been staged all the same.
            session.staged_on(
                results.iter().map(|(e, r)| (*e, r.epoch)),
                engines.iter().copied(),
            );
            if let Some(e) = failure {
                return Err(e);
            }
        } else if let Some(e) = failure {
            if !one_phase {
                // Abort everywhere (an engine that failed to stage holds
                // nothing, but an abort of an unknown transaction is harmless
                // and covers a lost reply). In the background: the error
                // need not wait for an engine that stopped answering.
                let (cluster, engines) = (cluster.clone(), engines.clone());
                tokio::spawn(async move { crate::txn::abort(&cluster, txn, &engines).await });
            }
            return Err(e);
        } else if !one_phase {
            let refresh = refresh.then_some((read_ts, reads.as_slice()));
            let epochs: BTreeMap<u64, u64> = results.iter().map(|(e, r)| (*e, r.epoch)).collect();
            crate::txn::commit(cluster, txn, &epochs, Some(anchor), refresh).await?;
        }
        let mut by_op = HashMap::new();
        for (op, (engine, pos)) in self.locations.iter().enumerate() {
            if let Some(r) = results.get(engine).and_then(|r| r.results.get(*pos)) {
                by_op.insert(op, r.clone());
            }
        }
        Ok(by_op)
    }
}

/// Whether one log can commit `ops` atomically: every shard keeps one copy
/// (the engine's own log), or all are in one replicated shard (its group's).
fn one_log(ops: &[pb::WriteOp]) -> bool {
    let mut replicated = BTreeSet::new();
    let mut local = false;
    for op in ops {
        let copies = op
            .table
            .as_ref()
            .and_then(|t| t.replicas.get(op.shard as usize))
            .map_or(1, |r| r.engines.len());
        if copies > 1 {
            replicated.insert((op.table.as_ref().map_or(0, |t| t.id), op.shard));
        } else {
            local = true;
        }
    }
    replicated.is_empty() || (replicated.len() == 1 && !local)
}
