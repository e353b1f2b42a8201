//! Smaller PostgreSQL scalar functions DataFusion does not have.
//!
//! - Trigonometry in degrees — `sind`, `cosd`, `tand`, `cotd`, `asind`,
//!   `acosd`, `atand`, `atan2d` — computed as PostgreSQL's float.c does:
//!   every angle is first folded into the first quadrant, and the result
//!   scaled by the function's value at 30°, 45° or 60°, so that the
//!   well-known angles give exact results (`sind(30)` is exactly 0.5, not
//!   0.49999999999999994).
//! - `booleq`, `boolne`: the functions behind `=` and `<>` of booleans.
//! - `float8(x)`: the cast written as a function.
//! - `isfinite(date | timestamp)`: false for ±infinity.
//! - `make_date(year, month, day)`, `make_time(hour, min, sec)` (seconds
//!   with a fraction) and `make_timestamp(year, month, day, hour, min,
//!   sec)`; a negative year is BC, as in PostgreSQL (year 0 does not
//!   exist), and fields out of range fail with PostgreSQL's 22008 error.
//! - `quote_literal(x)`, `quote_nullable(x)`: a value as a SQL literal.
//! - `every`: SQL's name for `bool_and`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int32Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use eon_common::error::sqlstate;

use crate::pgformat::fail;
use crate::pgfuncs::shaped_like;

const RADIANS_PER_DEGREE: f64 = 0.017_453_292_519_943_295;

fn sin_30() -> f64 {
    (30.0 * RADIANS_PER_DEGREE).sin()
}

fn one_minus_cos_60() -> f64 {
    1.0 - (60.0 * RADIANS_PER_DEGREE).cos()
}

fn sind_0_to_30(x: f64) -> f64 {
    ((x * RADIANS_PER_DEGREE).sin() / sin_30()) / 2.0
}

fn cosd_0_to_60(x: f64) -> f64 {
    let one_minus_cos_x = 1.0 - (x * RADIANS_PER_DEGREE).cos();
    1.0 - (one_minus_cos_x / one_minus_cos_60()) / 2.0
}

fn sind_q1(x: f64) -> f64 {
    if x <= 30.0 {
        sind_0_to_30(x)
    } else {
        cosd_0_to_60(90.0 - x)
    }
}

fn cosd_q1(x: f64) -> f64 {
    if x <= 60.0 {
        cosd_0_to_60(x)
    } else {
        sind_0_to_30(90.0 - x)
    }
}

fn asind_q1(x: f64) -> f64 {
    if x <= 0.5 {
        (x.asin() / 0.5f64.asin()) * 30.0
    } else {
        90.0 - (x.acos() / 0.5f64.acos()) * 60.0
    }
}

fn acosd_q1(x: f64) -> f64 {
    if x <= 0.5 {
        90.0 - (x.asin() / 0.5f64.asin()) * 30.0
    } else {
        (x.acos() / 0.5f64.acos()) * 60.0
    }
}

fn out_of_range() -> datafusion::error::DataFusionError {
    fail(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "input is out of range",
    )
}

/// The angle folded into [0, 90] by `fold` (see dsind & co.), with the
/// sign the folding gives the result.
fn fold(x: f64, fourth: f64) -> (f64, f64) {
    let mut x = x % 360.0;
    let mut sign = 1.0;
    if x < 0.0 {
        x = -x;
        sign = -sign;
    }
    if x > 180.0 {
        x = 360.0 - x;
        sign = -sign;
    }
    if x > 90.0 {
        x = 180.0 - x;
        sign *= fourth;
    }
    (x, sign)
}

/// An angle to take the sine (…) of: None for NaN (whose result is NaN),
/// an error for ±Infinity.
fn angle(x: f64) -> DfResult<Option<f64>> {
    if x.is_infinite() {
        return Err(out_of_range());
    }
    Ok((!x.is_nan()).then_some(x))
}

/// A sine or cosine to take the angle of: None for NaN, an error outside
/// [-1, 1].
fn ratio(x: f64) -> DfResult<Option<f64>> {
    if !x.is_nan() && !(-1.0..=1.0).contains(&x) {
        return Err(out_of_range());
    }
    Ok((!x.is_nan()).then_some(x))
}

fn sind(x: f64) -> DfResult<f64> {
    let Some(x) = angle(x)? else {
        return Ok(f64::NAN);
    };
    let (x, sign) = fold(x, 1.0);
    Ok(sign * sind_q1(x))
}

fn cosd(x: f64) -> DfResult<f64> {
    let Some(x) = angle(x)? else {
        return Ok(f64::NAN);
    };
    let mut x = (x % 360.0).abs();
    let mut sign = 1.0;
    if x > 180.0 {
        x = 360.0 - x;
    }
    if x > 90.0 {
        x = 180.0 - x;
        sign = -sign;
    }
    Ok(sign * cosd_q1(x))
}

