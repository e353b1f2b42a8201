//! The PostgreSQL wire protocol, driven by tokio-postgres: the extended
//! protocol with typed parameters, binary results for every type, type
//! OIDs, SQLSTATEs, and a connection that survives its errors.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use eon_testkit::TestCluster;
use rust_decimal::Decimal;
use tokio_postgres::types::Type;

use crate::{code, refused};

#[tokio::test]
async fn json_and_jsonb_with_their_operators() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, j jsonb, t json); \
         INSERT INTO docs VALUES \
           (1, '{\"a\": {\"b\": [1, 2]}, \"s\": \"x\", \"n\": null}', '{\"b\":  2, \"a\": 1}'), \
           (2, '[10, \"k\", {\"z\": 1}]', '[1, 2]')",
    )
    .await
    .unwrap();
    let msgs = c
        .simple_query(
            "SELECT j -> 'a', j ->> 's', j -> 'n', j ->> 'n', j #> '{a,b}', j #>> '{a,b,1}', \
               j -> 1, j ->> -1, j -> 'a' -> 'b' ->> 0, j @> '{\"s\": \"x\"}', j ? 'k', \
               j ?| array['s', 'q'], j ?& array['s', 'q'], jsonb_typeof(j), t, t -> 'a', \
               json_typeof(t) FROM docs ORDER BY id",
        )
        .await
        .unwrap();
    let rows: Vec<Vec<Option<&str>>> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i)).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                Some("{\"b\": [1, 2]}"),
                Some("x"),
                Some("null"),
                None,
                Some("[1, 2]"),
                Some("2"),
                None,
                None,
                Some("1"),
                Some("t"),
                Some("f"),
                Some("t"),
                Some("f"),
                Some("object"),
                // json keeps its text as written.
                Some("{\"b\":  2, \"a\": 1}"),
                Some("1"),
                Some("object"),
            ],
            vec![
                None,
                None,
                None,
                None,
                None,
                None,
                Some("\"k\""),
                Some("{\"z\": 1}"),
                None,
                Some("f"),
                Some("t"),
                Some("f"),
                Some("f"),
                Some("array"),
                Some("[1, 2]"),
                None,
                Some("array"),
            ],
        ]
    );
    // Operators in WHERE, their column name, and the result types.
    let rows = c
        .query("SELECT j -> 'a', t FROM docs WHERE j ->> 's' = 'x'", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].columns()[0].name(), "?column?");
    assert_eq!(rows[0].columns()[0].type_(), &Type::JSONB);
    assert_eq!(rows[0].columns()[1].type_(), &Type::JSON);
    // Arrays keep @> and <@.
    let row = c
        .query_one(
            "SELECT ARRAY[1, 2, 3] @> ARRAY[2], ARRAY[4] <@ ARRAY[1, 2]",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(!row.get::<_, bool>(1));
    refused(&c, "INSERT INTO docs (id, t) VALUES (3, '{bad')", "22P02").await;
    refused(
        &c,
        "SELECT jsonb_array_length(j) FROM docs WHERE id = 1",
        "22023",
    )
    .await;
}

/// An interval as PostgreSQL sends it in binary (interval_send): the time
/// in microseconds, days, months. tokio-postgres has no interval type.
#[derive(Debug, PartialEq)]
struct PgInterval {
    micros: i64,
    days: i32,
    months: i32,
}

impl<'a> tokio_postgres::types::FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgInterval {
            micros: i64::from_be_bytes(raw[..8].try_into()?),
            days: i32::from_be_bytes(raw[8..12].try_into()?),
            months: i32::from_be_bytes(raw[12..16].try_into()?),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl tokio_postgres::types::ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        out.put_i64(self.micros);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    tokio_postgres::types::to_sql_checked!();
}

#[tokio::test]
async fn enum_types_order_by_their_labels() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE person (id int PRIMARY KEY, name text, m mood); \
         INSERT INTO person VALUES (1, 'a', 'happy'), (2, 'b', 'sad'), (3, 'c', 'ok'), \
           (4, 'd', NULL)",
    )
    .await
    .unwrap();
    // Sorted and compared by position, not alphabetically.
    let rows = texts(&c, "SELECT name, m FROM person ORDER BY m, id").await;
    assert_eq!(
        rows,
        [["b", "sad"], ["c", "ok"], ["a", "happy"], ["d", "NULL"]]
    );
    let rows = texts(
        &c,
        "SELECT name FROM person WHERE m > 'sad' ORDER BY m DESC",
    )
    .await;
    assert_eq!(rows, [["a"], ["c"]]);
    let rows = texts(&c, "SELECT name FROM person WHERE m = 'ok'").await;
    assert_eq!(rows, [["c"]]);
    // Casts: the type's name, pg_typeof, and a label that is none of them.
    let rows = texts(&c, "SELECT 'happy'::mood, pg_typeof('ok'::mood)").await;
    assert_eq!(rows, [["happy", "mood"]]);
    let e = refused(&c, "INSERT INTO person VALUES (5, 'e', 'angry')", "22P02").await;
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert_eq!(
        message.as_deref(),
        Some("invalid input value for enum mood: \"angry\"")
    );
    refused(&c, "UPDATE person SET m = 'x' WHERE id = 4", "22P02").await;
    refused(&c, "SELECT 'nope'::mood", "22P02").await;
    // The wire reports the type's own oid, in text and binary alike.
    let oid: u32 = texts(&c, "SELECT oid FROM pg_type WHERE typname = 'mood'").await[0][0]
        .parse()
        .unwrap();
    let st = c
        .prepare("SELECT m FROM person WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(st.columns()[0].type_().oid(), oid);
    assert_eq!(st.columns()[0].type_().name(), "mood");
    // ADD VALUE before/after a neighbour reorders; the catalog follows.
    c.batch_execute(
        "ALTER TYPE mood ADD VALUE 'ecstatic' AFTER 'happy'; \
         ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'; \
         ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh'; \
         INSERT INTO person VALUES (5, 'e', 'meh'), (6, 'f', 'ecstatic')",
    )
    .await
    .unwrap();
    refused(&c, "ALTER TYPE mood ADD VALUE 'meh'", "42710").await;
    refused(
        &c,
        "ALTER TYPE mood ADD VALUE 'x' BEFORE 'nothing'",
        "22023",
    )
    .await;
    let rows = texts(&c, "SELECT name FROM person WHERE m IS NOT NULL ORDER BY m").await;
    assert_eq!(rows, [["b"], ["e"], ["c"], ["a"], ["f"]]);
    let rows = texts(
        &c,
        "SELECT e.enumlabel, e.enumsortorder FROM pg_enum e JOIN pg_type t \
           ON t.oid = e.enumtypid WHERE t.typname = 'mood' ORDER BY e.enumsortorder",
    )
    .await;
    let labels: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(labels, ["sad", "meh", "ok", "happy", "ecstatic"]);
    let rows = texts(
        &c,
        "SELECT format_type(atttypid, atttypmod), t.typtype FROM pg_attribute a \
           JOIN pg_type t ON t.oid = a.atttypid WHERE a.attname = 'm'",
    )
    .await;
    assert_eq!(rows, [["mood", "e"]]);
    let rows = texts(
        &c,
        "SELECT data_type, udt_name FROM information_schema.columns \
           WHERE table_name = 'person' AND column_name = 'm'",
    )
    .await;
    assert_eq!(rows, [["USER-DEFINED", "mood"]]);
    // Types and relations share names; a used type stays; a type made in
    // a rolled-back block is gone.
    refused(&c, "CREATE TYPE person AS ENUM ('x')", "42710").await;
    refused(&c, "CREATE TABLE mood (x int)", "42710").await;
    refused(&c, "CREATE TYPE twice AS ENUM ('a', 'a')", "42710").await;
    refused(&c, "CREATE TYPE pair AS (a int, b int)", "0A000").await;
    refused(&c, "DROP TYPE mood", "2BP01").await;
    refused(&c, "ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'", "0A000").await;
    c.batch_execute(
        "BEGIN; CREATE TYPE color AS ENUM ('red', 'green'); \
         CREATE TABLE paint (id int PRIMARY KEY, c color); ROLLBACK",
    )
    .await
    .unwrap();
    refused(
        &c,
        "CREATE TABLE paint (id int PRIMARY KEY, c color)",
        "42704",
    )
    .await;
    c.batch_execute(
        "CREATE TYPE color AS ENUM ('red'); ALTER TYPE color RENAME VALUE 'red' TO 'blue'; \
         ALTER TYPE color RENAME TO hue; DROP TYPE hue; DROP TYPE IF EXISTS hue",
    )
    .await
    .unwrap();
    // Types and the values of their columns outlive a restart.
    drop(c);
    let cluster = cluster.restart().unwrap();
    let c = cluster.pg().await.unwrap();
    let rows = texts(&c, "SELECT name FROM person WHERE m < 'ok' ORDER BY m").await;
    assert_eq!(rows, [["b"], ["e"]]);
    refused(&c, "INSERT INTO person VALUES (9, 'z', 'angry')", "22P02").await;
}

