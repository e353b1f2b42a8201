//! Transaction blocks: BEGIN/COMMIT/ROLLBACK and savepoints on the wire
//! (with the ReadyForQuery status byte), isolation levels, pushes instead
//! of waits, and REST transactions.

use std::time::{Duration, Instant};

use eon_testkit::TestCluster;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bare PostgreSQL protocol client: what a simple query answered, down
/// to the command tags and the transaction status byte of ReadyForQuery.
struct Raw {
    s: TcpStream,
}

#[derive(Debug, Default)]
struct Answer {
    tags: Vec<String>,
    errors: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    /// 'I' idle, 'T' in a transaction block, 'E' failed block.
    status: char,
}

impl Raw {
    async fn connect(cluster: &TestCluster) -> Raw {
        let s = cluster.pg_raw().await.unwrap();
        let mut raw = Raw { s };
        raw.answer().await;
        raw
    }

    async fn answer(&mut self) -> Answer {
        let mut a = Answer::default();
        loop {
            let tag = self.s.read_u8().await.unwrap();
            let len = self.s.read_u32().await.unwrap() as usize - 4;
            let mut body = vec![0u8; len];
            self.s.read_exact(&mut body).await.unwrap();
            match tag {
                b'C' => a
                    .tags
                    .push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()),
                b'E' => {
                    let code = body
                        .split(|&b| b == 0)
                        .find(|f| f.first() == Some(&b'C'))
                        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                        .unwrap_or_default();
                    a.errors.push(code);
                }
                b'D' => {
                    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2;
                    let mut row = Vec::with_capacity(n);
                    for _ in 0..n {
                        let l = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                        at += 4;
                        if l < 0 {
                            row.push(None);
                        } else {
                            row.push(Some(
                                String::from_utf8_lossy(&body[at..at + l as usize]).into_owned(),
                            ));
                            at += l as usize;
                        }
                    }
                    a.rows.push(row);
                }
                b'Z' => {
                    a.status = body[0] as char;
                    return a;
                }
                _ => {}
            }
        }
    }

    async fn query(&mut self, sql: &str) -> Answer {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.s.write_all(&msg).await.unwrap();
        self.answer().await
    }

    /// The single value a query returned.
    async fn value(&mut self, sql: &str) -> String {
        let a = self.query(sql).await;
        assert!(a.errors.is_empty(), "{sql}: {:?}", a.errors);
        a.rows[0][0].clone().unwrap()
    }
}

