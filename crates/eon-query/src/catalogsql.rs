//! Parsing the catalog queries drivers and tools send.
//!
//! psql, JDBC, SQLAlchemy and friends introspect a database with long
//! queries over `pg_catalog`. datafusion-pg-catalog's parser makes many of
//! them plannable: it swaps a handful of known texts for simpler ones (its
//! *blacklist*) and applies rewrite rules (`'t'::regclass` → a lookup,
//! `OPERATOR(pg_catalog.~)` → `~`, …). One of its rules, though, replaces
//! every correlated scalar subquery in a select list by NULL — written for
//! an engine that could not run them. eon runs them (see [`crate::pgfuncs`]
//! and [`crate::decorrelate`]), and that rule would blank out exactly what
//! the tools ask for: a column's default in `\d`, SQLAlchemy's reflected
//! defaults. So this parser applies the crate's rules itself, without that
//! one, and takes the crate's own result only when its blacklist swapped
//! the text.
//!
//! A select item `x::regclass` becomes `eon_regclass_name(x)`, so that the
//! result shows the relation's name as PostgreSQL prints a regclass
//! (datafusion-pg-catalog plans regclass as a plain integer, which is what
//! comparisons need).
//!
//! It also removes `pg_partition_ancestors(rel)` from FROM lists (psql's
//! `\d` joins with it, correlated, to find constraints and triggers
//! inherited from partitions): eon has no partitions, so its only row is
//! `rel` itself at depth 1, and the join is the same as writing `rel`
//! and 1 where its columns are used.
//!
//! asyncpg's type introspection, which DataFusion cannot plan, is answered
//! by a simpler query with the same columns ([`substitute`]), and casts to
//! `oid` and `oid[]` are typed as such ([`plan_oid_types`]), so asyncpg can
//! look up enum and array types and decode them in binary.

use std::ops::ControlFlow;

use std::sync::Arc;

use datafusion::logical_expr::planner::TypePlanner;
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, Ident, OrderByKind,
    Query, SelectItem, SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, FixVersionColumnName, PrependUnqualifiedPgTableName,
    RemoveSubqueryFromProjection, ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation,
    RewritePgCatalogOperator, RewriteRegCastToSubquery, SqlStatementRewriteRule,
    StripCallableQualifier, StripCollate,
};
use eon_common::SqlType;

/// Casts to `oid` and `oid[]` typed as PostgreSQL types them: their
/// fields carry eon's `oid` type (datafusion-pg-catalog's type planner,
/// which this one wraps, plans every oid alias as a plain int4). A
/// parameter `$1::oid[]` is then described as `oid[]`, the array type
/// asyncpg decodes without looking it up.
#[derive(Debug)]
struct OidTypes {
    inner: Arc<dyn TypePlanner>,
}

impl TypePlanner for OidTypes {
    fn plan_type_field(
        &self,
        sql_type: &DataType,
    ) -> datafusion::common::Result<Option<datafusion::arrow::datatypes::FieldRef>> {
        let is_oid = |t: &DataType| match t {
            DataType::Custom(name, modifiers) if modifiers.is_empty() => matches!(
                name.to_string().to_ascii_lowercase().as_str(),
                "oid" | "pg_catalog.oid"
            ),
            _ => false,
        };
        let planned = match sql_type {
            t if is_oid(t) => Some(SqlType::Oid),
            DataType::Array(
                ArrayElemTypeDef::SquareBracket(element, _)
                | ArrayElemTypeDef::AngleBracket(element),
            ) if is_oid(element) => SqlType::array_of(SqlType::Oid),
            _ => None,
        };
        match planned {
            Some(t) => Ok(Some(Arc::new(t.field("", true)))),
            None => self.inner.plan_type_field(sql_type),
        }
    }
}

