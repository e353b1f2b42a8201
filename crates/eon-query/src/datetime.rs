//! Dates and timestamps as PostgreSQL reads and writes them.
//!
//! PostgreSQL's date/time input is free-form: `1999-01-08`, `January 8,
//! 1999`, `1/8/1999` (month first or day first, as the `DateStyle`
//! setting's field order says), `08-Jan-1999`, `19990108`, `1999.008`
//! (day of the year), `J2451187` (Julian day), with a time (`04:05:06.789
//! PM`), a zone (`PST`, `-08:00`), `BC`, and the special values `epoch`,
//! `infinity`, `-infinity`, `now`, `today`, `tomorrow` and `yesterday`.
//! Its output follows `DateStyle` too: `ISO` (`1999-01-08 04:05:06`),
//! `SQL` (`01/08/1999 04:05:06`), `Postgres` (`Fri Jan 08 04:05:06 1999`)
//! or `German` (`08.01.1999 04:05:06`).
//!
//! This module is that reader and writer, after PostgreSQL's
//! `ParseDateTime`/`DecodeDateTime` (src/backend/utils/adt/datetime.c),
//! over eon's representations: a date is days since 1970-01-01 (Arrow's
//! Date32), a timestamp microseconds since 1970-01-01 00:00 (UTC for
//! `timestamptz`); `infinity` and `-infinity` are the largest and smallest
//! values, as PostgreSQL stores them. chrono does the calendar arithmetic;
//! no crate reads PostgreSQL's input forms, hence the hand-written lexer.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use eon_common::Error;
use eon_common::error::sqlstate;

/// How dates are written (the first part of `DateStyle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Iso,
    Sql,
    Postgres,
    German,
}

/// The order of day, month and year in ambiguous input (and in the `SQL`
/// and `Postgres` output styles): the second part of `DateStyle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Mdy,
    Dmy,
    Ymd,
}

/// The `DateStyle` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateStyle {
    pub style: Style,
    pub order: Order,
}

impl Default for DateStyle {
    fn default() -> Self {
        DateStyle {
            style: Style::Iso,
            order: Order::Mdy,
        }
    }
}

