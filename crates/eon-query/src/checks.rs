//! CHECK constraints.
//!
//! A CHECK constraint is a boolean expression over one row of its table:
//! a row may be stored only if the expression is not false — NULL passes,
//! by SQL's three-valued logic, so `CHECK (price > 0)` lets a NULL price
//! in (NOT NULL is the constraint for that). PostgreSQL evaluates them in
//! the executor before each row is stored.
//!
//! eon keeps a table's constraints in the catalog as SQL text
//! (`Table.checks`: a name and an expression) and the query engine
//! evaluates them over each batch of rows an INSERT, UPDATE or COPY is
//! about to write — where NOT NULL and the foreign keys are checked — as
//! one DataFusion expression over the batch, so the data engines never
//! see a violating row. The expression is planned once when the
//! constraint is defined (unknown columns, subqueries, non-boolean
//! results are refused then) and again at each write from its text.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Visit, Visitor};
use eon_common::error::sqlstate;
use eon_common::{Error, Result, TableDef};
use eon_proto::v1 as pb;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::errors::from_df;
use crate::session::Session;

/// PostgreSQL's name for an unnamed CHECK constraint of `table`:
/// `<table>_<column>_check` when the expression reads one column,
/// `<table>_check` otherwise, numbered past the names in `taken`.
pub fn default_name(table: &str, columns: &[String], expr: &SqlExpr, taken: &[String]) -> String {
    let read = columns_read(expr, columns);
    let base = match read.as_slice() {
        [one] => format!("{table}_{one}_check"),
        _ => format!("{table}_check"),
    };
    let mut name = base.clone();
    let mut n = 0;
    while taken.contains(&name) {
        n += 1;
        name = format!("{base}{n}");
    }
    name
}

/// The name a new CHECK constraint of `table` gets: the `given` one
/// (42710 if `taken`), else [`default_name`].
pub fn name(
    table: &str,
    given: Option<String>,
    columns: &[String],
    expr: &SqlExpr,
    taken: &[String],
) -> Result<String> {
    match given {
        Some(n) if taken.contains(&n) => Err(Error::user(
            sqlstate::DUPLICATE_OBJECT,
            format!("constraint \"{n}\" for relation \"{table}\" already exists"),
        )),
        Some(n) => Ok(n),
        None => Ok(default_name(table, columns, expr, taken)),
    }
}

/// A stored CHECK expression parsed again (None: it no longer parses).
fn parse(expr: &str) -> Option<SqlExpr> {
    use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// The table's columns `expr` names, in the order of `columns`.
fn columns_read(expr: &SqlExpr, columns: &[String]) -> Vec<String> {
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &SqlExpr) -> ControlFlow<()> {
            match e {
                SqlExpr::Identifier(i) => self.0.push(crate::dml::ident(i)),
                SqlExpr::CompoundIdentifier(parts) => {
                    if let Some(last) = parts.last() {
                        self.0.push(crate::dml::ident(last))
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(vec![]);
    let _ = expr.visit(&mut names);
    columns
        .iter()
        .filter(|c| names.0.contains(c))
        .cloned()
        .collect()
}

/// A CHECK constraint named `name` on a table of `columns`, its
/// expression planned once to refuse what PostgreSQL refuses.
pub fn define(
    session: &Session,
    table: &str,
    columns: &[eon_common::schema::ColumnDef],
    name: String,
    expr: &SqlExpr,
) -> Result<pb::Check> {
    let mut subquery = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e: &SqlExpr| {
        if matches!(
            e,
            SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. }
        ) {
            subquery = true;
        }
        ControlFlow::<()>::Continue(())
    });
    if subquery {
        return Err(Error::unsupported(
            "cannot use subquery in check constraint",
        ));
    }
    let check = pb::Check {
        name,
        expr: expr.to_string(),
    };
    let fields: Vec<_> = columns
        .iter()
        .map(|c| c.ty.field(&c.name, c.nullable))
        .collect();
    let schema = datafusion::arrow::datatypes::Schema::new(fields);
    let df_schema = DFSchema::try_from_qualified_schema(table, &schema).map_err(from_df)?;
    let physical = plan(session.engine.base_state(), &check, &df_schema)?;
    let ty = physical.data_type(&schema).map_err(from_df)?;
    if !matches!(ty, DataType::Boolean | DataType::Null) {
        let name = eon_common::SqlType::from_arrow(&ty)
            .map(|t| t.to_string())
            .unwrap_or_else(|| ty.to_string());
        return Err(Error::user(
            sqlstate::DATATYPE_MISMATCH,
            format!("argument of CHECK must be type boolean, not type {name}"),
        ));
    }
    Ok(check)
}

fn plan(
    state: &SessionState,
    check: &pb::Check,
    df_schema: &DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    let expr = state
        .create_logical_expr(&check.expr, df_schema)
        .map_err(from_df)?;
    let aggregate = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::AggregateFunction(_) | Expr::WindowFunction(_)
            ))
        })
        .map_err(from_df)?;
    if aggregate {
        return Err(Error::user(
            sqlstate::GROUPING_ERROR,
            "aggregate functions are not allowed in check constraints",
        ));
    }
    state.create_physical_expr(expr, df_schema).map_err(from_df)
}