/// Install [`OidTypes`] over the session's type planner.
pub fn plan_oid_types(ctx: &datafusion::prelude::SessionContext) {
    use datafusion::execution::session_state::SessionStateBuilder;
    let state = ctx.state_ref();
    let existing = state.read().clone();
    let mut builder = SessionStateBuilder::new_from_existing(existing.clone());
    let Some(inner) = builder.type_planner().clone() else {
        return;
    };
    *state.write() = crate::session::rebuild_state(&existing, |b| {
        b.with_type_planner(Arc::new(OidTypes { inner }))
    });
}

/// asyncpg's type introspection (`INTRO_LOOKUP_TYPES`), which it runs for
/// every type it has no codec for (an enum's, say): its scalar subqueries
/// for domains' base types and composites' attributes are correlated in
/// ways DataFusion cannot plan. eon has neither domains, composites nor
/// ranges, so this is the same answer: each type with its namespace, kind
/// and element type.
const ASYNCPG_TYPE_LOOKUP: &str = "SELECT t.oid AS oid, ns.nspname AS ns, t.typname AS name, \
       t.typtype AS kind, CAST(NULL AS integer) AS basetype, t.typelem AS elemtype, \
       elem_t.typdelim AS elemdelim, CAST(NULL AS integer) AS range_subtype, \
       CAST(NULL AS text[]) AS attrtypoids, CAST(NULL AS text[]) AS attrnames, 0 AS depth, \
       CAST(NULL AS text) AS basetype_name, elem_t.typname AS elemtype_name, \
       CAST(NULL AS text) AS range_subtype_name \
     FROM pg_catalog.pg_type AS t \
     INNER JOIN pg_catalog.pg_namespace AS ns ON ns.oid = t.typnamespace \
     LEFT JOIN pg_catalog.pg_type AS elem_t ON t.typelem <> 0 AND t.typelem = elem_t.oid \
     WHERE t.oid = any($1::oid[])";

/// The query eon runs for a driver's catalog query it answers another
/// way (see [`ASYNCPG_TYPE_LOOKUP`]).
fn substitute(sql: &str) -> Option<String> {
    if sql.contains("typeinfo_tree(") && sql.contains("range_subtype_name") {
        return Some(ASYNCPG_TYPE_LOOKUP.to_string());
    }
    // psql's `\d+`: a table's options with its TOAST table's, which eon
    // does not have (and the correlated unnest DataFusion cannot plan).
    sql.contains(PSQL_TOAST_OPTIONS)
        .then(|| sql.replace(PSQL_TOAST_OPTIONS, "c.reloptions"))
}

/// The part of psql's `\d+` query that adds the TOAST table's options.
const PSQL_TOAST_OPTIONS: &str =
    "c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x)";

#[derive(Debug)]
pub struct CatalogParser {
    compat: PostgresCompatibilityParser,
    /// The crate's rules in its order, without RemoveSubqueryFromProjection.
    rules: Vec<Box<dyn SqlStatementRewriteRule>>,
}

impl Default for CatalogParser {
    fn default() -> Self {
        CatalogParser {
            compat: PostgresCompatibilityParser::new(),
            rules: vec![
                Box::new(AliasDuplicatedProjectionRewrite),
                Box::new(ResolveUnqualifiedIdentifier),
                Box::new(RewriteArrayAnyAllOperation),
                Box::new(PrependUnqualifiedPgTableName),
                Box::new(StripCallableQualifier),
                Box::new(FixArrayLiteral),
                Box::new(CurrentUserVariableToSessionUserFunctionCall),
                Box::new(StripCollate),
                Box::new(RewritePgCatalogOperator),
                Box::new(RewriteRegCastToSubquery::new()),
                Box::new(FixVersionColumnName),
            ],
        }
    }
}