#[tokio::test]
async fn intervals_times_and_arrays_are_column_types() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE spans (id int PRIMARY KEY, iv interval, at time, xs int[], \
           tags varchar(3)[], days date[])",
    )
    .await
    .unwrap();
    let insert = c
        .prepare("INSERT INTO spans VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .unwrap();
    assert_eq!(
        insert.params(),
        &[
            Type::INT4,
            Type::INTERVAL,
            Type::TIME,
            Type::INT4_ARRAY,
            Type::VARCHAR_ARRAY,
            Type::DATE_ARRAY
        ]
    );
    // Binary parameters and results.
    let iv = PgInterval {
        micros: -3_600_000_001,
        days: 2,
        months: 14,
    };
    let at = chrono::NaiveTime::from_hms_micro_opt(23, 59, 58, 5).unwrap();
    let xs = vec![Some(1), None, Some(-3)];
    let tags = vec!["a".to_string(), "b c".to_string()];
    let days = vec![NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()];
    c.execute(&insert, &[&1i32, &iv, &at, &xs, &tags, &days])
        .await
        .unwrap();
    let row = c
        .query_one("SELECT iv, at, xs, tags, days FROM spans WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, PgInterval>(0), iv);
    assert_eq!(row.get::<_, chrono::NaiveTime>(1), at);
    assert_eq!(row.get::<_, Vec<Option<i32>>>(2), xs);
    assert_eq!(row.get::<_, Vec<String>>(3), tags);
    assert_eq!(row.get::<_, Vec<NaiveDate>>(4), days);

    // Text input in PostgreSQL's forms, and its text output.
    c.batch_execute(
        "INSERT INTO spans VALUES (2, '1 year 3 mons -2 days +00:00:01', '4:05 PM', \
           '{1,NULL,3}', '{x,\"y,z\",NULL}', '{}'); \
         INSERT INTO spans VALUES (3, interval '36 hours' + interval '30 minutes', \
           time '01:00' + interval '90 minutes', ARRAY[7, 8], ARRAY['q'], NULL); \
         INSERT INTO spans (id, iv) VALUES \
           (4, timestamp '2021-01-01 10:00' - timestamp '2020-01-01'); \
         INSERT INTO spans (id, iv) VALUES (5, '@ 3 minutes ago')",
    )
    .await
    .unwrap();
    let msgs = c
        .simple_query("SELECT iv, at, xs, tags, days, pg_typeof(xs) FROM spans ORDER BY id")
        .await
        .unwrap();
    let rows: Vec<Vec<Option<String>>> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect();
    let text = |v: &[Option<&str>]| -> Vec<Option<String>> {
        v.iter().map(|s| s.map(str::to_string)).collect()
    };
    assert_eq!(
        rows,
        vec![
            text(&[
                Some("1 year 2 mons 2 days -01:00:00.000001"),
                Some("23:59:58.000005"),
                Some("{1,NULL,-3}"),
                Some("{a,\"b c\"}"),
                Some("{2024-02-29}"),
                Some("integer[]"),
            ]),
            text(&[
                Some("1 year 3 mons -2 days +00:00:01"),
                Some("16:05:00"),
                Some("{1,NULL,3}"),
                Some("{x,\"y,z\",NULL}"),
                Some("{}"),
                Some("integer[]"),
            ]),
            text(&[
                Some("36:30:00"),
                Some("02:30:00"),
                Some("{7,8}"),
                Some("{q}"),
                None,
                Some("integer[]"),
            ]),
            text(&[
                Some("366 days 10:00:00"),
                None,
                None,
                None,
                None,
                Some("integer[]")
            ]),
            text(&[Some("-00:03:00"), None, None, None, None, Some("integer[]")]),
        ]
    );
    // Comparisons, subscripts and array functions over the stored values.
    let ids: Vec<i32> = c
        .query(
            "SELECT id FROM spans WHERE iv > interval '1 day' AND 3 = ANY(xs) ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2]);
    let row = c
        .query_one(
            "SELECT xs[2], cardinality(tags) FROM spans WHERE id = 3",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 8);
    assert_eq!(row.get::<_, i64>(1), 1);

    // An interval key equates '1 mon' and '30 days', as PostgreSQL does.
    c.batch_execute(
        "CREATE TABLE by_span (k interval PRIMARY KEY); INSERT INTO by_span VALUES ('1 mon')",
    )
    .await
    .unwrap();
    refused(&c, "INSERT INTO by_span VALUES ('30 days')", "23505").await;
    // Bad input: PostgreSQL's errors, and the session goes on.
    refused(
        &c,
        "INSERT INTO spans (id, iv) VALUES (9, '1 fortnight')",
        "22007",
    )
    .await;
    refused(
        &c,
        "INSERT INTO spans (id, at) VALUES (9, '25:00')",
        "22007",
    )
    .await;
    refused(&c, "INSERT INTO spans (id, xs) VALUES (9, '{1,2')", "22P02").await;
    refused(
        &c,
        "INSERT INTO spans (id, xs) VALUES (9, '{{1},{2}}')",
        "0A000",
    )
    .await;
    refused(
        &c,
        "INSERT INTO spans (id, xs) VALUES (9, '{1,x}')",
        "22P02",
    )
    .await;
    refused(
        &c,
        "INSERT INTO spans (id, tags) VALUES (9, '{abcd}')",
        "22001",
    )
    .await;
    refused(&c, "CREATE TABLE grid (g int[][])", "0A000").await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
}

#[tokio::test]
async fn every_type_round_trips_in_binary_and_text() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE all_types (id int PRIMARY KEY, s smallint, b bigint, r real, d double precision,
           n numeric(20,6), t text, v varchar(8), ok boolean, day date, ts timestamp, tz timestamptz,
           raw bytea, u uuid, j jsonb)",
    )
    .await
    .unwrap();
    let insert = c
        .prepare(
            "INSERT INTO all_types VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
        )
        .await
        .unwrap();
    // The server describes each parameter with its column's type.
    let expected = [
        Type::INT4,
        Type::INT2,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::VARCHAR,
        Type::BOOL,
        Type::DATE,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::BYTEA,
        Type::UUID,
        Type::JSONB,
    ];
    assert_eq!(insert.params(), &expected);

    let n: Decimal = "-12345678901234.123456".parse().unwrap();
    let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let ts: NaiveDateTime = day.and_hms_micro_opt(13, 45, 1, 250_000).unwrap();
    let tz: DateTime<Utc> = ts.and_utc();
    let u = uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    let j = serde_json::json!({"k": [1, 2, {"x": null}], "s": "é"});
    let raw: Vec<u8> = vec![0, 1, 2, 255];
    c.execute(
        &insert,
        &[
            &1i32,
            &-32768i16,
            &i64::MAX,
            &1.5f32,
            &-0.1f64,
            &n,
            &"héllo",
            &"abcdefgh",
            &true,
            &day,
            &ts,
            &tz,
            &raw,
            &u,
            &j,
        ],
    )
    .await
    .unwrap();
    c.execute(
        &insert,
        &[
            &2i32,
            &None::<i16>,
            &None::<i64>,
            &None::<f32>,
            &None::<f64>,
            &None::<Decimal>,
            &None::<&str>,
            &None::<&str>,
            &None::<bool>,
            &None::<NaiveDate>,
            &None::<NaiveDateTime>,
            &None::<DateTime<Utc>>,
            &None::<Vec<u8>>,
            &None::<uuid::Uuid>,
            &None::<serde_json::Value>,
        ],
    )
    .await
    .unwrap();

    // Binary results (tokio-postgres asks for binary), with correct OIDs.
    let row = c
        .query_one("SELECT * FROM all_types WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    let types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(types, expected);
    assert_eq!(row.get::<_, i16>("s"), -32768);
    assert_eq!(row.get::<_, i64>("b"), i64::MAX);
    assert_eq!(row.get::<_, f32>("r"), 1.5);
    assert_eq!(row.get::<_, f64>("d"), -0.1);
    assert_eq!(row.get::<_, Decimal>("n"), n);
    assert_eq!(row.get::<_, String>("t"), "héllo");
    assert_eq!(row.get::<_, String>("v"), "abcdefgh");
    assert!(row.get::<_, bool>("ok"));
    assert_eq!(row.get::<_, NaiveDate>("day"), day);
    assert_eq!(row.get::<_, NaiveDateTime>("ts"), ts);
    assert_eq!(row.get::<_, DateTime<Utc>>("tz"), tz);
    assert_eq!(row.get::<_, Vec<u8>>("raw"), raw);
    assert_eq!(row.get::<_, uuid::Uuid>("u"), u);
    assert_eq!(row.get::<_, serde_json::Value>("j"), j);
    let nulls = c
        .query_one("SELECT * FROM all_types WHERE id = 2", &[])
        .await
        .unwrap();
    for i in 1..15 {
        assert!(
            nulls
                .try_get::<_, Option<String>>(i)
                .map(|v| v.is_none())
                .unwrap_or(true)
        );
    }
    assert_eq!(nulls.get::<_, Option<i16>>("s"), None);

    // Text results (simple protocol) in PostgreSQL's formats.
    let msgs = c
        .simple_query(
            "SELECT s, b, r, d, n, ok, day, ts, tz, raw, u, j FROM all_types WHERE id = 1",
        )
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    let text: Vec<&str> = (0..r.len()).map(|i| r.get(i).unwrap()).collect();
    assert_eq!(
        text,
        vec![
            "-32768",
            "9223372036854775807",
            "1.5",
            "-0.1",
            "-12345678901234.123456",
            "t",
            "2024-02-29",
            "2024-02-29 13:45:01.25",
            "2024-02-29 13:45:01.25+00",
            "\\x000102ff",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            r#"{"k": [1, 2, {"x": null}], "s": "é"}"#,
        ]
    );
}

#[tokio::test]
async fn parameters_filter_and_errors_keep_the_session() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE p (id bigint PRIMARY KEY, name text, score double precision)")
        .await
        .unwrap();
    for i in 0..50i64 {
        c.execute(
            "INSERT INTO p VALUES ($1, $2, $3)",
            &[&i, &format!("n{i}"), &(i as f64 / 2.0)],
        )
        .await
        .unwrap();
    }
    let stmt = c
        .prepare("SELECT name FROM p WHERE id >= $1 AND score < $2 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[Type::INT8, Type::FLOAT8]);
    let rows = c.query(&stmt, &[&10i64, &6.0f64]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, vec!["n10", "n11"]);
    // The same prepared statement with other values.
    assert_eq!(c.query(&stmt, &[&48i64, &100.0f64]).await.unwrap().len(), 2);

    // Errors with their SQLSTATEs; the connection goes on.
    let cases = [
        ("SELECT * FROM missing", "42P01"),
        ("SELEC 1", "42601"),
        ("INSERT INTO p VALUES (1, 'dup', 0)", "23505"),
        ("INSERT INTO p VALUES ('x', 'bad', 0)", "22P02"),
        ("SELECT nope FROM p", "42703"),
        ("SELECT 1 / 0", "22012"),
    ];
    for (sql, expected) in cases {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), expected, "{sql}: {e:?}");
        let e = c.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e), expected, "{sql} (extended): {e:?}");
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM p", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50);

    // RETURNING over the extended protocol, with its tag's row count.
    let rows = c
        .query(
            "UPDATE p SET score = score + 1 WHERE id < $1 RETURNING id",
            &[&3i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let affected = c
        .execute("DELETE FROM p WHERE id >= $1", &[&45i64])
        .await
        .unwrap();
    assert_eq!(affected, 5);
}

#[tokio::test]
async fn statements_are_atomic_across_shards() {
    let cluster = TestCluster::builder().shards(16).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE atomic (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    c.execute(
        "INSERT INTO atomic SELECT i, 0 FROM generate_series(1, 100) AS g(i)",
        &[],
    )
    .await
    .unwrap();
    // 100 rows over 16 shards on 3 data engines: the duplicate at the end
    // aborts the whole statement on every engine.
    let e = c.execute("INSERT INTO atomic SELECT i, 1 FROM generate_series(101, 300) AS g(i) UNION ALL SELECT 50, 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "23505");
    let n: i64 = c
        .query_one("SELECT count(*) FROM atomic", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
    // A multi-shard UPDATE either changes every row or none.
    c.execute("UPDATE atomic SET v = v + 1", &[]).await.unwrap();
    let s: i64 = c
        .query_one("SELECT sum(v) FROM atomic", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(s, 100);
    // Keys swapped in one statement: uniqueness holds for the statement as
    // a whole (PostgreSQL, checking row by row, refuses this).
    c.execute(
        "UPDATE atomic SET id = 201 - id WHERE id IN (100, 101)",
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let e = c
        .execute("UPDATE atomic SET id = 1 WHERE id IN (2, 3)", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
}

#[tokio::test]
async fn concurrent_updates_do_not_lose_increments() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE counter (id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)",
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = cluster.pg().await.unwrap();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                client
                    .execute("UPDATE counter SET n = n + 1 WHERE id = 1", &[])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i32 = c
        .query_one("SELECT n FROM counter", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100, "every increment counted once");
}

#[tokio::test]
async fn set_show_reset_version_and_insert_select_with_repeated_names() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    let show = |name: &'static str| {
        let c = &c;
        async move {
            c.query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    c.batch_execute("SET application_name = 'tour'")
        .await
        .unwrap();
    assert_eq!(show("application_name").await, "tour");
    c.batch_execute("RESET application_name").await.unwrap();
    assert_eq!(show("application_name").await, "");
    c.batch_execute("SET default_transaction_isolation = 'read committed'")
        .await
        .unwrap();
    assert_eq!(
        show("default_transaction_isolation").await,
        "read committed"
    );
    c.batch_execute("SET TimeZone = 'Europe/Paris'")
        .await
        .unwrap();
    c.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(show("default_transaction_isolation").await, "serializable");
    assert_eq!(show("TimeZone").await, "UTC");

    // version() as PostgreSQL words it: drivers parse "PostgreSQL X.Y".
    let v: String = c.query_one("SELECT version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("PostgreSQL 15.") && v.contains("eon"), "{v}");

    // Columns of INSERT … SELECT go in by position: repeated names are fine.
    c.batch_execute("CREATE TABLE twice (a int PRIMARY KEY, b int)")
        .await
        .unwrap();
    let n = c
        .execute(
            "INSERT INTO twice SELECT i, i FROM generate_series(1, 5) AS g(i)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 5);
    let sum: i64 = c
        .query_one("SELECT sum(a + b) FROM twice", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 30);
}

#[tokio::test]
async fn statement_timeout_cancels_a_long_statement_and_the_session_goes_on() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let c = cluster.pg().await.unwrap();
    let slow = "SELECT count(*) FROM generate_series(1, 30000) AS a(i), generate_series(1, 30000) AS b(i) WHERE a.i + b.i = 7";
    let e = c
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    c.batch_execute("SET statement_timeout = '200ms'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = c.query_one(slow, &[]).await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "57014", "{e:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let one: i64 = c.query_one("SELECT 1::bigint", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // Inside a block the block fails, as any error makes it.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        c.query_one(slow, &[])
            .await
            .unwrap_err()
            .code()
            .unwrap()
            .code(),
        "57014"
    );
    assert_eq!(
        c.query_one("SELECT 1", &[])
            .await
            .unwrap_err()
            .code()
            .unwrap()
            .code(),
        "25P02"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // 0 is no limit.
    c.batch_execute("SET statement_timeout = 0").await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM generate_series(1, 300) a, generate_series(1, 300) b",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 90_000);
}

/// The messages a raw PostgreSQL connection receives until ReadyForQuery:
/// (type byte, body).
async fn read_until_ready(s: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    loop {
        let kind = s.read_u8().await.unwrap();
        let len = s.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.unwrap();
        out.push((kind, body));
        if kind == b'Z' {
            return out;
        }
    }
}

#[tokio::test]
async fn set_reports_changed_parameters_with_parameter_status() {
    use tokio::io::AsyncWriteExt;
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    // Startup and SCRAM; the server parameters follow AuthenticationOk.
    let mut s = cluster.pg_raw().await.unwrap();
    let startup = read_until_ready(&mut s).await;
    let reported = |msgs: &[(u8, Vec<u8>)]| -> Vec<(String, String)> {
        msgs.iter()
            .filter(|(k, _)| *k == b'S')
            .map(|(_, b)| {
                let parts: Vec<String> = b
                    .split(|c| *c == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                (parts[0].clone(), parts[1].clone())
            })
            .collect()
    };
    assert!(
        reported(&startup)
            .iter()
            .any(|(k, v)| k == "TimeZone" && v == "UTC"),
        "{:?}",
        reported(&startup)
    );
    let query = |sql: &str| {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        m.extend_from_slice(sql.as_bytes());
        m.push(0);
        m
    };
    s.write_all(&query(
        "SET application_name = 'tour'; SET TimeZone = 'Europe/Paris'",
    ))
    .await
    .unwrap();
    let msgs = read_until_ready(&mut s).await;
    let r = reported(&msgs);
    assert!(
        r.contains(&("application_name".into(), "tour".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("TimeZone".into(), "Europe/Paris".into())),
        "{r:?}"
    );
    // Nothing changed: nothing reported.
    s.write_all(&query("SELECT 1")).await.unwrap();
    assert!(reported(&read_until_ready(&mut s).await).is_empty());
    s.write_all(&query("RESET ALL")).await.unwrap();
    let r = reported(&read_until_ready(&mut s).await);
    assert!(
        r.contains(&("application_name".into(), String::new()))
            && r.contains(&("TimeZone".into(), "UTC".into())),
        "{r:?}"
    );
}

/// COPY over the extended protocol (tokio-postgres' copy_in / copy_out),
/// inside a transaction block: rows staged with the block, gone on ROLLBACK.
#[tokio::test]
async fn copy_in_and_out_through_the_extended_protocol() {
    use futures::{SinkExt, TryStreamExt};
    let cluster = TestCluster::builder().data_engines(2).start().unwrap();
    let mut c = cluster.pg().await.unwrap();
    c.batch_execute("CREATE TABLE cp (id bigint PRIMARY KEY, v text)")
        .await
        .unwrap();
    let t = c.transaction().await.unwrap();
    let sink = t
        .copy_in("COPY cp FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1,one\n2,two\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let n: i64 = t
        .query_one("SELECT count(*) FROM cp", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the block sees its own copied rows");
    t.rollback().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM cp", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "ROLLBACK undid the COPY");

    let t = c.transaction().await.unwrap();
    let sink = t
        .copy_in("COPY cp FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    for chunk in 0..10i64 {
        let rows: String = (chunk * 100..chunk * 100 + 100)
            .map(|i| format!("{i},value {i}\n"))
            .collect();
        sink.send(bytes::Bytes::from(rows)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1000);
    t.commit().await.unwrap();

    let out: Vec<bytes::Bytes> = c
        .copy_out("COPY (SELECT id, v FROM cp WHERE id < 3 ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.concat(), b"0\tvalue 0\n1\tvalue 1\n2\tvalue 2\n");
    // The connection goes on after a failed COPY.
    let e = crate::copy_in(&c, "COPY cp FROM STDIN", b"5000\n")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22P04", "{e}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM cp", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
}

/// A CancelRequest (sent on its own connection, through the cluster's
/// PostgreSQL port, which may route it to any query engine) stops the
/// running statement with 57014; the session goes on, and a block it
/// happened in is failed.
#[tokio::test]
async fn a_cancel_request_stops_the_running_statement() {
    let cluster = TestCluster::builder()
        .query_engines(2)
        .max_query_engines(2)
        .start()
        .unwrap();
    // About 20 s of work on this machine (90000² pairs).
    let slow = "SELECT count(*) FROM generate_series(1, 90000) AS a(x), \
                generate_series(1, 90000) AS b(y) WHERE x * y % 1000003 = 7";
    for in_block in [false, true] {
        let c = cluster.pg().await.unwrap();
        if in_block {
            c.batch_execute("BEGIN").await.unwrap();
        }
        let token = c.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        });
        let started = std::time::Instant::now();
        let e = c.query_one(slow, &[]).await.unwrap_err();
        canceller.await.unwrap();
        assert_eq!(code(&e), "57014", "{e:?}");
        assert!(
            format!("{e:?}").contains("canceling statement due to user request"),
            "{e:?}"
        );
        eprintln!("cancelled after {:?}", started.elapsed());
        // 57014 says the cancel stopped it (finished, it returns a count).
        // It stops between batches of its operators, so not at once: about
        // 10 s here while its partitions keep both cores busy.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        if in_block {
            let e = c.query_one("SELECT 1", &[]).await.unwrap_err();
            assert_eq!(code(&e), "25P02", "{e}");
            c.batch_execute("ROLLBACK").await.unwrap();
        }
        let one: i32 = c.query_one("SELECT 1::int4", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "the session goes on");
    }
}

/// Foreign keys across shards: a missing parent and a still-referenced key
/// fail with 23503; TRUNCATE and DROP of a parent need its children too
/// (emptied or dropped first, in one statement).
#[tokio::test]
async fn foreign_keys_hold_across_shards_through_truncate_and_drop() {
    let cluster = TestCluster::builder().data_engines(2).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE fk_parent (id int PRIMARY KEY, name text);
         CREATE TABLE fk_child (id int PRIMARY KEY, parent int REFERENCES fk_parent, note text);
         INSERT INTO fk_parent SELECT i, 'p' || i FROM generate_series(1, 50) AS g(i);
         INSERT INTO fk_child SELECT i, i % 50 + 1, NULL FROM generate_series(1, 200) AS g(i);
         INSERT INTO fk_child VALUES (500, NULL, 'no parent is fine')",
    )
    .await
    .unwrap();
    for (sql, state) in [
        ("INSERT INTO fk_child VALUES (501, 99, NULL)", "23503"),
        ("UPDATE fk_child SET parent = 77 WHERE id = 3", "23503"),
        ("DELETE FROM fk_parent WHERE id = 7", "23503"),
        ("UPDATE fk_parent SET id = 1007 WHERE id = 7", "23503"),
        ("TRUNCATE fk_parent", "0A000"),
        ("DROP TABLE fk_parent", "2BP01"),
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e), state, "{sql}: {e:?}");
    }
    // Removing the children first lets the parent go.
    c.batch_execute("DELETE FROM fk_child WHERE parent = 8; DELETE FROM fk_parent WHERE id = 8")
        .await
        .unwrap();
    c.batch_execute("TRUNCATE fk_parent, fk_child")
        .await
        .unwrap();
    let n: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM fk_parent) + (SELECT count(*) FROM fk_child)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.batch_execute("DROP TABLE fk_parent, fk_child")
        .await
        .unwrap();
}

/// Scalar subqueries as PostgreSQL runs them: correlated ones whose value
/// uses the outer row, `ORDER BY … LIMIT 1` ones (the latest row per
/// key), and array results in binary and text.
#[tokio::test]
async fn correlated_subqueries_and_array_results() {
    let cluster = TestCluster::builder().data_engines(2).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE sensors (id int PRIMARY KEY, name text);
         CREATE TABLE readings (id int PRIMARY KEY, sensor int, at int, value int);
         INSERT INTO sensors VALUES (1, 'north'), (2, 'south'), (3, 'idle');
         INSERT INTO readings VALUES (1, 1, 10, 5), (2, 1, 30, 7), (3, 1, 20, 9),
                                     (4, 2, 15, 1), (5, 2, 5, 2);",
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT s.name,
                    (SELECT r.value FROM readings r WHERE r.sensor = s.id ORDER BY r.at DESC LIMIT 1),
                    (SELECT s.name || ':' || r.value FROM readings r WHERE r.sensor = s.id AND r.at = 5)
             FROM sensors s ORDER BY s.id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<i32>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("north".into(), Some(7), None),
            ("south".into(), Some(1), Some("south:2".into())),
            ("idle".into(), None, None),
        ]
    );
    // More than one row where one is expected is an error, as in PostgreSQL.
    let e = c
        .query(
            "SELECT (SELECT s.name || r.value FROM readings r WHERE r.sensor = s.id) FROM sensors s",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "21000", "{e}");

    let sql = "SELECT s.name, array_agg(r.value ORDER BY r.at) AS v, array_agg(s.name || ' x') AS n
               FROM sensors s JOIN readings r ON r.sensor = s.id GROUP BY s.name ORDER BY s.name";
    let rows = c.query(sql, &[]).await.unwrap();
    assert_eq!(rows[0].columns()[1].type_(), &Type::INT4_ARRAY);
    assert_eq!(rows[0].get::<_, Vec<i32>>(1), vec![5, 9, 7]);
    assert_eq!(rows[1].get::<_, Vec<String>>(2), vec!["south x", "south x"]);
    let text = c.simple_query(sql).await.unwrap();
    let first = text
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(first.get(1), Some("{5,9,7}"));
    // ARRAY(subquery): correlated or not, ordered, empty as {} (not NULL),
    // over an aggregate or a LIMIT; named "array".
    let rows = c
        .query(
            "SELECT s.id, ARRAY(SELECT r.value FROM readings r WHERE r.sensor = s.id ORDER BY r.at),
                    ARRAY(SELECT r.value FROM readings r ORDER BY r.value DESC LIMIT 1),
                    ARRAY(SELECT count(*) FROM readings r WHERE r.sensor = s.id)
             FROM sensors s ORDER BY s.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].columns()[1].name(), "array");
    let got: Vec<(i32, Vec<i32>, Vec<i32>, Vec<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, vec![5, 9, 7], vec![9], vec![3]),
            (2, vec![2, 1], vec![9], vec![2]),
            (3, vec![], vec![9], vec![0]),
        ]
    );
    // EXISTS as a value; an INSERT without a column list that gives fewer
    // values fills the first columns, the rest get their defaults.
    c.batch_execute("INSERT INTO sensors VALUES (4), (5); INSERT INTO sensors SELECT 6")
        .await
        .unwrap();
    let rows = c
        .query(
            "SELECT s.id, s.name, EXISTS (SELECT 1 FROM readings r WHERE r.sensor = s.id),
                    NOT EXISTS (SELECT 1 FROM readings r WHERE r.sensor = s.id AND r.value > 8)
             FROM sensors s ORDER BY s.id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, Option<String>, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(got[0], (1, Some("north".into()), true, false));
    assert_eq!(got[1], (2, Some("south".into()), true, true));
    assert_eq!(got[2], (3, Some("idle".into()), false, true));
    assert_eq!(got[5], (6, None, false, true));
    // Named as PostgreSQL names them.
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "name", "exists", "?column?"]);
    let e = c
        .batch_execute("INSERT INTO sensors VALUES (7, 'a'), (8)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42601", "{e}");
    assert_eq!(first.get(2), Some("{\"north x\",\"north x\",\"north x\"}"));

    // generate_series in a select list is set-returning, as in PostgreSQL:
    // a row per value.
    assert_eq!(
        texts(&c, "SELECT generate_series(1, 3) AS n, 'x' AS tag").await,
        [["1", "x"], ["2", "x"], ["3", "x"]]
    );
    assert_eq!(
        texts(&c, "SELECT unnest(generate_series(1, 2))").await,
        [["1"], ["2"]]
    );
    assert_eq!(
        texts(&c, "SELECT array(SELECT generate_series(1, 3))").await,
        [["{1,2,3}"]]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT count(*) FROM (SELECT generate_series(1, v.n) FROM (VALUES (1), (2), (3)) v(n)) q"
        )
        .await,
        [["6"]]
    );
    // A scalar subquery in a VALUES row, in a query and in an INSERT
    // (with DEFAULT in another row).
    assert_eq!(
        texts(
            &c,
            "SELECT * FROM (VALUES (1, 'a'), ((SELECT min(id) + 1 FROM sensors), 'b')) v ORDER BY 1"
        )
        .await,
        [["1", "a"], ["2", "b"]]
    );
    c.batch_execute(
        "INSERT INTO readings VALUES (100, 3, 1, 1), ((SELECT 100 + count(*) FROM sensors WHERE id = 1), DEFAULT, 2, 2)",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT id, sensor FROM readings WHERE id >= 100 ORDER BY id"
        )
        .await,
        [["100", "3"], ["101", "NULL"]]
    );
    // A USING join has one column per key, listed first by *; a FULL
    // join's is the key of whichever side has the row, a RIGHT join's the
    // right side's.
    c.batch_execute(
        "CREATE TABLE ja (k int PRIMARY KEY, a text); CREATE TABLE jb (k int PRIMARY KEY, b text);
         INSERT INTO ja VALUES (1, 'a1'), (2, 'a2'); INSERT INTO jb VALUES (2, 'b2'), (3, 'b3')",
    )
    .await
    .unwrap();
    let sql = "SELECT * FROM ja FULL JOIN jb USING (k) ORDER BY k";
    assert_eq!(
        texts(&c, sql).await,
        [["1", "a1", "NULL"], ["2", "a2", "b2"], ["3", "NULL", "b3"]]
    );
    let names = column_names(&c, sql).await;
    assert_eq!(names, ["k", "a", "b"]);
    assert_eq!(
        texts(&c, "SELECT k, b FROM ja RIGHT JOIN jb USING (k) ORDER BY k").await,
        [["2", "b2"], ["3", "b3"]]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT * FROM (SELECT b, k FROM jb) x RIGHT JOIN ja USING (k) ORDER BY k"
        )
        .await,
        [["1", "NULL", "a1"], ["2", "b2", "a2"]]
    );

    // LATERAL and correlated subqueries DataFusion cannot turn into joins
    // run per outer row, as PostgreSQL's nested loop runs them.
    // The newest reading per sensor; sensors without any keep a NULL row.
    let sql = "SELECT s.id, r.value FROM sensors s LEFT JOIN LATERAL
                 (SELECT r.value FROM readings r WHERE r.sensor = s.id ORDER BY r.at DESC LIMIT 1) r
               ON true WHERE s.id <= 4 ORDER BY s.id";
    assert_eq!(
        texts(&c, sql).await,
        [["1", "7"], ["2", "1"], ["3", "1"], ["4", "NULL"]]
    );
    let plan = texts(&c, &format!("EXPLAIN {sql}"))
        .await
        .concat()
        .join("\n");
    assert!(plan.contains("ApplyExec: left lateral join"), "{plan}");
    // An inner lateral join drops the rows without any; its ON applies
    // per row; UNION ALL inside refers to the outer row twice.
    assert_eq!(
        texts(
            &c,
            "SELECT s.id, v.x FROM sensors s JOIN LATERAL
               (SELECT s.id * 10 AS x UNION ALL SELECT s.id * 100) v ON v.x < 150
             WHERE s.id <= 2 ORDER BY 1, 2"
        )
        .await,
        [["1", "10"], ["1", "100"], ["2", "20"]]
    );
    // A scalar subquery, IN and NOT IN over values of the outer row.
    assert_eq!(
        texts(
            &c,
            "SELECT s.id, (SELECT max(v) FROM (VALUES (s.id * 1), (s.id * 2)) t(v)),
                    s.id IN (SELECT r.value - s.id FROM readings r),
                    s.id NOT IN (SELECT r.value - s.id FROM readings r)
             FROM sensors s WHERE s.id <= 3 ORDER BY 1"
        )
        .await,
        [
            ["1", "2", "t", "f"],
            ["2", "4", "f", "t"],
            ["3", "6", "f", "t"]
        ]
    );
    let e = c
        .query(
            "SELECT (SELECT x FROM (VALUES (s.id), (s.id)) v(x)) FROM sensors s",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "21000", "{e}");
    // A function in FROM whose arguments name earlier tables' columns is
    // lateral; its one column is named after the alias.
    assert_eq!(
        texts(
            &c,
            "SELECT s.id, g FROM sensors s, generate_series(1, s.id) g WHERE s.id <= 2 ORDER BY 1, 2"
        )
        .await,
        [["1", "1"], ["2", "1"], ["2", "2"]]
    );
    let sql = "SELECT v.id, u.t FROM (VALUES (1, ARRAY[7, 8]), (2, ARRAY[]::int[])) v(id, arr)
               LEFT JOIN unnest(v.arr) AS u(t) ON true ORDER BY 1, 2";
    assert_eq!(
        texts(&c, sql).await,
        [["1", "7"], ["1", "8"], ["2", "NULL"]]
    );
    assert_eq!(column_names(&c, sql).await, ["id", "t"]);
    // An aggregate of nothing but outer columns belongs to the outer query
    // in PostgreSQL; run per row it would answer something else: refused.
    let e = c
        .query(
            "SELECT (SELECT max(s.id) FROM readings) FROM sensors s",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
}

/// idle_in_transaction_session_timeout: a block left idle longer is rolled
/// back (its staged writes no longer hold their rows) and the session ends
/// with FATAL 25P03; a busy block and sessions outside blocks are left alone.
#[tokio::test]
async fn idle_in_transaction_timeout_rolls_back_and_ends_the_session() {
    let cluster = TestCluster::builder().data_engines(1).start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE idle (id int PRIMARY KEY, v int); INSERT INTO idle VALUES (1, 0);",
    )
    .await
    .unwrap();
    let e = c
        .batch_execute("SET idle_in_transaction_session_timeout = 'soon'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    c.batch_execute("SET idle_in_transaction_session_timeout = '400ms'")
        .await
        .unwrap();
    // Idle outside a block: nothing happens.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    // Statements that keep coming keep the block alive.
    c.batch_execute("BEGIN").await.unwrap();
    for i in 1..=4 {
        c.execute("UPDATE idle SET v = $1 WHERE id = 1", &[&i])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN; UPDATE idle SET v = 100 WHERE id = 1")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // The row is free again: another session updates it at once.
    let other = cluster.pg().await.unwrap();
    other
        .execute("UPDATE idle SET v = v + 1 WHERE id = 1", &[])
        .await
        .unwrap();
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P03", "{e}");
    assert!(c.is_closed() || c.query("SELECT 1", &[]).await.is_err());
    let v: i32 = other
        .query_one("SELECT v FROM idle WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        v, 5,
        "the committed block's 4, plus one; the idle block's 100 rolled back"
    );
}

/// A numeric's raw binary form (tokio-postgres' own numeric types know no
/// NaN or Infinity).
struct RawNumeric(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawNumeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawNumeric(raw.to_vec()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Text results of `sql`, row by row.
/// The names of the result columns `sql` describes.
async fn column_names(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let statement = c.prepare(sql).await.unwrap();
    statement
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}

async fn texts(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn numeric_keeps_nan_and_infinity_and_rounds_like_postgresql() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    // A precision above the 38 digits eon stores is accepted (PostgreSQL
    // allows 1000); its values hold 38 digits.
    c.batch_execute(
        "CREATE TABLE nums (id int PRIMARY KEY, big numeric(60,10), u numeric, small numeric(5,2));
         INSERT INTO nums VALUES
           (1, '1234567890123456789012345678.0123456789', 'NaN', '1.005'),
           (2, '-0.00000000005', 'Infinity', '-1.005'),
           (3, 'NaN', '-inf', 'nan'),
           (4, '2', '2', '999.994'),
           (5, NULL, '1.1', NULL)",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "SELECT id, big, u, small FROM nums ORDER BY id").await,
        vec![
            vec![
                "1",
                "1234567890123456789012345678.0123456789",
                "NaN",
                "1.01"
            ],
            vec!["2", "-0.0000000001", "Infinity", "-1.01"],
            vec!["3", "NaN", "-Infinity", "NaN"],
            vec!["4", "2.0000000000", "2", "999.99"],
            vec!["5", "NULL", "1.1", "NULL"],
        ]
    );
    // PostgreSQL's order: -Infinity, the numbers, Infinity, NaN.
    assert_eq!(
        texts(&c, "SELECT u FROM nums ORDER BY u").await,
        vec![
            vec!["-Infinity"],
            vec!["1.1"],
            vec!["2"],
            vec!["Infinity"],
            vec!["NaN"]
        ]
    );
    // Arithmetic with the special values gives PostgreSQL's answers.
    assert_eq!(
        texts(
            &c,
            "SELECT a.u + b.u, a.u - b.u, a.u * b.u, a.u / b.u FROM nums a, nums b
             WHERE a.id = 2 AND b.id IN (2, 3, 4) ORDER BY b.id"
        )
        .await,
        vec![
            vec!["Infinity", "NaN", "Infinity", "NaN"],
            vec!["NaN", "Infinity", "-Infinity", "NaN"],
            vec!["Infinity", "Infinity", "Infinity", "Infinity"],
        ]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT 2 / 'Infinity'::numeric = 0, 'NaN'::numeric = 'NaN'::numeric, \
             '-Infinity'::numeric::float8, 'NaN'::float8::numeric, '12.345'::numeric(4,2)"
        )
        .await,
        vec![vec!["t", "t", "-Infinity", "NaN", "12.35"]]
    );
    // Errors: PostgreSQL's codes and details; the session goes on.
    let e = refused(&c, "SELECT 'Infinity'::numeric / 0", "22012").await;
    assert_eq!(e.as_db_error().unwrap().message(), "division by zero");
    let e = refused(&c, "INSERT INTO nums VALUES (6, 0, 0, 'Infinity')", "22003").await;
    let db = e.as_db_error().unwrap();
    assert_eq!(db.message(), "numeric field overflow");
    assert_eq!(
        db.detail(),
        Some("A field with precision 5, scale 2 cannot hold an infinite value.")
    );
    let e = refused(&c, "INSERT INTO nums VALUES (6, 0, 0, '1000')", "22003").await;
    assert_eq!(
        e.as_db_error().unwrap().detail(),
        Some("A field with precision 5, scale 2 must round to an absolute value less than 10^3.")
    );
    // Beyond the 38 digits eon stores, even where the declared precision
    // allows more.
    let e = refused(
        &c,
        "INSERT INTO nums VALUES (6, '123456789012345678901234567890', 0, 0)",
        "22003",
    )
    .await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "value overflows numeric format"
    );
    refused(&c, "SELECT big * big FROM nums WHERE id = 1", "22003").await;
    refused(&c, "INSERT INTO nums VALUES (6, 0, 'abc', 0)", "22P02").await;
    // sum counts the special values as PostgreSQL does; functions not yet
    // taught them refuse them rather than compute with their stored
    // integers.
    assert_eq!(
        texts(
            &c,
            "SELECT sum(u), sum(u) FILTER (WHERE id IN (2, 4)), \
             sum(u) FILTER (WHERE id IN (3, 4)), sum(u) FILTER (WHERE id IN (2, 3)) FROM nums"
        )
        .await,
        vec![vec!["NaN", "Infinity", "-Infinity", "NaN"]]
    );
    refused(&c, "SELECT abs(u) FROM nums", "0A000").await;
    assert_eq!(
        texts(
            &c,
            "SELECT sum(u) = 3.1, avg(small) = 999.99 FROM nums WHERE id >= 4"
        )
        .await,
        vec![vec!["t", "t"]]
    );

    // Into float and integer columns: the floats' NaN and infinities; no
    // integer (PostgreSQL's 0A000).
    c.batch_execute(
        "CREATE TABLE fl (id int, f float8, i int);
         INSERT INTO fl VALUES (1, '-infinity', 0), (2, 1.5, 1);
         INSERT INTO fl SELECT 3, u, 0 FROM nums WHERE id = 1",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "SELECT f FROM fl ORDER BY id").await,
        vec![vec!["-Infinity"], vec!["1.5"], vec!["NaN"]]
    );
    let e = refused(
        &c,
        "INSERT INTO fl SELECT 4, 0, u FROM nums WHERE id = 1",
        "0A000",
    )
    .await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "cannot convert NaN to integer"
    );

    // Binary results: the special values' sign words, no digits.
    let rows = c
        .query("SELECT u FROM nums WHERE id <= 3 ORDER BY id", &[])
        .await
        .unwrap();
    let raw: Vec<Vec<u8>> = rows.iter().map(|r| r.get::<_, RawNumeric>(0).0).collect();
    assert_eq!(raw[0], [0, 0, 0, 0, 0xC0, 0, 0, 0]);
    assert_eq!(raw[1], [0, 0, 0, 0, 0xD0, 0, 0, 0]);
    assert_eq!(raw[2], [0, 0, 0, 0, 0xF0, 0, 0, 0]);
    // And the numbers still decode as numbers.
    let d: Decimal = c
        .query_one("SELECT small FROM nums WHERE id = 4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(d.to_string(), "999.99");
    let n: i64 = c
        .query_one("SELECT count(*) FROM nums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
    // A special value is no integer: PostgreSQL's error names the type.
    let e = refused(&c, "SELECT u::int2 FROM nums WHERE id = 1", "0A000").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "cannot convert NaN to smallint"
    );
    let e = refused(&c, "SELECT u::int8 FROM nums WHERE id = 3", "0A000").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "cannot convert infinity to bigint"
    );
    assert_eq!(
        texts(&c, "SELECT u::int4 FROM nums WHERE id = 5").await,
        vec![vec!["1"]]
    );
}

#[tokio::test]
async fn a_failing_returning_list_writes_nothing() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE pay (id int PRIMARY KEY, salary int);
         INSERT INTO pay VALUES (1, 5000), (2, 6000), (3, 0)",
    )
    .await
    .unwrap();
    // RETURNING is evaluated before the write is applied: its error is
    // the statement's, and the rows stay as they were.
    refused(&c, "DELETE FROM pay RETURNING 1 / salary", "22012").await;
    refused(
        &c,
        "UPDATE pay SET salary = 0 RETURNING 1 / salary",
        "22012",
    )
    .await;
    refused(
        &c,
        "INSERT INTO pay VALUES (4, 0) RETURNING 1 / salary",
        "22012",
    )
    .await;
    refused(
        &c,
        "DELETE FROM pay RETURNING rank() OVER (ORDER BY salary)",
        "42P20",
    )
    .await;
    refused(&c, "DELETE FROM pay RETURNING count(*)", "42803").await;
    assert_eq!(
        texts(&c, "SELECT id, salary FROM pay ORDER BY id").await,
        vec![vec!["1", "5000"], vec!["2", "6000"], vec!["3", "0"]]
    );
    // ON CONFLICT DO NOTHING returns the rows it wrote, and only those.
    assert_eq!(
        texts(
            &c,
            "INSERT INTO pay VALUES (3, 1), (5, 1) ON CONFLICT DO NOTHING RETURNING id, salary * 2"
        )
        .await,
        vec![vec!["5", "2"]]
    );
    // The rows come from several shards, in no set order (as in
    // PostgreSQL, RETURNING has no ORDER BY).
    let mut updated = texts(
        &c,
        "UPDATE pay SET salary = salary + 1 WHERE id <= 2 RETURNING id, salary",
    )
    .await;
    updated.sort();
    assert_eq!(updated, vec![vec!["1", "5001"], vec!["2", "6001"]]);
}

