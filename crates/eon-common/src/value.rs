//! Stored values, and conversion between rows and Arrow record batches.
//!
//! Data engines keep recent rows in row form ([`Row`], a vector of
//! [`Value`]s): that is what an MVCC version holds and what the write-ahead
//! log records. Everything that leaves a data engine is Arrow again, built by
//! [`batch_from_rows`]; everything that arrives is Arrow, taken apart by
//! [`rows_from_batch`]. The variants are physical (one per Arrow
//! representation); the column's SQL type says how to read them.

use std::sync::Arc;

use arrow::array::*;
use arrow::datatypes::*;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    /// smallint, integer, bigint
    Int(i64),
    /// real, double precision
    Float(f64),
    /// numeric: the unscaled integer (the scale is the column's)
    Decimal(i128),
    /// text, varchar, uuid, jsonb
    Text(String),
    Bytes(Vec<u8>),
    /// days since 1970-01-01
    Date(i32),
    /// microseconds since 1970-01-01 (UTC for timestamptz)
    Timestamp(i64),
    /// interval: months, days, nanoseconds (Arrow's MonthDayNano; eon
    /// keeps microseconds, as PostgreSQL does)
    Interval(i32, i32, i64),
    /// time: microseconds since midnight
    Time(i64),
    /// an array: its elements
    List(Vec<Value>),
}

pub type Row = Vec<Value>;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Decode every row of a batch.
pub fn rows_from_batch(batch: &RecordBatch) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = (0..batch.num_rows())
        .map(|_| Vec::with_capacity(batch.num_columns()))
        .collect();
    for col in batch.columns() {
        for (row, v) in rows.iter_mut().zip(column_values(col)?) {
            row.push(v);
        }
    }
    Ok(rows)
}

/// Decode one column.
pub fn column_values(array: &ArrayRef) -> Result<Vec<Value>> {
    macro_rules! prim {
        ($ty:ty, $variant:ident, $conv:expr) => {{
            let a = array.as_primitive::<$ty>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::$variant($conv(a.value(i)))
                    }
                })
                .collect()
        }};
    }
    Ok(match array.data_type() {
        DataType::Null => vec![Value::Null; array.len()],
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Bool(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Int8 => prim!(Int8Type, Int, |v: i8| v as i64),
        DataType::Int16 => prim!(Int16Type, Int, |v: i16| v as i64),
        DataType::Int32 => prim!(Int32Type, Int, |v: i32| v as i64),
        DataType::Int64 => prim!(Int64Type, Int, |v: i64| v),
        DataType::Float32 => prim!(Float32Type, Float, |v: f32| v as f64),
        DataType::Float64 => prim!(Float64Type, Float, |v: f64| v),
        DataType::Decimal128(_, _) => prim!(Decimal128Type, Decimal, |v: i128| v),
        DataType::Date32 => prim!(Date32Type, Date, |v: i32| v),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            prim!(TimestampMicrosecondType, Timestamp, |v: i64| v)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let a = array.as_primitive::<IntervalMonthDayNanoType>();
            a.iter()
                .map(|v| match v {
                    Some(v) => Value::Interval(v.months, v.days, v.nanoseconds),
                    None => Value::Null,
                })
                .collect()
        }
        DataType::Time64(TimeUnit::Microsecond) => prim!(Time64MicrosecondType, Time, |v: i64| v),
        DataType::List(_) => {
            let a = array.as_list::<i32>();
            let elements = column_values(a.values())?;
            let offsets = a.offsets();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                        Value::List(elements[start..end].to_vec())
                    }
                })
                .collect()
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Text(a.value(i).to_string())
                    }
                })
                .collect()
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Text(a.value(i).to_string())
                    }
                })
                .collect()
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Bytes(a.value(i).to_vec())
                    }
                })
                .collect()
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Bytes(a.value(i).to_vec())
                    }
                })
                .collect()
        }
        other => return Err(Error::internal(format!("cannot store Arrow type {other}"))),
    })
}