impl CatalogParser {
    /// The statements of a catalog query, rewritten; None when the text
    /// does not parse this way (the caller then parses it plainly, for the
    /// user's error message).
    pub fn parse(&self, sql: &str) -> Option<Vec<Statement>> {
        let substituted = substitute(sql);
        let sql = substituted.as_deref().unwrap_or(sql);
        let theirs = self.compat.parse(sql).ok()?;
        let Ok(plain) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
            return Some(theirs);
        };
        // A sequence named as `'s'::regclass` stays a name (the lookup the
        // rules make of it is not what nextval takes).
        let mut named = plain.clone();
        let renamed = crate::pgfuncs::sequence_names_as_text(&mut named);
        let apply = |statements: Vec<Statement>| -> Vec<Statement> {
            statements
                .into_iter()
                .map(|s| self.rules.iter().fold(s, |s, r| r.rewrite(s)))
                .collect()
        };
        let ours = apply(plain);
        // Without a blacklist swap, the crate's result is ours with the
        // subqueries removed: compare to tell.
        let swapped = ours.len() != theirs.len()
            || ours.iter().zip(&theirs).any(|(o, t)| {
                RemoveSubqueryFromProjection.rewrite(o.clone()).to_string() != t.to_string()
            });
        let mut chosen = match (swapped, renamed) {
            (true, _) => theirs,
            (false, true) => apply(named),
            (false, false) => ours,
        };
        for s in &mut chosen {
            let _ = s.visit(&mut Rewrites);
        }
        Some(chosen)
    }
}

/// eon's own rewrites of catalog queries (see the module docs): select
/// items cast to regclass, `pg_partition_ancestors(…)` in FROM lists,
/// `pg_user` and `pg_indexes` qualified, and an oid array compared with a literal
/// (`polroles <> '{0}'`, in psql's `\dp`) compared with an array.
struct Rewrites;

/// pg_catalog tables eon adds to datafusion-pg-catalog's.
const EXTRA_TABLES: [&str; 2] = ["pg_user", "pg_indexes"];

/// Catalog columns that are oid arrays, compared with `'{…}'` literals.
const OID_ARRAY_COLUMNS: [&str; 1] = ["polroles"];

impl VisitorMut for Rewrites {
    type Break = ();

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq | BinaryOperator::NotEq,
            right,
        } = e
        {
            let column = match left.as_ref() {
                Expr::Identifier(i) => Some(&i.value),
                Expr::CompoundIdentifier(parts) => parts.last().map(|i| &i.value),
                _ => None,
            };
            if column.is_some_and(|c| OID_ARRAY_COLUMNS.contains(&c.as_str()))
                && let Expr::Value(v) = right.as_ref()
                && let Value::SingleQuotedString(text) = &v.value
                && let Some(items) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
                && items.split(',').all(|i| i.trim().parse::<i64>().is_ok())
                && let Ok(array) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&format!("make_array({items})"))
                    .and_then(|mut p| p.parse_expr())
            {
                **right = array;
            }
        }
        ControlFlow::Continue(())
    }

    /// Catalog tables eon adds (the crate's rules qualify only its own).
    fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name, args: None, ..
        } = t
            && let [part] = name.0.as_slice()
            && part
                .as_ident()
                .is_some_and(|i| EXTRA_TABLES.iter().any(|t| i.value.eq_ignore_ascii_case(t)))
        {
            name.0.insert(
                0,
                datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(Ident::new(
                    "pg_catalog",
                )),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        // An unnamed item gets the operand's name, as in PostgreSQL —
        // unless an ORDER BY might then find that name twice.
        let sorted = query.order_by.is_some();
        for item in &mut select.projection {
            let unnamed = matches!(item, SelectItem::UnnamedExpr(_));
            if unnamed && sorted {
                continue;
            }
            let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item
            else {
                continue;
            };
            if let Expr::Cast {
                expr, data_type, ..
            } = e
            {
                let name = data_type.to_string().to_ascii_lowercase();
                if name == "regclass" || name == "pg_catalog.regclass" {
                    let inner = std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
                    if unnamed {
                        // PostgreSQL names the column after the cast's operand.
                        *item = SelectItem::ExprWithAlias {
                            expr: crate::pgfuncs::call("eon_regclass_name", inner.clone()),
                            alias: output_name(&inner),
                        };
                    } else if let SelectItem::ExprWithAlias { expr, .. } = item {
                        *expr = crate::pgfuncs::call("eon_regclass_name", inner);
                    }
                }
            }
        }
        if select.from.len() < 2 {
            return ControlFlow::Continue(());
        }
        let found = select
            .from
            .iter()
            .position(|t| t.joins.is_empty() && ancestors_of(&t.relation).is_some());
        let Some(i) = found else {
            return ControlFlow::Continue(());
        };
        let removed = select.from.remove(i);
        let Some((relation, alias, relid, depth)) = ancestors_of(&removed.relation) else {
            return ControlFlow::Continue(());
        };
        let relation = Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(relation),
            data_type: DataType::Integer(None),
            array: false,
            format: None,
        };
        // Ordering by the constant depth orders nothing.
        if let Some(order) = &mut query.order_by {
            if let OrderByKind::Expressions(items) = &mut order.kind {
                items.retain(|o| !names_column(&o.expr, alias.as_deref(), &depth));
            }
            if matches!(&order.kind, OrderByKind::Expressions(items) if items.is_empty()) {
                query.order_by = None;
            }
        }
        let one = Expr::value(Value::Number("1".into(), false));
        let substitute = |e: &mut Expr| {
            if names_column(e, alias.as_deref(), &relid) {
                *e = relation.clone();
            } else if names_column(e, alias.as_deref(), &depth) {
                *e = one.clone();
            }
            ControlFlow::<()>::Continue(())
        };
        let _ = visit_expressions_mut(query, substitute);
        ControlFlow::Continue(())
    }
}

