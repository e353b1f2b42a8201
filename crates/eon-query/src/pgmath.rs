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
//! planner extension [`UnknownOperands`] casts the untyped operand of
//! `+ - * / % ^` to the other operand's type while DataFusion's SQL
//! planner builds the expression (a cast that fails gives 22P02, as
//! PostgreSQL's input function does). For the arguments of `power`, `ln`,
//! `log`, `sqrt`, … — functions of double precision and numeric —
//! [`rewrite_unknown_args`] casts them before planning: to numeric when an
//! argument beside them is written as a numeric (`1.5`, `x::numeric`),
//! else to double precision, PostgreSQL's preferred numeric type.
//!
//! **mod(x, y)**, PostgreSQL's name for `x % y` (the remainder with the
//! sign of x; 22012 for a zero divisor), over two numbers of any types
//! brought to a common one, as the operator is.
//!
//! **Errors.** `ln(0)` is -Infinity and `sqrt(-1)` NaN in IEEE arithmetic;
//! PostgreSQL refuses them: `cannot take logarithm of zero` (2201E),
//! `cannot take square root of a negative number` (2201F), `zero raised to
//! a negative power is undefined`, and a finite result too large or too
//! small for a double is `value out of range: overflow` / `underflow`
//! (22003), as is `acosh` below 1 or `atanh` outside [-1, 1] (`input is
//! out of range`). [`PgMath`] wraps DataFusion's `ln`, `log`, `log10`,
//! `sqrt`, `power`, `exp`, `acosh` and `atanh`, checks their arguments
//! and result, and otherwise
//! leaves them as they are. Such calls are evaluated by the query engine
//! (the data engines know only DataFusion's own functions), so
//! `provider::ship` keeps filters that use them.
//!
//! **Variance of infinities.** PostgreSQL's variance and standard
//! deviation of doubles are NaN once an input is ±Infinity or NaN (even a
//! single one: `var_pop('inf'::float8)` is NaN); DataFusion's answer 0 for
//! one row and NaN or Infinity otherwise. [`NonFinite`] wraps its
//! `var_pop`, `var_samp`, `stddev_pop` and `stddev`: DataFusion's
//! accumulator sees only the finite inputs and the wrapper counts the
//! others (counts that travel in the partial state), so a sliding window
//! frame can take an infinity back out — as PostgreSQL, which recomputes
//! such a frame, gives the variance of the rest.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Cast, ColumnarValue, Expr, ExprSchemable,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Statement, visit_expressions_mut};
use eon_common::error::sqlstate;

use crate::pgformat::fail;

/// SQLSTATE 2201E, invalid_argument_for_logarithm.
const INVALID_ARGUMENT_FOR_LOGARITHM: &str = "2201E";
/// SQLSTATE 2201F, invalid_argument_for_power_function.
const INVALID_ARGUMENT_FOR_POWER: &str = "2201F";

/// Functions that exist for double precision and numeric only, whose
/// untyped literal arguments [`rewrite_unknown_args`] casts.
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
        ("acosh", Check::Acosh),
        ("atanh", Check::Atanh),
    ] {
        if let Ok(inner) = datafusion::execution::FunctionRegistry::udf(ctx, name) {
            ctx.register_udf(ScalarUDF::new_from_impl(PgMath { inner, check }));
        }
    }
    ctx.register_udf(ScalarUDF::new_from_impl(Mod {
        signature: Signature::numeric(2, Volatility::Immutable),
    }));
    for name in ["var_pop", "var_samp", "stddev_pop", "stddev"] {
        if let Ok(inner) = datafusion::execution::FunctionRegistry::udaf(ctx, name) {
            ctx.register_udaf(AggregateUDF::new_from_impl(NonFinite { inner }));
        }
    }
}

/// A variance or standard deviation that is NaN once an input is not
/// finite (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct NonFinite {
    inner: Arc<AggregateUDF>,
}

