//! COPY FROM STDIN and COPY TO STDOUT, in PostgreSQL's text and CSV formats.
//!
//! COPY moves rows in bulk over the PostgreSQL wire protocol: after `COPY t
//! FROM STDIN` the server answers CopyInResponse and the client streams the
//! rows as CopyData messages, ending with CopyDone; `COPY t TO STDOUT` (or
//! `COPY (query) TO STDOUT`) answers CopyOutResponse and one CopyData per
//! row. psql's `\copy`, pgbench's initialisation and the drivers' copy APIs
//! use it.
//!
//! Formats, as PostgreSQL defines them:
//! - **text** (the default): one line per row, columns separated by a tab
//!   (DELIMITER), NULL written `\N` (NULL), backslash escapes (`\t`, `\n`,
//!   `\\`, octal `\123`, hex `\x41`), an optional `\.` end marker;
//! - **csv**: columns separated by `,`, values quoted with `"` when needed
//!   (quotes doubled, or ESCAPE), an *unquoted* empty value is NULL while
//!   `""` is the empty string, an optional HEADER line.
//!
//! COPY FROM is one statement: every row is converted with the same rules as
//! INSERT (`dml::insert_rows`: assignment casts, defaults, NOT NULL, foreign
//! keys) and written all or nothing; a bad row fails the whole COPY with the
//! line number in the error's detail. The rows are gathered in memory
//! first (bounded by [`MAX_COPY_BYTES`]).

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use eon_common::error::sqlstate;
use eon_common::{Error, Result, TableDef};
use eon_proto::v1 as pb;

use crate::dml::{ident, quote};
use crate::pgtypes::ColumnEncoder;
use crate::session::Session;

/// The most COPY FROM data one statement takes (PostgreSQL streams; eon
/// gathers the rows first, so it bounds them).
pub const MAX_COPY_BYTES: usize = 1 << 30;

/// How rows are written as text.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl CopyFormat {
    fn parse(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat> {
        let mut csv = false;
        let (mut delimiter, mut null, mut header, mut quote, mut escape) =
            (None, None, false, b'"', None);
        let byte = |c: char, what: &str| -> Result<u8> {
            if c.is_ascii() {
                Ok(c as u8)
            } else {
                Err(Error::unsupported(format!(
                    "COPY {what} must be a single one-byte character"
                )))
            }
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match ident(f).as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    "binary" => return Err(Error::unsupported("COPY in binary format")),
                    other => {
                        return Err(Error::user(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("COPY format \"{other}\" not recognized"),
                        ));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                // Rows are visible when the statement commits either way.
                CopyOption::Freeze(_) => {}
                CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") => {}
                other => {
                    return Err(Error::unsupported(format!("COPY option {other}")));
                }
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e, "escape")?),
                            other => {
                                return Err(Error::unsupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Binary => {
                    return Err(Error::unsupported("COPY in binary format"));
                }
                other => return Err(Error::unsupported(format!("COPY option {other}"))),
            }
        }
        if header && !csv {
            return Err(Error::unsupported("COPY HEADER in text format"));
        }
        Ok(CopyFormat {
            csv,
            delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
            header,
            quote,
            escape: escape.unwrap_or(quote),
        })
    }
}

