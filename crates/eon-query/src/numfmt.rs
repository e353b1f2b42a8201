//! `to_char(number, format)` and `to_number(text, format)`: PostgreSQL's
//! number format patterns.
//!
//! A format is a picture of the output: `9` a digit (a space where the
//! number has none), `0` a digit kept even when it is a leading zero, `.`
//! or `D` the decimal point, `,` or `G` a group separator (left out before
//! the first digit), `S` / `MI` / `PL` / `SG` the sign in a chosen place,
//! `PR` negative numbers in angle brackets, `L` the currency symbol, `TH`
//! an ordinal suffix, `V` a shift by ten per `9` after it, `RN` Roman
//! numerals, `EEEE` scientific notation, and `FM` ("fill mode") which drops
//! the padding blanks and trailing zeros. Anything else is copied, text in
//! double quotes verbatim. A number with more integer digits than the
//! picture has is shown as `#`s.
//!
//! The rules — where the sign goes, when a blank is written, which zeros
//! fill mode drops — are those of PostgreSQL's `NUM_processor` in
//! src/backend/utils/adt/formatting.c; this is a port of that machine (a
//! format is parsed into nodes plus a description: digits before and after
//! the point, where the zeros start and end, which sign; then the number,
//! already rounded to the picture's decimals and written out, is walked
//! along the picture), for the C locale PostgreSQL's regression tests run
//! in (`.` and `,`, a blank currency symbol). No crate implements it.
//! `to_number` runs the same machine the other way.
//!
//! eon registers `to_char` for numbers, and for dates and timestamps
//! without time zone through [`crate::dtfmt`]'s pictures; other types
//! (intervals, timestamps with time zone) still go to DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use eon_common::Error;
use eon_common::error::sqlstate;
use eon_common::value::special;

use crate::provider::to_df;

/// Register `to_char` (numbers here, the rest DataFusion's) and
/// `to_number`.
pub fn register(ctx: &SessionContext) {
    let fallback = datafusion::execution::FunctionRegistry::udf(ctx, "to_char").ok();
    ctx.register_udf(ScalarUDF::new_from_impl(ToChar {
        signature: Signature::any(2, Volatility::Immutable),
        fallback,
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(ToNumber {
        signature: Signature::any(2, Volatility::Immutable),
    }));
}

// ------------------------------------------------------------ the format

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Comma,
    Dec,
    Zero,
    Nine,
    B,
    C,
    D,
    E,
    Fm,
    G,
    L,
    Mi,
    Pl,
    Pr,
    Rn,
    RnLower,
    Sg,
    Sp,
    S,
    Th,
    ThLower,
    V,
}

/// The keywords, longest first among those sharing a first letter (the
/// first that matches wins, as in PostgreSQL's table).
const KEYWORDS: &[(&str, Key)] = &[
    (",", Key::Comma),
    (".", Key::Dec),
    ("0", Key::Zero),
    ("9", Key::Nine),
    ("B", Key::B),
    ("C", Key::C),
    ("D", Key::D),
    ("EEEE", Key::E),
    ("FM", Key::Fm),
    ("G", Key::G),
    ("L", Key::L),
    ("MI", Key::Mi),
    ("PL", Key::Pl),
    ("PR", Key::Pr),
    ("RN", Key::Rn),
    ("SG", Key::Sg),
    ("SP", Key::Sp),
    ("S", Key::S),
    ("TH", Key::Th),
    ("V", Key::V),
    ("b", Key::B),
    ("c", Key::C),
    ("d", Key::D),
    ("eeee", Key::E),
    ("fm", Key::Fm),
    ("g", Key::G),
    ("l", Key::L),
    ("mi", Key::Mi),
    ("pl", Key::Pl),
    ("pr", Key::Pr),
    ("rn", Key::RnLower),
    ("sg", Key::Sg),
    ("sp", Key::Sp),
    ("s", Key::S),
    ("th", Key::ThLower),
    ("v", Key::V),
];

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Key(Key),
    Text(String),
}

const DECIMAL: u32 = 0x01;
const ZERO: u32 = 0x04;
const BLANK: u32 = 0x08;
const FILLMODE: u32 = 0x10;
const LSIGN: u32 = 0x20;
const BRACKET: u32 = 0x40;
const MINUS: u32 = 0x80;
const PLUS: u32 = 0x100;
const ROMAN: u32 = 0x200;
const MULTI: u32 = 0x400;
const EEEE: u32 = 0x2000;

/// Where the `S` sign goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum LocaleSign {
    #[default]
    None,
    Pre,
    Post,
}

/// What the picture says about the number (PostgreSQL's NUMDesc).
#[derive(Clone, Debug, Default)]
struct Desc {
    /// Digits before and after the decimal point.
    pre: i32,
    post: i32,
    lsign: LocaleSign,
    flag: u32,
    pre_lsign_num: i32,
    /// Digits after `V`.
    multi: i32,
    zero_start: i32,
    zero_end: i32,
}

impl Desc {
    fn is(&self, f: u32) -> bool {
        self.flag & f != 0
    }
}

fn syntax(message: &str) -> Error {
    Error::user(sqlstate::SYNTAX_ERROR, message)
}

