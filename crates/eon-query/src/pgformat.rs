//! PostgreSQL's `format(formatstr, args…)`: a string built from a
//! template, as `sprintf` but with SQL's own conversions —
//!
//! - `%s` the argument's text output (PostgreSQL's, so `t` for true; NULL
//!   is the empty string),
//! - `%I` the argument quoted as an identifier when it needs quoting (NULL
//!   is an error, 22004),
//! - `%L` the argument quoted as a literal (NULL is the word `NULL`),
//! - `%%` a `%`.
//!
//! A specifier may pick its argument by position (`%2$s`; later ones
//! without a position go on from there), be left-justified (`%-10s`) and
//! take a width, given or from an argument (`%*s`, `%*1$s`; a negative
//! width left-justifies). Errors are PostgreSQL's: 22023 for a bad
//! specifier or too few arguments.
//!
//! `format`, `concat` and `concat_ws` also take their last arguments as
//! one array, marked `VARIADIC` (`format('%s, %s', VARIADIC ARRAY[1, 2])`,
//! `concat(VARIADIC NULL::int[])` is NULL). sqlparser does not read the
//! mark, so [`variadic_tokens`] takes it out and renames the call to a
//! function of that array, [`Variadic`] (`eon_variadic_format`, named as
//! the original in results).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use eon_common::Error;

use crate::pgtypes::ColumnEncoder;

const INVALID: &str = "22023";

/// `format(formatstr text, VARIADIC args)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Format {
    signature: Signature,
}

impl Format {
    pub fn new() -> Format {
        Format {
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

impl Default for Format {
    fn default() -> Self {
        Self::new()
    }
}

/// A PostgreSQL error (SQLSTATE `code`) raised inside a DataFusion function.
pub(crate) fn fail(code: &str, message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(Error::user(code, message)))
}

fn bad_type(c: char) -> DataFusionError {
    DataFusionError::External(Box::new(
        Error::user(
            INVALID,
            format!("unrecognized format() type specifier \"{c}\""),
        )
        .with_hint("For a single \"%\" use \"%%\"."),
    ))
}

fn unterminated() -> DataFusionError {
    DataFusionError::External(Box::new(
        Error::user(INVALID, "unterminated format() type specifier")
            .with_hint("For a single \"%\" use \"%%\"."),
    ))
}

/// One argument, ready to be rendered row by row.
struct Arg {
    encoder: ColumnEncoder,
    array: ArrayRef,
}

impl Arg {
    fn text(&self, row: usize) -> Option<String> {
        // An untyped NULL argument is a NullArray, whose is_null is false.
        let null = self.array.is_null(row) || self.array.data_type() == &DataType::Null;
        (!null).then(|| self.encoder.text_value(row))
    }
}

/// An identifier as `quote_ident` writes it: quoted unless it is lower
/// case letters, digits and underscores not starting with a digit.
pub fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&s);
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// PostgreSQL's reserved key words, which quote_ident quotes.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// A literal as `quote_literal` writes it: in single quotes, doubled;
/// with a backslash, as an E'' string with the backslashes doubled.
pub fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// Reads a number at `chars[*i..]`; None when there is none.
fn number(chars: &[char], i: &mut usize) -> Option<usize> {
    let start = *i;
    while *i < chars.len() && chars[*i].is_ascii_digit() {
        *i += 1;
    }
    (start < *i).then(|| {
        chars[start..*i]
            .iter()
            .collect::<String>()
            .parse()
            .unwrap_or(usize::MAX)
    })
}

/// Formats one row.
fn format_row(template: &str, args: &[Arg], row: usize) -> datafusion::common::Result<String> {
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len());
    let mut next_arg = 0usize;
    let mut i = 0;
    let arg_at = |n: usize| -> datafusion::common::Result<&Arg> {
        args.get(n)
            .ok_or_else(|| fail(INVALID, "too few arguments for format()"))
    };
    while i < chars.len() {
        if chars[i] != '%' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        if i >= chars.len() {
            return Err(unterminated());
        }
        if chars[i] == '%' {
            out.push('%');
            i += 1;
            continue;
        }
        // [position$]
        let mut position = None;
        let save = i;
        if let Some(n) = number(&chars, &mut i) {
            if i < chars.len() && chars[i] == '$' {
                if n == 0 {
                    return Err(fail(
                        INVALID,
                        "format specifies argument 0, but arguments are numbered from 1",
                    ));
                }
                position = Some(n - 1);
                i += 1;
            } else {
                i = save;
            }
        }
        // [-]
        let mut left = false;
        while i < chars.len() && chars[i] == '-' {
            left = true;
            i += 1;
        }
        // [width | * | *n$]
        let mut width: Option<i64> = None;
        if i < chars.len() && chars[i] == '*' {
            i += 1;
            let from = match number(&chars, &mut i) {
                Some(n) => {
                    if i >= chars.len() {
                        return Err(unterminated());
                    }
                    if chars[i] != '$' {
                        return Err(bad_type(chars[i]));
                    }
                    i += 1;
                    if n == 0 {
                        return Err(fail(
                            INVALID,
                            "format specifies argument 0, but arguments are numbered from 1",
                        ));
                    }
                    n - 1
                }
                None => {
                    let n = next_arg;
                    next_arg += 1;
                    n
                }
            };
            let w = arg_at(from)?.text(row);
            width = match w {
                None => None,
                Some(w) => Some(w.trim().parse::<i64>().map_err(|_| {
                    fail(
                        INVALID,
                        format!("invalid input syntax for type integer: \"{w}\""),
                    )
                })?),
            };
            if position.is_none() {
                next_arg = next_arg.max(from + 1);
            }
        } else if let Some(n) = number(&chars, &mut i) {
            width = Some(n as i64);
        }
        if i >= chars.len() {
            return Err(unterminated());
        }
        let kind = chars[i];
        i += 1;
        if !matches!(kind, 's' | 'I' | 'L') {
            return Err(bad_type(kind));
        }
        let n = match position {
            Some(p) => {
                next_arg = p + 1;
                p
            }
            None => {
                let n = next_arg;
                next_arg += 1;
                n
            }
        };
        let value = arg_at(n)?.text(row);
        let text = match (kind, value) {
            ('s', v) => v.unwrap_or_default(),
            ('I', None) => {
                return Err(fail(
                    "22004",
                    "null values cannot be formatted as an SQL identifier",
                ));
            }
            ('I', Some(v)) => quote_ident(&v),
            (_, None) => "NULL".to_string(),
            (_, Some(v)) => quote_literal(&v),
        };
        let (left, width) = match width {
            Some(w) if w < 0 => (true, w.unsigned_abs() as usize),
            Some(w) => (left, w as usize),
            None => (left, 0),
        };
        let pad = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
    }
    Ok(out)
}

