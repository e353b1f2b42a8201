//! `eon bench tpch` as a user runs it: TPC-H at SF 0.01 on a cluster of
//! the benchmark's own (3 data engines), every one of the 22 answers
//! checked against PostgreSQL 15's answers on the same data, kept in
//! `tests/tpch-sf0.01/` (written by `eon bench tpch --scale 0.01 --compare
//! --write-answers crates/eon/tests/tpch-sf0.01`).

use std::path::Path;
use std::process::Command;

#[test]
fn tpch_answers_match_postgresql_at_sf_0_01() {
    let answers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tpch-sf0.01");
    let out = Command::new(eon_testkit::eon_bin())
        .args(["bench", "tpch", "--scale", "0.01", "--shards", "4"])
        .arg("--answers")
        .arg(&answers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("22 answers checked against the --answers files"),
        "{stdout}"
    );
    for q in 1..=22 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("Q{q:02} ")))
            .unwrap_or_else(|| panic!("no row for Q{q:02}:\n{stdout}"));
        assert!(!line.contains("WRONG"), "{line}");
    }
    // Not a stub: a wrong reference answer fails the run.
    let dir = tempfile::tempdir().unwrap();
    let q6 = std::fs::read_to_string(answers.join("q06.tbl")).unwrap();
    let mut lines: Vec<&str> = q6.lines().collect();
    let changed = format!("9{}", lines[1]);
    lines[1] = &changed;
    std::fs::write(dir.path().join("q06.tbl"), lines.join("\n")).unwrap();
    let out = Command::new(eon_testkit::eon_bin())
        .args([
            "bench",
            "tpch",
            "--scale",
            "0.01",
            "--shards",
            "2",
            "--data-engines",
            "1",
        ])
        .args(["--queries", "6", "--answers"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("Q06 eon: row 1"), "{stdout}");
    assert!(
        stderr.contains("1 of 1 queries not answered right on eon: Q06"),
        "{stderr}"
    );
}
