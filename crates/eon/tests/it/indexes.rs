//! Secondary indexes and UNIQUE constraints: used by the planner (EXPLAIN
//! and the data engines' own counters show it), kept in step by every
//! write, enforced across shards and concurrent sessions.

use eon_testkit::TestCluster;

use crate::pushdown::{counters, delta, explain};
use crate::{refused, texts};

/// `sql`'s single bigint answer.
async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test]
async fn an_index_narrows_reads_and_follows_every_write() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v int, tag text);
         INSERT INTO items SELECT i, i % 100, 't' || (i % 7) FROM generate_series(1, 2000) g(i);
         INSERT INTO items VALUES (5000, NULL, NULL);",
    )
    .await
    .unwrap();
    let sql = "SELECT count(*) FROM items WHERE v = 42";
    // Without an index: every row is read.
    let b = counters(&cluster).await;
    assert_eq!(count(&c, sql).await, 20);
    let a = counters(&cluster).await;
    assert_eq!(delta(&b, &a, "rows_scanned").0, 2001);

    c.batch_execute("CREATE INDEX ON items (v)").await.unwrap();
    let plan = explain(&c, sql).await;
    assert!(
        plan.contains("EonIndexScanExec: table=items, index=items_v_idx (key range)"),
        "{plan}"
    );
    let b = counters(&cluster).await;
    assert_eq!(count(&c, sql).await, 20);
    let a = counters(&cluster).await;
    assert_eq!(
        delta(&b, &a, "rows_scanned").0,
        40,
        "20 index entries, then 20 rows by key"
    );
    // Ranges and IN lists too, with the other conditions still applied.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM items WHERE v BETWEEN 10 AND 12 AND tag = 't3'"
        )
        .await,
        count(
            &c,
            "SELECT count(*) FROM items WHERE v + 0 BETWEEN 10 AND 12 AND tag = 't3'"
        )
        .await,
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE v > 97").await,
        40
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE v IS NULL").await,
        1
    );

    // Writes move, add and remove entries in the same transaction as rows.
    c.batch_execute(
        "UPDATE items SET v = 1000 WHERE id <= 30;
         DELETE FROM items WHERE v = 1000 AND id > 25;
         INSERT INTO items VALUES (6000, 42, 'x');
         UPDATE items SET tag = 'y' WHERE v = 42;",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "SELECT id::text FROM items WHERE v = 1000 ORDER BY id").await,
        [
            "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
            "17", "18", "19", "20", "21", "22", "23", "24", "25"
        ]
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE v = 42 AND tag = 'y'").await,
        21
    );
    // Inside a block: the block's own writes are found through the index,
    // and a rollback takes their entries away.
    c.batch_execute("BEGIN; INSERT INTO items VALUES (7000, 4242, 'z')")
        .await
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE v = 4242").await,
        1
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE v = 4242").await,
        0
    );

    // The index survives a rewrite and follows a renamed column.
    c.batch_execute("ALTER TABLE items RENAME COLUMN v TO w")
        .await
        .unwrap();
    let plan = explain(&c, "SELECT * FROM items WHERE w = 7").await;
    assert!(plan.contains("index=items_v_idx"), "{plan}");
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE w = 7").await,
        19
    );
    let defs = texts(
        &c,
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'items' ORDER BY indexname",
    )
    .await;
    assert_eq!(
        defs,
        [
            "CREATE UNIQUE INDEX items_pkey ON public.items USING btree (id)",
            "CREATE INDEX items_v_idx ON public.items USING btree (w)"
        ]
    );

    // Bad input: clear errors; DROP INDEX brings the full scan back.
    refused(&c, "CREATE INDEX items_v_idx ON items (tag)", "42P07").await;
    refused(&c, "CREATE INDEX ON items (nope)", "42703").await;
    refused(&c, "CREATE INDEX ON items USING gin (tag)", "0A000").await;
    refused(&c, "DROP INDEX nope", "42704").await;
    c.batch_execute("DROP INDEX items_v_idx; DROP INDEX IF EXISTS items_v_idx")
        .await
        .unwrap();
    let plan = explain(&c, "SELECT * FROM items WHERE w = 7").await;
    assert!(plan.contains("EonScanExec: table=items"), "{plan}");
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE w = 7").await,
        19
    );
}

