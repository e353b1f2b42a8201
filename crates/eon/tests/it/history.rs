//! A serializability checker for list-append histories (in the manner of
//! Jepsen's Elle), and a test that runs a recorded concurrent workload on eon
//! through it.
//!
//! Every key holds a list; transactions read keys and append unique values.
//! Because values are unique and reads return whole lists, the history
//! reveals each key's version order (the longest list read; every other
//! read must be a prefix of it), and from that the dependencies between
//! committed transactions:
//!
//! | edge | from → to | because |
//! |------|-----------|---------|
//! | ww   | writer of vᵢ → writer of vᵢ₊₁ | vᵢ₊₁ was appended after vᵢ |
//! | wr   | writer of v → reader whose read ends in v | it read that write |
//! | rw   | reader whose read ends in vᵢ → writer of vᵢ₊₁ | it did not see that write |
//!
//! The history is serializable only if this graph has no cycle. Reads of
//! values appended by aborted transactions, and reads that are not prefixes
//! of the version order, are anomalies by themselves.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Read of key: the list seen.
    Read(u32, Vec<u64>),
    /// Append of value to key.
    Append(u32, u64),
}

#[derive(Debug, Clone)]
pub struct Txn {
    pub ops: Vec<Op>,
    pub committed: bool,
}

#[derive(Debug, PartialEq)]
pub enum Anomaly {
    /// A read saw a value appended by an aborted transaction.
    AbortedRead { key: u32, value: u64 },
    /// A read is not a prefix of the key's version order.
    IncompatibleOrder { key: u32 },
    /// The dependency graph has a cycle through these transactions.
    Cycle(Vec<usize>),
}

