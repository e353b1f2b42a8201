//! `avg`, `variance` and `stddev` of exact numbers, as PostgreSQL computes
//! them: exactly, answering numeric.
//!
//! In PostgreSQL the average of integers or numerics is a numeric, and so
//! are their variance and standard deviation. They are computed from the
//! count, the sum and the sum of squares without rounding, and the one
//! division at the end picks its **display scale** from its operands
//! (`select_div_scale`): enough digits for 16 significant ones, and never
//! fewer than the inputs show. `avg(x)` of 1 and 2 is `1.5000000000000000`,
//! of 0 and 0 `0.00000000000000000000`, and `var_pop` of 600, 470, 170,
//! 430 and 300 `21704.000000000000`. DataFusion's versions answer a double.
//!
//! [`Exact`] wraps DataFusion's `avg`, `var_pop`, `var` (`var_samp`,
//! `variance`), `stddev_pop` and `stddev` (`stddev_samp`): doubles still go
//! to them; integers and numerics get [`Moments`], which sums in 256-bit
//! integers (the squares of bigints fit), divides with PostgreSQL's scale
//! and rounding, and takes the square root to the same scale. NaN and the
//! infinities of numeric are counted apart, as PostgreSQL does: `avg` of
//! `Infinity` is `Infinity`, a variance with any of them NaN. `sum` of
//! numerics goes through the same accumulator for the same reason (the
//! special values are counted, not added as the integers eon stores them
//! as); it answers at the input's scale, with no display-scale metadata.
//!
//! **The display scale travels with the column.** An eon numeric has one
//! scale per column (an Arrow `Decimal128(38, s)`), while PostgreSQL's
//! display scale belongs to each value. So the result holds the quotient
//! to [`scale_for`] digits, and its field carries the
//! [`DISPLAY_KEY`] metadata: the output encoders ([`Display`]) work
//! each value's display scale out again from the value itself, with
//! PostgreSQL's rule. (The rule looks at the leading digits of the
//! operands, which the quotient reflects but for one case it cannot see —
//! a sum whose first base-10000 digit equals the count's — handled for
//! the common instance, a quotient that is a power of 10000.) An
//! expression over the result (`avg(x) * 2`) is an ordinary numeric of
//! that scale.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Decimal256Type, Field, FieldRef, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt64Type, i256,
};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, ReversedUDAF, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use eon_common::error::sqlstate;
use eon_common::value::special;

use crate::pgformat::fail;

/// Field metadata naming how a numeric column's values choose their
/// display scale: `<kind>:<least scale>:<scale held at>` (see
/// [`Display`]).
pub const DISPLAY_KEY: &str = "eon.numeric_display";

/// PostgreSQL's NUMERIC_MIN_SIG_DIGITS: a quotient shows at least this
/// many significant digits.
const MIN_SIG_DIGITS: i32 = 16;
/// PostgreSQL's NUMERIC_MAX_DISPLAY_SCALE.
const MAX_DISPLAY_SCALE: i32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `sum` of numerics only: integers' sums are DataFusion's.
    Sum,
    Avg,
    VarPop,
    VarSamp,
    StddevPop,
    StddevSamp,
}

impl Kind {
    /// How the display scale of a result of this kind is chosen.
    fn display(self) -> &'static str {
        match self {
            Kind::Sum | Kind::Avg => "avg",
            Kind::VarPop | Kind::VarSamp => "var",
            Kind::StddevPop | Kind::StddevSamp => "stddev",
        }
    }
}

pub fn register(ctx: &SessionContext) {
    for (name, kind) in [
        ("sum", Kind::Sum),
        ("avg", Kind::Avg),
        ("var_pop", Kind::VarPop),
        ("var_samp", Kind::VarSamp),
        ("stddev_pop", Kind::StddevPop),
        ("stddev", Kind::StddevSamp),
    ] {
        if let Ok(inner) = datafusion::execution::FunctionRegistry::udaf(ctx, name) {
            ctx.register_udaf(AggregateUDF::new_from_impl(Exact {
                inner,
                kind,
                signature: Signature::user_defined(Volatility::Immutable),
            }));
        }
    }
}