#[tokio::test]
async fn to_char_to_number_and_extract_answer_as_postgresql() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT to_char(-34338492.215397047::numeric, '9G999G999G999D99'),
                    to_char(-4.31::numeric, 'FM9990.999PR'),
                    to_char(1999, 'RN'),
                    to_char(42::int8, '99th'),
                    to_char(4200000000::float8, '9.999EEEE'),
                    to_char(12.5::numeric, 'S000.00'),
                    to_number('-34,338,492.654', '99G999G999D999'),
                    to_number('<564646.654564>', '999999.999999PR')"
        )
        .await,
        vec![vec![
            "   -34,338,492.22",
            "<4.31>",
            "        MCMXCIX",
            " 42nd",
            " 4.200e+09",
            "+012.50",
            "-34338492.654",
            "-564646.654564"
        ]]
    );
    // EXTRACT is numeric with the unit's scale, date_part float8; BC
    // years, centuries and infinities as PostgreSQL counts them.
    assert_eq!(
        texts(
            &c,
            "SELECT EXTRACT(second FROM timestamp '1997-02-10 17:32:01.4'),
                    date_part('epoch', timestamp '1997-02-10 17:32:01.4'),
                    EXTRACT(century FROM date '0101-12-31 BC'),
                    EXTRACT(millennium FROM date '2001-01-01'),
                    EXTRACT(isodow FROM date '2020-08-16'),
                    EXTRACT(year FROM date 'infinity'),
                    EXTRACT(month FROM date 'infinity')"
        )
        .await,
        vec![vec![
            "1.400000",
            "855595921.4",
            "-2",
            "3",
            "7",
            "Infinity",
            "NULL"
        ]]
    );
    refused(&c, "SELECT EXTRACT(hour FROM date '2020-08-11')", "0A000").await;
    refused(&c, "SELECT date_part('fortnight', now())", "22023").await;
    refused(&c, "SELECT to_char(1, '9.9.9')", "42601").await;
    // Constant integer arithmetic overflows as computed arithmetic does.
    refused(
        &c,
        "SELECT '9223372036854775800'::int8 + '9223372036854775800'::int8",
        "22003",
    )
    .await;
}

