//! Cursors: `DECLARE … CURSOR`, `FETCH`, `MOVE`, `CLOSE`.
//!
//! A cursor is a query whose rows the client takes a few at a time
//! (psycopg2's named cursors, SQLAlchemy's `stream_results`, psql's
//! `FETCH_COUNT`). eon keeps the query's row stream in the session and
//! reads from it only as far as FETCH needs, so a cursor over a large
//! result holds about one batch, not the result:
//!
//! ```text
//!   DECLARE c CURSOR FOR SELECT …   → the stream, at the statement's snapshot
//!   FETCH 10 FROM c                 → rows 1‥10   (the position is now 10)
//!   MOVE FORWARD 5 IN c             → skips 11‥15
//!   FETCH ALL FROM c                → the rest
//!   CLOSE c / COMMIT / ROLLBACK     → gone
//! ```
//!
//! Rows are numbered from 1; the position is 0 before the first row and
//! one past the last after it, as in PostgreSQL, and FETCH/MOVE take every
//! PostgreSQL direction (NEXT, PRIOR, FIRST, LAST, ABSOLUTE n, RELATIVE n,
//! n, ALL, FORWARD [n|ALL], BACKWARD [n|ALL]). A cursor goes backward only
//! when declared `SCROLL` (then it keeps the rows it has read); without,
//! the rows behind the position are dropped and a backward move is
//! 55000 `cursor can only scan forward`, PostgreSQL's answer for NO SCROLL.
//!
//! Without `WITH HOLD` a cursor exists only in a transaction block and
//! ends with it (25P01 outside one). `WITH HOLD` cursors outlive their
//! transaction: PostgreSQL materializes them at COMMIT; eon reads their rows
//! when they are declared (the same rows: a cursor reads the snapshot of
//! its DECLARE), and drops them when the block that declared them rolls
//! back.

use std::collections::{HashMap, VecDeque};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, DeclareType, FetchDirection, FetchPosition, Ident, ObjectName, Statement,
    Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use eon_common::{Error, Result};
use futures::StreamExt;

use crate::errors::from_df;
use crate::session::{Output, Session};

/// `FETCH` and `MOVE` share sqlparser's `Statement::Fetch`; a MOVE has this
/// as its `INTO` target (which PostgreSQL's FETCH does not have).
const MOVE: &str = "eon.move";

const INVALID_CURSOR_NAME: &str = "34000";
const DUPLICATE_CURSOR: &str = "42P03";
const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// True when the parser is at `FETCH` or `MOVE` (sqlparser's own FETCH
/// wants a direction and FROM; PostgreSQL's has neither necessarily).
pub fn at_fetch(p: &Parser) -> Option<bool> {
    match &p.peek_token().token {
        Token::Word(w) if w.keyword == Keyword::FETCH => Some(false),
        Token::Word(w) if w.value.eq_ignore_ascii_case("move") && w.quote_style.is_none() => {
            Some(true)
        }
        _ => None,
    }
}

