//! REST/JSON: `POST /v1/sql`, JSON encodings of every type, errors with
//! SQLSTATE and HTTP status, health.

use eon_testkit::TestCluster;
use serde_json::{Value, json};

async fn post(cluster: &TestCluster, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/sql", cluster.http_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn sql(cluster: &TestCluster, sql: &str, params: Value) -> (u16, Value) {
    post(cluster, &json!({"sql": sql, "params": params}).to_string()).await
}

#[tokio::test]
async fn sql_over_rest() {
    let cluster = TestCluster::start().unwrap();
    let (s, v) = sql(&cluster, "CREATE TABLE r (id int PRIMARY KEY, n numeric(10,2), f double precision, t text, ok boolean, d date, ts timestamp, tz timestamptz, b bytea, j jsonb, u uuid, big bigint)", json!([])).await;
    assert_eq!((s, v["row_count"].clone()), (200, json!(0)), "{v}");
    let (s, v) = sql(
        &cluster,
        "INSERT INTO r VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '\\x0aff', $9, $10, $11)",
        json!([
            1,
            "12.50",
            0.25,
            "héllo",
            true,
            "2024-03-01",
            "2024-03-01 10:00:00.5",
            "2024-03-01 10:00:00+01",
            "{\"a\": [1, 2]}",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            9007199254740993i64
        ]),
    )
    .await;
    assert_eq!((s, v["row_count"].clone()), (200, json!(1)), "{v}");
    sql(&cluster, "INSERT INTO r (id) VALUES (2)", json!([])).await;

    let (s, v) = sql(&cluster, "SELECT * FROM r ORDER BY id", json!(null)).await;
    assert_eq!(s, 200, "{v}");
    let types: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "int4",
            "numeric",
            "float8",
            "text",
            "bool",
            "date",
            "timestamp",
            "timestamptz",
            "bytea",
            "jsonb",
            "uuid",
            "int8"
        ]
    );
    assert_eq!(v["columns"][0]["name"], "id");
    assert_eq!(v["row_count"], 2);
    assert_eq!(
        v["rows"][0],
        json!([1, "12.50", 0.25, "héllo", true, "2024-03-01", "2024-03-01T10:00:00.5", "2024-03-01T09:00:00+00:00", "Cv8=", {"a": [1, 2]}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 9007199254740993i64])
    );
    assert_eq!(
        v["rows"][1],
        json!([
            2, null, null, null, null, null, null, null, null, null, null, null
        ])
    );

    let (s, v) = sql(&cluster, "UPDATE r SET t = 'x' WHERE id = $1", json!([2])).await;
    assert_eq!(
        (s, v["row_count"].clone(), v["command"].clone()),
        (200, json!(1), json!("UPDATE 1"))
    );
    let (s, v) = sql(
        &cluster,
        "DELETE FROM r WHERE id = 2 RETURNING id, t",
        json!([]),
    )
    .await;
    assert_eq!((s, v["rows"].clone()), (200, json!([[2, "x"]])));
}

#[tokio::test]
async fn rest_errors_have_codes_and_statuses() {
    let cluster = TestCluster::start().unwrap();
    sql(&cluster, "CREATE TABLE e (id int PRIMARY KEY)", json!([])).await;
    sql(&cluster, "INSERT INTO e VALUES (1)", json!([])).await;
    let cases = [
        ("SELECT * FROM nope", 400, "42P01"),
        ("SELEC 1", 400, "42601"),
        ("INSERT INTO e VALUES (1)", 409, "23505"),
        ("INSERT INTO e VALUES ('x')", 400, "22P02"),
    ];
    for (q, status, code) in cases {
        let (s, v) = sql(&cluster, q, json!([])).await;
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{q}: {v}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (s, v) = post(&cluster, "{not json").await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{v}"
    );
    let (s, _) = post(&cluster, r#"{"query": "SELECT 1"}"#).await;
    assert_eq!(s, 400);
    let (s, _) = post(&cluster, r#"{"sql": "SELECT 1", "params": 5}"#).await;
    assert_eq!(s, 400);

    let health = reqwest::get(format!("{}/v1/health", cluster.http_url()))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let h: Value = health.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["data_engines"]["up"], 3);

    // With every data engine stopped, a query needing them is a 503.
    let mut agent = eon_proto::v1::agent_client::AgentClient::new(
        eon_common::node::channel(&cluster.agent_addr().unwrap()).unwrap(),
    );
    for n in 1..=3 {
        agent
            .stop(eon_proto::v1::StopInstanceRequest {
                name: format!("data-engine-{n}"),
                timeout_ms: 5000,
            })
            .await
            .unwrap();
    }
    let (s, v) = sql(&cluster, "SELECT * FROM e", json!([])).await;
    assert_eq!(
        (s, v["error"]["code"].as_str().unwrap()),
        (503, "57P03"),
        "{v}"
    );
}
