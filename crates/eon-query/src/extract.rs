//! `EXTRACT(field FROM v)` and `date_part('field', v)` as PostgreSQL
//! computes them.
//!
//! Both take a part of a date or timestamp — its year, its ISO week, its
//! seconds with their fraction, its Julian day, the seconds since the Unix
//! epoch … PostgreSQL (since 14) answers EXTRACT with a `numeric` whose
//! scale is the field's (`extract(second …)` is `1.400000`, milliseconds
//! `1400.000`, microseconds `1400000`, the calendar fields integers), and
//! `date_part` with a `double precision`. Its calendar is proleptic
//! Gregorian with astronomical year numbering underneath and BC years
//! counted from 1 on the way out (year 0 is `1 BC`, so `EXTRACT(year …)`
//! of it is -1; decades, centuries and millennia of BC dates count
//! backwards from there). `infinity` and `-infinity` have an infinite year,
//! decade, century, millennium, ISO year, Julian day and epoch, and no
//! month or day (NULL). Field names are read as PostgreSQL reads them:
//! lower-cased, cut to ten characters, with its abbreviations (`us`,
//! `msec`, `secs`, `mon`, `y`, `c`, …). A field the type does not have is
//! 0A000 `unit "hour" not supported for type date`; an unknown one 22023
//! `… not recognized …`.
//!
//! DataFusion's `date_part` differs in all of these (no century, decade,
//! millennium or Julian day; integers, not numeric; a chrono calendar
//! without BC years; no infinities), so eon registers its own under that
//! name (types it does not know — intervals, times — still go to
//! DataFusion's) and [`rewrite`] turns EXTRACT into a call of
//! `eon_extract`, the numeric version. The calendar is computed here from
//! day numbers (Howard Hinnant's civil-from-days), not with chrono, whose
//! years end at ±262143 where PostgreSQL's timestamps reach 294276.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Value};
use eon_common::Error;
use eon_common::error::sqlstate;
use eon_common::value::special;

use crate::datetime::{DATE_INFINITY, DATE_NEG_INFINITY, TS_INFINITY, TS_NEG_INFINITY};
use crate::provider::to_df;

/// Register `date_part` (replacing DataFusion's) and `eon_extract`.
pub fn register(ctx: &SessionContext) {
    let fallback = datafusion::functions::datetime::date_part();
    for numeric in [false, true] {
        ctx.register_udf(ScalarUDF::new_from_impl(DatePart {
            signature: Signature::any(2, Volatility::Immutable),
            numeric,
            fallback: Arc::clone(&fallback),
        }));
    }
}

/// `EXTRACT(field FROM v)` → `eon_extract('field', v)` (named `extract`
/// by naming::pg_name).
pub fn rewrite(e: &mut SqlExpr) {
    if let SqlExpr::Extract { field, expr, .. } = e {
        let field = SqlExpr::value(Value::SingleQuotedString(field.to_string()));
        *e = crate::pgfuncs::call_with(EXTRACT, vec![field, (**expr).clone()]);
    }
}

/// The name EXTRACT is planned as.
pub const EXTRACT: &str = "eon_extract";

/// The parts of a date or timestamp PostgreSQL knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Microseconds,
    Milliseconds,
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Quarter,
    Week,
    Year,
    Decade,
    Century,
    Millennium,
    IsoYear,
    Dow,
    IsoDow,
    Doy,
    Julian,
    Epoch,
    Timezone,
    TimezoneHour,
    TimezoneMinute,
}

