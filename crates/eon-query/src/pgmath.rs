//! PostgreSQL's math functions: untyped literals as their arguments, and
//! the errors PostgreSQL raises where IEEE arithmetic would answer NaN or
//! ±Infinity.
//!
//! **Untyped literals.** In PostgreSQL a quoted literal without a type
//! (`'2.0'`) has the type *unknown* until its context resolves it: in
//! `f1 ^ '2.0'`, `x / '0'`, `power(x, '-1')` or `ln('10')` it takes the
//! numeric type of the other operand — double precision when there is
//! none, the preferred type of the numeric category. DataFusion types the
//! literal text, then finds no arithmetic or function over text. The
//! planner extension [`UnknownOperands`] (for `+ - * / %`, whose type
//! DataFusion's SQL planner needs at once) and the analyzer rule
//! [`UnknownLiterals`] (for function arguments, run before DataFusion's
//! type coercion) cast such literals to the type PostgreSQL would choose
//! (a cast that fails gives 22P02, as PostgreSQL's input function does).
//!
//! **Errors.** `ln(0)` is -Infinity and `sqrt(-1)` NaN in IEEE arithmetic;
//! PostgreSQL refuses them: `cannot take logarithm of zero` (2201E),
//! `cannot take square root of a negative number` (2201F), `zero raised to
//! a negative power is undefined`, and a finite result too large or too
//! small for a double is `value out of range: overflow` / `underflow`
//! (22003). [`PgMath`] wraps DataFusion's `ln`, `log`, `log10`, `sqrt`,
//! `power` and `exp`, checks their arguments and result, and otherwise
//! leaves them as they are. Such calls are evaluated by the query engine
//! (the data engines know only DataFusion's own functions), so
//! `provider::ship` keeps filters that use them.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Float64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use eon_common::Error;
use eon_common::error::sqlstate;

/// SQLSTATE 2201E, invalid_argument_for_logarithm.
const INVALID_ARGUMENT_FOR_LOGARITHM: &str = "2201E";
/// SQLSTATE 2201F, invalid_argument_for_power_function.
const INVALID_ARGUMENT_FOR_POWER: &str = "2201F";

/// The functions whose untyped literal arguments resolve to a number.
const NUMERIC_FUNCTIONS: &[&str] = &[
    "power", "pow", "ln", "log", "log10", "exp", "sqrt", "cbrt", "mod", "round", "trunc", "ceil",
    "floor", "abs", "sign", "signum", "div", "gcd", "lcm",
];

/// Functions that exist for double precision and numeric only: an integer
/// beside an untyped literal makes the literal double precision.
const FLOAT_OR_NUMERIC_FUNCTIONS: &[&str] =
    &["power", "pow", "ln", "log", "log10", "exp", "sqrt", "cbrt"];

pub fn register(ctx: &SessionContext) {
    for (name, check) in [
        ("ln", Check::Log),
        ("log", Check::Log),
        ("log10", Check::Log),
        ("sqrt", Check::Sqrt),
        ("power", Check::Power),
        ("exp", Check::Exp),
    ] {
        if let Ok(inner) = datafusion::execution::FunctionRegistry::udf(ctx, name) {
            ctx.register_udf(ScalarUDF::new_from_impl(PgMath { inner, check }));
        }
    }
}

/// True for a call of a function [`PgMath`] wraps (evaluated by the query
/// engine only).
pub fn is_pg_math(f: &ScalarFunction) -> bool {
    f.func.inner().is::<PgMath>()
}

fn is_unknown_literal(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Literal(
            ScalarValue::Utf8(Some(_))
                | ScalarValue::LargeUtf8(Some(_))
                | ScalarValue::Utf8View(Some(_)),
            None
        )
    )
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

fn cast_to(e: Expr, t: &DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(e), t.clone()))
}

/// Untyped literals in arithmetic and numeric functions take the type of
/// the number beside them (see the module docs).
#[derive(Debug)]
pub struct UnknownLiterals;

impl AnalyzerRule for UnknownLiterals {
    fn name(&self) -> &str {
        "eon_unknown_literals"
    }

    fn analyze(
        &self,
        plan: LogicalPlan,
        _config: &ConfigOptions,
    ) -> datafusion::common::Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            if plan.inputs().is_empty() && !matches!(plan, LogicalPlan::Values(_)) {
                return Ok(Transformed::no(plan));
            }
            let schema = merge_schema(&plan.inputs());
            let out = plan.map_expressions(|expr| expr.transform_up(|e| resolve(e, &schema)))?;
            if out.transformed {
                out.map_data(|p| p.recompute_schema())
            } else {
                Ok(out)
            }
        })
        .map(|t| t.data)
    }
}

/// `x + '1'`, `'10' / x`, …: the untyped operand takes the type of the
/// number beside it, while DataFusion's SQL planner builds the expression.
#[derive(Debug)]
pub struct UnknownOperands;

