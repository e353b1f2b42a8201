//! Which recursive queries are well formed, judged as PostgreSQL judges
//! them before planning (its `checkWellFormedRecursion`).
//!
//! A CTE of `WITH RECURSIVE` that names itself is evaluated by iteration:
//! the non-recursive term gives the first rows, then the recursive term
//! runs again and again over the rows the last round produced (the "work
//! table") until a round produces none. That only means something when
//! the query has the form `non-recursive-term UNION [ALL] recursive-term`
//! and the recursive term reads the work table exactly once, in a place
//! where each round's rows flow straight through:
//!
//! - not in the non-recursive term (there is no work table yet);
//! - not inside a subquery expression (`WHERE n IN (SELECT … FROM x)`), or
//!   the CTE's own `WITH`, which would see the whole table;
//! - not on the nullable side of an outer join, nor under INTERSECT ALL or
//!   EXCEPT (whose answer depends on rows not yet produced);
//! - not twice.
//!
//! Nor may the recursive term aggregate, nor the CTE be ordered, offset
//! or locked (FOR UPDATE): each round sees only the last round's rows.
//!
//! Anything else is refused with 42P19 and the error cursor at the
//! reference. DataFusion would otherwise fail with its own words ("relation
//! does not exist", "Multiple recursive references …") or, for some
//! shapes, an internal error.

use datafusion::sql::sqlparser::ast::{
    Ident, JoinOperator, LimitClause, ObjectName, Query, Select, SelectItem, SetExpr, SetOperator,
    SetQuantifier, Spanned, Statement, TableFactor, TableWithJoins, Visit, Visitor,
    visit_relations,
};
use datafusion::sql::sqlparser::tokenizer::Span;
use eon_common::error::sqlstate;
use eon_common::{Error, Result};
use std::ops::ControlFlow;

/// Where a reference to the recursive CTE stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Ok,
    NonRecursiveTerm,
    Subquery,
    OuterJoin,
    Intersect,
    Except,
}

impl Place {
    /// PostgreSQL's words for a reference here; None where it is allowed.
    fn refusal(self) -> Option<&'static str> {
        Some(match self {
            Place::Ok => return None,
            Place::NonRecursiveTerm => "its non-recursive term",
            Place::Subquery => "a subquery",
            Place::OuterJoin => "an outer join",
            Place::Intersect => "INTERSECT",
            Place::Except => "EXCEPT",
        })
    }

    /// The place inside a construct that makes references `inner`: only
    /// an allowed place becomes a refused one (the first refusal stands).
    fn within(self, inner: Place) -> Place {
        if self == Place::Ok { inner } else { self }
    }
}