/// `FETCH [direction] [FROM | IN] cursor` (or MOVE), the keyword not yet
/// consumed.
pub fn parse_fetch(p: &mut Parser, is_move: bool) -> std::result::Result<Statement, ParserError> {
    use FetchDirection as D;
    p.next_token();
    fn count(p: &mut Parser) -> std::result::Result<ValueWithSpan, ParserError> {
        let negative = p.consume_token(&Token::Minus);
        if !negative {
            let _ = p.consume_token(&Token::Plus);
        }
        let v = p.parse_number_value()?;
        Ok(match v.value {
            Value::Number(n, long) if negative => Value::Number(format!("-{n}"), long).into(),
            other => other.into(),
        })
    }
    let at_count = |p: &Parser| {
        matches!(
            p.peek_token().token,
            Token::Number(..) | Token::Minus | Token::Plus
        )
    };
    let direction = if p.parse_keyword(Keyword::NEXT) {
        D::Next
    } else if p.parse_keyword(Keyword::PRIOR) {
        D::Prior
    } else if p.parse_keyword(Keyword::FIRST) {
        D::First
    } else if p.parse_keyword(Keyword::LAST) {
        D::Last
    } else if p.parse_keyword(Keyword::ABSOLUTE) {
        D::Absolute { limit: count(p)? }
    } else if p.parse_keyword(Keyword::RELATIVE) {
        D::Relative { limit: count(p)? }
    } else if p.parse_keyword(Keyword::FORWARD) {
        if p.parse_keyword(Keyword::ALL) {
            D::ForwardAll
        } else {
            D::Forward {
                limit: if at_count(p) { Some(count(p)?) } else { None },
            }
        }
    } else if p.parse_keyword(Keyword::BACKWARD) {
        if p.parse_keyword(Keyword::ALL) {
            D::BackwardAll
        } else {
            D::Backward {
                limit: if at_count(p) { Some(count(p)?) } else { None },
            }
        }
    } else if p.parse_keyword(Keyword::ALL) {
        D::All
    } else if at_count(p) {
        D::Count { limit: count(p)? }
    } else {
        D::Next
    };
    let _ = p.parse_one_of_keywords(&[Keyword::FROM, Keyword::IN]);
    let name = p.parse_identifier()?;
    Ok(Statement::Fetch {
        name,
        direction,
        position: FetchPosition::From,
        into: is_move.then(|| ObjectName::from(vec![Ident::new(MOVE)])),
    })
}

/// A cursor's movement, in PostgreSQL's terms.
#[derive(Debug, Clone, Copy)]
enum Motion {
    /// The next n rows (`u64::MAX`: all); 0 is the current row.
    Forward(u64),
    /// The previous n rows, nearest first.
    Backward(u64),
    /// Row n (negative: from the end; 0: before the first).
    Absolute(i64),
    /// Row position + n.
    Relative(i64),
}

fn motion(d: &FetchDirection) -> Result<Motion> {
    use FetchDirection as D;
    let number = |v: &ValueWithSpan| -> Result<i64> {
        match &v.value {
            Value::Number(n, _) => n
                .parse::<i64>()
                .map_err(|_| Error::syntax(format!("invalid row count: {n}"))),
            other => Err(Error::syntax(format!("invalid row count: {other}"))),
        }
    };
    let signed = |n: i64| {
        if n >= 0 {
            Motion::Forward(n as u64)
        } else {
            Motion::Backward(n.unsigned_abs())
        }
    };
    Ok(match d {
        D::Next | D::Forward { limit: None } => Motion::Forward(1),
        D::Prior | D::Backward { limit: None } => Motion::Backward(1),
        D::First => Motion::Absolute(1),
        D::Last => Motion::Absolute(-1),
        D::Absolute { limit } => Motion::Absolute(number(limit)?),
        D::Relative { limit } => Motion::Relative(number(limit)?),
        D::All | D::ForwardAll => Motion::Forward(u64::MAX),
        D::BackwardAll => Motion::Backward(u64::MAX),
        D::Count { limit } | D::Forward { limit: Some(limit) } => signed(number(limit)?),
        D::Backward { limit: Some(limit) } => match signed(number(limit)?) {
            Motion::Forward(n) => Motion::Backward(n),
            Motion::Backward(n) => Motion::Forward(n),
            other => other,
        },
    })
}

/// An open cursor (see the module docs).
pub struct Cursor {
    schema: SchemaRef,
    /// The rows not read yet; None once they all were.
    stream: Option<SendableRecordBatchStream>,
    /// Rows read and kept: the first is row `base + 1`.
    kept: VecDeque<RecordBatch>,
    base: u64,
    /// Rows read from the stream so far.
    read: u64,
    /// 0 before the first row, `total + 1` after the last.
    pos: u64,
    scroll: bool,
    /// The transaction block it belongs to (None: held past its block).
    block: Option<u64>,
    hold: bool,
}

impl Cursor {
    /// Read until row `n` is in (or the rows run out).
    async fn read_to(&mut self, n: u64) -> Result<()> {
        while self.read < n {
            let Some(stream) = &mut self.stream else {
                return Ok(());
            };
            match stream.next().await {
                Some(batch) => {
                    let batch = batch.map_err(from_df)?;
                    self.read += batch.num_rows() as u64;
                    if batch.num_rows() > 0 {
                        self.kept.push_back(batch);
                    }
                }
                None => self.stream = None,
            }
        }
        Ok(())
    }

