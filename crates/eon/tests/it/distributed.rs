//! Distributed execution: aggregates, joins and top-k run on the data
//! engines (stages, rows shuffled between engines), proven by the engines'
//! counters and by comparing every answer with the same query run with all
//! rows brought to the query engine.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use eon_testkit::TestCluster;

use crate::pushdown::{counters, delta};
use crate::rows;

/// The plan `EXPLAIN` (or `EXPLAIN ANALYZE`) gives for `sql`.
async fn explain(c: &Client, how: &str, sql: &str) -> String {
    rows(c, &format!("{how} {sql}"))
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn aggregates_and_top_k_send_their_results_not_the_table() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE wide (id int PRIMARY KEY, g int, x float8, pad text);
         INSERT INTO wide SELECT i, i % 10, i * 0.5, repeat('p', 200)
           FROM generate_series(1, 20000) AS s(i);",
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&c, "SHOW eon.distribute").await,
        vec![vec![Some("on".to_string())]]
    );
    let agg = "SELECT g, count(*), sum(x), avg(x), max(pad) FROM wide GROUP BY g ORDER BY g";
    let top = "SELECT id, x FROM wide ORDER BY x DESC LIMIT 3";

    // The plan: stage 2 runs the partial aggregate on every engine and
    // shuffles the partials by group; stage 1 finishes each group on the
    // engine it went to; stage 0 (the query engine) gathers and sorts.
    let plan = explain(&c, "EXPLAIN", agg).await;
    assert!(plan.starts_with("Stage 0: on the query engine"), "{plan}");
    assert!(
        plan.contains("Stage 1: on data-engine-1, data-engine-2, data-engine-3; gathered"),
        "{plan}"
    );
    assert!(
        plan.contains("Stage 2: on data-engine-1, data-engine-2, data-engine-3; shuffled by hash(g@0) into 3 partitions"),
        "{plan}"
    );
    let stage1 = plan.find("Stage 1").unwrap();
    let stage2 = plan.find("Stage 2").unwrap();
    let partial = plan.find("AggregateExec: mode=Partial").unwrap();
    let final_ = plan.find("AggregateExec: mode=FinalPartitioned").unwrap();
    assert!(
        stage1 < final_ && final_ < stage2 && stage2 < partial,
        "{plan}"
    );
    let plan = explain(&c, "EXPLAIN", top).await;
    assert!(
        plan.contains("Stage 1") && plan.contains("SortExec: TopK(fetch=3)"),
        "{plan}"
    );

    // What crosses the network, distributed and not: the engines' bytes
    // sent, and the same answers.
    let mut sent = Vec::new();
    let mut answers = Vec::new();
    for setting in ["on", "off"] {
        c.batch_execute(&format!("SET eon.distribute = {setting}"))
            .await
            .unwrap();
        let before = counters(&cluster).await;
        answers.push((rows(&c, agg).await, rows(&c, top).await));
        let after = counters(&cluster).await;
        let (bytes, _) = delta(&before, &after, "bytes_returned");
        let (fragments, engines) = delta(&before, &after, "fragments");
        if setting == "on" {
            assert_eq!(fragments, 9, "three stages on three engines");
            assert_eq!(engines.len(), 3);
        } else {
            assert_eq!(fragments, 0);
        }
        sent.push(bytes);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0.len(), 10);
    assert_eq!(
        answers[0].1[0],
        vec![Some("20000".to_string()), Some("10000".to_string())]
    );
    // 20000 rows of 200 bytes of padding are 4 MB; the partial aggregates
    // and the top rows are a few kilobytes.
    eprintln!("bytes sent by the data engines, distributed and not: {sent:?}");
    assert!(sent[1] > 4_000_000, "{sent:?}");
    assert!(sent[0] * 50 < sent[1], "{sent:?}");

    // EXPLAIN ANALYZE: per stage and engine, rows read and sent, bytes and
    // time.
    c.batch_execute("SET eon.distribute = on").await.unwrap();
    let plan = explain(&c, "EXPLAIN ANALYZE", agg).await;
    for stage in plan
        .lines()
        .filter(|l| l.trim_start().starts_with("Stage "))
        .skip(1)
    {
        for e in 1..=3 {
            assert!(
                stage.contains(&format!("data-engine-{e}: rows read=")),
                "{plan}"
            );
        }
    }
    let read: u64 = plan
        .split("rows read=")
        .skip(1)
        .map(|s| s.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(read, 20000, "{plan}");
    assert!(
        plan.contains("bytes sent=") && plan.contains("time="),
        "{plan}"
    );

    // An error inside a fragment is the statement's, with its SQLSTATE,
    // and the session goes on.
    let e = c
        .simple_query("SELECT sum(10 / (id - 500)) FROM wide")
        .await
        .unwrap_err();
    assert_eq!(crate::code(&e), "22012", "{e}");
    let e = c
        .simple_query("SELECT sum(id * id * id) FROM wide")
        .await
        .unwrap_err();
    assert_eq!(crate::code(&e), "22003", "{e}");

    // A transaction's stages see its own uncommitted rows.
    c.batch_execute("BEGIN; INSERT INTO wide VALUES (20001, 3, 1, 'q')")
        .await
        .unwrap();
    assert_eq!(
        rows(&c, "SELECT count(*) FROM wide WHERE g = 3").await,
        vec![vec![Some("2001".to_string())]]
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        rows(&c, "SELECT count(*) FROM wide WHERE g = 3").await,
        vec![vec![Some("2000".to_string())]]
    );
}

