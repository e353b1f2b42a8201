//! sqllogictest files run over the PostgreSQL wire (simple protocol, the
//! `postgres` engine of sqllogictest-engines, label `postgresql`) against a
//! live cluster: eon's own files in `tests/slt/*.slt` and SQLite's corpus in
//! `tests/slt/sqlite/` (see its README).
//!
//! `EON_SLT=<substring>` runs only the files whose path contains it.
//! `EON_SLT_URL=postgresql://...` runs eon's own files against another
//! server instead — how their expectations were checked against
//! PostgreSQL 15 (records marked `onlyif eon` are eon's extensions).

use std::path::{Path, PathBuf};

use eon_testkit::TestCluster;
use sqllogictest::{DefaultColumnType, Record};
use sqllogictest_engines::postgres::PostgresSimple;

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt")
}

/// eon's own files, plus (with the corpus) all 14 SQLite files.
fn files(with_corpus: bool) -> Vec<PathBuf> {
    let dir = slt_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    if with_corpus {
        for f in [
            "select1.slt",
            "select2.slt",
            "select3.slt",
            "select4.slt",
            "random/aggregates/slt_good_0.slt",
            "index/between/slt_good_0.slt",
        ] {
            files.push(dir.join("sqlite").join(f));
        }
        let mut evidence: Vec<PathBuf> = std::fs::read_dir(dir.join("sqlite/evidence"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        evidence.sort();
        files.extend(evidence);
    }
    match std::env::var("EON_SLT") {
        Ok(filter) => files
            .into_iter()
            .filter(|f| f.to_string_lossy().contains(&filter))
            .collect(),
        Err(_) => files,
    }
}

/// The `postgres` engine of sqllogictest-engines, with the server's error
/// message (not just "db error") in failure reports.
struct Pg(PostgresSimple);

#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Pg {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(
        &mut self,
        sql: &str,
    ) -> Result<sqllogictest::DBOutput<DefaultColumnType>, PgError> {
        self.0.run(sql).await.map_err(PgError)
    }

    async fn shutdown(&mut self) {
        self.0.shutdown().await
    }

    fn engine_name(&self) -> &str {
        "postgres"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.0.code().map(|c| c.code().to_string())
    }
}

struct Outcome {
    records: usize,
    failures: Vec<String>,
}

async fn run_file(url: &str, path: &Path, labels: &[&str]) -> Outcome {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let mut runner = sqllogictest::Runner::new(move || {
        let config = config.clone();
        async move {
            PostgresSimple::connect(config)
                .await
                .map(Pg)
                .map_err(PgError)
        }
    });
    for l in labels {
        runner.add_label(l);
    }
    let records = sqllogictest::parse_file::<DefaultColumnType>(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut outcome = Outcome {
        records: 0,
        failures: vec![],
    };
    for record in records {
        // As the reference runner (`Runner::run_multi_async`, what
        // `sqllogictest -e postgres` runs): a file ends at `halt`.
        if matches!(record, Record::Halt { .. }) {
            break;
        }
        let counted = matches!(record, Record::Statement { .. } | Record::Query { .. });
        if counted {
            outcome.records += 1;
        }
        if let Err(e) = runner.run_async(record).await {
            outcome.failures.push(format!("{}", e.display(false)));
        }
    }
    runner.shutdown_async().await;
    outcome
}

/// Drop every table, so the next file starts from an empty database.
async fn drop_all(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let name: String = r.get(0);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_pass() {
    let (_cluster, url, files, labels) = match std::env::var("EON_SLT_URL") {
        Ok(url) => (None, url, files(false), vec!["postgresql"]),
        Err(_) => {
            let c = TestCluster::start().unwrap();
            let url = c.pg_url();
            (Some(c), url, files(true), vec!["postgresql", "eon"])
        }
    };
    let mut total = 0;
    let mut failed = Vec::new();
    for f in files {
        let started = std::time::Instant::now();
        let outcome = run_file(&url, &f, &labels).await;
        eprintln!(
            "{}: {} records, {} failed, {:.1}s",
            f.strip_prefix(slt_dir()).unwrap_or(&f).display(),
            outcome.records,
            outcome.failures.len(),
            started.elapsed().as_secs_f64()
        );
        total += outcome.records;
        let show = std::env::var("EON_SLT_SHOW")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        for e in outcome.failures.iter().take(show) {
            eprintln!("{e}\n");
        }
        if !outcome.failures.is_empty() {
            failed.push((f.clone(), outcome.failures.len()));
        }
        drop_all(&url).await;
    }
    eprintln!("{total} records run");
    assert!(failed.is_empty(), "failing files: {failed:?}");
}
