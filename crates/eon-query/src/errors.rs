//! DataFusion errors → eon errors with PostgreSQL SQLSTATEs and messages.
//!
//! This is the one place where the planner's and executor's failures get
//! the codes a PostgreSQL client expects (42P01 for a missing table, 42703
//! for a missing column, 22012 for division by zero, ...).

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::sql::sqlparser::ast::{
    ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::tokenizer::Span;
use eon_common::Error;
use eon_common::error::{Cursor, sqlstate};
use std::ops::ControlFlow;

/// `e` with its error cursor at `span` (sqlparser's), when the span is
/// known: a node eon built itself has an empty one.
pub fn at_span(e: Error, span: Option<Span>) -> Error {
    match span.filter(|s| s.start.line > 0) {
        Some(s) => e.with_cursor(Cursor::LineColumn(s.start.line, s.start.column)),
        None => e,
    }
}

/// What the planner's errors need from the statement they came from and do
/// not say themselves, gathered before planning consumes it: where an
/// aggregate in WHERE is, and which relations have column aliases.
pub struct Places {
    where_aggregate: Option<Span>,
    /// Each column alias list: what PostgreSQL calls the relation
    /// (`table`, `WITH query`) and its name, how many names the list has,
    /// and where to point.
    aliases: Vec<(&'static str, String, usize, Option<Span>)>,
    /// Each FROM-clause entry: the name it is referred to by (its alias,
    /// else the table's name), and the table's name, as written and as
    /// compared, when it is a table. (Its columns are looked up only for
    /// an error.)
    entries: Vec<(String, Option<(ObjectName, String)>)>,
}

impl Places {
    pub fn of(statement: &Statement) -> Places {
        struct Find(Places);
        impl Visitor for Find {
            type Break = ();
            fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
                if let SetExpr::Select(select) = q.body.as_ref()
                    && self.0.where_aggregate.is_none()
                {
                    self.0.where_aggregate = select
                        .selection
                        .as_ref()
                        .and_then(crate::pgfuncs::first_aggregate);
                }
                for cte in q.with.iter().flat_map(|w| &w.cte_tables) {
                    let name = &cte.alias.name;
                    self.0.aliases.push((
                        "WITH query",
                        crate::dml::ident(name),
                        cte.alias.columns.len(),
                        Some(name.span),
                    ));
                }
                ControlFlow::Continue(())
            }
            fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
                let (kind, alias) = match t {
                    TableFactor::NestedJoin { alias, .. } => ("join expression", alias),
                    TableFactor::Table { alias, .. } | TableFactor::Derived { alias, .. } => {
                        ("table", alias)
                    }
                    TableFactor::Function { alias, .. } | TableFactor::UNNEST { alias, .. } => {
                        ("function", alias)
                    }
                    _ => return ControlFlow::Continue(()),
                };
                let table = match t {
                    TableFactor::Table { name, .. } => name
                        .0
                        .last()
                        .and_then(|p| p.as_ident())
                        .map(crate::dml::ident)
                        // The target of an UPDATE or DELETE, read for its rows.
                        .map(|n| match n.strip_suffix(crate::provider::DML_SUFFIX) {
                            Some(base) => (name.clone(), base.to_string()),
                            None => (name.clone(), n),
                        }),
                    _ => None,
                };
                match (alias, table) {
                    (Some(a), table) => self.0.entries.push((crate::dml::ident(&a.name), table)),
                    (None, Some(table)) => self.0.entries.push((table.1.clone(), Some(table))),
                    (None, None) => {}
                }
                if let Some(a) = alias {
                    self.0
                        .aliases
                        .push((kind, crate::dml::ident(&a.name), a.columns.len(), None));
                }
                ControlFlow::Continue(())
            }
        }
        let mut find = Find(Places {
            where_aggregate: None,
            aliases: Vec::new(),
            entries: Vec::new(),
        });
        let _ = statement.visit(&mut find);
        find.0
    }

    /// The planner's error `e` in PostgreSQL's words and at its place,
    /// where its message lacks them. `columns` names a table's columns
    /// (None for a name that is not a table of eon's catalog).
    pub fn explain(
        &self,
        e: DataFusionError,
        columns: &dyn Fn(&ObjectName) -> Option<Vec<String>>,
    ) -> Error {
        if let Some(e) = self.bad_reference(e.find_root(), columns) {
            return e;
        }
        let e = from_df(e);
        if e.position.is_some() || e.cursor.is_some() {
            return e;
        }
        if e.message == "aggregate functions are not allowed in WHERE" {
            return at_span(e, self.where_aggregate);
        }
        // DataFusion: "Source table contains 1 columns but only 2 names
        // given as column alias".
        let counts = e
            .message
            .strip_prefix("Source table contains ")
            .and_then(|m| m.strip_suffix(" names given as column alias"))
            .and_then(|m| m.split_once(" columns but only "))
            .and_then(|(n, m)| Some((n.parse::<usize>().ok()?, m.parse::<usize>().ok()?)));
        if let Some((available, specified)) = counts
            && let Some((kind, name, _, at)) = self.aliases.iter().find(|a| a.2 == specified)
        {
            return at_span(
                Error::user(
                    sqlstate::INVALID_COLUMN_REFERENCE,
                    format!(
                        "{kind} \"{name}\" has {available} columns available but {specified} columns specified"
                    ),
                ),
                *at,
            );
        }
        e
    }

    /// A column qualified by a relation that is not in scope where it is
    /// written (`t.c` when `t` is aliased, or in another part of the
    /// query, or nowhere), refused as PostgreSQL refuses it
    /// (`errorMissingRTE`) rather than as a missing column.
    fn bad_reference(
        &self,
        root: &DataFusionError,
        columns: &dyn Fn(&ObjectName) -> Option<Vec<String>>,
    ) -> Option<Error> {
        let DataFusionError::SchemaError(s, _) = root else {
            return None;
        };
        let SchemaError::FieldNotFound {
            field,
            valid_fields,
        } = s.as_ref()
        else {
            return None;
        };
        let r = field.relation.as_ref()?;
        if r.schema().is_some() {
            return None;
        }
        let r = r.table();
        let in_scope = |name: &str| {
            valid_fields
                .iter()
                .any(|f| f.relation.as_ref().is_some_and(|q| q.table() == name))
        };
        if in_scope(r) {
            return None;
        }
        // The entry the name could mean: a table of that name under an
        // alias, else an entry of that name elsewhere in the statement.
        let aliased = self
            .entries
            .iter()
            .find(|(refname, table)| table.as_ref().is_some_and(|t| t.1 == r) && refname != r);
        let named = self.entries.iter().find(|(refname, _)| refname == r);
        // A table of that name without the column: most likely an outer
        // query's, named from a subquery (whose error lists only the
        // subquery's columns) with a mistaken column — a missing column.
        if aliased.is_none()
            && let Some((_, Some((name, _)))) = named
            && columns(name).is_some_and(|c| !c.contains(&field.name))
        {
            return None;
        }
        let e = match (aliased, named) {
            (Some((alias, _)), _) => Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("invalid reference to FROM-clause entry for table \"{r}\""),
            )
            .with_hint(if in_scope(alias) {
                format!("Perhaps you meant to reference the table alias \"{alias}\".")
            } else {
                format!(
                    "There is an entry for table \"{alias}\", but it cannot be referenced from this part of the query."
                )
            }),
            (None, Some(_)) => Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("invalid reference to FROM-clause entry for table \"{r}\""),
            )
            .with_hint(format!(
                "There is an entry for table \"{r}\", but it cannot be referenced from this part of the query."
            )),
            (None, None) => Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("missing FROM-clause entry for table \"{r}\""),
            ),
        };
        Some(e.with_cursor(Cursor::After(vec![format!("{r}.{}", field.name)])))
    }
}

