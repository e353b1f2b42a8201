//! Filters and projections run on the data engines: proven by the data
//! engines' own counters.

use std::collections::HashMap;

use eon_proto::v1 as pb;
use eon_testkit::TestCluster;

/// Every data engine's counters, by engine id.
pub(crate) async fn counters(cluster: &TestCluster) -> HashMap<u64, HashMap<String, u64>> {
    let mut out = HashMap::new();
    for (id, addr) in cluster.data_engines().await.unwrap() {
        let mut de = pb::data_engine_client::DataEngineClient::new(cluster.channel(&addr).unwrap());
        out.insert(
            id,
            de.stats(pb::StatsRequest {})
                .await
                .unwrap()
                .into_inner()
                .counters,
        );
    }
    out
}

/// How much each counter grew, summed over engines, and which engines
/// served scans.
pub(crate) fn delta(
    before: &HashMap<u64, HashMap<String, u64>>,
    after: &HashMap<u64, HashMap<String, u64>>,
    name: &str,
) -> (u64, Vec<u64>) {
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
    c.batch_execute("CREATE TABLE facts (id int PRIMARY KEY, v int, blob text)")
        .await
        .unwrap();
    let blob = "b".repeat(1000);
    c.execute(
        &format!(
            "INSERT INTO facts SELECT i, i % 100, '{blob}' FROM generate_series(1, 1000) AS g(i)"
        ),
        &[],
    )
    .await
    .unwrap();

    // WHERE pk = constant: one shard on one data engine, one key read.
    let b = counters(&cluster).await;
    let v: i32 = c
        .query_one("SELECT v FROM facts WHERE id = 42", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    let a = counters(&cluster).await;
    let (scans, engines) = delta(&b, &a, "scans");
    assert_eq!((scans, engines.len()), (1, 1), "one scan on one engine");
    assert_eq!(delta(&b, &a, "point_lookups").0, 1);
    assert_eq!(delta(&b, &a, "rows_scanned").0, 1);
    assert_eq!(delta(&b, &a, "rows_returned").0, 1);

    // A range filter is evaluated on every engine; only matches come back.
    let b = counters(&cluster).await;
    // (Rows, not count(*): an aggregate's partial counts would come back
    // instead, see `distributed`.)
    let n = c
        .query("SELECT id FROM facts WHERE v >= 95", &[])
        .await
        .unwrap()
        .len();
    assert_eq!(n, 50);
    let a = counters(&cluster).await;
    assert_eq!(
        delta(&b, &a, "rows_scanned").0,
        1000,
        "every row is examined where it lives"
    );
    assert_eq!(
        delta(&b, &a, "rows_returned").0,
        50,
        "only matching rows leave the data engines"
    );
    assert_eq!(delta(&b, &a, "scans").1.len(), 3);

    // Only needed columns cross the network: the same rows without the
    // 1000-byte column cost a fraction of the bytes.
    let b = counters(&cluster).await;
    c.query("SELECT id FROM facts WHERE v < 10", &[])
        .await
        .unwrap();
    let mid = counters(&cluster).await;
    c.query("SELECT blob FROM facts WHERE v < 10", &[])
        .await
        .unwrap();
    let a = counters(&cluster).await;
    let narrow = delta(&b, &mid, "bytes_returned").0;
    let wide = delta(&mid, &a, "bytes_returned").0;
    assert!(
        wide > 100 * 1000,
        "100 rows of the wide column: {wide} bytes"
    );
    assert!(
        narrow * 20 < wide,
        "narrow {narrow} bytes vs wide {wide} bytes"
    );

    // EXPLAIN shows what is pushed where.
    let plan: Vec<String> = c
        .query("EXPLAIN SELECT v FROM facts WHERE id = 7", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let text = plan.join("\n");
    assert!(text.contains("EonScanExec: table=facts"), "{text}");
    assert!(text.contains("point lookup of 1 key(s)"), "{text}");
    assert!(
        text.contains("filter=id = Int32(7) (on data engines)"),
        "{text}"
    );
    assert_eq!(text.matches("data-engine-").count(), 1, "{text}");
    let plan: Vec<String> = c
        .query("EXPLAIN SELECT v FROM facts WHERE v > 3", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let text = plan.join("\n");
    assert!(
        text.contains("projection=[v]") && text.contains("v > Int32(3)"),
        "{text}"
    );
    assert_eq!(text.matches("data-engine-").count(), 3, "{text}");
}

/// EXPLAIN's lines, joined.
pub(crate) async fn explain(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn key_ranges_read_only_their_keys_and_come_back_in_key_order() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE ev (id bigint PRIMARY KEY, v int)")
        .await
        .unwrap();
    c.execute(
        "INSERT INTO ev SELECT i, i % 7 FROM generate_series(1, 3000) AS g(i)",
        &[],
    )
    .await
    .unwrap();

    // A range on the key: each shard reads only that part of its B-tree.
    let sql = "SELECT id, v FROM ev WHERE id >= 1000 AND id < 1100 ORDER BY id";
    let b = counters(&cluster).await;
    let ids: Vec<i64> = c
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let a = counters(&cluster).await;
    assert_eq!(ids, (1000..1100).collect::<Vec<i64>>());
    assert_eq!(
        delta(&b, &a, "rows_scanned").0,
        100,
        "only keys in the range are read"
    );
    // In key order without a sort: shards stream in key order, and the
    // query engine merges them.
    let plan = explain(&c, sql).await;
    assert!(
        plan.contains("SortPreservingMergeExec: [id@0 ASC") && plan.contains("key range"),
        "{plan}"
    );
    assert!(!plan.contains("SortExec"), "{plan}");
    let plan = explain(&c, "SELECT id FROM ev ORDER BY id LIMIT 5").await;
    assert!(!plan.contains("SortExec"), "{plan}");
    let first: Vec<i64> = c
        .query("SELECT id FROM ev ORDER BY id LIMIT 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(first, vec![1, 2, 3, 4, 5]);
    // BETWEEN, a constant on the left, and bounds that leave nothing.
    for (sql, want) in [
        ("SELECT count(*) FROM ev WHERE id BETWEEN 10 AND 19", 10),
        ("SELECT count(*) FROM ev WHERE 2990 < id", 10),
        ("SELECT count(*) FROM ev WHERE id > 5 AND id <= 5", 0),
        ("SELECT count(*) FROM ev WHERE id > 9223372036854775807", 0),
        ("SELECT count(*) FROM ev WHERE id < 3 OR id > 2998", 4),
    ] {
        let n: i64 = c.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(n, want, "{sql}");
    }
    // Ordering by another column still sorts.
    assert!(
        explain(&c, "SELECT v FROM ev ORDER BY v")
            .await
            .contains("SortExec")
    );

    // Composite keys: ordered by their columns in turn; a range on the
    // first column.
    c.batch_execute("CREATE TABLE pairs (a text, b int, x int, PRIMARY KEY (a, b))")
        .await
        .unwrap();
    c.execute("INSERT INTO pairs VALUES ('b', 2, 1), ('a', 9, 2), ('b', 1, 3), ('c', 0, 4), ('a', 1, 5), ('', 5, 6)", &[]).await.unwrap();
    let sql = "SELECT a, b FROM pairs WHERE a >= 'a' AND a <= 'b' ORDER BY a, b";
    assert!(!explain(&c, sql).await.contains("SortExec"));
    let got: Vec<(String, i32)> = c
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, i32)> = [("a", 1), ("a", 9), ("b", 1), ("b", 2)]
        .iter()
        .map(|(a, b)| (a.to_string(), *b))
        .collect();
    assert_eq!(got, want);
}