/// The input's scale when it is exact (an integer, scale 0, or a
/// numeric), with the scale a result is held at: 20 digits after the
/// point, what a quotient of ordinary magnitude shows, leaving 18 integer
/// digits; for bigints 18, leaving 20 (an average of bigints can have 19).
/// A variance beyond those digits (bigints spread by more than 10^10)
/// overflows, 22003.
fn exact_input(kind: Kind, t: &DataType) -> Option<(i8, i8)> {
    match t {
        // A sum of numerics is held at their scale.
        DataType::Decimal128(_, s) if kind == Kind::Sum => Some((*s, *s)),
        _ if kind == Kind::Sum => None,
        DataType::Int16 | DataType::Int32 => Some((0, 20)),
        DataType::Int64 => Some((0, 18)),
        DataType::Decimal128(p, s) => Some((*s, scale_for(*p, *s))),
        _ => None,
    }
}

/// The scale a result over numeric(p, s) is held at: 20 digits after the
/// point (what a quotient of ordinary magnitude shows), or the input's
/// own scale if more, leaving room for 18 integer digits.
fn scale_for(p: u8, s: i8) -> i8 {
    let integer = (p as i32 - s as i32).clamp(0, 18);
    (s as i32).max(20).min(38 - integer) as i8
}

/// The display scale of the input's values, as far as eon knows it: a
/// numeric column's declared scale (0 for integers and the unconstrained
/// numeric, whose values' own scales eon does not keep).
fn declared_scale(field: &Field) -> i32 {
    match crate::pgtypes::sql_type_of(field) {
        Some(eon_common::SqlType::Numeric { precision, scale }) if precision > 0 => {
            (scale as i32).max(0)
        }
        _ => 0,
    }
}

/// `avg` and friends (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Exact {
    inner: Arc<AggregateUDF>,
    kind: Kind,
    signature: Signature,
}

impl AggregateUDFImpl for Exact {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        match arg_types {
            [DataType::Int8 | DataType::UInt8] => Ok(vec![DataType::Int16]),
            [DataType::UInt16] => Ok(vec![DataType::Int32]),
            [DataType::UInt32 | DataType::UInt64] => Ok(vec![DataType::Int64]),
            [t] if exact_input(self.kind, t).is_some() => Ok(vec![t.clone()]),
            _ => {
                let fields: Vec<FieldRef> = arg_types
                    .iter()
                    .map(|t| Arc::new(Field::new("x", t.clone(), true)))
                    .collect();
                let coerced = datafusion::logical_expr::type_coercion::functions::fields_with_udf(
                    &fields,
                    self.inner.as_ref(),
                )?;
                Ok(coerced.iter().map(|f| f.data_type().clone()).collect())
            }
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        match arg_types.first().and_then(|t| exact_input(self.kind, t)) {
            Some((_, out)) => Ok(DataType::Decimal128(38, out)),
            None => self.inner.return_type(arg_types),
        }
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> datafusion::common::Result<FieldRef> {
        let Some(input) = arg_fields.first() else {
            return self.inner.return_field(arg_fields);
        };
        match exact_input(self.kind, input.data_type()) {
            Some((_, out)) if self.kind == Kind::Sum => Ok(Arc::new(Field::new(
                self.name(),
                DataType::Decimal128(38, out),
                true,
            ))),
            Some((_, out)) => {
                // The least display scale: the sum's for an average, the
                // sum of squares' for the others.
                let least = match self.kind {
                    Kind::Avg => declared_scale(input),
                    _ => 2 * declared_scale(input),
                };
                Ok(Arc::new(
                    Field::new(self.name(), DataType::Decimal128(38, out), true).with_metadata(
                        [(
                            DISPLAY_KEY.to_string(),
                            format!("{}:{least}:{out}", self.kind.display()),
                        )]
                        .into(),
                    ),
                ))
            }
            None => self.inner.return_field(arg_fields),
        }
    }

    fn accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        self.moments(args, AggregateUDF::accumulator)
    }