impl DateStyle {
    /// `current` changed by `SET DateStyle = value`: each word sets the
    /// style or the order; the other keeps its value (German alone also
    /// means day first, as in PostgreSQL).
    pub fn apply(current: DateStyle, value: &str) -> Option<DateStyle> {
        let mut out = current;
        let mut order_set = false;
        for word in value.split([',', ' ']).filter(|w| !w.is_empty()) {
            match word.trim_matches('\'').to_ascii_lowercase().as_str() {
                "iso" => out.style = Style::Iso,
                "sql" => out.style = Style::Sql,
                "postgres" => out.style = Style::Postgres,
                "german" => {
                    out.style = Style::German;
                    if !order_set {
                        out.order = Order::Dmy;
                    }
                }
                "mdy" | "us" | "noneuropean" | "non-european" => {
                    out.order = Order::Mdy;
                    order_set = true;
                }
                "dmy" | "euro" | "european" => {
                    out.order = Order::Dmy;
                    order_set = true;
                }
                "ymd" => {
                    out.order = Order::Ymd;
                    order_set = true;
                }
                "default" => out = DateStyle::default(),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The setting's value as SHOW prints it: `ISO, MDY`.
    pub fn setting(&self) -> String {
        let style = match self.style {
            Style::Iso => "ISO",
            Style::Sql => "SQL",
            Style::Postgres => "Postgres",
            Style::German => "German",
        };
        let order = match self.order {
            Order::Mdy => "MDY",
            Order::Dmy => "DMY",
            Order::Ymd => "YMD",
        };
        format!("{style}, {order}")
    }

    /// The style of a setting's value (the default when it does not read).
    pub fn of(setting: Option<&str>) -> DateStyle {
        setting
            .and_then(|s| DateStyle::apply(DateStyle::default(), s))
            .unwrap_or_default()
    }
}

/// Days since 1970-01-01 for `infinity` and `-infinity`.
pub const DATE_INFINITY: i32 = i32::MAX;
pub const DATE_NEG_INFINITY: i32 = i32::MIN;
/// Microseconds since 1970-01-01 for `infinity` and `-infinity`.
pub const TS_INFINITY: i64 = i64::MAX;
pub const TS_NEG_INFINITY: i64 = i64::MIN;

const UNIX_EPOCH_DAYS_CE: i32 = 719_163;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

// ---------------------------------------------------------------- output

/// A date as `style` writes it.
pub fn format_date(days: i32, style: DateStyle) -> String {
    match days {
        DATE_INFINITY => return "infinity".into(),
        DATE_NEG_INFINITY => return "-infinity".into(),
        _ => {}
    }
    let Some(d) = NaiveDate::from_num_days_from_ce_opt(days.saturating_add(UNIX_EPOCH_DAYS_CE))
    else {
        return days.to_string();
    };
    let (ad, year) = d.year_ce();
    let (m, day) = (d.month(), d.day());
    let mut s = match (style.style, style.order) {
        (Style::Iso, _) => format!("{year:04}-{m:02}-{day:02}"),
        (Style::Sql, Order::Dmy) => format!("{day:02}/{m:02}/{year:04}"),
        (Style::Sql, _) => format!("{m:02}/{day:02}/{year:04}"),
        (Style::Postgres, Order::Dmy) => format!("{day:02}-{m:02}-{year:04}"),
        (Style::Postgres, _) => format!("{m:02}-{day:02}-{year:04}"),
        (Style::German, _) => format!("{day:02}.{m:02}.{year:04}"),
    };
    if !ad {
        s.push_str(" BC");
    }
    s
}

/// A timestamp as `style` writes it; `zone` is the time zone suffix of a
/// `timestamptz` (`+00` in ISO style, `UTC` in the others), None for a
/// timestamp without time zone.
pub fn format_timestamp(us: i64, style: DateStyle, with_zone: bool) -> String {
    match us {
        TS_INFINITY => return "infinity".into(),
        TS_NEG_INFINITY => return "-infinity".into(),
        _ => {}
    }
    let Some(dt) = DateTime::from_timestamp_micros(us).map(|d| d.naive_utc()) else {
        return us.to_string();
    };
    let (ad, year) = dt.year_ce();
    let (mo, d) = (dt.month(), dt.day());
    let time = eon_common::value::format_time(us.rem_euclid(86_400_000_000));
    let mut s = match (style.style, style.order) {
        (Style::Iso, _) => format!("{year:04}-{mo:02}-{d:02} {time}"),
        (Style::Sql, Order::Dmy) => format!("{d:02}/{mo:02}/{year:04} {time}"),
        (Style::Sql, _) => format!("{mo:02}/{d:02}/{year:04} {time}"),
        (Style::German, _) => format!("{d:02}.{mo:02}.{year:04} {time}"),
        (Style::Postgres, order) => {
            let dow = DAYS[dt.weekday().num_days_from_sunday() as usize];
            let mon = MONTHS[mo as usize - 1];
            match order {
                Order::Dmy => format!("{dow} {d:02} {mon} {time} {year:04}"),
                _ => format!("{dow} {mon} {d:02} {time} {year:04}"),
            }
        }
    };
    if with_zone {
        s.push_str(if style.style == Style::Iso {
            "+00"
        } else {
            " UTC"
        });
    }
    if !ad {
        s.push_str(" BC");
    }
    s
}

// ----------------------------------------------------------------- input

/// What a date/time input is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Date,
    Timestamp,
    TimestampTz,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Date => "date",
            Target::Timestamp => "timestamp without time zone",
            Target::TimestampTz => "timestamp with time zone",
        }
    }
}

/// One field of the input, as PostgreSQL's `ParseDateTime` splits it.
#[derive(Debug, PartialEq)]
enum Field {
    /// Digits, perhaps with one decimal point.
    Number(String),
    /// Numbers and month names joined by one kind of separator.
    Date(String, char),
    /// `hh:mm[:ss[.frac]]`.
    Time(String),
    /// A word, lower case (a leading '-' kept: `-infinity`).
    Word(String),
    /// A numeric zone offset in seconds: `+05`, `-08:00`, `+0530`.
    Zone(i32),
}

