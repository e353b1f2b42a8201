//! PostgreSQL's numeric on Arrow's Decimal128: input, rounding, the
//! special values, and arithmetic and casts that meet them.
//!
//! A numeric in eon is an Arrow `Decimal128(p, s)`: an integer of at most
//! 38 digits and a scale fixed per column (see `eon_common::types`).
//! PostgreSQL's numeric also has `NaN`, `Infinity` and `-Infinity`; eon
//! stores them as three integers beyond any 38-digit value
//! (`eon_common::value::special`), chosen so that the integer order Arrow
//! sorts and compares by is PostgreSQL's order for them. Storage, sorting,
//! comparison, `min`/`max` and the key encoding therefore need nothing
//! more. Arithmetic and casts do: Arrow would add to the sentinel or scale
//! it like a number. So:
//!
//! - text becomes a numeric through [`parse`] / [`parse_to`] (rounding half
//!   away from zero to the target scale, as PostgreSQL does, and checking
//!   the precision with PostgreSQL's `numeric field overflow`);
//! - [`cast_array`] converts to and from Decimal128 keeping the specials
//!   what they are (NaN to a float is NaN, a float's infinity is Infinity);
//! - [`NumericExpr`] wraps the physical `+ - * / %` and casts of decimals
//!   ([`crate::overflow`]'s rule puts it in place): rows without a special
//!   value go through DataFusion's own checked kernels, rows with one get
//!   PostgreSQL's answer (`Infinity - Infinity` is NaN, `x / Infinity` is
//!   0, `Infinity * 0` is NaN, …);
//! - [`fold_literal_cast`] does the same for casts of literals, which the
//!   logical optimizer would otherwise fold with Arrow's cast;
//! - functions and aggregates that would compute with the sentinels as
//!   numbers (`abs`, `round`, …; `sum` and `avg` count them themselves in
//!   [`crate::moments`]) get their argument through
//!   [`FiniteGuard`] ([`GuardSpecials`] puts it there), which refuses the
//!   special values with a clear error rather than a wrong answer.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, StringArray,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Float64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr as LogicalExpr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, WindowFunctionDefinition,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use eon_common::error::sqlstate;
use eon_common::value::format_decimal;
use eon_common::value::special::{self, INFINITY, NAN, NEG_INFINITY};
use eon_common::{Error, Result};

/// The most digits a Decimal128 numeric holds.
const MAX_DIGITS: usize = eon_common::types::NUMERIC_MAX_DIGITS as usize;

/// A numeric read from text: a special value, or sign, digits (no leading
/// zeros, at least one digit) and how many of them follow the point.
enum Parsed {
    Special(i128),
    Finite {
        neg: bool,
        digits: String,
        scale: i32,
    },
}

fn invalid(s: &str) -> Error {
    Error::user(
        sqlstate::INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type numeric: \"{s}\""),
    )
}

fn read(s: &str) -> Result<Parsed> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Ok(Parsed::Special(NAN)),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Parsed::Special(INFINITY)),
        "-infinity" | "-inf" => return Ok(Parsed::Special(NEG_INFINITY)),
        _ => {}
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| invalid(s))?),
        None => (t, 0),
    };
    let neg = mantissa.starts_with('-');
    let m = mantissa.strip_prefix(['-', '+']).unwrap_or(mantissa);
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(invalid(s));
    }
    let mut digits = format!("{int}{frac}");
    let mut scale = frac.len() as i32 - exp;
    if scale < 0 {
        if digits.len() as i64 - scale as i64 > 1000 {
            return Err(overflows());
        }
        digits.push_str(&"0".repeat((-scale) as usize));
        scale = 0;
    }
    let digits = digits.trim_start_matches('0');
    Ok(Parsed::Finite {
        neg,
        digits: if digits.is_empty() { "0" } else { digits }.to_string(),
        scale,
    })
}

/// `digits` without its last `drop` digits, rounded half away from zero.
fn round_off(digits: &str, drop: usize) -> String {
    if drop == 0 {
        return digits.to_string();
    }
    if drop > digits.len() {
        return "0".into();
    }
    let keep = &digits[..digits.len() - drop];
    let mut out: Vec<u8> = if keep.is_empty() {
        b"0".to_vec()
    } else {
        keep.bytes().collect()
    };
    if digits.as_bytes()[digits.len() - drop] >= b'5' {
        let mut i = out.len();
        loop {
            if i == 0 {
                out.insert(0, b'1');
                break;
            }
            i -= 1;
            if out[i] == b'9' {
                out[i] = b'0';
            } else {
                out[i] += 1;
                break;
            }
        }
    }
    let s = String::from_utf8(out).expect("digits");
    let s = s.trim_start_matches('0');
    if s.is_empty() { "0" } else { s }.to_string()
}

fn overflows() -> Error {
    Error::user(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "value overflows numeric format",
    )
    .with_detail(format!(
        "eon's numeric holds at most {MAX_DIGITS} significant digits."
    ))
}

fn field_overflow(precision: u16, scale: i8) -> Error {
    Error::user(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "numeric field overflow").with_detail(
        format!(
            "A field with precision {precision}, scale {scale} must round to an absolute value less than {}.",
            if precision as i32 == scale as i32 {
                "1".to_string()
            } else {
                format!("10^{}", precision as i32 - scale as i32)
            }
        ),
    )
}

