//! Intervals and times of day as PostgreSQL reads them.
//!
//! An interval has three fields that PostgreSQL keeps apart because they do
//! not convert into each other exactly: months (a month is 28 to 31 days),
//! days (a day is 23 to 25 hours across a daylight-saving change) and a
//! time in microseconds. eon stores them in Arrow's `Interval(MonthDayNano)`
//! (DataFusion's interval type, so `timestamp + interval` is DataFusion's
//! own arithmetic); the text form is written by
//! [`eon_common::value::format_interval`].
//!
//! Input is PostgreSQL's free form (`DecodeInterval` in datetime.c): a list
//! of numbers with units (`1 year 2 mons`, `3 days`, `-4 hours`, `1.5
//! weeks`, `10 min`, `2s`), time fields (`04:05:06.7`, `-01:30`), an
//! optional leading `@` and trailing `ago` (which negates everything); a
//! bare number is seconds. Fractions carry down as PostgreSQL carries them:
//! a fraction of a year becomes whole months, of a month 30-day days, of a
//! day or week a time. The hand-written reader follows datetime.rs's: no
//! crate reads PostgreSQL's interval syntax.

use datafusion::arrow::datatypes::IntervalMonthDayNano;
use eon_common::Error;
use eon_common::error::sqlstate;

use crate::datetime::{self, Order};

const US_PER_SEC: f64 = 1_000_000.0;
const US_PER_DAY: f64 = 86_400.0 * US_PER_SEC;

/// An interval: months, days, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

/// Arrow's form: the time in nanoseconds.
impl From<Interval> for IntervalMonthDayNano {
    fn from(v: Interval) -> Self {
        IntervalMonthDayNano::new(v.months, v.days, v.micros * 1000)
    }
}

/// From Arrow's form, to the microsecond (PostgreSQL's precision).
impl From<IntervalMonthDayNano> for Interval {
    fn from(v: IntervalMonthDayNano) -> Self {
        Interval {
            months: v.months,
            days: v.days,
            micros: v.nanoseconds.div_euclid(1000),
        }
    }
}

impl Interval {
    /// PostgreSQL's text form (IntervalStyle postgres).
    pub fn to_text(&self) -> String {
        eon_common::value::format_interval(self.months, self.days, self.micros)
    }

    /// The text Arrow's interval parser reads as this value exactly.
    pub fn to_arrow_text(&self) -> String {
        format!(
            "{} months {} days {} microseconds",
            self.months, self.days, self.micros
        )
    }
}