#[tokio::test]
async fn math_untyped_literals_and_window_frames_answer_as_postgresql() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE m (id int PRIMARY KEY, f float8, g text, d date);
         INSERT INTO m VALUES (1, 1.5, 'b', '2020-01-01'), (2, 2.5, 'a', '2020-06-01'),
                              (3, -4, 'b', '2021-03-01'), (4, 10, 'a', '2023-01-01')",
    )
    .await
    .unwrap();
    // An untyped literal takes the type of the number beside it.
    assert_eq!(
        texts(
            &c,
            "SELECT f * '-10', f + '0.5', 2.0::float8 ^ '3', power(2, '10'),
                    power(2.5, '2'), sqrt('16'), mod(-7, 3), mod(7::int2, 3::int8)
             FROM m WHERE id = 1"
        )
        .await,
        vec![vec!["-15", "2", "8", "1024", "6.25", "4", "-1", "1"]]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT pg_size_pretty(10239::bigint), pg_size_pretty(10240::bigint),
                    pg_size_pretty(20971519::bigint), pg_size_pretty(-123456789)"
        )
        .await,
        vec![vec!["10239 bytes", "10 kB", "20 MB", "-118 MB"]]
    );
    // PostgreSQL's errors where IEEE arithmetic would answer NaN or ±Infinity.
    for (sql, code) in [
        ("SELECT ln(f - f) FROM m", "2201E"),
        ("SELECT log(f) FROM m", "2201E"),
        ("SELECT sqrt(f) FROM m", "2201F"),
        ("SELECT power(0::float8, -1)", "2201F"),
        ("SELECT power(-8::float8, 0.5::float8)", "2201F"),
        ("SELECT exp(1000::float8)", "22003"),
        ("SELECT f ^ '1e200' FROM m", "22003"),
        ("SELECT mod(id, id - 1) FROM m", "22012"),
        ("SELECT f * 'x' FROM m", "22P02"),
    ] {
        refused(&c, sql, code).await;
    }
    let e = refused(&c, "SELECT 'maybe'::boolean", "22P02").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "invalid input syntax for type boolean: \"maybe\""
    );
    // Rows of a window come out grouped by partition, in key order (the
    // order within a partition is the sort's).
    let rows = texts(&c, "SELECT g, id, sum(f) OVER (PARTITION BY g) FROM m").await;
    let groups: Vec<(&str, &str)> = rows.iter().map(|r| (&*r[0], &*r[2])).collect();
    assert_eq!(
        groups,
        [("a", "12.5"), ("a", "12.5"), ("b", "-2.5"), ("b", "-2.5")]
    );
    // Frame offsets written as PostgreSQL writes them.
    assert_eq!(
        texts(
            &c,
            "SELECT id, sum(f) OVER (ORDER BY d RANGE BETWEEN '1 year'::interval PRECEDING
                                                  AND CURRENT ROW),
                    count(*) OVER (ORDER BY id RANGE BETWEEN 2::int8 PRECEDING AND '0'::int FOLLOWING)
             FROM m ORDER BY id"
        )
        .await,
        vec![
            vec!["1", "1.5", "1"],
            vec!["2", "4", "2"],
            vec!["3", "-1.5", "3"],
            vec!["4", "10", "3"],
        ]
    );
    // Frames that exclude the current row, its peers (equal in the ORDER
    // BY), or both; lag ignores the clause, as it ignores the frame.
    let sql = "SELECT id,
            sum(f) OVER (ORDER BY g ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
                         EXCLUDE GROUP),
            sum(f) OVER (ORDER BY g RANGE BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
                         EXCLUDE TIES),
            count(*) OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
                           EXCLUDE CURRENT ROW),
            first_value(f) OVER (ORDER BY id ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING
                                 EXCLUDE CURRENT ROW),
            lag(id) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
                          EXCLUDE TIES),
            sum(f) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE NO OTHERS)
         FROM m WINDOW w AS (ORDER BY id) ORDER BY id";
    assert_eq!(
        texts(&c, sql).await,
        vec![
            vec!["1", "12.5", "14", "3", "2.5", "NULL", "1.5"],
            vec!["2", "-2.5", "0", "3", "-4", "1", "4"],
            vec!["3", "12.5", "8.5", "3", "10", "2", "0"],
            vec!["4", "-2.5", "7.5", "3", "NULL", "3", "10"],
        ]
    );
    let names = column_names(&c, sql).await;
    assert_eq!(
        names,
        ["id", "sum", "sum", "count", "first_value", "lag", "sum"]
    );
    // Floats as extra_float_digits says: 0 gives C's %.15g / %.6g.
    c.batch_execute("SET extra_float_digits = 0").await.unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT 0.1::float8 + 0.2::float8, 431.77261::float4, 1e20::float8"
        )
        .await,
        vec![vec!["0.3", "431.773", "1e+20"]]
    );
    c.batch_execute("RESET extra_float_digits").await.unwrap();
    assert_eq!(
        texts(&c, "SELECT 0.1::float8 + 0.2::float8").await,
        vec![vec!["0.30000000000000004"]]
    );
    refused(&c, "SET extra_float_digits = 4", "22023").await;
    // Dates and timestamps through PostgreSQL's pictures; the infinities
    // have none.
    c.batch_execute("CREATE TABLE stamps (id int PRIMARY KEY, t timestamp)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO stamps VALUES (1, 'infinity'), (2, '2020-01-01')")
        .await
        .unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT to_char(timestamp '1997-02-10 17:32:01.5', 'FMDay, FMDDth Month YYYY HH12:MI:SS.MS am'),
                    to_char(date '2024-03-05', 'YYYY-MM-DD \"week\" IW')"
        )
        .await,
        vec![vec![
            "Monday, 10th February  1997 05:32:01.500 pm",
            "2024-03-05 week 10"
        ]]
    );
    assert_eq!(
        texts(&c, "SELECT to_char(t, 'YYYY') FROM stamps ORDER BY id").await,
        vec![vec!["NULL"], vec!["2020"]]
    );
    refused(&c, "SELECT 'Feb 16 17:32:01 5097 BC'::timestamp", "22008").await;
    // A float becomes a numeric through its text (15 or 6 digits), as in
    // PostgreSQL, not through its binary value.
    assert_eq!(
        texts(
            &c,
            "SELECT 0.1::float4::numeric = 0.1, 1e20::float8::numeric = 1e20::numeric,
                    431.773::float4::numeric(6, 3), 'nan'::float8::numeric"
        )
        .await,
        vec![vec!["t", "t", "431.773", "NaN"]]
    );
    // A cast to numeric (no precision) and a sum of such values are written
    // without the stored scale's trailing zeros.
    assert_eq!(
        texts(
            &c,
            "SELECT 1.5::numeric, '42'::int2::numeric, sum(v::numeric)
             FROM (VALUES (1.1), (2.2)) t(v)"
        )
        .await,
        vec![vec!["1.5", "42", "3.3"]]
    );
    // Variance of a set with an infinity or NaN is NaN, as in PostgreSQL,
    // also in a sliding frame once the infinity has left it.
    assert_eq!(
        texts(
            &c,
            "SELECT var_pop('inf'::float8), var_samp('inf'::float8),
                    (SELECT stddev_samp(x) FROM (VALUES (1.0::float8), ('nan')) v(x))"
        )
        .await,
        vec![vec!["NaN", "NULL", "NaN"]]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT var_pop(x) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
             FROM (VALUES (1, 'inf'::float8), (2, 1), (3, 3)) v(i, x) ORDER BY i"
        )
        .await,
        vec![vec!["NaN"], vec!["NaN"], vec!["1"]]
    );
}