/// Parse a format into nodes and its description.
fn parse(format: &str) -> std::result::Result<(Vec<Node>, Desc), Error> {
    let mut nodes = Vec::new();
    let mut d = Desc::default();
    let mut rest = format;
    while let Some(c) = rest.chars().next() {
        if let Some((name, key)) = KEYWORDS.iter().find(|(name, _)| rest.starts_with(name)) {
            prepare(&mut d, *key)?;
            nodes.push(Node::Key(*key));
            rest = &rest[name.len()..];
        } else if c == '"' {
            // A quoted literal; a backslash quotes the next character.
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, next)) => nodes.push(Node::Text(next.to_string())),
                        None => nodes.push(Node::Text("\\".into())),
                    },
                    c => nodes.push(Node::Text(c.to_string())),
                }
            }
            rest = &rest[end..];
        } else if rest.starts_with("\\\"") {
            nodes.push(Node::Text("\"".into()));
            rest = &rest[2..];
        } else {
            nodes.push(Node::Text(c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok((nodes, d))
}

/// PostgreSQL's NUMDesc_prepare: account for one keyword.
fn prepare(d: &mut Desc, key: Key) -> std::result::Result<(), Error> {
    if d.is(EEEE) && key != Key::E {
        return Err(syntax("\"EEEE\" must be the last pattern used"));
    }
    match key {
        Key::Nine => {
            if d.is(BRACKET) {
                return Err(syntax("\"9\" must be ahead of \"PR\""));
            }
            if d.is(MULTI) {
                d.multi += 1;
            } else if d.is(DECIMAL) {
                d.post += 1;
            } else {
                d.pre += 1;
            }
        }
        Key::Zero => {
            if d.is(BRACKET) {
                return Err(syntax("\"0\" must be ahead of \"PR\""));
            }
            if !d.is(ZERO) && !d.is(DECIMAL) {
                d.flag |= ZERO;
                d.zero_start = d.pre + 1;
            }
            if d.is(DECIMAL) {
                d.post += 1;
            } else {
                d.pre += 1;
            }
            d.zero_end = d.pre + d.post;
        }
        Key::B => {
            if d.pre == 0 && d.post == 0 && !d.is(ZERO) {
                d.flag |= BLANK;
            }
        }
        Key::D | Key::Dec => {
            if d.is(DECIMAL) {
                return Err(syntax("multiple decimal points"));
            }
            if d.is(MULTI) {
                return Err(syntax("cannot use \"V\" and decimal point together"));
            }
            d.flag |= DECIMAL;
        }
        Key::Fm => d.flag |= FILLMODE,
        Key::S => {
            if d.is(LSIGN) {
                return Err(syntax("cannot use \"S\" twice"));
            }
            if d.is(PLUS) || d.is(MINUS) || d.is(BRACKET) {
                return Err(syntax(
                    "cannot use \"S\" and \"PL\"/\"MI\"/\"SG\"/\"PR\" together",
                ));
            }
            if !d.is(DECIMAL) {
                d.lsign = LocaleSign::Pre;
                d.pre_lsign_num = d.pre;
                d.flag |= LSIGN;
            } else if d.lsign == LocaleSign::None {
                d.lsign = LocaleSign::Post;
                d.flag |= LSIGN;
            }
        }
        Key::Mi => {
            if d.is(LSIGN) {
                return Err(syntax("cannot use \"S\" and \"MI\" together"));
            }
            d.flag |= MINUS;
        }
        Key::Pl => {
            if d.is(LSIGN) {
                return Err(syntax("cannot use \"S\" and \"PL\" together"));
            }
            d.flag |= PLUS;
        }
        Key::Sg => {
            if d.is(LSIGN) {
                return Err(syntax("cannot use \"S\" and \"SG\" together"));
            }
            d.flag |= MINUS | PLUS;
        }
        Key::Pr => {
            if d.is(LSIGN) || d.is(PLUS) || d.is(MINUS) {
                return Err(syntax(
                    "cannot use \"PR\" and \"S\"/\"PL\"/\"MI\"/\"SG\" together",
                ));
            }
            d.flag |= BRACKET;
        }
        Key::Rn | Key::RnLower => d.flag |= ROMAN,
        Key::V => {
            if d.is(DECIMAL) {
                return Err(syntax("cannot use \"V\" and decimal point together"));
            }
            d.flag |= MULTI;
        }
        Key::E => {
            if d.is(EEEE) {
                return Err(syntax("cannot use \"EEEE\" twice"));
            }
            if d.is(BLANK | FILLMODE | LSIGN | BRACKET | MINUS | PLUS | ROMAN | MULTI) {
                return Err(
                    syntax("\"EEEE\" is incompatible with other formats").with_detail(
                        "\"EEEE\" may only be used together with digit and decimal point patterns.",
                    ),
                );
            }
            d.flag |= EEEE;
        }
        Key::C | Key::G | Key::L | Key::Sp | Key::Th | Key::ThLower | Key::Comma => {}
    }
    Ok(())
}

// ------------------------------------------------------------ to_char

/// The number as the picture's walk reads it: its digits (and point)
/// without sign, how many blanks precede it, and its sign.
struct Prepared {
    number: Vec<u8>,
    out_pre_spaces: i32,
    /// b'+', b'-', or 0 for Roman numerals.
    sign: u8,
}

/// `n` as `#`s where the picture has too few integer digits.
fn hashes(d: &Desc) -> Vec<u8> {
    let mut v = vec![b'#'; (d.pre + d.post + 1) as usize];
    v[d.pre as usize] = b'.';
    v
}

/// The usual case: `orgnum` (sign and digits, already rounded to
/// `d.post` decimals) against the picture.
fn plain(d: &Desc, orgnum: &str) -> Prepared {
    let (sign, digits) = match orgnum.strip_prefix('-') {
        Some(rest) => (b'-', rest),
        None => (b'+', orgnum),
    };
    let pre_len = digits.find('.').unwrap_or(digits.len()) as i32;
    let mut p = Prepared {
        number: digits.as_bytes().to_vec(),
        out_pre_spaces: 0,
        sign,
    };
    if pre_len < d.pre {
        p.out_pre_spaces = d.pre - pre_len;
    } else if pre_len > d.pre {
        p.number = hashes(d);
    }
    p
}

/// Roman numerals of 1…3999, `#`s beyond.
fn roman(n: i64) -> String {
    if !(1..=3999).contains(&n) {
        return "#".repeat(15);
    }
    const ONES: [&str; 9] = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"];
    const TENS: [&str; 9] = ["X", "XX", "XXX", "XL", "L", "LX", "LXX", "LXXX", "XC"];
    const HUNDREDS: [&str; 9] = ["C", "CC", "CCC", "CD", "D", "DC", "DCC", "DCCC", "CM"];
    let mut s = "M".repeat((n / 1000) as usize);
    for (digit, table) in [
        (n / 100 % 10, HUNDREDS),
        (n / 10 % 10, TENS),
        (n % 10, ONES),
    ] {
        if digit > 0 {
            s.push_str(table[digit as usize - 1]);
        }
    }
    s
}

fn roman_prepared(n: i64) -> Prepared {
    Prepared {
        number: roman(n).into_bytes(),
        out_pre_spaces: 0,
        sign: 0,
    }
}

/// C's `%+.*e` with the leading `+` as a blank: ` 1.235e+03`.
fn c_sci(v: f64, prec: usize) -> String {
    let s = format!("{v:.prec$e}");
    let (mantissa, exp) = s.split_once('e').expect("Rust writes an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let blank = if mantissa.starts_with('-') { "" } else { " " };
    format!("{blank}{mantissa}e{exp:+03}")
}

/// PostgreSQL's `%.*f` (Rust's fixed notation is C's; PostgreSQL's own
/// snprintf spells NaN and infinity as its float output does).
fn c_fixed(v: f64, prec: usize) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:.prec$}")
    }
}

