//! Integer arithmetic that fails on overflow, as PostgreSQL's does.
//!
//! DataFusion's `+`, `-` and `*` on integers wrap around by default
//! (`9223372036854775800 + 9223372036854775800` is `-16`): a wrong answer
//! with no error. PostgreSQL raises `22003 bigint out of range` (`integer`,
//! `smallint`). DataFusion's binary expression can check instead of
//! wrapping, but its planner never asks it to; this physical optimizer
//! rule does, for the expressions of projections and filters — where a
//! query's arithmetic lives. [`crate::errors`] then words the overflow as
//! PostgreSQL does. The same rule hands decimal `+ - * / %` and casts to
//! and from decimals to [`crate::numeric`], which knows numeric's NaN and
//! ±Infinity.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
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