/// A join of two tables with a selective aggregate sends the query engine
/// about its result: the rows are joined where they are — the small side
/// broadcast to the engines holding the other, or (`eon.broadcast = off`)
/// both sides shuffled by the join key — moved between data engines,
/// never through the query engine.
#[tokio::test]
async fn a_join_sends_its_result_not_the_tables() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY, region int, pad text);
         CREATE TABLE orders (id int PRIMARY KEY, customer int, amount int, pad text);
         INSERT INTO customers SELECT i, i % 5, repeat('c', 100)
           FROM generate_series(1, 2000) AS s(i);
         INSERT INTO orders SELECT i, i % 2500, i % 100, repeat('o', 100) || i
           FROM generate_series(1, 20000) AS s(i);",
    )
    .await
    .unwrap();
    let sql = "SELECT c.region, count(*), sum(o.amount), max(o.pad) FROM customers c \
               JOIN orders o ON o.customer = c.id GROUP BY c.region ORDER BY c.region";

    // Broadcast: customers (estimated from the engines' sizes) is small;
    // each engine holding orders gets all of it and joins its own orders.
    let plan = explain(&c, "EXPLAIN", sql).await;
    assert!(
        plan.contains("HashJoinExec: mode=CollectLeft, join_type=Inner"),
        "{plan}"
    );
    let join = plan.find("HashJoinExec").unwrap();
    let broadcast = plan
        .find("broadcast to 3 tasks")
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(join < broadcast, "{plan}");
    assert!(
        plan[broadcast..].contains("EonScanExec: table=customers"),
        "{plan}"
    );
    // Only the partials by region are shuffled.
    assert_eq!(plan.matches("shuffled by hash(").count(), 1, "{plan}");

    // Shuffled: each side of the join by its key, and the partials.
    c.batch_execute("SET eon.broadcast = off").await.unwrap();
    let plan = explain(&c, "EXPLAIN", sql).await;
    assert!(
        plan.contains("HashJoinExec: mode=Partitioned, join_type=Inner"),
        "{plan}"
    );
    let join = plan.find("HashJoinExec").unwrap();
    let shuffles: Vec<usize> = plan
        .match_indices("shuffled by hash(")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(shuffles.len(), 3, "{plan}");
    assert!(shuffles[0] < join && join < shuffles[1], "{plan}");
    assert!(!plan.contains("broadcast"), "{plan}");

    let mut answers = Vec::new();
    let mut received = Vec::new();
    for (distribute, broadcast) in [("on", "on"), ("on", "off"), ("off", "on")] {
        c.batch_execute(&format!(
            "SET eon.distribute = {distribute}; SET eon.broadcast = {broadcast}"
        ))
        .await
        .unwrap();
        let before = counters(&cluster).await;
        answers.push(rows(&c, sql).await);
        let after = counters(&cluster).await;
        let (to_query_engine, _) = delta(&before, &after, "bytes_returned");
        let (between_engines, _) = delta(&before, &after, "bytes_shuffled");
        if distribute == "on" {
            assert!(between_engines > 0, "the join's rows move between engines");
        } else {
            assert_eq!(between_engines, 0);
        }
        received.push(to_query_engine);
    }
    assert_eq!(answers[0], answers[2]);
    assert_eq!(answers[1], answers[2]);
    assert_eq!(answers[0].len(), 5);
    // The orders' padding read is 20000 × 100 bytes; the answer is five
    // rows, and what the query engine receives is three engines' few rows
    // of per-region totals (Arrow IPC adds its schema to each message).
    eprintln!(
        "bytes the query engine received (broadcast, shuffled, not distributed): {received:?}"
    );
    assert!(received[2] > 2_000_000, "{received:?}");
    assert!(received[0] < 8_000, "{received:?}");
    assert!(received[1] < 8_000, "{received:?}");
}