    /// The number of rows, reading them all.
    async fn total(&mut self) -> Result<u64> {
        self.read_to(u64::MAX).await?;
        Ok(self.read)
    }

    /// Rows `from..=to` (1-based, `from <= to`), reversed if asked.
    fn rows(&self, from: u64, to: u64, reversed: bool) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        let mut start = self.base + 1;
        for b in &self.kept {
            let end = start + b.num_rows() as u64 - 1;
            if end >= from && start <= to {
                let lo = from.max(start) - start;
                let hi = to.min(end) - start;
                parts.push(b.slice(lo as usize, (hi - lo + 1) as usize));
            }
            start = end + 1;
        }
        let all =
            concat_batches(&self.schema, &parts).map_err(|e| Error::internal(e.to_string()))?;
        if !reversed || all.num_rows() < 2 {
            return Ok(all);
        }
        let order = UInt32Array::from_iter_values((0..all.num_rows() as u32).rev());
        take_record_batch(&all, &order).map_err(|e| Error::internal(e.to_string()))
    }

    /// Move as asked: the rows passed over (in the order FETCH returns
    /// them), and the new position.
    async fn go(&mut self, m: Motion) -> Result<RecordBatch> {
        let backward = match m {
            Motion::Backward(n) => n > 0,
            Motion::Absolute(n) => n <= 0 || (n as u64) < self.pos,
            Motion::Relative(n) => n < 0,
            Motion::Forward(_) => false,
        };
        if backward && !self.scroll {
            return Err(Error::user(
                OBJECT_NOT_IN_PREREQUISITE_STATE,
                "cursor can only scan forward",
            )
            .with_hint("Declare it with SCROLL option to enable backward scan."));
        }
        let schema = self.schema.clone();
        let empty = || RecordBatch::new_empty(schema.clone());
        let rows = match m {
            Motion::Forward(0) | Motion::Relative(0) => {
                self.read_to(self.pos).await?;
                if self.pos >= 1 && self.pos <= self.read {
                    self.rows(self.pos, self.pos, false)?
                } else {
                    empty()
                }
            }
            Motion::Forward(n) => {
                let want = self.pos.saturating_add(n);
                self.read_to(want).await?;
                let last = want.min(self.read);
                let rows = if last > self.pos {
                    self.rows(self.pos + 1, last, false)?
                } else {
                    empty()
                };
                self.pos = if last < want { self.read + 1 } else { want };
                rows
            }
            Motion::Backward(n) => {
                let total = self.total().await?;
                let from_pos = self.pos.min(total + 1);
                let first = from_pos.saturating_sub(n).max(1);
                let rows = if from_pos > 1 {
                    self.rows(first, from_pos - 1, true)?
                } else {
                    empty()
                };
                self.pos = if from_pos <= n { 0 } else { from_pos - n };
                rows
            }
            Motion::Absolute(n) | Motion::Relative(n) => {
                let target = match m {
                    Motion::Absolute(n) if n >= 0 => n,
                    Motion::Absolute(n) => self.total().await? as i64 + 1 + n,
                    _ => self.pos as i64 + n,
                };
                if target >= 1 {
                    self.read_to(target as u64).await?;
                }
                if target < 1 {
                    self.pos = 0;
                    empty()
                } else if target as u64 > self.read {
                    self.pos = self.read + 1;
                    empty()
                } else {
                    self.pos = target as u64;
                    self.rows(self.pos, self.pos, false)?
                }
            }
        };
        if !self.scroll {
            // Rows behind the position are never read again.
            while let Some(b) = self.kept.front() {
                let end = self.base + b.num_rows() as u64;
                if end >= self.pos {
                    break;
                }
                self.base = end;
                self.kept.pop_front();
            }
        }
        Ok(rows)
    }
}

/// The cursors of a session.
#[derive(Default)]
pub struct Cursors {
    open: std::sync::Mutex<HashMap<String, Cursor>>,
}

