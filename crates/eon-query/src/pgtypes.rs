//! Values on the PostgreSQL wire: type OIDs, text and binary encodings of
//! result columns, and decoding of bound parameters.
//!
//! The text forms follow PostgreSQL's output functions exactly (what psql
//! shows and what drivers parse): `t`/`f` for booleans, shortest round-trip
//! floats with PostgreSQL's switch to exponent notation, numerics with their
//! scale, `\x` hex for bytea, ISO dates and timestamps (`+00` for
//! timestamptz, the session time zone being UTC). The binary forms are
//! PostgreSQL's `send` functions (numerics in base 10000, dates and
//! timestamps counted from 2000-01-01, intervals as microseconds, days and
//! months). Arrays (`integer[]`, `varchar(3)[]`, …) are encoded element by
//! element with their element type's encoder: `{1,"b c",NULL}` in text,
//! array_send's header and elements in binary; array parameters are decoded
//! from either form the same way.

use std::sync::Arc;

use crate::datetime::{self, DateStyle};
use crate::intervals::Interval;
use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::*;
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::*;
use datafusion::common::ScalarValue;
use eon_common::error::sqlstate;
use eon_common::value::{format_decimal, format_time, special, trim_fraction};
use eon_common::{Error, Result, SqlType};
use pgwire::api::Type;

/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The SQL type a result column has: from eon's field metadata when the
/// column comes straight from a table, else from its Arrow type.
pub fn sql_type_of(field: &Field) -> Option<SqlType> {
    SqlType::from_field(field)
        .filter(|t| &t.arrow_type() == field.data_type())
        .or_else(|| SqlType::from_arrow(field.data_type()))
}

/// The PostgreSQL type of a SQL type (text for anything eon does not store).
pub fn pg_type(ty: Option<SqlType>) -> Type {
    match ty {
        Some(SqlType::Enum(def)) => Type::new(
            def.name.clone(),
            def.oid,
            postgres_types::Kind::Enum(def.labels.clone()),
            def.schema.clone(),
        ),
        Some(t) => Type::from_oid(t.pg_oid()).unwrap_or(Type::TEXT),
        None => Type::TEXT,
    }
}

pub fn pg_type_of(field: &Field) -> Type {
    match field.data_type() {
        DataType::Struct(_) => Type::RECORD,
        DataType::List(item) | DataType::LargeList(item)
            if matches!(item.data_type(), DataType::Struct(_)) =>
        {
            Type::RECORD_ARRAY
        }
        _ => pg_type(sql_type_of(field)),
    }
}

/// The element field of a list column.
fn list_item(field: &Field) -> Option<&FieldRef> {
    match field.data_type() {
        DataType::List(item) | DataType::LargeList(item) => Some(item),
        _ => None,
    }
}

pub use eon_common::types::array_oid;

/// An array element (array_out) or a record field (record_out) as it
/// appears in the text form: double-quoted when empty, when an element
/// reads `NULL`, or when it holds a character that would end or split it;
/// inside the quotes `"` and `\` are escaped by a backslash in an array,
/// doubled in a record. (A NULL field of a record is written as nothing.)
fn quoted_element(s: &str, out: &mut String, record: bool) {
    let special: &[char] = if record {
        &['(', ')', ',', '"', '\\']
    } else {
        &['{', '}', ',', '"', '\\']
    };
    let quote = s.is_empty()
        || (!record && s.eq_ignore_ascii_case("null"))
        || s.chars()
            .any(|c| special.contains(&c) || c.is_ascii_whitespace());
    if !quote {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push(if record { c } else { '\\' });
        }
        out.push(c);
    }
    out.push('"');
}

/// A character(n) value as sent: padded with spaces to n characters.
fn pad(s: &str, n: u32) -> String {
    let len = s.chars().count();
    let mut out = String::with_capacity(s.len() + (n as usize).saturating_sub(len));
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', (n as usize).saturating_sub(len)));
    out
}

/// An encoder for one result column.
pub struct ColumnEncoder {
    ty: Option<SqlType>,
    binary: bool,
    array: ArrayRef,
    /// For an array column: its offsets and an encoder of all its elements.
    elements: Option<(OffsetBuffer<i32>, Box<ColumnEncoder>)>,
    /// For a record column (`ROW(…)`, an Arrow struct): each field's type
    /// OID and encoder.
    record: Option<Vec<(u32, ColumnEncoder)>>,
    /// How dates and timestamps are written in text (the session's
    /// DateStyle).
    style: DateStyle,
    /// The session's extra_float_digits (text format).
    extra_float_digits: i32,
    /// How a numeric column's values choose their display scale, when
    /// each does ([`crate::moments::DISPLAY_KEY`]).
    numeric_display: Option<crate::moments::Display>,
}