impl AggregateUDFImpl for NonFinite {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        self.counting(self.inner.accumulator(args)?)
    }

    fn create_sliding_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        self.counting(self.inner.create_sliding_accumulator(args)?)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> datafusion::common::Result<Vec<FieldRef>> {
        let name = args.name.to_string();
        let mut fields = self.inner.state_fields(args)?;
        for what in ["finite", "non_finite"] {
            fields.push(Arc::new(Field::new(
                format!("{name}[{what}]"),
                DataType::UInt64,
                true,
            )));
        }
        Ok(fields)
    }
}

impl NonFinite {
    fn counting(
        &self,
        inner: Box<dyn Accumulator>,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        // A value needs one input for the population's, two for the
        // sample's.
        let minimum = if self.inner.name().contains("pop") {
            1
        } else {
            2
        };
        Ok(Box::new(CountingNonFinite {
            inner,
            minimum,
            finite: 0,
            non_finite: 0,
        }))
    }
}

/// The inner accumulator sees the finite inputs only, so that a sliding
/// frame can take them back out; the non-finite ones are counted.
#[derive(Debug)]
struct CountingNonFinite {
    inner: Box<dyn Accumulator>,
    minimum: u64,
    finite: u64,
    non_finite: u64,
}

/// `values`' finite numbers (and nulls), and how many of each kind.
fn split_finite(values: &ArrayRef) -> datafusion::common::Result<(ArrayRef, u64, u64)> {
    if !matches!(values.data_type(), DataType::Float64 | DataType::Float32) {
        let n = (values.len() - values.null_count()) as u64;
        return Ok((values.clone(), n, 0));
    }
    let floats = datafusion::arrow::compute::cast(values, &DataType::Float64)?;
    let keep: datafusion::arrow::array::BooleanArray = floats
        .as_primitive::<Float64Type>()
        .iter()
        .map(|v| Some(v.is_none_or(|v| v.is_finite())))
        .collect();
    let kept = datafusion::arrow::compute::filter(values, &keep)?;
    let finite = (kept.len() - kept.null_count()) as u64;
    let non_finite = (values.len() - kept.len()) as u64;
    Ok((kept, finite, non_finite))
}

impl Accumulator for CountingNonFinite {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        let (kept, finite, non_finite) = split_finite(&values[0])?;
        self.finite += finite;
        self.non_finite += non_finite;
        self.inner.update_batch(&[kept])
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        let (kept, finite, non_finite) = split_finite(&values[0])?;
        self.finite = self.finite.saturating_sub(finite);
        self.non_finite = self.non_finite.saturating_sub(non_finite);
        self.inner.retract_batch(&[kept])
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        let sum = |a: &ArrayRef| -> u64 {
            a.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                .iter()
                .flatten()
                .sum()
        };
        let n = states.len();
        self.finite += sum(&states[n - 2]);
        self.non_finite += sum(&states[n - 1]);
        self.inner.merge_batch(&states[..n - 2])
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        let mut state = self.inner.state()?;
        state.push(ScalarValue::UInt64(Some(self.finite)));
        state.push(ScalarValue::UInt64(Some(self.non_finite)));
        Ok(state)
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        if self.non_finite == 0 {
            return self.inner.evaluate();
        }
        Ok(ScalarValue::Float64(
            (self.finite + self.non_finite >= self.minimum).then_some(f64::NAN),
        ))
    }

    fn size(&self) -> usize {
        self.inner.size() + 3 * std::mem::size_of::<u64>()
    }
}

/// `mod(x, y)` (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows;
        let x = args.args[0].to_array(rows)?;
        let y = args.args[1].to_array(rows)?;
        let r = datafusion::arrow::compute::kernels::numeric::rem(&x, &y)?;
        crate::pgfuncs::shaped_like(&args.args, r)
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

fn cast_to(e: Expr, t: &DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(e), t.clone()))
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
        if !matches!(
            op,
            B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo | B::PGExp
        ) {
            return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
        }
        // `^` is defined for double precision and numeric only.
        let type_of = |x: &Expr| {
            x.get_type(schema)
                .ok()
                .filter(DataType::is_numeric)
                .map(|t| match op {
                    B::PGExp
                        if !matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
                    {
                        DataType::Float64
                    }
                    _ => t,
                })
        };
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