pub fn from_df(e: DataFusionError) -> Error {
    let root = e.find_root();
    match root {
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(err) => err.clone(),
            None => match inner.downcast_ref::<ArrowError>() {
                Some(a) => from_arrow(a),
                None => Error::internal(inner.to_string()),
            },
        },
        DataFusionError::ArrowError(a, _) => from_arrow(a),
        DataFusionError::SQL(p, _) => Error::syntax(clean(&p.to_string())),
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => {
                let alias = field.relation.as_ref().map(|r| r.table());
                let e = Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    match alias {
                        Some(r) => format!("column {r}.{} does not exist", field.name),
                        None => format!("column \"{}\" does not exist", field.name),
                    },
                );
                let valid = valid_fields
                    .iter()
                    .filter_map(|c| Some((c.relation.as_ref()?.table(), c.name.as_str())));
                match closest_columns(alias, &field.name, valid) {
                    Some(hint) => e.with_hint(hint),
                    None => e,
                }
            }
            SchemaError::AmbiguousReference { field } => Error::user(
                sqlstate::AMBIGUOUS_COLUMN,
                format!("column reference \"{}\" is ambiguous", field.name),
            ),
            other => Error::user(sqlstate::DUPLICATE_COLUMN, clean(&other.to_string())),
        },
        DataFusionError::Plan(m) => plan_error(m),
        DataFusionError::NotImplemented(m) => Error::unsupported(clean(m)),
        DataFusionError::Execution(m) => exec_error(m),
        DataFusionError::ResourcesExhausted(m) => Error::new(
            eon_common::ErrorKind::Unavailable,
            eon_common::error::sqlstate::OUT_OF_MEMORY,
            format!("out of memory: {}", clean(m)),
        )
        .with_hint("The statement's operators may hold eon.query_memory in each process; raise it with SET eon.query_memory."),
        other => Error::internal(clean(&other.to_string())),
    }
}

