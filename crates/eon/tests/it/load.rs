//! `eon load FILE TABLE`: CSV and Parquet files into tables, through the
//! binary as a user runs it, against a live cluster.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use crate::rows;
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use eon_testkit::{TestCluster, eon_bin};
use parquet::arrow::ArrowWriter;

fn load(cluster: &TestCluster, file: &Path, table: &str, more: &[&str]) -> Output {
    Command::new(eon_bin())
        .arg("load")
        .arg(file)
        .arg(table)
        .args(["--url", &cluster.pg_url()])
        .args(more)
        .output()
        .unwrap()
}

fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn csv_and_parquet_files_load_into_tables() {
    let cluster = TestCluster::builder()
        .data_engines(2)
        .shards(4)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // CSV: the header names the columns, in its own order, leaving one to
    // its default; quoted commas, doubled quotes and a newline inside
    // quotes; an unquoted empty value is NULL and "" the empty string; no
    // newline after the last record. Batches of two records each commit.
    c.batch_execute(
        "CREATE TABLE people (id int PRIMARY KEY, name text, amount numeric(10,2), \
         born date, seen timestamp, ok boolean DEFAULT true, note text)",
    )
    .await
    .unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "name,id,amount,born,seen,note\n\
         \"Smith, Ann\",1,12.50,1990-05-01,2026-01-02 03:04:05,\"two\nlines\"\n\
         Bob,2,,1985-12-31,2026-01-02 03:04:05.25,\"\"\n\
         \"say \"\"hi\"\"\",3,-0.01,2000-02-29,,plain\n\
         d,4,7,2001-01-01,2026-06-01 00:00:00,x\n\
         e,5,8,2001-01-01,2026-06-01 00:00:00,y",
    )
    .unwrap();
    let out = load(&cluster, &csv, "people", &["--batch-rows", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("loaded 5 rows into people from "),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        rows(
            &c,
            "SELECT id, name, amount, born, seen, ok, note FROM people WHERE id <= 3 ORDER BY id"
        )
        .await,
        vec![
            row(&[
                Some("1"),
                Some("Smith, Ann"),
                Some("12.50"),
                Some("1990-05-01"),
                Some("2026-01-02 03:04:05"),
                Some("t"),
                Some("two\nlines")
            ]),
            row(&[
                Some("2"),
                Some("Bob"),
                None,
                Some("1985-12-31"),
                Some("2026-01-02 03:04:05.25"),
                Some("t"),
                Some("")
            ]),
            row(&[
                Some("3"),
                Some("say \"hi\""),
                Some("-0.01"),
                Some("2000-02-29"),
                None,
                Some("t"),
                Some("plain")
            ]),
        ]
    );
    assert_eq!(
        rows(&c, "SELECT count(*) FROM people").await,
        vec![row(&[Some("5")])]
    );

    // A tab-separated file without a header fills the columns in order
    // (CSV rules with a tab: an empty value is NULL).
    let tsv = dir.path().join("more.tsv");
    std::fs::write(&tsv, "6\tf\t1\t2001-01-01\t\tf\tz\n").unwrap();
    let out = load(&cluster, &tsv, "people", &["--no-header"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        rows(&c, "SELECT name, ok FROM people WHERE id = 6").await,
        vec![row(&[Some("f"), Some("f")])]
    );

    // Parquet: its columns fill the table's of the same names; text with
    // tabs, newlines and backslashes, floats' specials, bytes, NULLs.
    c.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, label text, score float8, \
         amount numeric(12,2), at timestamp, flag boolean, raw bytea)",
    )
    .await
    .unwrap();
    let parquet = dir.path().join("events.parquet");
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "label",
            Arc::new(StringArray::from(vec![
                Some("tab\there"),
                Some("back\\slash\nnewline"),
                None,
            ])),
        ),
        (
            "score",
            Arc::new(Float64Array::from(vec![1.5, f64::NAN, f64::NEG_INFINITY])),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from(vec![Some(123_456), Some(-1), None])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ),
        (
            "at",
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1_767_225_600_000_000),
                Some(1_767_225_600_500_000),
                None,
            ])),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        ),
        (
            "raw",
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                Some(&b""[..]),
                None,
            ])),
        ),
    ])
    .unwrap();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let out = load(&cluster, &parquet, "events", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("loaded 3 rows into events"));
    assert_eq!(
        rows(
            &c,
            "SELECT id, label, score, amount, at, flag, raw FROM events ORDER BY id"
        )
        .await,
        vec![
            row(&[
                Some("1"),
                Some("tab\there"),
                Some("1.5"),
                Some("1234.56"),
                Some("2026-01-01 00:00:00"),
                Some("t"),
                Some("\\x00ff")
            ]),
            row(&[
                Some("2"),
                Some("back\\slash\nnewline"),
                Some("NaN"),
                Some("-0.01"),
                Some("2026-01-01 00:00:00.5"),
                Some("f"),
                Some("\\x")
            ]),
            row(&[Some("3"), None, Some("-Infinity"), None, None, None, None]),
        ]
    );
}

/// Bad input ends `eon load` with one line that says what and where; the
/// batches before the bad one stay loaded, the bad one does not.
#[tokio::test]
async fn a_bad_record_stops_the_load_and_says_where() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        .await
        .unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "id,name\n1,a\n2,b\n3,c\nx,d\n5,e\n").unwrap();
    let out = load(&cluster, &csv, "t", &["--batch-rows", "2"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "eon: record 4: invalid input syntax for type integer: \"x\" (22P02); \
                         2 rows were loaded before its batch of 2, which was not"
        ),
        "{err}"
    );
    assert_eq!(
        rows(&c, "SELECT id FROM t ORDER BY id").await,
        vec![row(&[Some("1")]), row(&[Some("2")])]
    );

    // Over the wire, COPY's error names the line, column and value, as
    // PostgreSQL's does.
    let e = crate::copy_in(&c, "COPY t FROM STDIN (FORMAT csv)", b"7,a\n8x,b\n")
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22P02");
    assert_eq!(db.detail(), Some("COPY t, line 2, column id: \"8x\""));

    // A column the table does not have, a missing table, a missing file,
    // a file that is not Parquet: one line each.
    std::fs::write(&csv, "id,nope\n9,z\n").unwrap();
    let out = load(&cluster, &csv, "t", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = load(&cluster, &csv, "missing", &[]);
    assert!(stderr(&out).contains("(42P01)"), "{}", stderr(&out));
    let out = load(&cluster, &dir.path().join("none.csv"), "t", &[]);
    assert!(
        stderr(&out).starts_with("eon: cannot open "),
        "{}",
        stderr(&out)
    );
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, "id\n1\n").unwrap();
    let out = load(&cluster, &fake, "t", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a Parquet file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_eq!(
        rows(&c, "SELECT count(*) FROM t").await,
        vec![row(&[Some("2")])]
    );
}