/// The prefix of a function renamed for its `VARIADIC` array.
pub const VARIADIC_PREFIX: &str = "eon_variadic_";

/// `f(…, VARIADIC array)` → `eon_variadic_f(…, array)`, for the functions
/// [`Variadic`] implements.
pub fn variadic_tokens(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let solid = crate::windows::solid(&tokens);
    let mut drop = vec![false; tokens.len()];
    for k in 1..solid.len() {
        let is_variadic = matches!(&tokens[solid[k]].token,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("variadic"));
        if !is_variadic || !matches!(tokens[solid[k - 1]].token, Token::LParen | Token::Comma) {
            continue;
        }
        // The call's name: the word before the unclosed parenthesis.
        let open = crate::windows::open_paren_before(&tokens, &solid, k);
        let Some(name) = open.filter(|&p| p > 0).map(|p| solid[p - 1]) else {
            continue;
        };
        let Token::Word(w) = &tokens[name].token else {
            continue;
        };
        let function = w.value.to_ascii_lowercase();
        if w.quote_style.is_none() && VARIADIC_FUNCTIONS.contains(&function.as_str()) {
            tokens[name].token = Token::make_word(&format!("{VARIADIC_PREFIX}{function}"), None);
            drop[solid[k]] = true;
        }
    }
    crate::windows::without(tokens, &drop)
}

const VARIADIC_FUNCTIONS: [&str; 3] = ["format", "concat", "concat_ws"];

/// `format`, `concat` or `concat_ws` with their variadic arguments given as
/// one array (the last argument).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Variadic {
    name: String,
    function: &'static str,
    signature: Signature,
}

impl Variadic {
    pub fn all() -> impl Iterator<Item = Variadic> {
        VARIADIC_FUNCTIONS.into_iter().map(|function| Variadic {
            name: format!("{VARIADIC_PREFIX}{function}"),
            function,
            signature: Signature::variadic_any(Volatility::Stable),
        })
    }
}

