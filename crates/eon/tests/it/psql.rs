//! psql connects, runs statements, and its `\dt` and `\d` work.

use std::process::Command;

use eon_testkit::TestCluster;

fn psql(cluster: &TestCluster, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg(cluster.pg_url())
        .args(["-X", "-v", "ON_ERROR_STOP=0"])
        .args(args)
        .output()
        .expect("psql is installed (scripts/setup.sh installs postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn psql_smoke_test() {
    let cluster = TestCluster::start().unwrap();
    let (ok, out, err) = psql(
        &cluster,
        &[
            "-c",
            "CREATE TABLE gadgets (id integer PRIMARY KEY, name text NOT NULL, price numeric(8,2), tag uuid, code varchar(12), seen timestamptz)",
            "-c",
            "INSERT INTO gadgets (id, name, price) VALUES (1, 'sprocket', 9.99), (2, 'widget', 0.5)",
            "-c",
            "SELECT name, price FROM gadgets ORDER BY id",
            "-c",
            "SELECT * FROM no_such_table",
            "-c",
            "SELECT count(*) AS n FROM gadgets",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("CREATE TABLE") && out.contains("INSERT 0 2"),
        "{out}"
    );
    assert!(
        out.contains(" sprocket |  9.99") && out.contains(" widget   |  0.50"),
        "{out}"
    );
    assert!(
        err.contains("relation \"no_such_table\" does not exist"),
        "{err}"
    );
    // PostgreSQL's error cursor: psql marks the name in the statement.
    assert!(
        err.contains("LINE 1: SELECT * FROM no_such_table\n                      ^"),
        "{err}"
    );
    assert!(
        out.contains(" n \n---\n 2\n"),
        "the session went on after the error:\n{out}"
    );

    let (ok, out, err) = psql(&cluster, &["-c", "\\dt"]);
    assert!(ok, "{err}");
    assert!(out.contains("gadgets") && out.contains("table"), "{out}");

    let (ok, out, err) = psql(&cluster, &["-c", "\\d gadgets"]);
    assert!(ok, "{err}");
    assert!(out.contains("Table \"public.gadgets\""), "{out}");
    for line in [
        "id     | integer",
        "name   | text",
        "price  | numeric(8,2)",
        "tag    | uuid",
        "code   | character varying(12)",
        "seen   | timestamp with time zone",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert!(out.contains("not null"), "{out}");

    // `\d+` adds storage, compression, statistics and description columns.
    let (ok, out, err) = psql(&cluster, &["-c", "\\d+ gadgets"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("| Storage  | Compression | Stats target | Description"),
        "{out}"
    );
    assert!(out.contains("id     | integer"), "{out}");

    // The footers: the primary key's index, foreign keys both ways, a
    // column's default.
    let (ok, out, err) = psql(
        &cluster,
        &[
            "-c",
            "CREATE TABLE orders (id int PRIMARY KEY, gadget int REFERENCES gadgets (id), state text DEFAULT 'new')",
            "-c",
            "\\d orders",
            "-c",
            "\\d gadgets",
        ],
    );
    assert!(ok, "{err}");
    for line in [
        "state  | text    |           |          | 'new'",
        "Indexes:\n    \"orders_pkey\" PRIMARY KEY, btree (id)\n",
        "Foreign-key constraints:\n    \"orders_gadget_fkey\" FOREIGN KEY (gadget) REFERENCES gadgets(id)\n",
        "Indexes:\n    \"gadgets_pkey\" PRIMARY KEY, btree (id)\n",
        "Referenced by:\n    TABLE \"orders\" CONSTRAINT \"orders_gadget_fkey\" FOREIGN KEY (gadget) REFERENCES gadgets(id)\n",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
}

/// psql's `\copy` (COPY FROM STDIN / TO STDOUT underneath) in text and CSV,
/// character(n), TRUNCATE and VACUUM ANALYZE as pgbench uses them.
#[tokio::test]
async fn psql_copies_rows_in_and_out() {
    let cluster = TestCluster::builder().data_engines(2).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("rows.txt");
    let csv = dir.path().join("rows.csv");
    let mut data = String::new();
    for i in 1..=5000 {
        data.push_str(&format!(
            "{i}\tname {i}\t{}\n",
            if i % 7 == 0 { "\\N" } else { "x" }
        ));
    }
    std::fs::write(&text, data).unwrap();
    std::fs::write(&csv, "id,name,code\n9001,\"a, \"\"b\"\"\",\n9002,\"\",zz\n").unwrap();
    let (ok, out, err) = psql(
        &cluster,
        &[
            "-c",
            "CREATE TABLE copied (id int PRIMARY KEY, name text, code char(3)) WITH (fillfactor = 100)",
            "-c",
            &format!("\\copy copied from '{}'", text.display()),
            "-c",
            &format!(
                "\\copy copied from '{}' with (format csv, header true)",
                csv.display()
            ),
            "-c",
            "SELECT count(*) AS n, count(code) AS codes FROM copied",
            "-c",
            "\\copy (SELECT id, name, code FROM copied WHERE id > 9000 ORDER BY id) to stdout with (format csv)",
            "-c",
            "\\copy (SELECT id, name FROM copied WHERE id IN (6, 7) ORDER BY id) to stdout",
            "-c",
            "VACUUM ANALYZE copied",
            "-c",
            &format!("\\copy copied from '{}'", text.display()),
            "-c",
            "TRUNCATE copied",
            "-c",
            "SELECT count(*) AS after_truncate FROM copied",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("COPY 5000") && out.contains("COPY 2"), "{out}");
    // 714 of 5000 have a NULL code; the CSV rows have NULL and 'zz '.
    assert!(out.contains(" 5002 |  4287\n"), "{out}");
    assert!(
        out.contains("9001,\"a, \"\"b\"\"\",\n9002,\"\",zz \n"),
        "CSV out pads character(3) and quotes as PostgreSQL:\n{out}"
    );
    assert!(out.contains("6\tname 6\n7\tname 7\n"), "{out}");
    assert!(out.contains("VACUUM"), "{out}");
    // Copying the same rows again fails on the first duplicate, and writes
    // nothing.
    assert!(
        err.contains("duplicate key value violates unique constraint"),
        "{err}"
    );
    assert!(
        out.contains("TRUNCATE TABLE")
            && out.contains(" after_truncate \n----------------\n              0\n"),
        "{out}"
    );
}

/// pgbench's own initialization (tables, client-side data, VACUUM, then
/// `ALTER TABLE … ADD PRIMARY KEY` on each table) and its TPC-B-like run
/// at the default isolation: serialization failures are retried by
/// pgbench, none fails for good, and the balances agree with the history.
#[tokio::test]
async fn pgbench_initializes_and_runs_without_failed_transactions() {
    let cluster = TestCluster::start().unwrap();
    let url = cluster.pg_url();
    let pgbench = |args: &[&str]| {
        let out = Command::new("pgbench")
            .args(args)
            .arg(&url)
            .output()
            .expect("pgbench is installed (scripts/setup.sh installs postgresql-client)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        text
    };
    let init = pgbench(&["-i", "-s", "1"]);
    assert!(
        init.contains("creating primary keys...") && init.contains("done in"),
        "{init}"
    );
    let run = pgbench(&["-c", "4", "-j", "2", "-T", "10", "--max-tries", "20"]);
    let number = |label: &str| -> u64 {
        let line = run
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{run}"));
        line[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad {line:?}"))
    };
    let processed = number("number of transactions actually processed:");
    let failed = number("number of failed transactions:");
    eprintln!("pgbench: {processed} transactions, {failed} failed\n{run}");
    assert!(processed > 0, "{run}");
    assert_eq!(failed, 0, "{run}");

    let c = cluster.pg().await.unwrap();
    let row = c
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint,
                    (SELECT sum(tbalance) FROM pgbench_tellers)::bigint,
                    (SELECT sum(bbalance) FROM pgbench_branches)::bigint,
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::bigint,
                    (SELECT count(*) FROM pgbench_history)",
            &[],
        )
        .await
        .unwrap();
    let (a, t, b, h, n): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!((a, t, b), (h, h, h), "balances disagree with the history");
    assert_eq!(
        n as u64, processed,
        "history rows vs committed transactions"
    );
}
