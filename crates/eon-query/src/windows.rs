//! Window frames as PostgreSQL writes them.
//!
//! A frame's offset in PostgreSQL is any constant expression, typed by the
//! window's ORDER BY column: `RANGE BETWEEN '1 year'::interval PRECEDING`,
//! `RANGE 2::int8 PRECEDING`, `RANGE BETWEEN 'inf' PRECEDING AND …` over
//! a float column. sqlparser reads an offset that starts with a string as
//! an interval literal and cannot continue after `'…'::interval`; and
//! DataFusion takes a RANGE offset only as a number or a string, which it
//! then casts to the ORDER BY column's type. So:
//!
//! - [`frame_tokens`] drops a one-word cast (`::interval`, `::int`)
//!   between a string and `PRECEDING` / `FOLLOWING` (the string is then
//!   read as sqlparser reads a string offset);
//! - [`rewrite`] turns every offset into the plain constant DataFusion
//!   casts: a cast of a literal loses the cast (`2::int8` → `2`), an
//!   interval literal becomes its text — normalized for DataFusion's
//!   interval reader when it is one (`'1 year'`), as it stands when it is
//!   a number or not an interval (`'1.5'`, `'inf'` for a float column);
//! - [`check_offsets`] then refuses a negative or NaN offset, which
//!   PostgreSQL refuses when the query runs and DataFusion would take.
//!
//! A frame may also leave rows out: `EXCLUDE CURRENT ROW`, `EXCLUDE GROUP`
//! (the current row and its peers, rows equal in the ORDER BY),
//! `EXCLUDE TIES` (its peers but not itself), `EXCLUDE NO OTHERS` (the
//! default). Neither sqlparser nor DataFusion has exclusion, so
//! [`frame_tokens`] takes the clause out and renames the function it
//! belongs to (`sum` → `eon_exclude_ties__sum`), and [`exclusions`] makes
//! a window function of that name, [`Excluding`]: DataFusion computes
//! each row's frame as usual and hands it over with the partition's ORDER
//! BY values; the function drops the excluded rows from the frame and
//! runs the aggregate (any of DataFusion's, through its accumulator) over
//! the rest — or picks `first_value`, `last_value`, `nth_value` among
//! them. Functions that do not read the frame (`lag`, `rank`, …) ignore
//! the clause, as in PostgreSQL.

use std::ops::{ControlFlow, Range};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::{Result as DfResult, ScalarValue, plan_err};
use datafusion::execution::SessionState;
use datafusion::logical_expr::function::{
    AccumulatorArgs, PartitionEvaluatorArgs, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    AggregateUDF, PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, NamedWindowExpr, Query,
    Select, SetExpr, Statement, Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut,
    WindowFrame, WindowFrameBound, WindowFrameUnits, WindowSpec, WindowType, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, TokenizerError};

/// The prefix of a function renamed for its frame's exclusion.
const EXCLUDE_PREFIX: &str = "eon_exclude_";

/// Window functions that do not read the frame, so its exclusion does
/// not concern them.
const FRAMELESS: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
];

/// The name of a call renamed for its frame's exclusion.
fn excluding_name(f: &Function) -> Option<&str> {
    let name = f.name.0.last().and_then(|p| p.as_ident())?;
    name.value
        .starts_with(EXCLUDE_PREFIX)
        .then_some(name.value.as_str())
}

/// The name a result column computed by the function `name` gets: a
/// function renamed for its frame's exclusion (or for a VARIADIC array,
/// or an ordered-set aggregate) is named as the one it was.
pub fn unmarked(name: &str) -> &str {
    if let Some(function) = name
        .strip_prefix(crate::pgformat::VARIADIC_PREFIX)
        .or_else(|| name.strip_prefix(crate::ordered::PREFIX))
    {
        return function;
    }
    match name.strip_prefix(EXCLUDE_PREFIX) {
        Some(rest) => rest.split_once("__").map_or(name, |(_, f)| f),
        None => name,
    }
}

