//! Durability: an acknowledged write survives `kill -9` of any data engine,
//! checkpoints keep the log short without losing anything, and old row
//! versions are garbage-collected after the retention window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eon_proto::v1 as pb;
use eon_testkit::TestCluster;

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE ledger (id bigint PRIMARY KEY, v text)")
        .await
        .unwrap();

    // Writers insert as fast as they can while data engines are killed;
    // every id whose INSERT was acknowledged must be there afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3i64 {
        let client = cluster.pg().await.unwrap();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let id = w * 1_000_000 + i;
                i += 1;
                if client
                    .execute("INSERT INTO ledger VALUES ($1, 'x')", &[&id])
                    .await
                    .is_ok()
                {
                    acked.push(id);
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["data-engine-1", "data-engine-2", "data-engine-3"] {
        cluster.kill_and_wait_restart(name).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "only {} writes were acknowledged",
        acked.len()
    );
    let present: std::collections::HashSet<i64> = c
        .query("SELECT id FROM ledger", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test]
async fn checkpoints_bound_the_log_and_keep_the_data() {
    let cluster = TestCluster::builder()
        .env("EON_CHECKPOINT_BYTES", "65536")
        .data_engines(1)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, pad text)")
        .await
        .unwrap();
    let pad = "p".repeat(200);
    for batch in 0..20i64 {
        let values: Vec<String> = (0..100)
            .map(|k| format!("({}, '{pad}')", batch * 100 + k))
            .collect();
        c.execute(
            &format!("INSERT INTO big VALUES {}", values.join(", ")),
            &[],
        )
        .await
        .unwrap();
    }
    c.execute("UPDATE big SET pad = 'short' WHERE id % 2 = 0", &[])
        .await
        .unwrap();
    c.execute("DELETE FROM big WHERE id >= 1900", &[])
        .await
        .unwrap();
    // The background checkpointer runs once a second.
    let (_, addr) = cluster.data_engines().await.unwrap().remove(0);
    let mut de = pb::data_engine_client::DataEngineClient::new(cluster.channel(&addr).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = de.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        if s.counters["checkpoints"] >= 1 && s.counters["wal_bytes"] > 65536 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: {:?}",
            s.counters
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wal_dir = cluster.dir.join("data-engine-1").join("wal");
    let segments = std::fs::read_dir(&wal_dir).unwrap().count();
    assert!(
        segments <= 2,
        "{segments} log segments left after checkpoints"
    );
    assert!(
        cluster
            .dir
            .join("data-engine-1")
            .join("checkpoint.bin")
            .exists()
    );

    // Recovery = checkpoint + the log after it.
    cluster
        .kill_and_wait_restart("data-engine-1")
        .await
        .unwrap();
    let c = cluster.pg().await.unwrap();
    let row = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE pad = 'short') FROM big",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1900, 950));
}

#[tokio::test]
async fn old_versions_are_collected_after_the_retention_window() {
    let cluster = TestCluster::builder()
        .env("EON_GC_RETENTION", "1")
        .data_engines(1)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE hot (id int PRIMARY KEY, v int); INSERT INTO hot VALUES (1, 0)")
        .await
        .unwrap();
    let reader = cluster.pg().await.unwrap();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let v: i32 = reader
        .query_one("SELECT v FROM hot", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 0);
    for _ in 0..30 {
        c.execute("UPDATE hot SET v = v + 1", &[]).await.unwrap();
    }
    // The background pass removes the 30 superseded versions (and the
    // data engine goes on serving meanwhile).
    let (_, addr) = cluster.data_engines().await.unwrap().remove(0);
    let mut de = pb::data_engine_client::DataEngineClient::new(cluster.channel(&addr).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stats = de.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        let collected = stats
            .counters
            .get("versions_collected")
            .copied()
            .unwrap_or(0);
        if collected >= 30 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {collected} versions collected"
        );
        let v: i32 = c.query_one("SELECT v FROM hot", &[]).await.unwrap().get(0);
        assert_eq!(v, 30);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A snapshot older than the retention window is refused, not answered
    // wrongly.
    let err = reader
        .query_one("SELECT v FROM hot", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "72000", "{err}");
    reader.batch_execute("ROLLBACK").await.unwrap();
    let v: i32 = reader
        .query_one("SELECT v FROM hot", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 30);
}