/// Whether a numeric's declared scale is one eon stores differently (see
/// `SqlType::arrow_type`): negative, or above the precision.
pub fn odd_typmod(precision: u16, scale: i8) -> bool {
    precision > 0 && (scale < 0 || scale as i32 > precision as i32)
}

/// Values already at their column's storage type, fitted to a declared
/// `numeric(precision, scale)` with [`odd_typmod`]: rounded (half away
/// from zero) to a multiple of 10^-scale, and refused (numeric field
/// overflow) if they need more than `precision` digits at that scale.
pub fn fit_typmod(array: &ArrayRef, precision: u16, scale: i8) -> Result<ArrayRef> {
    let DataType::Decimal128(p, s) = array.data_type().clone() else {
        return Ok(array.clone());
    };
    // (A precision beyond i128's digits bounds nothing Decimal128 holds.)
    let limit = 10i128.checked_pow(precision as u32).unwrap_or(i128::MAX);
    let out = array
        .as_primitive::<Decimal128Type>()
        .iter()
        .map(|v| match v {
            Some(INFINITY | NEG_INFINITY) => Err(infinite_overflow(precision, scale)),
            Some(v) if !special::is_special(v) => {
                let fitted = if scale < 0 {
                    let unit = 10i128.pow((-scale) as u32);
                    let units = (v.abs() + unit / 2) / unit;
                    if units >= limit {
                        return Err(field_overflow(precision, scale));
                    }
                    v.signum() * units * unit
                } else if v.abs() >= limit {
                    return Err(field_overflow(precision, scale));
                } else {
                    v
                };
                Ok(Some(fitted))
            }
            other => Ok(other),
        })
        .collect::<Result<Decimal128Array>>()?;
    Ok(Arc::new(out.with_precision_and_scale(p, s)?))
}

/// PostgreSQL's error for ±Infinity into a numeric with a declared
/// precision.
pub fn infinite_overflow(precision: u16, scale: i8) -> Error {
    Error::user(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "numeric field overflow",
    )
    .with_detail(format!(
        "A field with precision {precision}, scale {scale} cannot hold an infinite value."
    ))
}

fn to_i128(neg: bool, digits: &str) -> i128 {
    let v: i128 = digits.parse().expect("at most 38 digits");
    if neg { -v } else { v }
}

/// The text of a numeric, keeping its digits (rounded to 38 significant
/// digits where it has more after the point): the unscaled value and its
/// scale. Special values come back at scale 0.
pub fn parse(s: &str) -> Result<(i128, i8)> {
    match read(s)? {
        Parsed::Special(v) => Ok((v, 0)),
        Parsed::Finite { neg, digits, scale } => {
            let too_many = digits.len().saturating_sub(MAX_DIGITS);
            let too_fine = (scale - MAX_DIGITS as i32).max(0) as usize;
            let drop = too_many.max(too_fine);
            if drop as i32 > scale {
                return Err(overflows());
            }
            let mut digits = round_off(&digits, drop);
            let mut scale = scale - drop as i32;
            if digits.len() > MAX_DIGITS {
                // 99…9 rounded up to a 39th digit.
                if scale == 0 {
                    return Err(overflows());
                }
                digits = round_off(&digits, 1);
                scale -= 1;
            }
            Ok((to_i128(neg, &digits), scale as i8))
        }
    }
}

/// The text of a numeric as a `numeric(precision, scale)` value: rounded
/// to `scale` digits after the point, PostgreSQL's `numeric field overflow`
/// when it does not fit the declared precision (and eon's `value overflows
/// numeric format` beyond the 38 digits it stores). `Infinity` fits only an
/// unconstrained numeric (`infinity_ok`); NaN fits every numeric.
pub fn parse_to(s: &str, precision: u16, scale: i8, infinity_ok: bool) -> Result<i128> {
    match read(s)? {
        Parsed::Special(NAN) => Ok(NAN),
        Parsed::Special(v) if infinity_ok => Ok(v),
        Parsed::Special(_) => Err(infinite_overflow(precision, scale)),
        Parsed::Finite {
            neg,
            digits,
            scale: from,
        } => {
            let to = scale as i32;
            let digits = if from > to {
                round_off(&digits, (from - to) as usize)
            } else if digits == "0" {
                digits
            } else {
                format!("{digits}{}", "0".repeat((to - from) as usize))
            };
            if digits != "0" && digits.len() > precision as usize {
                return Err(field_overflow(precision, scale));
            }
            if digits.len() > MAX_DIGITS {
                return Err(overflows());
            }
            Ok(to_i128(neg, &digits))
        }
    }
}

/// `v` at scale `from` as a `numeric(precision, to)`: rounded half away
/// from zero, special values kept.
pub fn rescale(v: i128, from: i8, precision: u8, to: i8) -> Result<i128> {
    if special::is_special(v) {
        return Ok(v);
    }
    let out = if to >= from {
        10i128
            .checked_pow((to - from) as u32)
            .and_then(|m| v.checked_mul(m))
            .ok_or_else(|| field_overflow(precision as u16, to))?
    } else {
        let d = 10i128.pow((from - to) as u32);
        let (q, r) = (v / d, v % d);
        if r.abs() * 2 >= d { q + v.signum() } else { q }
    };
    if out.unsigned_abs() >= 10u128.pow(precision as u32) {
        return Err(field_overflow(precision as u16, to));
    }
    Ok(out)
}

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: datafusion::arrow::util::display::FormatOptions::new(),
};