pub fn check(history: &[Txn]) -> Result<(), Anomaly> {
    // Who wrote each value.
    let mut writer: HashMap<u64, (usize, bool)> = HashMap::new();
    for (t, txn) in history.iter().enumerate() {
        for op in &txn.ops {
            if let Op::Append(_, v) = op {
                writer.insert(*v, (t, txn.committed));
            }
        }
    }
    // Version order per key: the longest committed read.
    let mut order: HashMap<u32, Vec<u64>> = HashMap::new();
    for txn in history.iter().filter(|t| t.committed) {
        for op in &txn.ops {
            if let Op::Read(k, list) = op {
                for v in list {
                    if matches!(writer.get(v), Some((_, false))) {
                        return Err(Anomaly::AbortedRead { key: *k, value: *v });
                    }
                }
                let longest = order.entry(*k).or_default();
                if list.len() > longest.len() {
                    *longest = list.clone();
                }
            }
        }
    }
    for txn in history.iter().filter(|t| t.committed) {
        for op in &txn.ops {
            if let Op::Read(k, list) = op {
                if order[k][..list.len()] != list[..] {
                    return Err(Anomaly::IncompatibleOrder { key: *k });
                }
            }
        }
    }
    // The dependency graph over committed transactions.
    let mut edges: HashMap<usize, HashSet<usize>> = HashMap::new();
    let mut edge = |a: usize, b: usize| {
        if a != b {
            edges.entry(a).or_default().insert(b);
        }
    };
    for list in order.values() {
        for w in list.windows(2) {
            edge(writer[&w[0]].0, writer[&w[1]].0);
        }
    }
    for (t, txn) in history.iter().enumerate().filter(|(_, t)| t.committed) {
        for op in &txn.ops {
            let Op::Read(k, list) = op else { continue };
            // Reads that include the transaction's own appends say nothing
            // about others beyond the last foreign value.
            let seen = list.iter().rev().find(|v| writer[*v].0 != t);
            if let Some(v) = seen {
                edge(writer[v].0, t);
            }
            let next = order[k].get(list.len());
            if let Some(v) = next {
                if writer[v].0 != t {
                    edge(t, writer[v].0);
                }
            }
        }
    }
    // A cycle? Iterative depth-first search with colours.
    let mut colour: HashMap<usize, u8> = HashMap::new();
    for &start in edges.keys() {
        if colour.get(&start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(start, edges[&start].iter().copied().collect())];
        let mut path = vec![start];
        colour.insert(start, 1);
        while let Some((_, next)) = stack.last_mut() {
            match next.pop() {
                Some(n) => match colour.get(&n).copied().unwrap_or(0) {
                    0 => {
                        colour.insert(n, 1);
                        path.push(n);
                        stack.push((
                            n,
                            edges
                                .get(&n)
                                .map(|s| s.iter().copied().collect())
                                .unwrap_or_default(),
                        ));
                    }
                    1 => {
                        let from = path.iter().position(|&p| p == n).unwrap();
                        return Err(Anomaly::Cycle(path[from..].to_vec()));
                    }
                    _ => {}
                },
                None => {
                    let (done, _) = stack.pop().unwrap();
                    colour.insert(done, 2);
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod checker {
    use super::*;

    fn t(ops: Vec<Op>) -> Txn {
        Txn {
            ops,
            committed: true,
        }
    }
    use Op::{Append as A, Read as R};

    #[test]
    fn serial_histories_pass() {
        let h = vec![
            t(vec![A(1, 1), A(2, 2)]),
            t(vec![R(1, vec![1]), A(1, 3)]),
            t(vec![R(1, vec![1, 3]), R(2, vec![2])]),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn write_skew_is_caught() {
        // Both read both keys empty, each appends to a different one.
        let h = vec![
            t(vec![R(1, vec![]), R(2, vec![]), A(1, 10)]),
            t(vec![R(1, vec![]), R(2, vec![]), A(2, 20)]),
            t(vec![R(1, vec![10]), R(2, vec![20])]),
        ];
        assert!(matches!(check(&h), Err(Anomaly::Cycle(_))));
    }

    #[test]
    fn lost_update_is_caught() {
        // Both read the same state of key 1 and append to it.
        let h = vec![
            t(vec![R(1, vec![]), A(1, 1)]),
            t(vec![R(1, vec![]), A(1, 2)]),
            t(vec![R(1, vec![1, 2])]),
        ];
        assert!(matches!(check(&h), Err(Anomaly::Cycle(_))));
    }

    #[test]
    fn dirty_read_is_caught() {
        let h = vec![
            Txn {
                ops: vec![A(1, 1)],
                committed: false,
            },
            t(vec![R(1, vec![1])]),
        ];
        assert_eq!(check(&h), Err(Anomaly::AbortedRead { key: 1, value: 1 }));
    }

    #[test]
    fn read_skew_is_caught() {
        // T1 writes both keys; T2 sees T1's write on key 2 but not on key 1.
        let h = vec![
            t(vec![A(1, 1), A(2, 2)]),
            t(vec![R(1, vec![]), R(2, vec![2])]),
            t(vec![R(1, vec![1])]),
        ];
        assert!(matches!(check(&h), Err(Anomaly::Cycle(_))));
    }

    #[test]
    fn incompatible_orders_are_caught() {
        let h = vec![
            t(vec![A(1, 1)]),
            t(vec![A(1, 2)]),
            t(vec![R(1, vec![1, 2])]),
            t(vec![R(1, vec![2])]),
        ];
        assert_eq!(check(&h), Err(Anomaly::IncompatibleOrder { key: 1 }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_histories_are_serializable() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // A small memory limit: committed versions keep moving to segments, so
    // reads and refreshes cross the delta and the segments.
    let cluster = eon_testkit::TestCluster::builder()
        .env("EON_MEMORY_LIMIT", "32KiB")
        .start()
        .unwrap();
    let setup = cluster.pg().await.unwrap();
    const KEYS: u32 = 6;
    setup
        .batch_execute("CREATE TABLE la (k int PRIMARY KEY, val text NOT NULL)")
        .await
        .unwrap();
    setup
        .execute(
            &format!(
                "INSERT INTO la SELECT i, '' FROM generate_series(0, {}) AS g(i)",
                KEYS - 1
            ),
            &[],
        )
        .await
        .unwrap();
    let next_value = std::sync::Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let client = cluster.pg().await.unwrap();
        let next_value = next_value.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = w * 31 + 7;
            let mut rnd = move |n: u64| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) % n
            };
            let mut history = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
            while std::time::Instant::now() < deadline {
                let mut ops = Vec::new();
                let mut ok = client.batch_execute("BEGIN").await.is_ok();
                for _ in 0..1 + rnd(3) {
                    if !ok {
                        break;
                    }
                    let k = rnd(KEYS as u64) as u32;
                    if rnd(2) == 0 {
                        match client.query_one("SELECT val FROM la WHERE k = $1", &[&(k as i32)]).await {
                            Ok(row) => {
                                let text: String = row.get(0);
                                let list: Vec<u64> = text.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
                                ops.push(Op::Read(k, list));
                            }
                            Err(_) => ok = false,
                        }
                    } else {
                        let v = next_value.fetch_add(1, Ordering::SeqCst);
                        // The append happens (and is recorded) even if the
                        // transaction then aborts: its value must never be read.
                        ops.push(Op::Append(k, v));
                        let sql = "UPDATE la SET val = CASE WHEN val = '' THEN $2 ELSE val || ',' || $2 END WHERE k = $1";
                        if client.execute(sql, &[&(k as i32), &v.to_string()]).await.is_err() {
                            ok = false;
                        }
                    }
                }
                let committed = ok && client.batch_execute("COMMIT").await.is_ok();
                if !ok {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                history.push(Txn { ops, committed });
            }
            history
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    // A final read of every key closes the version orders.
    let rows = setup.query("SELECT k, val FROM la", &[]).await.unwrap();
    let reads = rows
        .iter()
        .map(|r| {
            let k: i32 = r.get(0);
            let text: String = r.get(1);
            Op::Read(
                k as u32,
                text.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect(),
            )
        })
        .collect();
    history.push(Txn {
        ops: reads,
        committed: true,
    });
    let committed = history.iter().filter(|t| t.committed).count();
    assert!(
        committed > 50,
        "only {committed} of {} transactions committed",
        history.len()
    );
    assert_eq!(
        check(&history),
        Ok(()),
        "{} transactions, {committed} committed",
        history.len()
    );
    let mut segments = 0;
    for (_, addr) in cluster.data_engines().await.unwrap() {
        let mut de = eon_proto::v1::data_engine_client::DataEngineClient::new(
            cluster.channel(&addr).unwrap(),
        );
        segments += de
            .stats(eon_proto::v1::StatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .counters["segments"];
    }
    assert!(
        segments > 0,
        "versions moved to segments during the run ({} transactions, {committed} committed)",
        history.len()
    );
    eprintln!(
        "history: {} transactions, {committed} committed, serializable; {segments} segment files",
        history.len()
    );
}