fn tand(x: f64) -> DfResult<f64> {
    let Some(x) = angle(x)? else {
        return Ok(f64::NAN);
    };
    let (x, sign) = fold(x, -1.0);
    let tan_45 = sind_q1(45.0) / cosd_q1(45.0);
    let r = sign * ((sind_q1(x) / cosd_q1(x)) / tan_45);
    // No -0.
    Ok(if r == 0.0 { 0.0 } else { r })
}

fn cotd(x: f64) -> DfResult<f64> {
    let Some(x) = angle(x)? else {
        return Ok(f64::NAN);
    };
    let (x, sign) = fold(x, -1.0);
    let cot_45 = cosd_q1(45.0) / sind_q1(45.0);
    let r = sign * ((cosd_q1(x) / sind_q1(x)) / cot_45);
    Ok(if r == 0.0 { 0.0 } else { r })
}

fn asind(x: f64) -> DfResult<f64> {
    let Some(x) = ratio(x)? else {
        return Ok(f64::NAN);
    };
    Ok(if x >= 0.0 { asind_q1(x) } else { -asind_q1(-x) })
}

fn acosd(x: f64) -> DfResult<f64> {
    let Some(x) = ratio(x)? else {
        return Ok(f64::NAN);
    };
    Ok(if x >= 0.0 {
        acosd_q1(x)
    } else {
        90.0 + asind_q1(-x)
    })
}

fn atand(x: f64) -> DfResult<f64> {
    Ok((x.atan() / 1.0f64.atan()) * 45.0)
}

/// A float8 function of one float8 argument.
fn unary(ctx: &SessionContext, name: &str, f: fn(f64) -> DfResult<f64>) {
    ctx.register_udf(create_udf(
        name,
        vec![DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let x = args[0].to_array(1)?;
            let x = x.as_primitive::<Float64Type>();
            let out = x
                .iter()
                .map(|v| v.map(f).transpose())
                .collect::<DfResult<Float64Array>>()?;
            shaped_like(args, Arc::new(out))
        }),
    ));
}

pub fn register(ctx: &SessionContext) {
    unary(ctx, "sind", sind);
    unary(ctx, "cosd", cosd);
    unary(ctx, "tand", tand);
    unary(ctx, "cotd", cotd);
    unary(ctx, "asind", asind);
    unary(ctx, "acosd", acosd);
    unary(ctx, "atand", atand);
    unary(ctx, "float8", Ok);
    ctx.register_udf(create_udf(
        "atan2d",
        vec![DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (y, x) = (&arrays[0], &arrays[1]);
            let out: Float64Array = y
                .as_primitive::<Float64Type>()
                .iter()
                .zip(x.as_primitive::<Float64Type>().iter())
                .map(|(y, x)| Some((y?.atan2(x?) / 1.0f64.atan()) * 45.0))
                .collect();
            shaped_like(args, Arc::new(out))
        }),
    ));
    for (name, equal) in [("booleq", true), ("boolne", false)] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Boolean, DataType::Boolean],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let (a, b) = (&arrays[0], &arrays[1]);
                let out: BooleanArray = a
                    .as_boolean()
                    .iter()
                    .zip(b.as_boolean().iter())
                    .map(|(a, b)| Some((a? == b?) == equal))
                    .collect();
                shaped_like(args, Arc::new(out))
            }),
        ));
    }
    ctx.register_udf(any_args("isfinite", 1, DataType::Boolean, isfinite));
    ctx.register_udf(any_args("make_date", 3, DataType::Date32, make_date));
    ctx.register_udf(any_args(
        "make_time",
        3,
        DataType::Time64(TimeUnit::Microsecond),
        make_time,
    ));
    ctx.register_udf(any_args(
        "make_timestamp",
        6,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        make_timestamp,
    ));
    for (name, nullable) in [("quote_literal", false), ("quote_nullable", true)] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let a = args[0].to_array(1)?;
                let a = cast(&a, &DataType::Utf8)?;
                let out: StringArray = a
                    .as_string::<i32>()
                    .iter()
                    .map(|s| match s {
                        Some(s) => Some(crate::pgformat::quote_literal(s)),
                        None if nullable => Some("NULL".to_string()),
                        None => None,
                    })
                    .collect();
                shaped_like(args, Arc::new(out))
            }),
        ));
    }
    if let Ok(f) = datafusion::execution::FunctionRegistry::udaf(ctx, "bool_and") {
        ctx.register_udaf(f.as_ref().clone().with_aliases(["every"]));
    }
}

/// A function of `n` arguments of any type, which it casts itself.
fn any_args(
    name: &str,
    n: usize,
    returns: DataType,
    f: fn(&[ColumnarValue]) -> DfResult<ColumnarValue>,
) -> ScalarUDF {
    ScalarUDF::new_from_impl(SimpleScalarUDF::new_with_signature(
        name,
        Signature::any(n, Volatility::Immutable),
        returns,
        Arc::new(f),
    ))
}

