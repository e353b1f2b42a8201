//! `eon bench-load`: rows/s of `eon load` into eon, and — with
//! `--baseline` — of the same load into another PostgreSQL-speaking server
//! (say a local PostgreSQL: its own COPY FROM STDIN) in the same run,
//! printed side by side. A benchmark, not a test: nothing passes or fails.
//!
//! It writes one CSV and one Parquet file of `--rows` rows of the same
//! table first (a bigint key, a text with a comma that CSV must quote, a
//! numeric(12,2), a timestamp, a boolean), then for each target and file:
//! creates the table afresh, loads the file with the loader `eon load`
//! uses (batches of `--batch-rows` rows, each a COPY statement), checks
//! the row count, and drops the table.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::load::{self, Format, Options};

#[derive(clap::Args, Debug)]
pub struct BenchLoadArgs {
    /// The cluster to measure (default: `eon up`'s defaults — 127.0.0.1:5433
    /// as the admin, whose password is in ./eon-data/admin-password).
    #[arg(long)]
    url: Option<String>,
    /// Another server to load the same files into, for comparison.
    #[arg(long)]
    baseline: Option<String>,
    /// Rows in each file.
    #[arg(long, default_value_t = 500_000)]
    rows: u64,
    /// Rows per COPY statement.
    #[arg(long, default_value_t = 50_000)]
    batch_rows: u64,
}

const TABLE: &str = "eon_load_bench";
const CREATE: &str = "CREATE TABLE eon_load_bench (id bigint PRIMARY KEY, name text, \
                      amount numeric(12,2), created timestamp, active boolean)";
/// 2026-01-01 00:00:00 in microseconds since the Unix epoch.
const START_US: i64 = 1_767_225_600_000_000;

/// Row `id`'s values, the same in both files.
fn name(id: u64) -> String {
    format!("customer {}, ltd", id % 10_007)
}
fn cents(id: u64) -> i128 {
    (id as i128 * 7919) % 10_000_000
}
fn created_us(id: u64) -> i64 {
    START_US + id as i64 * 1_000_000
}

fn write_csv(path: &Path, rows: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    writeln!(out, "id,name,amount,created,active")?;
    for id in 1..=rows {
        let c = cents(id);
        let at = chrono::DateTime::from_timestamp_micros(created_us(id))
            .context("timestamp")?
            .naive_utc();
        writeln!(
            out,
            "{id},\"{}\",{}.{:02},{},{}",
            name(id),
            c / 100,
            c % 100,
            at.format("%Y-%m-%d %H:%M:%S"),
            id % 3 == 0
        )?;
    }
    out.flush()?;
    Ok(())
}

fn write_parquet(path: &Path, rows: u64) -> anyhow::Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut id = 1u64;
    while id <= rows {
        let ids: Vec<u64> = (id..=rows.min(id + 65_535)).collect();
        id += ids.len() as u64;
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(ids.iter().map(|&i| name(i)))),
            ),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from_iter_values(ids.iter().map(|&i| cents(i)))
                        .with_precision_and_scale(12, 2)?,
                ),
            ),
            (
                "created",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|&i| created_us(i)),
                )),
            ),
            (
                "active",
                Arc::new(BooleanArray::from_iter(
                    ids.iter().map(|&i| Some(i % 3 == 0)),
                )),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns)?;
        if writer.is_none() {
            writer = Some(ArrowWriter::try_new(
                File::create(path)?,
                batch.schema(),
                Some(props.clone()),
            )?);
        }
        writer.as_mut().expect("made above").write(&batch)?;
    }
    match writer {
        Some(w) => {
            w.close()?;
            Ok(())
        }
        None => bail!("--rows must be at least 1"),
    }
}

struct Measured {
    target: &'static str,
    format: &'static str,
    rows: u64,
    seconds: f64,
}

async fn run_target(
    target: &'static str,
    url: &str,
    files: &[(&'static str, Format, &Path)],
    args: &BenchLoadArgs,
) -> anyhow::Result<Vec<Measured>> {
    let client = crate::client::pg_connect(url)
        .await
        .with_context(|| target.to_string())?;
    let mut out = Vec::new();
    for (label, format, path) in files {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}; {CREATE}"))
            .await?;
        let options = Options {
            format: *format,
            header: true,
            delimiter: b',',
            batch_rows: args.batch_rows,
        };
        eprintln!("{target}: loading {label}");
        let started = Instant::now();
        let rows = load::load(&client, path, TABLE, &options, true).await?;
        let seconds = started.elapsed().as_secs_f64();
        let counted: i64 = client
            .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])
            .await?
            .get(0);
        if rows != args.rows || counted as u64 != args.rows {
            bail!(
                "{target}: {label} loaded {rows} rows and the table holds {counted}, not {}",
                args.rows
            );
        }
        out.push(Measured {
            target,
            format: label,
            rows,
            seconds,
        });
    }
    client.batch_execute(&format!("DROP TABLE {TABLE}")).await?;
    Ok(out)
}

pub async fn run(args: BenchLoadArgs) -> anyhow::Result<()> {
    let url = crate::client::pg_url_or_default(args.url.as_deref())?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("rows.csv");
    let parquet = dir.path().join("rows.parquet");
    eprintln!("writing {} rows as CSV and as Parquet", args.rows);
    write_csv(&csv, args.rows)?;
    write_parquet(&parquet, args.rows)?;
    let files = [
        ("csv", Format::Csv, csv.as_path()),
        ("parquet", Format::Parquet, parquet.as_path()),
    ];
    let mut results = run_target("eon", &url, &files, &args).await?;
    if let Some(b) = &args.baseline {
        results.extend(run_target("baseline", b, &files, &args).await?);
    }
    println!(
        "{:<9} {:<8} {:>10} {:>10} {:>12}",
        "target", "format", "rows", "seconds", "rows/s"
    );
    for r in &results {
        println!(
            "{:<9} {:<8} {:>10} {:>10.2} {:>12.0}",
            r.target,
            r.format,
            r.rows,
            r.seconds,
            r.rows as f64 / r.seconds
        );
    }
    for (label, ..) in &files {
        let of = |target| {
            results
                .iter()
                .find(|r| r.target == target && r.format == *label)
                .map(|r| r.rows as f64 / r.seconds)
        };
        if let (Some(e), Some(b)) = (of("eon"), of("baseline")) {
            println!("eon / baseline ({label}): {:.3}", e / b);
        }
    }
    Ok(())
}