#[tokio::test]
async fn cursors_fetch_move_and_close_as_postgresql() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE cur (id int PRIMARY KEY, v text);
         INSERT INTO cur SELECT g, 'v' || g FROM generate_series(1, 50) g",
    )
    .await
    .unwrap();
    // A cursor needs a transaction block unless it is held.
    refused(&c, "DECLARE c CURSOR FOR SELECT id FROM cur", "25P01").await;
    c.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT id, v FROM cur ORDER BY id")
        .await
        .unwrap();
    let ids = |rows: Vec<Vec<String>>| -> Vec<String> {
        rows.into_iter().map(|r| r[0].clone()).collect()
    };
    assert_eq!(ids(texts(&c, "FETCH 3 FROM c").await), ["1", "2", "3"]);
    assert_eq!(ids(texts(&c, "FETCH c").await), ["4"]);
    let moved = c.simple_query("MOVE FORWARD 10 IN c").await.unwrap();
    assert!(
        matches!(
            moved.last(),
            Some(tokio_postgres::SimpleQueryMessage::CommandComplete(10))
        ),
        "{moved:?}"
    );
    // Through the extended protocol: FETCH is described as the cursor's rows.
    let rows = c.query("FETCH FORWARD 2 FROM c", &[]).await.unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(15, "v15".to_string()), (16, "v16".to_string())]);
    // Without SCROLL a cursor goes forward only.
    refused(&c, "FETCH PRIOR FROM c", "55000").await;
    c.batch_execute("ROLLBACK").await.unwrap();
    refused(&c, "FETCH c", "34000").await;

    // SCROLL: backward, absolute, relative, past either end.
    c.batch_execute("BEGIN; DECLARE s SCROLL CURSOR FOR SELECT id FROM cur ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids(texts(&c, "FETCH LAST FROM s").await), ["50"]);
    assert_eq!(
        ids(texts(&c, "FETCH BACKWARD 2 FROM s").await),
        ["49", "48"]
    );
    assert_eq!(ids(texts(&c, "FETCH ABSOLUTE 5 FROM s").await), ["5"]);
    assert_eq!(ids(texts(&c, "FETCH RELATIVE -2 FROM s").await), ["3"]);
    assert_eq!(ids(texts(&c, "FETCH -5 FROM s").await), ["2", "1"]);
    assert_eq!(ids(texts(&c, "FETCH NEXT FROM s").await), ["1"]);
    assert_eq!(texts(&c, "FETCH ABSOLUTE 99 FROM s").await.len(), 0);
    assert_eq!(ids(texts(&c, "FETCH PRIOR FROM s").await), ["50"]);
    refused(&c, "DECLARE s CURSOR FOR SELECT 1", "42P03").await;
    c.batch_execute("ROLLBACK").await.unwrap();

    // WITH HOLD outlives its block's COMMIT (not its ROLLBACK); CLOSE ends it.
    c.batch_execute(
        "BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT id FROM cur WHERE id > 47 ORDER BY id;
         DECLARE gone CURSOR WITH HOLD FOR SELECT 1; COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(ids(texts(&c, "FETCH ALL FROM h").await), ["48", "49", "50"]);
    c.batch_execute("CLOSE h").await.unwrap();
    refused(&c, "FETCH h", "34000").await;
    c.batch_execute("BEGIN; DECLARE r CURSOR WITH HOLD FOR SELECT 1; ROLLBACK")
        .await
        .unwrap();
    refused(&c, "FETCH r", "34000").await;
    c.batch_execute("CLOSE ALL").await.unwrap();
    refused(&c, "FETCH gone", "34000").await;
    // An error while fetching aborts the block, and the session goes on.
    c.batch_execute("BEGIN; DECLARE z CURSOR FOR SELECT 1 / (id - 3) FROM cur ORDER BY id")
        .await
        .unwrap();
    refused(&c, "FETCH 5 FROM z", "22012").await;
    refused(&c, "FETCH z", "25P02").await;
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(texts(&c, "SELECT count(*) FROM cur").await, [["50"]]);
}

#[tokio::test]
async fn partitioned_tables_route_rows_and_read_in_bound_order() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE m (a text, b int) PARTITION BY LIST (lower(a)); \
         CREATE TABLE m_cd PARTITION OF m FOR VALUES IN ('cc', 'dd'); \
         CREATE TABLE m_ab PARTITION OF m FOR VALUES IN ('aa', 'bb'); \
         CREATE TABLE m_null PARTITION OF m FOR VALUES IN (NULL); \
         CREATE TABLE m_ef PARTITION OF m FOR VALUES IN ('ee', 'ff') PARTITION BY RANGE (b); \
         CREATE TABLE m_ef1 PARTITION OF m_ef FOR VALUES FROM (MINVALUE) TO (10); \
         CREATE TABLE m_ef2 PARTITION OF m_ef FOR VALUES FROM (10) TO (20); \
         CREATE TABLE m_def PARTITION OF m DEFAULT",
    )
    .await
    .unwrap();
    // No partition of the sub-partitioned one takes b = 30.
    let e = refused(&c, "INSERT INTO m VALUES ('EE', 30)", "23514").await;
    let db = e.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        "no partition of relation \"m_ef\" found for row"
    );
    assert_eq!(
        db.detail(),
        Some("Partition key of the failing row contains (b) = (30).")
    );
    // Straight into a partition: its bound and its parent's are checked.
    let e = refused(&c, "INSERT INTO m_ef1 VALUES ('cc', 1)", "23514").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "new row for relation \"m_ef1\" violates partition constraint"
    );
    assert_eq!(
        e.as_db_error().unwrap().detail(),
        Some("Failing row contains (cc, 1).")
    );
    refused(&c, "INSERT INTO m_def VALUES ('aa', 1)", "23514").await;
    refused(
        &c,
        "CREATE TABLE m_x PARTITION OF m FOR VALUES IN ('bb', 'zz')",
        "42P17",
    )
    .await;
    c.batch_execute(
        "INSERT INTO m VALUES ('Aa', 1), ('dd', 2), (NULL, 3), ('ff', 4), ('EE', 15), ('zz', 6); \
         INSERT INTO m_cd VALUES ('CC', 7)",
    )
    .await
    .unwrap();
    // Partition by partition, in bound order; tableoid names each row's.
    assert_eq!(
        texts(&c, "SELECT tableoid::regclass, * FROM m").await,
        [
            ["m_ab", "Aa", "1"],
            ["m_cd", "dd", "2"],
            ["m_cd", "CC", "7"],
            ["m_ef1", "ff", "4"],
            ["m_ef2", "EE", "15"],
            ["m_null", "NULL", "3"],
            ["m_def", "zz", "6"],
        ]
    );
    assert_eq!(
        column_names(&c, "SELECT tableoid::regclass, * FROM m").await,
        ["tableoid", "a", "b"]
    );
    assert_eq!(
        texts(&c, "SELECT count(*), sum(b) FROM m WHERE b > 2").await,
        [["5", "35"]]
    );
    // An UPDATE that moves a row's key moves the row; one straight into a
    // partition may not.
    c.batch_execute("UPDATE m SET b = b + 10 WHERE a = 'ff'")
        .await
        .unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT tableoid::regclass::text, a, b FROM m WHERE a = 'ff'"
        )
        .await,
        [["m_ef2", "ff", "14"]]
    );
    refused(&c, "UPDATE m_ab SET a = 'cc'", "23514").await;
    assert_eq!(
        texts(&c, "DELETE FROM m WHERE b < 7 RETURNING a").await,
        [["Aa"], ["dd"], ["NULL"], ["zz"]]
    );
    // ATTACH checks the table's rows; DETACH leaves them with the table.
    c.batch_execute(
        "CREATE TABLE m_gh (b int, a text); INSERT INTO m_gh VALUES (1, 'gg'), (2, 'hh')",
    )
    .await
    .unwrap();
    refused(
        &c,
        "ALTER TABLE m ATTACH PARTITION m_gh FOR VALUES IN ('gg')",
        "23514",
    )
    .await;
    c.batch_execute(
        "ALTER TABLE m ATTACH PARTITION m_gh FOR VALUES IN ('gg', 'hh'); \
         INSERT INTO m VALUES ('hh', 3)",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "SELECT a, b FROM m_gh").await,
        [["gg", "1"], ["hh", "2"], ["hh", "3"]]
    );
    c.batch_execute("ALTER TABLE m DETACH PARTITION m_gh; TRUNCATE m")
        .await
        .unwrap();
    assert_eq!(texts(&c, "SELECT count(*) FROM m").await, [["0"]]);
    assert_eq!(texts(&c, "SELECT count(*) FROM m_gh").await, [["3"]]);
    // Dropping the partitioned table drops its partitions.
    c.batch_execute("DROP TABLE m").await.unwrap();
    refused(&c, "SELECT * FROM m_ef1", "42P01").await;
    assert_eq!(texts(&c, "SELECT count(*) FROM m_gh").await, [["3"]]);
}