/// A number of the picture's type, as to_char receives it.
#[derive(Clone, Copy, Debug)]
enum Number {
    Int(i64),
    Float(f64, Digits),
    /// A numeric: mantissa and scale (specials as eon stores them).
    Decimal(i128, i8),
}

/// How many significant digits the float type keeps (C's FLT_DIG,
/// DBL_DIG).
#[derive(Clone, Copy, Debug)]
enum Digits {
    Float4 = 6,
    Float8 = 15,
}

/// An exact decimal: `digits × 10^-scale`.
#[derive(Clone, Debug)]
struct Exact {
    negative: bool,
    digits: Vec<u8>,
    scale: i32,
}

impl Exact {
    fn of(mantissa: i128, scale: i32) -> Exact {
        Exact {
            negative: mantissa < 0,
            digits: mantissa.unsigned_abs().to_string().into_bytes(),
            scale,
        }
    }

    /// Rounded half away from zero to `post` decimals, written with
    /// exactly that many (PostgreSQL's round() then numeric_out).
    fn fixed(&self, post: i32) -> String {
        let mut digits = self.digits.clone();
        let mut scale = self.scale;
        if scale < 0 {
            digits.extend(std::iter::repeat_n(b'0', (-scale) as usize));
            scale = 0;
        }
        if post < scale {
            let cut = (scale - post) as usize;
            let keep = digits.len().saturating_sub(cut);
            let round_up = digits.get(keep).is_some_and(|&c| c >= b'5');
            digits.truncate(keep);
            if round_up {
                increment(&mut digits);
            }
            scale = post;
        }
        digits.extend(std::iter::repeat_n(b'0', (post - scale) as usize));
        // Now digits × 10^-post.
        let post = post as usize;
        if digits.len() <= post {
            let mut padded = vec![b'0'; post + 1 - digits.len()];
            padded.extend(digits);
            digits = padded;
        }
        let (int, frac) = digits.split_at(digits.len() - post);
        let int = std::str::from_utf8(int).unwrap().trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let frac = std::str::from_utf8(frac).unwrap();
        let zero = !int.bytes().chain(frac.bytes()).any(|c| c != b'0');
        let sign = if self.negative && !zero { "-" } else { "" };
        if post == 0 {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    /// PostgreSQL's numeric_out_sci: `d.ddde±XX` with `post` decimals; the
    /// exponent is taken before rounding (9.9996 is `10.000e+00`, as in
    /// PostgreSQL).
    fn sci(&self, post: i32) -> String {
        let nonzero = self.digits.iter().any(|&c| c != b'0');
        let exponent = if nonzero {
            self.digits.len() as i32 - 1 - self.scale
        } else {
            0
        };
        let shifted = Exact {
            negative: self.negative,
            digits: self.digits.clone(),
            scale: self.scale + exponent,
        };
        format!("{}e{exponent:+03}", shifted.fixed(post))
    }

    fn shifted(mut self, places: i32) -> Exact {
        self.scale -= places;
        self
    }
}

/// Add one to a decimal digit string.
fn increment(digits: &mut Vec<u8>) {
    for c in digits.iter_mut().rev() {
        if *c == b'9' {
            *c = b'0';
        } else {
            *c += 1;
            return;
        }
    }
    digits.insert(0, b'1');
}

/// The number written for the picture (PostgreSQL's numeric_to_char,
/// int8_to_char, float8_to_char, float4_to_char before the walk).
fn prepare_number(d: &mut Desc, n: Number) -> std::result::Result<Prepared, Error> {
    let special = match n {
        Number::Decimal(m, _) => special::name(m),
        _ => None,
    };
    if d.is(ROMAN) {
        let int = match n {
            Number::Int(i) => i,
            Number::Float(f, _) => f.round_ties_even() as i64,
            Number::Decimal(m, s) => {
                if special.is_some() {
                    return Err(Error::unsupported("cannot convert NaN to integer"));
                }
                Exact::of(m, s.into()).fixed(0).parse().map_err(|_| {
                    Error::user(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "integer out of range")
                })?
            }
        };
        return Ok(roman_prepared(int));
    }
    if d.is(EEEE) {
        let text = match n {
            Number::Float(f, _) if !f.is_finite() => None,
            Number::Decimal(..) if special.is_some() => None,
            Number::Float(f, _) => Some(c_sci(f, d.post as usize)),
            // int4 goes through float8 (exact), int8 through numeric.
            Number::Int(i) if i32::try_from(i).is_ok() => Some(c_sci(i as f64, d.post as usize)),
            Number::Int(i) => Some(Exact::of(i.into(), 0).sci(d.post)),
            Number::Decimal(m, s) => Some(Exact::of(m, s.into()).sci(d.post)),
        };
        let number = match text {
            Some(t) if t.starts_with(['-', ' ']) => t,
            Some(t) => format!(" {t}"),
            None => {
                let mut v = vec![b'#'; (d.pre + d.post + 6) as usize];
                v[0] = b' ';
                v[(d.pre + 1) as usize] = b'.';
                String::from_utf8(v).unwrap()
            }
        };
        return Ok(Prepared {
            number: number.into_bytes(),
            out_pre_spaces: 0,
            sign: 0,
        });
    }
    let multi = if d.is(MULTI) { d.multi } else { 0 };
    let orgnum = match n {
        Number::Int(i) => {
            d.pre += multi;
            let v = i128::from(i) * 10i128.pow(multi as u32);
            let mut s = v.to_string();
            if d.post > 0 {
                s.push('.');
                s.push_str(&"0".repeat(d.post as usize));
            }
            s
        }
        Number::Decimal(..) if special.is_some() => {
            d.pre += multi;
            special.unwrap().to_string()
        }
        Number::Decimal(m, s) => {
            d.pre += multi;
            Exact::of(m, s.into()).shifted(multi).fixed(d.post)
        }
        Number::Float(f, digits) => {
            let v = match digits {
                Digits::Float4 => f64::from((f as f32) * 10f32.powi(multi)),
                Digits::Float8 => f * 10f64.powi(multi),
            };
            d.pre += multi;
            let max = digits as i32;
            let pre_len = c_fixed(v.abs(), 0).len() as i32;
            if pre_len >= max {
                d.post = 0;
            } else if pre_len + d.post > max {
                d.post = max - pre_len;
            }
            c_fixed(v, d.post as usize)
        }
    };
    Ok(plain(d, &orgnum))
}

/// The walk of the picture writing the number (PostgreSQL's
/// NUM_processor and NUM_numpart_to_char for to_char).
struct Writer<'a> {
    d: &'a mut Desc,
    number: Vec<u8>,
    /// Position in `number`.
    at: usize,
    out: Vec<u8>,
    sign: u8,
    sign_wrote: bool,
    num_count: i32,
    num_in: bool,
    num_curr: i32,
    out_pre_spaces: i32,
    last_relevant: Option<usize>,
}

impl Writer<'_> {
    fn number_at(&self, i: usize) -> u8 {
        self.number.get(i).copied().unwrap_or(0)
    }

