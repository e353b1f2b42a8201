//! Correlated scalar subqueries with non-equality correlation.
//!
//! PostgreSQL evaluates `SELECT (SELECT count(*) FROM t1 AS x WHERE x.b <
//! t1.b) FROM t1` per outer row. DataFusion turns correlated subqueries into
//! joins, but only when the correlation is an equality; this rule covers the
//! rest for the common shape — an aggregate without GROUP BY over a filter
//! that refers to the outer row — with a *domain join*:
//!
//! ```text
//!   outer ⟕ ( SELECT d.c, agg(...) AS v, true AS present
//!             FROM (SELECT DISTINCT c FROM outer) d, inner
//!             WHERE pred(inner, d.c)
//!             GROUP BY d.c )            ON outer.c IS NOT DISTINCT FROM d.c
//! ```
//!
//! and replaces the subquery by `CASE WHEN present IS NULL THEN <the
//! subquery's value over no rows> ELSE v END`, so `count(*)` of no rows is
//! 0 and `sum` is NULL, as per row evaluation would give. It runs before
//! DataFusion's own optimizer rules, which then plan the joins.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, NullEquality, Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, ExprSchemable, Filter, JoinType, LogicalPlan, LogicalPlanBuilder,
    Operator, Projection, Subquery, col, lit, when,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

#[derive(Debug, Default)]
pub struct DecorrelateScalarSubquery;

/// `input` (a filter's input widened with columns a rewrite added)
/// filtered by `predicate`, then narrowed back to the columns of
/// `original` — the filter's own schema, which the plan above expects.
pub(crate) fn filter_keeping(
    predicate: Expr,
    input: LogicalPlan,
    original: &DFSchemaRef,
) -> Result<LogicalPlan> {
    let keep: Vec<Expr> = original.columns().into_iter().map(Expr::Column).collect();
    LogicalPlanBuilder::from(input)
        .filter(predicate)?
        .project(keep)?
        .build()
}

/// The parts of a subquery this rule can rewrite.
struct Shape {
    /// The value expression above the aggregate (over its output).
    value: Expr,
    aggregate: Aggregate,
    filter: Filter,
}