/// Whether eon's own conversion handles a cast from `from` to `to` (one of
/// them a Decimal128 and the other something it knows): see [`cast_array`].
pub fn handles_cast(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    matches!(
        (from, to),
        (Decimal128(..), Decimal128(..) | Float32 | Float64 | Utf8)
            | (
                Float32 | Float64 | Utf8 | Utf8View | LargeUtf8,
                Decimal128(..)
            )
    )
}

/// Arrow's cast, with PostgreSQL's numeric rules where [`handles_cast`]
/// says so.
pub fn cast_array(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    let arrow = |a: &ArrayRef| cast_with_options(a, to, &STRICT).map_err(ae);
    match (array.data_type(), to) {
        (DataType::Decimal128(_, from), DataType::Decimal128(p, s)) => {
            let a = array.as_primitive::<Decimal128Type>();
            let out: Decimal128Array = a.try_unary(|v| rescale(v, *from, *p, *s))?;
            Ok(Arc::new(out.with_precision_and_scale(*p, *s).map_err(ae)?))
        }
        (DataType::Decimal128(_, scale), DataType::Utf8) => {
            let a = array.as_primitive::<Decimal128Type>();
            Ok(Arc::new(
                a.iter()
                    .map(|v| v.map(|v| format_decimal(v, *scale)))
                    .collect::<StringArray>(),
            ))
        }
        (DataType::Decimal128(_, _), DataType::Float32 | DataType::Float64) => {
            let a = array.as_primitive::<Decimal128Type>();
            let finite: Decimal128Array = a.unary(|v| if special::is_special(v) { 0 } else { v });
            let finite = finite.with_precision_and_scale(38, a.scale()).map_err(ae)?;
            let cast = cast_with_options(&finite, &DataType::Float64, &STRICT).map_err(ae)?;
            let cast = cast.as_primitive::<Float64Type>();
            let out: Float64Array = cast
                .iter()
                .zip(a.iter())
                .map(|(f, v)| {
                    v.map(|v| match v {
                        NAN => f64::NAN,
                        INFINITY => f64::INFINITY,
                        NEG_INFINITY => f64::NEG_INFINITY,
                        _ => f.unwrap_or(0.0),
                    })
                })
                .collect();
            arrow(&(Arc::new(out) as ArrayRef))
        }
        (DataType::Float32 | DataType::Float64, DataType::Decimal128(p, s)) => {
            // As PostgreSQL's float8_numeric / float4_numeric: through the
            // float's text with 15 (6) significant digits, so 0.1::float4
            // is 0.1, not the binary value's 0.100000001490116….
            let single = array.data_type() == &DataType::Float32;
            let f = cast_with_options(array, &DataType::Float64, &STRICT).map_err(ae)?;
            let out: Decimal128Array = f
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let text = crate::pgtypes::format_float_with(v, single, 0);
                        parse_to(&text, *p as u16, *s, true)
                    })
                    .transpose()
                })
                .collect::<Result<_>>()?;
            Ok(Arc::new(out.with_precision_and_scale(*p, *s).map_err(ae)?))
        }
        (DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8, DataType::Decimal128(p, s)) => {
            let text = cast_with_options(array, &DataType::Utf8, &STRICT).map_err(ae)?;
            let out = text
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(|v| parse_to(v, *p as u16, *s, true)).transpose())
                .collect::<Result<Decimal128Array>>()?;
            Ok(Arc::new(out.with_precision_and_scale(*p, *s).map_err(ae)?))
        }
        _ => arrow(array),
    }
}

/// The first special value in a Decimal128 array, if any.
pub fn special_in(array: &ArrayRef) -> Option<i128> {
    array
        .as_primitive::<Decimal128Type>()
        .iter()
        .flatten()
        .find(|v| special::is_special(*v))
}

/// PostgreSQL's error for a special value converted to an integer type.
pub fn not_an_integer(v: i128, ty: &eon_common::SqlType) -> Error {
    cannot_convert(v, ty.sql_name())
}

fn cannot_convert(v: i128, type_name: &str) -> Error {
    let what = if v == NAN { "NaN" } else { "infinity" };
    Error::unsupported(format!("cannot convert {what} to {type_name}"))
}

fn ae(e: datafusion::arrow::error::ArrowError) -> Error {
    crate::errors::from_df(e.into())
}

/// PostgreSQL's answer for `a op b` when `a` or `b` is special (`a_scale`:
/// `a`'s scale, `to`: the result's).
fn special_result(op: Operator, a: i128, b: i128, a_scale: i8, to: i8) -> Result<i128> {
    let sign = |v: i128| match v {
        INFINITY => 1,
        NEG_INFINITY => -1,
        v => v.signum(),
    };
    let inf = |s: i128| if s > 0 { INFINITY } else { NEG_INFINITY };
    let is_inf = |v: i128| v == INFINITY || v == NEG_INFINITY;
    let zero_division = || Error::user(sqlstate::DIVISION_BY_ZERO, "division by zero");
    if a == NAN || b == NAN {
        return Ok(NAN);
    }
    let (ai, bi) = (is_inf(a), is_inf(b));
    Ok(match op {
        Operator::Plus => match (ai, bi) {
            (true, true) if a != b => NAN,
            (true, _) => a,
            _ => b,
        },
        Operator::Minus => match (ai, bi) {
            (true, true) if a == b => NAN,
            (true, _) => a,
            _ => inf(-sign(b)),
        },
        Operator::Multiply => match sign(a) * sign(b) {
            0 => NAN,
            s => inf(s),
        },
        Operator::Divide => match (ai, bi) {
            (true, true) => NAN,
            (true, false) if b == 0 => return Err(zero_division()),
            (true, false) => inf(sign(a) * sign(b)),
            _ => 0,
        },
        Operator::Modulo => match (ai, bi) {
            (true, false) if b == 0 => return Err(zero_division()),
            (true, _) => NAN,
            _ => rescale(a, a_scale, 38, to)?,
        },
        _ => NAN,
    })
}