/// Refuse `rows` (a batch of `table`'s schema, about to be written) if a
/// row makes one of its CHECK constraints false: 23514, with the row.
pub fn enforce(session: &Session, table: &TableDef, rows: &RecordBatch) -> Result<()> {
    let checks = &table.proto().checks;
    if checks.is_empty() || rows.num_rows() == 0 {
        return Ok(());
    }
    let schema = table.arrow_schema();
    let df_schema = DFSchema::try_from_qualified_schema(&table.name, schema).map_err(from_df)?;
    for check in checks {
        let physical = plan(session.engine.base_state(), check, &df_schema)?;
        let values = physical
            .evaluate(rows)
            .and_then(|v| v.into_array(rows.num_rows()))
            .map_err(from_df)?;
        let values = match values.data_type() {
            DataType::Boolean => values,
            _ => datafusion::arrow::compute::cast(&values, &DataType::Boolean)?,
        };
        let values = values.as_boolean();
        if let Some(row) = (0..values.len()).find(|&i| values.is_valid(i) && !values.value(i)) {
            return Err(Error::user(
                sqlstate::CHECK_VIOLATION,
                format!(
                    "new row for relation \"{}\" violates check constraint \"{}\"",
                    table.name, check.name
                ),
            )
            .with_detail(format!(
                "Failing row contains ({}).",
                row_text(table, rows, row)?
            )));
        }
    }
    Ok(())
}

/// Refuse new rows of `table` (`columns`, one array per table column) with
/// NULL in a NOT NULL column: 23502, naming the first such row's column,
/// with the row — checked before the CHECK constraints, as PostgreSQL does.
pub fn enforce_not_null(
    table: &TableDef,
    columns: &[datafusion::arrow::array::ArrayRef],
) -> Result<()> {
    let mut first: Option<(usize, usize)> = None;
    for (c, (def, array)) in table.columns.iter().zip(columns).enumerate() {
        if def.nullable || array.null_count() == 0 {
            continue;
        }
        let row = (0..array.len()).find(|&r| array.is_null(r)).unwrap_or(0);
        if first.is_none_or(|(r, _)| row < r) {
            first = Some((row, c));
        }
    }
    let Some((row, c)) = first else {
        return Ok(());
    };
    let fields: Vec<_> = table
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let rows = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns.to_vec(),
    )?;
    Err(Error::user(
        sqlstate::NOT_NULL_VIOLATION,
        format!(
            "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
            table.columns[c].name, table.name
        ),
    )
    .with_detail(format!(
        "Failing row contains ({}).",
        row_text(table, &rows, row)?
    )))
}

/// Row `i` of `rows` as PostgreSQL's "Failing row contains (…)" shows
/// it: the visible columns' text, `null` for NULL.
pub(crate) fn row_text(table: &TableDef, rows: &RecordBatch, i: usize) -> Result<String> {
    let mut out = Vec::new();
    for (c, (field, array)) in table
        .columns
        .iter()
        .zip(rows.schema().fields().iter().zip(rows.columns()))
    {
        if c.hidden {
            continue;
        }
        out.push(if array.is_null(i) {
            "null".to_string()
        } else {
            crate::pgtypes::ColumnEncoder::new(field, array, false)?.text_value(i)
        });
    }
    Ok(out.join(", "))
}

/// `CHECK (<expr>)` as pg_get_constraintdef prints it.
pub fn definition(check: &pb::Check) -> String {
    let e = check.expr.trim();
    if e.starts_with('(') && e.ends_with(')') {
        format!("CHECK ({e})")
    } else {
        format!("CHECK (({e}))")
    }
}

/// The columns of `table` that `check` reads (pg_constraint.conkey).
pub fn columns(table: &TableDef, check: &pb::Check) -> Vec<usize> {
    let Some(expr) = parse(&check.expr) else {
        return vec![];
    };
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let read = columns_read(&expr, &names);
    (0..table.columns.len())
        .filter(|&i| !table.columns[i].hidden && read.contains(&table.columns[i].name))
        .collect()
}

/// `expr` with column `old` called `new` (RENAME COLUMN).
pub fn rename_column(expr: &str, old: &str, new: &str) -> String {
    use datafusion::sql::sqlparser::ast::{Ident, visit_expressions_mut};
    let Some(mut e) = parse(expr) else {
        return expr.to_string();
    };
    let _ = visit_expressions_mut(&mut e, |e: &mut SqlExpr| {
        let id = match e {
            SqlExpr::Identifier(id) => Some(id),
            SqlExpr::CompoundIdentifier(parts) => parts.last_mut(),
            _ => None,
        };
        if let Some(id) = id.filter(|id| crate::dml::ident(id) == old) {
            let plain = new.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && new
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            *id = if plain {
                Ident::new(new)
            } else {
                Ident::with_quote('"', new)
            };
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}