/// Tables declared co-located (`WITH (distribute_by = …, colocate_with =
/// …)`) keep the rows of a key on one engine: a join on their distribution
/// keys runs shard by shard where they are — nothing shuffled, nothing
/// broadcast — and answers as the query engine would; rows are found by
/// their whole key, and bad declarations are refused.
#[tokio::test]
async fn colocated_tables_join_where_they_are() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE orders (o_id int PRIMARY KEY, o_customer int, o_total int);
         CREATE TABLE lines (l_order bigint, l_no int, l_qty int, l_note text,
           PRIMARY KEY (l_order, l_no))
           WITH (distribute_by = 'l_order', colocate_with = 'orders');
         INSERT INTO orders SELECT i, i % 50, i * 3 FROM generate_series(1, 3000) AS s(i);
         INSERT INTO lines SELECT i / 4, i % 4, i % 7, 'n' || i
           FROM generate_series(4, 14003) AS s(i);",
    )
    .await
    .unwrap();
    // Each key's rows by their whole key; updates and deletes find them.
    c.batch_execute(
        "UPDATE lines SET l_qty = 100 WHERE l_order = 7 AND l_no = 2;
         DELETE FROM lines WHERE l_order = 8 AND l_no = 3;",
    )
    .await
    .unwrap();
    assert_eq!(
        rows(
            &c,
            "SELECT l_qty, l_note FROM lines WHERE l_order = 7 AND l_no = 2"
        )
        .await,
        vec![vec![Some("100".into()), Some("n30".into())]]
    );
    assert_eq!(
        rows(&c, "SELECT count(*) FROM lines WHERE l_order = 8").await,
        vec![vec![Some("3".into())]]
    );
    let dup = c
        .simple_query("INSERT INTO lines VALUES (9, 1, 0, 'again')")
        .await
        .unwrap_err();
    assert_eq!(dup.code().unwrap().code(), "23505", "{dup}");

    let sql = "SELECT o_customer, count(*), sum(l_qty), max(l_note) FROM orders \
               JOIN lines ON l_order = o_id WHERE o_total > 30 \
               GROUP BY o_customer ORDER BY o_customer";
    for broadcast in ["on", "off"] {
        c.batch_execute(&format!("SET eon.broadcast = {broadcast}"))
            .await
            .unwrap();
        let plan = explain(&c, "EXPLAIN", sql).await;
        assert!(plan.contains("HashJoinExec: mode=Partitioned"), "{plan}");
        // Only the partial aggregates move; the join reads both tables'
        // shards on each engine.
        assert_eq!(plan.matches("shuffled by hash(").count(), 1, "{plan}");
        assert!(!plan.contains("broadcast"), "{plan}");
        let join = plan.find("HashJoinExec").unwrap();
        let stage = plan.find("Stage 2").unwrap();
        assert!(stage < join, "the join runs in the shuffle's stage: {plan}");
    }
    let mut answers = Vec::new();
    for distribute in ["on", "off"] {
        c.batch_execute(&format!("SET eon.distribute = {distribute}"))
            .await
            .unwrap();
        answers.push(rows(&c, sql).await);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].len(), 50);

    // A semi join (EXISTS) and a left join, co-located too.
    c.batch_execute("SET eon.distribute = on").await.unwrap();
    for sql in [
        "SELECT count(*) FROM orders WHERE EXISTS \
           (SELECT 1 FROM lines WHERE l_order = o_id AND l_qty > 5)",
        "SELECT count(*), count(l_no) FROM orders LEFT JOIN lines ON l_order = o_id",
    ] {
        let plan = explain(&c, "EXPLAIN", sql).await;
        assert!(
            !plan.contains("shuffled") && !plan.contains("broadcast"),
            "{plan}"
        );
        let on = rows(&c, sql).await;
        c.batch_execute("SET eon.distribute = off").await.unwrap();
        assert_eq!(on, rows(&c, sql).await, "{sql}");
        c.batch_execute("SET eon.distribute = on").await.unwrap();
    }

    // Declarations that cannot hold.
    for (ddl, says) in [
        (
            "CREATE TABLE bad (a int, b int, PRIMARY KEY (a, b)) WITH (distribute_by = 'b')",
            "distribute_by must name leading columns of the primary key (a, b)",
        ),
        (
            "CREATE TABLE bad (a text PRIMARY KEY) WITH (colocate_with = 'orders')",
            "cannot be colocated with \"orders\"",
        ),
        (
            "CREATE TABLE bad (a int PRIMARY KEY) WITH (colocate_with = 'orders', shards = 3)",
            "which has 8 shards",
        ),
        (
            "CREATE TABLE bad (a int PRIMARY KEY) WITH (colocate_with = 'nowhere')",
            "relation \"nowhere\" does not exist",
        ),
    ] {
        let e = c.simple_query(ddl).await.unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert!(db.message().contains(says), "{ddl}: {}", db.message());
    }
}