    fn create_sliding_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        // Moments take values back out as well as in.
        self.moments(args, AggregateUDF::create_sliding_accumulator)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        exact_input(self.kind, args.expr_fields[0].data_type()).is_none()
            && self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> datafusion::common::Result<Vec<FieldRef>> {
        let input = args.input_fields[0].data_type().clone();
        if exact_input(self.kind, &input).is_none() {
            return self.inner.state_fields(args);
        }
        let name = args.name;
        let field =
            |what: &str, t: DataType| Arc::new(Field::new(format!("{name}[{what}]"), t, true));
        if args.is_distinct {
            return Ok(vec![field(
                "distinct",
                DataType::List(Arc::new(Field::new_list_field(input, true))),
            )]);
        }
        Ok(vec![
            field("n", DataType::UInt64),
            field("sum", DataType::Decimal256(76, 0)),
            field("sum_squares", DataType::Decimal256(76, 0)),
            field("nan", DataType::UInt64),
            field("infinity", DataType::UInt64),
            field("minus_infinity", DataType::UInt64),
            field("dscale", DataType::UInt8),
        ])
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

impl Exact {
    /// [`Moments`] for an exact input, else the wrapped function's
    /// accumulator (`inner`).
    fn moments(
        &self,
        args: AccumulatorArgs,
        inner: fn(
            &AggregateUDF,
            AccumulatorArgs,
        ) -> datafusion::common::Result<Box<dyn Accumulator>>,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        match Moments::for_input(self.kind, &args.expr_fields[0], args.is_distinct) {
            Some(m) => Ok(Box::new(m)),
            None => inner(&self.inner, args),
        }
    }
}

/// The running count, sum and sum of squares of exact inputs (see the
/// module docs). Sums are of the inputs' unscaled integers: `sum` at the
/// input's scale, `sum_squares` at twice it.
#[derive(Debug)]
struct Moments {
    kind: Kind,
    input: DataType,
    scale: i8,
    out_scale: i8,
    n: u64,
    sum: i256,
    sum_squares: i256,
    nan: u64,
    infinity: u64,
    minus_infinity: u64,
    /// The inputs' display scale ([`declared_scale`]).
    dscale: u8,
    /// With DISTINCT: each value and how many times it was seen.
    distinct: Option<HashMap<i128, u64>>,
}

/// The unscaled integers of an exact array, with its nulls.
fn unscaled(values: &ArrayRef) -> Vec<Option<i128>> {
    match values.data_type() {
        DataType::Int16 => values
            .as_primitive::<Int16Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Int32 => values
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Int64 => values
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        _ => values.as_primitive::<Decimal128Type>().iter().collect(),
    }
}

fn overflow() -> DataFusionError {
    fail(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "value overflows numeric format",
    )
}

impl Moments {
    fn for_input(kind: Kind, field: &Field, distinct: bool) -> Option<Moments> {
        Moments::new(
            kind,
            field.data_type(),
            declared_scale(field) as u8,
            distinct,
        )
    }

    fn new(kind: Kind, input: &DataType, dscale: u8, distinct: bool) -> Option<Moments> {
        let (scale, out_scale) = exact_input(kind, input)?;
        Some(Moments {
            kind,
            input: input.clone(),
            scale,
            out_scale,
            n: 0,
            sum: i256::ZERO,
            sum_squares: i256::ZERO,
            nan: 0,
            infinity: 0,
            minus_infinity: 0,
            dscale,
            distinct: distinct.then(HashMap::new),
        })
    }

    /// Add (`sign` 1) or take back (-1) one value.
    fn add(&mut self, v: i128, sign: i64) -> datafusion::common::Result<()> {
        let step = |count: &mut u64| {
            *count = if sign > 0 {
                *count + 1
            } else {
                count.saturating_sub(1)
            }
        };
        let special = match v {
            special::NAN => Some(&mut self.nan),
            special::INFINITY => Some(&mut self.infinity),
            special::NEG_INFINITY => Some(&mut self.minus_infinity),
            _ => None,
        };
        if let Some(count) = special {
            step(count);
            return Ok(());
        }
        step(&mut self.n);
        let x = i256::from_i128(v);
        // (A sum needs no squares, which could overflow where it does not.)
        let square = if self.kind == Kind::Sum {
            i256::ZERO
        } else {
            x.checked_mul(x).ok_or_else(overflow)?
        };
        if sign > 0 {
            self.sum = self.sum.checked_add(x).ok_or_else(overflow)?;
            self.sum_squares = self.sum_squares.checked_add(square).ok_or_else(overflow)?;
        } else {
            self.sum = self.sum.checked_sub(x).ok_or_else(overflow)?;
            self.sum_squares = self.sum_squares.checked_sub(square).ok_or_else(overflow)?;
        }
        Ok(())
    }

    /// The answer from the running sums.
    fn answer(&self) -> datafusion::common::Result<ScalarValue> {
        let out = |v: Option<i128>| ScalarValue::Decimal128(v, 38, self.out_scale);
        let specials = self.nan + self.infinity + self.minus_infinity;
        let total = self.n + specials;
        let needed = match self.kind {
            Kind::VarSamp | Kind::StddevSamp => 2,
            _ => 1,
        };
        if total < needed {
            return Ok(out(None));
        }
        if specials > 0 {
            let v = match self.kind {
                Kind::Sum | Kind::Avg if self.nan == 0 && self.minus_infinity == 0 => {
                    special::INFINITY
                }
                Kind::Sum | Kind::Avg if self.nan == 0 && self.infinity == 0 => {
                    special::NEG_INFINITY
                }
                _ => special::NAN,
            };
            return Ok(out(Some(v)));
        }
        let n = i256::from_i128(self.n as i128);
        let s = self.scale as i32;
        let d = self.dscale as i32;
        let (value, rscale) = match self.kind {
            Kind::Sum => (self.sum, s),
            Kind::Avg => divide((self.sum, s, d), (n, 0, 0))?,
            _ => {
                // N·Σx² − (Σx)², at twice the input's scale.
                let numerator = n
                    .checked_mul(self.sum_squares)
                    .and_then(|a| a.checked_sub(self.sum.checked_mul(self.sum)?))
                    .ok_or_else(overflow)?;
                if numerator <= i256::ZERO {
                    // (A negative numerator would be roundoff in PostgreSQL.)
                    return Ok(out(Some(0)));
                }
                let denominator = match self.kind {
                    Kind::VarSamp | Kind::StddevSamp => n * (n - i256::ONE),
                    _ => n * n,
                };
                let (var, rscale) = divide((numerator, 2 * s, 2 * d), (denominator, 0, 0))?;
                match self.kind {
                    Kind::StddevPop | Kind::StddevSamp => (sqrt(var, rscale)?, rscale),
                    _ => (var, rscale),
                }
            }
        };
        Ok(out(Some(rescale(value, rscale, self.out_scale as i32)?)))
    }
}

fn pow10(e: i32) -> datafusion::common::Result<i256> {
    i256::from_i128(10)
        .checked_pow(e.max(0) as u32)
        .ok_or_else(overflow)
}

/// The weight (position in base 10 000) and first base-10 000 digit of
/// the unscaled `x` at `scale`, as PostgreSQL's select_div_scale reads
/// them (0 and 0 for zero).
fn weight_and_first_digit(x: i256, scale: i32) -> (i32, i256) {
    if x == i256::ZERO {
        return (0, i256::ZERO);
    }
    let x = x.wrapping_abs();
    let digits = x.ilog10() as i32 + 1;
    // The power of ten of the leading digit, then its base-10 000 group.
    let exponent = digits - 1 - scale;
    let weight = exponent.div_euclid(4);
    let below = 4 * weight + scale;
    let first = if below >= 0 {
        x / i256::from_i128(10).wrapping_pow(below as u32)
    } else {
        x * i256::from_i128(10).wrapping_pow((-below) as u32)
    };
    (weight, first)
}

/// PostgreSQL's select_div_scale for `a / b`, each (unscaled, scale,
/// display scale).
fn div_scale(a: (i256, i32, i32), b: (i256, i32, i32)) -> i32 {
    let (w1, f1) = weight_and_first_digit(a.0, a.1);
    let (w2, f2) = weight_and_first_digit(b.0, b.1);
    let mut qweight = w1 - w2;
    if f1 <= f2 {
        qweight -= 1;
    }
    (MIN_SIG_DIGITS - qweight * 4)
        .max(a.2)
        .max(b.2)
        .clamp(0, MAX_DISPLAY_SCALE)
}

/// `a / b` rounded half away from zero to PostgreSQL's scale for it:
/// (unscaled quotient, its scale).
fn divide(a: (i256, i32, i32), b: (i256, i32, i32)) -> datafusion::common::Result<(i256, i32)> {
    let rscale = div_scale(a, b);
    // a/10^sa ÷ b/10^sb · 10^r = a·10^(sb + r) ÷ (b·10^sa)
    let mut num = a.0.checked_mul(pow10(b.1 + rscale)?).ok_or_else(overflow)?;
    let mut den = b.0.checked_mul(pow10(a.1)?).ok_or_else(overflow)?;
    if den < i256::ZERO {
        num = num.wrapping_neg();
        den = den.wrapping_neg();
    }
    let two = i256::from_i128(2);
    let half_up = num.wrapping_abs().checked_mul(two).ok_or_else(overflow)? + den;
    let q = half_up / (den * two);
    Ok((
        if num < i256::ZERO {
            q.wrapping_neg()
        } else {
            q
        },
        rscale,
    ))
}

/// The square root of the unscaled `v` at `scale`, rounded to the same
/// scale.
fn sqrt(v: i256, scale: i32) -> datafusion::common::Result<i256> {
    // √(v / 10^s) · 10^s = √(v · 10^s)
    let x = v.checked_mul(pow10(scale)?).ok_or_else(overflow)?;
    let mut r = isqrt(x);
    // Round half up: r + ½ squared is r² + r + ¼.
    if x - r * r > r {
        r += i256::ONE;
    }
    Ok(r)
}

/// ⌊√x⌋ of a non-negative x, by Newton's method.
fn isqrt(x: i256) -> i256 {
    if x <= i256::ONE {
        return x;
    }
    let two = i256::from_i128(2);
    // Start above the root: 2^(⌈bits/2⌉).
    let bits = 256 - x.leading_zeros();
    let mut r = two.wrapping_pow(bits.div_ceil(2));
    loop {
        let next = (r + x / r) / two;
        if next >= r {
            return r;
        }
        r = next;
    }
}

/// The unscaled `v` at `from` digits as an i128 at `to` digits (rounding
/// half away from zero when there are fewer).
fn rescale(v: i256, from: i32, to: i32) -> datafusion::common::Result<i128> {
    let out = if to >= from {
        v.checked_mul(pow10(to - from)?).ok_or_else(overflow)?
    } else {
        let d = pow10(from - to)?;
        let q = (v.wrapping_abs() * i256::from_i128(2) + d) / (d * i256::from_i128(2));
        if v < i256::ZERO { q.wrapping_neg() } else { q }
    };
    out.to_i128()
        .filter(|v| v.unsigned_abs() < 10u128.pow(38))
        .ok_or_else(overflow)
}

impl Accumulator for Moments {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        for v in unscaled(&values[0]).into_iter().flatten() {
            match &mut self.distinct {
                Some(seen) => *seen.entry(v).or_default() += 1,
                None => self.add(v, 1)?,
            }
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        for v in unscaled(&values[0]).into_iter().flatten() {
            match &mut self.distinct {
                Some(seen) => {
                    if let Some(c) = seen.get_mut(&v) {
                        *c -= 1;
                        if *c == 0 {
                            seen.remove(&v);
                        }
                    }
                }
                None => self.add(v, -1)?,
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        if let Some(seen) = &mut self.distinct {
            let lists = states[0].as_any().downcast_ref::<ListArray>();
            for list in lists.into_iter().flat_map(|l| l.iter()).flatten() {
                for v in unscaled(&list).into_iter().flatten() {
                    *seen.entry(v).or_default() += 1;
                }
            }
            return Ok(());
        }
        let counts = |a: &ArrayRef| -> Vec<u64> {
            a.as_primitive::<UInt64Type>()
                .iter()
                .map(|v| v.unwrap_or(0))
                .collect()
        };
        let (n, nan, inf, minf) = (
            counts(&states[0]),
            counts(&states[3]),
            counts(&states[4]),
            counts(&states[5]),
        );
        let sums = states[1].as_primitive::<Decimal256Type>();
        let squares = states[2].as_primitive::<Decimal256Type>();
        let dscales = states[6].as_primitive::<UInt8Type>();
        for i in 0..n.len() {
            self.n += n[i];
            self.nan += nan[i];
            self.infinity += inf[i];
            self.minus_infinity += minf[i];
            if sums.is_valid(i) {
                self.sum = self.sum.checked_add(sums.value(i)).ok_or_else(overflow)?;
                self.sum_squares = self
                    .sum_squares
                    .checked_add(squares.value(i))
                    .ok_or_else(overflow)?;
            }
            if dscales.is_valid(i) {
                self.dscale = self.dscale.max(dscales.value(i));
            }
        }
        Ok(())
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        if let Some(seen) = &self.distinct {
            let values: Vec<ScalarValue> = seen
                .keys()
                .map(|&v| match &self.input {
                    DataType::Int16 => ScalarValue::Int16(Some(v as i16)),
                    DataType::Int32 => ScalarValue::Int32(Some(v as i32)),
                    DataType::Int64 => ScalarValue::Int64(Some(v as i64)),
                    DataType::Decimal128(p, s) => ScalarValue::Decimal128(Some(v), *p, *s),
                    _ => ScalarValue::Null,
                })
                .collect();
            return Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
                &values,
                &self.input,
            ))]);
        }
        Ok(vec![
            ScalarValue::UInt64(Some(self.n)),
            ScalarValue::Decimal256(Some(self.sum), 76, 0),
            ScalarValue::Decimal256(Some(self.sum_squares), 76, 0),
            ScalarValue::UInt64(Some(self.nan)),
            ScalarValue::UInt64(Some(self.infinity)),
            ScalarValue::UInt64(Some(self.minus_infinity)),
            ScalarValue::UInt8(Some(self.dscale)),
        ])
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        let Some(seen) = &self.distinct else {
            return self.answer();
        };
        let mut once = Moments::new(self.kind, &self.input, self.dscale, false)
            .ok_or_else(|| DataFusionError::Internal("not an exact input".into()))?;
        for &v in seen.keys() {
            once.add(v, 1)?;
        }
        once.answer()
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .distinct
                .as_ref()
                .map_or(0, |d| d.capacity() * std::mem::size_of::<(i128, u64)>())
    }
}