#[tokio::test]
async fn transaction_blocks_on_the_wire() {
    let cluster = TestCluster::start().unwrap();
    let mut a = Raw::connect(&cluster).await;
    let mut b = Raw::connect(&cluster).await;
    a.query("CREATE TABLE acc (id int PRIMARY KEY, v int)")
        .await;
    a.query("INSERT INTO acc VALUES (1, 10), (2, 20)").await;

    let r = a.query("BEGIN").await;
    assert_eq!((r.tags.clone(), r.status), (vec!["BEGIN".to_string()], 'T'));
    let r = a.query("INSERT INTO acc VALUES (3, 30)").await;
    assert_eq!(
        (r.tags.clone(), r.status),
        (vec!["INSERT 0 1".to_string()], 'T')
    );
    // Own writes are visible inside; others see nothing yet — and are not
    // made to wait.
    assert_eq!(a.value("SELECT count(*) FROM acc").await, "3");
    let started = Instant::now();
    assert_eq!(b.value("SELECT count(*) FROM acc").await, "2");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a reader waited for an open transaction"
    );
    let r = a.query("COMMIT").await;
    assert_eq!(
        (r.tags.clone(), r.status),
        (vec!["COMMIT".to_string()], 'I')
    );
    assert_eq!(b.value("SELECT count(*) FROM acc").await, "3");

    // ROLLBACK discards everything, across shards.
    a.query("BEGIN").await;
    a.query("UPDATE acc SET v = v * 100").await;
    a.query("DELETE FROM acc WHERE id = 1").await;
    assert_eq!(a.value("SELECT sum(v) FROM acc").await, "5000");
    let r = a.query("ROLLBACK").await;
    assert_eq!(
        (r.tags.clone(), r.status),
        (vec!["ROLLBACK".to_string()], 'I')
    );
    assert_eq!(b.value("SELECT sum(v) FROM acc").await, "60");

    // An error aborts the block: 25P02 until ROLLBACK; COMMIT rolls back.
    a.query("BEGIN").await;
    a.query("INSERT INTO acc VALUES (4, 40)").await;
    let r = a.query("SELECT 1 / 0").await;
    assert_eq!(
        (r.errors.clone(), r.status),
        (vec!["22012".to_string()], 'E')
    );
    let r = a.query("SELECT 1").await;
    assert_eq!(
        (r.errors.clone(), r.status),
        (vec!["25P02".to_string()], 'E')
    );
    let r = a.query("COMMIT").await;
    assert_eq!(
        (r.tags.clone(), r.status),
        (vec!["ROLLBACK".to_string()], 'I')
    );
    assert_eq!(b.value("SELECT count(*) FROM acc WHERE id = 4").await, "0");

    // Several statements in one query string; READ ONLY; isolation.
    let r = a.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SHOW transaction_isolation; INSERT INTO acc VALUES (5, 50)").await;
    assert_eq!(r.rows, vec![vec![Some("repeatable read".to_string())]]);
    assert_eq!(
        (r.errors.clone(), r.status),
        (vec!["25006".to_string()], 'E')
    );
    a.query("ROLLBACK").await;
    assert_eq!(a.value("SHOW transaction_isolation").await, "serializable");

    // A client that disconnects inside a block rolls it back: its intents
    // do not block the next writer.
    let mut c = Raw::connect(&cluster).await;
    c.query("BEGIN").await;
    c.query("UPDATE acc SET v = -1 WHERE id = 2").await;
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.query("UPDATE acc SET v = 21 WHERE id = 2").await;
        if r.errors.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned transaction still holds id 2: {:?}",
            r.errors
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.value("SELECT v FROM acc WHERE id = 2").await, "21");
}

/// Tags, error codes and status of an answer, for compact assertions.
fn said(r: &Answer) -> (Vec<String>, Vec<String>, char) {
    (r.tags.clone(), r.errors.clone(), r.status)
}

fn tag(t: &str, status: char) -> (Vec<String>, Vec<String>, char) {
    (vec![t.to_string()], vec![], status)
}

fn error(code: &str, status: char) -> (Vec<String>, Vec<String>, char) {
    (vec![], vec![code.to_string()], status)
}