/// PostgreSQL's hint for a column that does not exist
/// (`errorMissingColumn`): the columns in scope (relation, name) closest to
/// the name written, by edit distance — at most 3, and at most half the
/// name's length, a relation other than the one written (`alias`) costing
/// its own distance from it. One closest column is named, or two that tie;
/// more than two tie, and none is.
fn closest_columns<'a>(
    alias: Option<&str>,
    name: &str,
    columns: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    use datafusion::common::utils::datafusion_strsim::levenshtein;
    const MAX_DISTANCE: usize = 3;
    let mut distance = MAX_DISTANCE + 1;
    let mut best: Vec<(&str, &str)> = Vec::new();
    let mut crowded = false;
    for (relation, column) in columns {
        let penalty = alias.map_or(0, |a| levenshtein(a, relation));
        let d = levenshtein(column, name);
        if penalty > distance || d > name.chars().count() / 2 {
            continue;
        }
        let d = d + penalty;
        if d < distance {
            distance = d;
            best = vec![(relation, column)];
            crowded = false;
        } else if d == distance && !crowded && !best.contains(&(relation, column)) {
            best.push((relation, column));
            if best.len() > 2 {
                best.clear();
                crowded = true;
            }
        }
    }
    match best.as_slice() {
        [(r, c)] => Some(format!(
            "Perhaps you meant to reference the column \"{r}.{c}\"."
        )),
        [(r1, c1), (r2, c2)] => Some(format!(
            "Perhaps you meant to reference the column \"{r1}.{c1}\" or the column \"{r2}.{c2}\"."
        )),
        _ => None,
    }
}

fn from_arrow(a: &ArrowError) -> Error {
    match a {
        ArrowError::DivideByZero => Error::user(sqlstate::DIVISION_BY_ZERO, "division by zero"),
        ArrowError::ArithmeticOverflow(m) => Error::user(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            integer_overflow(m).unwrap_or_else(|| format!("value out of range: {m}")),
        ),
        ArrowError::CastError(m)
        | ArrowError::ParseError(m)
        | ArrowError::InvalidArgumentError(m) => {
            if let Some(e) = cast_error(m).or_else(|| reworded(m)) {
                e
            } else if m.contains("overflow")
                || m.contains("too large")
                || m.contains("out of range")
            {
                Error::user(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, clean(m))
            } else {
                Error::user(sqlstate::INVALID_TEXT_REPRESENTATION, clean(m))
            }
        }
        ArrowError::ComputeError(m) => exec_error(m),
        other => Error::internal(other.to_string()),
    }
}

