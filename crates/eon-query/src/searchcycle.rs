//! `SEARCH` and `CYCLE` clauses of recursive WITH queries.
//!
//! A recursive query walks a graph one step per iteration. PostgreSQL lets
//! it say two more things after the query's closing parenthesis:
//!
//! - `SEARCH DEPTH FIRST BY f, t SET seq` adds a column `seq` that sorts
//!   the rows depth first: the array of `ROW(f, t)` along the path that
//!   reached the row. `SEARCH BREADTH FIRST …` adds `ROW(depth, f, t)`
//!   instead, which sorts them level by level.
//! - `CYCLE f, t SET is_cycle [TO v DEFAULT d] USING path` stops a walk
//!   that comes back to a row it has seen: `path` is the array of
//!   `ROW(f, t)` so far, `is_cycle` is `v` (true) for a row already on
//!   its path (else `d`, false), and rows marked so are not followed.
//!
//! Neither sqlparser nor DataFusion knows these clauses, and both are
//! sugar: PostgreSQL itself rewrites them into the query
//! (rewriteSearchCycle.c). eon does the same in two steps.
//! [`take_clauses`] lifts them out of the tokens (keyed by the position of
//! the CTE's closing parenthesis) so that the rest parses, and [`apply`]
//! rewrites each CTE that had some:
//!
//! ```sql
//! -- non-recursive term: the new columns start
//! SELECT l.*, ARRAY[ROW(f, t)] AS seq, false AS is_cycle, ARRAY[ROW(f, t)] AS path
//!   FROM (<non-recursive term>) AS l(f, t, label)
//! -- recursive term: carry the previous row's columns, then extend them
//! SELECT f, t, label, s || ARRAY[ROW(f, t)],
//!        CASE WHEN ROW(f, t) = ANY(p) THEN true ELSE false END,
//!        p || ARRAY[ROW(f, t)]
//!   FROM (<recursive term> + sg.seq AS s, sg.path AS p
//!         WHERE … AND sg.is_cycle <> true) AS r(f, t, label, s, p)
//! ```

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Cte, Expr, Ident, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    SetOperator, Statement, TableAliasColumnDef, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};

/// The SEARCH and CYCLE clauses of one CTE.
#[derive(Debug, Default)]
pub struct Clauses {
    search: Option<Search>,
    cycle: Option<Cycle>,
}

#[derive(Debug)]
struct Search {
    breadth: bool,
    columns: Vec<Ident>,
    set: Ident,
    at: Location,
}

#[derive(Debug)]
struct Cycle {
    columns: Vec<Ident>,
    mark: Ident,
    /// The mark's two values as SQL text (`true` and `false` by default).
    to: String,
    default: String,
    default_at: Location,
    path: Ident,
    at: Location,
}

/// The clauses found, by the position of the closing parenthesis of the
/// CTE they follow.
pub type Found = HashMap<(u64, u64), Clauses>;

fn error(msg: impl std::fmt::Display, at: Location) -> ParserError {
    ParserError::ParserError(format!("{msg} at Line: {}, Column: {}", at.line, at.column))
}

/// A name as PostgreSQL compares it: folded to lower case unless quoted.
fn norm(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_ascii_lowercase(),
    }
}

