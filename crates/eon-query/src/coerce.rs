//! Turning computed values into stored column values, with PostgreSQL's
//! rules: assignment casts, `varchar(n)` lengths, `NOT NULL`, uuid and
//! jsonb validation, and PostgreSQL's error codes and messages when a value
//! does not fit. An array column's values (array text `'{1,2,NULL}'` or
//! lists) are coerced element by element as a column of the element type
//! would be, so `varchar(3)[]` checks each element's length.

use std::sync::Arc;

use datafusion::arrow::array::*;
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Float64Type, IntervalMonthDayNano,
};
use eon_common::error::sqlstate;
use eon_common::schema::ColumnDef;
use eon_common::{Error, Result, SqlType};

use crate::datetime::{self, Order};
use crate::numeric;
use eon_common::value::special;

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: datafusion::arrow::util::display::FormatOptions::new(),
};
const LENIENT: CastOptions<'static> = CastOptions {
    safe: true,
    format_options: datafusion::arrow::util::display::FormatOptions::new(),
};

/// Convert `array` to what column `col` of table `table` stores (text
/// dates read in PostgreSQL's default month-day-year order).
pub fn coerce(array: &ArrayRef, col: &ColumnDef, table: &str) -> Result<ArrayRef> {
    coerce_with(array, col, table, Order::Mdy)
}