/// Refuse the first badly formed recursive CTE in `statement`.
pub fn check(statement: &Statement) -> Result<()> {
    struct Each(Option<Error>);
    impl Visitor for Each {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            let Some(with) = query.with.as_ref().filter(|w| w.recursive) else {
                return ControlFlow::Continue(());
            };
            for cte in &with.cte_tables {
                if let Err(e) = well_formed(&cte.alias.name, &cte.query) {
                    self.0 = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut each = Each(None);
    let _ = statement.visit(&mut each);
    each.0.map_or(Ok(()), Err)
}

/// Check the CTE `name` whose query is `query`, if it refers to itself.
fn well_formed(name: &Ident, query: &Query) -> Result<()> {
    let mut refs = References {
        name: normal(name),
        found: Vec::new(),
    };
    refs.query(query, Place::Ok);
    if refs.found.is_empty() {
        // Not recursive after all: an ordinary CTE.
        return Ok(());
    }
    let SetExpr::SetOperation {
        op: SetOperator::Union,
        left,
        right,
        ..
    } = query.body.as_ref()
    else {
        return Err(crate::errors::at_span(
            Error::user(
                sqlstate::INVALID_RECURSION,
                format!(
                    "recursive query \"{}\" does not have the form non-recursive-term UNION [ALL] recursive-term",
                    refs.name
                ),
            ),
            Some(name.span),
        ));
    };
    refs.found.clear();
    refs.set_expr(left, Place::NonRecursiveTerm);
    refs.set_expr(right, Place::Ok);
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            refs.query(&cte.query, Place::Subquery);
        }
    }
    let mut once = false;
    for (place, span) in refs.found {
        let refusal = match place.refusal() {
            Some(what) => format!("must not appear within {what}"),
            None if once => "must not appear more than once".to_string(),
            None => {
                once = true;
                continue;
            }
        };
        return Err(crate::errors::at_span(
            Error::user(
                sqlstate::INVALID_RECURSION,
                format!("recursive reference to query \"{}\" {refusal}", refs.name),
            ),
            Some(span),
        ));
    }
    if once { iterable(query, right) } else { Ok(()) }
}

/// Refuse what a recursive query cannot iterate over, once its form and
/// references are known good: an aggregate in the recursive term (`right`,
/// at the call), and FOR UPDATE, ORDER BY or OFFSET on the whole CTE.
fn iterable(query: &Query, right: &SetExpr) -> Result<()> {
    let refuse = |code: &str, what: &str, at: Option<Span>| {
        Err(crate::errors::at_span(Error::user(code, what), at))
    };
    let aggregate = match right {
        SetExpr::Select(select) => select.projection.iter().find_map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                crate::pgfuncs::first_aggregate(e)
            }
            _ => None,
        }),
        _ => None,
    };
    if aggregate.is_some() {
        return refuse(
            sqlstate::INVALID_RECURSION,
            "aggregate functions are not allowed in a recursive query's recursive term",
            aggregate,
        );
    }
    if !query.locks.is_empty() {
        return refuse(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "FOR UPDATE/SHARE in a recursive query is not implemented",
            None,
        );
    }
    if let Some(order) = &query.order_by {
        return refuse(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "ORDER BY in a recursive query is not implemented",
            Some(order.span()),
        );
    }
    if let Some(LimitClause::LimitOffset {
        offset: Some(o), ..
    }) = &query.limit_clause
    {
        return refuse(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "OFFSET in a recursive query is not implemented",
            Some(o.value.span()),
        );
    }
    Ok(())
}