/// A statement's operators keep to `eon.query_memory` in every process
/// running part of it: a sort spills to disk, a hash join's table (which
/// cannot) fails the statement with 53200, on the data engines and on the
/// query engine, and the session goes on.
#[tokio::test]
async fn queries_keep_to_their_memory_limit() {
    // One shard: one sort, of the whole table, on the query engine.
    let cluster = TestCluster::builder().shards(1).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, g int, pad text);
         INSERT INTO big SELECT i, 0, lpad(i::text, 8, '0') || repeat('x', 100)
           FROM generate_series(1, 300000) AS s(i);",
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&c, "SHOW eon.query_memory").await,
        vec![vec![Some("1GB".to_string())]]
    );
    let e = c
        .batch_execute("SET eon.query_memory = 'lots'")
        .await
        .unwrap_err();
    assert_eq!(crate::code(&e), "22023", "{e}");

    let sort = "SELECT id FROM big ORDER BY pad DESC";
    let unlimited = rows(&c, sort).await;
    assert_eq!(unlimited.len(), 300000);
    assert_eq!(unlimited[0], vec![Some("300000".to_string())]);

    // 300000 rows of 110 bytes are 33 MB: sorted in 12 MB, by spilling.
    c.batch_execute("SET eon.query_memory = '12MB'")
        .await
        .unwrap();
    assert_eq!(rows(&c, sort).await, unlimited);
    let plan = explain(&c, "EXPLAIN ANALYZE", sort).await;
    let spills: u64 = plan
        .split("spill_count=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(spills > 0, "{plan}");
    // The join's hash table holds the whole table with its padding, on the
    // one data engine (all rows are in one shard) or on the query engine.
    let join = "SELECT count(*), max(a.pad || b.pad) FROM big a JOIN big b ON a.id = b.id";
    for distribute in ["on", "off"] {
        c.batch_execute(&format!("SET eon.distribute = {distribute}"))
            .await
            .unwrap();
        let e = c.simple_query(join).await.unwrap_err();
        assert_eq!(crate::code(&e), "53200", "distribute {distribute}: {e}");
        let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
        assert!(message.starts_with("out of memory"), "{message}");
    }
    c.batch_execute("RESET eon.query_memory").await.unwrap();
    let answer = rows(&c, join).await;
    assert_eq!(answer[0][0].as_deref(), Some("300000"));
}