    fn last_relevant_is_point(&self) -> bool {
        self.last_relevant
            .is_some_and(|i| self.number_at(i) == b'.')
    }

    /// "0.1" under "9.9" is " .1": the leading zero is a blank.
    fn predec_space(&self) -> bool {
        !self.d.is(ZERO) && self.at == 0 && self.number_at(0) == b'0' && self.d.post != 0
    }

    fn sign_text(&self) -> u8 {
        if self.sign == b'-' { b'-' } else { b'+' }
    }

    fn digit(&mut self, key: Key) {
        if self.d.is(ROMAN) {
            return;
        }
        self.num_in = false;
        let fill = self.d.is(FILLMODE);
        if !self.sign_wrote
            && (self.num_curr >= self.out_pre_spaces
                || (self.d.is(ZERO) && self.d.zero_start == self.num_curr))
            && (!self.predec_space() || self.last_relevant_is_point())
        {
            if self.d.is(LSIGN) {
                if self.d.lsign == LocaleSign::Pre {
                    self.out.push(self.sign_text());
                    self.sign_wrote = true;
                }
            } else if self.d.is(BRACKET) {
                self.out.push(if self.sign == b'+' { b' ' } else { b'<' });
                self.sign_wrote = true;
            } else if self.sign == b'+' {
                if !fill {
                    self.out.push(b' ');
                }
                self.sign_wrote = true;
            } else if self.sign == b'-' {
                self.out.push(b'-');
                self.sign_wrote = true;
            }
        }
        if self.num_curr < self.out_pre_spaces
            && (self.d.zero_start > self.num_curr || !self.d.is(ZERO))
        {
            if !fill {
                self.out.push(b' ');
            }
        } else if self.d.is(ZERO)
            && self.num_curr < self.out_pre_spaces
            && self.d.zero_start <= self.num_curr
        {
            self.out.push(b'0');
            self.num_in = true;
        } else {
            let c = self.number_at(self.at);
            if c == b'.' {
                if !self.last_relevant_is_point() || fill {
                    self.out.push(b'.');
                }
            } else if self.last_relevant.is_some_and(|lr| self.at > lr) && key != Key::Zero {
            } else if self.predec_space() {
                if !fill {
                    self.out.push(b' ');
                } else if self.last_relevant_is_point() {
                    self.out.push(b'0');
                }
            } else {
                // At the end of the number C writes its terminating NUL,
                // which ends the output there: so does this.
                self.out.push(c);
                self.num_in = true;
            }
            if self.at < self.number.len() {
                self.at += 1;
            }
        }
        let mut end =
            self.num_count + i32::from(self.out_pre_spaces > 0) + i32::from(self.d.is(DECIMAL));
        if self.last_relevant == Some(self.at) {
            end = self.num_curr;
        }
        if self.num_curr + 1 == end {
            if self.sign_wrote && self.d.is(BRACKET) {
                self.out.push(if self.sign == b'+' { b' ' } else { b'>' });
            } else if self.d.is(LSIGN) && self.d.lsign == LocaleSign::Post {
                self.out.push(self.sign_text());
            }
        }
        self.num_curr += 1;
    }
}

