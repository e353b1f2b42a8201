//! Result column names as PostgreSQL gives them, and duplicate names.
//!
//! PostgreSQL names an unaliased result column after its expression the way
//! `FigureColname` does: a column reference by its column, a function call
//! by its function (`count`), a cast by what it casts or its type (`int4`),
//! `CASE` as `case`, and anything else `?column?`. Two result columns may
//! share a name (`SELECT a AS x, b AS x`). DataFusion names columns after
//! their expression text and refuses duplicates, so before planning the
//! query's select lists get unique internal aliases where names would
//! collide, and after planning the result columns get PostgreSQL's names.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Query,
    Select, SelectItem, SetExpr, Value, VisitMut, VisitorMut,
};
use futures::StreamExt;

use crate::dml::ident;
use eon_common::SqlType;

/// PostgreSQL's name for a result column computed by `e`.
pub fn pg_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(ident(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident),
        Expr::Function(f) => {
            let name = f.name.0.last().and_then(|p| p.as_ident()).map(ident)?;
            let name = crate::windows::unmarked(&name).to_string();
            // Calls made by pgfuncs::rewrite are named as what they
            // replace: a cast, or a scalar subquery's value.
            let arg = || match &f.args {
                FunctionArguments::List(l) => match l.args.first() {
                    Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) => pg_name(arg),
                    _ => None,
                },
                _ => None,
            };
            match name.strip_prefix("eon_cast_") {
                // A cast to an enum type: its second argument is the type.
                Some("enum") => arg().or_else(|| match &f.args {
                    FunctionArguments::List(l) => match l.args.get(1) {
                        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => {
                            let Value::SingleQuotedString(s) = &v.value else {
                                return None;
                            };
                            SqlType::parse(s)
                                .and_then(|t| t.enum_def())
                                .map(|d| d.name.clone())
                        }
                        _ => None,
                    },
                    _ => None,
                }),
                Some(ty) => arg().or_else(|| Some(ty.to_string())),
                None if name == "eon_single" => arg(),
                None if name == "eon_array" => Some("array".into()),
                None if name == crate::extract::EXTRACT => Some("extract".into()),
                // An operator's column has no name of its own.
                None if crate::jsonops::is_operator(&name) => None,
                None => Some(name),
            }
        }
        // A cast names its column after what it casts, unless that is a
        // constant or another cast (PostgreSQL's FigureColname gives those
        // a weaker name): `'1'::numeric::float8` is float8.
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            Expr::Cast { .. } | Expr::TypedString(_) => Some(type_name(data_type)),
            Expr::Function(f) if f.name.to_string() == crate::pgfuncs::ARRAY_LITERAL => {
                Some(type_name(data_type))
            }
            _ => pg_name(expr).or_else(|| Some(type_name(data_type))),
        },
        Expr::Nested(inner) => pg_name(inner),
        // `a[1]` is named after `a`, `(r).f` after `f`.
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(f))) => Some(ident(f)),
            _ => pg_name(root),
        },
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) => s.projection.first().and_then(item_name),
            _ => None,
        },
        Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => Some("bool".into()),
        Expr::TypedString(t) => Some(type_name(&t.data_type)),
        Expr::Array(_) => Some("array".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        _ => None,
    }
}

/// PostgreSQL's internal type name, which names a column computed by a
/// cast of a constant (`SELECT 1::int` is `int4`).
fn type_name(t: &DataType) -> String {
    use datafusion::sql::sqlparser::ast::ArrayElemTypeDef;
    if let DataType::Array(
        ArrayElemTypeDef::SquareBracket(element, _) | ArrayElemTypeDef::AngleBracket(element),
    ) = t
    {
        // `'{1}'::int[]` is named after its element type.
        return type_name(element);
    }
    match crate::ddl::sql_type(t) {
        Ok(ty) => match ty {
            eon_common::SqlType::Numeric { .. } => "numeric".into(),
            eon_common::SqlType::Varchar { .. } => "varchar".into(),
            eon_common::SqlType::Char { .. } => "bpchar".into(),
            other => other.short_name().into(),
        },
        Err(_) => t.to_string().to_lowercase(),
    }
}

fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(e) => pg_name(e),
        SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
        _ => None,
    }
}

/// Give colliding select items unique internal aliases (in every SELECT of
/// the query body), name the columns of the queries nested in it as
/// PostgreSQL would (see [`dedupe`]), and return the names PostgreSQL would
/// give the result columns — or None when the select list has a wildcard
/// (its columns keep DataFusion's names, which are their column names
/// anyway, and [`rename`] reads the others from their marked aliases).
pub fn prepare(query: &mut Query) -> Option<Vec<String>> {
    let names = leftmost(&query.body).and_then(|s| {
        s.projection
            .iter()
            .map(|item| match item {
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => None,
                other => Some(item_name(other).unwrap_or_else(|| "?column?".into())),
            })
            .collect::<Option<Vec<String>>>()
    });
    dedupe_body(&mut query.body, false);
    // The queries nested in this one: derived tables, CTEs, subqueries.
    struct Nested {
        top: bool,
    }
    impl VisitorMut for Nested {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if !std::mem::take(&mut self.top) {
                dedupe_body(&mut q.body, true);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Nested { top: true });
    names
}

fn leftmost(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::SetOperation { left, .. } => leftmost(left),
        SetExpr::Query(q) => leftmost(&q.body),
        _ => None,
    }
}

