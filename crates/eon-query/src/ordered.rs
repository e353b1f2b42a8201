//! Ordered-set and hypothetical-set aggregates: `percentile_cont`,
//! `percentile_disc`, `mode`, and `rank`, `dense_rank`, `percent_rank`,
//! `cume_dist` with `WITHIN GROUP (ORDER BY x)`, as PostgreSQL has them.
//!
//! An ordered-set aggregate sees its group's values of `x` in order and
//! answers from their positions: `percentile_disc(0.5)` is the first value
//! at or past the middle, `percentile_cont(0.5)` interpolates between the
//! two values around it (PostgreSQL's `float8_lerp`), `mode()` is the most
//! frequent value (the first in order among equally frequent ones). NULLs
//! of `x` are left out. The fraction may be an array, giving an array of
//! answers. A fraction outside [0, 1] is 22003.
//!
//! A hypothetical-set aggregate asks where its direct argument would rank
//! among the group's values if it were one of them: `rank(3) WITHIN GROUP
//! (ORDER BY x)` is 1 + the number of values ordered before 3 (NULLs are
//! ordered as the ORDER BY says), `dense_rank` counts distinct values,
//! `percent_rank` is `(rank - 1) / n` and `cume_dist` is `(number of
//! values not after it + 1) / (n + 1)`.
//!
//! DataFusion reads `WITHIN GROUP` and hands the aggregate the ordering
//! expression first, then the direct arguments, and the ORDER BY's
//! direction. Its own `percentile_cont` takes floats only and `rank` & co.
//! are window functions, so before planning [`rename`] sends these calls
//! to eon's `eon_ordered_*` aggregates (named back by
//! [`crate::windows::unmarked`]). They collect the group's values and sort
//! them at the end, as PostgreSQL's tuplesort does.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray};
use datafusion::arrow::compute::{SortOptions, cast, concat, filter, is_not_null, sort};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident, ObjectNamePart};
use eon_common::error::sqlstate;

/// The prefix of eon's ordered-set aggregates' names.
pub const PREFIX: &str = "eon_ordered_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Cont,
    Disc,
    Mode,
    Rank,
    DenseRank,
    PercentRank,
    CumeDist,
}

const KINDS: [(&str, Kind); 7] = [
    ("percentile_cont", Kind::Cont),
    ("percentile_disc", Kind::Disc),
    ("mode", Kind::Mode),
    ("rank", Kind::Rank),
    ("dense_rank", Kind::DenseRank),
    ("percent_rank", Kind::PercentRank),
    ("cume_dist", Kind::CumeDist),
];

pub fn register(ctx: &SessionContext) {
    for (name, kind) in KINDS {
        ctx.register_udaf(AggregateUDF::new_from_impl(Ordered {
            name: format!("{PREFIX}{name}"),
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }));
    }
}

/// Send an ordered-set call (`f(…) WITHIN GROUP (ORDER BY …)`, not a
/// window) to eon's aggregate of that name.
pub fn rename(e: &mut SqlExpr) {
    let SqlExpr::Function(f) = e else { return };
    if f.within_group.is_empty() || f.over.is_some() {
        return;
    }
    let [ObjectNamePart::Identifier(name)] = f.name.0.as_mut_slice() else {
        return;
    };
    let lower = name.value.to_ascii_lowercase();
    if KINDS.iter().any(|(n, _)| *n == lower) {
        *name = Ident::new(format!("{PREFIX}{lower}"));
    }
}

