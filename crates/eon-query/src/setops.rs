//! `INTERSECT ALL` and `EXCEPT ALL` with PostgreSQL's multiset counts.
//!
//! In PostgreSQL a row that appears `m` times on the left and `n` times on
//! the right appears `min(m, n)` times in `INTERSECT ALL` and `max(m - n,
//! 0)` times in `EXCEPT ALL`. DataFusion plans both as a semi (anti) join
//! of the two sides on all columns, which keeps every left copy if the
//! right has one (none if it has any): `{1,1,1} EXCEPT ALL {1}` would be
//! empty instead of `{1,1}`.
//!
//! The fix numbers the copies. Each side gets `row_number() OVER
//! (PARTITION BY <all its columns>)`, and the number joins too: the k-th
//! copy on the left meets a partner on the right only if the right has at
//! least k copies. The semi join then keeps `min(m, n)` copies and the
//! anti join `m - n`; a projection drops the number again.
//!
//! The plan shape is DataFusion's own (`LogicalPlanBuilder::
//! intersect_or_except`): a semi or anti join that treats NULLs as equal,
//! straight from the SQL planner, whose left side is not a `Distinct` (the
//! plain `INTERSECT` / `EXCEPT` puts one there). Subqueries are not yet
//! joins at that point, so no other join looks like it; and a left side
//! that is a `SELECT DISTINCT` has one copy of each row, for which the
//! plain join is already right.
//!
//! Rows without columns (`SELECT FROM a INTERSECT SELECT FROM b`) would be
//! a join on no columns, which DataFusion refuses: [`zero_columns`] gives
//! both sides a constant column to meet on and drops it after.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, NullEquality};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, Join, JoinType, LogicalPlan, LogicalPlanBuilder,
};

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Ident, Query, SelectItem, SetExpr, SetOperator, Statement, TableFactor,
    VisitMut, VisitorMut,
};

use crate::errors::from_df;
use eon_common::Result;

/// The name of the copy number each side gets.
const COPY: &str = "__eon_copy";

/// `plan` with every `INTERSECT ALL` / `EXCEPT ALL` (also in subqueries)
/// counting copies as PostgreSQL does.
pub fn count_copies(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Join(join) if is_all(&join) => numbered(join).map(Transformed::yes),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .map_err(from_df)
}

fn is_all(join: &Join) -> bool {
    matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti)
        && join.null_equality == NullEquality::NullEqualsNull
        && join.filter.is_none()
        && !matches!(join.left.as_ref(), LogicalPlan::Distinct(_))
        && join.on.len() == join.left.schema().fields().len()
}

/// The join again, on numbered copies.
fn numbered(join: Join) -> datafusion::common::Result<LogicalPlan> {
    let output = join.left.schema().columns();
    // Each side's columns under positional names (the two sides, and the
    // columns of one side, may share names), then the copy number.
    let number = |plan: Arc<LogicalPlan>, side: &str| {
        let named: Vec<Expr> = plan
            .schema()
            .columns()
            .into_iter()
            .enumerate()
            .map(|(i, c)| Expr::Column(c).alias(format!("__eon_{i}")))
            .collect();
        let partition: Vec<Expr> = (0..named.len())
            .map(|i| Expr::Column(Column::new(Some(side), format!("__eon_{i}"))))
            .collect();
        let copy = row_number().partition_by(partition).build()?.alias(COPY);
        LogicalPlanBuilder::from(Arc::unwrap_or_clone(plan))
            .project(named)?
            .alias(side)?
            .window(vec![copy])?
            .build()
    };
    let left = number(join.left, "__eon_left")?;
    let right = number(join.right, "__eon_right")?;
    // Join on every column and the copy number.
    let (lk, rk) = (left.schema().columns(), right.schema().columns());
    let joined = LogicalPlanBuilder::from(left)
        .join_detailed(
            right,
            join.join_type,
            (lk, rk),
            None,
            NullEquality::NullEqualsNull,
        )?
        .build()?;
    // Back to the left side's columns under their own names and qualifiers.
    let back = joined
        .schema()
        .columns()
        .into_iter()
        .zip(output)
        .map(|(c, o)| Expr::Column(c).alias_qualified(o.relation, o.name))
        .collect::<Vec<_>>();
    LogicalPlanBuilder::from(joined).project(back)?.build()
}

/// `SELECT FROM a INTERSECT SELECT FROM b` (and EXCEPT, ALL or not): rows
/// without columns. DataFusion's join on no columns is refused, so each
/// side selects a constant and the set operation runs on that, inside a
/// derived table that drops it again: `SELECT FROM (SELECT 1 FROM a
/// INTERSECT SELECT 1 FROM b) AS __eon_set`.
pub fn zero_columns(statements: &mut [Statement]) {
    struct Bodies;
    impl VisitorMut for Bodies {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            rewrite(query.body.as_mut());
            ControlFlow::Continue(())
        }
    }
    fn empty(side: &SetExpr) -> bool {
        matches!(side, SetExpr::Select(s) if s.projection.is_empty())
    }
    fn rewrite(body: &mut SetExpr) {
        let SetExpr::SetOperation {
            op: SetOperator::Intersect | SetOperator::Except,
            left,
            right,
            ..
        } = body
        else {
            return;
        };
        if !(empty(left) && empty(right)) {
            return;
        }
        let constant = SelectItem::ExprWithAlias {
            expr: SqlExpr::value(datafusion::sql::sqlparser::ast::Value::Number(
                "1".into(),
                false,
            )),
            alias: Ident::new("__eon_nothing"),
        };
        for side in [left.as_mut(), right.as_mut()] {
            if let SetExpr::Select(s) = side {
                s.projection = vec![constant.clone()];
            }
        }
        let Ok(mut parsed) =
            crate::sequences::parse_statements("SELECT FROM (SELECT 1) AS __eon_set")
        else {
            return;
        };
        let Some(Statement::Query(mut outer)) = parsed.pop() else {
            return;
        };
        if let SetExpr::Select(s) = outer.body.as_mut()
            && let Some(TableFactor::Derived { subquery, .. }) =
                s.from.first_mut().map(|t| &mut t.relation)
        {
            subquery.body = Box::new(body.clone());
            *body = *outer.body;
        }
    }
    for s in statements {
        let _ = s.visit(&mut Bodies);
    }
}