fn dedupe_body(body: &mut SetExpr, nested: bool) {
    match body {
        SetExpr::Select(s) => dedupe(s, nested),
        SetExpr::SetOperation { left, right, .. } => {
            dedupe_body(left, nested);
            dedupe_body(right, nested);
        }
        SetExpr::Query(q) => dedupe_body(&mut q.body, nested),
        _ => {}
    }
}

/// The prefix of the internal aliases [`dedupe`] gives; the alias goes on
/// with the item's index and, after a colon, PostgreSQL's name for it.
const MARK: &str = "__eon_col_";

/// Alias the items whose DataFusion names would collide, and the computed
/// ones DataFusion would name after their text: `__eon_col_<i>:<name>`,
/// from which [`rename`] takes PostgreSQL's name. In a `nested` query
/// (whose columns the query around it reads by name, as in `SELECT * FROM
/// (SELECT max(x) FROM t) s`), a computed item whose PostgreSQL name is
/// unique in the list is aliased with that name instead, so `s.max` is a
/// column as in PostgreSQL.
fn dedupe(select: &mut Select, nested: bool) {
    let names: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. } => {
                Some(item_name(item).unwrap_or_else(|| "?column?".into()))
            }
            _ => None,
        })
        .collect();
    let count = |n: &str| names.iter().flatten().filter(|m| *m == n).count();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let key = match item {
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => Some(ident(id)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => p.last().map(ident),
            // Other unaliased expressions are named by their text, which
            // differs from DataFusion's (all subqueries are "(<subquery>)"):
            // give them unique names.
            SelectItem::UnnamedExpr(_) => None,
            SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
            _ => continue,
        };
        let unique = match key {
            Some(k) => seen.insert(k),
            None => false,
        };
        if !unique {
            let expr = match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                _ => continue,
            };
            let name = names[i].clone().unwrap_or_default();
            let alias = if nested && count(&name) == 1 && seen.insert(name.clone()) {
                name
            } else {
                format!("{MARK}{i}:{name}")
            };
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: Ident::with_quote('"', alias),
            };
        }
    }
}

/// The schema with PostgreSQL's column names: `names` by position if they
/// are given (and fit), else each marked alias's name (see [`dedupe`]).
pub fn rename(schema: &SchemaRef, names: Option<&[String]>) -> SchemaRef {
    let fields: Vec<Field> = match names {
        Some(names) if names.len() == schema.fields().len() => schema
            .fields()
            .iter()
            .zip(names)
            .map(|(f, n)| f.as_ref().clone().with_name(n.clone()))
            .collect(),
        _ if !schema.fields().iter().any(|f| f.name().starts_with(MARK)) => {
            return schema.clone();
        }
        _ => schema
            .fields()
            .iter()
            .map(
                |f| match f.name().strip_prefix(MARK).and_then(|m| m.split_once(':')) {
                    Some((_, name)) => f.as_ref().clone().with_name(name),
                    None => f.as_ref().clone(),
                },
            )
            .collect(),
    };
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The stream with PostgreSQL's column names (itself when [`rename`] has
/// nothing to change).
pub fn rename_stream(
    stream: SendableRecordBatchStream,
    names: Option<&[String]>,
) -> SendableRecordBatchStream {
    let before = stream.schema();
    let schema = rename(&before, names);
    if Arc::ptr_eq(&schema, &before) {
        return stream;
    }
    let out = schema.clone();
    let batches = stream.map(move |b| {
        let b = b?;
        Ok(datafusion::arrow::array::RecordBatch::try_new_with_options(
            out.clone(),
            b.columns().to_vec(),
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(b.num_rows())),
        )?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn names(sql: &str) -> (Option<Vec<String>>, String) {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let Statement::Query(q) = &mut s else {
            panic!()
        };
        let n = prepare(q);
        (n, s.to_string())
    }

    #[test]
    fn postgres_names_and_unique_aliases() {
        let (n, sql) = names(
            "SELECT a, t.b, count(*), a + 1, CAST(c AS int), 1::int, CASE WHEN a THEN 1 END, a AS x, b AS x FROM t",
        );
        assert_eq!(
            n.unwrap(),
            vec!["a", "b", "count", "?column?", "c", "int4", "case", "x", "x"]
        );
        assert!(sql.contains("b AS \"__eon_col_8:x\""), "{sql}");
        assert!(sql.contains("count(*) AS \"__eon_col_2:count\""), "{sql}");
        let (n, _) = names("SELECT *, a FROM t");
        assert!(n.is_none());
    }

    #[test]
    fn nested_queries_name_their_columns_as_postgres_does() {
        let (n, sql) = names(
            "SELECT * FROM (SELECT max(a), a + 1, b + 1, t.c, u.c, count(*), count(*) FROM t, u) s",
        );
        assert!(n.is_none());
        assert!(sql.contains("max(a) AS \"max\","), "{sql}");
        // Names PostgreSQL would repeat keep marked aliases.
        assert!(sql.contains("a + 1 AS \"__eon_col_1:?column?\""), "{sql}");
        assert!(sql.contains("u.c AS \"__eon_col_4:c\""), "{sql}");
        assert!(sql.contains("count(*) AS \"__eon_col_6:count\""), "{sql}");
        let schema = Arc::new(Schema::new(vec![
            Field::new("max", datafusion::arrow::datatypes::DataType::Int64, true),
            Field::new(
                "__eon_col_1:?column?",
                datafusion::arrow::datatypes::DataType::Int64,
                true,
            ),
        ]));
        let renamed = rename(&schema, None);
        assert_eq!(renamed.field(1).name(), "?column?");
    }
}