/// A hypothetical rank of a number among strings: PostgreSQL finds no
/// common type for them. (A string among numbers is read as a number.)
fn mismatched(kind: Kind, ordered: &DataType, direct: &[DataType]) -> bool {
    let text = matches!(
        ordered,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    );
    !matches!(kind, Kind::Cont | Kind::Disc | Kind::Mode)
        && text
        && direct.first().is_some_and(|d| d.is_numeric())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Ordered {
    name: String,
    kind: Kind,
    signature: Signature,
}

fn plan_err(message: String) -> DataFusionError {
    crate::provider::to_df(eon_common::Error::user(
        sqlstate::UNDEFINED_FUNCTION,
        message,
    ))
}

fn fraction_type(t: &DataType) -> DataType {
    match t {
        DataType::List(f) => DataType::List(Arc::new(Field::new(
            f.name(),
            fraction_type(f.data_type()),
            true,
        ))),
        _ => DataType::Float64,
    }
}

/// `t` with its innermost element type `element` (a fraction's shape).
fn shaped(t: &DataType, element: &DataType) -> DataType {
    match t {
        DataType::List(f) => DataType::List(Arc::new(Field::new(
            f.name(),
            shaped(f.data_type(), element),
            true,
        ))),
        _ => element.clone(),
    }
}

impl AggregateUDFImpl for Ordered {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        let pg = crate::windows::unmarked(&self.name);
        let direct = match self.kind {
            Kind::Mode => 0,
            _ => 1,
        };
        if args.len() != direct + 1 {
            return Err(plan_err(format!(
                "function {pg} with {} direct argument(s) and {} ordering column(s) does not exist",
                args.len().saturating_sub(1),
                args.len().min(1)
            )));
        }
        let ordered = match (self.kind, &args[0]) {
            (_, DataType::Null) => DataType::Float64,
            (Kind::Cont, _) => DataType::Float64,
            (_, t) => t.clone(),
        };
        if let (true, Some(d)) = (mismatched(self.kind, &ordered, &args[1..]), args.get(1)) {
            // Left as they are, for return_type to refuse (an error here
            // would reach the client as "no such function").
            return Ok(vec![ordered, d.clone()]);
        }
        Ok(match self.kind {
            Kind::Mode => vec![ordered],
            Kind::Cont | Kind::Disc => vec![ordered, fraction_type(&args[1])],
            _ => vec![ordered.clone(), ordered],
        })
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        if mismatched(self.kind, &args[0], &args[1..]) {
            return Err(crate::provider::to_df(eon_common::Error::user(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "WITHIN GROUP types text and {} cannot be matched",
                    crate::errors::pg_type_name(&args[1].to_string()).unwrap_or("numeric")
                ),
            )));
        }
        Ok(match self.kind {
            Kind::Cont => shaped(&args[1], &DataType::Float64),
            Kind::Disc => shaped(&args[1], &args[0]),
            Kind::Mode => args[0].clone(),
            Kind::Rank | Kind::DenseRank => DataType::Int64,
            Kind::PercentRank | Kind::CumeDist => DataType::Float64,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> datafusion::common::Result<Vec<FieldRef>> {
        let ordered = args.input_fields[0].data_type().clone();
        let mut fields = vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            DataType::List(Arc::new(Field::new_list_field(ordered, true))),
            true,
        ))];
        if let Some(direct) = args.input_fields.get(1) {
            fields.push(Arc::new(Field::new(
                format!("{}[direct]", args.name),
                direct.data_type().clone(),
                true,
            )));
            fields.push(Arc::new(Field::new(
                format!("{}[seen]", args.name),
                DataType::Boolean,
                true,
            )));
        }
        Ok(fields)
    }

    fn accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        let options = args
            .order_bys
            .first()
            .map(|s| s.options)
            .unwrap_or_default();
        Ok(Box::new(Collect {
            kind: self.kind,
            ordered: args.expr_fields[0].data_type().clone(),
            direct_type: args.expr_fields.get(1).map(|f| f.data_type().clone()),
            return_type: args.return_field.data_type().clone(),
            options,
            values: vec![],
            direct: None,
        }))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        // The accumulator sorts what it collected itself.
        AggregateOrderSensitivity::Insensitive
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

/// A group's values, and its direct argument once seen.
#[derive(Debug)]
struct Collect {
    kind: Kind,
    ordered: DataType,
    direct_type: Option<DataType>,
    return_type: DataType,
    options: SortOptions,
    values: Vec<ArrayRef>,
    direct: Option<ScalarValue>,
}

impl Collect {
    fn all(&self) -> datafusion::common::Result<ArrayRef> {
        if self.values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.ordered));
        }
        let parts: Vec<&dyn Array> = self.values.iter().map(|a| a.as_ref()).collect();
        Ok(concat(&parts)?)
    }

    /// The group's non-NULL values in the ORDER BY's order.
    fn sorted(&self) -> datafusion::common::Result<ArrayRef> {
        let all = self.all()?;
        let present = filter(&all, &is_not_null(&all)?)?;
        Ok(sort(&present, Some(self.options))?)
    }
}

fn out_of_range(p: f64) -> DataFusionError {
    crate::provider::to_df(eon_common::Error::user(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        format!("percentile value {p} is not between 0 and 1"),
    ))
}

/// `f` applied to every fraction of `fraction` (a float or an array of
/// them, nested), keeping the array's shape; NULL stays NULL.
fn each_fraction(
    fraction: &ScalarValue,
    out: &DataType,
    f: &dyn Fn(f64) -> datafusion::common::Result<ScalarValue>,
) -> datafusion::common::Result<ScalarValue> {
    match fraction {
        ScalarValue::Float64(Some(p)) => {
            if !(0.0..=1.0).contains(p) {
                return Err(out_of_range(*p));
            }
            f(*p)
        }
        ScalarValue::List(list) if !list.is_null(0) => {
            let DataType::List(element) = out else {
                return ScalarValue::try_from(out);
            };
            let inner = list.value(0);
            let answers = (0..inner.len())
                .map(|i| {
                    let p = ScalarValue::try_from_array(&inner, i)?;
                    each_fraction(&p, element.data_type(), f)
                })
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                &answers,
                element.data_type(),
            )))
        }
        _ => ScalarValue::try_from(out),
    }
}

