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
//!   a number or not an interval (`'1.5'`, `'inf'` for a float column).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, NamedWindowExpr, Query, SetExpr, Statement, Value, ValueWithSpan, VisitMut, VisitorMut,
    WindowFrame, WindowFrameBound, WindowType,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, TokenizerError};

/// The tokens of `sql`, with `'…'::type PRECEDING` read as
/// `'…' PRECEDING` (see the module docs).
pub fn frame_tokens(sql: &str) -> Result<Vec<TokenWithSpan>, TokenizerError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location()?;
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
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
    Ok(tokens
        .into_iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(t, _)| t)
        .collect())
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
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e
            && let Some(WindowType::WindowSpec(spec)) = &mut f.over
            && let Some(frame) = &mut spec.window_frame
        {
            frame_offsets(frame);
        }
        ControlFlow::Continue(())
    }
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