impl ColumnEncoder {
    /// Prepare `array` (of `field`) for encoding in text or binary format.
    pub fn new(field: &Field, array: &ArrayRef, binary: bool) -> Result<ColumnEncoder> {
        if let DataType::Struct(fields) = field.data_type() {
            let columns = array.as_struct().columns();
            let record = fields
                .iter()
                .zip(columns)
                .map(|(f, a)| Ok((pg_type_of(f).oid(), ColumnEncoder::new(f, a, binary)?)))
                .collect::<Result<Vec<_>>>()?;
            return Ok(ColumnEncoder {
                ty: None,
                binary,
                array: array.clone(),
                elements: None,
                record: Some(record),
                style: DateStyle::default(),
                extra_float_digits: 1,
                numeric_display: None,
            });
        }
        if let Some(item) =
            list_item(field).filter(|i| matches!(i.data_type(), DataType::Struct(_)))
        {
            let list = cast(array, &DataType::List(item.clone()))?;
            let list = list.as_list::<i32>();
            let values = ColumnEncoder::new(item, list.values(), binary)?;
            return Ok(ColumnEncoder {
                ty: None,
                binary,
                array: array.clone(),
                elements: Some((list.offsets().clone(), Box::new(values))),
                record: None,
                style: DateStyle::default(),
                extra_float_digits: 1,
                numeric_display: None,
            });
        }
        if let Some(item) = list_item(field) {
            // The element type: the column's declared one (varchar(3)[]),
            // else what the list's items are.
            let element = sql_type_of(field)
                .and_then(|t| t.element())
                .filter(|t| array_oid(t.pg_oid()).is_some());
            if let Some(t) = element {
                let list = cast(array, &DataType::List(item.clone()))?;
                let list = list.as_list::<i32>();
                let item = t.field(item.name(), true);
                let values = ColumnEncoder::new(&item, list.values(), binary)?;
                return Ok(ColumnEncoder {
                    ty: Some(t),
                    binary,
                    array: array.clone(),
                    elements: Some((list.offsets().clone(), Box::new(values))),
                    record: None,
                    style: DateStyle::default(),
                    extra_float_digits: 1,
                    numeric_display: None,
                });
            }
        }
        let ty = sql_type_of(field);
        let array = match ty {
            Some(SqlType::Interval) if matches!(array.data_type(), DataType::Duration(_)) => {
                duration_to_interval(array)?
            }
            Some(t) => {
                let target = t.arrow_type();
                if array.data_type() == &target {
                    array.clone()
                } else {
                    cast(array, &target)?
                }
            }
            None => cast(array, &DataType::Utf8)
                .unwrap_or_else(|_| Arc::new(StringArray::from(vec![None::<&str>; array.len()]))),
        };
        Ok(ColumnEncoder {
            ty,
            binary: binary && ty.is_some(),
            array,
            elements: None,
            record: None,
            style: DateStyle::default(),
            extra_float_digits: 1,
            numeric_display: field
                .metadata()
                .get(crate::moments::DISPLAY_KEY)
                .and_then(|d| crate::moments::Display::parse(d)),
        })
    }

    /// The display scale of the finite numeric `v` of a column whose
    /// values each choose theirs.
    fn display_scale(&self, v: i128, t: SqlType) -> Option<i32> {
        if special::is_special(v) {
            return None;
        }
        self.numeric_display?.scale_of(v, t.decimal_scale())
    }

    /// Write dates and timestamps in `style` and floats with
    /// `extra_float_digits` (text format), as the session's settings say.
    pub fn with_settings(mut self, style: DateStyle, extra_float_digits: i32) -> ColumnEncoder {
        self.style = style;
        self.extra_float_digits = extra_float_digits;
        if let Some((offsets, values)) = self.elements.take() {
            let values = values.with_settings(style, extra_float_digits);
            self.elements = Some((offsets, Box::new(values)));
        }
        if let Some(record) = self.record.take() {
            self.record = Some(
                record
                    .into_iter()
                    .map(|(oid, e)| (oid, e.with_settings(style, extra_float_digits)))
                    .collect(),
            );
        }
        self
    }

    /// An array in binary: PostgreSQL's array_send (one dimension counted
    /// from 1, a null flag, the element type, then each element with its
    /// length).
    fn array_send(
        &self,
        i: usize,
        offsets: &OffsetBuffer<i32>,
        values: &ColumnEncoder,
        buf: &mut BytesMut,
    ) {
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        let has_null = (start..end).any(|j| values.array.is_null(j));
        buf.put_i32(if end > start { 1 } else { 0 });
        buf.put_i32(has_null as i32);
        let element = match (&values.record, self.ty) {
            (Some(_), _) => Type::RECORD.oid(),
            (None, t) => t.map(|t| t.pg_oid()).unwrap_or(25),
        };
        buf.put_u32(element);
        if end > start {
            buf.put_i32((end - start) as i32);
            buf.put_i32(1);
        }
        for j in start..end {
            values.encode(j, buf);
        }
    }

