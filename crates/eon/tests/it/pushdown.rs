//! Filters and projections run on the data engines: proven by the data
//! engines' own counters.

use std::collections::HashMap;

use eon_proto::v1 as pb;
use eon_testkit::TestCluster;

/// Every data engine's counters, by engine id.
async fn counters(cluster: &TestCluster) -> HashMap<u64, HashMap<String, u64>> {
    let mut out = HashMap::new();
    for (id, addr) in cluster.data_engines().await.unwrap() {
        let mut de = pb::data_engine_client::DataEngineClient::new(eon_common::node::channel(&addr).unwrap());
        out.insert(id, de.stats(pb::StatsRequest {}).await.unwrap().into_inner().counters);
    }
    out
}

/// How much each counter grew, summed over engines, and which engines
/// served scans.
fn delta(before: &HashMap<u64, HashMap<String, u64>>, after: &HashMap<u64, HashMap<String, u64>>, name: &str) -> (u64, Vec<u64>) {
    let mut total = 0;
    let mut engines = Vec::new();
    for (id, a) in after {
        let d = a.get(name).copied().unwrap_or(0) - before[id].get(name).copied().unwrap_or(0);
        total += d;
        if d > 0 {
            engines.push(*id);
        }
    }
    (total, engines)
}

#[tokio::test]
async fn filters_projections_and_point_lookups_run_where_the_data_is() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE facts (id int PRIMARY KEY, v int, blob text)").await.unwrap();
    let blob = "b".repeat(1000);
    c.execute(&format!("INSERT INTO facts SELECT i, i % 100, '{blob}' FROM generate_series(1, 1000) AS g(i)"), &[]).await.unwrap();

    // WHERE pk = constant: one shard on one data engine, one key read.
    let b = counters(&cluster).await;
    let v: i32 = c.query_one("SELECT v FROM facts WHERE id = 42", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    let a = counters(&cluster).await;
    let (scans, engines) = delta(&b, &a, "scans");
    assert_eq!((scans, engines.len()), (1, 1), "one scan on one engine");
    assert_eq!(delta(&b, &a, "point_lookups").0, 1);
    assert_eq!(delta(&b, &a, "rows_scanned").0, 1);
    assert_eq!(delta(&b, &a, "rows_returned").0, 1);

    // A range filter is evaluated on every engine; only matches come back.
    let b = counters(&cluster).await;
    let n: i64 = c.query_one("SELECT count(*) FROM facts WHERE v >= 95", &[]).await.unwrap().get(0);
    assert_eq!(n, 50);
    let a = counters(&cluster).await;
    assert_eq!(delta(&b, &a, "rows_scanned").0, 1000, "every row is examined where it lives");
    assert_eq!(delta(&b, &a, "rows_returned").0, 50, "only matching rows leave the data engines");
    assert_eq!(delta(&b, &a, "scans").1.len(), 3);

    // Only needed columns cross the network: the same rows without the
    // 1000-byte column cost a fraction of the bytes.
    let b = counters(&cluster).await;
    c.query("SELECT id FROM facts WHERE v < 10", &[]).await.unwrap();
    let mid = counters(&cluster).await;
    c.query("SELECT blob FROM facts WHERE v < 10", &[]).await.unwrap();
    let a = counters(&cluster).await;
    let narrow = delta(&b, &mid, "bytes_returned").0;
    let wide = delta(&mid, &a, "bytes_returned").0;
    assert!(wide > 100 * 1000, "100 rows of the wide column: {wide} bytes");
    assert!(narrow * 20 < wide, "narrow {narrow} bytes vs wide {wide} bytes");

    // EXPLAIN shows what is pushed where.
    let plan: Vec<String> = c.query("EXPLAIN SELECT v FROM facts WHERE id = 7", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let text = plan.join("\n");
    assert!(text.contains("EonScanExec: table=facts"), "{text}");
    assert!(text.contains("point lookup of 1 key(s)"), "{text}");
    assert!(text.contains("filter=id = Int32(7) (on data engines)"), "{text}");
    assert_eq!(text.matches("data-engine-").count(), 1, "{text}");
    let plan: Vec<String> = c.query("EXPLAIN SELECT v FROM facts WHERE v > 3", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let text = plan.join("\n");
    assert!(text.contains("projection=[v]") && text.contains("v > Int32(3)"), "{text}");
    assert_eq!(text.matches("data-engine-").count(), 3, "{text}");
}