/// One data engine's counters.
async fn engine_counters(cluster: &TestCluster) -> std::collections::HashMap<String, u64> {
    let (_, addr) = cluster.data_engines().await.unwrap().remove(0);
    let mut de = pb::data_engine_client::DataEngineClient::new(cluster.channel(&addr).unwrap());
    de.stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .counters
}

#[tokio::test]
async fn a_table_larger_than_the_memory_limit_lives_in_columnar_segments() {
    const LIMIT: u64 = 1 << 20;
    let cluster = TestCluster::builder()
        .env("EON_MEMORY_LIMIT", "1MiB")
        .env("EON_GC_RETENTION", "2")
        .data_engines(1)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, grp int, pad text)")
        .await
        .unwrap();
    // About 6 MiB of rows: six times the limit.
    let pad = "p".repeat(500);
    for chunk in 0..12 {
        let (lo, hi) = (chunk * 1000 + 1, chunk * 1000 + 1000);
        c.execute(&format!("INSERT INTO big SELECT i, i % 10, '{pad}' || i FROM generate_series({lo}, {hi}) AS g(i)"), &[])
            .await
            .unwrap();
    }
    let stats = engine_counters(&cluster).await;
    assert!(stats["segments_written"] >= 8, "{stats:?}");
    assert!(stats["memory_used"] <= LIMIT, "{stats:?}");
    // Compaction merges the segments of every shard that has four or more
    // (flushes take the largest shards first, so some shards may have
    // fewer, and keep them): eventually no shard is above three, and
    // merging happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = engine_counters(&cluster).await;
        if c["segments"] <= 8 * 3 && c["segments"] < c["segments_written"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "segments were not compacted: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everything reads back right, and scans read the segments from disk.
    let check = async |c: &tokio_postgres::Client| {
        let before = engine_counters(&cluster).await["segment_rows_read"];
        let row = c
            .query_one(
                "SELECT count(*), sum(id)::bigint, count(DISTINCT pad) FROM big",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2)
            ),
            (12000, 72006000, 12000)
        );
        let after = engine_counters(&cluster).await["segment_rows_read"];
        assert!(
            after - before >= 10_000,
            "a full scan read {} rows from segments",
            after - before
        );
        let pad: String = c
            .query_one("SELECT pad FROM big WHERE id = 4321", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(pad, format!("{}4321", "p".repeat(500)));
        let ids: Vec<i64> = c
            .query(
                "SELECT id FROM big WHERE id BETWEEN 9990 AND 10010 ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, (9990..=10010).collect::<Vec<i64>>());
    };
    // Updates and deletes of rows that live in segments.
    c.execute("UPDATE big SET grp = -1 WHERE id <= 100", &[])
        .await
        .unwrap();
    c.execute("DELETE FROM big WHERE id = 7", &[])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO big VALUES (7, 0, $1)",
        &[&format!("{}7", "p".repeat(500))],
    )
    .await
    .unwrap();
    let dup = c
        .execute("INSERT INTO big VALUES (8, 0, 'x')", &[])
        .await
        .unwrap_err();
    assert_eq!(dup.code().unwrap().code(), "23505");
    let n: i64 = c
        .query_one("SELECT count(*) FROM big WHERE grp = -1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 99);
    check(&c).await;

    // A crash loses nothing: segments and the log come back.
    cluster
        .kill_and_wait_restart("data-engine-1")
        .await
        .unwrap();
    let c = cluster.pg().await.unwrap();
    check(&c).await;

    // What truly cannot fit — one transaction staging more than the limit
    // (its uncommitted writes must stay in memory) — fails cleanly.
    c.batch_execute("BEGIN").await.unwrap();
    let mut refused = None;
    for chunk in 0..12 {
        let (lo, hi) = (100_000 + chunk * 1000, 100_999 + chunk * 1000);
        let r = c
            .execute(
                &format!(
                    "INSERT INTO big SELECT i, 0, '{pad}' FROM generate_series({lo}, {hi}) AS g(i)"
                ),
                &[],
            )
            .await;
        if let Err(e) = r {
            refused = Some(e.code().unwrap().code().to_string());
            break;
        }
    }
    assert_eq!(refused.as_deref(), Some("53200"));
    c.batch_execute("ROLLBACK").await.unwrap();
    c.execute("INSERT INTO big VALUES (200000, 0, 'after')", &[])
        .await
        .unwrap();
    c.execute("DELETE FROM big WHERE id = 200000", &[])
        .await
        .unwrap();
    check(&c).await;
}