/// An identifier as PostgreSQL compares it: folded to lower case unless
/// quoted.
fn normal(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// The references to one CTE, in PostgreSQL's order of walking the query
/// (select list, then FROM, then the rest), each with its place.
struct References {
    name: String,
    found: Vec<(Place, Span)>,
}

impl References {
    fn query(&mut self, query: &Query, place: Place) {
        if let Some(with) = &query.with {
            if with
                .cte_tables
                .iter()
                .any(|c| normal(&c.alias.name) == self.name)
            {
                // A CTE of the same name hides this one here.
                return;
            }
            for cte in &with.cte_tables {
                self.query(&cte.query, place);
            }
        }
        self.set_expr(&query.body, place);
        let sub = place.within(Place::Subquery);
        self.expressions(&query.order_by, sub);
        self.expressions(&query.limit_clause, sub);
    }

    fn set_expr(&mut self, body: &SetExpr, place: Place) {
        match body {
            SetExpr::Select(select) => self.select(select, place),
            SetExpr::Query(query) => self.query(query, place),
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                let all = matches!(set_quantifier, SetQuantifier::All);
                let (l, r) = match op {
                    SetOperator::Intersect if all => (Place::Intersect, Place::Intersect),
                    SetOperator::Except if all => (Place::Except, Place::Except),
                    SetOperator::Except => (Place::Ok, Place::Except),
                    _ => (Place::Ok, Place::Ok),
                };
                self.set_expr(left, place.within(l));
                self.set_expr(right, place.within(r));
            }
            other => self.expressions(other, place.within(Place::Subquery)),
        }
    }

    fn select(&mut self, select: &Select, place: Place) {
        let sub = place.within(Place::Subquery);
        self.expressions(&select.projection, sub);
        for from in &select.from {
            self.from(from, place);
        }
        self.expressions(&select.selection, sub);
        self.expressions(&select.group_by, sub);
        self.expressions(&select.having, sub);
        self.expressions(&select.named_window, sub);
        self.expressions(&select.qualify, sub);
    }

    /// A FROM item: its relations keep their place, except the nullable
    /// sides of outer joins.
    fn from(&mut self, from: &TableWithJoins, place: Place) {
        let start = self.found.len();
        self.factor(&from.relation, place);
        for join in &from.joins {
            let (left_nullable, right_nullable) = match &join.join_operator {
                JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => (false, true),
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => (true, false),
                JoinOperator::FullOuter(_) => (true, true),
                _ => (false, false),
            };
            if left_nullable {
                for found in &mut self.found[start..] {
                    found.0 = found.0.within(Place::OuterJoin);
                }
            }
            let inner = if right_nullable {
                place.within(Place::OuterJoin)
            } else {
                place
            };
            self.factor(&join.relation, inner);
            self.expressions(&join.join_operator, place.within(Place::Subquery));
        }
    }

    fn factor(&mut self, factor: &TableFactor, place: Place) {
        match factor {
            TableFactor::Table { name, .. } => self.relation(name, place),
            TableFactor::Derived { subquery, .. } => self.query(subquery, place),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.from(table_with_joins, place),
            other => self.expressions(other, place.within(Place::Subquery)),
        }
    }

    fn relation(&mut self, name: &ObjectName, place: Place) {
        if let [part] = name.0.as_slice()
            && let Some(ident) = part.as_ident()
            && normal(ident) == self.name
        {
            self.found.push((place, ident.span));
        }
    }

    /// Every reference inside `node`, which is all expressions: one there
    /// is inside a subquery.
    fn expressions<V: Visit>(&mut self, node: &V, place: Place) {
        let _ = visit_relations(node, |name| {
            self.relation(name, place);
            ControlFlow::<()>::Continue(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn refused(sql: &str) -> Option<(String, Option<u32>)> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        check(&statement)
            .err()
            .map(|e| (e.message, e.cursor.and_then(|c| c.resolve(sql))))
    }

    #[test]
    fn recursive_queries_are_refused_as_postgresql_refuses_them() {
        let form = "recursive query \"x\" does not have the form non-recursive-term UNION [ALL] recursive-term";
        assert_eq!(
            refused(
                "WITH RECURSIVE x(n) AS (SELECT 1 INTERSECT SELECT n+1 FROM x) SELECT * FROM x"
            ),
            Some((form.into(), Some(16)))
        );
        assert_eq!(
            refused("WITH RECURSIVE x(n) AS (SELECT n FROM x UNION ALL SELECT 1) SELECT * FROM x"),
            Some((
                "recursive reference to query \"x\" must not appear within its non-recursive term"
                    .into(),
                Some(39)
            ))
        );
        assert_eq!(
            refused(
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT x.n+1 FROM y LEFT JOIN x ON x.n = y.a) SELECT * FROM x"
            ),
            Some((
                "recursive reference to query \"x\" must not appear within an outer join".into(),
                Some(74)
            ))
        );
        assert_eq!(
            refused(
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM x WHERE n IN (SELECT * FROM x)) SELECT * FROM x"
            ),
            Some((
                "recursive reference to query \"x\" must not appear within a subquery".into(),
                Some(88)
            ))
        );
        assert_eq!(
            refused(
                "WITH RECURSIVE foo(i) AS (values (1) UNION ALL (SELECT i+1 FROM foo WHERE i < 10 \
                 UNION ALL SELECT i+1 FROM foo WHERE i < 5)) SELECT * FROM foo"
            ),
            Some((
                "recursive reference to query \"foo\" must not appear more than once".into(),
                Some(108)
            ))
        );
        assert_eq!(
            refused(
                "WITH RECURSIVE foo(i) AS (values (1) UNION ALL (SELECT i+1 FROM foo WHERE i < 10 \
                 EXCEPT SELECT i+1 FROM foo WHERE i < 5)) SELECT * FROM foo"
            ),
            Some((
                "recursive reference to query \"foo\" must not appear within EXCEPT".into(),
                Some(105)
            ))
        );
        // What a recursive term cannot iterate over.
        assert_eq!(
            refused(
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT count(*) FROM x) SELECT * FROM x"
            ),
            Some((
                "aggregate functions are not allowed in a recursive query's recursive term".into(),
                Some(51)
            ))
        );
        assert_eq!(
            refused(
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM x ORDER BY 1) SELECT * FROM x"
            )
            .map(|(m, _)| m),
            Some("ORDER BY in a recursive query is not implemented".into())
        );
        assert_eq!(
            refused(
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM x OFFSET 1) SELECT * FROM x"
            ),
            Some((
                "OFFSET in a recursive query is not implemented".into(),
                Some(69)
            ))
        );
        // Well formed, or not recursive at all.
        assert_eq!(
            refused(
                "WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t JOIN u ON true WHERE n < 5) SELECT * FROM t"
            ),
            None
        );
        assert_eq!(
            refused("WITH RECURSIVE t(n) AS (SELECT 1) SELECT * FROM t"),
            None
        );
    }
}