impl Cursors {
    /// Forget the cursors of blocks that ended, as of block `current`.
    fn sweep(&self, current: Option<u64>) {
        self.open
            .lock()
            .unwrap()
            .retain(|_, c| c.block.is_none() || c.block == current);
    }

    /// The block `id` committed: its WITH HOLD cursors outlive it.
    pub fn committed(&self, id: u64) {
        for c in self.open.lock().unwrap().values_mut() {
            if c.hold && c.block == Some(id) {
                c.block = None;
            }
        }
    }

    fn take(&self, session: &Session, name: &Ident) -> Result<Cursor> {
        self.sweep(session.block_id());
        self.open
            .lock()
            .unwrap()
            .remove(&crate::dml::ident(name))
            .ok_or_else(|| missing(name))
    }

    /// The row type FETCH from cursor `name` returns.
    pub fn schema(&self, session: &Session, name: &Ident) -> Result<SchemaRef> {
        self.sweep(session.block_id());
        self.open
            .lock()
            .unwrap()
            .get(&crate::dml::ident(name))
            .map(|c| c.schema.clone())
            .ok_or_else(|| missing(name))
    }
}

fn missing(name: &Ident) -> Error {
    Error::user(
        INVALID_CURSOR_NAME,
        format!("cursor \"{}\" does not exist", crate::dml::ident(name)),
    )
}

/// True for `FETCH`/`MOVE`'s statement when it is a MOVE.
pub fn is_move(into: &Option<ObjectName>) -> bool {
    into.as_ref().is_some_and(|o| o.to_string() == MOVE)
}

/// `DECLARE name [BINARY] [[NO] SCROLL] CURSOR [WITH[OUT] HOLD] FOR query`.
pub async fn declare(
    session: &Session,
    stmts: &[Declare],
    params: &[ScalarValue],
) -> Result<Output> {
    let [d] = stmts else {
        return Err(Error::syntax("DECLARE declares one cursor"));
    };
    let (Some(DeclareType::Cursor), Some(query), [name]) =
        (&d.declare_type, &d.for_query, d.names.as_slice())
    else {
        return Err(Error::unsupported(
            "only DECLARE … CURSOR FOR a query is supported",
        ));
    };
    if d.binary == Some(true) {
        return Err(Error::unsupported("binary cursors are not supported"));
    }
    let hold = d.hold == Some(true);
    let block = session.block_id();
    if block.is_none() && !hold {
        return Err(Error::user(
            NO_ACTIVE_SQL_TRANSACTION,
            "DECLARE CURSOR can only be used in transaction blocks",
        ));
    }
    let key = crate::dml::ident(name);
    let cursors = session.cursors();
    cursors.sweep(block);
    if cursors.open.lock().unwrap().contains_key(&key) {
        return Err(Error::user(
            DUPLICATE_CURSOR,
            format!("cursor \"{key}\" already exists"),
        ));
    }
    let Output::Rows { schema, stream, .. } = session
        .query(Statement::Query(query.clone()), params)
        .await?
    else {
        return Err(Error::internal("a cursor's query gave no rows"));
    };
    let mut cursor = Cursor {
        schema,
        stream: Some(stream),
        kept: VecDeque::new(),
        base: 0,
        read: 0,
        pos: 0,
        scroll: d.scroll == Some(true),
        block,
        hold,
    };
    if hold {
        // Held rows are read now, at the DECLARE's snapshot (see the module
        // docs); a held cursor can go back over them.
        cursor.total().await?;
        cursor.scroll = true;
    }
    cursors.open.lock().unwrap().insert(key, cursor);
    Ok(Output::Command("DECLARE CURSOR".into()))
}

/// `FETCH` (rows) or `MOVE` (their count).
pub async fn fetch(
    session: &Session,
    name: &Ident,
    direction: &FetchDirection,
    into: &Option<ObjectName>,
) -> Result<Output> {
    let m = motion(direction)?;
    let cursors = session.cursors();
    let mut cursor = cursors.take(session, name)?;
    // An error leaves the cursor closed (and a block aborted), as
    // PostgreSQL's failed portal.
    let rows = cursor.go(m).await?;
    let schema = cursor.schema.clone();
    cursors
        .open
        .lock()
        .unwrap()
        .insert(crate::dml::ident(name), cursor);
    if is_move(into) {
        return Ok(Output::Command(format!("MOVE {}", rows.num_rows())));
    }
    Output::rows(vec![rows], schema, "FETCH")
}

