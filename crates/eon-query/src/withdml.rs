//! `WITH` queries attached to INSERT, UPDATE and DELETE.
//!
//! PostgreSQL lets a data-modifying statement start with `WITH`: `WITH t
//! AS (SELECT a FROM y) UPDATE y SET a = y.a - 10 FROM t WHERE t.a = y.a`.
//! The parser reads that as a query whose body is the statement; eon's
//! statements take their sources as queries and tables of their own, so
//! [`hoist`] moves the `WITH` into them before planning: every reference
//! to one of the `WITH` queries (in an INSERT's source, UPDATE … FROM,
//! DELETE … USING, subqueries in WHERE, SET or RETURNING) becomes a
//! derived table carrying the whole list, `(WITH … SELECT * FROM t) AS t`. What the statement
//! reads is the same; each reference computes the `WITH` query again,
//! which for read-only queries gives the same rows.
//!
//! A `WITH` query that itself modifies data (`WITH t AS (DELETE FROM y
//! RETURNING *) SELECT * FROM t`) runs before the statement it belongs to,
//! in the same transaction (a block of its own if the session is not in
//! one, so that all of it or none happens), in the order written. What it
//! returned becomes that `WITH` query's rows ([`returned_rows`]: a VALUES
//! list of typed literals) for the queries after it and the statement.
//! Unlike PostgreSQL, where all of them see one snapshot, each sees what
//! the ones before it wrote.

use std::ops::ControlFlow;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Cte, Ident, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableAlias, TableFactor,
    VisitMut, VisitorMut, With,
};

use crate::dml::ident;
use crate::errors::from_df;
use eon_common::{Error, Result};

/// Whether `query` has a `WITH` query that modifies data.
pub fn modifies_data(query: &Query) -> bool {
    query
        .with
        .as_ref()
        .is_some_and(|w| w.cte_tables.iter().any(modifies))
}

/// The data-modifying statement of a `WITH` query, its references to the
/// `WITH` queries before it (`earlier`) made derived tables.
pub fn statement_of(cte: &Cte, earlier: &With) -> Option<Statement> {
    let (SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s)) = cte.query.body.as_ref()
    else {
        return None;
    };
    let mut s = s.clone();
    if !earlier.cte_tables.is_empty() {
        let _ = s.visit(&mut References { with: earlier });
    }
    Some(s)
}

/// The statement a query with a `WITH` list becomes once every `WITH`
/// query is read-only: itself, or the INSERT/UPDATE/DELETE it holds with
/// the `WITH` moved in.
pub fn main_statement(query: Query) -> Statement {
    let mut statements = [Statement::Query(Box::new(query))];
    hoist(&mut statements);
    let [statement] = statements;
    statement
}

/// A query giving `batches`' rows: `SELECT * FROM (VALUES (CAST(v AS
/// type), …), …) AS t(columns)`, or, for no rows, the same columns of one
/// row filtered out.
pub fn returned_rows(schema: &Schema, batches: &[RecordBatch]) -> Result<Query> {
    use datafusion::logical_expr::{Expr, cast};
    use datafusion::sql::unparser::expr_to_sql;
    let cell = |v: ScalarValue, t: &DataType| -> Result<String> {
        let e = cast(Expr::Literal(v, None), t.clone());
        Ok(expr_to_sql(&e).map_err(from_df)?.to_string())
    };
    let mut rows = vec![];
    for b in batches {
        for r in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    cell(
                        ScalarValue::try_from_array(c, r).map_err(from_df)?,
                        f.data_type(),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(format!("({})", cells.join(", ")));
        }
    }
    let filter = if rows.is_empty() {
        let nulls = schema
            .fields()
            .iter()
            .map(|f| {
                cell(
                    ScalarValue::try_from(f.data_type()).map_err(from_df)?,
                    f.data_type(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push(format!("({})", nulls.join(", ")));
        " WHERE false"
    } else {
        ""
    };
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| crate::dml::quote(f.name()))
        .collect();
    let sql = format!(
        "SELECT * FROM (VALUES {}) AS __eon_returned({}){filter}",
        rows.join(", "),
        columns.join(", ")
    );
    match crate::sequences::parse_statements(&sql)
        .map_err(|e| Error::internal(format!("returned rows: {e}")))?
        .pop()
    {
        Some(Statement::Query(q)) => Ok(*q),
        _ => Err(Error::internal("returned rows: not a query")),
    }
}

/// Move the `WITH` of INSERT/UPDATE/DELETE statements into them (see the
/// module docs).
pub fn hoist(statements: &mut [Statement]) {
    for statement in statements.iter_mut() {
        let Statement::Query(q) = statement else {
            continue;
        };
        let Some(with) = &q.with else { continue };
        let inner = match q.body.as_ref() {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => s,
            _ => continue,
        };
        if with.cte_tables.iter().any(modifies) || q.order_by.is_some() || q.limit_clause.is_some()
        {
            continue;
        }
        let (with, mut inner) = (with.clone(), inner.clone());
        let _ = inner.visit(&mut References { with: &with });
        *statement = inner;
    }
}

/// Whether a `WITH` query modifies data.
fn modifies(cte: &Cte) -> bool {
    matches!(
        cte.query.body.as_ref(),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_)
    )
}

/// Turns table references to the `WITH` queries into derived tables.
struct References<'a> {
    with: &'a With,
}

impl References<'_> {
    fn names(&self, name: &ObjectName) -> Option<Ident> {
        let [ObjectNamePart::Identifier(id)] = name.0.as_slice() else {
            return None;
        };
        self.with
            .cte_tables
            .iter()
            .any(|c| ident(&c.alias.name) == ident(id))
            .then(|| id.clone())
    }
}

impl VisitorMut for References<'_> {
    type Break = ();

    fn post_visit_table_factor(&mut self, table: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name, alias, args, ..
        } = table
        else {
            return ControlFlow::Continue(());
        };
        if args.is_some() {
            return ControlFlow::Continue(());
        }
        let Some(id) = self.names(name) else {
            return ControlFlow::Continue(());
        };
        // SELECT * FROM id, with the WITH list as it is (already
        // rewritten with the statement).
        let Ok(mut parsed) = crate::sequences::parse_statements(&format!(
            "SELECT * FROM {}",
            crate::dml::quote(&ident(&id))
        )) else {
            return ControlFlow::Continue(());
        };
        let Some(Statement::Query(mut subquery)) = parsed.pop() else {
            return ControlFlow::Continue(());
        };
        subquery.with = Some(self.with.clone());
        *table = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias.clone().unwrap_or(TableAlias {
                explicit: true,
                name: id,
                columns: vec![],
                at: None,
            })),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}