#[tokio::test]
async fn update_sets_a_column_list_from_a_subquery() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE u (a int, b int, c text); \
         INSERT INTO u VALUES (1, 10, 'x'), (2, 20, 'y'), (3, 30, 'z'); \
         UPDATE u SET (b, c) = (SELECT a * 100, 'from ' || c FROM u WHERE a = 2) WHERE a = 1; \
         UPDATE u SET (a, b) = (SELECT a, b FROM u WHERE a = 99) WHERE a = 3",
    )
    .await
    .unwrap();
    // The updated rows come last, as PostgreSQL's heap lists them; no row
    // from the subquery sets NULLs.
    assert_eq!(
        texts(&c, "SELECT a, b, c FROM u").await,
        [
            ["2", "20", "y"],
            ["1", "200", "from y"],
            ["NULL", "NULL", "z"]
        ]
    );
    refused(&c, "UPDATE u SET (a, b) = (SELECT a, b FROM u)", "21000").await;
}

#[tokio::test]
async fn recursive_queries_search_and_detect_cycles_in_record_paths() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE graph (f int, t int, label text); \
         INSERT INTO graph VALUES (1, 2, 'a'), (2, 3, 'b'), (3, 1, 'c')",
    )
    .await
    .unwrap();
    // Records and arrays of records in PostgreSQL's text form.
    assert_eq!(
        texts(
            &c,
            "SELECT ROW(1, 'a b', NULL, ''), ARRAY[ROW(1, 2), ROW(3, 4)], ARRAY[ROW(1)]"
        )
        .await,
        [["(1,\"a b\",,\"\")", "{\"(1,2)\",\"(3,4)\"}", "{(1)}"]]
    );
    // Depth first: each row's path of (f, t) sorts it under its parent.
    let walk = "WITH RECURSIVE w(f, t, label) AS ( \
                  SELECT * FROM graph WHERE f = 1 \
                  UNION ALL \
                  SELECT g.* FROM graph g, w WHERE g.f = w.t AND w.f < 3 \
                ) SEARCH DEPTH FIRST BY f, t SET seq \
                SELECT f, t, seq FROM w ORDER BY seq";
    assert_eq!(
        texts(&c, walk).await,
        [
            ["1", "2", "{\"(1,2)\"}"],
            ["2", "3", "{\"(1,2)\",\"(2,3)\"}"],
            ["3", "1", "{\"(1,2)\",\"(2,3)\",\"(3,1)\"}"]
        ]
    );
    // Breadth first: the depth leads the sort key.
    assert_eq!(
        texts(&c, &walk.replace("DEPTH", "BREADTH")).await,
        [
            ["1", "2", "(0,1,2)"],
            ["2", "3", "(1,2,3)"],
            ["3", "1", "(2,3,1)"]
        ]
    );
    // CYCLE stops at the first row already on the path, and marks it.
    let cycle = "WITH RECURSIVE w AS ( \
                   SELECT f, t FROM graph WHERE f = 1 \
                   UNION ALL \
                   SELECT g.f, g.t FROM graph g, w WHERE g.f = w.t \
                 ) CYCLE f, t SET looped TO 'Y' DEFAULT 'N' USING path \
                 SELECT f, t, looped, path FROM w";
    assert_eq!(
        texts(&c, cycle).await,
        [
            ["1", "2", "N", "{\"(1,2)\"}"],
            ["2", "3", "N", "{\"(1,2)\",\"(2,3)\"}"],
            ["3", "1", "N", "{\"(1,2)\",\"(2,3)\",\"(3,1)\"}"],
            ["1", "2", "Y", "{\"(1,2)\",\"(2,3)\",\"(3,1)\",\"(1,2)\"}"]
        ]
    );
    // Bad clauses are syntax errors that point at the clause.
    let e = refused(&c, &walk.replace("BY f, t", "BY f, nope"), "42601").await;
    let db = e.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        "search column \"nope\" not in WITH query column list"
    );
    assert!(
        matches!(db.position(), Some(tokio_postgres::error::ErrorPosition::Original(p)) if walk[*p as usize - 1..].starts_with("SEARCH"))
    );
    refused(&c, &cycle.replace("USING path", "USING looped"), "42601").await;
    refused(&c, &walk.replace("SET seq", "SET label"), "42601").await;

    // ORDER BY … USING.
    assert_eq!(
        texts(&c, "SELECT f FROM graph ORDER BY f USING >").await,
        [["3"], ["2"], ["1"]]
    );
    // Degrees: exact at the well-known angles.
    assert_eq!(
        texts(
            &c,
            "SELECT sind(30), cosd(120), tand(135), asind(-0.5), atan2d(1, -1)"
        )
        .await,
        [["0.5", "-0.5", "-1", "-30", "135"]]
    );
}

#[tokio::test]
async fn session_authorization_and_role_change_whose_privileges_apply() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE USER alice; CREATE TABLE secret (a int); SET SESSION AUTHORIZATION alice",
    )
    .await
    .unwrap();
    assert_eq!(texts(&c, "SELECT current_user").await, [["alice"]]);
    refused(&c, "SELECT * FROM secret", "42501").await;
    // Only the superuser that logged in could change who the session is.
    c.batch_execute("RESET SESSION AUTHORIZATION")
        .await
        .unwrap();
    c.batch_execute("SELECT * FROM secret").await.unwrap();
    c.batch_execute("SET ROLE alice").await.unwrap();
    refused(&c, "SELECT * FROM secret", "42501").await;
    c.batch_execute("RESET ROLE").await.unwrap();
    refused(&c, "SET ROLE nobody", "42704").await;
    c.batch_execute("SET SESSION AUTHORIZATION alice")
        .await
        .unwrap();
    refused(&c, "SET ROLE eon", "42501").await;
}

