//! `to_char(timestamp | date, format)`: PostgreSQL's date/time pictures.
//!
//! A picture is text in which keywords stand for parts of the value —
//! `YYYY-MM-DD HH24:MI:SS`, `FMDay, DDth Month` — and everything else is
//! copied (text in double quotes verbatim). The keywords are PostgreSQL's
//! (formatting.c's DCH table): years (`YYYY`, `Y,YYY`, `YY`, ISO `IYYY`),
//! months (`MM`, `MONTH`/`Month`/`month`, `MON`, roman `RM`), days (`DD`,
//! `DDD`, `D`, `ID`, `DAY`, `DY`), weeks (`W`, `WW`, `IW`), `CC`, `Q`,
//! `J`, times (`HH`, `HH12`, `HH24`, `MI`, `SS`, `MS`, `US`, `FF1`–`FF6`,
//! `SSSS`), `AM`/`PM`, `AD`/`BC` (with or without dots). A name's case
//! follows the keyword's (`MONTH`, `Month`, `month`). Numbers are
//! zero-padded and names blank-padded to a fixed width unless the keyword
//! has the `FM` prefix; a `TH`/`th` suffix adds the ordinal (`1st`).
//! The infinities have no picture: their answer is NULL, as in PostgreSQL.
//! DataFusion's to_char reads chrono's `%Y` pictures instead, so eon
//! answers these itself (see numfmt's `ToChar`).

use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::Result;

use crate::datetime::{TS_INFINITY, TS_NEG_INFINITY, date_midnight};