/// [`coerce`], reading ambiguous text dates in `order` (the session's
/// DateStyle).
pub fn coerce_with(
    array: &ArrayRef,
    col: &ColumnDef,
    table: &str,
    order: Order,
) -> Result<ArrayRef> {
    let target = col.ty.arrow_type();
    let mut array = array.clone();
    if matches!(
        array.data_type(),
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..)
    ) {
        array = cast_with_options(&array, &DataType::Utf8, &STRICT)?;
    }
    let out: ArrayRef = if array.data_type() == &DataType::Null {
        new_null_array(&target, array.len())
    } else {
        match (&col.ty, array.data_type()) {
            (SqlType::Array(element), _) => coerce_array(&array, element, col, table, order)?,
            (SqlType::Enum(def), _) => {
                let text = cast_with_options(&array, &DataType::Utf8, &STRICT)?;
                map_strings(&text, |s| match def.position(s) {
                    Some(_) => Ok(s.to_string()),
                    None => Err(def.invalid_input(s)),
                })?
            }
            (SqlType::Uuid, DataType::Utf8) => map_strings(&array, |s| {
                uuid::Uuid::parse_str(s.trim())
                    .map(|u| u.hyphenated().to_string())
                    .map_err(|_| invalid_input("uuid", s))
            })?,
            (SqlType::Jsonb, DataType::Utf8) => map_strings(&array, |s| {
                serde_json::from_str::<serde_json::Value>(s)
                    .map(|v| jsonb_text(&v))
                    .map_err(|_| invalid_input("json", s))
            })?,
            // json keeps its text as given (spacing, key order,
            // duplicates), once it reads as JSON.
            (SqlType::Json, DataType::Utf8) => map_strings(&array, |s| {
                serde_json::from_str::<serde::de::IgnoredAny>(s)
                    .map(|_| s.to_string())
                    .map_err(|_| invalid_input("json", s))
            })?,
            (SqlType::Bytea, DataType::Utf8) => {
                let a = array.as_string::<i32>();
                let mut b = BinaryBuilder::with_capacity(a.len(), a.len() * 8);
                for v in a.iter() {
                    match v {
                        Some(s) => b.append_value(parse_bytea(s)?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            (SqlType::Bool, DataType::Utf8) => {
                let a = array.as_string::<i32>();
                let mut b = BooleanBuilder::with_capacity(a.len());
                for v in a.iter() {
                    match v {
                        Some(s) => b.append_value(parse_bool(s)?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            // A numeric's NaN and ±Infinity are floats' NaN and ±infinity.
            (SqlType::Float4 | SqlType::Float8, DataType::Decimal128(..)) => {
                numeric::cast_array(&array, &target)?
            }
            (
                SqlType::Int2 | SqlType::Int4 | SqlType::Int8,
                DataType::Float32 | DataType::Float64,
            ) => {
                // PostgreSQL rounds (half to even) where Arrow would truncate.
                let f = cast_with_options(&array, &DataType::Float64, &STRICT)?;
                let rounded: Float64Array = f
                    .as_primitive::<Float64Type>()
                    .unary(|v| v.round_ties_even());
                cast_checked(&(Arc::new(rounded) as ArrayRef), &col.ty)?
            }
            (SqlType::Int2 | SqlType::Int4 | SqlType::Int8, DataType::Decimal128(_, scale)) => {
                if let Some(v) = numeric::special_in(&array) {
                    return Err(numeric::not_an_integer(v, &col.ty));
                }
                // numeric → integer rounds half away from zero.
                let rounded: Decimal128Array = array
                    .as_primitive::<Decimal128Type>()
                    .try_unary(|v| numeric::rescale(v, *scale, 38, 0))?;
                let rounded = rounded.with_precision_and_scale(38, 0)?;
                cast_checked(&(Arc::new(rounded) as ArrayRef), &col.ty)?
            }
            (SqlType::Text | SqlType::Varchar { .. } | SqlType::Char { .. }, DataType::Boolean) => {
                // PostgreSQL's text form of booleans.
                let a = array.as_boolean();
                Arc::new(
                    a.iter()
                        .map(|v| v.map(|b| if b { "true" } else { "false" }))
                        .collect::<StringArray>(),
                )
            }
            // PostgreSQL's free-form date/time input (see crate::datetime).
            (SqlType::Date, DataType::Utf8) => {
                let now = datetime::now_us();
                let a = array.as_string::<i32>();
                Arc::new(
                    a.iter()
                        .map(|v| v.map(|s| datetime::parse_date(s, order, now)).transpose())
                        .collect::<Result<Date32Array>>()?,
                )
            }
            (SqlType::Timestamp | SqlType::TimestampTz, DataType::Utf8) => {
                let now = datetime::now_us();
                let zone = col.ty == SqlType::TimestampTz;
                let a = array.as_string::<i32>();
                let us = a
                    .iter()
                    .map(|v| {
                        v.map(|s| datetime::parse_timestamp(s, order, zone, now))
                            .transpose()
                    })
                    .collect::<Result<TimestampMicrosecondArray>>()?;
                cast_with_options(&(Arc::new(us) as ArrayRef), &target, &STRICT)?
            }
            (SqlType::Interval, DataType::Utf8) => {
                let out = array
                    .as_string::<i32>()
                    .iter()
                    .map(|v| {
                        v.map(|s| {
                            crate::intervals::parse_interval(s).map(IntervalMonthDayNano::from)
                        })
                        .transpose()
                    })
                    .collect::<Result<IntervalMonthDayNanoArray>>()?;
                Arc::new(out)
            }
            (SqlType::Interval, DataType::Duration(_)) => {
                crate::pgtypes::duration_to_interval(&array)?
            }
            (SqlType::Time, DataType::Utf8) => {
                let out = array
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(crate::intervals::parse_time).transpose())
                    .collect::<Result<Time64MicrosecondArray>>()?;
                Arc::new(out)
            }
            // float4/float8: PostgreSQL's input (its range errors).
            (SqlType::Float4 | SqlType::Float8, DataType::Utf8) => {
                let float4 = col.ty == SqlType::Float4;
                let out = array
                    .as_string::<i32>()
                    .iter()
                    .map(|v| {
                        v.map(|v| crate::pgtypes::parse_float_as(v, float4))
                            .transpose()
                    })
                    .collect::<Result<Float64Array>>()?;
                cast_with_options(&(Arc::new(out) as ArrayRef), &target, &STRICT)?
            }
            // numeric: PostgreSQL's rounding, overflow errors and special
            // values (see crate::numeric).
            (SqlType::Numeric { .. }, DataType::Utf8) => {
                let DataType::Decimal128(p, s) = target else {
                    unreachable!("numeric is a Decimal128")
                };
                // (fit_typmod refuses infinities for the odd typmods, with
                // their declared precision and scale.)
                let infinity_ok = col.ty.is_unconstrained_numeric()
                    || matches!(col.ty, SqlType::Numeric { precision, scale } if numeric::odd_typmod(precision, scale));
                let declared = match col.ty {
                    SqlType::Numeric { precision, scale }
                        if precision > 0 && !numeric::odd_typmod(precision, scale) =>
                    {
                        precision
                    }
                    _ => p as u16,
                };
                let out = array
                    .as_string::<i32>()
                    .iter()
                    .map(|v| {
                        v.map(|v| numeric::parse_to(v, declared, s, infinity_ok))
                            .transpose()
                    })
                    .collect::<Result<Decimal128Array>>()?;
                Arc::new(out.with_precision_and_scale(p, s)?)
            }
            (
                SqlType::Numeric { .. },
                DataType::Decimal128(..) | DataType::Float32 | DataType::Float64,
            ) => {
                let out = numeric::cast_array(&array, &target)?;
                let infinite = out
                    .as_primitive::<Decimal128Type>()
                    .iter()
                    .flatten()
                    .any(|v| v == special::INFINITY || v == special::NEG_INFINITY);
                if let (true, SqlType::Numeric { precision, scale }) = (infinite, col.ty) {
                    if precision > 0 {
                        return Err(numeric::infinite_overflow(precision, scale));
                    }
                }
                out
            }
            _ if array.data_type() == &target => array.clone(),
            _ => cast_checked(&array, &col.ty)?,
        }
    };
    let out = match col.ty {
        SqlType::Numeric { precision, scale } if numeric::odd_typmod(precision, scale) => {
            numeric::fit_typmod(&out, precision, scale)?
        }
        _ => out,
    };
    // character(n): trailing spaces are not significant (they are added
    // back on output); what is left must fit.
    let mut out = if let SqlType::Char { length } = col.ty {
        let trimmed = map_strings(&out, |s| Ok(s.trim_end_matches(' ').to_string()))?;
        let a = trimmed.as_string::<i32>();
        if a.iter()
            .flatten()
            .any(|s| s.chars().count() > length as usize)
        {
            return Err(Error::user(
                sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                format!("value too long for type character({length})"),
            ));
        }
        trimmed
    } else {
        out
    };
    if let SqlType::Varchar {
        max_length: Some(n),
    } = col.ty
    {
        // As PostgreSQL's varchar(): what is beyond n may only be spaces,
        // which are cut off.
        let fitted = map_strings(&out, |s| match s.char_indices().nth(n as usize) {
            None => Ok(s.to_string()),
            Some((at, _)) if s[at..].bytes().all(|b| b == b' ') => Ok(s[..at].to_string()),
            Some(_) => Err(Error::user(
                sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                format!("value too long for type character varying({n})"),
            )),
        })?;
        out = fitted;
    }
    if !col.nullable && out.null_count() > 0 {
        return Err(Error::user(
            sqlstate::NOT_NULL_VIOLATION,
            format!(
                "null value in column \"{}\" of relation \"{table}\" violates not-null constraint",
                col.name
            ),
        ));
    }
    Ok(out)
}

/// Values for an array column: text in PostgreSQL's array syntax
/// (`'{1,2,NULL}'`), or lists whose elements are coerced as a column of the
/// element type would coerce them (so `ARRAY[1,2]` fits a `bigint[]` and
/// `'{"a b",c}'` a `varchar(3)[]`, with the element type's errors).
fn coerce_array(
    array: &ArrayRef,
    element: &SqlType,
    col: &ColumnDef,
    table: &str,
    order: Order,
) -> Result<ArrayRef> {
    let element_col = ColumnDef {
        ty: *element,
        nullable: true,
        ..col.clone()
    };
    let list: ArrayRef = match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            let mut offsets = vec![0i32];
            let mut items: Vec<Option<String>> = Vec::new();
            for v in a.iter() {
                if let Some(s) = v {
                    items.extend(parse_array_text(s)?);
                }
                offsets.push(items.len() as i32);
            }
            let values: ArrayRef = Arc::new(StringArray::from(items));
            Arc::new(ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Utf8, true)),
                OffsetBuffer::new(offsets.into()),
                values,
                a.nulls().cloned(),
            )?)
        }
        DataType::List(_) => array.clone(),
        DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            cast_with_options(array, &DataType::List(f.clone()), &STRICT)?
        }
        other => {
            return Err(Error::user(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "column \"{}\" is of type {} but expression is of type {}",
                    col.name,
                    col.ty,
                    SqlType::from_arrow(other)
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| other.to_string())
                ),
            ));
        }
    };
    let list = list.as_list::<i32>();
    let values = coerce_with(list.values(), &element_col, table, order)?;
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(element.arrow_type(), true)),
        list.offsets().clone(),
        values,
        list.nulls().cloned(),
    )?))
}