/// isfinite: false for ±infinity (dates and timestamps), true for any
/// other value (intervals are always finite in PostgreSQL 15).
fn isfinite(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    use crate::datetime::{DATE_INFINITY, DATE_NEG_INFINITY, TS_INFINITY, TS_NEG_INFINITY};
    let a = args[0].to_array(1)?;
    let out: BooleanArray = match a.data_type() {
        DataType::Date32 => a
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|d| d != DATE_INFINITY && d != DATE_NEG_INFINITY))
            .collect(),
        DataType::Timestamp(..) => cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None))?
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|t| t.map(|t| t != TS_INFINITY && t != TS_NEG_INFINITY))
            .collect(),
        _ => (0..a.len())
            .map(|i| (!a.is_null(i)).then_some(true))
            .collect(),
    };
    shaped_like(args, Arc::new(out))
}

/// The arguments of make_date / make_time / make_timestamp: integers,
/// and the seconds (the last argument, for make_time and make_timestamp)
/// as float8.
fn field_arrays(args: &[ColumnarValue], seconds: bool) -> DfResult<Vec<ArrayRef>> {
    let last = args.len() - 1;
    ColumnarValue::values_to_arrays(args)?
        .iter()
        .enumerate()
        .map(|(k, a)| {
            let to = if seconds && k == last {
                DataType::Float64
            } else {
                DataType::Int32
            };
            Ok(cast(a, &to)?)
        })
        .collect()
}

/// Row `i` of each argument, or None when any is null.
fn row_fields(arrays: &[ArrayRef], i: usize) -> Option<Vec<f64>> {
    arrays
        .iter()
        .map(|a| {
            if a.is_null(i) {
                None
            } else if let Some(ints) = a.as_primitive_opt::<Int32Type>() {
                Some(ints.value(i) as f64)
            } else {
                Some(a.as_primitive::<Float64Type>().value(i))
            }
        })
        .collect()
}

/// The date of PostgreSQL's fields (year -44 is 44 BC; there is no year
/// 0), or its 22008 error.
fn fields_date(y: i32, m: i32, d: i32) -> DfResult<chrono::NaiveDate> {
    // Year -44 is 44 BC, which is year -43 counted astronomically.
    let astronomical = if y < 0 { y + 1 } else { y };
    (y != 0 && m > 0 && d > 0)
        .then(|| chrono::NaiveDate::from_ymd_opt(astronomical, m as u32, d as u32))
        .flatten()
        .ok_or_else(|| {
            fail(
                sqlstate::DATETIME_FIELD_OVERFLOW,
                format!("date field value out of range: {y}-{m:02}-{d:02}"),
            )
        })
}

/// Microseconds since midnight of PostgreSQL's time fields (24:00:00 is
/// the end of the day), or its 22008 error.
fn fields_time(h: i32, mi: i32, sec: f64) -> DfResult<i64> {
    let micros = (sec * 1_000_000.0).round() as i64;
    let bad = h < 0
        || !(0..=59).contains(&mi)
        || !(0..=60_000_000).contains(&micros)
        || h > 24
        || (h == 24 && (mi > 0 || micros > 0));
    if bad {
        return Err(fail(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("time field value out of range: {h}:{mi:02}:{sec:02}"),
        ));
    }
    Ok((h as i64 * 3600 + mi as i64 * 60) * 1_000_000 + micros)
}

/// make_date(year, month, day), checked as PostgreSQL checks it.
fn make_date(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    let arrays = field_arrays(args, false)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    let out = (0..arrays[0].len())
        .map(|i| {
            let Some(f) = row_fields(&arrays, i) else {
                return Ok(None);
            };
            let date = fields_date(f[0] as i32, f[1] as i32, f[2] as i32)?;
            Ok(Some((date - epoch).num_days() as i32))
        })
        .collect::<DfResult<Date32Array>>()?;
    shaped_like(args, Arc::new(out))
}

/// make_time(hour, min, sec), checked as PostgreSQL checks it.
fn make_time(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    let arrays = field_arrays(args, true)?;
    let out = (0..arrays[0].len())
        .map(|i| match row_fields(&arrays, i) {
            Some(f) => fields_time(f[0] as i32, f[1] as i32, f[2]).map(Some),
            None => Ok(None),
        })
        .collect::<DfResult<Time64MicrosecondArray>>()?;
    shaped_like(args, Arc::new(out))
}

/// make_timestamp: the fields checked as PostgreSQL checks them (22008).
fn make_timestamp(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    let arrays = field_arrays(args, true)?;
    let out = (0..arrays[0].len())
        .map(|i| {
            let Some(f) = row_fields(&arrays, i) else {
                return Ok(None);
            };
            let date = fields_date(f[0] as i32, f[1] as i32, f[2] as i32)?;
            let time = fields_time(f[3] as i32, f[4] as i32, f[5])?;
            let base = date
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros();
            Ok(Some(base + time))
        })
        .collect::<DfResult<TimestampMicrosecondArray>>()?;
    shaped_like(args, Arc::new(out))
}
