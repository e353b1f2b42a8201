//! Schema changes on a live table: ALTER TABLE … ADD PRIMARY KEY and ADD,
//! RENAME, DROP COLUMN rewrite the table while other sessions read and
//! write it; sequences, SERIAL and identity columns; CHECK constraints;
//! views; temporary tables; schemas and the search path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eon_testkit::TestCluster;

use crate::{code, refused, texts};

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
    let e = refused(&c, "ALTER TABLE dup ADD PRIMARY KEY (k)", "23505").await;
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
    let e = refused(&c, "ALTER TABLE holes ADD PRIMARY KEY (k)", "23502").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "column \"k\" of relation \"holes\" contains null values"
    );
    refused(&c, "ALTER TABLE holes ADD PRIMARY KEY (nope)", "42703").await;
    refused(&c, "ALTER TABLE missing ADD PRIMARY KEY (k)", "42P01").await;
    c.batch_execute("ALTER TABLE IF EXISTS missing ADD PRIMARY KEY (k)")
        .await
        .unwrap();
    refused(&c, "BEGIN; ALTER TABLE holes ADD PRIMARY KEY (v)", "25001").await;
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
    refused(&c, "INSERT INTO items VALUES (5, 0, 'again')", "23505").await;
    let label: String = c
        .query_one("SELECT label FROM items WHERE id = 12345", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(label, "item 12345");
    refused(&c, "ALTER TABLE items ADD PRIMARY KEY (grp)", "42P16").await;
}

