//! Numeric-to-integer conversions the way PostgreSQL does them.
//!
//! DataFusion (like C) truncates when it casts a fractional number to an
//! integer; PostgreSQL rounds: numeric half away from zero
//! (`CAST(3.7 AS int)` is 4, `CAST(-2.5 AS int)` is -3), floats half to even
//! (`CAST(2.5::float8 AS int)` is 2). And `ceil`, `floor`, `trunc` and
//! `round` of a numeric have no fraction digits left. This rule rewrites
//! those expressions before the rest of the optimizer sees them, using only
//! built-in functions, so data engines can still evaluate them. Casts of
//! literals to and from numeric are folded here with
//! [`crate::numeric`]'s conversion (NaN, ±Infinity, PostgreSQL's rounding),
//! in aggregates' and window functions' arguments too;
//! a column's NaN or ±Infinity cast to an integer fails as PostgreSQL's
//! does (`cannot convert NaN to smallint`, through numeric's FiniteGuard).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, lit, when};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

#[derive(Debug, Default)]
pub struct PostgresNumericCasts;

fn is_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

/// A literal cast to or from numeric, folded here with eon's numeric
/// conversion (NaN, ±Infinity, PostgreSQL's rounding and errors) before the
/// simplifier would fold it with Arrow's; and a cast of a text literal that
/// Arrow can do (so that `'NaN'::float8::numeric` becomes a float literal
/// cast to numeric first). None: not such a cast, or one left to the
/// simplifier (which reports a failing text cast).
fn fold_literal(expr: &Expr, to: &DataType) -> Result<Option<ScalarValue>> {
    let Expr::Literal(v, _) = expr else {
        return Ok(None);
    };
    match crate::numeric::fold_literal_cast(v, to) {
        Some(folded) => folded.map(Some).map_err(crate::provider::to_df),
        // A float from text: PostgreSQL's input, with its range errors.
        None if matches!(to, DataType::Float32 | DataType::Float64) => match v {
            ScalarValue::Utf8(Some(text)) => {
                let float4 = to == &DataType::Float32;
                let f =
                    crate::pgtypes::parse_float_as(text, float4).map_err(crate::provider::to_df)?;
                Ok(ScalarValue::Float64(Some(f)).cast_to(to).ok())
            }
            _ => Ok(None),
        },
        // PostgreSQL's boolean input, whose error quotes the text as written
        // (Arrow's quotes it trimmed and in lower case).
        None if to == &DataType::Boolean => match v {
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)) => crate::coerce::parse_bool(text)
                .map(|b| Some(ScalarValue::Boolean(Some(b))))
                .map_err(crate::provider::to_df),
            _ => Ok(None),
        },
        None if matches!(v, ScalarValue::Utf8(Some(_))) => Ok(v.cast_to(to).ok()),
        None => Ok(None),
    }
}

fn call(name: &str, args: Vec<Expr>, like: &ScalarFunction) -> Option<Expr> {
    // Reuse the registered function of the same family: the rule has no
    // registry, but the plan's own `round` etc. are what we need.
    let _ = like;
    let f = match name {
        "round" => datafusion::functions::math::round(),
        "trunc" => datafusion::functions::math::trunc(),
        "abs" => datafusion::functions::math::abs(),
        _ => return None,
    };
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(f, args)))
}