impl Accumulator for Collect {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.values.push(values[0].clone());
        if self.direct.is_none() && values.len() > 1 && !values[1].is_empty() {
            self.direct = Some(ScalarValue::try_from_array(&values[1], 0)?);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        let lists: &ListArray = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if !lists.is_null(i) {
                self.values.push(lists.value(i));
            }
        }
        if let (None, Some(direct), Some(seen)) = (&self.direct, states.get(1), states.get(2)) {
            let seen: &BooleanArray = seen.as_boolean();
            if let Some(i) = (0..seen.len()).find(|&i| seen.is_valid(i) && seen.value(i)) {
                self.direct = Some(ScalarValue::try_from_array(direct, i)?);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        let all = self.all()?;
        let mut state = vec![SingleRowListArrayBuilder::new(all).build_list_scalar()];
        if let Some(t) = &self.direct_type {
            state.push(match &self.direct {
                Some(v) => v.clone(),
                None => ScalarValue::try_from(t)?,
            });
            state.push(ScalarValue::Boolean(Some(self.direct.is_some())));
        }
        Ok(state)
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        match self.kind {
            Kind::Cont | Kind::Disc => {
                let Some(fraction) = self.direct.clone() else {
                    return ScalarValue::try_from(&self.return_type);
                };
                let sorted = self.sorted()?;
                let n = sorted.len();
                if self.kind == Kind::Cont {
                    let floats = cast(&sorted, &DataType::Float64)?;
                    let floats = floats.as_primitive::<Float64Type>().clone();
                    each_fraction(&fraction, &self.return_type, &|p| {
                        if n == 0 {
                            return Ok(ScalarValue::Float64(None));
                        }
                        let at = p * (n - 1) as f64;
                        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
                        let (a, b) = (floats.value(lo), floats.value(hi));
                        Ok(ScalarValue::Float64(Some(a + (b - a) * (at - lo as f64))))
                    })
                } else {
                    each_fraction(&fraction, &self.return_type, &|p| {
                        if n == 0 {
                            return ScalarValue::try_from(&self.ordered);
                        }
                        let row = ((p * n as f64).ceil() as usize).max(1);
                        ScalarValue::try_from_array(&sorted, row.min(n) - 1)
                    })
                }
            }
            Kind::Mode => {
                let sorted = self.sorted()?;
                let rows = RowConverter::new(vec![SortField::new(self.ordered.clone())])?
                    .convert_columns(&[sorted.clone()])?;
                let (mut best, mut best_count, mut run) = (None, 0, 0);
                for i in 0..rows.num_rows() {
                    run = if i > 0 && rows.row(i) == rows.row(i - 1) {
                        run + 1
                    } else {
                        1
                    };
                    if run > best_count {
                        (best, best_count) = (Some(i), run);
                    }
                }
                match best {
                    Some(i) => ScalarValue::try_from_array(&sorted, i),
                    None => ScalarValue::try_from(&self.ordered),
                }
            }
            Kind::Rank | Kind::DenseRank | Kind::PercentRank | Kind::CumeDist => {
                let all = self.all()?;
                let n = all.len();
                let converter = RowConverter::new(vec![SortField::new_with_options(
                    self.ordered.clone(),
                    self.options,
                )])?;
                let rows = converter.convert_columns(&[all])?;
                let (before, not_after, distinct_before) = match &self.direct {
                    None => (0, 0, 0),
                    Some(h) => {
                        let h = converter.convert_columns(&[h.to_array_of_size(1)?])?;
                        let h = h.row(0);
                        let mut before: Vec<_> = rows.iter().filter(|r| *r < h).collect();
                        let not_after = rows.iter().filter(|r| *r <= h).count();
                        let count = before.len();
                        before.sort();
                        before.dedup();
                        (count, not_after, before.len())
                    }
                };
                Ok(match self.kind {
                    Kind::Rank => ScalarValue::Int64(Some(before as i64 + 1)),
                    Kind::DenseRank => ScalarValue::Int64(Some(distinct_before as i64 + 1)),
                    Kind::PercentRank => ScalarValue::Float64(Some(if n == 0 {
                        0.0
                    } else {
                        before as f64 / n as f64
                    })),
                    _ => ScalarValue::Float64(Some((not_after + 1) as f64 / (n + 1) as f64)),
                })
            }
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .values
                .iter()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
    }
}