impl ScalarUDFImpl for Variadic {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = arrays.first().map_or(1, |a| a.len());
        let fixed = match self.function {
            "concat" => 0,
            _ => 1,
        };
        if arrays.len() != fixed + 1 {
            return Err(fail(
                "42883",
                format!("function {}() does not exist", self.function),
            ));
        }
        let last = &arrays[fixed];
        let (item, list) = match last.data_type() {
            DataType::List(item) => (item.clone(), last.as_list::<i32>().clone()),
            DataType::Null => {
                let item = Arc::new(Field::new("item", DataType::Utf8, true));
                let list = datafusion::arrow::array::ListArray::new_null(item.clone(), last.len());
                (item, list)
            }
            _ => {
                return Err(fail("42804", "VARIADIC argument must be an array"));
            }
        };
        let first = match fixed {
            0 => None,
            _ => Some(datafusion::arrow::compute::cast(
                &arrays[0],
                &DataType::Utf8,
            )?),
        };
        let first = first.as_ref().map(|a| a.as_string::<i32>());
        let mut out = StringBuilder::new();
        for row in 0..n {
            // A NULL array gives NULL, and so does a NULL format or
            // separator.
            if list.is_null(row) || first.is_some_and(|f| f.is_null(row)) {
                if self.function == "format" && !first.is_some_and(|f| f.is_null(row)) {
                    // format(f, VARIADIC NULL) is f formatted with no
                    // arguments.
                    out.append_value(format_row(first.unwrap().value(row), &[], 0)?);
                } else {
                    out.append_null();
                }
                continue;
            }
            let elements = list.value(row);
            let args = (0..elements.len())
                .map(|k| {
                    let array = elements.slice(k, 1);
                    Ok(Arg {
                        encoder: ColumnEncoder::new(&item, &array, false)
                            .map_err(|e| DataFusionError::External(Box::new(e)))?,
                        array,
                    })
                })
                .collect::<datafusion::common::Result<Vec<Arg>>>()?;
            let texts = args.iter().filter_map(|a| a.text(0));
            let value = match self.function {
                "concat" => texts.collect::<String>(),
                "concat_ws" => texts.collect::<Vec<_>>().join(first.unwrap().value(row)),
                _ => format_row(first.unwrap().value(row), &args, 0)?,
            };
            out.append_value(value);
        }
        crate::pgfuncs::shaped_like(&args.args, Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        // All-scalar arguments become one-row arrays (and the answer a
        // scalar again, by shaped_like).
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = arrays.first().map_or(0, |a| a.len());
        let Some((template, rest)) = arrays.split_first() else {
            return Err(fail(
                "42883",
                "function format() does not exist".to_string(),
            ));
        };
        let template = datafusion::arrow::compute::cast(template, &DataType::Utf8)?;
        let template = datafusion::arrow::array::AsArray::as_string::<i32>(&template);
        let fields: Vec<FieldRef> = args.arg_fields.iter().skip(1).cloned().collect();
        let rendered = rest
            .iter()
            .zip(&fields)
            .map(|(array, field)| {
                Ok(Arg {
                    encoder: ColumnEncoder::new(field, array, false)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                    array: array.clone(),
                })
            })
            .collect::<datafusion::common::Result<Vec<Arg>>>()?;
        let mut out = StringBuilder::new();
        for row in 0..n {
            if template.is_null(row) {
                out.append_null();
            } else {
                out.append_value(format_row(template.value(row), &rendered, row)?);
            }
        }
        crate::pgfuncs::shaped_like(&args.args, Arc::new(out.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    fn args(values: Vec<ArrayRef>) -> Vec<Arg> {
        values
            .into_iter()
            .map(|array| {
                let field = Field::new("a", array.data_type().clone(), true);
                Arg {
                    encoder: ColumnEncoder::new(&field, &array, false).unwrap(),
                    array,
                }
            })
            .collect()
    }

    fn fmt(template: &str, values: Vec<ArrayRef>) -> Result<String, String> {
        format_row(template, &args(values), 0).map_err(|e| e.to_string())
    }

    #[test]
    fn specifiers_follow_postgresql() {
        let s = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let i = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
        assert_eq!(
            fmt("Hello %s", vec![s(Some("World"))]).unwrap(),
            "Hello World"
        );
        assert_eq!(fmt("Hello %%", vec![]).unwrap(), "Hello %");
        assert_eq!(
            fmt(
                "INSERT INTO %I VALUES(%L,%L)",
                vec![s(Some("mytab")), i(10), s(None)]
            )
            .unwrap(),
            "INSERT INTO mytab VALUES('10',NULL)"
        );
        assert_eq!(fmt("%I", vec![s(Some("Hello"))]).unwrap(), "\"Hello\"");
        assert_eq!(fmt("%L", vec![s(Some("a'b\\c"))]).unwrap(), "E'a''b\\\\c'");
        assert_eq!(
            fmt("%s", vec![Arc::new(BooleanArray::from(vec![true]))]).unwrap(),
            "t"
        );
        assert_eq!(fmt("%1$s %3$s", vec![i(1), i(2), i(3)]).unwrap(), "1 3");
        assert_eq!(
            fmt("Hello %s %1$s %s", vec![s(Some("World")), s(Some("again"))]).unwrap(),
            "Hello World World again"
        );
        assert_eq!(
            fmt(">>%10s<<", vec![s(Some("Hello"))]).unwrap(),
            ">>     Hello<<"
        );
        assert_eq!(fmt(">>%-10s<<", vec![s(None)]).unwrap(), ">>          <<");
        assert_eq!(
            fmt(">>%*s<<", vec![i(-7), s(Some("Hi"))]).unwrap(),
            ">>Hi     <<"
        );
        assert_eq!(
            fmt(">>%2$*1$L<<", vec![i(10), s(Some("Hello"))]).unwrap(),
            ">>   'Hello'<<"
        );
        assert!(
            fmt("Hello %s %s", vec![s(Some("World"))])
                .unwrap_err()
                .contains("too few arguments")
        );
        assert!(
            fmt("Hello %x", vec![i(20)])
                .unwrap_err()
                .contains("unrecognized format() type specifier \"x\"")
        );
        assert!(
            fmt("%0$s", vec![s(Some("x"))])
                .unwrap_err()
                .contains("arguments are numbered from 1")
        );
        assert!(fmt("%1$", vec![i(1)]).unwrap_err().contains("unterminated"));
    }
}
