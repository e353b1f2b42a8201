//! The client matrix: each PostgreSQL driver runs a test program of its
//! own (clients/) against one live cluster — connect, DDL, parameterized
//! CRUD, transactions, types, errors with SQLSTATE, metadata — in the
//! driver's own terms. `scripts/clients.sh` installs the drivers (the
//! README's test command runs it); tokio-postgres and psql have their own
//! modules (pg.rs, psql.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use eon_testkit::TestCluster;

/// Where scripts/clients.sh installed the drivers.
fn clients_dir() -> PathBuf {
    match std::env::var_os("EON_CLIENTS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/eon-clients")
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run one client program; its output is shown when it fails.
fn run(name: &str, mut cmd: Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{name}: cannot start {cmd:?}: {e} (run scripts/clients.sh to install the drivers)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let checks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    eprintln!("{name}: {checks} checks passed");
}

#[tokio::test]
async fn every_driver_passes_its_own_test_program() {
    let dir = clients_dir();
    let python = dir.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/clients.sh to install the drivers",
        python.display()
    );
    let cluster = TestCluster::builder().data_engines(2).start().unwrap();
    let url = cluster.pg_url();
    let clients = repo().join("clients");
    for program in ["psycopg3", "psycopg2", "asyncpg", "sqlalchemy"] {
        let mut cmd = Command::new(&python);
        cmd.arg(clients.join(format!("python/{program}_test.py")))
            .arg(&url);
        run(program, cmd);
    }
    let mut node = Command::new("node");
    node.current_dir(clients.join("node"))
        .arg("test.js")
        .arg(&url);
    run("node-postgres", node);
    let jdbc_url = url.replacen("postgresql://", "jdbc:postgresql://", 1);
    let jdbc_url = match jdbc_url.split_once('@') {
        // JDBC takes the user and password as properties, not in the
        // authority.
        Some((_, host)) => format!(
            "jdbc:postgresql://{host}&user={}&password={}",
            eon_common::ADMIN_ROLE,
            cluster.admin_password()
        ),
        None => jdbc_url,
    };
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(format!(
            "{}:/usr/share/java/postgresql.jar",
            dir.join("java").display()
        ))
        .arg("ClientTest")
        .arg(jdbc_url);
    run("jdbc", java);
}