/// Read `s` as PostgreSQL reads an interval.
pub fn parse_interval(s: &str) -> Result<Interval, Error> {
    let invalid = || {
        Error::user(
            sqlstate::INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type interval: \"{s}\""),
        )
    };
    let tokens = tokens(s).ok_or_else(invalid)?;
    let (mut months, mut days, mut micros) = (0f64, 0f64, 0f64);
    let mut ago = false;
    let mut i = 0;
    let mut any = false;
    while i < tokens.len() {
        let tok = &tokens[i];
        i += 1;
        if tok == "@" && i == 1 {
            continue;
        }
        if tok.eq_ignore_ascii_case("ago") && i == tokens.len() && any {
            ago = true;
            continue;
        }
        if tok.contains(':') {
            micros += time_field(tok).ok_or_else(invalid)?;
            any = true;
            continue;
        }
        let value: f64 = tok.parse().map_err(|_| invalid())?;
        if !value.is_finite() || tok.contains(['e', 'E']) || tok.contains("inf") {
            return Err(invalid());
        }
        let unit = match tokens.get(i) {
            Some(u)
                if u.chars().all(|c| c.is_ascii_alphabetic()) && !u.eq_ignore_ascii_case("ago") =>
            {
                i += 1;
                u.to_ascii_lowercase()
            }
            // A bare number: seconds.
            _ => "s".to_string(),
        };
        any = true;
        let whole_and_fraction = |v: f64| (v.trunc(), v - v.trunc());
        match unit.as_str() {
            "millennium" | "millennia" | "millenniums" | "mil" | "mils" => {
                months += (value * 12_000.0).round()
            }
            "century" | "centuries" | "cent" | "c" => months += (value * 1200.0).round(),
            "decade" | "decades" | "dec" | "decs" => months += (value * 120.0).round(),
            "year" | "years" | "y" | "yr" | "yrs" => months += (value * 12.0).round(),
            "month" | "months" | "mon" | "mons" => {
                let (whole, fraction) = whole_and_fraction(value);
                months += whole;
                let (d, f) = whole_and_fraction(fraction * 30.0);
                days += d;
                micros += (f * US_PER_DAY).round();
            }
            "week" | "weeks" | "w" => {
                let (d, f) = whole_and_fraction(value * 7.0);
                days += d;
                micros += (f * US_PER_DAY).round();
            }
            "day" | "days" | "d" => {
                let (d, f) = whole_and_fraction(value);
                days += d;
                micros += (f * US_PER_DAY).round();
            }
            "hour" | "hours" | "h" | "hr" | "hrs" => {
                micros += (value * 3600.0 * US_PER_SEC).round()
            }
            "minute" | "minutes" | "min" | "mins" | "m" => {
                micros += (value * 60.0 * US_PER_SEC).round()
            }
            "second" | "seconds" | "sec" | "secs" | "s" => micros += (value * US_PER_SEC).round(),
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => {
                micros += (value * 1000.0).round()
            }
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" => micros += value.round(),
            _ => return Err(invalid()),
        }
    }
    if !any {
        return Err(invalid());
    }
    if ago {
        (months, days, micros) = (-months, -days, -micros);
    }
    let out_of_range = || {
        Error::user(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("interval field value out of range: \"{s}\""),
        )
    };
    let fits32 = |v: f64| (i32::MIN as f64..=i32::MAX as f64).contains(&v);
    if !fits32(months) || !fits32(days) || micros.abs() >= 9.2e18 {
        return Err(out_of_range());
    }
    Ok(Interval {
        months: months as i32,
        days: days as i32,
        micros: micros as i64,
    })
}

/// The words of an interval: numbers (with their sign), unit words, time
/// fields (`-04:05:06.5`) and `@`; a number and its unit may touch (`2s`).
fn tokens(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == ',' {
            i += 1;
        } else if c == '@' {
            out.push("@".into());
            i += 1;
        } else if c.is_ascii_digit() || c == '.' || c == '-' || c == '+' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | ':')) {
                i += 1;
            }
            let tok: String = chars[start..i].iter().collect();
            let tok = tok.strip_prefix('+').map(str::to_string).unwrap_or(tok);
            out.push(tok);
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            return None;
        }
    }
    Some(out)
}

/// `[-]h:m[:s[.f]]` in microseconds.
fn time_field(tok: &str) -> Option<f64> {
    let (negative, rest) = match tok.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, tok),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let h: f64 = parts[0].parse().ok().filter(|_| !parts[0].contains('.'))?;
    let m: f64 = parts[1].parse().ok().filter(|_| !parts[1].contains('.'))?;
    let s: f64 = match parts.get(2) {
        Some(s) => s.parse().ok()?,
        None => 0.0,
    };
    if m >= 60.0 || s >= 60.0 {
        return None;
    }
    let us = ((h * 3600.0 + m * 60.0) * US_PER_SEC + (s * US_PER_SEC).round()).round();
    Some(if negative { -us } else { us })
}

/// Read `s` as a time of day (`04:05`, `04:05:06.789`, `4:05 PM`, or a
/// whole timestamp whose time is taken): microseconds since midnight.
pub fn parse_time(s: &str) -> Result<i64, Error> {
    const DAY: i64 = 86_400_000_000;
    let us = datetime::parse_timestamp(&format!("2000-01-01 {s}"), Order::Ymd, false, 0)
        .or_else(|_| datetime::parse_timestamp(s, Order::Mdy, false, 0))
        .map_err(|_| {
            Error::user(
                sqlstate::INVALID_DATETIME_FORMAT,
                format!("invalid input syntax for type time: \"{s}\""),
            )
        })?;
    // 24:00:00 is a time of its own in PostgreSQL (the end of the day).
    let midnight = datetime::parse_timestamp("2000-01-01", Order::Ymd, false, 0)?;
    if us - midnight == DAY {
        return Ok(DAY);
    }
    Ok(us.rem_euclid(DAY))
}