/// PostgreSQL's message for an integer overflow, from Arrow's "Overflow
/// happened on: A + B": the exact result tells the type that overflowed —
/// beyond 64 bits a bigint, beyond 32 an integer, else a smallint.
fn integer_overflow(m: &str) -> Option<String> {
    let expr = m.strip_prefix("Overflow happened on: ")?;
    let exact = if let Some(negated) = expr.strip_prefix("- ") {
        -negated.trim().parse::<i128>().ok()?
    } else {
        let (op, (a, b)) = [" + ", " - ", " * ", " / "]
            .iter()
            .find_map(|op| expr.split_once(op).map(|parts| (*op, parts)))?;
        let (a, b): (i128, i128) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        match op {
            " + " => a + b,
            " - " => a - b,
            " / " => a.checked_div(b)?,
            _ => a.checked_mul(b)?,
        }
    };
    let ty = if i64::try_from(exact).is_err() {
        "bigint"
    } else if i32::try_from(exact).is_err() {
        "integer"
    } else {
        "smallint"
    };
    Some(format!("{ty} out of range"))
}

/// PostgreSQL's name of an Arrow type, in cast errors.
pub(crate) fn pg_type_name(arrow: &str) -> Option<&'static str> {
    Some(match arrow {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Date32" => "date",
        a if a.starts_with("Decimal") => "numeric",
        a if a.starts_with("Timestamp") => "timestamp without time zone",
        _ => return None,
    })
}

/// Arrow's cast failures worded as PostgreSQL's input and range errors:
/// "Cannot cast string 'x' to value of Int64 type" is bad input (or, for
/// an integer too long for the type, out of range), "Can't cast value
/// 4567890123456789 to type Int32" an integer out of range.
fn cast_error(m: &str) -> Option<Error> {
    // (Arrow says "value" rather than "string" for text → boolean.)
    if let Some(rest) = m
        .strip_prefix("Cannot cast string '")
        .or_else(|| m.strip_prefix("Cannot cast value '"))
    {
        let (value, ty) = rest.rsplit_once("' to value of ")?;
        let ty = pg_type_name(ty.strip_suffix(" type")?)?;
        let digits = value.trim().trim_start_matches(['+', '-']);
        let integer = matches!(ty, "smallint" | "integer" | "bigint");
        return Some(
            if integer && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                Error::user(
                    sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!("value \"{value}\" is out of range for type {ty}"),
                )
            } else {
                Error::user(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("invalid input syntax for type {ty}: \"{value}\""),
                )
            },
        );
    }
    let rest = m.strip_prefix("Can't cast value ")?;
    let (_, ty) = rest.rsplit_once(" to type ")?;
    let ty = pg_type_name(ty)?;
    matches!(ty, "smallint" | "integer" | "bigint").then(|| {
        Error::user(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{ty} out of range"),
        )
    })
}

/// generate_series with a step of zero.
fn zero_step(lower: &str) -> Option<Error> {
    (lower == "step cannot be zero" || lower == "step interval cannot be zero").then(|| {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            "step size cannot equal zero",
        )
    })
}