/// The elements of an array in PostgreSQL's text form (`{1,"a b",NULL}`):
/// None for an unquoted NULL. Multidimensional arrays are refused.
pub fn parse_array_text(s: &str) -> Result<Vec<Option<String>>> {
    let malformed = |why: &str| {
        Error::user(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("malformed array literal: \"{s}\""),
        )
        .with_detail(why.to_string())
    };
    let body = s.trim();
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| malformed("Array value must start with \"{\" or dimension information."))?;
    let mut out = Vec::new();
    if body.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(malformed("Unexpected end of input.")),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => {
                        return Err(if c == '{' {
                            Error::unsupported("multidimensional arrays are not supported")
                        } else {
                            malformed("Unexpected array element.")
                        });
                    }
                    '\\' => {
                        chars.next();
                        item.extend(chars.next());
                        continue;
                    }
                    _ => item.push(c),
                }
                chars.next();
            }
            item = item.trim_end().to_string();
            if item.is_empty() {
                return Err(malformed("Unexpected \",\" character."));
            }
        }
        out.push(if !quoted && item.eq_ignore_ascii_case("null") {
            None
        } else {
            Some(item)
        });
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(_) => return Err(malformed("Unexpected array element.")),
        }
    }
}

/// An Arrow cast that fails like PostgreSQL's input functions.
fn cast_checked(array: &ArrayRef, ty: &SqlType) -> Result<ArrayRef> {
    let target = ty.arrow_type();
    match cast_with_options(array, &target, &STRICT) {
        Ok(a) => Ok(a),
        Err(_) => {
            // Find the first value that does not convert, for the message.
            let lenient = cast_with_options(array, &target, &LENIENT)?;
            let bad = (0..array.len()).find(|&i| !array.is_null(i) && lenient.is_null(i));
            if let (Some(i), DataType::Utf8) = (bad, array.data_type()) {
                let s = array.as_string::<i32>().value(i);
                let digits = s.trim().trim_start_matches(['+', '-']);
                if matches!(ty, SqlType::Int2 | SqlType::Int4 | SqlType::Int8)
                    && !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(Error::user(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("value \"{s}\" is out of range for type {ty}"),
                    ));
                }
                let e = invalid_input(&ty.to_string(), s);
                // Dates and times that do not parse are 22007 in PostgreSQL.
                Err(match ty {
                    SqlType::Date | SqlType::Timestamp | SqlType::TimestampTz => Error {
                        code: sqlstate::INVALID_DATETIME_FORMAT.into(),
                        ..e
                    },
                    _ => e,
                })
            } else {
                Err(out_of_range(ty))
            }
        }
    }
}