/// Untyped literal arguments of `power`, `ln`, … cast to numeric or double
/// precision (see the module docs).
pub fn rewrite_unknown_args(statements: &mut [Statement]) {
    use datafusion::sql::sqlparser::ast::{
        DataType as T, Expr as E, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
        ValueWithSpan,
    };
    let unknown = |e: &E| {
        matches!(
            e,
            E::Value(ValueWithSpan {
                value: Value::SingleQuotedString(_),
                ..
            })
        )
    };
    let numeric = |e: &E| match e {
        E::Value(ValueWithSpan {
            value: Value::Number(n, _),
            ..
        }) => n.contains(['.', 'e', 'E']),
        E::Cast { data_type, .. } => {
            matches!(data_type, T::Numeric(_) | T::Decimal(_) | T::Dec(_))
        }
        _ => false,
    };
    for statement in statements {
        let _ = visit_expressions_mut(statement, |e: &mut E| {
            if let E::Function(f) = e
                && FLOAT_OR_NUMERIC_FUNCTIONS
                    .contains(&f.name.to_string().to_ascii_lowercase().as_str())
                && let FunctionArguments::List(list) = &mut f.args
            {
                let mut args: Vec<&mut E> = list
                    .args
                    .iter_mut()
                    .filter_map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x),
                        _ => None,
                    })
                    .collect();
                if args.iter().any(|a| unknown(a)) {
                    let to = if args.iter().any(|a| numeric(a)) {
                        T::Numeric(datafusion::sql::sqlparser::ast::ExactNumberInfo::None)
                    } else {
                        T::DoublePrecision
                    };
                    for a in args.iter_mut().filter(|a| unknown(a)) {
                        **a = E::Cast {
                            kind: datafusion::sql::sqlparser::ast::CastKind::DoubleColon,
                            expr: Box::new(a.clone()),
                            data_type: to.clone(),
                            array: false,
                            format: None,
                        };
                    }
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
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
    /// `acosh`: at least 1; `atanh`: within [-1, 1].
    Acosh,
    Atanh,
}

/// One of DataFusion's math functions with PostgreSQL's errors (see the
/// module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgMath {
    inner: Arc<ScalarUDF>,
    check: Check,
}

fn out_of_range(what: &str) -> DataFusionError {
    fail(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        format!("value out of range: {what}"),
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
    /// `args` holds one or two arguments' values; rows with a NULL are
    /// not checked.
    fn check_args(&self, args: &[Vec<Option<f64>>], rows: usize) -> datafusion::common::Result<()> {
        for row in 0..rows {
            let Some(x) = args[0][row] else { continue };
            let y = match args.get(1) {
                Some(a) => match a[row] {
                    Some(y) => Some(y),
                    None => continue,
                },
                None => None,
            };
            match self.check {
                Check::Log => {
                    for v in std::iter::once(x).chain(y) {
                        if v == 0.0 {
                            return Err(fail(
                                INVALID_ARGUMENT_FOR_LOGARITHM,
                                "cannot take logarithm of zero",
                            ));
                        }
                        if v < 0.0 {
                            return Err(fail(
                                INVALID_ARGUMENT_FOR_LOGARITHM,
                                "cannot take logarithm of a negative number",
                            ));
                        }
                    }
                }
                Check::Sqrt => {
                    if x < 0.0 {
                        return Err(fail(
                            INVALID_ARGUMENT_FOR_POWER,
                            "cannot take square root of a negative number",
                        ));
                    }
                }
                Check::Power => {
                    let Some(y) = y else { continue };
                    if x == 0.0 && y < 0.0 {
                        return Err(fail(
                            INVALID_ARGUMENT_FOR_POWER,
                            "zero raised to a negative power is undefined",
                        ));
                    }
                    if x < 0.0 && y.is_finite() && y.fract() != 0.0 {
                        return Err(fail(
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
                Check::Acosh | Check::Atanh => {
                    let outside = match self.check {
                        Check::Acosh => x < 1.0,
                        _ => !(-1.0..=1.0).contains(&x),
                    };
                    if outside {
                        return Err(fail(
                            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                            "input is out of range",
                        ));
                    }
                }
                Check::Exp => {
                    let r = x.exp();
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