/// The column name PostgreSQL gives an expression: its last identifier.
fn output_name(e: &Expr) -> Ident {
    match e {
        Expr::Identifier(i) => i.clone(),
        Expr::CompoundIdentifier(parts) => parts.last().cloned().unwrap_or(Ident::new("regclass")),
        _ => Ident::new("regclass"),
    }
}

/// True when `e` is `column` or `alias.column`.
fn names_column(e: &Expr, alias: Option<&str>, column: &str) -> bool {
    match e {
        Expr::Identifier(c) => c.value == column,
        Expr::CompoundIdentifier(parts) => {
            parts.len() == 2 && Some(parts[0].value.as_str()) == alias && parts[1].value == column
        }
        _ => false,
    }
}

/// For `pg_partition_ancestors(rel) [WITH ORDINALITY] [AS a(relid, depth)]`:
/// the relation, the alias, and the names of its two columns.
fn ancestors_of(t: &TableFactor) -> Option<(Expr, Option<String>, String, String)> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = t
    else {
        return None;
    };
    let last = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    if last != "pg_partition_ancestors" {
        return None;
    }
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(relation))] = args.args.as_slice() else {
        return None;
    };
    let column = |i: usize, default: &str| {
        alias
            .as_ref()
            .and_then(|a| a.columns.get(i))
            .map(|c| c.name.value.clone())
            .unwrap_or_else(|| default.to_string())
    };
    Some((
        relation.clone(),
        alias.as_ref().map(|a| a.name.value.clone()),
        column(0, "relid"),
        column(1, "ordinality"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlated_subqueries_survive_and_the_blacklist_still_applies() {
        let p = CatalogParser::default();
        let sql = "SELECT a.attname, (SELECT d.adbin FROM pg_catalog.pg_attrdef d \
                   WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a";
        let s = p.parse(sql).unwrap();
        assert!(s[0].to_string().contains("SELECT d.adbin"), "{}", s[0]);
        // psql's row-policy query is one the crate swaps for an empty one.
        let policies = "SELECT pol.polname, pol.polpermissive,
          CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
          pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
          pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
          CASE pol.polcmd
            WHEN 'r' THEN 'SELECT'
            WHEN 'a' THEN 'INSERT'
            WHEN 'w' THEN 'UPDATE'
            WHEN 'd' THEN 'DELETE'
            END AS cmd
        FROM pg_catalog.pg_policy pol
        WHERE pol.polrelid = '16466' ORDER BY 1;";
        let s = p.parse(policies).unwrap();
        assert!(s[0].to_string().contains("WHERE false"), "{}", s[0]);
    }
}