/// The ordinal suffix of the number's last digit.
fn ordinal(number: &[u8], upper: bool) -> std::result::Result<&'static str, Error> {
    let text = String::from_utf8_lossy(number);
    let last = *number.last().unwrap_or(&b' ');
    if !last.is_ascii_digit() {
        return Err(Error::user(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("\"{text}\" is not a number"),
        ));
    }
    let teen = number.len() > 1 && number[number.len() - 2] == b'1';
    let s = match last {
        b'1' if !teen => "st",
        b'2' if !teen => "nd",
        b'3' if !teen => "rd",
        _ => "th",
    };
    Ok(match (upper, s) {
        (false, s) => s,
        (true, "st") => "ST",
        (true, "nd") => "ND",
        (true, "rd") => "RD",
        (true, _) => "TH",
    })
}

/// `to_char(n, format)`.
fn to_char(n: Number, format: &str) -> std::result::Result<String, Error> {
    let (nodes, mut d) = parse(format)?;
    let p = prepare_number(&mut d, n)?;
    if d.zero_start > 0 {
        d.zero_start -= 1;
    }
    if d.is(EEEE) {
        return Ok(String::from_utf8_lossy(&p.number).into_owned());
    }
    let mut out_pre_spaces = p.out_pre_spaces;
    let mut sign = p.sign;
    if d.is(ROMAN) {
        d.lsign = LocaleSign::None;
        d.pre_lsign_num = 0;
        d.post = 0;
        d.pre = 0;
        out_pre_spaces = 0;
        sign = 0;
        d.flag = ROMAN | (d.flag & FILLMODE);
    }
    let sign_wrote;
    if d.is(PLUS) || d.is(MINUS) {
        sign_wrote = !(d.is(PLUS) && !d.is(MINUS));
    } else {
        if sign != b'-' {
            if d.is(BRACKET) && d.is(FILLMODE) {
                d.flag &= !BRACKET;
            }
        } else if d.is(PLUS) {
            d.flag &= !PLUS;
        }
        sign_wrote = sign == b'+' && d.is(FILLMODE) && !d.is(LSIGN);
        if d.lsign == LocaleSign::Pre && d.pre == d.pre_lsign_num {
            d.lsign = LocaleSign::Post;
        }
    }
    let mut num_count = d.post + d.pre - 1;
    let mut last_relevant = None;
    if d.is(FILLMODE) && d.is(DECIMAL) {
        // The last digit after the point that is not a trailing zero.
        if let Some(point) = p.number.iter().position(|&c| c == b'.') {
            let mut lr = point;
            for (i, &c) in p.number.iter().enumerate().skip(point + 1) {
                if c != b'0' {
                    lr = i;
                }
            }
            // Zeros the picture asks for stay.
            if d.zero_end > out_pre_spaces {
                let last_zero = (p.number.len() as i32 - 1).min(d.zero_end - out_pre_spaces);
                lr = lr.max(last_zero as usize);
            }
            last_relevant = Some(lr);
        }
    }
    if !sign_wrote && out_pre_spaces == 0 {
        num_count += 1;
    }
    let mut w = Writer {
        d: &mut d,
        number: p.number,
        at: 0,
        out: Vec::new(),
        sign,
        sign_wrote,
        num_count,
        num_in: false,
        num_curr: 0,
        out_pre_spaces,
        last_relevant,
    };
    for node in &nodes {
        let fill = w.d.is(FILLMODE);
        match node {
            Node::Text(t) => w.out.extend_from_slice(t.as_bytes()),
            Node::Key(k) => match k {
                Key::Nine | Key::Zero | Key::Dec | Key::D => w.digit(*k),
                Key::Comma | Key::G => {
                    if w.num_in {
                        w.out.push(b',');
                    } else if !fill {
                        w.out.push(b' ');
                    }
                }
                // The C locale's currency symbol is a blank.
                Key::L => w.out.push(b' '),
                Key::Rn | Key::RnLower => {
                    let text = String::from_utf8_lossy(&w.number[w.at..]).into_owned();
                    let text = if *k == Key::RnLower {
                        text.to_lowercase()
                    } else {
                        text
                    };
                    let text = if fill { text } else { format!("{text:>15}") };
                    w.out.extend_from_slice(text.as_bytes());
                }
                Key::Th | Key::ThLower => {
                    if w.d.is(ROMAN)
                        || w.number.first() == Some(&b'#')
                        || w.sign == b'-'
                        || w.d.is(DECIMAL)
                    {
                        continue;
                    }
                    let th = ordinal(&w.number, *k == Key::Th)?;
                    w.out.extend_from_slice(th.as_bytes());
                }
                Key::Mi => {
                    if w.sign == b'-' {
                        w.out.push(b'-');
                    } else if !fill {
                        w.out.push(b' ');
                    }
                }
                Key::Pl => {
                    if w.sign == b'+' {
                        w.out.push(b'+');
                    } else if !fill {
                        w.out.push(b' ');
                    }
                }
                Key::Sg => w.out.push(w.sign),
                _ => {}
            },
        }
    }
    let end = w.out.iter().position(|&c| c == 0).unwrap_or(w.out.len());
    w.out.truncate(end);
    Ok(String::from_utf8_lossy(&w.out).into_owned())
}

