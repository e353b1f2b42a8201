//! Integer arithmetic that fails on overflow, as PostgreSQL's does.
//!
//! DataFusion's `+`, `-` and `*` on integers wrap around by default
//! (`9223372036854775800 + 9223372036854775800` is `-16`): a wrong answer
//! with no error. PostgreSQL raises `22003 bigint out of range` (`integer`,
//! `smallint`). DataFusion's binary expression can check instead of
//! wrapping, but its planner never asks it to; this physical optimizer
//! rule does, for the expressions of projections and filters — where a
//! query's arithmetic lives — and the arguments of aggregates. [`crate::errors`] then words the overflow as
//! PostgreSQL does. The same rule hands decimal `+ - * / %` and casts to
//! and from decimals to [`crate::numeric`], which knows numeric's NaN and
//! ±Infinity.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::numeric::{self, NumericExpr};

#[derive(Debug, Default)]
pub struct CheckedArithmetic;

/// `expr` with every `+`, `-` and `*` checking for overflow, and decimal
/// arithmetic and casts computed by [`crate::numeric`] (`schema`: the
/// input's).
fn checked(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|e| {
        if let Some(c) = e.downcast_ref::<CastExpr>() {
            let from = c.expr().data_type(schema)?;
            if numeric::handles_cast(&from, c.cast_type()) {
                return Ok(Transformed::yes(Arc::new(NumericExpr::cast(
                    Arc::clone(c.expr()),
                    c.cast_type().clone(),
                ))
                    as Arc<dyn PhysicalExpr>));
            }
            return Ok(Transformed::no(e));
        }
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        let decimal =
            |x: &Arc<dyn PhysicalExpr>| matches!(x.data_type(schema), Ok(DataType::Decimal128(..)));
        if matches!(
            b.op(),
            Operator::Plus
                | Operator::Minus
                | Operator::Multiply
                | Operator::Divide
                | Operator::Modulo
        ) && decimal(b.left())
            && decimal(b.right())
        {
            return Ok(Transformed::yes(Arc::new(NumericExpr::arithmetic(
                Arc::clone(b.left()),
                *b.op(),
                Arc::clone(b.right()),
            )) as Arc<dyn PhysicalExpr>));
        }
        if !matches!(
            b.op(),
            Operator::Plus | Operator::Minus | Operator::Multiply
        ) {
            return Ok(Transformed::no(e));
        }
        Ok(Transformed::yes(Arc::new(
            BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right()))
                .with_fail_on_overflow(true),
        ) as Arc<dyn PhysicalExpr>))
    })
}

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                let mut changed = false;
                let mut exprs = Vec::with_capacity(p.expr().len());
                for pe in p.expr() {
                    let t = checked(&pe.expr, &p.input().schema())?;
                    changed |= t.transformed;
                    exprs.push(ProjectionExpr {
                        expr: t.data,
                        alias: pe.alias.clone(),
                    });
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                let schema = node.schema();
                let new = ProjectionExec::try_new_with_schema_metadata(
                    exprs,
                    Arc::clone(p.input()),
                    &schema,
                )?;
                return Ok(Transformed::yes(Arc::new(new) as Arc<dyn ExecutionPlan>));
            }
            if let Some(f) = node.downcast_ref::<FilterExec>() {
                let t = checked(f.predicate(), &f.input().schema())?;
                if !t.transformed {
                    return Ok(Transformed::no(node));
                }
                let new = FilterExecBuilder::from(f).with_predicate(t.data).build()?;
                return Ok(Transformed::yes(Arc::new(new) as Arc<dyn ExecutionPlan>));
            }
            if let Some(a) = node.downcast_ref::<AggregateExec>() {
                // The aggregates' arguments (`sum(x * y)`, `var_pop(b::numeric)`).
                let schema = a.input_schema();
                let mut changed = false;
                let mut aggregates = Vec::with_capacity(a.aggr_expr().len());
                for f in a.aggr_expr() {
                    let mut args = Vec::with_capacity(f.expressions().len());
                    for e in f.expressions() {
                        let t = checked(&e, &schema)?;
                        changed |= t.transformed;
                        args.push(t.data);
                    }
                    let order: Vec<_> = f.order_bys().iter().map(|o| Arc::clone(&o.expr)).collect();
                    match f.with_new_expressions(args, order) {
                        Some(new) => aggregates.push(Arc::new(new)),
                        None => return Ok(Transformed::no(node)),
                    }
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                let new = a.with_new_aggr_exprs(aggregates);
                return Ok(Transformed::yes(Arc::new(new) as Arc<dyn ExecutionPlan>));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "checked_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Integer `+`, `-` and `*` of constants computed with overflow checks
/// before DataFusion's simplifier would fold them with its wrapping
/// kernels (`'9223372036854775800'::int8 + '9223372036854775800'::int8`
/// is PostgreSQL's `bigint out of range`, not -16). A logical rule, ahead
/// of the simplifier; the physical rule above covers computed values.
#[derive(Debug, Default)]
pub struct CheckedConstants;

/// The constant value of `e`: a literal or a cast of one.
fn constant(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
        _ => None,
    }
}

fn fold(e: Expr) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(b) = &e else {
        return Ok(Transformed::no(e));
    };
    let (Some(l), Some(r)) = (constant(&b.left), constant(&b.right)) else {
        return Ok(Transformed::no(e));
    };
    macro_rules! checked {
        ($a:expr, $b:expr, $variant:ident, $name:literal) => {{
            let v = match b.op {
                Operator::Plus => $a.checked_add($b),
                Operator::Minus => $a.checked_sub($b),
                Operator::Multiply => $a.checked_mul($b),
                _ => return Ok(Transformed::no(e)),
            };
            match v {
                Some(v) => ScalarValue::$variant(Some(v)),
                None => {
                    return Err(crate::provider::to_df(eon_common::Error::user(
                        eon_common::error::sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        concat!($name, " out of range"),
                    )));
                }
            }
        }};
    }
    let value = match (&l, &r) {
        (ScalarValue::Int16(Some(a)), ScalarValue::Int16(Some(b2))) => {
            checked!(a, *b2, Int16, "smallint")
        }
        (ScalarValue::Int32(Some(a)), ScalarValue::Int32(Some(b2))) => {
            checked!(a, *b2, Int32, "integer")
        }
        (ScalarValue::Int64(Some(a)), ScalarValue::Int64(Some(b2))) => {
            checked!(a, *b2, Int64, "bigint")
        }
        _ => return Ok(Transformed::no(e)),
    };
    Ok(Transformed::yes(Expr::Literal(value, None)))
}

impl OptimizerRule for CheckedConstants {
    fn name(&self) -> &str {
        "eon_checked_constants"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // A folded expression keeps its name (`count(38 * 17)` is still
        // called that), as DataFusion's simplifier does it.
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|e| {
            let name = names.save(&e);
            Ok(e.transform_up(fold)?.update_data(|e| name.restore(e)))
        })
    }
}