fn split_fields(s: &str) -> Option<Vec<Field>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, f: &dyn Fn(char) -> bool| -> String {
        let start = *i;
        while *i < chars.len() && f(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == ',' {
            i += 1;
        } else if c.is_ascii_digit() {
            let digits = take(&mut i, &|c| c.is_ascii_digit());
            match chars.get(i) {
                Some(':') => {
                    let rest = take(&mut i, &|c| c.is_ascii_digit() || c == ':' || c == '.');
                    out.push(Field::Time(digits + &rest));
                }
                Some(&sep @ ('-' | '/' | '.')) => {
                    let rest = take(&mut i, &|c| c.is_ascii_alphanumeric() || c == sep);
                    let text = digits + &rest;
                    // One '.' between digits is a fraction ("1999.008").
                    if sep == '.'
                        && text.matches('.').count() == 1
                        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
                    {
                        out.push(Field::Number(text));
                    } else {
                        // An ISO 'T' between the date and a time.
                        let b = text.as_bytes();
                        let t = (1..b.len().saturating_sub(1)).find(|&k| {
                            matches!(b[k], b't' | b'T')
                                && b[k - 1].is_ascii_digit()
                                && b[k + 1].is_ascii_digit()
                        });
                        match t {
                            Some(t) if sep == '-' => {
                                out.push(Field::Date(text[..t].to_string(), sep));
                                i -= text.len() - t - 1;
                            }
                            _ => out.push(Field::Date(text, sep)),
                        }
                    }
                }
                _ => out.push(Field::Number(digits)),
            }
        } else if c == '.' {
            let rest = take(&mut i, &|c| c.is_ascii_digit() || c == '.');
            out.push(Field::Number(rest));
        } else if c.is_alphabetic() {
            let word = take(&mut i, &|c| c.is_alphabetic() || c == '.' || c == '_')
                .to_lowercase()
                .trim_end_matches('.')
                .to_string();
            match chars.get(i) {
                // "Jan-08-1999", "Jan/08/1999"
                Some(&sep @ ('-' | '/'))
                    if month_of(&word).is_some()
                        && chars.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric()) =>
                {
                    let rest = take(&mut i, &|c| c.is_ascii_alphanumeric() || c == sep);
                    out.push(Field::Date(word + &rest, sep));
                }
                // A zone name: "America/New_York".
                Some('/') => {
                    let rest = take(&mut i, &|c| c.is_alphanumeric() || "/_+-".contains(c));
                    out.push(Field::Word(word + &rest.to_lowercase()));
                }
                _ => out.push(Field::Word(word.replace('.', ""))),
            }
        } else if c == '+' || c == '-' {
            i += 1;
            if chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                let text = take(&mut i, &|c| c.is_ascii_digit() || c == ':');
                let sign = if c == '-' { -1 } else { 1 };
                let (h, m) = match text.split_once(':') {
                    Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
                    None if text.len() > 2 => {
                        let (h, m) = text.split_at(text.len() - 2);
                        (h.parse().ok()?, m.parse().ok()?)
                    }
                    None => (text.parse().ok()?, 0),
                };
                out.push(Field::Zone(sign * (h * 3600 + m * 60)));
            } else if chars.get(i).is_some_and(|c| c.is_alphabetic()) {
                let word = take(&mut i, &|c| c.is_alphabetic()).to_lowercase();
                out.push(Field::Word(format!("{c}{word}")));
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(out)
}

fn month_of(word: &str) -> Option<u32> {
    const NAMES: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    if word.len() < 3 {
        return None;
    }
    if word == "sept" {
        return Some(9);
    }
    NAMES
        .iter()
        .position(|n| n.starts_with(word) && (word.len() == 3 || *n == word))
        .map(|i| i as u32 + 1)
}

fn is_day_name(word: &str) -> bool {
    const NAMES: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    word.len() >= 3 && NAMES.iter().any(|n| n.starts_with(word))
}

/// Offset from UTC in seconds of a zone abbreviation eon knows.
fn zone_of(word: &str) -> Option<i32> {
    let hours = match word {
        "z" | "zulu" | "utc" | "gmt" | "ut" => 0,
        "pst" => -8,
        "pdt" | "mst" => -7,
        "mdt" | "cst" => -6,
        "cdt" | "est" => -5,
        "edt" | "ast" => -4,
        "akst" => -9,
        "akdt" => -8,
        "hst" => -10,
        "wet" => 0,
        "bst" | "cet" | "met" | "west" => 1,
        "cest" | "eet" | "mest" => 2,
        "eest" | "msk" => 3,
        "ist" => return Some(5 * 3600 + 1800),
        "jst" | "kst" => 9,
        "aest" => 10,
        "nzst" => 12,
        "nzdt" => 13,
        _ => return None,
    };
    Some(hours * 3600)
}

/// Parsed parts of a date/time input.
#[derive(Default, Debug)]
struct Parts {
    year: Option<i64>,
    /// The year had exactly two digits (1970-2069 window applies).
    two_digit_year: bool,
    month: Option<u32>,
    day: Option<u32>,
    doy: Option<u32>,
    julian: Option<i64>,
    time: Option<(u32, u32, u32, u32)>,
    bc: bool,
    pm: Option<bool>,
    zone: Option<i32>,
    special: Option<&'static str>,
}

/// Why an input did not read: its syntax, or a field out of range (with
/// PostgreSQL's hint when the field order may be to blame).
enum Bad {
    Syntax,
    Range,
    RangeHint,
}

/// `s` read as a date: days since 1970-01-01.
pub fn parse_date(s: &str, order: Order, now_us: i64) -> Result<i32, Error> {
    let us = parse(s, order, Target::Date, now_us)?;
    match us {
        TS_INFINITY => Ok(DATE_INFINITY),
        TS_NEG_INFINITY => Ok(DATE_NEG_INFINITY),
        us => Ok(us.div_euclid(86_400_000_000) as i32),
    }
}

/// `s` read as a timestamp (`with_zone`: a timestamptz, in UTC):
/// microseconds since 1970-01-01 00:00.
pub fn parse_timestamp(s: &str, order: Order, with_zone: bool, now_us: i64) -> Result<i64, Error> {
    let target = if with_zone {
        Target::TimestampTz
    } else {
        Target::Timestamp
    };
    parse(s, order, target, now_us)
}

/// PostgreSQL's first timestamp, 4714-11-24 00:00 BC (Julian day 0), in
/// microseconds since 1970.
const MIN_TIMESTAMP: i64 = -210_866_803_200_000_000;

fn parse(s: &str, order: Order, target: Target, now_us: i64) -> Result<i64, Error> {
    let us = read(s, order, target, now_us).map_err(|bad| match bad {
        Bad::Syntax => Error::user(
            sqlstate::INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type {}: \"{s}\"", target.name()),
        ),
        Bad::Range => Error::user(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{s}\""),
        ),
        Bad::RangeHint => Error::user(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{s}\""),
        )
        .with_hint("Perhaps you need a different \"datestyle\" setting."),
    })?;
    if us < MIN_TIMESTAMP && us != TS_NEG_INFINITY {
        let what = if target == Target::Date {
            "date"
        } else {
            "timestamp"
        };
        return Err(Error::user(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("{what} out of range: \"{s}\""),
        ));
    }
    Ok(us)
}