/// The positions of the tokens that are not whitespace.
pub fn solid(tokens: &[TokenWithSpan]) -> Vec<usize> {
    (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect()
}

/// The solid position of the parenthesis still open at solid position
/// `k` (the innermost one that encloses it), going back.
pub fn open_paren_before(tokens: &[TokenWithSpan], solid: &[usize], k: usize) -> Option<usize> {
    let mut depth = 0i32;
    for p in (0..k).rev() {
        match tokens[solid[p]].token {
            Token::RParen => depth += 1,
            Token::LParen if depth == 0 => return Some(p),
            Token::LParen => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `tokens` without those `drop` marks.
pub fn without(tokens: Vec<TokenWithSpan>, drop: &[bool]) -> Vec<TokenWithSpan> {
    tokens
        .into_iter()
        .zip(drop)
        .filter(|(_, d)| !**d)
        .map(|(t, _)| t)
        .collect()
}

/// The tokens of `sql`, with `'…'::type PRECEDING` read as
/// `'…' PRECEDING`, a frame's `EXCLUDE …` taken out, its function
/// renamed for it (see the module docs), and `COLLATE "C"` dropped.
pub fn frame_tokens(sql: &str) -> Result<Vec<TokenWithSpan>, TokenizerError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location()?;
    let solid = solid(&tokens);
    let is_word = |i: usize, k: &[Keyword]| matches!(&tokens[i].token, Token::Word(w) if k.contains(&w.keyword));
    let mut drop = vec![false; tokens.len()];
    for w in solid.windows(4) {
        if matches!(tokens[w[0]].token, Token::SingleQuotedString(_))
            && tokens[w[1]].token == Token::DoubleColon
            && matches!(tokens[w[2]].token, Token::Word(_))
            && is_word(w[3], &[Keyword::PRECEDING, Keyword::FOLLOWING])
        {
            drop[w[1]] = true;
            drop[w[2]] = true;
        }
    }
    // `COLLATE "C"` (or "POSIX", or "default") asks for what eon's text
    // comparison is anyway — byte order — so it is read as nothing.
    for w in solid.windows(2) {
        if is_word(w[0], &[Keyword::COLLATE])
            && matches!(&tokens[w[1]].token, Token::Word(c)
                if ["c", "posix", "default"].contains(&c.value.to_ascii_lowercase().as_str()))
        {
            drop[w[0]] = true;
            drop[w[1]] = true;
        }
    }
    let word = |k: usize, text: &str| {
        solid.get(k).is_some_and(|&i| {
            matches!(&tokens[i].token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(text))
        })
    };
    let mut renames = vec![];
    for k in 0..solid.len() {
        if !word(k, "exclude") {
            continue;
        }
        let (mode, len) = if word(k + 1, "current") && word(k + 2, "row") {
            (Some("current"), 3)
        } else if word(k + 1, "group") {
            (Some("group"), 2)
        } else if word(k + 1, "ties") {
            (Some("ties"), 2)
        } else if word(k + 1, "no") && word(k + 2, "others") {
            (None, 3)
        } else {
            continue;
        };
        if solid
            .get(k + len)
            .is_none_or(|&i| tokens[i].token != Token::RParen)
        {
            continue;
        }
        let Some(function) = framed_function(&tokens, &solid, k) else {
            continue;
        };
        for &i in &solid[k..k + len] {
            drop[i] = true;
        }
        let Token::Word(w) = &tokens[function].token else {
            continue;
        };
        let name = match w.quote_style {
            Some(_) => w.value.clone(),
            None => w.value.to_ascii_lowercase(),
        };
        if let Some(mode) = mode
            && !FRAMELESS.contains(&name.as_str())
        {
            renames.push((function, format!("{EXCLUDE_PREFIX}{mode}__{name}")));
        }
    }
    let mut tokens = tokens;
    for (i, name) in renames {
        tokens[i].token = Token::make_word(&name, None);
    }
    Ok(without(tokens, &drop))
}

/// The token index of the name of the function whose window spec holds
/// the solid token `k`: `name(…) [FILTER (…)] OVER (… k …)`.
fn framed_function(tokens: &[TokenWithSpan], solid: &[usize], k: usize) -> Option<usize> {
    // The solid position of the parenthesis matching the one closed (or
    // left open) just after `from`, going back.
    let open_before = |from: usize| open_paren_before(tokens, solid, from);
    let is_word = |p: usize, text: &str| matches!(&tokens[solid[p]].token, Token::Word(w) if w.value.eq_ignore_ascii_case(text));
    let spec = open_before(k)?;
    if spec < 2 || !is_word(spec - 1, "over") {
        return None;
    }
    let mut call_end = spec - 2;
    loop {
        if tokens[solid[call_end]].token != Token::RParen {
            return None;
        }
        let open = open_before(call_end)?;
        let before = open.checked_sub(1)?;
        if is_word(before, "filter") && before >= 1 {
            call_end = before - 1;
            continue;
        }
        return matches!(tokens[solid[before]].token, Token::Word(_)).then_some(solid[before]);
    }
}

/// Frame offsets as constants DataFusion casts to the ORDER BY column's
/// type (see the module docs).
pub fn rewrite(statements: &mut [Statement]) {
    for s in statements {
        let _ = s.visit(&mut Frames);
    }
}

struct Frames;

impl VisitorMut for Frames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        named_windows(&mut query.body);
        if let SetExpr::Select(select) = query.body.as_mut() {
            based_on_named(select);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e
            && let Some(WindowType::WindowSpec(spec)) = &mut f.over
            && let Some(frame) = &mut spec.window_frame
        {
            frame_offsets(frame);
        }
        // `count(*)` renamed for an exclusion counts rows as count(1).
        if let Expr::Function(f) = e
            && excluding_name(f).is_some()
            && let FunctionArguments::List(list) = &mut f.args
        {
            for a in &mut list.args {
                if let FunctionArg::Unnamed(arg @ FunctionArgExpr::Wildcard) = a {
                    *arg = FunctionArgExpr::Expr(Expr::value(Value::Number("1".into(), false)));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// `OVER (w ROWS …)`: a window spec that names a window of the query's
/// WINDOW clause takes that window's PARTITION BY and ORDER BY, as in
/// PostgreSQL (sqlparser keeps the name, which DataFusion ignores).
fn based_on_named(select: &mut Select) {
    let named: Vec<(String, WindowSpec)> = select
        .named_window
        .iter()
        .filter_map(|w| match &w.1 {
            NamedWindowExpr::WindowSpec(spec) => Some((w.0.value.clone(), spec.clone())),
            NamedWindowExpr::NamedWindow(_) => None,
        })
        .collect();
    if named.is_empty() {
        return;
    }
    let _ = visit_expressions_mut(&mut select.projection, |e: &mut Expr| {
        if let Expr::Function(f) = e
            && let Some(WindowType::WindowSpec(spec)) = &mut f.over
            && let Some(name) = &spec.window_name
            && let Some((_, base)) = named.iter().find(|(n, _)| *n == name.value)
        {
            spec.window_name = None;
            spec.partition_by = base.partition_by.clone();
            if spec.order_by.is_empty() {
                spec.order_by = base.order_by.clone();
            }
            if spec.window_frame.is_none() {
                spec.window_frame = base.window_frame.clone();
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

fn named_windows(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for w in &mut select.named_window {
                if let NamedWindowExpr::WindowSpec(spec) = &mut w.1
                    && let Some(frame) = &mut spec.window_frame
                {
                    frame_offsets(frame);
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            named_windows(left);
            named_windows(right);
        }
        _ => {}
    }
}

fn frame_offsets(frame: &mut WindowFrame) {
    for bound in std::iter::once(&mut frame.start_bound).chain(frame.end_bound.as_mut()) {
        if let WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e)) = bound {
            plain_constant(e);
        }
    }
}

fn plain_constant(e: &mut Expr) {
    let text = match e {
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Value(ValueWithSpan {
                value: Value::Number(n, false) | Value::SingleQuotedString(n),
                ..
            }) => n.clone(),
            _ => return,
        },
        Expr::Interval(iv)
            if iv.leading_field.is_none()
                && iv.last_field.is_none()
                && iv.fractional_seconds_precision.is_none() =>
        {
            match iv.value.as_ref() {
                Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(s),
                    ..
                }) if s.trim().parse::<f64>().is_ok() => s.clone(),
                Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(s),
                    ..
                }) => match crate::intervals::parse_interval(s) {
                    Ok(iv) => iv.to_arrow_text(),
                    Err(_) => s.clone(),
                },
                _ => return,
            }
        }
        _ => return,
    };
    *e = Expr::Value(Value::Number(text, false).into());
}

/// Refuse a frame offset PostgreSQL refuses when the query runs: a
/// negative one, or NaN (22013). After [`rewrite`], each offset is a plain
/// constant (an interval as its months, days and microseconds).
pub fn check_offsets(statement: &Statement) -> eon_common::Result<()> {
    struct Offsets(Option<eon_common::Error>);
    impl Offsets {
        fn frame(&mut self, frame: &WindowFrame) -> ControlFlow<()> {
            let bounds = std::iter::once((&frame.start_bound, "starting"))
                .chain(frame.end_bound.as_ref().map(|b| (b, "ending")));
            for (bound, which) in bounds {
                let (WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e))) =
                    bound
                else {
                    continue;
                };
                if !invalid_offset(e) {
                    continue;
                }
                self.0 = Some(eon_common::Error::user(
                    eon_common::error::sqlstate::INVALID_PRECEDING_OR_FOLLOWING_SIZE,
                    if frame.units == WindowFrameUnits::Range {
                        "invalid preceding or following size in window function".to_string()
                    } else {
                        format!("frame {which} offset must not be negative")
                    },
                ));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    impl Visitor for Offsets {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_ref() {
                for w in &select.named_window {
                    if let NamedWindowExpr::WindowSpec(spec) = &w.1
                        && let Some(frame) = &spec.window_frame
                    {
                        self.frame(frame)?;
                    }
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e
                && let Some(WindowType::WindowSpec(spec)) = &f.over
                && let Some(frame) = &spec.window_frame
            {
                self.frame(frame)?;
            }
            ControlFlow::Continue(())
        }
    }
    let mut offsets = Offsets(None);
    let _ = statement.visit(&mut offsets);
    offsets.0.map_or(Ok(()), Err)
}

/// A negative or NaN frame offset (as [`plain_constant`] leaves it).
fn invalid_offset(e: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::UnaryOperator;
    let text = match e {
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => return matches!(expr.as_ref(), Expr::Value(_)),
        Expr::Value(ValueWithSpan {
            value: Value::Number(n, _) | Value::SingleQuotedString(n),
            ..
        }) => n.trim(),
        _ => return false,
    };
    if text.eq_ignore_ascii_case("nan") || text.starts_with('-') {
        return true;
    }
    // "M months D days U microseconds", negative as PostgreSQL compares
    // intervals (a month as 30 days).
    let parts: Vec<f64> = text
        .split_whitespace()
        .step_by(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    match parts[..] {
        [months, days, micros] if text.ends_with("microseconds") => {
            (months * 30.0 + days) * 86_400e6 + micros < 0.0
        }
        _ => false,
    }
}

/// Which rows of the frame an exclusion leaves out (besides none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Exclude {
    CurrentRow,
    Group,
    Ties,
}

/// What runs over the rows that remain.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Inner {
    FirstValue,
    LastValue,
    NthValue,
    Aggregate(Arc<AggregateUDF>),
}

/// A window function over its frame less the rows its exclusion leaves
/// out (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Excluding {
    name: String,
    exclude: Exclude,
    inner: Inner,
    signature: Signature,
}

/// The window functions the functions renamed by [`frame_tokens`] in
/// `statement` need, made from `state`'s aggregates.
pub fn exclusions(
    statement: &Statement,
    state: &SessionState,
) -> eon_common::Result<Vec<WindowUDF>> {
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e
                && let Some(name) = excluding_name(f)
                && !self.0.iter().any(|n| n == name)
            {
                self.0.push(name.to_string());
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(vec![]);
    let _ = statement.visit(&mut names);
    names
        .0
        .into_iter()
        .map(|name| {
            let rest = &name[EXCLUDE_PREFIX.len()..];
            let (mode, function) = rest.split_once("__").unwrap_or((rest, ""));
            let exclude = match mode {
                "current" => Exclude::CurrentRow,
                "group" => Exclude::Group,
                _ => Exclude::Ties,
            };
            let (inner, signature) = match function {
                "first_value" => (Inner::FirstValue, Signature::any(1, Volatility::Immutable)),
                "last_value" => (Inner::LastValue, Signature::any(1, Volatility::Immutable)),
                "nth_value" => (Inner::NthValue, Signature::any(2, Volatility::Immutable)),
                _ => match state.aggregate_functions().get(function) {
                    Some(f) => (Inner::Aggregate(f.clone()), f.signature().clone()),
                    None => {
                        return Err(eon_common::Error::user(
                            eon_common::error::sqlstate::UNDEFINED_FUNCTION,
                            format!("function {function} does not exist"),
                        ));
                    }
                },
            };
            Ok(WindowUDF::new_from_impl(Excluding {
                name,
                exclude,
                inner,
                signature,
            }))
        })
        .collect()
}

impl WindowUDFImpl for Excluding {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        match &self.inner {
            Inner::Aggregate(f) => f.coerce_types(arg_types),
            _ => Ok(arg_types.to_vec()),
        }
    }

    fn field(&self, args: WindowUDFFieldArgs) -> DfResult<FieldRef> {
        let inputs = args.input_fields();
        let data_type = match &self.inner {
            Inner::Aggregate(f) => f.return_field(inputs)?.data_type().clone(),
            _ => match inputs.first() {
                Some(f) => f.data_type().clone(),
                None => return plan_err!("{} needs an argument", unmarked(&self.name)),
            },
        };
        Ok(Arc::new(Field::new(args.name(), data_type, true)))
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        let fields = args.input_fields().to_vec();
        let schema = Schema::new(fields.clone());
        let exprs: Vec<Arc<dyn PhysicalExpr>> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let over = match &self.inner {
            Inner::FirstValue => Over::First,
            Inner::LastValue => Over::Last,
            Inner::NthValue => Over::Nth,
            Inner::Aggregate(f) => Over::Aggregate {
                return_field: f.return_field(&fields)?,
                function: f.clone(),
            },
        };
        Ok(Box::new(ExcludingEvaluator {
            exclude: self.exclude,
            over,
            schema,
            exprs,
            fields,
            row: 0,
            peer_groups: vec![],
        }))
    }
}

/// What an evaluator computes over the rows kept: one of them, or the
/// aggregate (with its result's field).
#[derive(Debug)]
enum Over {
    First,
    Last,
    Nth,
    Aggregate {
        function: Arc<AggregateUDF>,
        return_field: FieldRef,
    },
}

/// Evaluates one partition, row by row in order (DataFusion evaluates a
/// frame-reading window function so; `row` counts them).
#[derive(Debug)]
struct ExcludingEvaluator {
    exclude: Exclude,
    over: Over,
    schema: Schema,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    fields: Vec<FieldRef>,
    row: usize,
    /// Each row's peer group: rows with equal ORDER BY values (sorted, so
    /// a group is a run of rows); one group when there is no ORDER BY.
    peer_groups: Vec<usize>,
}

impl ExcludingEvaluator {
    fn group_peers(&mut self, order_by: &[ArrayRef]) -> DfResult<()> {
        let rows = order_by.first().map_or(0, |a| a.len());
        let mut group = 0;
        self.peer_groups = Vec::with_capacity(rows);
        for row in 0..rows {
            if row > 0 {
                for a in order_by {
                    if ScalarValue::try_from_array(a, row)?
                        != ScalarValue::try_from_array(a, row - 1)?
                    {
                        group += 1;
                        break;
                    }
                }
            }
            self.peer_groups.push(group);
        }
        Ok(())
    }
}

impl PartitionEvaluator for ExcludingEvaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> DfResult<ScalarValue> {
        let args = &values[..self.fields.len()];
        let order_by = &values[self.fields.len()..];
        let current = self.row;
        self.row += 1;
        if current == 0 && !order_by.is_empty() {
            self.group_peers(order_by)?;
        }
        let group = |row: usize| self.peer_groups.get(row).copied().unwrap_or(0);
        let kept = range.clone().filter(|&r| match self.exclude {
            Exclude::CurrentRow => r != current,
            Exclude::Group => group(r) != group(current),
            Exclude::Ties => r == current || group(r) != group(current),
        });
        let value_at = |row: Option<usize>| match row {
            Some(r) => ScalarValue::try_from_array(&args[0], r),
            None => ScalarValue::try_from(args[0].data_type()),
        };
        match &self.over {
            Over::First => value_at(kept.into_iter().next()),
            Over::Last => value_at(kept.last()),
            Over::Nth => {
                let n = match ScalarValue::try_from_array(&args[1], current)? {
                    ScalarValue::Int64(Some(n)) => n,
                    other => match other.cast_to(&DataType::Int64)? {
                        ScalarValue::Int64(Some(n)) => n,
                        _ => return value_at(None),
                    },
                };
                if n <= 0 {
                    return Err(crate::pgformat::fail(
                        eon_common::error::sqlstate::INVALID_PARAMETER_VALUE,
                        "argument of nth_value must be greater than zero",
                    ));
                }
                value_at(kept.into_iter().nth(n as usize - 1))
            }
            Over::Aggregate {
                function: f,
                return_field,
            } => {
                let indices = UInt32Array::from_iter_values(kept.map(|r| r as u32));
                let columns = args
                    .iter()
                    .map(|a| take(a.as_ref(), &indices, None))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut accumulator = f.accumulator(AccumulatorArgs {
                    return_field: return_field.clone(),
                    schema: &self.schema,
                    ignore_nulls: false,
                    order_bys: &[],
                    is_reversed: false,
                    name: f.name(),
                    is_distinct: false,
                    exprs: &self.exprs,
                    expr_fields: &self.fields,
                })?;
                accumulator.update_batch(&columns)?;
                accumulator.evaluate()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respelled(sql: &str) -> String {
        frame_tokens(sql)
            .unwrap()
            .iter()
            .map(|t| t.token.to_string())
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn exclusion_renames_the_function_it_belongs_to() {
        assert_eq!(
            respelled(
                "SELECT Sum(x) OVER (ORDER BY y ROWS UNBOUNDED PRECEDING EXCLUDE TIES) FROM t"
            ),
            "SELECT eon_exclude_ties__sum(x) OVER (ORDER BY y ROWS UNBOUNDED PRECEDING ) FROM t"
        );
        assert_eq!(
            respelled(
                "SELECT count(*) FILTER (WHERE x > 0) OVER (w ROWS CURRENT ROW exclude current row)"
            ),
            "SELECT eon_exclude_current__count(*) FILTER (WHERE x > 0) OVER (w ROWS CURRENT ROW )"
        );
        // No others is the default; lag does not read the frame.
        assert_eq!(
            respelled(
                "SELECT max(x) OVER (ROWS CURRENT ROW EXCLUDE NO OTHERS), lag(x) OVER (ROWS CURRENT ROW EXCLUDE GROUP)"
            ),
            "SELECT max(x) OVER (ROWS CURRENT ROW ), lag(x) OVER (ROWS CURRENT ROW )"
        );
        assert_eq!(unmarked("eon_exclude_group__nth_value"), "nth_value");
        assert_eq!(unmarked("sum"), "sum");
    }
}