/// Take the SEARCH / CYCLE clauses out of `tokens` (see the module docs).
pub fn take_clauses(
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Found), ParserError> {
    let solid = crate::windows::solid(&tokens);
    let word = |k: usize, text: &str| {
        solid.get(k).is_some_and(|&i| {
            matches!(&tokens[i].token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(text))
        })
    };
    let ident = |k: usize| match solid.get(k).map(|&i| &tokens[i].token) {
        Some(Token::Word(w)) => Some(Ident {
            value: w.value.clone(),
            quote_style: w.quote_style,
            span: datafusion::sql::sqlparser::tokenizer::Span::empty(),
        }),
        _ => None,
    };
    let expected = |k: usize, what: &str| {
        let t = solid.get(k).map(|&i| &tokens[i]);
        error(
            format!(
                "Expected: {what}, found: {}",
                t.map(|t| t.token.to_string())
                    .unwrap_or_else(|| "EOF".into())
            ),
            t.map(|t| t.span.start)
                .unwrap_or(Location { line: 0, column: 0 }),
        )
    };
    // A list of column names from solid position `k`, up to `SET`.
    let columns = |k: &mut usize| -> Result<Vec<Ident>, ParserError> {
        let mut out = vec![];
        loop {
            out.push(ident(*k).ok_or_else(|| expected(*k, "a column name"))?);
            *k += 1;
            if solid
                .get(*k)
                .is_some_and(|&i| tokens[i].token == Token::Comma)
            {
                *k += 1;
            } else {
                return Ok(out);
            }
        }
    };
    let mut drop = vec![false; tokens.len()];
    let mut found = Found::new();
    for k in 0..solid.len() {
        if tokens[solid[k]].token != Token::RParen || !closes_cte(&tokens, &solid, k) {
            continue;
        }
        let mut clauses = Clauses::default();
        let mut j = k + 1;
        if word(j, "search")
            && (word(j + 1, "depth") || word(j + 1, "breadth"))
            && word(j + 2, "first")
            && word(j + 3, "by")
        {
            let at = tokens[solid[j]].span.start;
            let breadth = word(j + 1, "breadth");
            j += 4;
            let by = columns(&mut j)?;
            if !word(j, "set") {
                return Err(expected(j, "SET"));
            }
            let set = ident(j + 1).ok_or_else(|| expected(j + 1, "a column name"))?;
            j += 2;
            clauses.search = Some(Search {
                breadth,
                columns: by,
                set,
                at,
            });
        }
        if word(j, "cycle") && ident(j + 1).is_some() {
            let at = tokens[solid[j]].span.start;
            j += 1;
            let of = columns(&mut j)?;
            if !word(j, "set") {
                return Err(expected(j, "SET"));
            }
            let mark = ident(j + 1).ok_or_else(|| expected(j + 1, "a column name"))?;
            j += 2;
            let (mut to, mut default) = ("true".to_string(), "false".to_string());
            let mut default_at = at;
            if word(j, "to") {
                j += 1;
                let start = j;
                while j < solid.len() && !word(j, "default") {
                    j += 1;
                }
                to = text(&tokens, &solid[start..j]);
                if !word(j, "default") {
                    return Err(expected(j, "DEFAULT"));
                }
                j += 1;
                let start = j;
                default_at = solid.get(j).map(|&i| tokens[i].span.start).unwrap_or(at);
                while j < solid.len() && !word(j, "using") {
                    j += 1;
                }
                default = text(&tokens, &solid[start..j]);
            }
            if !word(j, "using") {
                return Err(expected(j, "USING"));
            }
            let path = ident(j + 1).ok_or_else(|| expected(j + 1, "a column name"))?;
            j += 2;
            clauses.cycle = Some(Cycle {
                columns: of,
                mark,
                to,
                default,
                default_at,
                path,
                at,
            });
        }
        if clauses.search.is_none() && clauses.cycle.is_none() {
            continue;
        }
        for &i in &solid[k + 1..j] {
            drop[i] = true;
        }
        let start = tokens[solid[k]].span.start;
        found.insert((start.line, start.column), clauses);
    }
    let tokens = crate::windows::without(tokens, &drop);
    Ok((tokens, found))
}

/// Does the `)` at solid position `k` close a CTE's query (`name [(…)] AS
/// [[NOT] MATERIALIZED] ( … )`)?
fn closes_cte(tokens: &[TokenWithSpan], solid: &[usize], k: usize) -> bool {
    crate::windows::open_paren_before(tokens, solid, k).is_some_and(|p| {
        p > 0
            && matches!(&tokens[solid[p - 1]].token, Token::Word(w)
                if ["as", "materialized"].contains(&w.value.to_ascii_lowercase().as_str()))
    })
}

/// The SQL text of some tokens.
fn text(tokens: &[TokenWithSpan], at: &[usize]) -> String {
    at.iter()
        .map(|&i| tokens[i].token.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Rewrite every CTE of `statements` that had clauses (see the module
/// docs).
pub fn apply(statements: &mut [Statement], found: &Found) -> Result<(), ParserError> {
    if found.is_empty() {
        return Ok(());
    }
    struct Rewriter<'a>(&'a Found);
    impl VisitorMut for Rewriter<'_> {
        type Break = ParserError;
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<ParserError> {
            let Some(with) = &mut query.with else {
                return ControlFlow::Continue(());
            };
            for cte in &mut with.cte_tables {
                let at = cte.closing_paren_token.0.span.start;
                if let Some(clauses) = self.0.get(&(at.line, at.column))
                    && let Err(e) = rewrite(cte, clauses)
                {
                    return ControlFlow::Break(e);
                }
            }
            ControlFlow::Continue(())
        }
    }
    for statement in statements {
        if let ControlFlow::Break(e) = statement.visit(&mut Rewriter(found)) {
            return Err(e);
        }
    }
    Ok(())
}

fn parse_set_expr(sql: &str) -> Result<SetExpr, ParserError> {
    Ok(*Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)?
        .parse_query()?
        .body)
}