fn is_outer(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|x| {
        if matches!(x, Expr::OuterReferenceColumn(..)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn split_and(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            split_and(left, out);
            split_and(right, out);
        }
        other => out.push(other.clone()),
    }
}

/// Recognize `[Projection] → Aggregate(no groups) → Filter(correlated) → X`
/// where X and the aggregates do not refer to the outer query.
fn shape(plan: &LogicalPlan) -> Option<Shape> {
    let (value, agg_plan) = match plan {
        LogicalPlan::Projection(Projection { expr, input, .. }) if expr.len() == 1 => {
            (Some(expr[0].clone()), input.as_ref())
        }
        other => (None, other),
    };
    let LogicalPlan::Aggregate(agg) = agg_plan else {
        return None;
    };
    if !agg.group_expr.is_empty() || agg.aggr_expr.len() != 1 && value.is_none() {
        return None;
    }
    let LogicalPlan::Filter(filter) = agg.input.as_ref() else {
        return None;
    };
    if !is_outer(&filter.predicate) || filter.input.contains_outer_reference() {
        return None;
    }
    // DataFusion decorrelates equality-only correlation itself, unless the
    // subquery's value refers to the outer row too (`(SELECT f(o.x, i.y)
    // FROM i WHERE i.k = o.k)`, as SQLAlchemy's reflection asks).
    let value_uses_outer =
        agg.aggr_expr.iter().any(is_outer) || value.as_ref().is_some_and(is_outer);
    let mut conjuncts = Vec::new();
    split_and(&filter.predicate, &mut conjuncts);
    let only_equalities = conjuncts.iter().filter(|c| is_outer(c)).all(|c| {
        matches!(c, Expr::BinaryExpr(BinaryExpr { op: Operator::Eq, left, right })
            if matches!((left.as_ref(), right.as_ref()), (Expr::Column(_), Expr::OuterReferenceColumn(..)) | (Expr::OuterReferenceColumn(..), Expr::Column(_))))
    });
    if only_equalities && !value_uses_outer {
        return None;
    }
    let value =
        value.unwrap_or_else(|| Expr::Column(Column::from_name(agg.schema.field(0).name())));
    Some(Shape {
        value,
        aggregate: agg.clone(),
        filter: filter.clone(),
    })
}

/// The value of an aggregate over no rows.
fn empty_value(agg: &Expr, schema: &DFSchemaRef) -> Result<Expr> {
    let inner = match agg {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let ty = agg.get_type(schema)?;
    if let Expr::AggregateFunction(AggregateFunction { func, .. }) = inner {
        if matches!(func.name(), "count" | "count_star" | "approx_distinct") {
            return Ok(lit(ScalarValue::Int64(Some(0))).cast_to(&ty, schema)?);
        }
    }
    Ok(lit(ScalarValue::try_from(&ty)?))
}

impl DecorrelateScalarSubquery {
    /// Replace every rewritable correlated subquery in `exprs` (evaluated
    /// over `input`) by columns of left joins added to `input`.
    fn rewrite_exprs(
        &self,
        exprs: &[Expr],
        input: &LogicalPlan,
    ) -> Result<Option<(Vec<Expr>, LogicalPlan)>> {
        let mut subqueries: Vec<(Subquery, Shape)> = Vec::new();
        for e in exprs {
            e.apply(|x| {
                if let Expr::ScalarSubquery(sq) = x {
                    if !subqueries.iter().any(|(s, _)| s == sq) {
                        if let Some(s) = shape(&sq.subquery) {
                            subqueries.push((sq.clone(), s));
                        }
                    }
                    return Ok(TreeNodeRecursion::Jump);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        if subqueries.is_empty() {
            return Ok(None);
        }
        let mut plan = input.clone();
        let mut replacements: Vec<(Subquery, Expr)> = Vec::new();
        for (k, (sq, s)) in subqueries.into_iter().enumerate() {
            // Outer columns the subquery refers to.
            let mut outer: Vec<Column> = Vec::new();
            let uses = std::iter::once(&s.filter.predicate)
                .chain(&s.aggregate.aggr_expr)
                .chain(std::iter::once(&s.value));
            for e in uses {
                e.apply(|x| {
                    if let Expr::OuterReferenceColumn(_, c) = x {
                        if !outer.contains(c) {
                            outer.push(c.clone());
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
            let dnames: Vec<String> = (0..outer.len())
                .map(|j| format!("__eon_d{k}_{j}"))
                .collect();
            // An outer reference becomes the domain's column inside the
            // subquery, and the outer column itself outside it.
            let to_domain = |e: Expr| -> Result<Expr> {
                Ok(e.transform(|x| {
                    Ok(match x {
                        Expr::OuterReferenceColumn(_, c) => {
                            let j = outer.iter().position(|o| *o == c).unwrap();
                            Transformed::yes(col(Column::from_name(dnames[j].clone())))
                        }
                        other => Transformed::no(other),
                    })
                })?
                .data)
            };
            let to_outer = |e: Expr| -> Result<Expr> {
                Ok(e.transform(|x| {
                    Ok(match x {
                        Expr::OuterReferenceColumn(_, c) => Transformed::yes(Expr::Column(c)),
                        other => Transformed::no(other),
                    })
                })?
                .data)
            };
            // The aggregates keep their names, which the value refers to.
            let aggr_exprs = s
                .aggregate
                .aggr_expr
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let name = s.aggregate.schema.field(i).name().clone();
                    let e = match e {
                        Expr::Alias(a) => a.expr.as_ref().clone(),
                        e => e.clone(),
                    };
                    Ok(if is_outer(&e) {
                        to_domain(e)?.alias(name)
                    } else {
                        e.alias_if_changed(name)?
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let domain = LogicalPlanBuilder::from(input.clone())
                .project(
                    outer
                        .iter()
                        .zip(&dnames)
                        .map(|(c, n)| Expr::Column(c.clone()).alias(n.as_str())),
                )?
                .distinct()?
                .build()?;
            let predicate = to_domain(s.filter.predicate.clone())?;
            let dcols: Vec<Expr> = dnames
                .iter()
                .map(|n| col(Column::from_name(n.clone())))
                .collect();
            let agg_schema = s.aggregate.schema.clone();
            let empty = {
                let replaced = s
                    .value
                    .clone()
                    .transform(|x| {
                        if let Expr::Column(c) = &x {
                            if let Some(i) =
                                agg_schema.columns().iter().position(|a| a.name == c.name)
                            {
                                return Ok(Transformed::yes(empty_value(
                                    &s.aggregate.aggr_expr[i],
                                    s.aggregate.input.schema(),
                                )?));
                            }
                        }
                        Ok(Transformed::no(x))
                    })?
                    .data;
                let ty = s.value.get_type(&agg_schema)?;
                to_outer(replaced.cast_to(&ty, &agg_schema)?)?
            };
            let value_name = format!("__eon_v{k}");
            let present_name = format!("__eon_p{k}");
            let alias = format!("__eon_sq{k}");
            let mut projection = dcols.clone();
            projection.push(to_domain(s.value.clone())?.alias(value_name.as_str()));
            projection.push(lit(true).alias(present_name.as_str()));
            let sub = LogicalPlanBuilder::from(s.filter.input.as_ref().clone())
                .cross_join(domain)?
                .filter(predicate)?
                .aggregate(dcols.clone(), aggr_exprs)?
                .project(projection)?
                .alias(alias.as_str())?
                .build()?;
            let right_keys: Vec<Column> = dnames
                .iter()
                .map(|n| Column::new(Some(alias.as_str()), n.as_str()))
                .collect();
            plan = LogicalPlanBuilder::from(plan)
                .join_detailed(
                    sub,
                    JoinType::Left,
                    (outer.clone(), right_keys),
                    None,
                    NullEquality::NullEqualsNull,
                )?
                .build()?;
            let value = col(Column::new(Some(alias.as_str()), value_name.as_str()));
            let present = col(Column::new(Some(alias.as_str()), present_name.as_str()));
            replacements.push((sq, when(present.is_null(), empty).otherwise(value)?));
        }
        let new_exprs = exprs
            .iter()
            .map(|e| {
                let name = e.schema_name().to_string();
                let replaced = e
                    .clone()
                    .transform(|x| {
                        if let Expr::ScalarSubquery(sq) = &x {
                            if let Some((_, r)) = replacements.iter().find(|(s, _)| s == sq) {
                                return Ok(Transformed::new(
                                    r.clone(),
                                    true,
                                    TreeNodeRecursion::Jump,
                                ));
                            }
                        }
                        Ok(Transformed::no(x))
                    })?
                    .data;
                if matches!(e, Expr::Alias(_)) {
                    Ok(replaced)
                } else {
                    replaced.alias_if_changed(name)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((new_exprs, plan)))
    }
}

impl OptimizerRule for DecorrelateScalarSubquery {
    fn name(&self) -> &str {
        "eon_decorrelate_scalar_subquery"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match &plan {
            LogicalPlan::Projection(p) => match self.rewrite_exprs(&p.expr, &p.input)? {
                Some((exprs, input)) => Ok(Transformed::yes(LogicalPlan::Projection(
                    Projection::try_new(exprs, Arc::new(input))?,
                ))),
                None => Ok(Transformed::no(plan)),
            },
            LogicalPlan::Filter(f) => {
                match self.rewrite_exprs(std::slice::from_ref(&f.predicate), &f.input)? {
                    Some((mut exprs, input)) => {
                        let predicate = match exprs.remove(0) {
                            Expr::Alias(a) => *a.expr,
                            e => e,
                        };
                        Ok(Transformed::yes(filter_keeping(
                            predicate,
                            input,
                            f.input.schema(),
                        )?))
                    }
                    None => Ok(Transformed::no(plan)),
                }
            }
            _ => Ok(Transformed::no(plan)),
        }
    }
}
