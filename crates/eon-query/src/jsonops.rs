//! jsonb's operators and common functions.
//!
//! eon stores jsonb as its canonical JSON text (see [`crate::coerce`]),
//! which DataFusion sees as a string: it has none of PostgreSQL's JSON
//! operators. Before planning, [`rewrite`] turns each operator into a call
//! of one of the functions here, which read the text with serde_json:
//!
//! | operator      | meaning                                   | function            |
//! |---------------|-------------------------------------------|---------------------|
//! | `j -> k`      | field `k` / element `k` (negative: from the end) | `eon_json_get`  |
//! | `j ->> k`     | the same, as text                         | `eon_json_get_text` |
//! | `j #> p`      | the value at path `p` (`'{a,0,b}'`)       | `eon_json_path`     |
//! | `j #>> p`     | the same, as text                         | `eon_json_path_text`|
//! | `a @> b`      | `a` contains `b` (arrays: every element)  | `eon_contains`      |
//! | `a <@ b`      | `b` contains `a`                          | `eon_contains`      |
//! | `j ? k`       | `k` is a key, or a string element         | `eon_json_has`      |
//! | `j ?\| ks`    | any of `ks` is                            | `eon_json_has_any`  |
//! | `j ?& ks`     | all of `ks` are                           | `eon_json_has_all`  |
//!
//! Containment follows PostgreSQL's rules (an object contains another when
//! each of its keys is there with a containing value; an array contains
//! another when each element is contained in some element; a top-level
//! array contains a scalar it holds). `@>` and `<@` on arrays (not JSON
//! text) keep their array meaning. `jsonb_typeof`/`json_typeof` and
//! `jsonb_array_length`/`json_array_length` complete the set. Values these
//! functions return as jsonb are in canonical form, like stored ones.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{BinaryOperator as B, Expr as E, Statement};
use eon_common::SqlType;
use serde_json::Value as J;

use crate::coerce::jsonb_text;
use crate::pgfuncs::shaped_like;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Get,
    GetText,
    Path,
    PathText,
    Contains,
    Has,
    HasAny,
    HasAll,
    TypeOf,
    ArrayLength,
}

impl Op {
    fn returns(&self) -> DataType {
        match self {
            Op::Contains | Op::Has | Op::HasAny | Op::HasAll => DataType::Boolean,
            Op::ArrayLength => DataType::Int32,
            _ => DataType::Utf8,
        }
    }