/// Sequences, SERIAL and identity columns: values are handed out once each
/// — across statements, sessions, a rolled back DROP TABLE and a crash of
/// meta — with PostgreSQL's functions, errors and catalog entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_serial_and_identity_columns() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    let int = |rows: &[tokio_postgres::Row], i: usize| -> i32 { rows[i].get(0) };

    // pg_dump's order of options (START before INCREMENT).
    c.batch_execute(
        "CREATE SEQUENCE counter AS integer START WITH 10 INCREMENT BY 5 NO MINVALUE MAXVALUE 30 CACHE 1",
    )
    .await
    .unwrap();
    refused(&c, "SELECT currval('counter')", "55000").await;
    let r = c
        .query_one(
            "SELECT nextval('counter'), nextval('counter'::regclass), currval('counter'), lastval()",
            &[],
        )
        .await
        .unwrap();
    let got: (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(got, (10, 15, 15, 15));
    let r = c
        .query_one("SELECT setval('counter', 25), nextval('counter')", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (25, 30));
    refused(&c, "SELECT nextval('counter')", "2200H").await;
    refused(&c, "SELECT nextval('nope')", "42P01").await;
    refused(&c, "CREATE SEQUENCE bad START 0", "22023").await;
    refused(&c, "CREATE TABLE counter (id int)", "42P07").await;

    // SERIAL: one sequence per column, named as PostgreSQL names it.
    c.batch_execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        .await
        .unwrap();
    let rows = c
        .query(
            "INSERT INTO notes (body) VALUES ('a'), ('b') RETURNING id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((int(&rows, 0), int(&rows, 1)), (1, 2));
    c.batch_execute(
        "INSERT INTO notes (body) SELECT 'n' || i FROM generate_series(1, 3000) AS g(i);
         INSERT INTO notes VALUES (DEFAULT, 'last')",
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM notes",
            &[],
        )
        .await
        .unwrap();
    let got: (i64, i64, i32, i32) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(got, (3003, 3003, 1, 3003));
    let r = c
        .query_one(
            "SELECT pg_get_serial_sequence('notes', 'id'),
                    (SELECT column_default FROM information_schema.columns
                      WHERE table_name = 'notes' AND column_name = 'id'),
                    (SELECT count(*) FROM pg_class WHERE relkind = 'S')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "public.notes_id_seq");
    assert_eq!(r.get::<_, String>(1), "nextval('notes_id_seq'::regclass)");
    assert_eq!(r.get::<_, i64>(2), 2);
    refused(&c, "DROP SEQUENCE notes_id_seq", "2BP01").await;

    // A rolled back DROP TABLE brings the sequence back where it was; a
    // crash of meta skips values but never repeats one.
    c.batch_execute("BEGIN; DROP TABLE notes; ROLLBACK")
        .await
        .unwrap();
    cluster.kill_and_wait_restart("meta").await.unwrap();
    let c = cluster.pg().await.unwrap();
    let rows = c
        .query(
            "INSERT INTO notes (body) VALUES ('after') RETURNING id",
            &[],
        )
        .await
        .unwrap();
    let id: i32 = rows[0].get(0);
    assert!(id > 3003, "a value was handed out twice: {id}");

    // Identity columns: BY DEFAULT takes values by hand, ALWAYS refuses them.
    // (Until the data engines have registered with the restarted meta, a
    // new table has nowhere to go: 57P03.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match c
            .batch_execute(
                "CREATE TABLE tickets (id bigint GENERATED ALWAYS AS IDENTITY (START WITH 100) PRIMARY KEY, seat int GENERATED BY DEFAULT AS IDENTITY, who text)",
            )
            .await
        {
            Ok(()) => break,
            Err(e) if code(&e) == "57P03" && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let rows = c
        .query(
            "INSERT INTO tickets (seat, who) VALUES (DEFAULT, 'x'), (7, 'y') RETURNING id, seat",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(100, 1), (101, 7)]);
    for sql in [
        "INSERT INTO tickets (id, who) VALUES (5, 'z')",
        "INSERT INTO tickets (id, who) SELECT 6, 'z'",
    ] {
        refused(&c, sql, "428C9").await;
    }

    // Dropping a table drops the sequences it owns; a free-standing one
    // goes with DROP SEQUENCE.
    c.batch_execute("DROP TABLE notes, tickets; DROP SEQUENCE counter")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM pg_class WHERE relkind = 'S'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    refused(&c, "DROP SEQUENCE counter", "42P01").await;
    c.batch_execute("DROP SEQUENCE IF EXISTS counter")
        .await
        .unwrap();
}

/// ADD COLUMN, RENAME COLUMN and DROP COLUMN rewrite the table as ADD
/// PRIMARY KEY does, keeping its rows, keys, foreign keys and grants, with
/// PostgreSQL's errors — while another session keeps reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_are_added_renamed_and_dropped_on_a_live_table() {
    let cluster = TestCluster::builder()
        .data_engines(2)
        .shards(4)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE parent (id int PRIMARY KEY);
         INSERT INTO parent VALUES (1), (2);
         CREATE TABLE items (id int PRIMARY KEY, qty int, pid int REFERENCES parent(id));
         INSERT INTO items SELECT i, i * 10, 1 + i % 2 FROM generate_series(1, 2000) AS g(i);
         CREATE ROLE reader LOGIN PASSWORD 'r';
         GRANT SELECT ON items TO reader;",
    )
    .await
    .unwrap();
    // A reader that never stops while the columns change.
    let stop = Arc::new(AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        let r = cluster.pg().await.unwrap();
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = r
                    .query_one("SELECT count(*) FROM items", &[])
                    .await
                    .unwrap()
                    .get(0);
                // (Row 2001 comes and goes below.)
                assert!(n == 2000 || n == 2001, "{n} rows");
                reads += 1;
            }
            reads
        })
    };

    // Each rewrite drops the old table's data while the reader may be
    // scanning it at a snapshot from before the swap: a few rounds made
    // the reader see a part of the table (0 rows) before data engines
    // waited for such scans.
    for k in 0..10 {
        c.batch_execute(&format!("ALTER TABLE items ADD COLUMN x{k} int"))
            .await
            .unwrap();
        c.batch_execute(&format!("ALTER TABLE items DROP COLUMN x{k}"))
            .await
            .unwrap();
    }
    c.batch_execute("ALTER TABLE items ADD COLUMN note text DEFAULT 'new'")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO items (id, qty, pid) VALUES (2001, 1, 1)")
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE note = 'new') FROM items",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2001, 2001));
    c.batch_execute("DELETE FROM items WHERE id = 2001")
        .await
        .unwrap();
    refused(
        &c,
        "ALTER TABLE items ADD COLUMN must int NOT NULL",
        "23502",
    )
    .await;
    refused(&c, "ALTER TABLE items ADD COLUMN qty int", "42701").await;
    c.batch_execute("ALTER TABLE items ADD COLUMN IF NOT EXISTS qty int")
        .await
        .unwrap();
    // PostgreSQL's storage parameters are accepted (they tune nothing
    // eon has); an unknown one is refused.
    c.batch_execute("ALTER TABLE items SET (fillfactor = 70, parallel_workers = 4)")
        .await
        .unwrap();
    refused(&c, "ALTER TABLE items SET (no_such_knob = 1)", "22023").await;

    c.batch_execute("ALTER TABLE items RENAME COLUMN qty TO quantity")
        .await
        .unwrap();
    refused(&c, "SELECT qty FROM items", "42703").await;
    let total: i64 = c
        .query_one("SELECT sum(quantity)::int8 FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 10 * 2000 * 2001 / 2);

    refused(&c, "ALTER TABLE items DROP COLUMN id", "2BP01").await;
    refused(&c, "ALTER TABLE items DROP COLUMN pid", "2BP01").await;
    refused(&c, "ALTER TABLE items DROP COLUMN nope", "42703").await;
    c.batch_execute(
        "ALTER TABLE items DROP COLUMN IF EXISTS nope; ALTER TABLE items DROP COLUMN note",
    )
    .await
    .unwrap();
    let columns = texts(
        &c,
        "SELECT column_name::text FROM information_schema.columns
              WHERE table_name = 'items' ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(columns, ["id", "quantity", "pid"]);
    // Keys and foreign keys hold; the grant is kept.
    refused(&c, "INSERT INTO items VALUES (1, 1, 1)", "23505").await;
    refused(&c, "INSERT INTO items VALUES (5000, 1, 9)", "23503").await;
    let reader = tokio_postgres::connect(&cluster.pg_url_as("reader", "r"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(reader.1);
    let n: i64 = reader
        .0
        .query_one("SELECT count(quantity) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2000);
    // Not inside a transaction block (yet).
    c.batch_execute("BEGIN").await.unwrap();
    refused(&c, "ALTER TABLE items ADD COLUMN x int", "25001").await;
    c.batch_execute("ROLLBACK").await.unwrap();

    // COMMENT ON: kept in the catalog, through a rewrite, and shown where
    // psql and drivers look (pg_description, obj_description,
    // col_description).
    c.batch_execute(
        "COMMENT ON TABLE items IS 'what is in stock';
         COMMENT ON COLUMN items.quantity IS 'units on hand';
         COMMENT ON COLUMN public.items.pid IS 'the parent';
         COMMENT ON COLUMN items.pid IS NULL;
         ALTER TABLE items ADD COLUMN note text",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT d.objsubid || ': ' || d.description FROM pg_description d \
             JOIN pg_class c ON c.oid = d.objoid WHERE c.relname = 'items' ORDER BY d.objsubid"
        )
        .await,
        ["0: what is in stock", "2: units on hand"]
    );
    let row = c
        .query_one(
            "SELECT obj_description('items'::regclass, 'pg_class'), \
             col_description('items'::regclass, 2), col_description('items'::regclass, 3)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("what is in stock")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("units on hand")
    );
    assert_eq!(row.get::<_, Option<String>>(2), None);
    refused(&c, "COMMENT ON COLUMN items.nope IS 'x'", "42703").await;
    refused(&c, "COMMENT ON TABLE nope IS 'x'", "42P01").await;
    let e = reader
        .0
        .batch_execute("COMMENT ON TABLE items IS 'mine'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");

    stop.store(true, Ordering::Relaxed);
    assert!(reading.await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_constraints_hold_for_every_write() {
    let cluster = TestCluster::builder().shards(2).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE products (
             id int PRIMARY KEY,
             name text NOT NULL CHECK (length(name) > 0),
             price numeric(10,2) CONSTRAINT positive_price CHECK (price > 0),
             discounted numeric(10,2),
             CHECK (discounted < price));
         INSERT INTO products VALUES (1, 'a', 10, 5), (2, 'b', NULL, NULL);",
    )
    .await
    .unwrap();
    // False is refused; NULL passes.
    let e = refused(
        &c,
        "INSERT INTO products VALUES (3, 'c', -1, NULL)",
        "23514",
    )
    .await;
    let db = e.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        "new row for relation \"products\" violates check constraint \"positive_price\""
    );
    assert_eq!(
        db.detail(),
        Some("Failing row contains (3, c, -1.00, null).")
    );
    refused(&c, "INSERT INTO products VALUES (3, '', 1, NULL)", "23514").await;
    refused(
        &c,
        "UPDATE products SET discounted = 20 WHERE id = 1",
        "23514",
    )
    .await;
    refused(
        &c,
        "INSERT INTO products SELECT 4, 'd', -i, NULL FROM generate_series(1, 3) g(i)",
        "23514",
    )
    .await;
    c.batch_execute("UPDATE products SET discounted = 9 WHERE id = 1")
        .await
        .unwrap();

    let rows = texts(
        &c,
        "SELECT conname::text || ' ' || contype::text || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE conrelid = 'products'::regclass ORDER BY 1",
    )
    .await;
    assert_eq!(
        rows,
        [
            "positive_price c CHECK ((price > 0))",
            "products_check c CHECK ((discounted < price))",
            "products_name_check c CHECK ((length(name) > 0))",
            "products_pkey p PRIMARY KEY (id)",
        ]
    );
    let clauses = texts(
        &c,
        "SELECT constraint_name::text || ': ' || check_clause::text
               FROM information_schema.check_constraints ORDER BY 1",
    )
    .await;
    assert_eq!(clauses[0], "positive_price: ((price > 0))");

    // Definitions PostgreSQL refuses.
    refused(&c, "CREATE TABLE bad (a int CHECK (a))", "42804").await;
    refused(&c, "CREATE TABLE bad (a int CHECK (b > 0))", "42703").await;
    refused(
        &c,
        "CREATE TABLE bad (a int CHECK (a > (SELECT 1)))",
        "0A000",
    )
    .await;
    refused(
        &c,
        "CREATE TABLE bad (a int CONSTRAINT x CHECK (a > 0), CONSTRAINT x CHECK (a < 9))",
        "42710",
    )
    .await;

    // ALTER TABLE: a new constraint must hold for the rows there are.
    let e = refused(
        &c,
        "ALTER TABLE products ADD CONSTRAINT cheap CHECK (price < 5)",
        "23514",
    )
    .await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "check constraint \"cheap\" of relation \"products\" is violated by some row"
    );
    c.batch_execute("ALTER TABLE products ADD CHECK (price < 1000)")
        .await
        .unwrap();
    let e = refused(
        &c,
        "INSERT INTO products VALUES (5, 'e', 2000, NULL)",
        "23514",
    )
    .await;
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("\"products_price_check\""),
        "{e:?}"
    );
    // Constraints follow their column's new name, go with a dropped one.
    c.batch_execute("ALTER TABLE products RENAME COLUMN price TO cost")
        .await
        .unwrap();
    refused(
        &c,
        "INSERT INTO products VALUES (5, 'e', -1, NULL)",
        "23514",
    )
    .await;
    c.batch_execute("ALTER TABLE products DROP COLUMN discounted")
        .await
        .unwrap();
    let rows = texts(
        &c,
        "SELECT conname::text || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE conrelid = 'products'::regclass AND contype = 'c'
              ORDER BY 1",
    )
    .await;
    assert_eq!(
        rows,
        [
            "positive_price CHECK ((cost > 0))",
            "products_name_check CHECK ((length(name) > 0))",
            "products_price_check CHECK ((cost < 1000))",
        ]
    );
    refused(&c, "ALTER TABLE products DROP CONSTRAINT nope", "42704").await;
    c.batch_execute(
        "ALTER TABLE products DROP CONSTRAINT IF EXISTS nope;
         ALTER TABLE products DROP CONSTRAINT positive_price;
         INSERT INTO products VALUES (5, 'e', -1);",
    )
    .await
    .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn views_are_stored_queries_read_like_tables() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, total int);
         INSERT INTO orders SELECT i, 'c' || (i % 3), i FROM generate_series(1, 30) g(i);
         CREATE VIEW big_orders AS SELECT id, customer, total FROM orders WHERE total > 20;
         CREATE VIEW per_customer (who, n) AS
             SELECT customer, count(*) FROM big_orders GROUP BY customer;",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "SELECT who || '=' || n FROM per_customer ORDER BY who").await,
        ["c0=4", "c1=3", "c2=3"]
    );
    // Filters reach the scan under the view.
    let plan = crate::pushdown::explain(&c, "SELECT id FROM big_orders WHERE id = 25").await;
    assert!(plan.contains("point lookup of 1 key(s)"), "{plan}");
    // Joined, aliased, shadowed by a CTE of the same name.
    assert_eq!(
        texts(
            &c,
            "SELECT b.id::text FROM big_orders b JOIN orders o ON o.id = b.id - 20 WHERE o.total = 5"
        )
        .await,
        ["25"]
    );
    assert_eq!(
        texts(
            &c,
            "WITH big_orders AS (SELECT 'cte' AS x) SELECT x FROM big_orders"
        )
        .await,
        ["cte"]
    );
    // OR REPLACE, catalog, bad input, DROP.
    c.batch_execute("CREATE OR REPLACE VIEW big_orders AS SELECT id, customer, total FROM orders WHERE total > 28")
        .await
        .unwrap();
    assert_eq!(
        texts(&c, "SELECT count(*)::text FROM big_orders").await,
        ["2"]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT table_name::text || ' ' || table_type::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY table_name"
        )
        .await,
        ["big_orders VIEW", "orders BASE TABLE", "per_customer VIEW"]
    );
    refused(&c, "CREATE VIEW orders AS SELECT 1", "42P07").await;
    refused(&c, "CREATE VIEW v AS SELECT * FROM missing", "42P01").await;
    refused(&c, "CREATE VIEW v (a, b) AS SELECT 1", "42601").await;
    refused(&c, "DROP VIEW nope", "42P01").await;
    c.batch_execute("DROP VIEW per_customer, big_orders; DROP VIEW IF EXISTS big_orders")
        .await
        .unwrap();
    refused(&c, "SELECT * FROM big_orders", "42P01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_belong_to_their_session_and_go_with_it() {
    let cluster = TestCluster::start().unwrap();
    let a = cluster.pg().await.unwrap();
    let b = cluster.pg().await.unwrap();
    a.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, label text);
         INSERT INTO items VALUES (1, 'permanent');
         CREATE TEMP TABLE items (id int, note text);
         INSERT INTO items VALUES (2, 'temporary');
         CREATE TEMPORARY TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree);
         INSERT INTO tree VALUES (1, NULL), (2, 1);
         CREATE INDEX items_note ON items (note);
         CREATE TEMP VIEW notes AS SELECT note FROM items;",
    )
    .await
    .unwrap();
    // The temporary table shadows the permanent one in its own session
    // only; schema-qualified names reach either.
    assert_eq!(texts(&a, "SELECT note FROM items").await, ["temporary"]);
    assert_eq!(
        texts(&a, "SELECT note FROM pg_temp.items").await,
        ["temporary"]
    );
    assert_eq!(
        texts(&a, "SELECT label FROM public.items").await,
        ["permanent"]
    );
    assert_eq!(texts(&a, "SELECT note FROM notes").await, ["temporary"]);
    assert_eq!(texts(&b, "SELECT label FROM items").await, ["permanent"]);
    refused(&b, "SELECT * FROM tree", "42P01").await;
    refused(&b, "SELECT * FROM notes", "42P01").await;
    // Writes go to the temporary table; its foreign key holds.
    a.batch_execute("UPDATE items SET note = 'changed'; DELETE FROM public.items WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(texts(&a, "SELECT note FROM items").await, ["changed"]);
    refused(&a, "INSERT INTO tree VALUES (3, 7)", "23503").await;
    // A permanent table cannot reference a temporary one.
    refused(
        &a,
        "CREATE TABLE child (id int PRIMARY KEY, t int REFERENCES tree)",
        "42P16",
    )
    .await;
    refused(&a, "CREATE TEMP TABLE public.x (a int)", "42P16").await;
    // The catalog: its schema is pg_temp_N; psql's visibility test hides
    // the permanent table it shadows, and other sessions' temporary ones.
    let schema: String = texts(
        &a,
        "SELECT table_schema::text FROM information_schema.tables
         WHERE table_name = 'items' AND table_type = 'LOCAL TEMPORARY'",
    )
    .await
    .remove(0);
    assert!(schema.starts_with("pg_temp_"), "{schema}");
    let visible = "SELECT n.nspname::text FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = 'items' AND c.relkind = 'r' AND pg_catalog.pg_table_is_visible(c.oid)";
    assert_eq!(texts(&a, visible).await, [schema.clone()]);
    assert_eq!(texts(&b, visible).await, ["public"]);
    // DROP takes the temporary table first, then the permanent one is seen.
    a.batch_execute("DROP VIEW notes; DROP TABLE items")
        .await
        .unwrap();
    assert_eq!(texts(&a, "SELECT label FROM items").await, ["permanent"]);
    // The session's end drops what is left.
    a.batch_execute("CREATE TEMP TABLE items (id int)")
        .await
        .unwrap();
    drop(a);
    let left = format!(
        "SELECT count(*)::text FROM information_schema.tables WHERE table_schema = '{schema}'"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while texts(&b, &left).await != ["0"] {
        assert!(
            std::time::Instant::now() < deadline,
            "temporary tables outlived their session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(texts(&b, "SELECT label FROM items").await, ["permanent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_namespace_relations_along_the_search_path() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE SCHEMA app;
         CREATE SCHEMA IF NOT EXISTS app;
         CREATE TABLE items (id int PRIMARY KEY, label text);
         INSERT INTO items VALUES (1, 'public');
         CREATE TABLE app.items (id serial PRIMARY KEY, label text, ref int REFERENCES public.items);
         INSERT INTO app.items (label, ref) VALUES ('app', 1);",
    )
    .await
    .unwrap();
    refused(&c, "CREATE SCHEMA app", "42P06").await;
    refused(&c, "CREATE SCHEMA pg_mine", "42939").await;
    refused(&c, "CREATE TABLE nope.t (a int)", "3F000").await;
    refused(&c, "SELECT * FROM nope.t", "42P01").await;
    refused(&c, "CREATE TABLE kid () INHERITS (items)", "0A000").await;
    // Partitions are of partitioned tables only.
    refused(
        &c,
        "CREATE TABLE part PARTITION OF items FOR VALUES IN (1)",
        "42809",
    )
    .await;
    assert_eq!(texts(&c, "SELECT label FROM items").await, ["public"]);
    assert_eq!(texts(&c, "SELECT label FROM app.items").await, ["app"]);
    // Along the search path: app first, then public.
    c.batch_execute(
        "SET search_path = app, public;
         UPDATE items SET label = 'app, changed';
         CREATE TABLE notes (n text);
         INSERT INTO notes VALUES ('where?');
         CREATE VIEW labels AS SELECT label FROM items;",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "SELECT label FROM labels").await,
        ["app, changed"]
    );
    assert_eq!(
        texts(&c, "SELECT label FROM public.items").await,
        ["public"]
    );
    refused(
        &c,
        "INSERT INTO items (label, ref) VALUES ('x', 7)",
        "23503",
    )
    .await;
    let visible = "SELECT n.nspname::text || '.' || c.relname::text FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname IN ('app', 'public')
           AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1";
    assert_eq!(texts(&c, visible).await, ["app.items", "app.notes"]);
    assert_eq!(
        texts(
            &c,
            "SELECT schema_name::text FROM information_schema.schemata ORDER BY 1"
        )
        .await,
        ["app", "information_schema", "pg_catalog", "public"]
    );
    c.batch_execute("RESET search_path").await.unwrap();
    refused(&c, "SELECT * FROM notes", "42P01").await;
    assert_eq!(texts(&c, "SELECT n FROM app.notes").await, ["where?"]);
    // A schema that holds relations goes only with CASCADE.
    refused(&c, "DROP SCHEMA app", "2BP01").await;
    refused(&c, "DROP SCHEMA nope", "3F000").await;
    c.batch_execute("DROP SCHEMA IF EXISTS nope; DROP SCHEMA app CASCADE")
        .await
        .unwrap();
    refused(&c, "SELECT * FROM app.items", "42P01").await;
    assert_eq!(texts(&c, "SELECT label FROM items").await, ["public"]);
    // A rolled back block takes its CREATE SCHEMA with it.
    c.batch_execute("BEGIN; CREATE SCHEMA tx; ROLLBACK")
        .await
        .unwrap();
    refused(&c, "CREATE TABLE tx.t (a int)", "3F000").await;

    // RENAME TO: the rows stay, and the foreign keys that reference the
    // table, the sequence it owns and the views that name it follow.
    c.batch_execute(
        "CREATE TABLE parent (id serial PRIMARY KEY, v text);
         CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent);
         INSERT INTO parent (v) VALUES ('a');
         INSERT INTO child VALUES (1, 1);
         CREATE VIEW family AS SELECT p.v FROM parent p JOIN public.child c ON c.p = p.id;
         ALTER TABLE parent RENAME TO mother;
         INSERT INTO mother (v) VALUES ('b');",
    )
    .await
    .unwrap();
    assert_eq!(texts(&c, "SELECT v FROM family").await, ["a"]);
    assert_eq!(
        texts(&c, "SELECT id::text || v FROM mother ORDER BY id").await,
        ["1a", "2b"]
    );
    refused(&c, "SELECT * FROM parent", "42P01").await;
    let e = refused(&c, "INSERT INTO child VALUES (2, 9)", "23503").await;
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap()
            .contains("\"mother\""),
        "{e:?}"
    );
    refused(&c, "ALTER TABLE mother RENAME TO child", "42P07").await;
    refused(&c, "ALTER TABLE nope RENAME TO x", "42P01").await;
    c.batch_execute("DROP VIEW family; DROP TABLE child; DROP TABLE mother")
        .await
        .unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT count(*)::text FROM information_schema.sequences"
        )
        .await,
        ["0"]
    );
}