/// A date (days since 1970) as the timestamp of its midnight, the
/// infinities kept infinite.
pub fn date_midnight(days: i64) -> i64 {
    match days {
        d if d == i64::from(DATE_INFINITY) => TS_INFINITY,
        d if d == i64::from(DATE_NEG_INFINITY) => TS_NEG_INFINITY,
        d => d * 86_400_000_000,
    }
}

fn number(text: &str) -> Result<i64, Bad> {
    text.parse().map_err(|_| Bad::Syntax)
}

fn read(s: &str, order: Order, target: Target, now_us: i64) -> Result<i64, Bad> {
    let fields = split_fields(s.trim()).ok_or(Bad::Syntax)?;
    if fields.is_empty() {
        return Err(Bad::Syntax);
    }
    let mut p = Parts::default();
    // Numbers not yet placed, in input order (with their digit counts).
    let mut loose: Vec<(i64, usize)> = Vec::new();
    let mut julian_next = false;
    for field in &fields {
        match field {
            Field::Word(w) => match w.as_str() {
                "epoch" | "infinity" | "-infinity" | "now" | "today" | "tomorrow" | "yesterday" => {
                    if p.special.is_some() {
                        return Err(Bad::Syntax);
                    }
                    p.special = Some(match w.as_str() {
                        "epoch" => "epoch",
                        "infinity" => "infinity",
                        "-infinity" => "-infinity",
                        "now" => "now",
                        "today" => "today",
                        "tomorrow" => "tomorrow",
                        _ => "yesterday",
                    });
                }
                "allballs" => p.time = Some((0, 0, 0, 0)),
                "am" => p.pm = Some(false),
                "pm" => p.pm = Some(true),
                "bc" => p.bc = true,
                "ad" | "at" | "on" => {}
                "j" | "julian" => julian_next = true,
                w => {
                    if let Some(m) = month_of(w) {
                        if p.month.is_some() {
                            return Err(Bad::Syntax);
                        }
                        p.month = Some(m);
                    } else if is_day_name(w) {
                    } else if let Some(z) = zone_of(w) {
                        p.zone = Some(z);
                    } else if w.contains('/') && target != Target::TimestampTz {
                        // A zone name; a timestamp without time zone
                        // ignores its zone (eon has no zone database to
                        // convert a timestamptz with).
                    } else {
                        return Err(Bad::Syntax);
                    }
                }
            },
            Field::Zone(z) => {
                // "-08" after a date alone, with no time yet, may be part of
                // nothing else: a zone.
                p.zone = Some(*z);
            }
            Field::Time(t) => {
                if p.time.is_some() {
                    return Err(Bad::Syntax);
                }
                p.time = Some(read_time(t)?);
            }
            Field::Date(text, sep) => {
                if p.year.is_some() || p.month.is_some() && p.day.is_some() {
                    return Err(Bad::Syntax);
                }
                read_date(text, *sep, order, &mut p)?;
            }
            Field::Number(text) => {
                if julian_next {
                    julian_next = false;
                    p.julian = Some(number(text)?);
                    continue;
                }
                if let Some((int, frac)) = text.split_once('.') {
                    // yyyy.ddd: day of the year; after a date, seconds are
                    // not written this way.
                    if p.year.is_none() && int.len() == 4 && !frac.is_empty() {
                        p.year = Some(number(int)?);
                        p.doy = Some(number(frac)? as u32);
                        continue;
                    }
                    return Err(Bad::Syntax);
                }
                let have_date = p.year.is_some() && (p.month.is_some() || p.doy.is_some());
                match text.len() {
                    // yyyymmdd, yymmdd (or hhmmss after a date)
                    8 if p.year.is_none() && p.month.is_none() => {
                        p.year = Some(number(&text[..4])?);
                        p.month = Some(number(&text[4..6])? as u32);
                        p.day = Some(number(&text[6..])? as u32);
                    }
                    6 if have_date && p.time.is_none() => {
                        p.time = Some((
                            number(&text[..2])? as u32,
                            number(&text[2..4])? as u32,
                            number(&text[4..])? as u32,
                            0,
                        ));
                    }
                    6 if p.year.is_none() && p.month.is_none() => {
                        p.year = Some(number(&text[..2])?);
                        p.two_digit_year = true;
                        p.month = Some(number(&text[2..4])? as u32);
                        p.day = Some(number(&text[4..])? as u32);
                    }
                    n => loose.push((number(text)?, n)),
                }
            }
        }
    }
    if julian_next {
        return Err(Bad::Syntax);
    }
    place_loose(&mut p, &loose, order)?;
    if let Some(special) = p.special {
        if p.year.is_some() || p.month.is_some() || p.day.is_some() || p.julian.is_some() {
            return Err(Bad::Syntax);
        }
        let day_us = 86_400_000_000i64;
        let today = now_us.div_euclid(day_us) * day_us;
        return Ok(match special {
            "infinity" => TS_INFINITY,
            "-infinity" => TS_NEG_INFINITY,
            "epoch" => 0,
            "now" if p.time.is_none() => now_us,
            "now" => return Err(Bad::Syntax),
            "today" => today + time_us(&p)?,
            "tomorrow" => today + day_us + time_us(&p)?,
            _ => today - day_us + time_us(&p)?,
        });
    }
    let date = if let Some(jd) = p.julian {
        if p.year.is_some() || p.month.is_some() {
            return Err(Bad::Syntax);
        }
        // Julian day 2440588 is 1970-01-01.
        NaiveDate::from_num_days_from_ce_opt(
            i32::try_from(jd - 2_440_588 + UNIX_EPOCH_DAYS_CE as i64).map_err(|_| Bad::Range)?,
        )
        .ok_or(Bad::Range)?
    } else {
        let mut year = p.year.ok_or(Bad::Syntax)?;
        if p.two_digit_year && !p.bc {
            year += if year < 70 { 2000 } else { 1900 };
        }
        if p.bc {
            if year <= 0 {
                return Err(Bad::Range);
            }
            year = 1 - year;
        } else if year == 0 {
            return Err(Bad::Range);
        }
        let year = i32::try_from(year).map_err(|_| Bad::Range)?;
        if let Some(doy) = p.doy {
            NaiveDate::from_yo_opt(year, doy).ok_or(Bad::Range)?
        } else {
            let month = p.month.ok_or(Bad::Syntax)?;
            let day = p.day.ok_or(Bad::Syntax)?;
            // A month or day no calendar has may be the field order's
            // fault: PostgreSQL hints at DateStyle then.
            if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
                return Err(Bad::RangeHint);
            }
            NaiveDate::from_ymd_opt(year, month, day).ok_or(Bad::Range)?
        }
    };
    let midnight = NaiveDateTime::new(date, NaiveTime::MIN)
        .and_utc()
        .timestamp_micros();
    let mut us = midnight + time_us(&p)?;
    if target == Target::TimestampTz {
        us -= p.zone.unwrap_or(0) as i64 * 1_000_000;
    }
    Ok(us)
}