    /// An array in text: `{a,"b c",NULL}`.
    fn array_text(i: usize, offsets: &OffsetBuffer<i32>, values: &ColumnEncoder) -> String {
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        let mut s = String::from("{");
        for j in start..end {
            if j > start {
                s.push(',');
            }
            if values.array.is_null(j) {
                s.push_str("NULL");
            } else {
                quoted_element(&values.text_value(j), &mut s, false);
            }
        }
        s.push('}');
        s
    }

    /// Append the field (length word and bytes) for row `i`.
    pub fn encode(&self, i: usize, buf: &mut BytesMut) {
        if self.array.is_null(i) {
            buf.put_i32(-1);
            return;
        }
        let at = buf.len();
        buf.put_i32(0);
        if let (Some((offsets, values)), true) = (&self.elements, self.binary) {
            self.array_send(i, offsets, values, buf);
        } else if let (Some(record), true) = (&self.record, self.binary) {
            // record_send: the field count, then each field's type OID and
            // value.
            buf.put_i32(record.len() as i32);
            for (oid, field) in record {
                buf.put_u32(*oid);
                field.encode(i, buf);
            }
        } else if self.binary {
            self.binary_value(i, buf);
        } else {
            let s = self.text_value(i);
            buf.put_slice(s.as_bytes());
        }
        let len = (buf.len() - at - 4) as i32;
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// PostgreSQL's text output of row `i` (not null).
    pub fn text_value(&self, i: usize) -> String {
        if let Some((offsets, values)) = &self.elements {
            return Self::array_text(i, offsets, values);
        }
        if let Some(record) = &self.record {
            let mut s = String::from("(");
            for (n, (_, field)) in record.iter().enumerate() {
                if n > 0 {
                    s.push(',');
                }
                if !field.array.is_null(i) {
                    quoted_element(&field.text_value(i), &mut s, true);
                }
            }
            s.push(')');
            return s;
        }
        let a = &self.array;
        match self.ty {
            None => a.as_string::<i32>().value(i).to_string(),
            Some(SqlType::Bool) => if a.as_boolean().value(i) { "t" } else { "f" }.into(),
            Some(SqlType::Int2) => a.as_primitive::<Int16Type>().value(i).to_string(),
            Some(SqlType::Int4) => a.as_primitive::<Int32Type>().value(i).to_string(),
            Some(SqlType::Oid) => (a.as_primitive::<Int32Type>().value(i) as u32).to_string(),
            Some(SqlType::Int8) => a.as_primitive::<Int64Type>().value(i).to_string(),
            Some(SqlType::Float4) => format_float_with(
                a.as_primitive::<Float32Type>().value(i) as f64,
                true,
                self.extra_float_digits,
            ),
            Some(SqlType::Float8) => format_float_with(
                a.as_primitive::<Float64Type>().value(i),
                false,
                self.extra_float_digits,
            ),
            Some(t @ SqlType::Numeric { .. }) => {
                let v = a.as_primitive::<Decimal128Type>().value(i);
                if let Some(shown) = self.display_scale(v, t) {
                    return crate::moments::display_text(v, t.decimal_scale(), shown);
                }
                let text = format_decimal(v, t.decimal_scale());
                if t.is_unconstrained_numeric() {
                    trim_fraction(&text)
                } else {
                    text
                }
            }
            Some(
                SqlType::Text
                | SqlType::Varchar { .. }
                | SqlType::Uuid
                | SqlType::Jsonb
                | SqlType::Json
                | SqlType::PgChar
                | SqlType::Enum(_),
            ) => a.as_string::<i32>().value(i).to_string(),
            Some(SqlType::Char { length }) => pad(a.as_string::<i32>().value(i), length),
            Some(SqlType::Bytea) => {
                let b = a.as_binary::<i32>().value(i);
                let mut s = String::with_capacity(2 + b.len() * 2);
                s.push_str("\\x");
                for byte in b {
                    s.push_str(&format!("{byte:02x}"));
                }
                s
            }
            Some(SqlType::Date) => {
                datetime::format_date(a.as_primitive::<Date32Type>().value(i), self.style)
            }
            Some(t @ (SqlType::Timestamp | SqlType::TimestampTz)) => datetime::format_timestamp(
                a.as_primitive::<TimestampMicrosecondType>().value(i),
                self.style,
                t == SqlType::TimestampTz,
            ),
            Some(SqlType::Interval) => {
                Interval::from(a.as_primitive::<IntervalMonthDayNanoType>().value(i)).to_text()
            }
            Some(SqlType::Time) => format_time(a.as_primitive::<Time64MicrosecondType>().value(i)),
            // Lists of element types without an array type: Arrow's text.
            Some(SqlType::Array(_)) => {
                datafusion::arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
            }
        }
    }

    fn binary_value(&self, i: usize, buf: &mut BytesMut) {
        let a = &self.array;
        match self.ty {
            None => buf.put_slice(a.as_string::<i32>().value(i).as_bytes()),
            Some(SqlType::Bool) => buf.put_u8(a.as_boolean().value(i) as u8),
            Some(SqlType::Int2) => buf.put_i16(a.as_primitive::<Int16Type>().value(i)),
            Some(SqlType::Int4 | SqlType::Oid) => {
                buf.put_i32(a.as_primitive::<Int32Type>().value(i))
            }
            Some(SqlType::Int8) => buf.put_i64(a.as_primitive::<Int64Type>().value(i)),
            Some(SqlType::Float4) => buf.put_f32(a.as_primitive::<Float32Type>().value(i)),
            Some(SqlType::Float8) => buf.put_f64(a.as_primitive::<Float64Type>().value(i)),
            Some(t @ SqlType::Numeric { .. }) => {
                let v = a.as_primitive::<Decimal128Type>().value(i);
                let scale = t.decimal_scale();
                if let Some(shown) = self.display_scale(v, t) {
                    let text = crate::moments::display_text(v, scale, shown);
                    return numeric_send_text(&text, shown, buf);
                }
                let shown = if special::is_special(v) {
                    scale
                } else if t.is_unconstrained_numeric() {
                    // Display scale: the digits the value actually has.
                    let text = trim_fraction(&format_decimal(v, scale));
                    text.split_once('.')
                        .map(|(_, f)| f.len() as i8)
                        .unwrap_or(0)
                } else {
                    scale
                };
                numeric_send(v / 10i128.pow((scale - shown) as u32), shown, buf)
            }
            // enum_send: the label's text.
            Some(SqlType::Text | SqlType::Varchar { .. } | SqlType::Json | SqlType::Enum(_)) => {
                buf.put_slice(a.as_string::<i32>().value(i).as_bytes())
            }
            Some(SqlType::Char { length }) => {
                buf.put_slice(pad(a.as_string::<i32>().value(i), length).as_bytes())
            }
            // char_send: one byte (none for the empty string).
            Some(SqlType::PgChar) => buf.put_slice(
                &a.as_string::<i32>().value(i).as_bytes()
                    [..1.min(a.as_string::<i32>().value(i).len())],
            ),
            Some(SqlType::Jsonb) => {
                buf.put_u8(1);
                buf.put_slice(a.as_string::<i32>().value(i).as_bytes());
            }
            Some(SqlType::Uuid) => {
                let s = a.as_string::<i32>().value(i);
                match uuid::Uuid::parse_str(s) {
                    Ok(u) => buf.put_slice(u.as_bytes()),
                    Err(_) => buf.put_slice(&[0; 16]),
                }
            }
            Some(SqlType::Bytea) => buf.put_slice(a.as_binary::<i32>().value(i)),
            // ±infinity are the extreme values, in PostgreSQL as in eon.
            Some(SqlType::Date) => buf.put_i32(match a.as_primitive::<Date32Type>().value(i) {
                d @ (datetime::DATE_INFINITY | datetime::DATE_NEG_INFINITY) => d,
                d => d - PG_EPOCH_DAYS,
            }),
            Some(SqlType::Timestamp | SqlType::TimestampTz) => buf.put_i64(
                match a.as_primitive::<TimestampMicrosecondType>().value(i) {
                    t @ (datetime::TS_INFINITY | datetime::TS_NEG_INFINITY) => t,
                    t => t - PG_EPOCH_US,
                },
            ),
            // interval_send: the time in microseconds, days, months.
            Some(SqlType::Interval) => {
                let v = Interval::from(a.as_primitive::<IntervalMonthDayNanoType>().value(i));
                buf.put_i64(v.micros);
                buf.put_i32(v.days);
                buf.put_i32(v.months);
            }
            Some(SqlType::Time) => buf.put_i64(a.as_primitive::<Time64MicrosecondType>().value(i)),
            Some(SqlType::Array(_)) => buf.put_slice(self.text_value(i).as_bytes()),
        }
    }
}

/// A difference of timestamps (Arrow's Duration) as PostgreSQL's
/// `timestamp - timestamp` gives it: whole days, and the rest as a time of
/// the same sign (interval_justify_hours), no months.
pub fn duration_to_interval(array: &ArrayRef) -> Result<ArrayRef> {
    const US_PER_DAY: i64 = 86_400_000_000;
    let us = cast(array, &DataType::Duration(TimeUnit::Microsecond))?;
    let out: IntervalMonthDayNanoArray = us
        .as_primitive::<DurationMicrosecondType>()
        .unary(|v| IntervalMonthDayNano::new(0, (v / US_PER_DAY) as i32, (v % US_PER_DAY) * 1000));
    Ok(Arc::new(out))
}

/// PostgreSQL's float output (extra_float_digits = 1): the shortest digits
/// that read back exactly, in fixed notation when the decimal exponent is
/// within [-4, `max_exp`), else as `d.ddde+XX`.
pub fn format_float(v: f64, max_exp: i32, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Shortest round-trip digits and exponent, from Rust's formatter.
    let sci = if single {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    lay_out_float(&sci, max_exp)
}

/// PostgreSQL's float output for a session's `extra_float_digits`: above
/// zero the shortest exact digits ([`format_float`]); at zero or below
/// C's `%.*g` with 15 (float8) or 6 (float4) significant digits plus the
/// setting — what PostgreSQL's regression tests and older clients use.
pub fn format_float_with(v: f64, single: bool, extra_float_digits: i32) -> String {
    let digits = if single { 6 } else { 15 };
    if extra_float_digits > 0 || !v.is_finite() || v == 0.0 {
        return format_float(v, digits, single);
    }
    let precision = (digits + extra_float_digits).max(1);
    let v = if single { v as f32 as f64 } else { v };
    let sci = format!("{:.*e}", precision as usize - 1, v);
    // %g drops the fraction's trailing zeros.
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let mantissa = match mantissa.contains('.') {
        true => mantissa.trim_end_matches('0').trim_end_matches('.'),
        false => mantissa,
    };
    lay_out_float(&format!("{mantissa}e{exp}"), precision)
}

/// Lay out `sci` (Rust's `{:e}`: `-d.ddde-x`) as PostgreSQL does: fixed
/// notation when the exponent is within [-4, `max_exp`), else `d.ddde+XX`.
fn lay_out_float(sci: &str, max_exp: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let neg = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if neg { "-" } else { "" };
    if exp < -4 || exp >= max_exp {
        let (first, rest) = digits.split_at(1);
        let m = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let e = if exp < 0 {
            format!("-{:02}", -exp)
        } else {
            format!("+{exp:02}")
        };
        format!("{sign}{m}e{e}")
    } else if exp < 0 {
        format!("{sign}0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            format!("{sign}{}{}", digits, "0".repeat(int_len - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
        }
    }
}

pub fn format_date(days: i32) -> String {
    datetime::format_date(days, DateStyle::default())
}

/// A timestamp in ISO style.
pub fn format_timestamp(us: i64) -> String {
    datetime::format_timestamp(us, DateStyle::default(), false)
}

/// PostgreSQL's binary numeric: base-10000 digit groups with a weight.
fn numeric_send(v: i128, scale: i8, buf: &mut BytesMut) {
    let flag = match v {
        special::NAN => Some(0xC000),
        special::INFINITY => Some(0xD000),
        special::NEG_INFINITY => Some(0xF000),
        _ => None,
    };
    if let Some(flag) = flag {
        // No digits, weight 0, the special's sign word, display scale 0.
        buf.put_i16(0);
        buf.put_i16(0);
        buf.put_u16(flag);
        buf.put_i16(0);
        return;
    }
    let scale = scale.max(0);
    numeric_send_text(&format_decimal(v, scale), scale as i32, buf)
}

/// numeric_send of a finite value written as decimal text with `scale`
/// digits after the point.
fn numeric_send_text(text: &str, scale: i32, buf: &mut BytesMut) {
    let neg = text.starts_with('-');
    let text = text.trim_start_matches('-');
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let int = int.trim_start_matches('0');
    let int_groups = int.len().div_ceil(4);
    let int_padded = format!("{}{}", "0".repeat(int_groups * 4 - int.len()), int);
    let frac_groups = frac.len().div_ceil(4);
    let frac_padded = format!("{}{}", frac, "0".repeat(frac_groups * 4 - frac.len()));
    let mut digits: Vec<i16> = Vec::with_capacity(int_groups + frac_groups);
    for g in 0..int_groups {
        digits.push(int_padded[g * 4..g * 4 + 4].parse().unwrap());
    }
    for g in 0..frac_groups {
        digits.push(frac_padded[g * 4..g * 4 + 4].parse().unwrap());
    }
    let mut weight = int_groups as i16 - 1;
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    buf.put_i16(digits.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if neg && !digits.is_empty() { 0x4000 } else { 0 });
    buf.put_i16(scale as i16);
    for d in digits {
        buf.put_i16(d);
    }
}

fn numeric_recv(b: &[u8]) -> Result<String> {
    let bad = || Error::user(sqlstate::INVALID_PARAMETER_VALUE, "invalid binary numeric");
    if b.len() < 8 {
        return Err(bad());
    }
    let rd = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
    let (n, weight, sign, dscale) = (rd(0) as usize, rd(2) as i32, rd(4) as u16, rd(6) as usize);
    if b.len() < 8 + 2 * n {
        return Err(bad());
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..n).map(|i| rd(8 + 2 * i)).collect();
    let mut int = String::new();
    for w in 0..=weight.max(-1) {
        let d = digits.get(w as usize).copied().unwrap_or(0);
        if int.is_empty() {
            int.push_str(&d.to_string())
        } else {
            int.push_str(&format!("{d:04}"))
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut w = weight + 1;
    while frac.len() < dscale {
        let d = if w < 0 {
            0
        } else {
            digits.get(w as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        w += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// The text of a numeric as a Decimal128 keeping its digits exactly (NaN
/// and ±Infinity, in PostgreSQL's spellings, as eon's special values at
/// scale 0).
pub fn parse_numeric(s: &str) -> Result<ScalarValue> {
    let (v, scale) = crate::numeric::parse(s)?;
    Ok(ScalarValue::Decimal128(Some(v), 38, scale))
}

/// Decode a bound parameter of type `ty` (`None` bytes: NULL).
pub fn decode_param(bytes: Option<&[u8]>, binary: bool, ty: &Type) -> Result<ScalarValue> {
    if let Some(element) = eon_common::types::element_oid(ty.oid()).and_then(Type::from_oid) {
        return decode_array_param(bytes, binary, &element);
    }
    let sql = SqlType::parse(ty.name()).or(match ty.oid() {
        1043 => Some(SqlType::Varchar { max_length: None }),
        1184 => Some(SqlType::TimestampTz),
        1114 => Some(SqlType::Timestamp),
        701 => Some(SqlType::Float8),
        700 => Some(SqlType::Float4),
        _ => None,
    });
    let Some(b) = bytes else {
        return Ok(match sql {
            Some(t) => ScalarValue::try_from(&t.arrow_type()).unwrap_or(ScalarValue::Null),
            None => ScalarValue::Utf8(None),
        });
    };
    let bad = |what: &str| {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid binary value for parameter of type {what}"),
        )
    };
    if binary {
        let fixed = |n: usize, what: &str| -> Result<&[u8]> {
            if b.len() == n { Ok(b) } else { Err(bad(what)) }
        };
        return Ok(match sql {
            Some(SqlType::Bool) => ScalarValue::Boolean(Some(fixed(1, "boolean")?[0] != 0)),
            Some(SqlType::Int2) => ScalarValue::Int16(Some(i16::from_be_bytes(
                fixed(2, "smallint")?.try_into().unwrap(),
            ))),
            Some(SqlType::Int4 | SqlType::Oid) => ScalarValue::Int32(Some(i32::from_be_bytes(
                fixed(4, "integer")?.try_into().unwrap(),
            ))),
            Some(SqlType::Int8) => ScalarValue::Int64(Some(i64::from_be_bytes(
                fixed(8, "bigint")?.try_into().unwrap(),
            ))),
            Some(SqlType::Float4) => ScalarValue::Float32(Some(f32::from_be_bytes(
                fixed(4, "real")?.try_into().unwrap(),
            ))),
            Some(SqlType::Float8) => ScalarValue::Float64(Some(f64::from_be_bytes(
                fixed(8, "double precision")?.try_into().unwrap(),
            ))),
            Some(SqlType::Numeric { .. }) => parse_numeric(&numeric_recv(b)?)?,
            Some(SqlType::Date) => ScalarValue::Date32(Some(
                i32::from_be_bytes(fixed(4, "date")?.try_into().unwrap()) + PG_EPOCH_DAYS,
            )),
            Some(SqlType::Timestamp) => ScalarValue::TimestampMicrosecond(
                Some(i64::from_be_bytes(fixed(8, "timestamp")?.try_into().unwrap()) + PG_EPOCH_US),
                None,
            ),
            Some(SqlType::TimestampTz) => ScalarValue::TimestampMicrosecond(
                Some(
                    i64::from_be_bytes(fixed(8, "timestamptz")?.try_into().unwrap()) + PG_EPOCH_US,
                ),
                Some(eon_common::types::UTC.into()),
            ),
            Some(SqlType::Bytea) => ScalarValue::Binary(Some(b.to_vec())),
            Some(SqlType::Uuid) => ScalarValue::Utf8(Some(
                uuid::Uuid::from_slice(b)
                    .map_err(|_| bad("uuid"))?
                    .hyphenated()
                    .to_string(),
            )),
            Some(SqlType::Interval) => {
                let b = fixed(16, "interval")?;
                let v = Interval {
                    micros: i64::from_be_bytes(b[..8].try_into().unwrap()),
                    days: i32::from_be_bytes(b[8..12].try_into().unwrap()),
                    months: i32::from_be_bytes(b[12..].try_into().unwrap()),
                };
                ScalarValue::IntervalMonthDayNano(Some(v.into()))
            }
            Some(SqlType::Time) => ScalarValue::Time64Microsecond(Some(i64::from_be_bytes(
                fixed(8, "time")?.try_into().unwrap(),
            ))),
            Some(SqlType::Jsonb) => {
                let text = if b.first() == Some(&1) { &b[1..] } else { b };
                ScalarValue::Utf8(Some(
                    String::from_utf8(text.to_vec()).map_err(|_| bad("jsonb"))?,
                ))
            }
            _ => ScalarValue::Utf8(Some(
                String::from_utf8(b.to_vec()).map_err(|_| bad("text"))?,
            )),
        });
    }
    let s = std::str::from_utf8(b)
        .map_err(|_| Error::user("22021", "invalid byte sequence for encoding \"UTF8\""))?;
    let invalid = |what: &str| {
        Error::user(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type {what}: \"{s}\""),
        )
    };
    Ok(match sql {
        Some(SqlType::Bool) => ScalarValue::Boolean(Some(crate::coerce::parse_bool(s)?)),
        Some(SqlType::Int2) => {
            ScalarValue::Int16(Some(s.trim().parse().map_err(|_| invalid("smallint"))?))
        }
        Some(SqlType::Int4) => {
            ScalarValue::Int32(Some(s.trim().parse().map_err(|_| invalid("integer"))?))
        }
        // Catalog oids are Int32 here: above 2^31 they wrap, as their
        // binary form does.
        Some(SqlType::Oid) => ScalarValue::Int32(Some(
            s.trim().parse::<u32>().map_err(|_| invalid("oid"))? as i32,
        )),
        Some(SqlType::Int8) => {
            ScalarValue::Int64(Some(s.trim().parse().map_err(|_| invalid("bigint"))?))
        }
        Some(SqlType::Float4) => {
            ScalarValue::Float32(Some(parse_float(s).map_err(|_| invalid("real"))? as f32))
        }
        Some(SqlType::Float8) => ScalarValue::Float64(Some(
            parse_float(s).map_err(|_| invalid("double precision"))?,
        )),
        Some(SqlType::Numeric { .. }) => parse_numeric(s)?,
        Some(SqlType::Bytea) => ScalarValue::Binary(Some(crate::coerce::parse_bytea(s)?)),
        Some(SqlType::Date) => ScalarValue::Date32(Some(datetime::parse_date(
            s,
            datetime::Order::Mdy,
            datetime::now_us(),
        )?)),
        Some(t @ (SqlType::Timestamp | SqlType::TimestampTz)) => {
            let us = datetime::parse_timestamp(
                s,
                datetime::Order::Mdy,
                t == SqlType::TimestampTz,
                datetime::now_us(),
            )?;
            ScalarValue::TimestampMicrosecond(Some(us), None)
                .cast_to(&t.arrow_type())
                .map_err(|_| invalid(&t.to_string()))?
        }
        Some(SqlType::Interval) => {
            ScalarValue::IntervalMonthDayNano(Some(crate::intervals::parse_interval(s)?.into()))
        }
        Some(SqlType::Time) => {
            ScalarValue::Time64Microsecond(Some(crate::intervals::parse_time(s)?))
        }
        _ => ScalarValue::Utf8(Some(s.to_string())),
    })
}

/// A bound array parameter: text (`{1,2,NULL}`) or PostgreSQL's
/// array_send form (one dimension), each element decoded as a parameter
/// of the element type.
fn decode_array_param(bytes: Option<&[u8]>, binary: bool, element: &Type) -> Result<ScalarValue> {
    let probe = decode_param(None, false, element)?;
    let item_type = probe.data_type();
    let Some(b) = bytes else {
        return ScalarValue::try_from(&DataType::new_list(item_type, true))
            .map_err(crate::errors::from_df);
    };
    let bad = || {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "invalid binary value for parameter of type {}[]",
                element.name()
            ),
        )
    };
    let mut values = Vec::new();
    if binary {
        let word = |at: usize| -> Result<i32> {
            b.get(at..at + 4)
                .map(|w| i32::from_be_bytes(w.try_into().unwrap()))
                .ok_or_else(bad)
        };
        let dims = word(0)?;
        if dims > 1 {
            return Err(Error::unsupported(
                "multidimensional arrays are not supported",
            ));
        }
        let mut at = 12;
        let count = if dims == 1 {
            at += 8;
            word(12)?
        } else {
            0
        };
        for _ in 0..count {
            let len = word(at)?;
            at += 4;
            if len < 0 {
                values.push(decode_param(None, true, element)?);
            } else {
                let item = b.get(at..at + len as usize).ok_or_else(bad)?;
                at += len as usize;
                values.push(decode_param(Some(item), true, element)?);
            }
        }
    } else {
        let s = std::str::from_utf8(b)
            .map_err(|_| Error::user("22021", "invalid byte sequence for encoding \"UTF8\""))?;
        for item in crate::coerce::parse_array_text(s)? {
            values.push(decode_param(
                item.as_deref().map(str::as_bytes),
                false,
                element,
            )?);
        }
    }
    let values: Vec<ScalarValue> = values
        .into_iter()
        .map(|v| v.cast_to(&item_type))
        .collect::<datafusion::common::Result<_>>()
        .map_err(crate::errors::from_df)?;
    Ok(ScalarValue::List(ScalarValue::new_list(
        &values, &item_type, true,
    )))
}

fn parse_float(s: &str) -> std::result::Result<f64, ()> {
    parse_float_as(s, false).map_err(|_| ())
}

/// PostgreSQL's float8in / float4in (`real` when `float4`): NaN and the
/// infinities in any case, surrounding blanks allowed; a number too large
/// for the type, or so small it would become zero, is 22003 `"10e400" is
/// out of range for type double precision`; anything else 22P02.
pub fn parse_float_as(s: &str, float4: bool) -> Result<f64> {
    let ty = if float4 { "real" } else { "double precision" };
    let t = s.trim().to_ascii_lowercase();
    let v = match t.as_str() {
        "nan" | "+nan" | "-nan" => return Ok(f64::NAN),
        "infinity" | "inf" | "+infinity" | "+inf" => return Ok(f64::INFINITY),
        "-infinity" | "-inf" => return Ok(f64::NEG_INFINITY),
        // Rust reads these words too; PostgreSQL only as above.
        t if t.contains("inf") || t.contains("nan") => Err(()),
        t => t.parse::<f64>().map_err(|_| ()),
    }
    .map_err(|_| {
        Error::user(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type {ty}: \"{s}\""),
        )
    })?;
    let mantissa_nonzero = t
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|b| (b'1'..=b'9').contains(&b)));
    let (too_big, too_small) = if float4 {
        let f = v as f32;
        (f.is_infinite(), f == 0.0 && mantissa_nonzero)
    } else {
        (v.is_infinite(), v == 0.0 && mantissa_nonzero)
    };
    if too_big || too_small {
        return Err(Error::user(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("\"{s}\" is out of range for type {ty}"),
        ));
    }
    Ok(v)
}

/// The type a parameter is described with (text when the plan does not
/// know it).
pub fn param_pg_type(ty: &Option<SqlType>) -> Type {
    pg_type(*ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_like_postgres_with_its_range_errors() {
        assert_eq!(parse_float_as(" 1.5 ", false).unwrap(), 1.5);
        assert!(parse_float_as("-INFINITY", false).unwrap().is_infinite());
        assert!(parse_float_as("NaN", true).unwrap().is_nan());
        assert_eq!(parse_float_as("1e-320", false).unwrap(), 1e-320);
        assert_eq!(parse_float_as("0e-400", false).unwrap(), 0.0);
        for (text, float4, code) in [
            ("10e400", false, "22003"),
            ("-10e-400", false, "22003"),
            ("1e39", true, "22003"),
            ("1e-50", true, "22003"),
            ("xyz", false, "22P02"),
            ("infinityx", false, "22P02"),
        ] {
            assert_eq!(
                parse_float_as(text, float4).unwrap_err().code,
                code,
                "{text}"
            );
        }
    }

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(format_float(1.5, 15, false), "1.5");
        assert_eq!(format_float(100.0, 15, false), "100");
        assert_eq!(format_float(1e20, 15, false), "1e+20");
        assert_eq!(format_float(1.234e-5, 15, false), "1.234e-05");
        assert_eq!(format_float(0.0001, 15, false), "0.0001");
        assert_eq!(format_float(-2.5e15, 15, false), "-2.5e+15");
        assert_eq!(format_float(0.1 + 0.2, 15, false), "0.30000000000000004");
        assert_eq!(format_float(1234567.0, 6, true), "1.234567e+06");
        assert_eq!(format_float(123456.0, 6, true), "123456");
        assert_eq!(format_float(f64::INFINITY, 15, false), "Infinity");
        // extra_float_digits = 0 and below: %.15g / %.6g, less the setting.
        assert_eq!(
            format_float_with(131.10703231895047, false, 0),
            "131.10703231895"
        );
        assert_eq!(format_float_with(0.1 + 0.2, false, 0), "0.3");
        assert_eq!(format_float_with(431.77261_f32 as f64, true, 0), "431.773");
        assert_eq!(format_float_with(1e20, false, 0), "1e+20");
        assert_eq!(format_float_with(1234567.0, false, -10), "1.2346e+06");
        assert_eq!(format_float_with(2.5, false, 0), "2.5");
        assert_eq!(
            format_float_with(-0.000123456789, false, 0),
            "-0.000123456789"
        );
        assert_eq!(
            format_float_with(0.1 + 0.2, false, 1),
            "0.30000000000000004"
        );
    }

    #[test]
    fn numerics_round_trip_through_binary() {
        for (v, s) in [
            (12345i128, 2i8),
            (-1, 3),
            (0, 2),
            (100000000, 0),
            (7, 5),
            (123456789012345678, 4),
        ] {
            let mut buf = BytesMut::new();
            numeric_send(v, s, &mut buf);
            let text = numeric_recv(&buf).unwrap();
            assert_eq!(text, format_decimal(v, s), "{v} scale {s}");
        }
        assert_eq!(
            parse_numeric("12.50").unwrap(),
            ScalarValue::Decimal128(Some(1250), 38, 2)
        );
        assert_eq!(
            parse_numeric("-1e3").unwrap(),
            ScalarValue::Decimal128(Some(-1000), 38, 0)
        );
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_timestamp(1_500_000), "1970-01-01 00:00:01.5");
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
    }
}
