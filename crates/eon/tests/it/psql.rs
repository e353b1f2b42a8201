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
}