impl Unit {
    /// PostgreSQL's reading of a unit name: lower case, at most ten
    /// characters (its TOKMAXLEN), its table of spellings.
    fn parse(text: &str) -> Option<Unit> {
        let lower = text.to_lowercase();
        let key: String = lower.chars().take(10).collect();
        Some(match key.as_str() {
            "microsecon" | "us" | "usec" | "usecond" | "useconds" | "usecs" => Unit::Microseconds,
            "millisecon" | "ms" | "msec" | "msecond" | "mseconds" | "msecs" => Unit::Milliseconds,
            "s" | "sec" | "second" | "seconds" | "secs" => Unit::Second,
            "m" | "min" | "mins" | "minute" | "minutes" => Unit::Minute,
            "h" | "hour" | "hours" | "hr" | "hrs" => Unit::Hour,
            "d" | "day" | "days" => Unit::Day,
            "mon" | "mons" | "month" | "months" => Unit::Month,
            "qtr" | "quarter" => Unit::Quarter,
            "w" | "week" | "weeks" => Unit::Week,
            "y" | "year" | "years" | "yr" | "yrs" => Unit::Year,
            "dec" | "decade" | "decades" | "decs" => Unit::Decade,
            "c" | "cent" | "centuries" | "century" => Unit::Century,
            "mil" | "millennia" | "millennium" | "mils" => Unit::Millennium,
            "isoyear" => Unit::IsoYear,
            "dow" => Unit::Dow,
            "isodow" => Unit::IsoDow,
            "doy" => Unit::Doy,
            "julian" | "j" => Unit::Julian,
            "epoch" => Unit::Epoch,
            "timezone" => Unit::Timezone,
            "timezone_h" => Unit::TimezoneHour,
            "timezone_m" => Unit::TimezoneMinute,
            _ => return None,
        })
    }

    /// The scale of EXTRACT's numeric answer for this unit of `kind`.
    fn scale(self, kind: Kind) -> i8 {
        match (self, kind) {
            (Unit::Milliseconds, _) => 3,
            (Unit::Second | Unit::Epoch, Kind::Timestamp | Kind::TimestampTz) => 6,
            (Unit::Julian, Kind::Timestamp | Kind::TimestampTz) => JULIAN_SCALE,
            _ => 0,
        }
    }

    /// Whether an infinite date or timestamp has this part (an infinite
    /// one); the others are NULL.
    fn infinite(self) -> bool {
        matches!(
            self,
            Unit::Year
                | Unit::Decade
                | Unit::Century
                | Unit::Millennium
                | Unit::IsoYear
                | Unit::Julian
                | Unit::Epoch
        )
    }
}

/// The scale of a timestamp's Julian day (PostgreSQL divides the time of
/// day by a day in numeric, which gives about 16 digits).
const JULIAN_SCALE: i8 = 16;

/// The input types with PostgreSQL's calendar here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Date,
    Timestamp,
    TimestampTz,
}

impl Kind {
    fn of(t: &DataType) -> Option<Kind> {
        match t {
            DataType::Date32 | DataType::Date64 => Some(Kind::Date),
            DataType::Timestamp(_, None) => Some(Kind::Timestamp),
            DataType::Timestamp(_, Some(_)) => Some(Kind::TimestampTz),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Date => "date",
            Kind::Timestamp => "timestamp without time zone",
            Kind::TimestampTz => "timestamp with time zone",
        }
    }

    fn has(self, unit: Unit) -> bool {
        match self {
            Kind::Date => !matches!(
                unit,
                Unit::Microseconds
                    | Unit::Milliseconds
                    | Unit::Second
                    | Unit::Minute
                    | Unit::Hour
                    | Unit::Timezone
                    | Unit::TimezoneHour
                    | Unit::TimezoneMinute
            ),
            Kind::Timestamp => !matches!(
                unit,
                Unit::Timezone | Unit::TimezoneHour | Unit::TimezoneMinute
            ),
            Kind::TimestampTz => true,
        }
    }
}

/// A part: `mantissa / 10^scale`, or an infinity (its sign), or none.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Part {
    Exact(i128),
    Infinite(bool),
    Null,
}

/// Days since 1970-01-01 → (astronomical year, month, day).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (astronomical year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Monday that starts ISO year `y` (the week holding January 4).
fn iso_year_start(y: i64) -> i64 {
    let jan4 = days_from_civil(y, 1, 4);
    jan4 - (jan4 + 3).rem_euclid(7)
}

/// (ISO year, ISO week) of a day.
fn iso_week(days: i64, year: i64) -> (i64, i64) {
    let iso_year = if days < iso_year_start(year) {
        year - 1
    } else if days >= iso_year_start(year + 1) {
        year + 1
    } else {
        year
    };
    (iso_year, (days - iso_year_start(iso_year)) / 7 + 1)
}

/// A year as PostgreSQL shows it: BC years counted from -1.
fn shown_year(year: i64) -> i64 {
    if year > 0 { year } else { year - 1 }
}

const US_PER_DAY: i64 = 86_400_000_000;
/// The Julian day of 1970-01-01.
const UNIX_JULIAN: i64 = 2_440_588;

