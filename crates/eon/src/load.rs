//! `eon load FILE TABLE`: bulk-load a CSV or Parquet file into a table over
//! the PostgreSQL wire, with a progress bar.
//!
//! The loader is a client, as psql's `\copy` is: it speaks `COPY … FROM
//! STDIN` to any PostgreSQL-speaking server — eon, or PostgreSQL itself,
//! which is how `eon bench-load` compares the two in one run. The file is
//! sent in batches of `--batch-rows` rows, each its own COPY statement and
//! so its own transaction: memory stays bounded on both sides (eon gathers
//! a COPY's rows before it writes them), and a bad row fails its batch
//! only — the loader stops there and says how many rows went in before it.
//!
//! A thread of its own reads the file and cuts it into batches while the
//! previous batch is on the wire:
//!
//! - **CSV** is sent as it is, in COPY's CSV format, which reads it with
//!   PostgreSQL's rules (an unquoted empty value is NULL, `""` the empty
//!   string, quotes doubled). The header line, unless `--no-header`, names
//!   the columns to fill, in the file's order; the others get their
//!   defaults. Batches are cut only between records: a newline inside
//!   quotes belongs to its value.
//! - **Parquet** is read with the `parquet` crate's Arrow reader and written
//!   as COPY text (tab-separated, `\N` for NULL, backslash escapes); its
//!   columns fill the table's columns of the same names.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use futures::SinkExt;
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::client::{pg_connect, pg_url_or_default};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The file: CSV (`.csv`, `.tsv`, `.txt`) or Parquet (`.parquet`, `.pq`).
    file: PathBuf,
    /// The table to load into (it must exist; written as in SQL, so
    /// `"Mixed Case"` needs its quotes).
    table: String,
    /// The server (default: `eon up`'s — 127.0.0.1:5433 as the admin, whose
    /// password is in ./eon-data/admin-password).
    #[arg(long)]
    url: Option<String>,
    /// csv or parquet (default: from the file's extension).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The CSV file has no header line: its columns are the table's, in
    /// order.
    #[arg(long)]
    no_header: bool,
    /// The CSV field separator (default `,`; a tab for `.tsv`).
    #[arg(long)]
    delimiter: Option<char>,
    /// Rows per COPY statement, each committed on its own.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_rows: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

/// How one file is read.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    pub header: bool,
    pub delimiter: u8,
    pub batch_rows: u64,
}

impl Options {
    /// The options for `file`, from its extension where not given.
    fn for_file(args: &LoadArgs) -> anyhow::Result<Options> {
        let ext = args
            .file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format = match (args.format, ext.as_deref()) {
            (Some(f), _) => f,
            (None, Some("csv" | "tsv" | "txt")) => Format::Csv,
            (None, Some("parquet" | "pq")) => Format::Parquet,
            _ => bail!(
                "cannot tell the format of {} from its name: give --format csv or --format parquet",
                args.file.display()
            ),
        };
        let delimiter = match args.delimiter {
            Some(c) if c.is_ascii() && c != '"' && c != '\n' && c != '\r' => c as u8,
            Some(c) => bail!(
                "--delimiter must be one ASCII character other than a quote or a newline, not {c:?}"
            ),
            None if ext.as_deref() == Some("tsv") => b'\t',
            None => b',',
        };
        Ok(Options {
            format,
            header: !args.no_header,
            delimiter,
            batch_rows: args.batch_rows,
        })
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let options = Options::for_file(&args)?;
    let client = pg_connect(&pg_url_or_default(args.url.as_deref())?).await?;
    let started = Instant::now();
    let rows = load(&client, &args.file, &args.table, &options, true).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "loaded {rows} rows into {} from {} in {seconds:.2} s ({:.0} rows/s)",
        args.table,
        args.file.display(),
        rows as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// One batch, ready for the wire.
struct Batch {
    /// COPY data: whole records only.
    data: Vec<u8>,
    rows: u64,
    /// How far into the file it reaches (bytes for CSV, rows for Parquet),
    /// for the progress bar.
    reached: u64,
}

/// What the reading thread says first: the columns the file fills and how
/// far the bar goes.
struct Plan {
    columns: Option<Vec<String>>,
    total: u64,
}

/// Load `file` into `table` through `client`; the number of rows loaded.
pub async fn load(
    client: &Client,
    file: &Path,
    table: &str,
    options: &Options,
    show_progress: bool,
) -> anyhow::Result<u64> {
    let opened = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let (plan_tx, plan_rx) = tokio::sync::oneshot::channel();
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Batch>>(2);
    let reader_options = options.clone();
    let name = file.display().to_string();
    let reader = std::thread::spawn(move || {
        let read = match reader_options.format {
            Format::Csv => read_csv(opened, &reader_options, plan_tx, &tx),
            Format::Parquet => read_parquet(opened, &reader_options, plan_tx, &tx),
        };
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e.context(format!("cannot read {name}"))));
        }
    });
    let plan = match plan_rx.await {
        Ok(plan) => plan,
        // The thread failed before it knew the columns: its error follows.
        Err(_) => Plan {
            columns: None,
            total: 0,
        },
    };
    let bar = if show_progress {
        progress_bar(options.format, plan.total)
    } else {
        ProgressBar::hidden()
    };
    let statement = copy_statement(table, plan.columns.as_deref(), options);
    let mut loaded = 0u64;
    let result = async {
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            send(client, &statement, batch.data)
                .await
                .map_err(|e| refused(e, loaded, batch.rows, options.format))?;
            loaded += batch.rows;
            bar.set_position(batch.reached);
            bar.set_message(format!("{loaded} rows"));
        }
        anyhow::Ok(loaded)
    }
    .await;
    drop(rx);
    let _ = reader.join();
    bar.finish_and_clear();
    result
}