fn out_of_range(ty: &SqlType) -> Error {
    let msg = match ty {
        SqlType::Int2 => "smallint out of range".to_string(),
        SqlType::Int4 => "integer out of range".to_string(),
        SqlType::Int8 => "bigint out of range".to_string(),
        SqlType::Numeric { .. } => "numeric field overflow".to_string(),
        other => format!("value out of range for type {other}"),
    };
    Error::user(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, msg)
}

fn invalid_input(ty: &str, value: &str) -> Error {
    Error::user(
        sqlstate::INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type {ty}: \"{value}\""),
    )
}

fn map_strings(array: &ArrayRef, f: impl Fn(&str) -> Result<String>) -> Result<ArrayRef> {
    let a = array.as_string::<i32>();
    let mut b = StringBuilder::with_capacity(a.len(), a.len() * 16);
    for v in a.iter() {
        match v {
            Some(s) => b.append_value(f(s)?),
            None => b.append_null(),
        }
    }
    Ok(Arc::new(b.finish()))
}

/// PostgreSQL's boolean input (`parse_bool_with_len`): any leading part of
/// true/yes/false/no, on/off (at least two letters), 1 or 0, in any case,
/// with spaces around it; the error quotes the input as given.
pub fn parse_bool(s: &str) -> Result<bool> {
    let v = s.trim().to_ascii_lowercase();
    let starts = |word: &str, least: usize| v.len() >= least && word.starts_with(v.as_str());
    if starts("true", 1) || starts("yes", 1) || starts("on", 2) || v == "1" {
        Ok(true)
    } else if starts("false", 1) || starts("no", 1) || starts("off", 2) || v == "0" {
        Ok(false)
    } else {
        Err(invalid_input("boolean", s))
    }
}