// ------------------------------------------------------------ to_number

/// `to_number(text, format)`: the digits read, as mantissa and scale.
fn to_number(input: &str, format: &str) -> std::result::Result<(i128, i8), Error> {
    let (nodes, mut d) = parse(format)?;
    if d.is(EEEE) {
        return Err(Error::unsupported("\"EEEE\" not supported for input"));
    }
    if d.is(ROMAN) {
        return Err(Error::unsupported("\"RN\" not supported for input"));
    }
    let input = input.as_bytes();
    let len = input.len();
    let mut r = Reader {
        d: &d,
        input,
        at: 0,
        sign: b' ',
        digits: Vec::new(),
        read_pre: 0,
        read_post: 0,
        read_dec: false,
    };
    for node in &nodes {
        if r.at >= len {
            break;
        }
        let fill = d.is(FILLMODE);
        match node {
            Node::Text(_) => {
                // One input character per format character, matching or
                // not.
                r.at += utf8_len(input[r.at]);
                continue;
            }
            Node::Key(k) => match k {
                Key::Nine | Key::Zero | Key::Dec | Key::D => r.digit(*k),
                Key::Comma | Key::G => {
                    if fill || input[r.at] != b',' {
                        continue;
                    }
                }
                Key::L => {
                    r.skip_non_data(1);
                    continue;
                }
                Key::Th | Key::ThLower => {
                    if d.is(DECIMAL) {
                        continue;
                    }
                    r.skip_non_data(2);
                    continue;
                }
                Key::Mi | Key::Pl | Key::Sg => {
                    let c = input[r.at];
                    let wanted = match k {
                        Key::Mi => c == b'-',
                        Key::Pl => c == b'+',
                        _ => c == b'-' || c == b'+',
                    };
                    if wanted {
                        r.sign = c;
                    } else {
                        r.skip_non_data(1);
                        continue;
                    }
                }
                _ => continue,
            },
        }
        r.at += 1;
    }
    let (digits, read_post, sign) = (r.digits, r.read_post, r.sign);
    d.post = read_post;
    let text = String::from_utf8_lossy(&digits).into_owned();
    let text = text.strip_suffix('.').unwrap_or(&text).to_string();
    let invalid = || {
        Error::user(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!(
                "invalid input syntax for type numeric: \"{}{text}\"",
                sign as char
            ),
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    // numeric_in with the picture's precision and the decimals read.
    let precision = (d.pre + d.multi + d.post).clamp(1, 1000) as u16;
    let mantissa = crate::numeric::parse_to(
        &format!("{}{text}", sign as char),
        precision,
        d.post as i8,
        false,
    )?;
    let scale = d.post + if d.is(MULTI) { d.multi } else { 0 };
    if scale > i32::from(eon_common::types::NUMERIC_MAX_DIGITS) {
        return Err(invalid());
    }
    Ok((mantissa, scale as i8))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The walk of the picture reading a number (PostgreSQL's
/// NUM_numpart_from_char).
struct Reader<'a> {
    d: &'a Desc,
    input: &'a [u8],
    at: usize,
    /// b' ' until a sign is read.
    sign: u8,
    digits: Vec<u8>,
    read_pre: i32,
    read_post: i32,
    read_dec: bool,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.input.len()
    }

    fn skip_non_data(&mut self, n: usize) {
        for _ in 0..n {
            if self.done() || b"0123456789.,+-".contains(&self.input[self.at]) {
                break;
            }
            self.at += utf8_len(self.input[self.at]);
        }
    }

    fn digit(&mut self, key: Key) {
        if self.done() {
            return;
        }
        if self.input[self.at] == b' ' {
            self.at += 1;
        }
        if self.done() {
            return;
        }
        let d = self.d;
        if self.sign == b' '
            && matches!(key, Key::Zero | Key::Nine)
            && self.read_pre + self.read_post == 0
        {
            let c = self.input[self.at];
            if c == b'-' || (c == b'<' && d.is(BRACKET) && !d.is(LSIGN)) {
                self.sign = b'-';
                self.at += 1;
            } else if c == b'+' {
                self.sign = b'+';
                self.at += 1;
            }
        }
        if self.done() {
            return;
        }
        let mut read = false;
        let c = self.input[self.at];
        if c.is_ascii_digit() {
            if self.read_dec && self.read_post == d.post {
                return;
            }
            self.digits.push(c);
            if self.read_dec {
                self.read_post += 1;
            } else {
                self.read_pre += 1;
            }
            read = true;
        } else if d.is(DECIMAL) && !self.read_dec && c == b'.' {
            self.digits.push(b'.');
            self.read_dec = true;
            read = true;
        }
        if self.done() {
            return;
        }
        if self.sign == b' ' && self.read_pre + self.read_post > 0 {
            let next = self.input.get(self.at + 1).copied();
            if d.is(LSIGN) && read && next.is_some_and(|n| !n.is_ascii_digit()) {
                if let Some(s @ (b'-' | b'+')) = next {
                    self.sign = s;
                    self.at += 1;
                }
            } else if !read && !d.is(LSIGN) && (d.is(PLUS) || d.is(MINUS)) {
                let c = self.input[self.at];
                if c == b'-' || c == b'+' {
                    self.sign = c;
                }
            }
        }
    }
}

// ------------------------------------------------------------ the UDFs

/// The number in row `i` of `a`, when `a` is of a number type.
fn number_at(a: &ArrayRef, i: usize) -> Option<Number> {
    use datafusion::arrow::datatypes as t;
    Some(match a.data_type() {
        DataType::Int8 => Number::Int(a.as_primitive::<t::Int8Type>().value(i).into()),
        DataType::Int16 => Number::Int(a.as_primitive::<t::Int16Type>().value(i).into()),
        DataType::Int32 => Number::Int(a.as_primitive::<t::Int32Type>().value(i).into()),
        DataType::Int64 => Number::Int(a.as_primitive::<t::Int64Type>().value(i)),
        DataType::UInt8 => Number::Int(a.as_primitive::<t::UInt8Type>().value(i).into()),
        DataType::UInt16 => Number::Int(a.as_primitive::<t::UInt16Type>().value(i).into()),
        DataType::UInt32 => Number::Int(a.as_primitive::<t::UInt32Type>().value(i).into()),
        DataType::UInt64 => Number::Int(
            a.as_primitive::<t::UInt64Type>()
                .value(i)
                .min(i64::MAX as u64) as i64,
        ),
        DataType::Float32 => Number::Float(
            a.as_primitive::<t::Float32Type>().value(i).into(),
            Digits::Float4,
        ),
        DataType::Float64 => {
            Number::Float(a.as_primitive::<t::Float64Type>().value(i), Digits::Float8)
        }
        DataType::Decimal128(_, s) => {
            Number::Decimal(a.as_primitive::<t::Decimal128Type>().value(i), *s)
        }
        _ => return None,
    })
}

fn is_number(t: &DataType) -> bool {
    t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..))
}