#[tokio::test]
async fn savepoints() {
    let cluster = TestCluster::start().unwrap();
    let mut a = Raw::connect(&cluster).await;
    let mut b = Raw::connect(&cluster).await;
    a.query("CREATE TABLE sp (id int PRIMARY KEY, v int)").await;
    a.query("INSERT INTO sp VALUES (1, 10), (2, 20)").await;

    assert_eq!(
        said(&a.query("SAVEPOINT x").await),
        error("25P01", 'I'),
        "outside a block"
    );
    assert_eq!(
        said(&a.query("ROLLBACK TO SAVEPOINT x").await),
        error("25P01", 'I')
    );
    assert_eq!(said(&a.query("RELEASE x").await), error("25P01", 'I'));

    // Rolling back to savepoints undoes later statements, on every shard,
    // and brings a failed block back.
    a.query("BEGIN").await;
    a.query("UPDATE sp SET v = 11 WHERE id = 1").await;
    assert_eq!(said(&a.query("SAVEPOINT a").await), tag("SAVEPOINT", 'T'));
    a.query("INSERT INTO sp VALUES (3, 30)").await;
    a.query("UPDATE sp SET v = v + 100").await;
    a.query("SAVEPOINT b").await;
    a.query("DELETE FROM sp WHERE id = 2").await;
    assert_eq!(a.value("SELECT count(*) FROM sp").await, "2");
    assert_eq!(
        said(&a.query("ROLLBACK TO SAVEPOINT b").await),
        tag("ROLLBACK", 'T')
    );
    assert_eq!(a.value("SELECT sum(v) FROM sp").await, "361");
    assert_eq!(
        said(&a.query("INSERT INTO sp VALUES (1, 0)").await),
        error("23505", 'E')
    );
    assert_eq!(said(&a.query("SELECT 1").await), error("25P02", 'E'));
    assert_eq!(said(&a.query("SAVEPOINT c").await), error("25P02", 'E'));
    assert_eq!(said(&a.query("ROLLBACK TO a").await), tag("ROLLBACK", 'T'));
    assert_eq!(a.value("SELECT sum(v) FROM sp").await, "31");
    assert_eq!(
        said(&a.query("ROLLBACK TO b").await),
        error("3B001", 'E'),
        "b was after a"
    );
    assert_eq!(
        said(&a.query("ROLLBACK TO a").await),
        tag("ROLLBACK", 'T'),
        "a stays after a rollback to it"
    );
    // Rolled-back writes hold no intents: another writer is not refused.
    a.query("SAVEPOINT d").await;
    a.query("UPDATE sp SET v = 0 WHERE id = 2").await;
    a.query("ROLLBACK TO d").await;
    assert_eq!(
        said(&b.query("UPDATE sp SET v = 21 WHERE id = 2").await),
        tag("UPDATE 1", 'I')
    );
    assert_eq!(said(&a.query("RELEASE a").await), tag("RELEASE", 'T'));
    assert_eq!(
        said(&a.query("ROLLBACK TO d").await),
        error("3B001", 'E'),
        "releasing a released d too"
    );
    assert_eq!(said(&a.query("ROLLBACK").await), tag("ROLLBACK", 'I'));
    assert_eq!(
        b.value("SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM sp")
            .await,
        "1:10,2:21"
    );

    // A block whose first write failed on its anchor engine (which keeps
    // the transaction's record) goes on after ROLLBACK TO with writes on
    // another engine, and commits — also after that engine has had time to
    // ask the anchor about its intents.
    let engine_of = async |a: &mut Raw, id: i32| {
        let plan = a
            .query(&format!("EXPLAIN SELECT * FROM sp WHERE id = {id}"))
            .await
            .rows[1][0]
            .clone()
            .unwrap();
        plan.split("reads=[")
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string()
    };
    let anchor = engine_of(&mut a, 1).await;
    let mut other = 4;
    while engine_of(&mut a, other).await == anchor {
        other += 1;
    }
    a.query("BEGIN").await;
    a.query("SAVEPOINT s").await;
    assert_eq!(
        said(&a.query("INSERT INTO sp VALUES (1, 0)").await),
        error("23505", 'E')
    );
    a.query("ROLLBACK TO s").await;
    a.query(&format!("INSERT INTO sp VALUES ({other}, 0)"))
        .await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert_eq!(said(&a.query("COMMIT").await), tag("COMMIT", 'I'));
    assert_eq!(
        b.value(&format!("SELECT count(*) FROM sp WHERE id = {other}"))
            .await,
        "1"
    );
    a.query(&format!("DELETE FROM sp WHERE id = {other}")).await;

    a.query("BEGIN").await;
    let r = a
        .query("INSERT INTO sp SELECT i, i * 10 FROM generate_series(4, 40) AS g(i)")
        .await;
    assert_eq!(said(&r), tag("INSERT 0 37", 'T'));
    // The same name twice: ROLLBACK TO and RELEASE find the newest.
    a.query("SAVEPOINT x").await;
    a.query("INSERT INTO sp VALUES (41, 41)").await;
    a.query("SAVEPOINT x").await;
    a.query("INSERT INTO sp VALUES (42, 42)").await;
    a.query("ROLLBACK TO x; RELEASE x").await;
    assert_eq!(a.value("SELECT count(*) FROM sp WHERE id > 40").await, "1");
    assert_eq!(said(&a.query("ROLLBACK TO x").await), tag("ROLLBACK", 'T'));
    assert_eq!(a.value("SELECT count(*) FROM sp WHERE id > 40").await, "0");
    assert_eq!(said(&a.query("COMMIT").await), tag("COMMIT", 'I'));
    assert_eq!(
        b.value("SELECT count(*) || ' ' || sum(v) FROM sp").await,
        "39 8171"
    );

    // The extended protocol (tokio-postgres): a failed statement, ROLLBACK
    // TO, more work, COMMIT.
    let pg = cluster.pg().await.unwrap();
    pg.execute("BEGIN", &[]).await.unwrap();
    pg.execute("SAVEPOINT e", &[]).await.unwrap();
    pg.execute("UPDATE sp SET v = $1 WHERE id = 1", &[&5i32])
        .await
        .unwrap();
    let dup = pg
        .execute("INSERT INTO sp VALUES ($1, 0)", &[&2i32])
        .await
        .unwrap_err();
    assert_eq!(dup.code().unwrap().code(), "23505");
    assert_eq!(
        pg.execute("SELECT 1", &[])
            .await
            .unwrap_err()
            .code()
            .unwrap()
            .code(),
        "25P02"
    );
    pg.execute("ROLLBACK TO SAVEPOINT e", &[]).await.unwrap();
    pg.execute("UPDATE sp SET v = $1 WHERE id = 1", &[&7i32])
        .await
        .unwrap();
    pg.execute("COMMIT", &[]).await.unwrap();
    assert_eq!(b.value("SELECT v FROM sp WHERE id = 1").await, "7");
}

