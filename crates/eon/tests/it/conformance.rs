//! eon's own components pass the conformance suites of their interfaces.

use std::io::BufRead;
use std::process::{Command, Stdio};

use eon_proto::v1 as pb;
use eon_testkit::{TestCluster, eon_bin};

#[tokio::test]
async fn meta_conforms() {
    // A scratch meta: the suite registers a node of its own.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(eon_bin())
        .args(["meta", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(line.strip_prefix("EON-READY ").unwrap()).unwrap();
    let addr = ready["grpc"].as_str().unwrap().to_string();
    let report = eon_conformance::meta(&addr, None).await;
    let _ = child.kill();
    let _ = child.wait();
    let report = report.unwrap();
    assert_eq!(report.passed.len(), 12, "{report}");
}

#[tokio::test]
async fn data_engine_query_engine_and_agent_conform() {
    let cluster = TestCluster::start().unwrap();
    let (_, de) = cluster.data_engines().await.unwrap().remove(0);
    let report = eon_conformance::data_engine(&de, Some(&cluster.secret()))
        .await
        .unwrap();
    assert_eq!(report.passed.len(), 16, "{report}");

    let mut meta = cluster.meta().unwrap();
    let nodes = meta
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let qe = nodes
        .iter()
        .find(|n| n.kind == pb::NodeKind::QueryEngine as i32)
        .unwrap();
    let report = eon_conformance::query_engine(&qe.grpc_address, Some(&cluster.secret()))
        .await
        .unwrap();
    assert_eq!(report.passed.len(), 7, "{report}");

    let report = eon_conformance::agent(&cluster.agent_addr().unwrap(), Some(&cluster.secret()))
        .await
        .unwrap();
    assert_eq!(report.passed.len(), 4, "{report}");

    // The same suites from the command line, as another implementation
    // would run them.
    let out = Command::new(eon_bin())
        .args(["conformance", "data-engine", "--addr", &de])
        .env("EON_CLUSTER_SECRET", cluster.secret())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}