/// Build an array of `dt` from values (one per row).
pub fn array_from_values<'a>(
    dt: &DataType,
    values: impl ExactSizeIterator<Item = &'a Value>,
) -> Result<ArrayRef> {
    let n = values.len();
    macro_rules! prim {
        ($builder:ty, $variant:ident, $conv:expr) => {{
            let mut b = <$builder>::with_capacity(n);
            for v in values {
                match v {
                    Value::$variant(x) => b.append_value($conv(*x)),
                    Value::Null => b.append_null(),
                    other => return Err(mismatch(dt, other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match dt {
        DataType::Boolean => prim!(BooleanBuilder, Bool, |v: bool| v),
        DataType::Int16 => prim!(Int16Builder, Int, |v: i64| v as i16),
        DataType::Int32 => prim!(Int32Builder, Int, |v: i64| v as i32),
        DataType::Int64 => prim!(Int64Builder, Int, |v: i64| v),
        DataType::Float32 => prim!(Float32Builder, Float, |v: f64| v as f32),
        DataType::Float64 => prim!(Float64Builder, Float, |v: f64| v),
        DataType::Date32 => prim!(Date32Builder, Date, |v: i32| v),
        DataType::Decimal128(p, s) => {
            let mut b = Decimal128Builder::with_capacity(n);
            for v in values {
                match v {
                    Value::Decimal(x) => b.append_value(*x),
                    Value::Null => b.append_null(),
                    other => return Err(mismatch(dt, other)),
                }
            }
            Arc::new(b.finish().with_precision_and_scale(*p, *s)?)
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            prim!(Time64MicrosecondBuilder, Time, |v: i64| v)
        }
        DataType::List(field) => {
            let mut offsets = Vec::with_capacity(n + 1);
            offsets.push(0i32);
            let mut valid = arrow::array::BooleanBufferBuilder::new(n);
            let mut elements: Vec<&Value> = Vec::new();
            for v in values {
                match v {
                    Value::List(xs) => {
                        elements.extend(xs.iter());
                        valid.append(true);
                    }
                    Value::Null => valid.append(false),
                    other => return Err(mismatch(dt, other)),
                }
                offsets.push(elements.len() as i32);
            }
            let child = array_from_values(field.data_type(), elements.into_iter())?;
            Arc::new(ListArray::try_new(
                field.clone(),
                arrow::buffer::OffsetBuffer::new(offsets.into()),
                child,
                Some(arrow::buffer::NullBuffer::new(valid.finish())),
            )?)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let mut b = IntervalMonthDayNanoBuilder::with_capacity(n);
            for v in values {
                match v {
                    Value::Interval(m, d, ns) => {
                        b.append_value(IntervalMonthDayNano::new(*m, *d, *ns))
                    }
                    Value::Null => b.append_null(),
                    other => return Err(mismatch(dt, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n);
            for v in values {
                match v {
                    Value::Timestamp(x) => b.append_value(*x),
                    Value::Null => b.append_null(),
                    other => return Err(mismatch(dt, other)),
                }
            }
            Arc::new(b.finish().with_timezone_opt(tz.clone()))
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            for v in values {
                match v {
                    Value::Text(x) => b.append_value(x),
                    Value::Null => b.append_null(),
                    other => return Err(mismatch(dt, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(n, n * 8);
            for v in values {
                match v {
                    Value::Bytes(x) => b.append_value(x),
                    Value::Null => b.append_null(),
                    other => return Err(mismatch(dt, other)),
                }
            }
            Arc::new(b.finish())
        }
        other => return Err(Error::internal(format!("cannot build Arrow type {other}"))),
    })
}

fn mismatch(dt: &DataType, v: &Value) -> Error {
    Error::internal(format!("stored value {v:?} does not fit Arrow type {dt}"))
}

/// Build a batch of the `projection` columns of `schema` from rows laid out
/// as `schema` (the projected schema is the batch's schema).
pub fn batch_from_rows(
    schema: &SchemaRef,
    projection: &[usize],
    rows: &[&Row],
) -> Result<RecordBatch> {
    let projected = Arc::new(schema.project(projection)?);
    let mut columns = Vec::with_capacity(projection.len());
    for (out, &col) in projection.iter().enumerate() {
        let dt = projected.field(out).data_type();
        columns.push(array_from_values(dt, rows.iter().map(|r| &r[col]))?);
    }
    Ok(RecordBatch::try_new_with_options(
        projected,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SqlType;

    #[test]
    fn rows_round_trip_through_arrow() {
        let types = [
            SqlType::Int2,
            SqlType::Int4,
            SqlType::Int8,
            SqlType::Float4,
            SqlType::Float8,
            SqlType::Numeric {
                precision: 10,
                scale: 2,
            },
            SqlType::Text,
            SqlType::Bool,
            SqlType::Date,
            SqlType::Timestamp,
            SqlType::TimestampTz,
            SqlType::Bytea,
        ];
        let schema = Arc::new(Schema::new(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| t.field(&format!("c{i}"), true))
                .collect::<Vec<_>>(),
        ));
        let rows: Vec<Row> = vec![
            vec![
                Value::Int(-3),
                Value::Int(7),
                Value::Int(i64::MAX),
                Value::Float(1.5),
                Value::Float(-0.1),
                Value::Decimal(12345),
                Value::Text("héllo".into()),
                Value::Bool(true),
                Value::Date(19000),
                Value::Timestamp(1_700_000_000_000_000),
                Value::Timestamp(-5),
                Value::Bytes(vec![0, 1, 255]),
            ],
            vec![Value::Null; 12],
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let all: Vec<usize> = (0..types.len()).collect();
        let batch = batch_from_rows(&schema, &all, &refs).unwrap();
        assert_eq!(rows_from_batch(&batch).unwrap(), rows);

        let projected = batch_from_rows(&schema, &[6, 0], &refs).unwrap();
        assert_eq!(projected.schema().field(0).name(), "c6");
        assert_eq!(
            rows_from_batch(&projected).unwrap()[0],
            vec![Value::Text("héllo".into()), Value::Int(-3)]
        );

        let empty = batch_from_rows(&schema, &[], &refs).unwrap();
        assert_eq!(empty.num_rows(), 2);
    }
}

/// A value as PostgreSQL would print it in an error detail
/// (`Key (id)=(42) already exists.`).
pub fn display_value(v: &Value, ty: &crate::types::SqlType) -> String {
    use crate::types::SqlType;
    match (v, ty) {
        (Value::Null, _) => "null".into(),
        (Value::Bool(b), _) => if *b { "t" } else { "f" }.into(),
        (Value::Int(i), _) => i.to_string(),
        (Value::Float(f), _) => f.to_string(),
        (Value::Decimal(d), t @ SqlType::Numeric { .. }) => {
            let text = format_decimal(*d, t.decimal_scale());
            if t.is_unconstrained_numeric() {
                trim_fraction(&text)
            } else {
                text
            }
        }
        (Value::Decimal(d), _) => d.to_string(),
        (Value::Text(s), _) => s.clone(),
        (Value::Bytes(b), _) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        (Value::Date(d), _) => chrono::NaiveDate::from_num_days_from_ce_opt(*d + 719_163)
            .map(|d| d.to_string())
            .unwrap_or_else(|| d.to_string()),
        (Value::Timestamp(t), _) => chrono::DateTime::from_timestamp_micros(*t)
            .map(|d| d.naive_utc().to_string())
            .unwrap_or_else(|| t.to_string()),
        (Value::Interval(m, d, ns), _) => format_interval(*m, *d, ns.div_euclid(1000)),
        (Value::Time(us), _) => format_time(*us),
        (Value::List(xs), t) => {
            let element = t.element().unwrap_or(SqlType::Text);
            let items: Vec<String> = xs
                .iter()
                .map(|x| match x {
                    Value::Null => "NULL".to_string(),
                    x => display_value(x, &element),
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// numeric's special values, stored in a Decimal128 as unscaled integers
/// beyond any 38-digit value (|v| < 10^38 < these), so that Arrow's and the
/// key encoding's ordinary integer order is PostgreSQL's order for them:
/// `-Infinity` < every number < `Infinity` < `NaN` (and NaN = NaN, as
/// PostgreSQL's numeric has it). Arithmetic and casts that meet them go
/// through eon-query's `numeric` module, which gives PostgreSQL's answers.
pub mod special {
    pub const NAN: i128 = i128::MAX;
    pub const INFINITY: i128 = i128::MAX - 1;
    pub const NEG_INFINITY: i128 = i128::MIN + 1;

    /// PostgreSQL's spelling of a special value, or None for a number.
    pub fn name(v: i128) -> Option<&'static str> {
        match v {
            NAN => Some("NaN"),
            INFINITY => Some("Infinity"),
            NEG_INFINITY => Some("-Infinity"),
            _ => None,
        }
    }

    /// True for NaN and ±Infinity.
    pub fn is_special(v: i128) -> bool {
        name(v).is_some()
    }
}

/// An unscaled decimal as text with `scale` digits after the point
/// (`NaN`, `Infinity`, `-Infinity` for the [`special`] values).
pub fn format_decimal(v: i128, scale: i8) -> String {
    if let Some(name) = special::name(v) {
        return name.to_string();
    }
    if scale <= 0 {
        return (v * 10i128.pow((-scale) as u32)).to_string();
    }
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let digits = if digits.len() <= scale {
        format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
    } else {
        digits
    };
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{}{}.{}", if neg { "-" } else { "" }, int, frac)
}

/// Drop trailing zeros after the decimal point (and the point itself).
pub fn trim_fraction(text: &str) -> String {
    if !text.contains('.') {
        return text.to_string();
    }
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A time of day (microseconds since midnight) as PostgreSQL writes it:
/// `HH:MM:SS` and the fraction's digits without trailing zeros.
/// Hours may pass 24 (`24:00:00` ends a day; an interval's time is
/// written the same way, its sign by the caller).
pub fn format_time(us: i64) -> String {
    let us = us.unsigned_abs();
    let secs = us / 1_000_000;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let micros = us % 1_000_000;
    if micros != 0 {
        s.push('.');
        s.push_str(format!("{micros:06}").trim_end_matches('0'));
    }
    s
}

/// An interval as PostgreSQL writes it with `IntervalStyle = postgres`
/// (its default): `1 year 2 mons -3 days +04:05:06.5`, after
/// EncodeInterval in PostgreSQL's datetime.c — years and months from the
/// months, then days, then the time as `[+-]HH:MM:SS` (hours may pass 24);
/// a field after a negative one gets an explicit `+`; a zero interval is
/// `00:00:00`.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    let mut is_before = false;
    let mut part = |value: i64, unit: &str, out: &mut String| {
        if value == 0 {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let plus = if is_before && value > 0 { "+" } else { "" };
        let plural = if value != 1 { "s" } else { "" };
        out.push_str(&format!("{plus}{value} {unit}{plural}"));
        is_before = value < 0;
    };
    // C's truncating division, as PostgreSQL's.
    part((months / 12) as i64, "year", &mut out);
    part((months % 12) as i64, "mon", &mut out);
    part(days as i64, "day", &mut out);
    if out.is_empty() || micros != 0 {
        let sign = if micros < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(sign);
        out.push_str(&format_time(micros));
    }
    out
}

#[cfg(test)]
mod interval_tests {
    use super::*;

    #[test]
    fn intervals_print_as_postgresql_does() {
        let hour = 3_600_000_000i64;
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, 1, 2 * hour), "1 day 02:00:00");
        assert_eq!(
            format_interval(15, -2, 1_000_000),
            "1 year 3 mons -2 days +00:00:01"
        );
        assert_eq!(
            format_interval(-15, 2, -1),
            "-1 years -3 mons +2 days -00:00:00.000001"
        );
        assert_eq!(format_interval(0, 0, 36 * hour + 1_500_000), "36:00:01.5");
        assert_eq!(format_interval(2, 0, 0), "2 mons");
        assert_eq!(format_interval(0, -1, 0), "-1 days");
        assert_eq!(format_interval(12, 0, 0), "1 year");
        assert_eq!(format_time(45_296_500_000), "12:34:56.5");
        assert_eq!(format_time(0), "00:00:00");
    }
}