#[tokio::test]
async fn variadic_arrays_and_array_literals_read_as_postgresql_reads_them() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT concat(VARIADIC ARRAY[1, 2, 3]), concat_ws(',', VARIADIC ARRAY['a', NULL, 'b']), \
                    format('%2$s, %1$s', VARIADIC ARRAY['x', 'y']), concat(VARIADIC NULL::int[]), \
                    '{}'::int[], '{1,NULL,\"3\"}'::int8[]"
        )
        .await,
        [["123", "a,b", "y, x", "NULL", "{}", "{1,NULL,3}"]]
    );
    refused(&c, "SELECT concat_ws(',', VARIADIC 10)", "42804").await;
    refused(&c, "SELECT format('INSERT INTO %I', NULL)", "22004").await;
    refused(&c, "SELECT acosh(0.5::float8)", "22003").await;
    refused(&c, "SELECT atanh('infinity'::float8)", "22003").await;
    refused(&c, "SELECT '{1,x}'::int[]", "22P02").await;
    // UNION ALL lists its branches in order.
    assert_eq!(
        texts(&c, "SELECT 2 UNION ALL SELECT 1 UNION ALL SELECT 3").await,
        [["2"], ["1"], ["3"]]
    );
}

/// INTERSECT ALL and EXCEPT ALL count copies; ordered-set and
/// hypothetical-set aggregates; the columns of nested queries are named as
/// PostgreSQL names them; varchar(n) cuts off excess spaces.
#[tokio::test]
async fn set_operations_count_copies_and_ordered_set_aggregates_answer() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    let values = "(VALUES (1), (1), (1), (2), (NULL), (NULL))";
    assert_eq!(
        texts(
            &c,
            &format!(
                "SELECT x FROM {values} a(x) EXCEPT ALL SELECT x FROM (VALUES (1), (2), (2), (NULL)) b(x) ORDER BY 1"
            )
        )
        .await,
        [["1"], ["1"], ["NULL"]]
    );
    assert_eq!(
        texts(
            &c,
            &format!(
                "SELECT x FROM {values} a(x) INTERSECT ALL SELECT x FROM (VALUES (1), (1), (2), (2), (NULL)) b(x) ORDER BY 1"
            )
        )
        .await,
        [["1"], ["1"], ["2"], ["NULL"]]
    );
    // Rows without columns.
    let five = "SELECT FROM generate_series(1, 5)";
    let three = "SELECT FROM generate_series(1, 3)";
    for (op, n) in [
        ("INTERSECT", "1"),
        ("INTERSECT ALL", "3"),
        ("EXCEPT", "0"),
        ("EXCEPT ALL", "2"),
    ] {
        assert_eq!(
            texts(&c, &format!("SELECT count(*) FROM ({five} {op} {three}) s")).await,
            [[n]],
            "{op}"
        );
    }
    // Plain EXCEPT / INTERSECT still return each row once.
    assert_eq!(
        texts(
            &c,
            &format!("SELECT x FROM {values} a(x) EXCEPT SELECT 2 ORDER BY 1")
        )
        .await,
        [["1"], ["NULL"]]
    );
    let g = "FROM generate_series(1, 10) x";
    assert_eq!(
        texts(
            &c,
            &format!(
                "SELECT percentile_cont(0.25) WITHIN GROUP (ORDER BY x), \
                        percentile_disc(0.25) WITHIN GROUP (ORDER BY x), \
                        percentile_disc(0.25) WITHIN GROUP (ORDER BY x DESC), \
                        percentile_disc(ARRAY[0, 0.5, 1]) WITHIN GROUP (ORDER BY x), \
                        percentile_cont(ARRAY[0.5, NULL]) WITHIN GROUP (ORDER BY x) {g}"
            )
        )
        .await,
        [["3.25", "3", "8", "{1,5,10}", "{5.5,NULL}"]]
    );
    let v = "FROM (VALUES (1), (1), (2), (3), (3), (5), (NULL)) v(x)";
    let rows = c
        .query(
            &format!(
                "SELECT mode() WITHIN GROUP (ORDER BY x), rank(3) WITHIN GROUP (ORDER BY x), \
                        dense_rank(3) WITHIN GROUP (ORDER BY x), percent_rank(3) WITHIN GROUP (ORDER BY x), \
                        cume_dist(3) WITHIN GROUP (ORDER BY x) {v}"
            ),
            &[],
        )
        .await
        .unwrap();
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        ["mode", "rank", "dense_rank", "percent_rank", "cume_dist"]
    );
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    assert_eq!(rows[0].get::<_, i64>(1), 4);
    assert_eq!(rows[0].get::<_, i64>(2), 3);
    assert_eq!(rows[0].get::<_, f64>(3), 3.0 / 7.0);
    assert_eq!(rows[0].get::<_, f64>(4), 6.0 / 8.0);
    // `rank` with OVER is still the window function.
    assert_eq!(
        texts(
            &c,
            "SELECT rank() OVER (ORDER BY x) FROM (VALUES (2), (1), (2)) v(x) ORDER BY 1"
        )
        .await,
        [["1"], ["2"], ["2"]]
    );
    refused(
        &c,
        &format!("SELECT percentile_cont(1.5) WITHIN GROUP (ORDER BY x) {g}"),
        "22003",
    )
    .await;
    refused(
        &c,
        "SELECT rank(3) WITHIN GROUP (ORDER BY x) FROM (VALUES ('a')) v(x)",
        "42804",
    )
    .await;
    // A nested query's computed columns have PostgreSQL's names, which
    // the query around it can use.
    let rows = c
        .query(
            "SELECT *, pg_typeof(max) FROM (SELECT max(x), count(*), x + 1, x + 2 FROM (VALUES (1)) t(x) GROUP BY x) s",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["max", "count", "?column?", "?column?", "pg_typeof"]);
    // varchar(n): what is beyond n may be spaces only, cut off.
    c.batch_execute("CREATE TABLE vc (v varchar(4))")
        .await
        .unwrap();
    c.execute("INSERT INTO vc VALUES ('abcd   ')", &[])
        .await
        .unwrap();
    refused(&c, "INSERT INTO vc VALUES ('abcde')", "22001").await;
    assert_eq!(texts(&c, "SELECT v || '|' FROM vc").await, [["abcd|"]]);
    // PostgreSQL's words for overflow in abs/gcd/lcm and a zero step.
    for sql in [
        "SELECT abs((-9223372036854775808)::int8)",
        "SELECT gcd((-9223372036854775808)::int8, 0::int8)",
    ] {
        let e = refused(&c, sql, "22003").await;
        assert_eq!(e.as_db_error().unwrap().message(), "bigint out of range");
    }
    refused(&c, "SELECT * FROM generate_series(1, 3, 0)", "22023").await;
    // numeric with a negative scale rounds to tens, thousands, …; with a
    // scale above its precision it holds small values only.
    c.batch_execute("CREATE TABLE typmods (m numeric(3, -6), u numeric(3, 6))")
        .await
        .unwrap();
    c.execute("INSERT INTO typmods VALUES (987654321, 0.000987654)", &[])
        .await
        .unwrap();
    assert_eq!(
        texts(&c, "SELECT m, u, scale(m) FROM typmods").await,
        [["988000000", "0.000988", "0"]]
    );
    // A precision beyond Decimal128's digits with a negative scale.
    c.batch_execute("CREATE TABLE wide_typmod (w numeric(100, -2))")
        .await
        .unwrap();
    c.execute("INSERT INTO wide_typmod VALUES (12351)", &[])
        .await
        .unwrap();
    assert_eq!(texts(&c, "SELECT w FROM wide_typmod").await, [["12400"]]);
    refused(&c, "CREATE TABLE too_coarse (n numeric(3, -39))", "0A000").await;
    for sql in [
        "INSERT INTO typmods (m) VALUES (999500000)",
        "INSERT INTO typmods (u) VALUES (0.0009995)",
        "INSERT INTO typmods (m) VALUES ('inf')",
    ] {
        refused(&c, sql, "22003").await;
    }
    assert_eq!(
        texts(
            &c,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'typmods'::regclass AND attnum > 0 ORDER BY attnum"
        )
        .await,
        [["numeric(3,-6)"], ["numeric(3,6)"]]
    );
    // ARRAY(subquery) keeps the subquery's order, also when it groups.
    assert_eq!(
        texts(
            &c,
            "SELECT array(SELECT sum(x + y) s FROM generate_series(1, 3) y GROUP BY y ORDER BY s DESC) \
             FROM generate_series(1, 2) x ORDER BY 1"
        )
        .await,
        [["{4,3,2}"], ["{5,4,3}"]]
    );
}

/// WITH on INSERT/UPDATE/DELETE, and WITH queries that modify data: they
/// run first, their RETURNING rows are the WITH query's rows, and all of
/// it is one transaction.
#[tokio::test]
async fn with_queries_feed_and_hold_data_modifying_statements() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE y (a int PRIMARY KEY); INSERT INTO y SELECT generate_series(1, 10)",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(
            &c,
            "WITH t AS (SELECT a FROM y WHERE a > 8) UPDATE y SET a = y.a + 10 FROM t WHERE t.a = y.a RETURNING y.a"
        )
        .await
        .len(),
        2
    );
    assert_eq!(
        texts(
            &c,
            "WITH t AS (DELETE FROM y WHERE a <= 3 RETURNING *) SELECT count(*), sum(a) FROM t"
        )
        .await,
        [["3", "6"]]
    );
    assert_eq!(
        texts(
            &c,
            "WITH t AS (INSERT INTO y VALUES (100) RETURNING a), u AS (INSERT INTO y SELECT a + 1 FROM t RETURNING a) \
             SELECT a FROM u"
        )
        .await,
        [["101"]]
    );
    assert_eq!(
        texts(&c, "SELECT count(*), max(a) FROM y").await,
        [["9", "101"]]
    );
    // The statement fails: what its WITH query did is undone too.
    refused(
        &c,
        "WITH t AS (DELETE FROM y RETURNING a) SELECT a / 0 FROM t",
        "22012",
    )
    .await;
    assert_eq!(texts(&c, "SELECT count(*) FROM y").await, [["9"]]);
}

#[tokio::test]
async fn insert_on_conflict_do_update_upserts() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE kv (k int PRIMARY KEY, v text, n int DEFAULT 7); \
         INSERT INTO kv VALUES (1, 'a'), (2, 'b')",
    )
    .await
    .unwrap();
    // Conflicting rows update the row there (`excluded` is the proposed
    // row); the others are inserted; RETURNING lists them as proposed.
    assert_eq!(
        texts(
            &c,
            "INSERT INTO kv VALUES (3, 'c'), (1, 'x') ON CONFLICT (k) \
             DO UPDATE SET v = kv.v || '+' || excluded.v RETURNING k, v, n"
        )
        .await,
        [["3", "c", "7"], ["1", "a+x", "7"]]
    );
    // Parameters, an alias, and a WHERE that leaves the row alone.
    let upsert = "INSERT INTO kv AS t VALUES ($1, $2, 0) ON CONFLICT (k) \
                  DO UPDATE SET v = $2, n = t.n + 1 WHERE t.v <> $2";
    assert_eq!(c.execute(upsert, &[&2i32, &"b"]).await.unwrap(), 0);
    assert_eq!(c.execute(upsert, &[&2i32, &"B"]).await.unwrap(), 1);
    assert_eq!(c.execute(upsert, &[&9i32, &"z"]).await.unwrap(), 1);
    assert_eq!(
        texts(&c, "SELECT k, v, n FROM kv ORDER BY k").await,
        [
            ["1", "a+x", "7"],
            ["2", "B", "8"],
            ["3", "c", "7"],
            ["9", "z", "0"]
        ]
    );
    // A unique index or a named constraint is the arbiter too.
    c.batch_execute("CREATE UNIQUE INDEX kv_v ON kv (v)")
        .await
        .unwrap();
    assert_eq!(
        texts(
            &c,
            "INSERT INTO kv VALUES (50, 'z') ON CONFLICT (v) DO UPDATE SET n = excluded.k RETURNING k, n"
        )
        .await,
        [["9", "50"]]
    );
    assert_eq!(
        texts(
            &c,
            "INSERT INTO kv VALUES (3, 'q') ON CONFLICT ON CONSTRAINT kv_pkey DO UPDATE SET n = -1 RETURNING v, n"
        )
        .await,
        [["c", "-1"]]
    );
    // PostgreSQL's errors: no arbiter, no such constraint, a row twice.
    refused(
        &c,
        "INSERT INTO kv VALUES (1, 'x') ON CONFLICT DO UPDATE SET n = 0",
        "42601",
    )
    .await;
    refused(
        &c,
        "INSERT INTO kv VALUES (1, 'x') ON CONFLICT (n) DO UPDATE SET n = 0",
        "42P10",
    )
    .await;
    refused(
        &c,
        "INSERT INTO kv VALUES (4, 'x'), (4, 'y') ON CONFLICT (k) DO UPDATE SET n = 0",
        "21000",
    )
    .await;
    // Inserting and updating are one statement: a failure undoes both.
    refused(
        &c,
        "INSERT INTO kv VALUES (5, 'new'), (1, 'x') ON CONFLICT (k) DO UPDATE SET n = 1 / 0",
        "22012",
    )
    .await;
    refused(
        &c,
        "INSERT INTO kv VALUES (6, 'six'), (1, 'c') ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        "23505",
    )
    .await;
    assert_eq!(
        texts(&c, "SELECT count(*), sum(n) FROM kv").await,
        [["4", "64"]]
    );
    // Into a partitioned table: each row is judged in its partition.
    c.batch_execute(
        "CREATE TABLE pt (a int PRIMARY KEY, b text) PARTITION BY LIST (a); \
         CREATE TABLE pt1 PARTITION OF pt FOR VALUES IN (1); \
         CREATE TABLE pt2 (b text, a int PRIMARY KEY); \
         ALTER TABLE pt ATTACH PARTITION pt2 FOR VALUES IN (2, 3); \
         INSERT INTO pt VALUES (1, 'one'), (2, 'two')",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(
            &c,
            "INSERT INTO pt VALUES (1, 'x'), (2, 'y'), (3, 'z') ON CONFLICT (a) \
             DO UPDATE SET b = pt.b || excluded.b RETURNING a, b"
        )
        .await,
        [["1", "onex"], ["2", "twoy"], ["3", "z"]]
    );
    // A key of two columns, which a partition holds in the other order.
    c.batch_execute(
        "CREATE TABLE pk2 (a int, b int, v text, PRIMARY KEY (a, b)) PARTITION BY LIST (a); \
         CREATE TABLE pk2_1 (v text, b int, a int, PRIMARY KEY (a, b)); \
         ALTER TABLE pk2 ATTACH PARTITION pk2_1 FOR VALUES IN (1); \
         INSERT INTO pk2 VALUES (1, 1, 'p'), (1, 2, 'q')",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(
            &c,
            "INSERT INTO pk2 VALUES (1, 2, 'x'), (1, 3, 'y') ON CONFLICT (b, a) \
             DO UPDATE SET v = pk2.v || excluded.v RETURNING a, b, v"
        )
        .await,
        [["1", "2", "qx"], ["1", "3", "y"]]
    );
}