/// Staged writes are logged without waiting for the disk; a data engine
/// that restarts while a transaction is open (and so may have lost them)
/// makes its COMMIT fail with 40001 rather than commit part of it.
#[tokio::test]
async fn a_restart_during_a_transaction_aborts_it() {
    let cluster = TestCluster::builder().data_engines(1).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE r (id int PRIMARY KEY, v int); INSERT INTO r VALUES (1, 1)")
        .await
        .unwrap();
    c.batch_execute("BEGIN; UPDATE r SET v = 2 WHERE id = 1; INSERT INTO r VALUES (2, 2)")
        .await
        .unwrap();
    cluster
        .kill_and_wait_restart("data-engine-1")
        .await
        .unwrap();
    let err = c.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "40001", "{err}");
    // Nothing of it is there, and its intents do not block others.
    let other = cluster.pg().await.unwrap();
    other
        .execute("UPDATE r SET v = 3 WHERE id = 1", &[])
        .await
        .unwrap();
    let rows: Vec<(i32, i32)> = other
        .query("SELECT id, v FROM r ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, 3)]);
}

/// A statement outside a transaction block is a serializable transaction
/// too: two concurrent "go off call if someone else is on call" UPDATEs
/// must never leave nobody on call (write skew across two single
/// statements).
#[tokio::test]
async fn autocommit_statements_are_serializable() {
    let cluster = TestCluster::start().unwrap();
    let a = cluster.pg().await.unwrap();
    let b = cluster.pg().await.unwrap();
    a.batch_execute("CREATE TABLE oncall (name text PRIMARY KEY, on_call bool)")
        .await
        .unwrap();
    let off = "UPDATE oncall SET on_call = false WHERE name = $1 AND (SELECT count(*) FROM oncall WHERE on_call) >= 2";
    let (mut both_off, mut one_off) = (0, 0);
    for _ in 0..40 {
        a.batch_execute(
            "DELETE FROM oncall; INSERT INTO oncall VALUES ('alice', true), ('bob', true)",
        )
        .await
        .unwrap();
        let (ra, rb) = tokio::join!(a.execute(off, &[&"alice"]), b.execute(off, &[&"bob"]));
        match (ra.unwrap(), rb.unwrap()) {
            (1, 1) => both_off += 1,
            (1, 0) | (0, 1) => one_off += 1,
            other => panic!("unexpected counts {other:?}"),
        }
        let n: i64 = a
            .query_one("SELECT count(*) FROM oncall WHERE on_call", &[])
            .await
            .unwrap()
            .get(0);
        assert!(n >= 1, "nobody is on call");
    }
    assert_eq!((both_off, one_off), (0, 40));
}