/// PostgreSQL's bytea input: hex (`\x0102`) or escape format.
pub fn parse_bytea(s: &str) -> Result<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() % 2 != 0 {
            return Err(Error::user(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                "invalid hexadecimal data: odd number of digits",
            ));
        }
        return (0..digits.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| {
                    Error::user(
                        sqlstate::INVALID_TEXT_REPRESENTATION,
                        format!("invalid hexadecimal digit: \"{}\"", &digits[i..i + 2]),
                    )
                })
            })
            .collect();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else if i + 3 < bytes.len()
                && bytes[i + 1..i + 4]
                    .iter()
                    .all(|c| (b'0'..=b'7').contains(c))
            {
                let v = (bytes[i + 1] - b'0') as u32 * 64
                    + (bytes[i + 2] - b'0') as u32 * 8
                    + (bytes[i + 3] - b'0') as u32;
                if v > 255 {
                    return Err(Error::user(
                        sqlstate::INVALID_TEXT_REPRESENTATION,
                        "invalid input syntax for type bytea",
                    ));
                }
                out.push(v as u8);
                i += 4;
            } else {
                return Err(Error::user(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    "invalid input syntax for type bytea",
                ));
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// jsonb's canonical text: keys ordered by length then bytes (as PostgreSQL
/// stores them), `", "` and `": "` separators.
pub fn jsonb_text(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_jsonb(v, &mut out);
    out
}

fn write_jsonb(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push_str(": ");
                write_jsonb(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: SqlType, nullable: bool) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            ty,
            nullable,
            default_sql: None,
            hidden: false,
        }
    }

    fn strings(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(v.iter().copied().collect::<StringArray>())
    }

    #[test]
    fn boolean_input_takes_leading_parts_of_the_words() {
        for t in ["t", "TRU", " true ", "y", "Ye", "on", "1"] {
            assert!(parse_bool(t).unwrap(), "{t:?}");
        }
        for f in ["f", "fAlS", "n", "no", "of", "OFF", " 0"] {
            assert!(!parse_bool(f).unwrap(), "{f:?}");
        }
        for bad in ["", "o", "tru e", "yess", "11", "XXX"] {
            let e = parse_bool(bad).unwrap_err();
            assert_eq!(
                e.message,
                format!("invalid input syntax for type boolean: \"{bad}\"")
            );
        }
    }

    #[test]
    fn postgres_input_rules() {
        let e = coerce(
            &strings(&[Some("12"), Some("abc")]),
            &col(SqlType::Int4, true),
            "t",
        )
        .unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("22P02", "invalid input syntax for type integer: \"abc\"")
        );
        let big: ArrayRef = Arc::new(Int64Array::from(vec![70000]));
        assert_eq!(
            coerce(&big, &col(SqlType::Int2, true), "t")
                .unwrap_err()
                .message,
            "smallint out of range"
        );
        let f: ArrayRef = Arc::new(Float64Array::from(vec![2.5, 3.5, -1.5]));
        let r = coerce(&f, &col(SqlType::Int4, true), "t").unwrap();
        assert_eq!(
            r.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .values()
                .to_vec(),
            vec![2, 4, -2]
        );
        let e = coerce(
            &strings(&[Some("toolong")]),
            &col(
                SqlType::Varchar {
                    max_length: Some(3),
                },
                true,
            ),
            "t",
        )
        .unwrap_err();
        assert_eq!(e.code, "22001");
        let e = coerce(&strings(&[None]), &col(SqlType::Text, false), "t").unwrap_err();
        assert_eq!(
            e.message,
            "null value in column \"c\" of relation \"t\" violates not-null constraint"
        );
        let u = coerce(
            &strings(&[Some("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")]),
            &col(SqlType::Uuid, true),
            "t",
        )
        .unwrap();
        assert_eq!(
            u.as_string::<i32>().value(0),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        let j = coerce(
            &strings(&[Some(r#"{"bb":1,"a":[true,null],"a":2}"#)]),
            &col(SqlType::Jsonb, true),
            "t",
        )
        .unwrap();
        assert_eq!(j.as_string::<i32>().value(0), r#"{"a": 2, "bb": 1}"#);
        let b = coerce(
            &strings(&[Some("\\x00ff"), Some("a\\\\b\\001")]),
            &col(SqlType::Bytea, true),
            "t",
        )
        .unwrap();
        assert_eq!(b.as_binary::<i32>().value(0), &[0, 255]);
        assert_eq!(b.as_binary::<i32>().value(1), b"a\\b\x01");
    }
}