/// What a [`NumericExpr`] computes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NumericOp {
    /// `left op right`, both Decimal128.
    Arithmetic(Operator),
    /// A cast of its one child to this type.
    Cast(DataType),
}

/// A decimal `+ - * / %` or cast that gives PostgreSQL's answers for the
/// special values (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NumericExpr {
    op: NumericOp,
    children: Vec<Arc<dyn PhysicalExpr>>,
}

impl NumericExpr {
    pub fn arithmetic(
        left: Arc<dyn PhysicalExpr>,
        op: Operator,
        right: Arc<dyn PhysicalExpr>,
    ) -> Self {
        NumericExpr {
            op: NumericOp::Arithmetic(op),
            children: vec![left, right],
        }
    }

    pub fn cast(expr: Arc<dyn PhysicalExpr>, to: DataType) -> Self {
        NumericExpr {
            op: NumericOp::Cast(to),
            children: vec![expr],
        }
    }

    /// The operation as text, which a plan fragment carries (its children
    /// travel beside it; see [`crate::fragment`]).
    pub fn op_text(&self) -> String {
        match &self.op {
            NumericOp::Arithmetic(op) => format!("arithmetic {op}"),
            NumericOp::Cast(to) => format!("cast {to}"),
        }
    }

    /// The expression [`NumericExpr::op_text`] describes, over `children`.
    pub fn from_op_text(
        text: &str,
        children: &[Arc<dyn PhysicalExpr>],
    ) -> datafusion::common::Result<Self> {
        let bad = || DataFusionError::Internal(format!("unknown numeric operation {text}"));
        if let Some(op) = text.strip_prefix("arithmetic ") {
            let [left, right] = children else {
                return Err(bad());
            };
            let op = crate::fragment::arithmetic_operator(op).ok_or_else(bad)?;
            return Ok(NumericExpr::arithmetic(left.clone(), op, right.clone()));
        }
        let to: DataType = text
            .strip_prefix("cast ")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        let [child] = children else {
            return Err(bad());
        };
        Ok(NumericExpr::cast(child.clone(), to))
    }

    fn kernel(&self, schema: &Schema) -> datafusion::common::Result<(BinaryExpr, Schema)> {
        let NumericOp::Arithmetic(op) = &self.op else {
            unreachable!("only arithmetic has a kernel")
        };
        let tmp = Schema::new(vec![
            Field::new("l", self.children[0].data_type(schema)?, true),
            Field::new("r", self.children[1].data_type(schema)?, true),
        ]);
        let kernel = BinaryExpr::new(
            Arc::new(Column::new("l", 0)),
            *op,
            Arc::new(Column::new("r", 1)),
        )
        .with_fail_on_overflow(true);
        Ok((kernel, tmp))
    }

    fn arithmetic_rows(
        &self,
        op: Operator,
        left: ArrayRef,
        right: ArrayRef,
        schema: &Schema,
    ) -> Result<ArrayRef> {
        let (kernel, tmp) = self.kernel(schema).map_err(crate::errors::from_df)?;
        let (l, r) = (
            left.as_primitive::<Decimal128Type>(),
            right.as_primitive::<Decimal128Type>(),
        );
        let special_row = |i: usize| {
            (l.is_valid(i) && special::is_special(l.value(i)))
                || (r.is_valid(i) && special::is_special(r.value(i)))
        };
        let any = (0..l.len()).any(special_row);
        // Rows with a special value compute 1 op 1 in the kernel (no
        // overflow, no division by zero) and are overwritten after.
        let (lk, rk): (ArrayRef, ArrayRef) = if any {
            let one = |a: &Decimal128Array| -> Result<ArrayRef> {
                let unit = 10i128.pow(a.scale().max(0) as u32);
                let v: Decimal128Array = (0..a.len())
                    .map(|i| {
                        a.is_valid(i)
                            .then(|| if special_row(i) { unit } else { a.value(i) })
                    })
                    .collect();
                Ok(Arc::new(
                    v.with_precision_and_scale(a.precision(), a.scale())
                        .map_err(ae)?,
                ))
            };
            (one(l)?, one(r)?)
        } else {
            (left.clone(), right.clone())
        };
        let batch = RecordBatch::try_new(Arc::new(tmp), vec![lk, rk]).map_err(ae)?;
        let out = kernel
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| match crate::errors::from_df(e) {
                e if e.code == sqlstate::NUMERIC_VALUE_OUT_OF_RANGE => overflows(),
                e => e,
            })?;
        let out = out.as_primitive::<Decimal128Type>();
        let (p, s) = (out.precision(), out.scale());
        let limit = 10u128.pow(MAX_DIGITS as u32);
        let mut values = Vec::with_capacity(out.len());
        for i in 0..out.len() {
            if out.is_null(i) {
                values.push(None);
            } else if special_row(i) {
                values.push(Some(special_result(
                    op,
                    l.value(i),
                    r.value(i),
                    l.scale(),
                    s,
                )?));
            } else if out.value(i).unsigned_abs() >= limit {
                return Err(overflows());
            } else {
                values.push(Some(out.value(i)));
            }
        }
        let values: Decimal128Array = values.into_iter().collect();
        Ok(Arc::new(values.with_precision_and_scale(p, s).map_err(ae)?))
    }
}