/// The time of day in `p`, in microseconds (with AM/PM applied).
fn time_us(p: &Parts) -> Result<i64, Bad> {
    let Some((mut h, m, s, us)) = p.time else {
        return match p.pm {
            Some(_) => Err(Bad::Syntax),
            None => Ok(0),
        };
    };
    match p.pm {
        Some(_) if h == 0 || h > 12 => return Err(Bad::Range),
        Some(true) if h < 12 => h += 12,
        Some(false) if h == 12 => h = 0,
        _ => {}
    }
    if h > 24 || m > 59 || s > 60 || (h == 24 && (m > 0 || s > 0 || us > 0)) {
        return Err(Bad::Range);
    }
    Ok(((h as i64 * 60 + m as i64) * 60 + s as i64) * 1_000_000 + us as i64)
}

/// `hh:mm[:ss[.frac]]`.
fn read_time(t: &str) -> Result<(u32, u32, u32, u32), Bad> {
    let mut parts = t.split(':');
    let h = number(parts.next().ok_or(Bad::Syntax)?)?;
    let m = number(parts.next().ok_or(Bad::Syntax)?)?;
    let (s, us) = match parts.next() {
        Some(sec) => match sec.split_once('.') {
            Some((s, frac)) => {
                if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Bad::Syntax);
                }
                // Rounded to microseconds.
                let digits: String = frac.chars().chain(std::iter::repeat('0')).take(7).collect();
                let seven: i64 = number(&digits)?;
                (number(s)?, (seven + 5) / 10)
            }
            None => (number(sec)?, 0),
        },
        None => (0, 0),
    };
    if parts.next().is_some() {
        return Err(Bad::Syntax);
    }
    let (mut s, mut us) = (s, us);
    if us >= 1_000_000 {
        us -= 1_000_000;
        s += 1;
    }
    let fit = |v: i64| u32::try_from(v).map_err(|_| Bad::Range);
    Ok((fit(h)?, fit(m)?, fit(s)?, fit(us)?))
}