/// How the values of a column with [`DISPLAY_KEY`] metadata choose their
/// display scale: that metadata, parsed once per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display {
    /// "avg", "var" or "stddev" ([`Kind::display`]).
    kind: &'static str,
    /// The least scale shown (the input's).
    least: i32,
    /// The scale the values are held at.
    held: i8,
}

impl Display {
    /// The metadata's value parsed; None for one eon does not know.
    pub fn parse(display: &str) -> Option<Display> {
        let mut parts = display.split(':');
        let kind = match parts.next()? {
            "avg" => "avg",
            "var" => "var",
            "stddev" => "stddev",
            _ => return None,
        };
        Some(Display {
            kind,
            least: parts.next()?.parse().ok()?,
            held: parts.next()?.parse().ok()?,
        })
    }

    /// The display scale of the value `v` (unscaled, at `scale`):
    /// PostgreSQL's choice for the division that made it, worked out again
    /// from the quotient (see the module docs).
    pub fn scale_of(&self, v: i128, scale: i8) -> Option<i32> {
        let (kind, least) = (self.kind, self.least);
        if self.held != scale {
            // A cast of the result (which keeps the field's metadata) to
            // another numeric type: an ordinary value of that type.
            return None;
        }
        let scale = scale as i32;
        let x = i256::from_i128(v);
        // The quotient itself; a standard deviation's scale was chosen for
        // its square, the variance.
        let (q, q_scale) = match kind {
            "avg" => (x, scale),
            "var" | "stddev" if v == 0 => return Some(0),
            "var" => (x, scale),
            _ => (x.checked_mul(x)?, 2 * scale),
        };
        let chosen = if q == i256::ZERO {
            // 0 / n: the quotient's weight is taken as one below the count's.
            MIN_SIG_DIGITS + 4
        } else {
            let (weight, first) = weight_and_first_digit(q, q_scale);
            // A quotient whose first base-10 000 digit is 1 and the rest
            // zeros came from operands with equal first digits, which
            // PostgreSQL takes as a quotient below that weight.
            let digits = q.wrapping_abs();
            let exact_power = first == i256::ONE && {
                let below = 4 * weight + q_scale;
                below >= 0 && digits == i256::from_i128(10).wrapping_pow(below as u32)
            };
            MIN_SIG_DIGITS - 4 * (weight - exact_power as i32)
        };
        Some(chosen.max(least).clamp(0, MAX_DISPLAY_SCALE))
    }
}