#[tokio::test]
async fn averages_and_variances_of_exact_numbers_are_numeric() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    c.batch_execute(
        "CREATE TABLE m (i int, n int4, b bigint, d numeric(10,2), f float8); \
         INSERT INTO m VALUES (1, 600, 600, 6.5, 600), (2, 470, 470, 4.7, 470), \
         (3, 170, 170, 1.7, 170), (4, 430, 430, 4.3, 430), (5, 300, 300, 3, 300)",
    )
    .await
    .unwrap();
    // numeric, shown with PostgreSQL's display scale for the division
    // (16 significant digits at least, the inputs' scale at least).
    assert_eq!(
        texts(
            &c,
            "SELECT avg(n), pg_typeof(avg(n)), var_pop(n), stddev_pop(b), var_samp(d), avg(d), avg(f) FROM m"
        )
        .await,
        [[
            "394.0000000000000000",
            "numeric",
            "21704.000000000000",
            "147.322774885623",
            "3.2780000000000000",
            "4.0400000000000000",
            "394"
        ]]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT avg(x), avg(x * 0), avg(DISTINCT x), var_samp(x), stddev(x) FROM (VALUES (1::int4), (2::int4), (2::int4)) v(x)"
        )
        .await,
        [[
            "1.6666666666666667",
            "0.00000000000000000000",
            "1.5000000000000000",
            "0.33333333333333333333",
            "0.57735026918962576451"
        ]]
    );
    // array_agg(DISTINCT …) comes out sorted, NULL last, as PostgreSQL's.
    assert_eq!(
        texts(
            &c,
            "SELECT array_agg(DISTINCT a) FROM (VALUES (3), (1), (NULL), (3), (2)) v(a)"
        )
        .await,
        [["{1,2,3,NULL}"]]
    );
    // A cast gives an ordinary numeric of its type.
    assert_eq!(
        texts(
            &c,
            "SELECT CAST(avg(n) AS numeric(10,2)), avg(n)::int FROM m"
        )
        .await,
        [["394.00", "394"]]
    );
    // Over a sliding window frame, values leave the sums again.
    assert_eq!(
        texts(
            &c,
            "SELECT avg(n) OVER (ORDER BY i ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) FROM m ORDER BY i"
        )
        .await,
        [
            ["535.0000000000000000"],
            ["320.0000000000000000"],
            ["300.0000000000000000"],
            ["365.0000000000000000"],
            ["300.0000000000000000"]
        ]
    );
    // No rows, one row for a sample, the infinities of numeric.
    assert_eq!(
        texts(
            &c,
            "SELECT avg(n) IS NULL, var_samp(n) IS NULL, var_pop(n) FROM m WHERE i = 1"
        )
        .await,
        [["f", "t", "0"]]
    );
    assert_eq!(
        texts(
            &c,
            "SELECT avg(x), var_pop(x) FROM (VALUES (1::numeric), ('Infinity')) v(x)"
        )
        .await,
        [["Infinity", "NaN"]]
    );
}

/// Table `tk (u1 int, u2 int, note text)` with rows (g, g + 1, 'n' || g)
/// for g in 1..=n.
async fn table_tk(c: &tokio_postgres::Client, n: u32) {
    c.batch_execute(&format!(
        "CREATE TABLE tk (u1 int, u2 int, note text); \
         INSERT INTO tk SELECT g, g + 1, 'n' || g FROM generate_series(1, {n}) g"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn using_join_columns_resolve_inside_subqueries() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    table_tk(&c, 10).await;
    // `u1` inside the subquery is the join's, not the outer query's.
    assert_eq!(
        texts(
            &c,
            "SELECT count(*) FROM tk a WHERE u1 IN \
             (SELECT u1 FROM tk b JOIN tk c USING (u1) WHERE b.u2 = 4)"
        )
        .await,
        [["1"]]
    );
    // `*` lists the merged column first, as PostgreSQL does.
    assert_eq!(
        column_names(
            &c,
            "SELECT * FROM tk b (x, u1, y) JOIN tk c USING (u1) LIMIT 1"
        )
        .await,
        ["u1", "x", "y", "u2", "note"]
    );
    // In WHERE too: the merged column of a FULL join is either side's key,
    // so a row only the right side has is found by it.
    assert_eq!(
        texts(
            &c,
            "SELECT u1, b.note, c.note FROM (SELECT * FROM tk WHERE u1 < 3) b \
             FULL JOIN (SELECT * FROM tk WHERE u1 > 8) c USING (u1) WHERE u1 = 9 OR u1 = 2 \
             ORDER BY u1"
        )
        .await,
        [["2", "n2", "NULL"], ["9", "NULL", "n9"]]
    );
}

#[tokio::test]
async fn references_aliases_and_bad_input_are_refused_as_postgresql_refuses_them() {
    let cluster = TestCluster::start().unwrap();
    let c = cluster.pg().await.unwrap();
    table_tk(&c, 5).await;
    // The message, hint and cursor (as the text it points at) of an error.
    async fn error(
        c: &tokio_postgres::Client,
        sql: &str,
        sqlstate: &str,
    ) -> (String, Option<String>, Option<String>) {
        let e = refused(c, sql, sqlstate).await;
        let db = e.as_db_error().unwrap();
        let at = match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                Some(sql[*p as usize - 1..].to_string())
            }
            _ => None,
        };
        (db.message().to_string(), db.hint().map(str::to_string), at)
    }
    // An alias may rename only the first columns; naming too many is 42P10.
    assert_eq!(
        column_names(&c, "SELECT * FROM tk AS f(a) LIMIT 1").await,
        ["a", "u2", "note"]
    );
    assert_eq!(
        error(&c, "SELECT * FROM tk AS f(a, b, c, d)", "42P10")
            .await
            .0,
        "table \"f\" has 3 columns available but 4 columns specified"
    );
    assert_eq!(
        error(&c, "WITH x(n, b) AS (SELECT 1) SELECT * FROM x", "42P10").await,
        (
            "WITH query \"x\" has 1 columns available but 2 columns specified".into(),
            None,
            Some("x(n, b) AS (SELECT 1) SELECT * FROM x".into())
        )
    );
    // A relation out of scope where it is named (42P01), at the reference.
    assert_eq!(
        error(&c, "SELECT tk.u1 FROM tk t", "42P01").await,
        (
            "invalid reference to FROM-clause entry for table \"tk\"".into(),
            Some("Perhaps you meant to reference the table alias \"t\".".into()),
            Some("tk.u1 FROM tk t".into())
        )
    );
    assert_eq!(
        error(&c, "DELETE FROM tk t WHERE tk.u1 = 1", "42P01")
            .await
            .1,
        Some("Perhaps you meant to reference the table alias \"t\".".into())
    );
    assert_eq!(
        error(&c, "SELECT * FROM tk a, (SELECT a.u1) ss", "42P01").await.1,
        Some(
            "There is an entry for table \"a\", but it cannot be referenced from this part of the query."
                .into()
        )
    );
    assert_eq!(
        error(&c, "SELECT nosuch.u1 FROM tk", "42P01").await.0,
        "missing FROM-clause entry for table \"nosuch\""
    );
    // An outer query's table with a mistaken column, from a subquery.
    assert_eq!(
        error(
            &c,
            "SELECT * FROM tk x WHERE EXISTS (SELECT 1 FROM tk y WHERE x.nosuch = y.u1)",
            "42703"
        )
        .await
        .0,
        "column x.nosuch does not exist"
    );
    // Boolean input quotes the text as written; a literal made text first
    // is converted as the statement runs, with no cursor.
    assert_eq!(
        error(&c, "SELECT '  tru e '::text::boolean", "22P02").await,
        (
            "invalid input syntax for type boolean: \"  tru e \"".into(),
            None,
            None
        )
    );
    assert_eq!(
        error(&c, "SELECT bool 'XXX'", "22P02").await.2,
        Some("'XXX'".into())
    );
    assert_eq!(
        texts(&c, "SELECT 'TRU'::boolean, ' of '::boolean, 'y'::boolean").await,
        [["t", "f", "t"]]
    );
    // Negative or NaN frame offsets (22013).
    assert_eq!(
        error(
            &c,
            "SELECT sum(u1) OVER (ORDER BY u1 RANGE BETWEEN -1 PRECEDING AND CURRENT ROW) FROM tk",
            "22013"
        )
        .await
        .0,
        "invalid preceding or following size in window function"
    );
    assert_eq!(
        error(
            &c,
            "SELECT sum(u1) OVER (ORDER BY u1 ROWS BETWEEN CURRENT ROW AND -2 FOLLOWING) FROM tk",
            "22013"
        )
        .await
        .0,
        "frame ending offset must not be negative"
    );
    // make_date / make_time with PostgreSQL's fields and errors.
    assert_eq!(
        texts(
            &c,
            "SELECT make_date(-44, 3, 15), make_time(8, 20, 1.5), make_time(23, 59, 0)"
        )
        .await,
        [["0044-03-15 BC", "08:20:01.5", "23:59:00"]]
    );
    for (sql, message) in [
        (
            "SELECT make_date(0, 7, 15)",
            "date field value out of range: 0-07-15",
        ),
        (
            "SELECT make_date(2013, 2, 30)",
            "date field value out of range: 2013-02-30",
        ),
        (
            "SELECT make_date(2013, 11, -1)",
            "date field value out of range: 2013-11--1",
        ),
        (
            "SELECT make_time(24, 0, 2.1)",
            "time field value out of range: 24:00:2.1",
        ),
    ] {
        assert_eq!(error(&c, sql, "22008").await.0, message);
    }
    // pg_get_viewdef, by name or by pg_class's oid (as psql's \d+ asks).
    c.batch_execute("CREATE VIEW tk_big AS SELECT u1, note FROM tk WHERE u1 > 3")
        .await
        .unwrap();
    assert_eq!(
        texts(
            &c,
            "SELECT pg_get_viewdef('tk_big'), pg_get_viewdef(oid, true) = pg_get_viewdef('tk_big'), \
             pg_get_viewdef('nosuch') IS NULL FROM pg_class WHERE relname = 'tk_big'"
        )
        .await,
        [[" SELECT u1, note FROM tk WHERE u1 > 3;", "t", "t"]]
    );
    // The session goes on.
    assert_eq!(texts(&c, "SELECT count(*) FROM tk").await, [["5"]]);
}
