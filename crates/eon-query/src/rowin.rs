//! Row-valued `IN` and `NOT IN` subqueries in a WHERE or HAVING clause:
//! `WHERE (a, b) IN (SELECT x, y FROM t)`.
//!
//! DataFusion compares one column with a subquery, not a row of them
//! ("Too many columns! The subquery should only return one column"). In a
//! WHERE or HAVING clause, where a NULL condition drops the row as FALSE
//! does, the comparison is an EXISTS over the subquery's rows:
//!
//! - `(a, b) IN (S)` holds when some row of S equals (a, b):
//!   `EXISTS (SELECT 1 FROM (S) AS s (c1, c2) WHERE s.c1 = a AND s.c2 = b)`;
//! - `(a, b) NOT IN (S)` is TRUE only when every row of S differs from
//!   (a, b) in some column for certain; a row that could be equal (its
//!   comparisons TRUE or NULL) makes it FALSE or NULL, both of which drop
//!   the row: `NOT EXISTS (… WHERE (s.c1 = a) IS NOT FALSE AND (s.c2 = b)
//!   IS NOT FALSE)`.
//!
//! Only conditions ANDed at the top of the clause are rewritten: under NOT
//! or OR, or in a select list, NULL and FALSE differ and the rewrite would
//! not be exact.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Query, SetExpr, Statement, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Rewrite every row-valued IN subquery in a WHERE or HAVING condition of
/// `statement` (see the module docs).
pub fn rewrite(statement: &mut Statement) {
    struct Each;
    impl VisitorMut for Each {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            in_body(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Each);
}

fn in_body(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for condition in [&mut select.selection, &mut select.having]
                .into_iter()
                .flatten()
            {
                in_conjuncts(condition);
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            in_body(left);
            in_body(right);
        }
        _ => {}
    }
}

fn in_conjuncts(e: &mut Expr) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            in_conjuncts(left);
            in_conjuncts(right);
        }
        Expr::Nested(inner) => in_conjuncts(inner),
        Expr::InSubquery {
            expr,
            subquery,
            negated,
        } => {
            let Expr::Tuple(items) = expr.as_ref() else {
                return;
            };
            if let Some(exists) = as_exists(items, subquery, *negated) {
                *e = exists;
            }
        }
        _ => {}
    }
}

/// `[NOT] EXISTS (…)` for `(items) [NOT] IN (subquery)`.
fn as_exists(items: &[Expr], subquery: &Query, negated: bool) -> Option<Expr> {
    let columns: Vec<String> = (1..=items.len()).map(|i| format!("eon_in_{i}")).collect();
    let condition: Vec<String> = items
        .iter()
        .zip(&columns)
        .map(|(item, c)| {
            if negated {
                format!("(eon_in.{c} = ({item})) IS NOT FALSE")
            } else {
                format!("eon_in.{c} = ({item})")
            }
        })
        .collect();
    let sql = format!(
        "{}EXISTS (SELECT 1 FROM ({subquery}) AS eon_in ({}) WHERE {})",
        if negated { "NOT " } else { "" },
        columns.join(", "),
        condition.join(" AND ")
    );
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn row_in_subqueries_of_conditions_become_exists() {
        assert_eq!(
            rewritten("SELECT * FROM t WHERE (a, b) IN (SELECT x, y FROM u) AND c > 0"),
            "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM (SELECT x, y FROM u) AS eon_in (eon_in_1, eon_in_2) \
             WHERE eon_in.eon_in_1 = (a) AND eon_in.eon_in_2 = (b)) AND c > 0"
        );
        assert_eq!(
            rewritten("SELECT * FROM t WHERE (a, b) NOT IN (VALUES (1, 2))"),
            "SELECT * FROM t WHERE NOT EXISTS (SELECT 1 FROM (VALUES (1, 2)) AS eon_in (eon_in_1, eon_in_2) \
             WHERE (eon_in.eon_in_1 = (a)) IS NOT FALSE AND (eon_in.eon_in_2 = (b)) IS NOT FALSE)"
        );
        // Where NULL and FALSE differ, and single-column IN, are left alone.
        for sql in [
            "SELECT (a, b) IN (SELECT x, y FROM u) FROM t",
            "SELECT * FROM t WHERE NOT (a, b) IN (SELECT x, y FROM u)",
            "SELECT * FROM t WHERE a IN (SELECT x FROM u)",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }
}