#[tokio::test]
async fn unique_constraints_hold_across_shards_and_sessions() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, org int, login text,
                             UNIQUE (org, login));
         INSERT INTO users SELECT i, 'u' || i || '@x', i % 3, 'l' || i FROM generate_series(1, 300) g(i);",
    )
    .await
    .unwrap();
    let e = refused(
        &c,
        "INSERT INTO users VALUES (301, 'u7@x', 0, 'new')",
        "23505",
    )
    .await;
    let db = e.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"users_email_key\""
    );
    assert_eq!(db.detail(), Some("Key (email)=(u7@x) already exists."));
    refused(
        &c,
        "INSERT INTO users VALUES (301, 'new@x', 1, 'l1')",
        "23505",
    )
    .await;
    refused(&c, "UPDATE users SET email = 'u8@x' WHERE id = 9", "23505").await;
    // Several NULLs are not duplicates; a freed value can be taken again.
    c.batch_execute(
        "INSERT INTO users VALUES (400, NULL, NULL, NULL), (401, NULL, NULL, NULL);
         UPDATE users SET email = 'gone@x' WHERE id = 10;
         INSERT INTO users VALUES (402, 'u10@x', 9, 'l402');",
    )
    .await
    .unwrap();
    // ON CONFLICT DO NOTHING skips rows a unique index already holds.
    let n = c
        .execute(
            "INSERT INTO users VALUES (500, 'u11@x', 0, 'a'), (501, 'fresh@x', 0, 'b') ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = c
        .execute(
            "INSERT INTO users VALUES (502, 'fresh@x', 0, 'c') ON CONFLICT (email) DO NOTHING",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        texts(&c, "SELECT id::text FROM users WHERE email = 'fresh@x'").await,
        ["501"]
    );
    let plan = explain(&c, "SELECT id FROM users WHERE email = 'fresh@x'").await;
    assert!(
        plan.contains("index=users_email_key (point lookup of 1 key(s))"),
        "{plan}"
    );

    // Two sessions inserting the same new value at once: one wins.
    let d = cluster.pg().await.unwrap();
    for round in 0..5 {
        let first = format!(
            "INSERT INTO users VALUES ({}, 'race{round}@x', 5, 'ra{round}')",
            1000 + round
        );
        let second = format!(
            "INSERT INTO users VALUES ({}, 'race{round}@x', 5, 'rb{round}')",
            2000 + round
        );
        let (a, b) = tokio::join!(c.execute(&first, &[]), d.execute(&second, &[]));
        assert_eq!(
            a.is_ok() as u8 + b.is_ok() as u8,
            1,
            "round {round}: {a:?} {b:?}"
        );
        let loser = a.err().or(b.err()).unwrap();
        let code = crate::code(&loser);
        assert!(code == "23505" || code == "40001", "{loser:?}");
        assert_eq!(
            count(
                &c,
                &format!("SELECT count(*) FROM users WHERE email = 'race{round}@x'")
            )
            .await,
            1
        );
    }

    // Catalog: the constraints and their indexes.
    let rows = texts(
        &c,
        "SELECT conname::text || ' ' || contype::text || ' ' || pg_get_constraintdef(oid)
         FROM pg_constraint WHERE conrelid = 'users'::regclass ORDER BY conname",
    )
    .await;
    assert_eq!(
        rows,
        [
            "users_email_key u UNIQUE (email)",
            "users_org_login_key u UNIQUE (org, login)",
            "users_pkey p PRIMARY KEY (id)"
        ]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT k.column_name::text FROM information_schema.table_constraints t
             JOIN information_schema.key_column_usage k ON k.constraint_name = t.constraint_name
             WHERE t.table_name = 'users' AND t.constraint_type = 'UNIQUE'
             ORDER BY k.constraint_name, k.ordinal_position",
        )
        .await,
        ["email", "org", "login"]
    );
    // Made later, on rows that break it: refused, nothing changed.
    let e = refused(&c, "CREATE UNIQUE INDEX users_org ON users (org)", "23505").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "could not create unique index \"users_org\""
    );
    refused(
        &c,
        "ALTER TABLE users ADD CONSTRAINT one_org UNIQUE (org)",
        "23505",
    )
    .await;
    c.batch_execute("ALTER TABLE users ADD CONSTRAINT login_once UNIQUE (login)")
        .await
        .unwrap();
    refused(
        &c,
        "INSERT INTO users VALUES (3000, 'z@x', 7, 'l5')",
        "23505",
    )
    .await;
    refused(&c, "DROP INDEX login_once", "2BP01").await;
    c.batch_execute("ALTER TABLE users DROP CONSTRAINT login_once")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO users VALUES (3000, 'z@x', 7, 'l5')")
        .await
        .unwrap();
    // Names are shared with tables.
    refused(&c, "CREATE TABLE users_email_key (a int)", "42P07").await;
    // Dropping the table drops its indexes with it.
    c.batch_execute("DROP TABLE users; CREATE TABLE users (email text UNIQUE)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO users VALUES ('u7@x')")
        .await
        .unwrap();
}