/// DataFusion's messages for what PostgreSQL also refuses, in
/// PostgreSQL's words (and SQLSTATE), with the error cursor where the
/// message tells where.
fn reworded(msg: &str) -> Option<Error> {
    let after = |pieces: &[&str]| Cursor::After(pieces.iter().map(|p| p.to_string()).collect());
    if let Some(rest) = msg.strip_prefix("Aggregate function calls cannot be nested: '") {
        // "… 'min(t.x)' is nested inside 'max(min(t.x))'"; an outer
        // query's aggregate shows as min(outer_ref(t.x)).
        let (inner, outer) = rest.split_once("' is nested inside '")?;
        let call = |e: &str| format!("{}(", e.split('(').next().unwrap_or(e));
        let (inner_call, outer_call) = (call(inner), call(outer));
        let in_filter = !inner.contains("outer_ref(")
            && outer
                .split_once(" FILTER (WHERE ")
                .is_some_and(|(_, filter)| filter.contains(inner));
        return Some(if in_filter {
            Error::user(
                sqlstate::GROUPING_ERROR,
                "aggregate functions are not allowed in FILTER",
            )
            .with_cursor(after(&[&outer_call, "filter", &inner_call]))
        } else {
            Error::user(
                sqlstate::GROUPING_ERROR,
                "aggregate function calls cannot be nested",
            )
            .with_cursor(after(&[&outer_call, &inner_call]))
        });
    }
    if msg.starts_with("Aggregate functions are not allowed in the WHERE clause") {
        return Some(Error::user(
            sqlstate::GROUPING_ERROR,
            "aggregate functions are not allowed in WHERE",
        ));
    }
    if msg == "In an aggregate with DISTINCT, ORDER BY expressions must appear in argument list" {
        return Some(Error::user(
            sqlstate::INVALID_COLUMN_REFERENCE,
            "in an aggregate with DISTINCT, ORDER BY expressions must appear in argument list",
        ));
    }
    if msg == "RANGE requires exactly one ORDER BY column" {
        return Some(
            Error::user(
                sqlstate::WINDOWING_ERROR,
                "RANGE with offset PRECEDING/FOLLOWING requires exactly one ORDER BY column",
            )
            .with_cursor(after(&["over", "("])),
        );
    }
    if msg.starts_with("ORDER BY and WITHIN GROUP clauses cannot be used together") {
        return Some(
            Error::user(
                sqlstate::SYNTAX_ERROR,
                "cannot use multiple ORDER BY clauses with WITHIN GROUP",
            )
            .with_cursor(after(&["order"])),
        );
    }
    if let Some(rest) = msg.strip_prefix("value of ") {
        // Arrow's decimal → integer cast: "value of 2147483648 is out of
        // range Int32".
        let (_, ty) = rest.split_once(" is out of range ")?;
        let ty = pg_type_name(ty)?;
        return Some(Error::user(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{ty} out of range"),
        ));
    }
    None
}

fn plan_error(m: &str) -> Error {
    let msg = clean(m);
    if let Some(e) = reworded(&msg) {
        return e;
    }
    if let Some(e) = zero_step(&msg.to_ascii_lowercase()) {
        return e;
    }
    if let Some(rest) = msg.strip_prefix("table '") {
        let name = rest.split('\'').next().unwrap_or(rest);
        let short = name.rsplit('.').next().unwrap_or(name);
        return Error::user(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{short}\" does not exist"),
        );
    }
    if let Some(rest) = msg.strip_prefix("Invalid function '") {
        // DataFusion: "Invalid function 'foo'.\nDid you mean 'floor'?";
        // PostgreSQL names the function (with its argument types, which
        // this message does not carry) and hints at casts.
        let name = rest.split('\'').next().unwrap_or(rest);
        return Error::user(
            sqlstate::UNDEFINED_FUNCTION,
            format!("function {name} does not exist"),
        )
        .with_hint(
            "No function matches the given name and argument types. \
             You might need to add explicit type casts.",
        );
    }
    if msg.contains("No function matches") || msg.contains("function") && msg.contains("not found")
    {
        return Error::user(sqlstate::UNDEFINED_FUNCTION, msg);
    }
    if msg.contains("non-aggregate") || msg.contains("must appear in the GROUP BY") {
        return Error::user(sqlstate::GROUPING_ERROR, msg);
    }
    if msg.contains("Cannot infer common")
        || msg.contains("Cannot coerce")
        || msg.contains("There isn't a common type")
    {
        return Error::user(sqlstate::DATATYPE_MISMATCH, msg);
    }
    if msg.contains("Unsupported") || msg.contains("not supported") {
        return Error::unsupported(msg);
    }
    if msg.contains("No field named") || msg.contains("not found in") {
        return Error::user(sqlstate::UNDEFINED_COLUMN, msg);
    }
    Error::user(sqlstate::SYNTAX_ERROR, msg)
}