/// A random aggregate or top-k query over table `r` (see the test).
fn random_query(rng: &mut StdRng) -> (String, bool) {
    const AGGREGATES: &[&str] = &[
        "count(*)",
        "count(i)",
        "sum(i)",
        "avg(i)",
        "min(i)",
        "max(i)",
        "sum(d)",
        "avg(d)",
        "min(d)",
        "max(d)",
        "stddev(i)",
        "variance(d)",
        "stddev_pop(d)",
        "var_samp(i)",
        "bool_and(b)",
        "bool_or(b)",
        "min(h)",
        "max(h)",
        "sum(f)",
        "min(f)",
        "max(f)",
        "avg(f)",
        "count(DISTINCT g)",
        "count(DISTINCT h)",
        "sum(i * 3 - d)",
        "sum(d * 2)",
        "string_agg(h, ',' ORDER BY h, id)",
        "array_agg(i ORDER BY id)",
        // eon's to_char for numbers, not DataFusion's of the same name.
        "max(to_char(d, '9990.99'))",
    ];
    const GROUPS: &[&str] = &["", "g", "h", "g, h", "i % 3", "b"];
    const FILTERS: &[&str] = &[
        "",
        "WHERE i > 40",
        "WHERE d < 300",
        "WHERE b",
        "WHERE h <> 'c'",
        "WHERE i * 2 > 50",
        "WHERE id BETWEEN 100 AND 900",
        "WHERE g IS NULL",
        "WHERE i > (SELECT avg(i) FROM r)",
    ];
    let filter = FILTERS[rng.random_range(0..FILTERS.len())];
    if rng.random_bool(0.2) {
        // Top-k, with a total order (id last).
        const ORDERS: &[&str] = &["d DESC", "f", "i DESC NULLS LAST", "h, i", "g NULLS FIRST"];
        let order = ORDERS[rng.random_range(0..ORDERS.len())];
        let k = rng.random_range(1..20);
        return (
            format!("SELECT id, g, h, i, d, f FROM r {filter} ORDER BY {order}, id LIMIT {k}"),
            true,
        );
    }
    let group = GROUPS[rng.random_range(0..GROUPS.len())];
    let n = rng.random_range(1..5);
    let mut select: Vec<String> = (0..n)
        .map(|_| AGGREGATES[rng.random_range(0..AGGREGATES.len())].to_string())
        .collect();
    let mut sql = String::new();
    if !group.is_empty() {
        select.insert(0, group.to_string());
    }
    sql.push_str(&format!("SELECT {} FROM r {filter}", select.join(", ")));
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {group}"));
        if rng.random_bool(0.3) {
            sql.push_str(" HAVING count(*) > 1");
        }
    }
    (sql, false)
}

/// A random join of tables `r` and `s` (see the test), with aggregates
/// over both sides or a top-k of its rows.
fn random_join(rng: &mut StdRng) -> (String, bool) {
    const JOINS: &[&str] = &["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"];
    const ON: &[&str] = &[
        "s.rid = r.id",
        "s.g = r.g",
        "s.k = r.h",
        "s.rid = r.id AND s.g = r.g",
        "s.rid = r.i",
    ];
    const AGGREGATES: &[&str] = &[
        "count(*)",
        "count(s.id)",
        "count(r.id)",
        "sum(r.i)",
        "sum(s.v)",
        "avg(r.d)",
        "min(s.k)",
        "max(r.h)",
        "count(DISTINCT s.g)",
        "bool_or(r.b)",
    ];
    const GROUPS: &[&str] = &["", "r.g", "s.g", "s.k, r.b", "r.i % 4"];
    const FILTERS: &[&str] = &[
        "",
        "WHERE r.i > 20",
        "WHERE s.v < 50",
        "WHERE r.b OR s.v IS NULL",
    ];
    let filter = FILTERS[rng.random_range(0..FILTERS.len())];
    if rng.random_bool(0.25) {
        // Semi and anti joins.
        let not = if rng.random_bool(0.5) { "NOT " } else { "" };
        let on = [
            "s.rid = r.id",
            "s.g = r.g AND s.v > 60",
            "s.k = r.h AND s.v < 5",
        ][rng.random_range(0..3)];
        let group = ["", "g", "h"][rng.random_range(0..3)];
        let (select, by) = if group.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{group}, "), format!(" GROUP BY {group}"))
        };
        return (
            format!(
                "SELECT {select}count(*), sum(i) FROM r WHERE {not}EXISTS \
                 (SELECT 1 FROM s WHERE {on}){by}"
            ),
            false,
        );
    }
    if rng.random_bool(0.1) {
        // Correlated subqueries, decorrelated into joins with aggregates.
        return (
            "SELECT r.id, (SELECT count(*) FROM s WHERE s.rid = r.id), \
             (SELECT max(s.v) FROM s WHERE s.g = r.g) FROM r WHERE r.i > 90"
                .into(),
            false,
        );
    }
    let join = JOINS[rng.random_range(0..JOINS.len())];
    let on = ON[rng.random_range(0..ON.len())];
    if rng.random_bool(0.2) {
        let k = rng.random_range(1..30);
        return (
            format!(
                "SELECT r.id, s.id, r.i, s.v FROM r {join} s ON {on} {filter} \
                 ORDER BY r.i DESC NULLS LAST, s.v, r.id, s.id LIMIT {k}"
            ),
            true,
        );
    }
    let group = GROUPS[rng.random_range(0..GROUPS.len())];
    let n = rng.random_range(1..4);
    let mut select: Vec<String> = (0..n)
        .map(|_| AGGREGATES[rng.random_range(0..AGGREGATES.len())].to_string())
        .collect();
    if !group.is_empty() {
        select.insert(0, group.to_string());
    }
    let mut sql = format!(
        "SELECT {} FROM r {join} s ON {on} {filter}",
        select.join(", ")
    );
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {group}"));
    }
    (sql, false)
}