// ---------------------------------------------------- literals in queries

/// Read each interval literal of the statements (`INTERVAL '1 day
/// 02:00'`, `'1 mon'::interval`) with PostgreSQL's input rules and write it
/// back as `'M months D days U microseconds'`, which DataFusion reads
/// exactly. A literal with a field qualifier (`INTERVAL '1' DAY`) is left to
/// DataFusion. One that does not read is the statement's error.
pub fn rewrite_literals(
    statements: &mut [datafusion::sql::sqlparser::ast::Statement],
) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::{DataType as T, Expr as E, Value};
    crate::pgfuncs::try_rewrite_expressions(statements, |e: &mut E| {
        let value = match e {
            E::Interval(iv)
                if iv.leading_field.is_none()
                    && iv.last_field.is_none()
                    && iv.fractional_seconds_precision.is_none() =>
            {
                match iv.value.as_mut() {
                    E::Value(v) => &mut v.value,
                    _ => return Ok(()),
                }
            }
            E::TypedString(t) if matches!(t.data_type, T::Interval { .. }) => &mut t.value.value,
            E::Cast {
                expr,
                data_type: T::Interval { .. },
                ..
            } => match expr.as_mut() {
                E::Value(v) => &mut v.value,
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        if let Value::SingleQuotedString(text) = value {
            *text = parse_interval(text)?.to_arrow_text();
        }
        Ok(())
    })
}

/// A text literal bound for an interval or time column, rewritten to the
/// form DataFusion's cast reads as PostgreSQL would have read the original
/// (`'1 day 02:00'` → `'0 months 1 days 7200000000 microseconds'`).
pub fn normalize_literal(
    ty: &eon_common::SqlType,
    cell: &mut datafusion::sql::sqlparser::ast::Expr,
) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::{Expr as E, Value};
    let E::Value(v) = cell else { return Ok(()) };
    let Value::SingleQuotedString(text) = &mut v.value else {
        return Ok(());
    };
    match ty {
        eon_common::SqlType::Interval => {
            *text = parse_interval(text)?.to_arrow_text();
        }
        eon_common::SqlType::Time => {
            *text = eon_common::value::format_time(parse_time(text)?);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> (i32, i32, i64) {
        let v = parse_interval(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (v.months, v.days, v.micros)
    }

    #[test]
    fn intervals_read_as_postgresql_reads_them() {
        const H: i64 = 3_600_000_000;
        assert_eq!(iv("1 day 2 hours"), (0, 1, 2 * H));
        assert_eq!(iv("1 year 3 mons -2 days +00:00:01"), (15, -2, 1_000_000));
        assert_eq!(iv("@ 1 minute ago"), (0, 0, -60_000_000));
        assert_eq!(iv("1.5 years"), (18, 0, 0));
        assert_eq!(iv("1.5 months"), (1, 15, 0));
        assert_eq!(iv("1.5 days"), (0, 1, 12 * H));
        assert_eq!(iv("-01:30"), (0, 0, -90 * 60_000_000));
        assert_eq!(iv("36:00:01.5"), (0, 0, 36 * H + 1_500_000));
        assert_eq!(iv("2s"), (0, 0, 2_000_000));
        assert_eq!(iv("5"), (0, 0, 5_000_000));
        assert_eq!(iv("1 week"), (0, 7, 0));
        assert_eq!(iv("10 centuries"), (12_000, 0, 0));
        for bad in ["", "1 fortnight", "abc", "1 day ago ago", "1:60", "@"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_read_with_or_without_a_date() {
        assert_eq!(parse_time("04:05:06.789").unwrap(), 14_706_789_000);
        assert_eq!(parse_time("4:05 PM").unwrap(), 57_900_000_000);
        assert_eq!(parse_time("2003-04-12 04:05:06").unwrap(), 14_706_000_000);
        assert_eq!(parse_time("24:00:00").unwrap(), 86_400_000_000);
        assert!(parse_time("25:00").is_err());
    }
}