/// `to_char`: numbers here, anything else DataFusion's.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
    fallback: Option<Arc<ScalarUDF>>,
}

impl ToChar {
    fn fallback(&self) -> Result<&Arc<ScalarUDF>> {
        self.fallback.as_ref().ok_or_else(|| {
            to_df(Error::user(
                sqlstate::UNDEFINED_FUNCTION,
                "function to_char does not exist",
            ))
        })
    }
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        unreachable!("return_field_from_args answers")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let t = args.arg_fields[0].data_type();
        if is_number(t) || crate::dtfmt::is_datetime(t) {
            return Ok(Arc::new(Field::new("to_char", DataType::Utf8, true)));
        }
        self.fallback()?.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let datetime = crate::dtfmt::is_datetime(&args.args[0].data_type());
        if !is_number(&args.args[0].data_type()) && !datetime {
            return self.fallback()?.invoke_with_args(args);
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let formats = cast(&arrays[1], &DataType::Utf8)?;
        let formats = formats.as_string::<i32>();
        if datetime {
            let out = crate::dtfmt::to_char_array(&arrays[0], formats)?;
            return crate::pgfuncs::shaped_like(&args.args, out);
        }
        let mut b = StringBuilder::new();
        for i in 0..arrays[0].len() {
            if arrays[0].is_null(i) || formats.is_null(i) {
                b.append_null();
                continue;
            }
            let n = number_at(&arrays[0], i).expect("a number type");
            b.append_value(to_char(n, formats.value(i)).map_err(to_df)?);
        }
        crate::pgfuncs::shaped_like(&args.args, Arc::new(b.finish()))
    }
}

/// `to_number(text, format)`: a numeric.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToNumber {
    signature: Signature,
}