/// Differential test: random aggregates, joins and top-k queries over
/// random data, each answered distributed (stages on three data engines,
/// shuffles between them) and with every row brought to the query engine;
/// the answers must be the same.
#[tokio::test]
async fn random_aggregates_and_joins_answer_the_same_distributed_or_not() {
    let seed: u64 = std::env::var("EON_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (EON_TEST_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE r (id int PRIMARY KEY, g int, h text, i int, d numeric(10,2), f float8, b boolean)",
    )
    .await
    .unwrap();
    let mut values = Vec::new();
    for id in 1..=3000 {
        let raw = [
            rng.random_range(0..12).to_string(),
            format!("'{}'", ["a", "b", "c", "dd", "e"][rng.random_range(0..5)]),
            rng.random_range(-50..100).to_string(),
            format!(
                "{}.{:02}",
                rng.random_range(-100..1000),
                rng.random_range(0..100)
            ),
            // Quarters add up exactly in binary floating point, in any order.
            (rng.random_range(-400..4000) as f64 / 4.0).to_string(),
            rng.random_bool(0.5).to_string(),
        ];
        // Each value NULL one time in ten.
        let [g, h, i, d, f, b] = raw.map(|v| {
            if rng.random_bool(0.1) {
                "NULL".to_string()
            } else {
                v
            }
        });
        values.push(format!("({id}, {g}, {h}, {i}, {d}, {f}, {b})"));
    }
    for chunk in values.chunks(500) {
        c.batch_execute(&format!("INSERT INTO r VALUES {}", chunk.join(", ")))
            .await
            .unwrap();
    }
    // The other side of the joins: keys matching some of r's, some not.
    c.batch_execute("CREATE TABLE s (id int PRIMARY KEY, rid int, g int, k text, v int)")
        .await
        .unwrap();
    let mut values = Vec::new();
    for id in 1..=400 {
        let raw = [
            rng.random_range(1..3500).to_string(),
            rng.random_range(0..15).to_string(),
            format!("'{}'", ["a", "c", "dd", "x"][rng.random_range(0..4)]),
            rng.random_range(0..100).to_string(),
        ];
        let [rid, g, k, v] = raw.map(|v| {
            if rng.random_bool(0.1) {
                "NULL".to_string()
            } else {
                v
            }
        });
        values.push(format!("({id}, {rid}, {g}, {k}, {v})"));
    }
    c.batch_execute(&format!("INSERT INTO s VALUES {}", values.join(", ")))
        .await
        .unwrap();

    let mut distributed = 0;
    let total = 90;
    for _ in 0..total {
        let (sql, ordered) = if rng.random_bool(0.4) {
            random_join(&mut rng)
        } else {
            random_query(&mut rng)
        };
        // Small sides broadcast to every engine, or every join shuffled.
        let broadcast = rng.random_bool(0.5);
        c.batch_execute(&format!(
            "SET eon.distribute = on; SET eon.broadcast = {broadcast}"
        ))
        .await
        .unwrap();
        if explain(&c, "EXPLAIN", &sql).await.contains("Stage 1") {
            distributed += 1;
        } else {
            eprintln!("not distributed: {sql}");
        }
        let mut on = rows(&c, &sql).await;
        c.batch_execute("SET eon.distribute = off").await.unwrap();
        let mut off = rows(&c, &sql).await;
        if !ordered {
            on.sort();
            off.sort();
        }
        assert_eq!(on, off, "seed {seed}, broadcast {broadcast}: {sql}");
    }
    eprintln!("{distributed} of {total} queries distributed");
    // Nearly every query has a stage (a few shapes stay on the query
    // engine); the comparison above would prove nothing otherwise.
    assert!(
        distributed * 10 >= total * 9,
        "seed {seed}: only {distributed} of {total} queries were distributed"
    );
}