fn rewrite(e: Expr, schema: &DFSchemaRef) -> Result<Transformed<Expr>> {
    if let Expr::Cast(Cast { expr, field }) = &e {
        if let Some(folded) = fold_literal(expr, field.data_type())? {
            return Ok(Transformed::yes(Expr::Literal(folded, None)));
        }
    }
    match &e {
        Expr::Cast(Cast { expr, field }) if is_int(field.data_type()) => {
            let Ok(from) = expr.get_type(schema) else {
                return Ok(Transformed::no(e));
            };
            let dummy = ScalarFunction::new_udf(datafusion::functions::math::round(), vec![]);
            let rounded = match from {
                DataType::Decimal128(..) => {
                    // NaN and ±Infinity cannot become integers: the guard
                    // fails with PostgreSQL's error for the target type.
                    let target = match field.data_type() {
                        DataType::Int16 => "::smallint",
                        DataType::Int32 => "::integer",
                        _ => "::bigint",
                    };
                    let guarded = Expr::ScalarFunction(ScalarFunction::new_udf(
                        crate::numeric::FiniteGuard::udf(),
                        vec![*expr.clone(), lit(target)],
                    ));
                    call("round", vec![guarded], &dummy)
                }
                DataType::Decimal256(..) => call("round", vec![*expr.clone()], &dummy),
                DataType::Float32 | DataType::Float64 => {
                    // Ties to even: an exact .5 rounds to the even neighbour.
                    let x = *expr.clone();
                    let frac = call(
                        "abs",
                        vec![x.clone() - call("trunc", vec![x.clone()], &dummy).unwrap()],
                        &dummy,
                    )
                    .unwrap();
                    let even =
                        lit(2.0) * call("round", vec![x.clone() / lit(2.0)], &dummy).unwrap();
                    let nearest = call("round", vec![x], &dummy).unwrap();
                    Some(when(frac.eq(lit(0.5)), even).otherwise(nearest)?)
                }
                _ => None,
            };
            match rounded {
                Some(r) => Ok(Transformed::yes(Expr::Cast(Cast {
                    expr: Box::new(r),
                    field: field.clone(),
                }))),
                None => Ok(Transformed::no(e)),
            }
        }
        Expr::ScalarFunction(f)
            if f.args.len() == 1
                && matches!(f.func.name(), "ceil" | "floor" | "trunc" | "round") =>
        {
            match f.args[0].get_type(schema) {
                Ok(DataType::Decimal128(p, s)) if s > 0 => Ok(Transformed::yes(
                    e.cast_to(&DataType::Decimal128(p, 0), schema.as_ref())?,
                )),
                _ => Ok(Transformed::no(e)),
            }
        }
        _ => Ok(Transformed::no(e)),
    }
}

impl OptimizerRule for PostgresNumericCasts {
    fn name(&self) -> &str {
        "eon_postgres_numeric_casts"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // Only projections and filters: a projection keeps each rewritten
        // expression's name (an alias), so nothing that refers to its output
        // notices; a filter's expressions name nothing.
        match plan {
            LogicalPlan::Projection(p) => {
                let schema = p.input.schema().clone();
                let mut changed = false;
                let mut exprs = Vec::with_capacity(p.expr.len());
                for e in p.expr {
                    let name = e.schema_name().to_string();
                    let t = e.transform_up(|x| rewrite(x, &schema))?;
                    changed |= t.transformed;
                    exprs.push(if t.transformed {
                        t.data.alias_if_changed(name)?
                    } else {
                        t.data
                    });
                }
                let plan = LogicalPlan::Projection(datafusion::logical_expr::Projection::try_new(
                    exprs, p.input,
                )?);
                Ok(if changed {
                    Transformed::yes(plan)
                } else {
                    Transformed::no(plan)
                })
            }
            LogicalPlan::Filter(f) => {
                let schema = f.input.schema().clone();
                let t = f.predicate.transform_up(|x| rewrite(x, &schema))?;
                let plan = LogicalPlan::Filter(datafusion::logical_expr::Filter::try_new(
                    t.data, f.input,
                )?);
                Ok(if t.transformed {
                    Transformed::yes(plan)
                } else {
                    Transformed::no(plan)
                })
            }
            // VALUES rows: rewritten like a projection's expressions (a row
            // names nothing, so no aliases are needed).
            values @ LogicalPlan::Values(_) => {
                let schema = values.schema().clone();
                values.map_expressions(|e| e.transform_up(|x| rewrite(x, &schema)))
            }
            // Aggregates' and window functions' arguments: only casts of
            // literals are folded (`max('NaN'::numeric)`), each expression
            // keeping its name, which the plan above refers to.
            plan @ (LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)) => {
                let names = datafusion::logical_expr::expr_rewriter::NamePreserver::new(&plan);
                plan.map_expressions(|e| {
                    let name = names.save(&e);
                    Ok(e.transform_up(|x| match &x {
                        Expr::Cast(Cast { expr, field }) => {
                            match fold_literal(expr, field.data_type())? {
                                Some(folded) => Ok(Transformed::yes(Expr::Literal(folded, None))),
                                None => Ok(Transformed::no(x)),
                            }
                        }
                        _ => Ok(Transformed::no(x)),
                    })?
                    .update_data(|e| name.restore(e)))
                })
            }
            other => Ok(Transformed::no(other)),
        }
    }
}