fn list(items: &[Ident]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The type a cycle mark value evidently has, when it does.
fn literal_type(sql: &str) -> Option<&'static str> {
    let lower = sql.to_ascii_lowercase();
    if lower == "true" || lower == "false" {
        Some("boolean")
    } else if !sql.is_empty() && sql.chars().all(|c| c.is_ascii_digit()) {
        Some("integer")
    } else {
        None
    }
}

fn rewrite(cte: &mut Cte, clauses: &Clauses) -> Result<(), ParserError> {
    let name = norm(&cte.alias.name);
    let SetExpr::SetOperation {
        op: SetOperator::Union,
        left,
        right,
        ..
    } = &mut *cte.query.body
    else {
        return Err(ParserError::ParserError(format!(
            "with a SEARCH or CYCLE clause, WITH query \"{name}\" must be a recursive UNION"
        )));
    };
    let SetExpr::Select(first) = &**left else {
        return Err(ParserError::ParserError(
            "with a SEARCH or CYCLE clause, the left side of the UNION must be a SELECT".into(),
        ));
    };
    let SetExpr::Select(step) = &mut **right else {
        return Err(ParserError::ParserError(
            "with a SEARCH or CYCLE clause, the right side of the UNION must be a SELECT".into(),
        ));
    };
    // The query's column names: its list, else the first SELECT's names.
    let names: Vec<Ident> = if cte.alias.columns.is_empty() {
        first
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Ok(alias.clone()),
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => Ok(i.clone()),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => Ok(parts
                    .last()
                    .cloned()
                    .unwrap_or_else(|| Ident::new("?column?"))),
                _ => Err(ParserError::ParserError(format!(
                    "with a SEARCH or CYCLE clause, give WITH query \"{name}\" a column list"
                ))),
            })
            .collect::<Result<_, _>>()?
    } else {
        cte.alias.columns.iter().map(|c| c.name.clone()).collect()
    };
    let known: Vec<String> = names.iter().map(norm).collect();
    let check_columns = |what: &str, columns: &[Ident], at: Location| {
        let mut seen = vec![];
        for c in columns {
            let c = norm(c);
            if !known.contains(&c) {
                return Err(error(
                    format!("{what} column \"{c}\" not in WITH query column list"),
                    at,
                ));
            }
            if seen.contains(&c) {
                return Err(error(
                    format!("{what} column \"{c}\" specified more than once"),
                    at,
                ));
            }
            seen.push(c);
        }
        Ok(())
    };
    let unused = |what: &str, column: &Ident, at: Location| {
        if known.contains(&norm(column)) {
            return Err(error(
                format!(
                    "{what} column name \"{}\" already used in WITH query column list",
                    norm(column)
                ),
                at,
            ));
        }
        Ok(())
    };
    if let Some(s) = &clauses.search {
        check_columns("search", &s.columns, s.at)?;
        unused("search sequence", &s.set, s.at)?;
    }
    if let Some(c) = &clauses.cycle {
        check_columns("cycle", &c.columns, c.at)?;
        unused("cycle mark", &c.mark, c.at)?;
        unused("cycle path", &c.path, c.at)?;
        if norm(&c.mark) == norm(&c.path) {
            return Err(error(
                "cycle mark column name and cycle path column name are the same",
                c.at,
            ));
        }
        if let (Some(to), Some(default)) = (literal_type(&c.to), literal_type(&c.default))
            && to != default
        {
            return Err(error(
                format!("CYCLE types {to} and {default} cannot be matched"),
                c.default_at,
            ));
        }
    }
    if let (Some(s), Some(c)) = (&clauses.search, &clauses.cycle) {
        for (other, what) in [(&c.mark, "cycle mark"), (&c.path, "cycle path")] {
            if norm(&s.set) == norm(other) {
                return Err(error(
                    format!("search sequence column name and {what} column name are the same"),
                    s.at,
                ));
            }
        }
    }

    // The recursive reference, at the top level of the second SELECT.
    let mut reference = None;
    for t in &step.from {
        for factor in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table {
                name: table, alias, ..
            } = factor
                && table.0.len() == 1
                && table.0[0].as_ident().is_some_and(|i| norm(i) == name)
            {
                reference = Some(
                    alias
                        .as_ref()
                        .map(|a| a.name.clone())
                        .unwrap_or_else(|| cte.alias.name.clone()),
                );
            }
        }
    }
    let Some(reference) = reference else {
        return Err(ParserError::ParserError(format!(
            "with a SEARCH or CYCLE clause, the recursive reference to WITH query \"{name}\" must be at the top level of its right-hand SELECT"
        )));
    };

    let mut start = vec![];
    let mut carried = vec![];
    let mut next = vec![];
    let mut added = vec![];
    if let Some(s) = &clauses.search {
        let by = list(&s.columns);
        if s.breadth {
            // The depth is counted in the inner SELECT: DataFusion fails
            // to plan a field access over the carried column in the outer.
            start.push(format!("ROW(0::int8, {by}) AS {}", s.set));
            next.push(format!("ROW(__eon_seq, {by})"));
            carried.push(format!("{reference}.{}['c0'] + 1 AS __eon_seq", s.set));
        } else {
            start.push(format!("ARRAY[ROW({by})] AS {}", s.set));
            next.push(format!("__eon_seq || ARRAY[ROW({by})]"));
            carried.push(format!("{reference}.{} AS __eon_seq", s.set));
        }
        added.push(s.set.clone());
    }
    if let Some(c) = &clauses.cycle {
        let of = list(&c.columns);
        // DataFusion wants the second SELECT's columns no more nullable
        // than the first's, and the mark the second computes counts as
        // nullable: so the first's is made so too, by a CASE that cannot
        // be folded away.
        start.push(format!(
            "CASE WHEN random() >= 0 THEN {} END AS {}",
            c.default, c.mark
        ));
        start.push(format!("ARRAY[ROW({of})] AS {}", c.path));
        next.push(format!(
            "CASE WHEN ROW({of}) = ANY(__eon_path) THEN {} ELSE {} END",
            c.to, c.default
        ));
        next.push(format!("__eon_path || ARRAY[ROW({of})]"));
        carried.push(format!("{reference}.{} AS __eon_path", c.path));
        added.extend([c.mark.clone(), c.path.clone()]);
        // Rows marked as closing a cycle are not followed.
        let stop: Expr = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("{reference}.{} <> {}", c.mark, c.to))?
            .parse_expr()?;
        step.selection = Some(match step.selection.take() {
            Some(e) => Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(e))),
                op: BinaryOperator::And,
                right: Box::new(stop),
            },
            None => stop,
        });
    }
    // `*` over the reference alone means its own columns, not the added
    // ones; then the previous row's sequence and path are carried along.
    let only_reference = step.from.len() == 1 && step.from[0].joins.is_empty();
    let is_reference = |item: &SelectItem| match item {
        SelectItem::Wildcard(_) => only_reference,
        SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(o), _) => {
            o.0.len() == 1
                && o.0[0]
                    .as_ident()
                    .is_some_and(|i| norm(i) == norm(&reference))
        }
        _ => false,
    };
    let item = |sql: &str| {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)?
            .parse_select_item()
    };
    let mut projection = vec![];
    for it in std::mem::take(&mut step.projection) {
        if is_reference(&it) {
            for n in &names {
                projection.push(item(&format!("{reference}.{n}"))?);
            }
        } else {
            projection.push(it);
        }
    }
    for c in &carried {
        projection.push(item(c)?);
    }
    step.projection = projection;
    let step_sql = step.to_string();
    let all = list(&names);
    let mut inner = all.clone();
    if clauses.search.is_some() {
        inner.push_str(", __eon_seq");
    }
    if clauses.cycle.is_some() {
        inner.push_str(", __eon_path");
    }
    let first_sql = first.to_string();
    **left = parse_set_expr(&format!(
        "SELECT __eon_l.*, {} FROM ({first_sql}) AS __eon_l({all})",
        start.join(", ")
    ))?;
    **right = parse_set_expr(&format!(
        "SELECT {all}, {} FROM ({step_sql}) AS __eon_r({inner})",
        next.join(", ")
    ))?;
    // The query gets a column list (DataFusion then also lets the first
    // SELECT's NOT NULL columns meet the second's nullable ones).
    cte.alias.columns = names
        .into_iter()
        .chain(added)
        .map(|name| TableAliasColumnDef {
            name,
            data_type: None,
        })
        .collect();
    Ok(())
}
