//! The bank workload: concurrent transfers between accounts, in
//! transactions, while data engines and the query engine are killed with
//! SIGKILL and restarted. Afterwards money is neither created nor
//! destroyed, every acknowledged transfer is there, and no transfer is half
//! there.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eon_testkit::TestCluster;

const ACCOUNTS: i64 = 20;
const START: i64 = 1000;

/// A small deterministic generator (the test must not depend on a seed
/// source to be repeatable in spirit; the kills make timing vary anyway).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn client(cluster_url: &str) -> Option<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(cluster_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_survive_kill_9() {
    // A small memory limit, so committed rows keep moving to columnar
    // segments while engines are killed.
    let cluster = TestCluster::builder()
        .env("EON_MEMORY_LIMIT", "16KiB")
        .env("EON_GC_RETENTION", "5")
        .start()
        .unwrap();
    let url = cluster.pg_url();
    let setup = cluster.pg().await.unwrap();
    setup
        .batch_execute("CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL)")
        .await
        .unwrap();
    setup
        .batch_execute("CREATE TABLE ledger (id bigint PRIMARY KEY, src bigint NOT NULL, dst bigint NOT NULL, amount bigint NOT NULL)")
        .await
        .unwrap();
    setup
        .execute(
            &format!(
                "INSERT INTO accounts SELECT i, {START} FROM generate_series(1, {ACCOUNTS}) AS g(i)"
            ),
            &[],
        )
        .await
        .unwrap();
    drop(setup);

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let stop = stop.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Lcg(w * 7919 + 1);
            let mut acked: Vec<i64> = Vec::new();
            let mut attempts = 0u64;
            let mut c = None;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                if c.is_none() {
                    c = client(&url).await;
                    if c.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
                let cl = c.as_ref().unwrap();
                let src = 1 + rng.next(ACCOUNTS as u64) as i64;
                let dst = 1 + (src + rng.next(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
                let amount = 1 + rng.next(50) as i64;
                let id = (w as i64) << 32 | n;
                n += 1;
                attempts += 1;
                let sql = format!(
                    "BEGIN; \
                     UPDATE accounts SET balance = balance - {amount} WHERE id = {src}; \
                     UPDATE accounts SET balance = balance + {amount} WHERE id = {dst}; \
                     INSERT INTO ledger VALUES ({id}, {src}, {dst}, {amount}); \
                     COMMIT"
                );
                match cl.simple_query(&sql).await {
                    Ok(msgs) => {
                        // COMMIT of a block that failed answers ROLLBACK; a
                        // committed one has all four statements counted.
                        let done = msgs
                            .iter()
                            .filter(|m| {
                                matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_))
                            })
                            .count();
                        if done == 5 {
                            acked.push(id);
                        }
                    }
                    Err(e) => {
                        if e.is_closed() || e.code().is_none() {
                            c = None;
                        } else if let Some(cl) = c.as_ref() {
                            let _ = cl.simple_query("ROLLBACK").await;
                        }
                    }
                }
            }
            (acked, attempts)
        }));
    }

    // Chaos: kill a data engine or the query engine every couple of seconds.
    let victims = [
        "data-engine-1",
        "query-engine-1",
        "data-engine-2",
        "data-engine-3",
        "query-engine-1",
    ];
    // Segment files are counted before each kill: a restarted engine
    // rebuilds its replicated shards from their groups, in memory, and
    // flushes them again only as they grow.
    let mut segments = 0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for v in victims {
        segments = segments.max(segment_files(&cluster).await);
        cluster.kill_and_wait_restart(v).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    segments = segments.max(segment_files(&cluster).await);
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut attempts = 0;
    for w in workers {
        let (a, n) = w.await.unwrap();
        acked.extend(a);
        attempts += n;
    }
    assert!(
        acked.len() >= 20,
        "only {} of {attempts} transfers were acknowledged",
        acked.len()
    );

    // Check, retrying while leftover intents are being resolved.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (balances, ledger) = loop {
        let result = async {
            let c = client(&url).await.ok_or("no connection")?;
            let balances: HashMap<i64, i64> = c
                .query("SELECT id, balance FROM accounts", &[])
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let ledger: Vec<(i64, i64, i64, i64)> = c
                .query("SELECT id, src, dst, amount FROM ledger", &[])
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            Ok::<_, String>((balances, ledger))
        }
        .await;
        match result {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "the cluster did not settle: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(balances.len(), ACCOUNTS as usize);
    // Every account's balance is explained by the transfers in the ledger:
    // no transfer is half applied.
    let mut expected: HashMap<i64, i64> = (1..=ACCOUNTS).map(|i| (i, START)).collect();
    for (_, src, dst, amount) in &ledger {
        *expected.get_mut(src).unwrap() -= amount;
        *expected.get_mut(dst).unwrap() += amount;
    }
    let mut off: Vec<(i64, i64)> = balances
        .iter()
        .filter(|(id, b)| expected[*id] != **b)
        .map(|(id, b)| (*id, b - expected[id]))
        .collect();
    off.sort();
    assert_eq!(
        balances.values().sum::<i64>(),
        ACCOUNTS * START,
        "money was created or destroyed; (account, balance - ledger's): {off:?}"
    );
    assert_eq!(
        balances, expected,
        "balances disagree with the ledger: {off:?}"
    );
    let present: std::collections::HashSet<i64> = ledger.iter().map(|l| l.0).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged transfers are missing",
        lost.len()
    );
    assert!(segments > 0, "rows moved to segments during the run");
    eprintln!(
        "bank: {} transfers acknowledged of {attempts} attempted, {} in the ledger, {segments} segment files",
        acked.len(),
        ledger.len()
    );
}

/// Segment files on all data engines now.
async fn segment_files(cluster: &TestCluster) -> u64 {
    let mut segments = 0;
    for (_, addr) in cluster.data_engines().await.unwrap() {
        let mut de = eon_proto::v1::data_engine_client::DataEngineClient::new(
            cluster.channel(&addr).unwrap(),
        );
        if let Ok(stats) = de.stats(eon_proto::v1::StatsRequest {}).await {
            segments += stats.into_inner().counters["segments"];
        }
    }
    segments
}