/// `CLOSE name` or `CLOSE ALL`.
pub fn close(session: &Session, cursor: &CloseCursor) -> Result<Output> {
    let cursors = session.cursors();
    match cursor {
        CloseCursor::All => cursors.open.lock().unwrap().clear(),
        CloseCursor::Specific { name } => {
            cursors.take(session, name)?;
        }
    }
    Ok(Output::Command("CLOSE CURSOR".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        crate::sequences::parse_statements(sql).unwrap().remove(0)
    }

    #[test]
    fn fetch_and_move_read_every_postgresql_direction() {
        for (sql, want, moving) in [
            ("FETCH c", "Forward(1)", false),
            ("FETCH FROM c", "Forward(1)", false),
            ("FETCH 10 FROM c", "Forward(10)", false),
            ("FETCH -2 IN c", "Backward(2)", false),
            ("FETCH FORWARD c", "Forward(1)", false),
            ("FETCH BACKWARD 3 FROM c", "Backward(3)", false),
            ("FETCH ABSOLUTE -1 FROM c", "Absolute(-1)", false),
            ("FETCH ALL IN c", "Forward(18446744073709551615)", false),
            (
                "MOVE FORWARD ALL IN c",
                "Forward(18446744073709551615)",
                true,
            ),
            ("move last in c", "Absolute(-1)", true),
        ] {
            let Statement::Fetch {
                name,
                direction,
                into,
                ..
            } = parse(sql)
            else {
                panic!("{sql} is not a FETCH");
            };
            assert_eq!(name.value, "c", "{sql}");
            assert_eq!(is_move(&into), moving, "{sql}");
            assert_eq!(format!("{:?}", motion(&direction).unwrap()), want, "{sql}");
        }
    }

    #[test]
    fn a_cursor_moves_as_postgresql_counts_positions() {
        use datafusion::arrow::array::Int32Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::physical_plan::memory::MemoryStream;
        let schema =
            std::sync::Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let batches: Vec<RecordBatch> = [1..4, 4..6, 6..11]
            .into_iter()
            .map(|r| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![std::sync::Arc::new(Int32Array::from_iter_values(r))],
                )
                .unwrap()
            })
            .collect();
        let stream = MemoryStream::try_new(batches, schema.clone(), None).unwrap();
        let mut c = Cursor {
            schema,
            stream: Some(Box::pin(stream)),
            kept: VecDeque::new(),
            base: 0,
            read: 0,
            pos: 0,
            scroll: true,
            block: Some(1),
            hold: false,
        };
        let values = |b: RecordBatch| -> Vec<i32> {
            b.column(0)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(values(c.go(Motion::Forward(2)).await.unwrap()), [1, 2]);
            assert_eq!(values(c.go(Motion::Forward(3)).await.unwrap()), [3, 4, 5]);
            assert_eq!(values(c.go(Motion::Forward(0)).await.unwrap()), [5]);
            assert_eq!(values(c.go(Motion::Backward(2)).await.unwrap()), [4, 3]);
            assert_eq!(values(c.go(Motion::Relative(2)).await.unwrap()), [5]);
            assert_eq!(values(c.go(Motion::Absolute(-2)).await.unwrap()), [9]);
            assert_eq!(values(c.go(Motion::Forward(5)).await.unwrap()), [10]);
            assert_eq!(c.pos, 11);
            assert_eq!(values(c.go(Motion::Backward(1)).await.unwrap()), [10]);
            assert_eq!(
                values(c.go(Motion::Absolute(0)).await.unwrap()),
                Vec::<i32>::new()
            );
            assert_eq!(c.pos, 0);
            assert_eq!(
                values(c.go(Motion::Absolute(20)).await.unwrap()),
                Vec::<i32>::new()
            );
            assert_eq!(c.pos, 11);
        });
    }
}