impl fmt::Display for NumericExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            NumericOp::Arithmetic(op) => {
                write!(f, "{} {op} {}", self.children[0], self.children[1])
            }
            NumericOp::Cast(to) => write!(f, "CAST({} AS {to})", self.children[0]),
        }
    }
}

impl PhysicalExpr for NumericExpr {
    fn data_type(&self, schema: &Schema) -> datafusion::common::Result<DataType> {
        match &self.op {
            NumericOp::Arithmetic(_) => {
                let (kernel, tmp) = self.kernel(schema)?;
                kernel.data_type(&tmp)
            }
            NumericOp::Cast(to) => Ok(to.clone()),
        }
    }

    fn nullable(&self, schema: &Schema) -> datafusion::common::Result<bool> {
        let mut nullable = false;
        for c in &self.children {
            nullable |= c.nullable(schema)?;
        }
        Ok(nullable)
    }

    fn evaluate(&self, batch: &RecordBatch) -> datafusion::common::Result<ColumnarValue> {
        let values = self
            .children
            .iter()
            .map(|c| c.evaluate(batch))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let arrays = ColumnarValue::values_to_arrays(&values)?;
        let out = match &self.op {
            NumericOp::Arithmetic(op) => {
                self.arithmetic_rows(*op, arrays[0].clone(), arrays[1].clone(), &batch.schema())
            }
            NumericOp::Cast(to) => cast_array(&arrays[0], to),
        }
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        crate::pgfuncs::shaped_like(&values, out)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.children.iter().collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(NumericExpr {
            op: self.op.clone(),
            children,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A cast of a literal folded with eon's conversion where [`handles_cast`]
/// says so (None: leave it to DataFusion).
pub fn fold_literal_cast(value: &ScalarValue, to: &DataType) -> Option<Result<ScalarValue>> {
    if !handles_cast(&value.data_type(), to) {
        return None;
    }
    Some((|| {
        let array = value.to_array().map_err(crate::errors::from_df)?;
        let out = cast_array(&array, to)?;
        ScalarValue::try_from_array(&out, 0).map_err(crate::errors::from_df)
    })())
}

/// Functions whose DataFusion implementation would compute with the
/// special values' sentinel integers as if they were numbers: their numeric
/// arguments pass through [`FiniteGuard`], which refuses NaN and ±Infinity
/// with a clear error instead of a wrong answer.
const GUARDED: [&str; 6] = ["abs", "round", "trunc", "ceil", "floor", "signum"];

/// `eon_finite(x, 'function')`: `x` itself, or an error if it holds NaN or
/// ±Infinity (see [`GUARDED`]). Named and typed exactly as `x`, so the
/// expressions around it keep their names.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FiniteGuard {
    signature: Signature,
}

impl FiniteGuard {
    pub const NAME: &'static str = "eon_finite";

    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(FiniteGuard {
            signature: Signature::any(2, Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for FiniteGuard {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(args[0].clone())
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        Ok(Arc::clone(&args.arg_fields[0]))
    }

    fn schema_name(&self, args: &[LogicalExpr]) -> datafusion::common::Result<String> {
        Ok(args[0].schema_name().to_string())
    }

    fn display_name(&self, args: &[LogicalExpr]) -> datafusion::common::Result<String> {
        Ok(args[0].to_string())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        if let Some(v) = special_in(&args.args[0].to_array(1)?) {
            let function = match &args.args[1] {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(f))) => f.clone(),
                _ => "this function".into(),
            };
            // "::smallint": the guard of a cast to an integer type.
            if let Some(type_name) = function.strip_prefix("::") {
                return Err(crate::provider::to_df(cannot_convert(v, type_name)));
            }
            return Err(crate::provider::to_df(Error::unsupported(format!(
                "{function}() of NaN or Infinity is not supported yet"
            ))));
        }
        Ok(args.args[0].clone())
    }
}

/// Puts [`FiniteGuard`] around the numeric arguments of [`GUARDED`]
/// functions and aggregates.
#[derive(Debug, Default)]
pub struct GuardSpecials;

fn guard(
    e: LogicalExpr,
    schema: &DFSchema,
) -> datafusion::common::Result<Transformed<LogicalExpr>> {
    let wrap = |name: &str, args: &mut Vec<LogicalExpr>| -> bool {
        let Some(first) = args.first() else {
            return false;
        };
        if !GUARDED.contains(&name)
            || !matches!(first.get_type(schema), Ok(DataType::Decimal128(..)))
            || matches!(first, LogicalExpr::ScalarFunction(f) if f.func.name() == FiniteGuard::NAME)
        {
            return false;
        }
        let x = args.remove(0);
        args.insert(
            0,
            LogicalExpr::ScalarFunction(ScalarFunction::new_udf(
                FiniteGuard::udf(),
                vec![x, datafusion::logical_expr::lit(name)],
            )),
        );
        true
    };
    match e {
        LogicalExpr::ScalarFunction(mut f) => {
            let name = f.func.name().to_string();
            let changed = wrap(&name, &mut f.args);
            let e = LogicalExpr::ScalarFunction(f);
            Ok(Transformed::new_transformed(e, changed))
        }
        LogicalExpr::AggregateFunction(mut f) => {
            let name = f.func.name().to_string();
            let changed = wrap(&name, &mut f.params.args);
            let e = LogicalExpr::AggregateFunction(f);
            Ok(Transformed::new_transformed(e, changed))
        }
        LogicalExpr::WindowFunction(mut w) => {
            let name = w.fun.name().to_string();
            let changed = matches!(w.fun, WindowFunctionDefinition::AggregateUDF(_))
                && wrap(&name, &mut w.params.args);
            let e = LogicalExpr::WindowFunction(w);
            Ok(Transformed::new_transformed(e, changed))
        }
        e => Ok(Transformed::no(e)),
    }
}

impl OptimizerRule for GuardSpecials {
    fn name(&self) -> &str {
        "eon_numeric_guard_specials"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> datafusion::common::Result<Transformed<LogicalPlan>> {
        let inputs = plan.inputs();
        if inputs.len() != 1 {
            return Ok(Transformed::no(plan));
        }
        let schema = Arc::clone(inputs[0].schema());
        plan.map_expressions(|e| e.transform_up(|x| guard(x, &schema)))
    }
}

/// PostgreSQL's numeric functions eon adds: `width_bucket`, `div`,
/// `scale`, `min_scale` and `trim_scale`.
pub fn register(ctx: &datafusion::prelude::SessionContext) {
    for f in [
        NumericFn::WidthBucket,
        NumericFn::Div,
        NumericFn::Scale,
        NumericFn::MinScale,
        NumericFn::TrimScale,
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(NumericUdf {
            f,
            signature: Signature::user_defined(Volatility::Immutable),
        }));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NumericFn {
    /// `width_bucket(operand, low, high, count)`: the bucket of `operand`
    /// among `count` equal ones between `low` and `high` (0 below, count+1
    /// above); numeric computed exactly, float8 as PostgreSQL's float8
    /// version.
    WidthBucket,
    /// `div(a, b)`: the integer quotient, truncated towards zero.
    Div,
    /// `scale(x)`: the digits after the point (NULL for NaN, ±Infinity).
    Scale,
    /// `min_scale(x)`: the fewest digits after the point that represent
    /// `x` exactly.
    MinScale,
    /// `trim_scale(x)`: `x` with its trailing fractional zeros dropped (at
    /// the scale of a constant argument; a column keeps its type's scale).
    TrimScale,
}

/// The fewest fraction digits that represent `v` at scale `s` exactly.
fn min_scale(v: i128, s: i8) -> i8 {
    let mut s = s.max(0);
    let mut v = v;
    while s > 0 && v % 10 == 0 {
        v /= 10;
        s -= 1;
    }
    s
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NumericUdf {
    f: NumericFn,
    signature: Signature,
}

fn width_bucket_decimal(a: i128, b: i128, c: i128, count: i64) -> Result<i32> {
    let checks = Checks {
        count,
        nan: a == NAN || b == NAN || c == NAN,
        infinite_bound: special::is_special(b) || special::is_special(c),
        equal: b == c,
    };
    checks.bucket(|| {
        let (num, den, below, above) = if b < c {
            (a.checked_sub(b), c - b, a < b, a >= c)
        } else {
            (b.checked_sub(a), b - c, a > b, a <= c)
        };
        if below {
            return Ok(0);
        }
        if above {
            return Ok(count + 1);
        }
        // Both differences are non-negative: integer division floors.
        let num = num.ok_or_else(overflows)?;
        match num.checked_mul(count as i128) {
            Some(m) => Ok((m / den) as i64 + 1),
            None => Ok(((num as f64 / den as f64) * count as f64) as i64 + 1),
        }
    })
}

fn width_bucket_float(a: f64, b: f64, c: f64, count: i64) -> Result<i32> {
    let checks = Checks {
        count,
        nan: a.is_nan() || b.is_nan() || c.is_nan(),
        infinite_bound: b.is_infinite() || c.is_infinite(),
        equal: b == c,
    };
    checks.bucket(|| {
        let (share, below, above) = if b < c {
            ((a - b) / (c - b), a < b, a >= c)
        } else {
            ((b - a) / (b - c), a > b, a <= c)
        };
        if below {
            return Ok(0);
        }
        if above {
            return Ok(count + 1);
        }
        // The quotient may round up to 1.0: keep it in the last bucket.
        Ok(((count as f64 * share) as i64).min(count - 1) + 1)
    })
}

/// What both width_buckets check of their arguments before computing.
struct Checks {
    count: i64,
    nan: bool,
    infinite_bound: bool,
    equal: bool,
}

impl Checks {
    /// PostgreSQL's errors in PostgreSQL's order, else `bucket`.
    fn bucket(&self, bucket: impl Fn() -> Result<i64>) -> Result<i32> {
        let refuse = |message: &str| Err(Error::user("2201G", message));
        if self.count <= 0 {
            return refuse("count must be greater than zero");
        }
        if self.nan {
            return refuse("operand, lower bound, and upper bound cannot be NaN");
        }
        if self.infinite_bound {
            return refuse("lower and upper bounds must be finite");
        }
        if self.equal {
            return refuse("lower bound cannot equal upper bound");
        }
        i32::try_from(bucket()?)
            .map_err(|_| Error::user(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "integer out of range"))
    }
}

fn div_decimal(a: i128, b: i128) -> Result<i128> {
    if a == NAN || b == NAN {
        return Ok(NAN);
    }
    if b == 0 {
        return Err(Error::user(sqlstate::DIVISION_BY_ZERO, "division by zero"));
    }
    if special::is_special(a) || special::is_special(b) {
        return special_result(Operator::Divide, a, b, 0, 0);
    }
    // Same scale on both sides: the unscaled quotient is the answer.
    Ok(a / b)
}

impl ScalarUDFImpl for NumericUdf {
    fn name(&self) -> &str {
        match self.f {
            NumericFn::WidthBucket => "width_bucket",
            NumericFn::Div => "div",
            NumericFn::Scale => "scale",
            NumericFn::MinScale => "min_scale",
            NumericFn::TrimScale => "trim_scale",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        let numbers = match self.f {
            NumericFn::WidthBucket => 3,
            NumericFn::Div => 2,
            _ => 1,
        };
        if args.len() != numbers + usize::from(self.f == NumericFn::WidthBucket) {
            return Err(DataFusionError::External(Box::new(Error::user(
                sqlstate::UNDEFINED_FUNCTION,
                format!("function {}() does not exist", self.name()),
            ))));
        }
        let float = args[..numbers]
            .iter()
            .any(|t| matches!(t, DataType::Float32 | DataType::Float64))
            && self.f == NumericFn::WidthBucket;
        // One decimal type for all (the finest scale; text constants, which
        // PostgreSQL reads as numeric, at eon's unconstrained scale).
        let scale = args[..numbers]
            .iter()
            .map(|t| match t {
                DataType::Decimal128(_, s) => *s,
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                    eon_common::types::NUMERIC_DEFAULT_SCALE
                }
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let number = if float {
            DataType::Float64
        } else {
            DataType::Decimal128(MAX_DIGITS as u8, scale)
        };
        // One numeric argument keeps its own type.
        let number = match (numbers, &args[0]) {
            (1, DataType::Decimal128(..)) => args[0].clone(),
            _ => number,
        };
        let mut out = vec![number; numbers];
        if self.f == NumericFn::WidthBucket {
            out.push(DataType::Int64);
        }
        Ok(out)
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(match self.f {
            NumericFn::WidthBucket | NumericFn::Scale | NumericFn::MinScale => DataType::Int32,
            NumericFn::Div => DataType::Decimal128(MAX_DIGITS as u8, 0),
            NumericFn::TrimScale => args[0].clone(),
        })
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut ty = self.return_type(&types)?;
        if self.f == NumericFn::TrimScale {
            // A constant's own digits decide the scale.
            let scale = match args.scalar_arguments.first().copied().flatten() {
                Some(ScalarValue::Decimal128(Some(v), _, s)) if !special::is_special(*v) => {
                    Some(min_scale(*v, *s))
                }
                Some(ScalarValue::Int64(_) | ScalarValue::Int32(_)) => Some(0),
                _ => None,
            };
            if let Some(scale) = scale {
                ty = DataType::Decimal128(MAX_DIGITS as u8, scale);
            }
        }
        Ok(Arc::new(Field::new(self.name(), ty, true)))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = arrays.first().map_or(0, |a| a.len());
        let fail = |e: Error| DataFusionError::External(Box::new(e));
        let decimals = || arrays[0].as_primitive::<Decimal128Type>();
        let out: ArrayRef = match self.f {
            NumericFn::Scale | NumericFn::MinScale => {
                let a = decimals();
                let s = a.scale();
                Arc::new(
                    a.iter()
                        .map(|v| {
                            v.filter(|v| !special::is_special(*v)).map(|v| {
                                if self.f == NumericFn::Scale {
                                    s as i32
                                } else {
                                    min_scale(v, s) as i32
                                }
                            })
                        })
                        .collect::<datafusion::arrow::array::Int32Array>(),
                )
            }
            NumericFn::TrimScale => {
                let a: ArrayRef = Arc::new(decimals().clone());
                cast_array(&a, args.return_field.data_type()).map_err(fail)?
            }
            NumericFn::WidthBucket => {
                let count = arrays[3].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    if (0..4).any(|k| arrays[k].is_null(i)) {
                        out.push(None);
                        continue;
                    }
                    let bucket = if arrays[0].data_type() == &DataType::Float64 {
                        let f = |k: usize| arrays[k].as_primitive::<Float64Type>().value(i);
                        width_bucket_float(f(0), f(1), f(2), count.value(i))
                    } else {
                        let d = |k: usize| arrays[k].as_primitive::<Decimal128Type>().value(i);
                        width_bucket_decimal(d(0), d(1), d(2), count.value(i))
                    };
                    out.push(Some(bucket.map_err(fail)?));
                }
                Arc::new(datafusion::arrow::array::Int32Array::from(out))
            }
            NumericFn::Div => {
                let (a, b) = (
                    arrays[0].as_primitive::<Decimal128Type>(),
                    arrays[1].as_primitive::<Decimal128Type>(),
                );
                let out = a
                    .iter()
                    .zip(b.iter())
                    .map(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) => div_decimal(a, b).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<Decimal128Array>>()
                    .map_err(fail)?;
                Arc::new(
                    out.with_precision_and_scale(MAX_DIGITS as u8, 0)
                        .map_err(|e| fail(ae(e)))?,
                )
            }
        };
        crate::pgfuncs::shaped_like(&args.args, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rounds_half_away_from_zero_to_the_target_scale() {
        assert_eq!(parse_to("1.005", 10, 2, true).unwrap(), 101);
        assert_eq!(parse_to("-1.005", 10, 2, true).unwrap(), -101);
        assert_eq!(parse_to("1.004", 10, 2, true).unwrap(), 100);
        assert_eq!(parse_to("9.995", 10, 2, true).unwrap(), 1000);
        assert_eq!(parse_to("1e3", 10, 2, true).unwrap(), 100000);
        assert_eq!(parse_to(" NaN ", 5, 2, false).unwrap(), NAN);
        assert_eq!(parse_to("-inf", 38, 10, true).unwrap(), NEG_INFINITY);
        let e = parse_to("Infinity", 5, 2, false).unwrap_err();
        assert_eq!(e.message, "numeric field overflow");
        let e = parse_to("1000", 5, 2, true).unwrap_err();
        assert_eq!(
            e.detail.as_deref(),
            Some(
                "A field with precision 5, scale 2 must round to an absolute value less than 10^3."
            )
        );
        assert_eq!(parse_to("abc", 5, 2, true).unwrap_err().code, "22P02");
        // 39 significant digits, rounded to 38 where the fraction allows.
        assert_eq!(
            parse("1234567890123456789.01234567890123456789").unwrap(),
            (12345678901234567890123456789012345679, 19)
        );
        assert_eq!(parse("0.5").unwrap(), (5, 1));
    }

    #[test]
    fn special_values_follow_postgresql() {
        use Operator::*;
        let r = |op, a, b| special_result(op, a, b, 0, 0).unwrap();
        assert_eq!(r(Plus, INFINITY, 5), INFINITY);
        assert_eq!(r(Plus, INFINITY, NEG_INFINITY), NAN);
        assert_eq!(r(Minus, INFINITY, INFINITY), NAN);
        assert_eq!(r(Minus, 5, INFINITY), NEG_INFINITY);
        assert_eq!(r(Multiply, INFINITY, 0), NAN);
        assert_eq!(r(Multiply, NEG_INFINITY, -2), INFINITY);
        assert_eq!(r(Divide, 7, INFINITY), 0);
        assert_eq!(r(Divide, INFINITY, -7), NEG_INFINITY);
        assert_eq!(r(Modulo, 7, INFINITY), 7);
        assert_eq!(r(Modulo, INFINITY, 7), NAN);
        assert_eq!(r(Plus, NAN, INFINITY), NAN);
        assert_eq!(
            special_result(Divide, INFINITY, 0, 0, 0).unwrap_err().code,
            "22012"
        );
        // Rescaling keeps them.
        assert_eq!(rescale(NAN, 0, 10, 4).unwrap(), NAN);
        assert_eq!(rescale(12345, 3, 10, 1).unwrap(), 123);
        assert_eq!(rescale(-12355, 3, 10, 1).unwrap(), -124);
        assert!(rescale(12345, 0, 5, 2).is_err());
    }

    #[test]
    fn width_bucket_and_div_follow_postgresql() {
        // numeric(…, 1): 5.35 in 20 buckets of 5.0 … 5.5 is exactly in 15.
        assert_eq!(width_bucket_decimal(535, 500, 550, 20).unwrap(), 15);
        assert_eq!(width_bucket_decimal(499, 500, 550, 20).unwrap(), 0);
        assert_eq!(width_bucket_decimal(550, 500, 550, 20).unwrap(), 21);
        assert_eq!(width_bucket_decimal(INFINITY, 10, 100, 10).unwrap(), 11);
        // Reversed bounds count downwards.
        assert_eq!(width_bucket_decimal(2, 10, 0, 5).unwrap(), 5);
        assert_eq!(width_bucket_float(5.0, 0.0, 10.0, 5).unwrap(), 3);
        for (result, message) in [
            (
                width_bucket_decimal(5, 3, 4, 0),
                "count must be greater than zero",
            ),
            (
                width_bucket_decimal(3, 3, 3, 888),
                "lower bound cannot equal upper bound",
            ),
            (
                width_bucket_decimal(NAN, 3, 4, 8),
                "operand, lower bound, and upper bound cannot be NaN",
            ),
            (
                width_bucket_float(0.0, f64::NEG_INFINITY, 4.0, 8),
                "lower and upper bounds must be finite",
            ),
        ] {
            let e = result.unwrap_err();
            assert_eq!((e.code.as_str(), e.message.as_str()), ("2201G", message));
        }
        assert_eq!(div_decimal(-75, 20).unwrap(), -3);
        assert_eq!(div_decimal(NAN, 0).unwrap(), NAN);
        assert_eq!(div_decimal(INFINITY, -2).unwrap(), NEG_INFINITY);
        assert_eq!(div_decimal(5, INFINITY).unwrap(), 0);
        assert_eq!(div_decimal(0, 0).unwrap_err().code, "22012");
        assert_eq!(min_scale(11000, 4), 1);
        assert_eq!(min_scale(0, 2), 0);
        assert_eq!(min_scale(112345, 5), 5);
    }
}