#[tokio::test]
async fn isolation_levels() {
    let cluster = TestCluster::start().unwrap();
    let mut a = Raw::connect(&cluster).await;
    let mut b = Raw::connect(&cluster).await;
    a.query("CREATE TABLE oncall (id int PRIMARY KEY, on_duty boolean)")
        .await;

    // Write skew: two doctors each see two on duty and leave. SERIALIZABLE
    // (the default) lets only one go.
    a.query("INSERT INTO oncall VALUES (1, true), (2, true)")
        .await;
    a.query("BEGIN").await;
    b.query("BEGIN").await;
    assert_eq!(
        a.value("SELECT count(*) FROM oncall WHERE on_duty").await,
        "2"
    );
    assert_eq!(
        b.value("SELECT count(*) FROM oncall WHERE on_duty").await,
        "2"
    );
    assert!(
        a.query("UPDATE oncall SET on_duty = false WHERE id = 1")
            .await
            .errors
            .is_empty()
    );
    assert!(
        b.query("UPDATE oncall SET on_duty = false WHERE id = 2")
            .await
            .errors
            .is_empty()
    );
    let ra = a.query("COMMIT").await;
    let rb = b.query("COMMIT").await;
    assert!(ra.errors.is_empty(), "{:?}", ra.errors);
    assert_eq!(
        rb.errors,
        vec!["40001".to_string()],
        "write skew must be refused"
    );
    assert_eq!(
        a.value("SELECT count(*) FROM oncall WHERE on_duty").await,
        "1"
    );

    // REPEATABLE READ is snapshot isolation: write skew goes through.
    a.query("UPDATE oncall SET on_duty = true").await;
    a.query("BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    b.query("BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    a.value("SELECT count(*) FROM oncall WHERE on_duty").await;
    b.value("SELECT count(*) FROM oncall WHERE on_duty").await;
    a.query("UPDATE oncall SET on_duty = false WHERE id = 1")
        .await;
    b.query("UPDATE oncall SET on_duty = false WHERE id = 2")
        .await;
    assert!(a.query("COMMIT").await.errors.is_empty());
    assert!(b.query("COMMIT").await.errors.is_empty());
    assert_eq!(
        a.value("SELECT count(*) FROM oncall WHERE on_duty").await,
        "0"
    );

    // Lost update is impossible under REPEATABLE READ: the second writer
    // of a row changed since its snapshot gets 40001.
    a.query("CREATE TABLE counter (id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)")
        .await;
    a.query("BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    b.query("BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(a.value("SELECT n FROM counter WHERE id = 1").await, "0");
    assert_eq!(b.value("SELECT n FROM counter WHERE id = 1").await, "0");
    assert!(
        a.query("UPDATE counter SET n = n + 1 WHERE id = 1")
            .await
            .errors
            .is_empty()
    );
    assert!(a.query("COMMIT").await.errors.is_empty());
    let r = b.query("UPDATE counter SET n = n + 1 WHERE id = 1").await;
    assert_eq!(
        (r.errors.clone(), r.status),
        (vec!["40001".to_string()], 'E')
    );
    b.query("ROLLBACK").await;
    assert_eq!(a.value("SELECT n FROM counter").await, "1");

    // A read-only transaction sees one snapshot across shards while
    // transfers commit around it; READ COMMITTED sees each commit.
    a.query("CREATE TABLE bank (id int PRIMARY KEY, balance int)")
        .await;
    a.query("INSERT INTO bank SELECT i, 100 FROM generate_series(1, 20) AS g(i)")
        .await;
    a.query("BEGIN READ ONLY").await;
    b.query("BEGIN ISOLATION LEVEL READ COMMITTED").await;
    assert_eq!(a.value("SELECT sum(balance) FROM bank").await, "2000");
    let first = a.value("SELECT balance FROM bank WHERE id = 1").await;
    let mut c = Raw::connect(&cluster).await;
    for i in 2..=20 {
        let r = c.query(&format!("BEGIN; UPDATE bank SET balance = balance - 10 WHERE id = 1; UPDATE bank SET balance = balance + 10 WHERE id = {i}; COMMIT")).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    assert_eq!(a.value("SELECT sum(balance) FROM bank").await, "2000");
    assert_eq!(
        a.value("SELECT balance FROM bank WHERE id = 1").await,
        first,
        "the snapshot does not move"
    );
    assert_eq!(
        b.value("SELECT balance FROM bank WHERE id = 1").await,
        "-90",
        "READ COMMITTED sees every commit"
    );
    a.query("COMMIT").await;
    b.query("COMMIT").await;
}

#[tokio::test]
async fn disjoint_transactions_commit_concurrently() {
    let cluster = TestCluster::start().unwrap();
    let mut holder = Raw::connect(&cluster).await;
    holder
        .query("CREATE TABLE kv (k int PRIMARY KEY, v int)")
        .await;
    holder
        .query("INSERT INTO kv SELECT i, 0 FROM generate_series(1, 50) AS g(i)")
        .await;
    // One transaction keeps writes open on key 1...
    holder.query("BEGIN").await;
    holder.query("UPDATE kv SET v = 1 WHERE k = 1").await;
    // ...while others commit on other keys (and other shards) meanwhile.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let cluster_port = cluster.pg_port;
        let _ = cluster_port;
        let mut w = Raw::connect(&cluster).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let k = 2 + t * 10 + i;
                let r = w
                    .query(&format!(
                        "BEGIN; UPDATE kv SET v = v + 1 WHERE k = {k}; COMMIT"
                    ))
                    .await;
                assert!(r.errors.is_empty(), "{:?}", r.errors);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(holder.query("COMMIT").await.errors.is_empty());
    assert_eq!(holder.value("SELECT sum(v) FROM kv").await, "41");
}

#[tokio::test]
async fn rest_transactions_are_atomic() {
    let cluster = TestCluster::start().unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", cluster.http_url()))
            .json(&body)
            .send()
    };
    post(
        "/v1/sql",
        json!({"sql": "CREATE TABLE t (id int PRIMARY KEY, v text)"}),
    )
    .await
    .unwrap();
    let r = post(
        "/v1/transaction",
        json!({"statements": [
            {"sql": "INSERT INTO t VALUES ($1, $2)", "params": [1, "a"]},
            {"sql": "INSERT INTO t VALUES (2, 'b') RETURNING id"},
            {"sql": "SELECT count(*) AS n FROM t"}
        ]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["command"], "INSERT 0 1");
    assert_eq!(v["results"][1]["rows"], json!([[2]]));
    assert_eq!(
        v["results"][2]["rows"],
        json!([[2]]),
        "the transaction sees its own writes"
    );

    // A failing statement: its status and error, and nothing applied.
    let r = post(
        "/v1/transaction",
        json!({"statements": [
            {"sql": "INSERT INTO t VALUES (3, 'c')"},
            {"sql": "INSERT INTO t VALUES (1, 'dup')"}
        ]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "23505");
    let r: serde_json::Value = post("/v1/sql", json!({"sql": "SELECT count(*) FROM t"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["rows"], json!([[2]]));
}

#[tokio::test]
async fn a_dead_coordinators_transaction_is_rolled_back_by_its_record() {
    let cluster = TestCluster::builder().shards(16).start().unwrap();
    let mut a = Raw::connect(&cluster).await;
    a.query("CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    a.query("INSERT INTO t SELECT i, 0 FROM generate_series(1, 20) AS g(i)")
        .await;
    // A transaction stages writes on several data engines...
    a.query("BEGIN").await;
    let r = a.query("UPDATE t SET v = 1").await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // ...and its query engine dies before COMMIT.
    cluster
        .kill_and_wait_restart("query-engine-1")
        .await
        .unwrap();
    drop(a);
    // The data engines find the transaction's record on its anchor, see
    // its heartbeats stopped, abort it and clear the intents: writers
    // get through (autocommit statements retry conflicts for 10 s).
    let mut b = Raw::connect(&cluster).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = b.query("UPDATE t SET v = 2").await;
        if r.errors.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "intents of the dead transaction were never resolved: {:?}",
            r.errors
        );
    }
    assert_eq!(b.value("SELECT count(*) FROM t WHERE v = 2").await, "20");
    assert_eq!(b.value("SELECT count(*) FROM t WHERE v = 1").await, "0");
}