/// A date field: numbers (and perhaps a month name) joined by `sep`.
fn read_date(text: &str, sep: char, order: Order, p: &mut Parts) -> Result<(), Bad> {
    let parts: Vec<&str> = text.split(sep).collect();
    if parts.iter().any(|s| s.is_empty()) || parts.len() > 3 {
        return Err(Bad::Syntax);
    }
    let mut nums: Vec<(i64, usize)> = Vec::new();
    for part in &parts {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            nums.push((number(part)?, part.len()));
        } else {
            let m = month_of(&part.to_lowercase()).ok_or(Bad::Syntax)?;
            if p.month.is_some() {
                return Err(Bad::Syntax);
            }
            p.month = Some(m);
        }
    }
    if parts.len() == 2 && p.month.is_none() {
        // "1999-008"? PostgreSQL reads two numbers as month and day.
        return Err(Bad::Syntax);
    }
    place_loose(p, &nums, order)
}

/// Give numbers their places: with a month known (by name), the year is
/// the number with three or more digits or above 31, the other the day;
/// otherwise a number of three or more digits first means year-month-day,
/// else the DateStyle's order decides.
fn place_loose(p: &mut Parts, nums: &[(i64, usize)], order: Order) -> Result<(), Bad> {
    if nums.is_empty() {
        return Ok(());
    }
    let is_year = |(v, len): (i64, usize)| len >= 3 || v > 31;
    let set_year = |p: &mut Parts, (v, len): (i64, usize)| -> Result<(), Bad> {
        if p.year.is_some() {
            return Err(Bad::Syntax);
        }
        p.year = Some(v);
        p.two_digit_year = len == 2;
        Ok(())
    };
    let set_day = |p: &mut Parts, v: i64| -> Result<(), Bad> {
        if p.day.is_some() {
            return Err(Bad::Syntax);
        }
        p.day = Some(u32::try_from(v).map_err(|_| Bad::Range)?);
        Ok(())
    };
    let set_month = |p: &mut Parts, v: i64| -> Result<(), Bad> {
        if p.month.is_some() {
            return Err(Bad::Syntax);
        }
        p.month = Some(u32::try_from(v).map_err(|_| Bad::Range)?);
        Ok(())
    };
    if p.month.is_some() && p.day.is_none() {
        match nums {
            [one] if is_year(*one) => set_year(p, *one),
            [one] => set_day(p, one.0),
            [a, b] => {
                let (year, day) = if is_year(*a) && !is_year(*b) {
                    (*a, *b)
                } else if is_year(*b) && !is_year(*a) {
                    (*b, *a)
                } else if order == Order::Ymd {
                    (*a, *b)
                } else {
                    (*b, *a)
                };
                set_year(p, year)?;
                set_day(p, day.0)
            }
            _ => Err(Bad::Syntax),
        }
    } else if p.month.is_some() && p.day.is_some() {
        match nums {
            [one] => set_year(p, *one),
            _ => Err(Bad::Syntax),
        }
    } else {
        match nums {
            [a, b, c] => {
                let (y, m, d) = if a.1 >= 3 || order == Order::Ymd {
                    (*a, b.0, c.0)
                } else if order == Order::Dmy {
                    (*c, b.0, a.0)
                } else {
                    (*c, a.0, b.0)
                };
                set_year(p, y)?;
                set_month(p, m)?;
                set_day(p, d)
            }
            _ => Err(Bad::Syntax),
        }
    }
}