/// The text of `v` (unscaled, at `scale`) at display scale `shown`.
pub fn display_text(v: i128, scale: i8, shown: i32) -> String {
    let scale = scale as i32;
    if shown >= scale {
        let text = eon_common::value::format_decimal(v, scale as i8);
        let pad = (shown - scale) as usize;
        if pad == 0 {
            return text;
        }
        let point = if text.contains('.') { "" } else { "." };
        return format!("{text}{point}{}", "0".repeat(pad));
    }
    // Fewer digits than held: round half away from zero.
    let d = 10i128.pow((scale - shown) as u32);
    let q = (v.abs() + d / 2) / d;
    eon_common::value::format_decimal(if v < 0 { -q } else { q }, shown as i8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn div(a: i128, sa: i32, b: i128) -> String {
        let (q, s) = divide((i256::from_i128(a), sa, sa), (i256::from_i128(b), 0, 0)).unwrap();
        display_text(q.as_i128(), s as i8, s)
    }

    #[test]
    fn quotients_take_postgresql_display_scale() {
        assert_eq!(div(3, 0, 2), "1.5000000000000000");
        assert_eq!(div(0, 0, 10), "0.00000000000000000000");
        assert_eq!(div(3, 0, 3), "1.00000000000000000000");
        assert_eq!(div(2, 0, 3), "0.66666666666666666667");
        assert_eq!(div(98, 0, 3), "32.6666666666666667");
        assert_eq!(div(-98, 0, 3), "-32.6666666666666667");
        assert_eq!(div(108520, 0, 5), "21704.000000000000");
        // The input's own scale is the least.
        assert_eq!(div(2500000000, 10, 3), "0.08333333333333333333");
    }

    #[test]
    fn display_scale_is_found_again_from_the_value() {
        let avg = Display::parse("avg:0:20").unwrap();
        assert_eq!(Display::parse("median:0:20"), None);
        for (a, b) in [
            (3, 2),
            (0, 10),
            (3, 3),
            (2, 3),
            (98, 3),
            (108520, 5),
            (7, 70000),
        ] {
            let (q, s) = divide((i256::from_i128(a), 0, 0), (i256::from_i128(b), 0, 0)).unwrap();
            let held = rescale(q, s, 20).unwrap();
            assert_eq!(avg.scale_of(held, 20), Some(s), "{a} / {b}");
            assert_eq!(avg.scale_of(held, 2), None);
        }
    }

    #[test]
    fn square_roots_round_to_their_scale() {
        // √21704 to 12 digits
        let v = i256::from_i128(21704 * 10i128.pow(12));
        assert_eq!(sqrt(v, 12).unwrap().as_i128(), 147322774885623);
        assert_eq!(isqrt(i256::from_i128(99)).as_i128(), 9);
        assert_eq!(isqrt(i256::from_i128(100)).as_i128(), 10);
    }
}