fn exec_error(m: &str) -> Error {
    let msg = clean(m);
    if let Some(e) = reworded(&msg) {
        return e;
    }
    let lower = msg.to_ascii_lowercase();
    // Integer overflow in DataFusion's abs, gcd and lcm (gcd and lcm
    // compute in bigint), as PostgreSQL words it.
    let integer_overflow = [
        ("int16array overflow on abs", "smallint"),
        ("int32array overflow on abs", "integer"),
        ("int64array overflow on abs", "bigint"),
        ("signed integer overflow in gcd", "bigint"),
        ("signed integer overflow in lcm", "bigint"),
    ]
    .into_iter()
    .find(|(m, _)| lower.starts_with(m));
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        Error::user(sqlstate::DIVISION_BY_ZERO, "division by zero")
    } else if let Some((_, ty)) = integer_overflow {
        Error::user(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{ty} out of range"),
        )
    } else if let Some(e) = zero_step(&lower) {
        e
    } else if lower.contains("overflow") || lower.contains("out of range") {
        Error::user(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, msg)
    } else if lower.contains("cast") || lower.contains("parse") || lower.contains("invalid") {
        Error::user(sqlstate::INVALID_TEXT_REPRESENTATION, msg)
    } else if lower.contains("more than one row") {
        Error::user(
            sqlstate::CARDINALITY_VIOLATION,
            "more than one row returned by a subquery used as an expression",
        )
    } else {
        Error::user(sqlstate::DATA_EXCEPTION, msg)
    }
}

/// DataFusion's messages carry prefixes like "Error during planning: " and
/// backtraces; keep the part a user can act on.
fn clean(m: &str) -> String {
    let mut s = m.trim();
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "Arrow error: ",
        "Schema error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "ParserError(\"",
        "Cast error: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    let s = s.split("\n\nbacktrace").next().unwrap_or(s);
    s.trim_end_matches("\")").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_messages_become_postgres_errors() {
        let e = from_df(DataFusionError::Plan(
            "table 'eon.public.nope' not found".into(),
        ));
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42P01", "relation \"nope\" does not exist")
        );
        let e = from_df(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(e.code, "22012");
        let inner = Error::unique_violation("dup");
        let e = from_df(DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::External(Box::new(inner.clone()))),
        ));
        assert_eq!(e, inner);
    }

    #[test]
    fn missing_columns_hint_at_the_closest_ones() {
        let cols = [
            ("t1", "a"),
            ("t1", "unique1"),
            ("t2", "unique1"),
            ("t3", "x"),
        ];
        let hint = |alias, name| closest_columns(alias, name, cols.iter().copied());
        assert_eq!(
            hint(Some("t1"), "x").as_deref(),
            Some("Perhaps you meant to reference the column \"t3.x\".")
        );
        assert_eq!(
            hint(Some("t2"), "uunique1").as_deref(),
            Some("Perhaps you meant to reference the column \"t2.unique1\".")
        );
        assert_eq!(
            hint(None, "uunique1").as_deref(),
            Some(
                "Perhaps you meant to reference the column \"t1.unique1\" or the column \"t2.unique1\"."
            )
        );
        assert_eq!(hint(None, "zzzzzz"), None);
    }

    #[test]
    fn nested_aggregates_are_worded_and_placed_as_postgresql_does() {
        let nested = |m: &str| from_df(DataFusionError::Plan(m.into()));
        let sql = "select max(unique1) filter (where sum(ten) > 0) from tenk1";
        let e = nested(
            "Aggregate function calls cannot be nested: 'sum(tenk1.ten)' is nested inside \
             'max(tenk1.unique1) FILTER (WHERE sum(tenk1.ten) > Int64(0))'",
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42803", "aggregate functions are not allowed in FILTER")
        );
        assert_eq!(e.cursor.unwrap().resolve(sql), Some(35));
        let e = nested(
            "Aggregate function calls cannot be nested: 'sum(outer_ref(tenk1.ten))' is nested \
             inside 'max(outer_ref(tenk1.unique1)) FILTER (WHERE sum(outer_ref(tenk1.ten)) > Int64(0))'",
        );
        assert_eq!(e.message, "aggregate function calls cannot be nested");
        let e = nested("value of 2147483648 is out of range Int32");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("22003", "integer out of range")
        );
    }
}