/// The scale of to_number's answer: the constant answer's own, or the
/// picture's decimals.
fn to_number_scale(args: &ReturnFieldArgs) -> i8 {
    let text = |v: &Option<&ScalarValue>| match v {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => Some(s.clone()),
        Some(ScalarValue::LargeUtf8(Some(s))) => Some(s.clone()),
        _ => None,
    };
    let input = args.scalar_arguments.first().and_then(|v| text(v));
    let format = args.scalar_arguments.get(1).and_then(|v| text(v));
    match (input, format) {
        (Some(input), Some(format)) => match to_number(&input, &format) {
            Ok((_, scale)) => scale,
            Err(_) => 0,
        },
        (_, Some(format)) => match parse(&format) {
            Ok((_, d)) => (d.post + if d.is(MULTI) { d.multi } else { 0 }).clamp(0, 38) as i8,
            Err(_) => 0,
        },
        _ => eon_common::types::NUMERIC_DEFAULT_SCALE,
    }
}

impl ScalarUDFImpl for ToNumber {
    fn name(&self) -> &str {
        "to_number"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        unreachable!("return_field_from_args answers")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let scale = to_number_scale(&args);
        Ok(Arc::new(Field::new(
            "to_number",
            DataType::Decimal128(38, scale),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Decimal128(p, s) = args.return_field.data_type().clone() else {
            unreachable!("to_number answers a decimal")
        };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let inputs = cast(&arrays[0], &DataType::Utf8)?;
        let inputs = inputs.as_string::<i32>();
        let formats = cast(&arrays[1], &DataType::Utf8)?;
        let formats = formats.as_string::<i32>();
        let mut b = Decimal128Builder::with_capacity(inputs.len());
        for i in 0..inputs.len() {
            if inputs.is_null(i) || formats.is_null(i) {
                b.append_null();
                continue;
            }
            let (m, scale) = to_number(inputs.value(i), formats.value(i)).map_err(to_df)?;
            let value = crate::numeric::rescale(m, scale, p, s).map_err(to_df)?;
            b.append_value(value);
        }
        let out = b.finish().with_precision_and_scale(p, s)?;
        crate::pgfuncs::shaped_like(&args.args, Arc::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Number {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let m: i128 = format!("{int}{frac}").parse().unwrap();
        Number::Decimal(m, frac.len() as i8)
    }

    #[test]
    fn pictures_place_digits_signs_and_separators_as_postgresql() {
        let c = |n, f| to_char(n, f).unwrap();
        assert_eq!(
            c(dec("-34338492.215397047"), "9G999G999G999G999G999"),
            "           -34,338,492"
        );
        assert_eq!(
            c(dec("4.31"), "9999999999999999.999999999999999PR"),
            "                4.310000000000000 "
        );
        assert_eq!(
            c(dec("-4.31"), "9999999999999999.999999999999999PR"),
            "               <4.310000000000000>"
        );
        assert_eq!(c(dec("0"), "FM9999999999999999.999999999999999THPR"), "0.");
        assert_eq!(
            c(dec("7799461.4119"), "FMS9999999999999999.999999999999999"),
            "+7799461.4119"
        );
        assert_eq!(
            c(
                dec("-34338492.215397047"),
                "SG9999999999999999.999999999999999th"
            ),
            "-        34338492.215397047000000"
        );
        assert_eq!(
            c(dec("0"), "0999999999999999.999999999999999"),
            " 0000000000000000.000000000000000"
        );
        assert_eq!(c(dec("0"), "FM9999999999999999.099999999999999"), ".0");
        assert_eq!(c(dec("100"), "FM999.9"), "100.");
        assert_eq!(c(dec("100"), "FM999."), "100");
        assert_eq!(c(dec("100"), "FM999"), "100");
        assert_eq!(c(dec("100"), "foo999"), "foo 100");
        assert_eq!(c(dec("100"), "f\"ool\"999"), "fool 100");
        assert_eq!(c(dec("100"), "f\\\"oo999"), "f\"oo 100");
        assert_eq!(c(dec("-4.2"), "9.999EEEE"), "-4.200e+00");
        assert_eq!(c(dec("0"), "9.999EEEE"), " 0.000e+00");
        assert_eq!(
            c(Number::Float(4.2e9, Digits::Float8), "9.999EEEE"),
            " 4.200e+09"
        );
        assert_eq!(
            c(
                Number::Float(12345678901.0, Digits::Float8),
                "FM9999999999D9999900000000000000000"
            ),
            "##########.####"
        );
        assert_eq!(c(Number::Int(42), "99th"), " 42nd");
        assert_eq!(c(Number::Int(1999), "RN"), "        MCMXCIX");
        assert_eq!(c(Number::Int(-5), "MI99.99"), "- 5.00");
    }

    #[test]
    fn to_number_reads_what_to_char_writes() {
        let n = |i, f| to_number(i, f).unwrap();
        assert_eq!(n("-34,338,492", "99G999G999"), (-34338492, 0));
        assert_eq!(n("<564646.654564>", "999999.999999PR"), (-564646654564, 6));
        assert_eq!(n("0.00001-", "9.999999S"), (-1, 5));
        assert_eq!(n("5.01-", "FM9.999999MI"), (-501, 2));
        assert_eq!(n(".01", "FM9.99"), (1, 2));
        assert_eq!(n(".0", "99999999.99999999"), (0, 1));
        assert_eq!(n("34,50", "999,99"), (3450, 0));
        assert_eq!(n("$1,234.56", "L99,999.99"), (123456, 2));
        assert_eq!(n("42nd", "99th"), (42, 0));
        assert!(to_number("1", "9.9EEEE").is_err());
    }
}