/// `unit` of the timestamp `us` (microseconds since 1970; a date is its
/// midnight), as `mantissa / 10^unit.scale(kind)`.
fn part(unit: Unit, kind: Kind, us: i64) -> Part {
    let days = us.div_euclid(US_PER_DAY);
    let time = us.rem_euclid(US_PER_DAY);
    let (year, month, day) = civil(days);
    let second_us = time % 60_000_000;
    let v: i128 = match unit {
        Unit::Microseconds | Unit::Milliseconds | Unit::Second => second_us.into(),
        Unit::Minute => (time / 60_000_000 % 60).into(),
        Unit::Hour => (time / 3_600_000_000).into(),
        Unit::Day => day.into(),
        Unit::Month => month.into(),
        Unit::Quarter => ((month - 1) / 3 + 1).into(),
        Unit::Week => iso_week(days, year).1.into(),
        Unit::Year => shown_year(year).into(),
        Unit::Decade => (if year >= 0 {
            year / 10
        } else {
            -((8 - (year - 1)) / 10)
        })
        .into(),
        Unit::Century => (if year > 0 {
            (year + 99) / 100
        } else {
            -((99 - (year - 1)) / 100)
        })
        .into(),
        Unit::Millennium => (if year > 0 {
            (year + 999) / 1000
        } else {
            -((999 - (year - 1)) / 1000)
        })
        .into(),
        Unit::IsoYear => shown_year(iso_week(days, year).0).into(),
        Unit::Dow => (days + 4).rem_euclid(7).into(),
        Unit::IsoDow => ((days + 3).rem_euclid(7) + 1).into(),
        Unit::Doy => (days - days_from_civil(year, 1, 1) + 1).into(),
        Unit::Julian => {
            let julian = i128::from(days + UNIX_JULIAN);
            if kind == Kind::Date {
                julian
            } else {
                let unit = 10i128.pow(JULIAN_SCALE as u32);
                let fraction = i128::from(time) * unit;
                let day = i128::from(US_PER_DAY);
                julian * unit + (fraction + day / 2) / day
            }
        }
        Unit::Epoch if kind == Kind::Date => i128::from(days) * 86_400,
        Unit::Epoch => us.into(),
        // eon shows timestamptz in UTC.
        Unit::Timezone | Unit::TimezoneHour | Unit::TimezoneMinute => 0,
    };
    Part::Exact(v)
}

/// `unit` of a value of `kind` (days for a date, microseconds for a
/// timestamp), infinities included.
fn part_of(unit: Unit, kind: Kind, raw: i64) -> Part {
    let infinite = match (kind, raw) {
        (Kind::Date, v) if v == i64::from(DATE_INFINITY) => Some(true),
        (Kind::Date, v) if v == i64::from(DATE_NEG_INFINITY) => Some(false),
        (Kind::Timestamp | Kind::TimestampTz, TS_INFINITY) => Some(true),
        (Kind::Timestamp | Kind::TimestampTz, TS_NEG_INFINITY) => Some(false),
        _ => None,
    };
    match infinite {
        Some(positive) if unit.infinite() => Part::Infinite(positive),
        Some(_) => Part::Null,
        None if kind == Kind::Date => part(unit, kind, raw * US_PER_DAY),
        None => part(unit, kind, raw),
    }
}

/// `date_part` (double precision) or `eon_extract` (numeric).
#[derive(Debug, PartialEq, Eq, Hash)]
struct DatePart {
    signature: Signature,
    numeric: bool,
    fallback: Arc<ScalarUDF>,
}

/// A unit from the first argument when it is a constant.
fn constant_unit(args: &ReturnFieldArgs) -> Option<String> {
    match args.scalar_arguments.first()? {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => Some(s.clone()),
        Some(ScalarValue::LargeUtf8(Some(s))) => Some(s.clone()),
        _ => None,
    }
}

fn unit_error(text: &str, kind: Kind) -> DataFusionError {
    let lower = text.to_lowercase();
    let error = match Unit::parse(text) {
        Some(_) => Error::unsupported(format!(
            "unit \"{lower}\" not supported for type {}",
            kind.name()
        )),
        None => Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("unit \"{lower}\" not recognized for type {}", kind.name()),
        ),
    };
    to_df(error)
}