/// PostgreSQL's keywords, longest first where one begins another.
const KEYWORDS: &[&str] = &[
    "A.D.", "A.M.", "AD", "AM", "B.C.", "BC", "CC", "DAY", "DDD", "DD", "DY", "D", "FF1", "FF2",
    "FF3", "FF4", "FF5", "FF6", "HH24", "HH12", "HH", "IDDD", "ID", "IW", "IYYY", "IYY", "IY", "I",
    "J", "MI", "MM", "MONTH", "MON", "MS", "OF", "P.M.", "PM", "Q", "RM", "SSSSS", "SSSS", "SS",
    "TZH", "TZM", "TZ", "US", "WW", "W", "Y,YYY", "YYYY", "YYY", "YY", "Y",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

/// The keyword at the start of `rest` (case-insensitive), longest first.
fn keyword_at(rest: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .filter(|k| {
            rest.len() >= k.len()
                && rest.is_char_boundary(k.len())
                && rest[..k.len()].eq_ignore_ascii_case(k)
        })
        .max_by_key(|k| k.len())
        .copied()
}

/// The case a name takes from the keyword as written: all capitals
/// (`MONTH`), capitalized (`Month`) or lower case (`month`).
fn cased(name: &str, written: &str) -> String {
    let mut chars = written.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_uppercase());
    let second = chars.next().is_some_and(|c| c.is_ascii_uppercase());
    match (first, second) {
        (true, true) => name.to_uppercase(),
        (true, false) => name.to_string(),
        _ => name.to_lowercase(),
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th` … (upper case for `TH`).
fn ordinal(n: i64, upper: bool) -> &'static str {
    let suffix = match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    };
    match (upper, suffix) {
        (false, s) => s,
        (true, "st") => "ST",
        (true, "nd") => "ND",
        (true, "rd") => "RD",
        (true, _) => "TH",
    }
}

/// `t` written by `format`.
pub fn to_char(t: NaiveDateTime, format: &str) -> String {
    let mut out = String::new();
    let mut rest = format;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            // Text in double quotes, a backslash escaping a quote.
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            out.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &quoted[end.min(quoted.len())..];
            continue;
        }
        if let Some(escaped) = rest.strip_prefix("\\\"") {
            out.push('"');
            rest = escaped;
            continue;
        }
        let mut fill = false;
        let mut body = rest;
        loop {
            let prefix = body.get(..2).map(|p| p.to_ascii_uppercase());
            match prefix.as_deref() {
                Some("FM") if keyword_at(&body[2..]).is_some() => fill = true,
                Some("FX" | "TM") if keyword_at(&body[2..]).is_some() => {}
                _ => break,
            }
            body = &body[2..];
        }
        let Some(keyword) = keyword_at(body) else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let written = &body[..keyword.len()];
        rest = &body[keyword.len()..];
        let (text, number) = field(t, keyword, written, fill);
        out.push_str(&text);
        // An ordinal suffix after a number.
        let suffix = rest.get(..2).map(|p| p.to_string());
        if let (Some(n), Some(s)) = (number, suffix.as_deref())
            && s.eq_ignore_ascii_case("th")
        {
            out.push_str(ordinal(n, s.starts_with('T')));
            rest = &rest[2..];
        }
        if rest.get(..2).is_some_and(|s| s.eq_ignore_ascii_case("sp")) {
            rest = &rest[2..];
        }
    }
    out
}

/// The text of one keyword, and its number when it is one (for `TH`).
fn field(t: NaiveDateTime, keyword: &str, written: &str, fill: bool) -> (String, Option<i64>) {
    let num = |n: i64, width: usize| {
        let text = if fill {
            n.to_string()
        } else {
            format!("{n:0width$}")
        };
        (text, Some(n))
    };
    let name = |s: &str, width: usize| {
        let s = cased(s, written);
        if fill {
            (s, None)
        } else {
            (format!("{s:<width$}"), None)
        }
    };
    let year = t.year() as i64;
    // Years before 1 AD are written as their BC year.
    let bc = year <= 0;
    let shown_year = if bc { 1 - year } else { year };
    let upper = written
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase());
    let pick = |a: &str| {
        if upper {
            a.to_string()
        } else {
            a.to_lowercase()
        }
    };
    let micros = (t.nanosecond() / 1000) as i64;
    let iso = t.iso_week();
    let iso_year = match iso.year() as i64 {
        y if y <= 0 => 1 - y,
        y => y,
    };
    match keyword {
        "YYYY" => num(shown_year, 4),
        "Y,YYY" => (
            format!("{},{:03}", shown_year / 1000, shown_year % 1000),
            None,
        ),
        "YYY" => num(shown_year % 1000, 3),
        "YY" => num(shown_year % 100, 2),
        "Y" => num(shown_year % 10, 1),
        "IYYY" => num(iso_year, 4),
        "IYY" => num(iso_year % 1000, 3),
        "IY" => num(iso_year % 100, 2),
        "I" => num(iso_year % 10, 1),
        "CC" => num(
            if bc {
                -((shown_year + 99) / 100)
            } else {
                (year + 99) / 100
            },
            2,
        ),
        "Q" => num((t.month0() / 3 + 1) as i64, 1),
        "MM" => num(t.month() as i64, 2),
        "MONTH" => name(MONTHS[t.month0() as usize], 9),
        "MON" => name(&MONTHS[t.month0() as usize][..3], 3),
        "RM" => name(ROMAN[t.month0() as usize], 4),
        "DD" => num(t.day() as i64, 2),
        "DDD" => num(t.ordinal() as i64, 3),
        "IDDD" => num(
            (iso.week() as i64 - 1) * 7 + t.weekday().number_from_monday() as i64,
            3,
        ),
        "D" => num(t.weekday().number_from_sunday() as i64, 1),
        "ID" => num(t.weekday().number_from_monday() as i64, 1),
        "DAY" => name(DAYS[t.weekday().num_days_from_sunday() as usize], 9),
        "DY" => name(&DAYS[t.weekday().num_days_from_sunday() as usize][..3], 3),
        "W" => num((t.day0() / 7 + 1) as i64, 1),
        "WW" => num((t.ordinal0() / 7 + 1) as i64, 2),
        "IW" => num(iso.week() as i64, 2),
        "J" => num(t.date().num_days_from_ce() as i64 + 1_721_425, 1),
        "HH" | "HH12" => num(
            match t.hour() % 12 {
                0 => 12,
                h => h as i64,
            },
            2,
        ),
        "HH24" => num(t.hour() as i64, 2),
        "MI" => num(t.minute() as i64, 2),
        "SS" => num(t.second() as i64, 2),
        "MS" => num(micros / 1000, 3),
        "US" => num(micros, 6),
        "SSSS" | "SSSSS" => num(t.num_seconds_from_midnight() as i64, 1),
        "FF1" | "FF2" | "FF3" | "FF4" | "FF5" | "FF6" => {
            let digits = (keyword.as_bytes()[2] - b'0') as u32;
            num(micros / 10i64.pow(6 - digits), digits as usize)
        }
        "AM" | "PM" => (pick(if t.hour() < 12 { "AM" } else { "PM" }), None),
        "A.M." | "P.M." => (pick(if t.hour() < 12 { "A.M." } else { "P.M." }), None),
        "AD" | "BC" => (pick(if bc { "BC" } else { "AD" }), None),
        "A.D." | "B.C." => (pick(if bc { "B.C." } else { "A.D." }), None),
        // A timestamp without time zone has no zone to write.
        _ => (String::new(), None),
    }
}

/// Whether to_char writes values of type `t` here: dates and timestamps
/// without time zone.
pub fn is_datetime(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Timestamp(_, None))
}

/// `to_char` of a column of dates or timestamps: NULL for NULL and the
/// infinities.
pub fn to_char_array(values: &ArrayRef, formats: &StringArray) -> Result<ArrayRef> {
    let micros = match values.data_type() {
        // Each day at its midnight.
        DataType::Date32 => {
            let days = values.as_primitive::<Date32Type>();
            let us: TimestampMicrosecondArray = days.unary(|d| date_midnight(d as i64));
            Arc::new(us) as ArrayRef
        }
        _ => cast(values, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
    };
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    let mut b = StringBuilder::new();
    for i in 0..micros.len() {
        let v = micros.value(i);
        let t = chrono::DateTime::from_timestamp_micros(v).map(|t| t.naive_utc());
        match t {
            Some(t)
                if !micros.is_null(i)
                    && !formats.is_null(i)
                    && v != TS_NEG_INFINITY
                    && v != TS_INFINITY =>
            {
                b.append_value(to_char(t, formats.value(i)))
            }
            _ => b.append_null(),
        }
    }
    Ok(Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn pictures_write_as_postgresql() {
        let t = at("1997-02-10 17:32:01.5");
        assert_eq!(to_char(t, "YYYY-MM-DD HH24:MI:SS"), "1997-02-10 17:32:01");
        assert_eq!(
            to_char(t, "DAY Day day DY Dy dy MONTH Month month RM MON Mon mon"),
            "MONDAY    Monday    monday    MON Mon mon FEBRUARY  February  february  II   FEB Feb feb"
        );
        assert_eq!(
            to_char(t, "FMDAY FMDay FMday FMMONTH FMMonth FMmonth FMRM"),
            "MONDAY Monday monday FEBRUARY February february II"
        );
        assert_eq!(
            to_char(t, "FMDDth \"of\" FMMonth, Y,YYY"),
            "10th of February, 1,997"
        );
        assert_eq!(
            to_char(t, "HH12 am PM A.M. p.m. MS US FF2"),
            "05 pm PM P.M. p.m. 500 500000 50"
        );
        assert_eq!(
            to_char(t, "Q CC J DDD IW WW W D ID IYYY"),
            "1 20 2450490 041 07 06 2 2 1 1997"
        );
        assert_eq!(
            to_char(at("2001-01-01 00:00:00"), "DDth ddTH HH"),
            "01st 01ST 12"
        );
        assert_eq!(to_char(at("2001-01-13 00:00:00"), "FMDDth"), "13th");
    }
}