/// Now, in microseconds since 1970-01-01 (UTC), for 'now' and 'today'.
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

// ---------------------------------------------------- literals in queries

/// Read every date and timestamp literal of the statements (`DATE '…'`,
/// `'…'::timestamp`, `CAST('…' AS date)`) with PostgreSQL's input rules
/// and the session's field order, and write it back in the one form
/// DataFusion reads (ISO), or as the value itself when ISO cannot say it
/// (infinity, BC, years past 9999). A literal that does not read is the
/// statement's error, as in PostgreSQL.
pub fn rewrite_literals(
    statements: &mut [datafusion::sql::sqlparser::ast::Statement],
    order: Order,
) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::{
        CastKind, DataType as T, Expr as E, TimezoneInfo, Value,
    };
    let now = now_us();
    crate::pgfuncs::try_rewrite_expressions(statements, |e: &mut E| {
        let (data_type, value) = match e {
            E::TypedString(t) => (&t.data_type, &mut t.value.value),
            E::Cast {
                expr, data_type, ..
            } => match expr.as_mut() {
                E::Value(v) => (&*data_type, &mut v.value),
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let target = match data_type {
            T::Date => Target::Date,
            T::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => Target::TimestampTz,
            T::Timestamp(_, _) => Target::Timestamp,
            T::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => {
                Target::TimestampTz
            }
            _ => return Ok(()),
        };
        let Value::SingleQuotedString(text) = value else {
            return Ok(());
        };
        let us = parse(text, order, target, now)?;
        let arrow_type = match target {
            Target::Date => "Date32",
            Target::Timestamp => "Timestamp(Microsecond, None)",
            Target::TimestampTz => "Timestamp(Microsecond, Some(\"UTC\"))",
        };
        let sql_type = data_type.clone();
        let value_sql = match target {
            Target::Date => match us {
                TS_INFINITY => DATE_INFINITY as i64,
                TS_NEG_INFINITY => DATE_NEG_INFINITY as i64,
                us => us.div_euclid(86_400_000_000),
            },
            _ => us,
        };
        // 0001-01-01 up to 9999-12-31 in ISO; the rest as a number.
        let iso_range = -62_135_596_800_000_000..253_402_300_800_000_000;
        if iso_range.contains(&us) {
            let iso = match target {
                Target::Date => format_date(value_sql as i32, DateStyle::default()),
                Target::Timestamp => format_timestamp(us, DateStyle::default(), false),
                Target::TimestampTz => format!(
                    "{}+00:00",
                    format_timestamp(us, DateStyle::default(), false)
                ),
            };
            *text = iso;
        } else {
            // Beyond ISO's four-digit years: the number of days or
            // microseconds itself, cast to the type.
            *e = E::Cast {
                kind: CastKind::Cast,
                expr: Box::new(crate::pgfuncs::call_with(
                    "arrow_cast",
                    vec![
                        E::value(Value::Number(value_sql.to_string(), false)),
                        E::value(Value::SingleQuotedString(arrow_type.to_string())),
                    ],
                )),
                data_type: sql_type,
                array: false,
                format: None,
            };
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str, order: Order) -> String {
        match parse_date(s, order, 0) {
            Ok(d) => format_date(d, DateStyle::default()),
            Err(e) => format!("{}: {}", e.code, e.message),
        }
    }

    fn ts(s: &str) -> String {
        match parse_timestamp(s, Order::Mdy, false, 0) {
            Ok(t) => format_timestamp(t, DateStyle::default(), false),
            Err(e) => format!("{}: {}", e.code, e.message),
        }
    }

    #[test]
    fn dates_read_as_postgresql_reads_them() {
        for (input, order, want) in [
            ("1999-01-08", Order::Mdy, "1999-01-08"),
            ("January 8, 1999", Order::Mdy, "1999-01-08"),
            ("1/8/1999", Order::Mdy, "1999-01-08"),
            ("1/8/1999", Order::Dmy, "1999-08-01"),
            ("1/18/1999", Order::Mdy, "1999-01-18"),
            ("01/02/03", Order::Mdy, "2003-01-02"),
            ("01/02/03", Order::Dmy, "2003-02-01"),
            ("01/02/03", Order::Ymd, "2001-02-03"),
            ("19990108", Order::Mdy, "1999-01-08"),
            ("990108", Order::Mdy, "1999-01-08"),
            ("1999.008", Order::Mdy, "1999-01-08"),
            ("J2451187", Order::Mdy, "1999-01-08"),
            ("January 8, 99 BC", Order::Mdy, "0099-01-08 BC"),
            ("08-Jan-1999", Order::Mdy, "1999-01-08"),
            ("Jan-08-1999", Order::Mdy, "1999-01-08"),
            ("99-Jan-08", Order::Ymd, "1999-01-08"),
            ("1999-Jan-08", Order::Mdy, "1999-01-08"),
            ("08 Jan 1999", Order::Mdy, "1999-01-08"),
            ("Jan 08 1999", Order::Dmy, "1999-01-08"),
            ("1999 Jan 08", Order::Mdy, "1999-01-08"),
            ("epoch", Order::Mdy, "1970-01-01"),
            ("infinity", Order::Mdy, "infinity"),
            ("-infinity", Order::Mdy, "-infinity"),
            ("1997-02-10 17:32:01 PST", Order::Mdy, "1997-02-10"),
        ] {
            assert_eq!(date(input, order), want, "{input} ({order:?})");
        }
        assert!(date("1/18/1999", Order::Dmy).starts_with("22008"));
        assert!(date("banana", Order::Mdy).starts_with("22007"));
        assert!(date("1999-02-30", Order::Mdy).starts_with("22008"));
    }

    #[test]
    fn timestamps_read_and_write() {
        assert_eq!(ts("Mon Feb 10 17:32:01 1997 PST"), "1997-02-10 17:32:01");
        assert_eq!(
            ts("1997-02-10 17:32:01.123456"),
            "1997-02-10 17:32:01.123456"
        );
        assert_eq!(ts("Feb 10 5:32PM 1997"), "1997-02-10 17:32:00");
        assert_eq!(ts("1997-06-10T17:32:01"), "1997-06-10 17:32:01");
        assert_eq!(ts("epoch"), "1970-01-01 00:00:00");
        assert_eq!(ts("tomorrow"), "1970-01-02 00:00:00");
        let pg = DateStyle::apply(DateStyle::default(), "Postgres, MDY").unwrap();
        let t = parse_timestamp("1997-02-10 17:32:01", Order::Mdy, false, 0).unwrap();
        assert_eq!(format_timestamp(t, pg, false), "Mon Feb 10 17:32:01 1997");
        let d = parse_date("1957-04-09", Order::Mdy, 0).unwrap();
        assert_eq!(format_date(d, pg), "04-09-1957");
        let german = DateStyle::apply(pg, "German").unwrap();
        assert_eq!(format_date(d, german), "09.04.1957");
        assert_eq!(german.setting(), "German, DMY");
        let tz = parse_timestamp("1997-02-10 17:32:01-08", Order::Mdy, true, 0).unwrap();
        assert_eq!(
            format_timestamp(tz, DateStyle::default(), true),
            "1997-02-11 01:32:01+00"
        );
    }
}