impl DatePart {
    /// The kind the value is read as: `date_part` of a date is that of
    /// its midnight (PostgreSQL defines `date_part(text, date)` so), EXTRACT
    /// of a date has only the date's fields.
    fn kind(&self, t: &DataType) -> Option<Kind> {
        match Kind::of(t)? {
            Kind::Date if !self.numeric => Some(Kind::Timestamp),
            kind => Some(kind),
        }
    }

    fn unit(&self, text: &str, kind: Kind) -> Result<Unit> {
        match Unit::parse(text) {
            Some(unit) if kind.has(unit) => Ok(unit),
            _ => Err(unit_error(text, kind)),
        }
    }
}

impl ScalarUDFImpl for DatePart {
    fn name(&self) -> &str {
        if self.numeric { EXTRACT } else { "date_part" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        unreachable!("return_field_from_args answers")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let input = args.arg_fields[1].data_type();
        let Some(kind) = self.kind(input) else {
            return self.fallback.return_field_from_args(args);
        };
        let data_type = if self.numeric {
            let scale = match constant_unit(&args) {
                Some(text) => self.unit(&text, kind)?.scale(kind),
                None => 6,
            };
            DataType::Decimal128(38, scale)
        } else {
            DataType::Float64
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = args.args[1].data_type();
        let Some(kind) = self.kind(&input) else {
            return self.fallback.invoke_with_args(args);
        };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let units = cast(&arrays[0], &DataType::Utf8)?;
        let units = units.as_string::<i32>();
        // Days for a date, microseconds for a timestamp.
        let raw = match &input {
            DataType::Date32 | DataType::Date64 => cast(&arrays[1], &DataType::Date32)
                .and_then(|a| cast(&a, &DataType::Int32))
                .and_then(|a| cast(&a, &DataType::Int64))?,
            DataType::Timestamp(_, zone) => cast(
                &arrays[1],
                &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
            )
            .and_then(|a| cast(&a, &DataType::Int64))?,
            _ => unreachable!("kind() knows only dates and timestamps"),
        };
        let raw = raw.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        // date_part reads a date as its midnight.
        let raw = match (Kind::of(&input), kind) {
            (Some(Kind::Date), Kind::Timestamp) => &raw.unary(crate::datetime::date_midnight),
            _ => raw,
        };
        let out_type = args.return_field.data_type().clone();
        let rows = raw.len();
        // Each row's unit, part and value (None: a NULL argument).
        let parts = (0..rows)
            .map(|i| {
                if raw.is_null(i) || units.is_null(i) {
                    return Ok(None);
                }
                let unit = self.unit(units.value(i), kind)?;
                Ok(Some((
                    unit,
                    part_of(unit, kind, raw.value(i)),
                    raw.value(i),
                )))
            })
            .collect::<Result<Vec<_>>>()?;
        let out: ArrayRef = if let DataType::Decimal128(p, s) = out_type {
            if parts
                .iter()
                .flatten()
                .any(|(unit, ..)| unit.scale(kind) != s)
            {
                return Err(to_df(Error::unsupported(
                    "EXTRACT of a unit that is not a constant is not supported yet",
                )));
            }
            let values = parts.into_iter().map(|p| match p?.1 {
                Part::Exact(v) => Some(v),
                Part::Infinite(true) => Some(special::INFINITY),
                Part::Infinite(false) => Some(special::NEG_INFINITY),
                Part::Null => None,
            });
            Arc::new(Decimal128Array::from_iter(values).with_precision_and_scale(p, s)?)
        } else {
            let values = parts.into_iter().map(|p| {
                let (unit, part, us) = p?;
                match part {
                    // PostgreSQL's float8 Julian day: the day plus the time
                    // of day as a fraction.
                    Part::Exact(_) if unit == Unit::Julian => Some(
                        (us.div_euclid(US_PER_DAY) + UNIX_JULIAN) as f64
                            + us.rem_euclid(US_PER_DAY) as f64 / US_PER_DAY as f64,
                    ),
                    Part::Exact(v) => Some(v as f64 / 10f64.powi(unit.scale(kind).into())),
                    Part::Infinite(true) => Some(f64::INFINITY),
                    Part::Infinite(false) => Some(f64::NEG_INFINITY),
                    Part::Null => None,
                }
            });
            Arc::new(Float64Array::from_iter(values))
        };
        if rows == 0 {
            return Ok(ColumnarValue::Array(new_null_array(&out_type, 0)));
        }
        crate::pgfuncs::shaped_like(&args.args, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d)
    }

    fn exact(unit: Unit, kind: Kind, raw: i64) -> i128 {
        match part_of(unit, kind, raw) {
            Part::Exact(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_calendar_round_trips_far_beyond_chrono() {
        for d in [-100_000_000i64, -719_528, -1, 0, 1, 10_957, 106_000_000] {
            let (y, m, dd) = civil(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(days(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn centuries_decades_and_millennia_count_bc_years_as_postgresql() {
        // Astronomical year -100 is 101 BC.
        let bc101 = days(-100, 12, 31);
        assert_eq!(exact(Unit::Century, Kind::Date, bc101), -2);
        assert_eq!(exact(Unit::Century, Kind::Date, days(-99, 12, 31)), -1);
        assert_eq!(exact(Unit::Century, Kind::Date, days(1, 1, 1)), 1);
        assert_eq!(exact(Unit::Century, Kind::Date, days(2000, 12, 31)), 20);
        assert_eq!(exact(Unit::Century, Kind::Date, days(2001, 1, 1)), 21);
        assert_eq!(exact(Unit::Millennium, Kind::Date, days(0, 12, 31)), -1);
        assert_eq!(exact(Unit::Millennium, Kind::Date, days(1001, 1, 1)), 2);
        assert_eq!(exact(Unit::Decade, Kind::Date, days(0, 1, 1)), 0);
        assert_eq!(exact(Unit::Decade, Kind::Date, days(-1, 12, 31)), -1);
        assert_eq!(exact(Unit::Decade, Kind::Date, days(-11, 12, 31)), -2);
        assert_eq!(exact(Unit::Year, Kind::Date, days(-2019, 8, 11)), -2020);
        assert_eq!(exact(Unit::IsoYear, Kind::Date, days(-2019, 8, 11)), -2020);
    }

    #[test]
    fn weeks_days_and_julian_days() {
        let d = days(2020, 8, 11);
        assert_eq!(exact(Unit::Week, Kind::Date, d), 33);
        assert_eq!(exact(Unit::Dow, Kind::Date, d), 2);
        assert_eq!(exact(Unit::IsoDow, Kind::Date, days(2020, 8, 16)), 7);
        assert_eq!(exact(Unit::Dow, Kind::Date, days(2020, 8, 16)), 0);
        assert_eq!(exact(Unit::Doy, Kind::Date, d), 224);
        // 2005-01-01 is in ISO week 53 of 2004.
        assert_eq!(exact(Unit::IsoYear, Kind::Date, days(2005, 1, 1)), 2004);
        assert_eq!(exact(Unit::Week, Kind::Date, days(2005, 1, 1)), 53);
        assert_eq!(exact(Unit::Julian, Kind::Date, days(1957, 4, 9)), 2_435_938);
        assert_eq!(
            exact(Unit::Epoch, Kind::Date, days(1957, 4, 9)),
            -401_760_000
        );
    }

    #[test]
    fn seconds_carry_their_fraction_and_infinity_has_only_some_parts() {
        let us = (days(1997, 2, 10) * 86_400 + 17 * 3600 + 32 * 60 + 1) * 1_000_000 + 400_000;
        assert_eq!(exact(Unit::Second, Kind::Timestamp, us), 1_400_000);
        assert_eq!(exact(Unit::Minute, Kind::Timestamp, us), 32);
        assert_eq!(exact(Unit::Hour, Kind::Timestamp, us), 17);
        assert_eq!(exact(Unit::Epoch, Kind::Timestamp, us), 855_595_921_400_000);
        assert_eq!(
            part_of(Unit::Year, Kind::Timestamp, TS_INFINITY),
            Part::Infinite(true)
        );
        assert_eq!(
            part_of(Unit::Month, Kind::Timestamp, TS_NEG_INFINITY),
            Part::Null
        );
        assert_eq!(Unit::parse("MicroSeconds"), Some(Unit::Microseconds));
        assert_eq!(Unit::parse("msec"), Some(Unit::Milliseconds));
        assert!(!Kind::Date.has(Unit::Hour));
    }
}