fn progress_bar(format: Format, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = match format {
        Format::Csv => "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
        Format::Parquet => "{bar:40} {pos}/{len} rows ({elapsed}, {eta} left)",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The COPY statement each batch is sent with.
fn copy_statement(table: &str, columns: Option<&[String]>, options: &Options) -> String {
    let columns = match columns {
        Some(names) => format!(
            " ({})",
            names
                .iter()
                .map(|n| eon_query::dml::quote(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    match options.format {
        Format::Csv => {
            let delimiter = (options.delimiter as char).to_string().replace('\'', "''");
            format!("COPY {table}{columns} FROM STDIN WITH (FORMAT csv, DELIMITER '{delimiter}')")
        }
        Format::Parquet => format!("COPY {table}{columns} FROM STDIN"),
    }
}

async fn send(
    client: &Client,
    statement: &str,
    data: Vec<u8>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data)).await?;
    sink.finish().await
}

/// The server refused a batch: say which record, and what went in before.
fn refused(e: tokio_postgres::Error, loaded: u64, rows: u64, format: Format) -> anyhow::Error {
    let (first, last) = (loaded + 1, loaded + rows);
    let unit = match format {
        Format::Csv => "records",
        Format::Parquet => "rows",
    };
    let Some(db) = e.as_db_error() else {
        return anyhow::anyhow!(
            "{unit} {first}–{last} were not loaded: {e}; {loaded} rows were loaded before them"
        );
    };
    // The server names the line of its COPY data: one per record here
    // (unless a CSV value holds a newline).
    let line = [db.detail(), db.where_()]
        .into_iter()
        .flatten()
        .find_map(|text| {
            let at = text.find("line ")? + 5;
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        });
    let place = match line {
        Some(n) if n >= 1 && n <= rows => format!("{} {}", &unit[..unit.len() - 1], loaded + n),
        _ => format!("{unit} {first}–{last}"),
    };
    anyhow::anyhow!(
        "{place}: {} ({}); {loaded} rows were loaded before its batch of {rows}, which was not",
        db.message(),
        db.code().code()
    )
}

// -------------------------------------------------------------------- CSV

const READ_CHUNK: usize = 1 << 20;

fn read_csv(
    file: File,
    options: &Options,
    plan: tokio::sync::oneshot::Sender<Plan>,
    tx: &mpsc::Sender<anyhow::Result<Batch>>,
) -> anyhow::Result<()> {
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut input = BufReader::with_capacity(READ_CHUNK, file);
    let mut cutter = RecordCutter::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut reached = 0u64;
    let mut plan = Some(plan);
    if !options.header {
        let _ = plan.take().map(|p| {
            p.send(Plan {
                columns: None,
                total,
            })
        });
    }
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = input.read(&mut chunk)?;
        reached += n as u64;
        let at_end = n == 0;
        let start = pending.len();
        pending.extend_from_slice(&chunk[..n]);
        if at_end && !pending.is_empty() && !pending.ends_with(b"\n") {
            pending.push(b'\n');
        }
        // Whole records so far, cut into batches.
        let mut from = start;
        loop {
            if plan.is_some() {
                // The header: the first record.
                let Some(end) = cutter.next_record(&pending, from) else {
                    break;
                };
                let names = header_names(&pending[..end], options.delimiter)?;
                pending.drain(..end);
                cutter.reset();
                from = 0;
                let _ = plan.take().map(|p| {
                    p.send(Plan {
                        columns: Some(names),
                        total,
                    })
                });
                continue;
            }
            match cutter.records_until(&pending, from, options.batch_rows) {
                Some(end) => {
                    let rest = pending.split_off(end);
                    let data = std::mem::replace(&mut pending, rest);
                    let batch = Batch {
                        data,
                        rows: cutter.take_count(),
                        reached: reached - pending.len() as u64,
                    };
                    if tx.blocking_send(Ok(batch)).is_err() {
                        return Ok(()); // the loader stopped
                    }
                    cutter.reset();
                    from = 0;
                }
                None => break,
            }
        }
        if at_end {
            break;
        }
    }
    if plan.is_some() {
        bail!("the file is empty: it has no header line (give --no-header if it has none)");
    }
    if !pending.is_empty() {
        let rows = cutter.take_count();
        let _ = tx.blocking_send(Ok(Batch {
            data: pending,
            rows,
            reached,
        }));
    }
    Ok(())
}

/// Finds where CSV records end: at a newline outside quotes. A doubled
/// quote inside a quoted value toggles the state twice, so it needs no
/// case of its own. (The `csv` crate reads records into values; the
/// loader only cuts the bytes, which COPY then reads, so this scan is all
/// it needs.)
#[derive(Default)]
struct RecordCutter {
    in_quotes: bool,
    /// Records ended in the bytes scanned since the last reset.
    count: u64,
    /// Where the scan left off.
    scanned: usize,
}

impl RecordCutter {
    fn reset(&mut self) {
        *self = RecordCutter::default();
    }

    fn take_count(&mut self) -> u64 {
        std::mem::take(&mut self.count)
    }

    /// The end (just past its newline) of the next record from `from`.
    fn next_record(&mut self, data: &[u8], from: usize) -> Option<usize> {
        self.records_until(data, from, self.count + 1)
    }

    /// Scan on until `want` records have ended: the offset just past the
    /// last one's newline, or None (state kept) if the data runs out first.
    fn records_until(&mut self, data: &[u8], from: usize, want: u64) -> Option<usize> {
        let mut i = self.scanned.max(from);
        while i < data.len() {
            match data[i] {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => {
                    self.count += 1;
                    if self.count == want {
                        self.scanned = i + 1;
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.scanned = data.len();
        None
    }
}

/// The column names of a CSV header line.
fn header_names(line: &[u8], delimiter: u8) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .from_reader(line);
    let record = match reader.records().next() {
        Some(r) => r.context("the header line is not CSV")?,
        None => bail!("the header line is empty"),
    };
    let names: Vec<String> = record.iter().map(|n| n.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        bail!(
            "the header line has an empty column name (give --no-header if the file has no header)"
        );
    }
    Ok(names)
}

// ---------------------------------------------------------------- Parquet

fn read_parquet(
    file: File,
    options: &Options,
    plan: tokio::sync::oneshot::Sender<Plan>,
    tx: &mpsc::Sender<anyhow::Result<Batch>>,
) -> anyhow::Result<()> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).context("not a Parquet file")?;
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = builder.schema().clone();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        if let Err(t) = writable(field.data_type()) {
            bail!(
                "column \"{}\" is of type {t}, which eon load cannot write as a value",
                field.name()
            );
        }
        columns.push(field.name().clone());
    }
    let _ = plan.send(Plan {
        columns: Some(columns),
        total,
    });
    let reader = builder.with_batch_size(8192).build()?;
    let mut data = Vec::new();
    let (mut rows, mut reached) = (0u64, 0u64);
    for batch in reader {
        let batch = batch?;
        write_text(&batch, &mut data)?;
        rows += batch.num_rows() as u64;
        reached += batch.num_rows() as u64;
        if rows >= options.batch_rows {
            let full = Batch {
                data: std::mem::take(&mut data),
                rows: std::mem::take(&mut rows),
                reached,
            };
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if rows > 0 {
        let _ = tx.blocking_send(Ok(Batch {
            data,
            rows,
            reached,
        }));
    }
    Ok(())
}

/// Whether a column of this type can be written as COPY text (after
/// [`plain`]); the type's name if not.
fn writable(t: &DataType) -> Result<(), String> {
    use DataType::*;
    match t {
        Dictionary(_, values) => writable(values),
        Null | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
        | Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
        | Decimal256(..) | Date32 | Date64 | Timestamp(..) | Time32(_) | Time64(_) | Utf8
        | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => Ok(()),
        other => Err(other.to_string()),
    }
}

/// A column in one of the few shapes [`write_text`] knows: dictionaries
/// decoded, strings as Utf8, bytes as Binary.
fn plain(array: &ArrayRef) -> anyhow::Result<ArrayRef> {
    use DataType::*;
    let to = match array.data_type() {
        Dictionary(_, values) => values.as_ref().clone(),
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        _ => return Ok(array.clone()),
    };
    let cast = arrow::compute::cast(array, &to)?;
    if matches!(cast.data_type(), Dictionary(..)) {
        bail!("nested dictionaries are not read");
    }
    plain(&cast)
}

/// How a column's values become COPY text.
enum Column<'a> {
    Text(&'a arrow::array::StringArray),
    Bytes(&'a arrow::array::BinaryArray),
    F32(&'a arrow::array::Float32Array),
    F64(&'a arrow::array::Float64Array),
    /// Arrow's own display: numbers, booleans, dates, times, timestamps.
    Shown(ArrayFormatter<'a>),
}

const FORMAT: FormatOptions<'static> = FormatOptions::new()
    .with_date_format(Some("%Y-%m-%d"))
    .with_datetime_format(Some("%Y-%m-%d %H:%M:%S%.f"))
    .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
    .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"));

/// Append the rows of `batch` to `out` in COPY's text format.
fn write_text(batch: &RecordBatch, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let arrays: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(plain)
        .collect::<Result<_, _>>()?;
    let columns: Vec<Column> = arrays
        .iter()
        .map(|a| {
            Ok(match a.data_type() {
                DataType::Utf8 => Column::Text(a.as_string::<i32>()),
                DataType::Binary => Column::Bytes(a.as_binary::<i32>()),
                DataType::Float32 => Column::F32(a.as_primitive::<Float32Type>()),
                DataType::Float64 => Column::F64(a.as_primitive::<Float64Type>()),
                _ => Column::Shown(ArrayFormatter::try_new(a.as_ref(), &FORMAT)?),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut text = String::new();
    for row in 0..batch.num_rows() {
        text.clear();
        for (i, (column, array)) in columns.iter().zip(&arrays).enumerate() {
            if i > 0 {
                text.push('\t');
            }
            if array.is_null(row) {
                text.push_str("\\N");
                continue;
            }
            match column {
                Column::Text(a) => escape_into(a.value(row), &mut text),
                Column::Bytes(a) => {
                    // bytea's hex form, its backslash escaped for COPY.
                    text.push_str("\\\\x");
                    for b in a.value(row) {
                        let _ = write!(text, "{b:02x}");
                    }
                }
                Column::F32(a) => {
                    float_into(a.value(row) as f64, &a.value(row).to_string(), &mut text)
                }
                Column::F64(a) => float_into(a.value(row), &a.value(row).to_string(), &mut text),
                Column::Shown(f) => {
                    let _ = write!(text, "{}", f.value(row));
                }
            }
        }
        text.push('\n');
        out.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

/// A float as PostgreSQL reads it: `NaN`, `Infinity`, `-Infinity`, or its
/// shortest exact decimal (`shown`, Rust's rendering of the float's own
/// width).
fn float_into(v: f64, shown: &str, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.push_str(shown);
    }
}

/// A value in COPY text: backslash, tab, newline and carriage return
/// escaped.
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_cut_between_newlines_outside_quotes() {
        let data = b"1,\"a\nb\"\n2,\"say \"\"hi\"\"\"\n3,c\n4,d";
        let mut cutter = RecordCutter::default();
        // Two records: the newline inside quotes does not end one.
        let end = cutter.records_until(data, 0, 2).unwrap();
        assert_eq!(&data[..end], b"1,\"a\nb\"\n2,\"say \"\"hi\"\"\"\n");
        assert_eq!(cutter.take_count(), 2);
        cutter.reset();
        let rest = &data[end..];
        // The last record has no newline yet: not ended.
        assert_eq!(cutter.records_until(rest, 0, 5), None);
        assert_eq!(cutter.count, 1);
        // Scanning resumes where it stopped once more data arrives.
        let mut more = rest.to_vec();
        more.push(b'\n');
        assert_eq!(cutter.records_until(&more, 0, 2), Some(more.len()));
    }

    #[test]
    fn parquet_values_become_copy_text() {
        use arrow::array::{BinaryArray, Float64Array, Int32Array, StringArray};
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a\tb\\c\nd"), Some("")])) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![f64::NEG_INFINITY, 0.1])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut out = Vec::new();
        write_text(&batch, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1\ta\\tb\\\\c\\nd\t-Infinity\t\\\\x00ff\n\\N\t\t0.1\t\\N\n"
        );
    }

    #[test]
    fn header_names_are_read_as_csv() {
        assert_eq!(
            header_names(b"id ,\"full name\",\"a,b\"\n", b',').unwrap(),
            vec!["id", "full name", "a,b"]
        );
        assert!(header_names(b"id,,x\n", b',').is_err());
    }
}
