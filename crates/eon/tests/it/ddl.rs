//! Schema changes on a live table: ALTER TABLE … ADD PRIMARY KEY rewrites
//! the table while other sessions read and write it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eon_testkit::TestCluster;

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_primary_key_rewrites_the_table_without_losing_concurrent_writes() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE items (id int, grp int, label text);
         INSERT INTO items SELECT i, i % 7, 'item ' || i FROM generate_series(1, 20000) AS g(i);
         CREATE TABLE dup (k int, v text);
         INSERT INTO dup VALUES (1, 'a'), (2, 'b'), (1, 'c');
         CREATE TABLE holes (k int, v text);
         INSERT INTO holes VALUES (1, 'a'), (NULL, 'b');",
    )
    .await
    .unwrap();

    // Keys that cannot be a primary key: PostgreSQL's errors, the table
    // unchanged and still writable.
    let e = c
        .batch_execute("ALTER TABLE dup ADD PRIMARY KEY (k)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505", "{e:?}");
    let db = e.as_db_error().unwrap();
    assert_eq!(db.message(), "could not create unique index \"dup_pkey\"");
    assert_eq!(db.detail(), Some("Key (k)=(1) is duplicated."));
    c.batch_execute("INSERT INTO dup VALUES (3, 'd')")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM dup", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    let e = c
        .batch_execute("ALTER TABLE holes ADD PRIMARY KEY (k)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23502", "{e:?}");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "column \"k\" of relation \"holes\" contains null values"
    );
    let e = c
        .batch_execute("ALTER TABLE holes ADD PRIMARY KEY (nope)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42703", "{e:?}");
    let e = c
        .batch_execute("ALTER TABLE missing ADD PRIMARY KEY (k)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P01", "{e:?}");
    c.batch_execute("ALTER TABLE IF EXISTS missing ADD PRIMARY KEY (k)")
        .await
        .unwrap();
    let e = c
        .batch_execute("BEGIN; ALTER TABLE holes ADD PRIMARY KEY (v)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25001", "{e:?}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // The catalog shows no leftover of the failed rewrites.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%rewrite%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Writers keep going while the table is rewritten; every insert they
    // were told succeeded is there afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2i32 {
        let w_client = cluster.pg().await.unwrap();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = 100_000 + w * 100_000 + n;
                n += 1;
                match w_client
                    .execute(
                        "INSERT INTO items VALUES ($1, $2, 'concurrent')",
                        &[&id, &w],
                    )
                    .await
                {
                    Ok(_) => acked.push(id),
                    Err(e) => assert_eq!(code(&e), "40001", "{e:?}"),
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.batch_execute("ALTER TABLE items ADD PRIMARY KEY (id)")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(!acked.is_empty());
    let rows = c
        .query("SELECT id FROM items WHERE id >= 100000", &[])
        .await
        .unwrap();
    let present: std::collections::HashSet<i32> = rows.iter().map(|r| r.get(0)).collect();
    let lost = acked.iter().filter(|id| !present.contains(id)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged inserts were lost",
        acked.len()
    );
    assert_eq!(present.len(), acked.len(), "rows nobody inserted");
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE id <= 20000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20000);

    // The key is the primary key now: the catalog says so, duplicates are
    // refused, lookups by it are point reads.
    let def: String = c
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'items_pkey'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(def, "PRIMARY KEY (id)");
    let e = c
        .batch_execute("INSERT INTO items VALUES (5, 0, 'again')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505", "{e:?}");
    let label: String = c
        .query_one("SELECT label FROM items WHERE id = 12345", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(label, "item 12345");
    let e = c
        .batch_execute("ALTER TABLE items ADD PRIMARY KEY (grp)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P16", "{e:?}");
}