/// PostgreSQL's COPY options take booleans as `on`/`off`/`true`/`false`/
/// `1`/`0` (`WITH (FREEZE on)`, as pgbench writes it); the SQL parser takes
/// only `FREEZE` and `FREEZE FALSE`. The COPY statement with its boolean
/// options rewritten that way, if it has any to rewrite.
pub fn normalize_options(sql: &str) -> Option<String> {
    let trimmed = sql.trim_start();
    if !trimmed.get(..4)?.eq_ignore_ascii_case("copy") {
        return None;
    }
    let words: Vec<&str> = sql
        .split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .collect();
    let word = |w: &str| {
        w.trim_matches(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
            .to_ascii_lowercase()
    };
    let mut out = String::with_capacity(sql.len());
    let mut changed = false;
    let mut i = 0;
    while i < words.len() {
        out.push_str(words[i]);
        if matches!(word(words[i]).as_str(), "freeze" | "header") {
            // Skip blank pieces, then look at the value.
            let mut j = i + 1;
            while j < words.len() && word(words[j]).is_empty() && !words[j].contains([',', ')']) {
                j += 1;
            }
            if let Some(v) = words.get(j) {
                let value = match word(v).as_str() {
                    "on" | "true" | "1" => Some(""),
                    "off" | "false" | "0" => Some(" false"),
                    _ => None,
                };
                if let Some(value) = value {
                    // Keep what follows the value (a comma or parenthesis).
                    let rest = v.trim_start_matches(|c: char| c.is_alphanumeric());
                    out.push_str(value.trim_start());
                    out.push_str(rest);
                    if !value.is_empty() && !rest.starts_with([',', ')']) {
                        out.push(' ');
                    }
                    changed = true;
                    i = j + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    changed.then_some(out)
}

/// COPY over anything but the PostgreSQL wire protocol.
pub fn wire_only() -> Error {
    Error::unsupported(
        "COPY FROM STDIN and COPY TO STDOUT need the PostgreSQL protocol; over REST, POST rows to /v1/tables/{table}",
    )
}

/// A COPY FROM STDIN waiting for its data.
#[derive(Debug)]
pub struct CopyIn {
    pub table: Arc<TableDef>,
    /// Table column index of each column in the data.
    pub columns: Vec<usize>,
    pub format: CopyFormat,
}

/// What a COPY statement does.
pub enum Start {
    /// Wait for the client's rows.
    In(CopyIn),
    /// Run the query and send its rows.
    Out {
        format: CopyFormat,
        query: Statement,
    },
}

/// Start a COPY statement.
pub async fn start(session: &Session, statement: &Statement) -> Result<Start> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return Err(Error::internal("not a COPY statement"));
    };
    let format = CopyFormat::parse(options, legacy_options)?;
    match (to, target) {
        (false, CopyTarget::Stdin) => {
            let CopySource::Table {
                table_name,
                columns,
            } = source
            else {
                return Err(Error::syntax("COPY FROM needs a table"));
            };
            session.cluster().timestamp().await?;
            let table = crate::dml::resolve_table(session, table_name)?;
            crate::privileges::require(&session.actor(), &table, "INSERT")?;
            let columns = if columns.is_empty() {
                (0..table.columns.len())
                    .filter(|&i| !table.columns[i].hidden)
                    .collect()
            } else {
                columns
                    .iter()
                    .map(|c| {
                        let name = ident(c);
                        table
                            .columns
                            .iter()
                            .position(|col| col.name == name && !col.hidden)
                            .ok_or_else(|| {
                                Error::user(
                                    sqlstate::UNDEFINED_COLUMN,
                                    format!(
                                        "column \"{name}\" of relation \"{}\" does not exist",
                                        table.name
                                    ),
                                )
                            })
                    })
                    .collect::<Result<_>>()?
            };
            Ok(Start::In(CopyIn {
                table,
                columns,
                format,
            }))
        }
        (true, CopyTarget::Stdout) => {
            let sql = match source {
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let list = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns
                            .iter()
                            .map(|c| quote(&ident(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    format!("SELECT {list} FROM {table_name}")
                }
                CopySource::Query(q) => q.to_string(),
            };
            let query = session
                .parse(&sql)?
                .pop()
                .ok_or_else(|| Error::internal("empty COPY query"))?;
            Ok(Start::Out { format, query })
        }
        _ => Err(Error::user(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "COPY to or from a file is not supported; use STDIN or STDOUT (psql's \\copy reads and writes files on the client)",
        )),
    }
}

/// Parse the data of a COPY FROM and write its rows: the number written.
pub async fn finish(session: &Session, copy: &CopyIn, data: &[u8]) -> Result<u64> {
    let rows = parse(data, &copy.format, copy.columns.len())?;
    let mut builders: Vec<StringBuilder> = copy
        .columns
        .iter()
        .map(|_| StringBuilder::with_capacity(rows.len(), data.len() / copy.columns.len().max(1)))
        .collect();
    for row in &rows {
        for (b, v) in builders.iter_mut().zip(row) {
            match v {
                Some(s) => b.append_value(s),
                None => b.append_null(),
            }
        }
    }
    let fields: Vec<Field> = copy
        .columns
        .iter()
        .map(|&i| Field::new(&copy.table.columns[i].name, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = builders
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    let (ctx, mode) = session.begin_statement().await?;
    crate::dml::check_writable(mode, "COPY FROM")?;
    let state = session.statement_state(ctx.clone());
    let written = crate::dml::insert_rows(
        session,
        &ctx,
        &state,
        mode,
        &copy.table,
        &copy.columns,
        &batch,
        pb::WriteKind::Insert,
        None,
    )
    .await
    .map_err(|e| locate(e, session, copy, &batch))?
    .0;
    Ok(written.len() as u64)
}

/// A value COPY could not convert fails the whole batch of rows at once;
/// PostgreSQL names its line, column and text, and so does this: the
/// values are converted again one by one (only on this error path) to
/// find the first that fails. Its line is its row's number (after the
/// header): a CSV value holding a newline would make PostgreSQL's count
/// larger.
fn locate(e: Error, session: &Session, copy: &CopyIn, batch: &RecordBatch) -> Error {
    use datafusion::arrow::array::{Array, AsArray};
    if e.detail.is_some() || !e.code.starts_with("22") {
        return e;
    }
    let order = session.date_style().order;
    for row in 0..batch.num_rows() {
        for (p, &c) in copy.columns.iter().enumerate() {
            let column = batch.column(p);
            let col = &copy.table.columns[c];
            if column.is_null(row)
                || crate::coerce::coerce_with(&column.slice(row, 1), col, &copy.table.name, order)
                    .is_ok()
            {
                continue;
            }
            let line = row + 1 + usize::from(copy.format.header);
            let value = column.as_string::<i32>().value(row);
            return e.with_detail(format!(
                "COPY {}, line {line}, column {}: \"{value}\"",
                copy.table.name, col.name
            ));
        }
    }
    e
}

/// A bad line of COPY data.
fn bad_line(line: usize, message: impl Into<String>) -> Error {
    Error::user(sqlstate::BAD_COPY_FILE_FORMAT, message).with_detail(format!("COPY, line {line}"))
}

/// Split COPY data into rows of values (None: NULL).
pub fn parse(data: &[u8], format: &CopyFormat, ncols: usize) -> Result<Vec<Vec<Option<String>>>> {
    let text = std::str::from_utf8(data)
        .map_err(|_| Error::user("22021", "invalid byte sequence for encoding \"UTF8\""))?;
    let rows = if format.csv {
        parse_csv(text, format)?
    } else {
        parse_text(text, format)?
    };
    for (i, row) in rows.iter().enumerate() {
        if row.len() != ncols {
            let line = i + 1 + usize::from(format.header);
            return Err(bad_line(
                line,
                if row.len() < ncols {
                    "missing data for a column".to_string()
                } else {
                    "extra data after last expected column".to_string()
                },
            ));
        }
    }
    Ok(rows)
}

fn parse_text(text: &str, format: &CopyFormat) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    let delimiter = format.delimiter as char;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Ok(rows);
    }
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        let mut row = Vec::new();
        for raw in line.split(delimiter) {
            if raw == format.null {
                row.push(None);
            } else {
                row.push(Some(unescape(raw).map_err(|m| bad_line(n + 1, m))?));
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Undo the text format's backslash escapes.
fn unescape(raw: &str) -> std::result::Result<String, String> {
    if !raw.contains('\\') {
        return Ok(raw.to_string());
    }
    let mut out = Vec::with_capacity(raw.len());
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = b[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    if i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                        v = v * 8 + (b[i] - b'0') as u32;
                        i += 1;
                    }
                }
                out.push(v as u8);
            }
            b'x' if i < b.len() && b[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                for _ in 0..2 {
                    if i < b.len() && b[i].is_ascii_hexdigit() {
                        v = v * 16 + (b[i] as char).to_digit(16).unwrap();
                        i += 1;
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| "invalid byte sequence for encoding \"UTF8\"".to_string())
}

/// CSV as PostgreSQL reads it. Hand-written rather than with the csv crate
/// because PostgreSQL's NULL rule needs to know whether a value was quoted
/// (an unquoted empty value is NULL, `""` is the empty string), which the
/// csv crate does not tell.
fn parse_csv(text: &str, format: &CopyFormat) -> Result<Vec<Vec<Option<String>>>> {
    let (delim, quote, escape) = (format.delimiter, format.quote, format.escape);
    let b = text.as_bytes();
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let (mut quoted, mut in_quotes, mut line) = (false, false, 1usize);
    let mut at_line_start = true;
    let mut i = 0;
    let finish_field = |field: &mut Vec<u8>, quoted: bool, row: &mut Vec<Option<String>>, line| {
        let s = String::from_utf8(std::mem::take(field))
            .map_err(|_| bad_line(line, "invalid byte sequence for encoding \"UTF8\""))?;
        row.push(if !quoted && s == format.null {
            None
        } else {
            Some(s)
        });
        Ok::<(), Error>(())
    };
    while i < b.len() {
        let c = b[i];
        if in_quotes {
            if c == escape
                && escape != quote
                && i + 1 < b.len()
                && (b[i + 1] == quote || b[i + 1] == escape)
            {
                field.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == quote {
                if escape == quote && i + 1 < b.len() && b[i + 1] == quote {
                    field.push(quote);
                    i += 2;
                    continue;
                }
                in_quotes = false;
                i += 1;
                continue;
            }
            if c == b'\n' {
                line += 1;
            }
            field.push(c);
            i += 1;
            continue;
        }
        if at_line_start
            && b[i..].starts_with(b"\\.")
            && matches!(b.get(i + 2), None | Some(b'\n') | Some(b'\r'))
        {
            break;
        }
        at_line_start = false;
        match c {
            _ if c == quote => {
                quoted = true;
                in_quotes = true;
            }
            _ if c == delim => {
                finish_field(&mut field, quoted, &mut row, line)?;
                quoted = false;
            }
            b'\r' if b.get(i + 1) == Some(&b'\n') => {}
            b'\n' | b'\r' => {
                finish_field(&mut field, quoted, &mut row, line)?;
                quoted = false;
                rows.push(std::mem::take(&mut row));
                line += 1;
                at_line_start = true;
            }
            _ => field.push(c),
        }
        i += 1;
    }
    if in_quotes {
        return Err(bad_line(line, "unterminated CSV quoted field"));
    }
    if !at_line_start || !field.is_empty() || quoted {
        finish_field(&mut field, quoted, &mut row, line)?;
        rows.push(row);
    }
    if format.header && !rows.is_empty() {
        rows.remove(0);
    }
    Ok(rows)
}

/// One batch of COPY TO output: a CopyData payload per row.
pub fn encode(batch: &RecordBatch, format: &CopyFormat) -> Result<Vec<Bytes>> {
    let encoders: Vec<ColumnEncoder> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| ColumnEncoder::new(f, a, false))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let values: Vec<Option<String>> = batch
            .columns()
            .iter()
            .zip(&encoders)
            .map(|(a, e)| (!a.is_null(row)).then(|| e.text_value(row)))
            .collect();
        out.push(Bytes::from(line(&values, format)));
    }
    Ok(out)
}

/// The header line of CSV output.
pub fn header(schema: &SchemaRef, format: &CopyFormat) -> Bytes {
    let names: Vec<Option<String>> = schema
        .fields()
        .iter()
        .map(|f| Some(f.name().clone()))
        .collect();
    Bytes::from(line(&names, format))
}

fn line(values: &[Option<String>], format: &CopyFormat) -> String {
    let delim = format.delimiter as char;
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        match v {
            None => out.push_str(&format.null),
            Some(s) if format.csv => {
                let (q, e) = (format.quote as char, format.escape as char);
                let needs = s.is_empty()
                    || *s == format.null
                    || s.contains([delim, q, '\n', '\r'])
                    || (e != q && s.contains(e));
                if needs {
                    out.push(q);
                    for ch in s.chars() {
                        if ch == q || (ch == e && e != q) {
                            out.push(e);
                        }
                        out.push(ch);
                    }
                    out.push(q);
                } else {
                    out.push_str(s);
                }
            }
            Some(s) => {
                for ch in s.chars() {
                    match ch {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if c == delim => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out.push('\n');
    out
}

/// The stream of a COPY TO: batches as CopyData payloads.
pub fn rows_of(
    stream: SendableRecordBatchStream,
    format: CopyFormat,
) -> impl futures::Stream<Item = Result<Bytes>> {
    use futures::StreamExt;
    stream.flat_map(move |batch| {
        let encoded = batch
            .map_err(crate::errors::from_df)
            .and_then(|b| encode(&b, &format));
        futures::stream::iter(match encoded {
            Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyFormat {
        CopyFormat::parse(&[], &[]).unwrap()
    }

    fn csv(header: bool) -> CopyFormat {
        CopyFormat {
            header,
            ..CopyFormat::parse(
                &[CopyOption::Format(
                    datafusion::sql::sqlparser::ast::Ident::new("csv"),
                )],
                &[],
            )
            .unwrap()
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn text_format_reads_escapes_nulls_and_the_end_marker() {
        let rows = parse(
            b"1\ta\\tb\t\\N\n2\t\\\\x\\101\t\n\\.\nignored\n",
            &text(),
            3,
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                vec![s("1"), s("a\tb"), None],
                vec![s("2"), s("\\xA"), s("")]
            ]
        );
        let err = parse(b"1\t2\n", &text(), 3).unwrap_err();
        assert_eq!(err.code, sqlstate::BAD_COPY_FILE_FORMAT);
        assert_eq!(err.detail.as_deref(), Some("COPY, line 1"));
    }

    #[test]
    fn csv_tells_null_from_the_empty_string_and_reads_quotes() {
        let data = b"id,name,note\n1,\"a, \"\"b\"\"\",\n2,\"\",\"two\nlines\"\r\n";
        let rows = parse(data, &csv(true), 3).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![s("1"), s("a, \"b\""), None],
                vec![s("2"), s(""), s("two\nlines")]
            ]
        );
        assert!(parse(b"1,\"open\n", &csv(false), 2).is_err());
    }

    #[test]
    fn boolean_options_are_rewritten_for_the_parser() {
        assert_eq!(
            normalize_options("copy t from stdin with (freeze on)").as_deref(),
            Some("copy t from stdin with (freeze )")
        );
        assert_eq!(
            normalize_options("COPY t FROM STDIN (FORMAT csv, HEADER true, FREEZE off)").as_deref(),
            Some("COPY t FROM STDIN (FORMAT csv, HEADER , FREEZE false)")
        );
        assert_eq!(normalize_options("copy t from stdin with (freeze)"), None);
        assert_eq!(normalize_options("select 1"), None);
    }

    #[test]
    fn output_escapes_as_postgresql_does() {
        let values = [s("a\tb\\"), None, s("")];
        assert_eq!(line(&values, &text()), "a\\tb\\\\\t\\N\t\n");
        let values = [s("a,\"b\""), None, s(""), s("plain")];
        assert_eq!(line(&values, &csv(false)), "\"a,\"\"b\"\"\",,\"\",plain\n");
    }
}