impl ExprPlanner for UnknownOperands {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> datafusion::common::Result<PlannerResult<RawBinaryExpr>> {
        use datafusion::sql::sqlparser::ast::BinaryOperator as B;
        let RawBinaryExpr { op, left, right } = expr;
        if !matches!(op, B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo) {
            return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
        }
        let type_of = |x: &Expr| x.get_type(schema).ok().filter(is_number);
        let (left, right) = match (is_unknown_literal(&left), is_unknown_literal(&right)) {
            (true, false) => match type_of(&right) {
                Some(t) => (cast_to(left, &t), right),
                None => (left, right),
            },
            (false, true) => match type_of(&left) {
                Some(t) => (left, cast_to(right, &t)),
                None => (left, right),
            },
            _ => (left, right),
        };
        Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }))
    }
}

fn resolve(e: Expr, schema: &DFSchema) -> datafusion::common::Result<Transformed<Expr>> {
    let type_of = |x: &Expr| x.get_type(schema).ok().filter(is_number);
    match e {
        Expr::ScalarFunction(mut f)
            if NUMERIC_FUNCTIONS.contains(&f.func.name())
                && f.args.iter().any(is_unknown_literal) =>
        {
            let known = f
                .args
                .iter()
                .filter(|a| !is_unknown_literal(a))
                .find_map(type_of);
            let float_only = FLOAT_OR_NUMERIC_FUNCTIONS.contains(&f.func.name());
            let t = match known {
                Some(t) if float_only && t.is_integer() => DataType::Float64,
                Some(t) => t,
                None => DataType::Float64,
            };
            f.args = f
                .args
                .into_iter()
                .map(|a| {
                    if is_unknown_literal(&a) {
                        cast_to(a, &t)
                    } else {
                        a
                    }
                })
                .collect();
            Ok(Transformed::yes(Expr::ScalarFunction(f)))
        }
        e => Ok(Transformed::no(e)),
    }
}

/// What [`PgMath`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Check {
    /// `ln`, `log`, `log10`: every argument positive.
    Log,
    /// `sqrt`: not negative.
    Sqrt,
    /// `power(x, y)`: no 0 to a negative power, no negative to a
    /// fractional one, a finite result for finite arguments.
    Power,
    /// `exp`: a finite, non-zero result for a finite argument.
    Exp,
}

/// One of DataFusion's math functions with PostgreSQL's errors (see the
/// module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgMath {
    inner: Arc<ScalarUDF>,
    check: Check,
}

fn user(code: &str, message: &str) -> DataFusionError {
    DataFusionError::External(Box::new(Error::user(code, message)))
}

fn out_of_range(what: &str) -> DataFusionError {
    user(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        &format!("value out of range: {what}"),
    )
}

/// The values of an argument as doubles (numeric's NaN and infinities
/// kept), one per row.
fn as_floats(v: &ColumnarValue, rows: usize) -> datafusion::common::Result<Vec<Option<f64>>> {
    let array: ArrayRef = v.to_array(rows)?;
    let floats = crate::numeric::cast_array(&array, &DataType::Float64)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(floats.as_primitive::<Float64Type>().iter().collect())
}

impl PgMath {
    fn check_args(&self, args: &[Vec<Option<f64>>], rows: usize) -> datafusion::common::Result<()> {
        for row in 0..rows {
            let vals: Option<Vec<f64>> = args.iter().map(|a| a[row]).collect();
            let Some(vals) = vals else { continue };
            match self.check {
                Check::Log => {
                    for &v in &vals {
                        if v == 0.0 {
                            return Err(user(
                                INVALID_ARGUMENT_FOR_LOGARITHM,
                                "cannot take logarithm of zero",
                            ));
                        }
                        if v < 0.0 {
                            return Err(user(
                                INVALID_ARGUMENT_FOR_LOGARITHM,
                                "cannot take logarithm of a negative number",
                            ));
                        }
                    }
                }
                Check::Sqrt => {
                    if vals[0] < 0.0 {
                        return Err(user(
                            INVALID_ARGUMENT_FOR_POWER,
                            "cannot take square root of a negative number",
                        ));
                    }
                }
                Check::Power => {
                    let (x, y) = (vals[0], vals[1]);
                    if x == 0.0 && y < 0.0 {
                        return Err(user(
                            INVALID_ARGUMENT_FOR_POWER,
                            "zero raised to a negative power is undefined",
                        ));
                    }
                    if x < 0.0 && y.is_finite() && y.fract() != 0.0 {
                        return Err(user(
                            INVALID_ARGUMENT_FOR_POWER,
                            "a negative number raised to a non-integer power yields a complex result",
                        ));
                    }
                    let r = x.powf(y);
                    if x.is_finite() && y.is_finite() {
                        if r.is_infinite() {
                            return Err(out_of_range("overflow"));
                        }
                        if r == 0.0 && x != 0.0 {
                            return Err(out_of_range("underflow"));
                        }
                    }
                }
                Check::Exp => {
                    let (x, r) = (vals[0], vals[0].exp());
                    if x.is_finite() {
                        if r.is_infinite() {
                            return Err(out_of_range("overflow"));
                        }
                        if r == 0.0 {
                            return Err(out_of_range("underflow"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl ScalarUDFImpl for PgMath {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows;
        let values = args
            .args
            .iter()
            .map(|a| as_floats(a, rows))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        self.check_args(&values, rows)?;
        self.inner.invoke_with_args(args)
    }
}