    fn returns_json(&self) -> bool {
        matches!(self, Op::Get | Op::Path)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonOp {
    name: &'static str,
    op: Op,
    signature: Signature,
}

/// Register the functions with a context.
pub fn register(ctx: &SessionContext) {
    let ops = [
        ("eon_json_get", Op::Get, 2),
        ("eon_json_get_text", Op::GetText, 2),
        ("eon_json_path", Op::Path, 2),
        ("eon_json_path_text", Op::PathText, 2),
        ("eon_json_has", Op::Has, 2),
        ("eon_json_has_any", Op::HasAny, 2),
        ("eon_json_has_all", Op::HasAll, 2),
        ("jsonb_typeof", Op::TypeOf, 1),
        ("json_typeof", Op::TypeOf, 1),
        ("jsonb_array_length", Op::ArrayLength, 1),
        ("json_array_length", Op::ArrayLength, 1),
    ];
    for (name, op, arity) in ops {
        ctx.register_udf(ScalarUDF::new_from_impl(JsonOp {
            name,
            op,
            signature: Signature::any(arity, Volatility::Immutable),
        }));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(JsonOp {
        name: "eon_contains",
        op: Op::Contains,
        signature: Signature::any(2, Volatility::Immutable),
    }));
}

/// True for the functions [`rewrite`] writes in place of operators (their
/// result columns are `?column?`, as an operator's are).
pub fn is_operator(function: &str) -> bool {
    function.starts_with("eon_json_") || function == "eon_contains"
}

/// Replace the JSON operators of the statements by function calls.
pub fn rewrite(statements: &mut [Statement]) {
    let _ = crate::pgfuncs::try_rewrite_expressions(statements, |e| {
        let E::BinaryOp { left, op, right } = e else {
            return Ok(());
        };
        let (name, swap) = match op {
            B::Arrow => ("eon_json_get", false),
            B::LongArrow => ("eon_json_get_text", false),
            B::HashArrow => ("eon_json_path", false),
            B::HashLongArrow => ("eon_json_path_text", false),
            B::AtArrow => ("eon_contains", false),
            B::ArrowAt => ("eon_contains", true),
            B::Question => ("eon_json_has", false),
            B::QuestionPipe => ("eon_json_has_any", false),
            B::QuestionAnd => ("eon_json_has_all", false),
            _ => return Ok(()),
        };
        let (l, r) = (left.as_ref().clone(), right.as_ref().clone());
        let args = if swap { vec![r, l] } else { vec![l, r] };
        *e = crate::pgfuncs::call_with(name, args);
        Ok(())
    });
}

impl ScalarUDFImpl for JsonOp {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(self.op.returns())
    }

    fn return_field_from_args(
        &self,
        _args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        Ok(Arc::new(if self.op.returns_json() {
            SqlType::Jsonb.field(self.name, true)
        } else {
            datafusion::arrow::datatypes::Field::new(self.name, self.op.returns(), true)
        }))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let n = args.number_rows.max(1);
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
        // Arrays (not JSON text) keep `@>`'s array meaning.
        if self.op == Op::Contains && matches!(arrays[0].data_type(), DataType::List(_)) {
            return shaped_like(&args.args, array_contains(&arrays, n)?);
        }
        let out: ArrayRef = match self.op.returns() {
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                for row in 0..n {
                    match self.boolean(&arrays, row)? {
                        Some(v) => b.append_value(v),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = datafusion::arrow::array::Int32Builder::with_capacity(n);
                for row in 0..n {
                    let v = json_arg(&arrays[0], row)?;
                    match v {
                        Some(J::Array(items)) => b.append_value(items.len() as i32),
                        Some(_) => {
                            return Err(user_error("cannot get array length of a non-array"));
                        }
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for row in 0..n {
                    match self.text(&arrays, row)? {
                        Some(v) => b.append_value(v),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
        };
        shaped_like(&args.args, out)
    }
}

impl JsonOp {
    fn text(&self, arrays: &[ArrayRef], row: usize) -> datafusion::common::Result<Option<String>> {
        let Some(j) = json_arg(&arrays[0], row)? else {
            return Ok(None);
        };
        let found = match self.op {
            Op::TypeOf => {
                return Ok(Some(
                    match j {
                        J::Null => "null",
                        J::Bool(_) => "boolean",
                        J::Number(_) => "number",
                        J::String(_) => "string",
                        J::Array(_) => "array",
                        J::Object(_) => "object",
                    }
                    .to_string(),
                ));
            }
            Op::Get | Op::GetText => {
                let key = ScalarValue::try_from_array(&arrays[1], row)?;
                step(&j, &key, false).cloned()
            }
            _ => {
                let Some(path) = path_arg(&arrays[1], row)? else {
                    return Ok(None);
                };
                let mut at = Some(&j);
                for p in &path {
                    at = at.and_then(|v| step(v, &ScalarValue::Utf8(Some(p.clone())), true));
                }
                at.cloned()
            }
        };
        Ok(match (found, self.op) {
            (None, _) => None,
            (Some(J::Null), Op::GetText | Op::PathText) => None,
            (Some(J::String(s)), Op::GetText | Op::PathText) => Some(s),
            (Some(v), _) => Some(jsonb_text(&v)),
        })
    }

    fn boolean(&self, arrays: &[ArrayRef], row: usize) -> datafusion::common::Result<Option<bool>> {
        let Some(j) = json_arg(&arrays[0], row)? else {
            return Ok(None);
        };
        Ok(Some(match self.op {
            Op::Contains => {
                let Some(b) = json_arg(&arrays[1], row)? else {
                    return Ok(None);
                };
                contains(&j, &b, true)
            }
            Op::Has => {
                let Some(key) = text_arg(&arrays[1], row)? else {
                    return Ok(None);
                };
                has_key(&j, &key)
            }
            _ => {
                let Some(keys) = path_arg(&arrays[1], row)? else {
                    return Ok(None);
                };
                if self.op == Op::HasAny {
                    keys.iter().any(|k| has_key(&j, k))
                } else {
                    keys.iter().all(|k| has_key(&j, k))
                }
            }
        }))
    }
}

/// `j -> key`: an object's field (a text key) or an array's element (an
/// integer, negative from the end); in a path (`#>`), text steps that are
/// numbers index arrays.
fn step<'a>(j: &'a J, key: &ScalarValue, in_path: bool) -> Option<&'a J> {
    let index = |items: &'a Vec<J>, i: i64| -> Option<&'a J> {
        let i = if i < 0 { items.len() as i64 + i } else { i };
        usize::try_from(i).ok().and_then(|i| items.get(i))
    };
    match (j, key) {
        (_, k) if k.is_null() => None,
        (J::Object(map), ScalarValue::Utf8(Some(k)) | ScalarValue::Utf8View(Some(k))) => map.get(k),
        // `->` with a text key on an array is NULL; a path's steps are text
        // and index arrays.
        (J::Array(items), ScalarValue::Utf8(Some(k)) | ScalarValue::Utf8View(Some(k))) => {
            if in_path {
                index(items, k.trim().parse().ok()?)
            } else {
                None
            }
        }
        (J::Array(items), k) => match k.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(i)) => index(items, i),
            _ => None,
        },
        _ => None,
    }
}

/// `?`: an object's key, or a string element of an array (or the string
/// itself).
fn has_key(j: &J, key: &str) -> bool {
    match j {
        J::Object(map) => map.contains_key(key),
        J::Array(items) => items.iter().any(|x| x.as_str() == Some(key)),
        J::String(s) => s == key,
        _ => false,
    }
}

/// PostgreSQL's jsonb containment (`a @> b`).
fn contains(a: &J, b: &J, top: bool) -> bool {
    match (a, b) {
        (J::Object(x), J::Object(y)) => y
            .iter()
            .all(|(k, v)| x.get(k).is_some_and(|w| contains(w, v, false))),
        (J::Array(x), J::Array(y)) => y.iter().all(|v| x.iter().any(|w| contains(w, v, false))),
        // Only at the top: an array contains a scalar it holds.
        (J::Array(x), scalar) if top && !scalar.is_object() => x.iter().any(|w| w == scalar),
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (x, y) => !x.is_array() && !x.is_object() && x == y,
    }
}

/// `@>` on arrays: every element of the right one is in the left one.
fn array_contains(arrays: &[ArrayRef], n: usize) -> datafusion::common::Result<ArrayRef> {
    let mut b = BooleanBuilder::with_capacity(n);
    for row in 0..n {
        let (a, c) = (
            ScalarValue::try_from_array(&arrays[0], row)?,
            ScalarValue::try_from_array(&arrays[1], row)?,
        );
        let (ScalarValue::List(a), ScalarValue::List(c)) = (&a, &c) else {
            b.append_null();
            continue;
        };
        if a.is_null(0) || c.is_null(0) {
            b.append_null();
            continue;
        }
        let (xs, ys) = (a.value(0), c.value(0));
        let xs: Vec<ScalarValue> = (0..xs.len())
            .map(|i| ScalarValue::try_from_array(&xs, i))
            .collect::<datafusion::common::Result<_>>()?;
        let mut all = true;
        for i in 0..ys.len() {
            let y = ScalarValue::try_from_array(&ys, i)?;
            let y = y.cast_to(&xs.first().map(|x| x.data_type()).unwrap_or(y.data_type()))?;
            all &= !y.is_null() && xs.contains(&y);
        }
        b.append_value(all);
    }
    Ok(Arc::new(b.finish()))
}

/// Row `row` of a JSON text argument, parsed (None: NULL).
fn json_arg(a: &ArrayRef, row: usize) -> datafusion::common::Result<Option<J>> {
    let Some(s) = text_arg(a, row)? else {
        return Ok(None);
    };
    serde_json::from_str(&s)
        .map(Some)
        .map_err(|_| user_error(&format!("invalid input syntax for type json: \"{s}\"")))
}

fn text_arg(a: &ArrayRef, row: usize) -> datafusion::common::Result<Option<String>> {
    if a.is_null(row) {
        return Ok(None);
    }
    Ok(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => s,
        other => Some(other.to_string()),
    })
}

/// A path or key list: a text[] value, or its text form `'{a,0,b}'`.
fn path_arg(a: &ArrayRef, row: usize) -> datafusion::common::Result<Option<Vec<String>>> {
    if a.is_null(row) {
        return Ok(None);
    }
    if let Some(list) = a.as_list_opt::<i32>() {
        let items = list.value(row);
        let items = datafusion::arrow::compute::cast(&items, &DataType::Utf8)?;
        return Ok(Some(
            items
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect(),
        ));
    }
    let Some(s) = text_arg(a, row)? else {
        return Ok(None);
    };
    let items =
        crate::coerce::parse_array_text(&s).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(Some(
        items.into_iter().map(|s| s.unwrap_or_default()).collect(),
    ))
}

fn user_error(message: &str) -> DataFusionError {
    crate::pgformat::fail(
        eon_common::error::sqlstate::INVALID_PARAMETER_VALUE,
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> J {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn containment_and_keys_follow_postgresql() {
        assert!(contains(
            &j(r#"{"a":1,"b":[1,2,3]}"#),
            &j(r#"{"b":[3,1]}"#),
            true
        ));
        assert!(!contains(&j(r#"{"a":1}"#), &j(r#"{"a":2}"#), true));
        assert!(contains(&j("[1,2,[3]]"), &j("[[3]]"), true));
        assert!(contains(&j(r#"["a","b"]"#), &j(r#""a""#), true));
        assert!(!contains(&j(r#"{"x":["a"]}"#), &j(r#"{"x":"a"}"#), true));
        assert!(contains(&j("1.0"), &j("1"), true));
        assert!(has_key(&j(r#"{"k":null}"#), "k"));
        assert!(has_key(&j(r#"["k"]"#), "k"));
        assert!(!has_key(&j(r#"[{"k":1}]"#), "k"));
        let arr = j("[10,20,30]");
        assert_eq!(
            step(&arr, &ScalarValue::Int64(Some(-1)), false),
            Some(&j("30"))
        );
        assert_eq!(
            step(&arr, &ScalarValue::Utf8(Some("1".into())), true),
            Some(&j("20"))
        );
        assert_eq!(
            step(&arr, &ScalarValue::Utf8(Some("1".into())), false),
            None
        );
        assert_eq!(step(&arr, &ScalarValue::Int64(Some(3)), false), None);
    }
}
