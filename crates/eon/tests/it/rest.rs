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
    let mut agent = cluster.agent().unwrap();
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

/// A request to a table resource: status and JSON answer.
async fn resource(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tables_are_resources_with_filters_aggregates_and_an_openapi_document() {
    use reqwest::Method;
    let cluster = TestCluster::builder()
        .data_engines(2)
        .shards(4)
        .start()
        .unwrap();
    let (s, v) = sql(
        &cluster,
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, total numeric(10,2), placed date, note text)",
        json!([]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let base = format!("{}/v1/tables/orders", cluster.http_url());

    // POST one object or many; the rows come back, 201.
    let (s, v) = resource(
        Method::POST,
        base.clone(),
        Some(json!({"id": 1, "customer": "ann", "total": "12.50", "placed": "2024-03-01"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v,
        json!([{"id": 1, "customer": "ann", "total": "12.50", "placed": "2024-03-01", "note": null}])
    );
    let many: Vec<Value> = (2..=20)
        .map(|i| (i, ["ann", "bob", "cy"][i as usize % 3]))
        .map(|(i, who)| json!({"id": i, "customer": who, "total": format!("{}.00", i * 10), "placed": format!("2024-03-{:02}", i)}))
        .collect();
    let (s, v) = resource(Method::POST, base.clone(), Some(Value::Array(many))).await;
    assert_eq!((s, v.as_array().unwrap().len()), (201, 19), "{v}");

    // Filters, selection, order, limit and offset — checked against SQL.
    let (s, v) = resource(Method::GET, format!("{base}?select=id,who:customer&customer=eq.bob&total=gte.50&order=id.desc&limit=3&offset=1"), None).await;
    assert_eq!(s, 200, "{v}");
    let (_, want) = sql(&cluster, "SELECT id FROM orders WHERE customer = 'bob' AND total >= 50 ORDER BY id DESC LIMIT 3 OFFSET 1", json!([])).await;
    let ids: Vec<Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    let want: Vec<Value> = want["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, want);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|r| r["who"] == "bob" && r.as_object().unwrap().len() == 2),
        "{v}"
    );
    let (_, v) = resource(
        Method::GET,
        format!("{base}?id=in.(3,5,7)&customer=not.eq.cy&select=id&order=id"),
        None,
    )
    .await;
    assert_eq!(v, json!([{"id": 3}, {"id": 7}]));
    let (_, v) = resource(
        Method::GET,
        format!("{base}?customer=like.a*&note=is.null&placed=lt.2024-03-04&select=id&order=id"),
        None,
    )
    .await;
    assert_eq!(v, json!([{"id": 1}, {"id": 3}]));
    // Aggregates, grouped by the plain columns beside them.
    let (_, v) = resource(
        Method::GET,
        format!("{base}?select=customer,n:count(),total.sum(),total.max()&order=customer"),
        None,
    )
    .await;
    let (_, want) = sql(&cluster, "SELECT customer, count(*), sum(total), max(total) FROM orders GROUP BY customer ORDER BY customer", json!([])).await;
    let got: Vec<Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["customer"], r["n"], r["sum"], r["max"]]))
        .collect();
    assert_eq!(Value::Array(got), want["rows"], "{v}");

    // PATCH and DELETE by filter; without one they refuse.
    let (s, v) = resource(
        Method::PATCH,
        format!("{base}?customer=eq.cy&id=lt.10"),
        Some(json!({"note": "vip"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let patched: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(patched.len(), 3, "{v}");
    assert!(v.as_array().unwrap().iter().all(|r| r["note"] == "vip"));
    let (s, v) = resource(Method::DELETE, base.clone(), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("08P01")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("?all=true")
    );
    let (s, v) = resource(Method::DELETE, format!("{base}?note=eq.vip"), None).await;
    assert_eq!((s, v.as_array().map(|a| a.len())), (200, Some(3)), "{v}");
    let (_, v) = sql(&cluster, "SELECT count(*) FROM orders", json!([])).await;
    assert_eq!(v["rows"], json!([[17]]));

    // Errors: unknown table, unknown column, bad operator, bad value, a
    // duplicate key — each with its SQLSTATE, and nothing half done.
    for (method, url, body, status, code) in [
        (
            Method::GET,
            format!("{}/v1/tables/nope", cluster.http_url()),
            None,
            404,
            "42P01",
        ),
        (
            Method::GET,
            format!("{base}?colour=eq.red"),
            None,
            400,
            "42703",
        ),
        (
            Method::GET,
            format!("{base}?id=about.3"),
            None,
            400,
            "08P01",
        ),
        (
            Method::GET,
            format!("{base}?id=eq.three"),
            None,
            400,
            "22P02",
        ),
        (
            Method::POST,
            base.clone(),
            Some(json!([{"id": 100, "customer": "dan"}, {"id": 1, "customer": "dup"}])),
            409,
            "23505",
        ),
        (
            Method::POST,
            base.clone(),
            Some(json!({"id": 101})),
            400,
            "23502",
        ),
    ] {
        let (s, v) = resource(method.clone(), url.clone(), body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {url}: {v}"
        );
    }
    let (_, v) = sql(
        &cluster,
        "SELECT count(*) FROM orders WHERE id IN (100, 101)",
        json!([]),
    )
    .await;
    assert_eq!(v["rows"], json!([[0]]));

    // The OpenAPI document describes the table from the catalog.
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", cluster.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let path = &doc["paths"]["/v1/tables/orders"];
    for verb in ["get", "post", "patch", "delete"] {
        assert!(path[verb].is_object(), "no {verb}: {doc}");
    }
    let schema = &doc["components"]["schemas"]["orders"];
    assert_eq!(schema["properties"]["id"]["format"], "int64");
    assert_eq!(schema["properties"]["placed"]["format"], "date");
    assert_eq!(
        schema["properties"]["total"]["description"],
        "numeric(10,2)"
    );
    assert_eq!(schema["required"], json!(["id", "customer"]));

    // Arrays are JSON arrays both ways; intervals are PostgreSQL's text.
    let (s, v) = sql(
        &cluster,
        "CREATE TABLE shifts (id int PRIMARY KEY, days int[], tags text[], span interval)",
        json!([]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let shifts = format!("{}/v1/tables/shifts", cluster.http_url());
    let (s, v) = resource(
        Method::POST,
        shifts.clone(),
        Some(
            json!({"id": 1, "days": [1, null, 5], "tags": ["a b", "c\"d"], "span": "1 day 02:00"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v,
        json!([{"id": 1, "days": [1, null, 5], "tags": ["a b", "c\"d"], "span": "1 day 02:00:00"}])
    );
    let (s, v) = resource(
        Method::PATCH,
        format!("{shifts}?id=eq.1"),
        Some(json!({"days": [], "span": "@ 2 hours ago"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["days"], json!([]));
    assert_eq!(v[0]["span"], "-02:00:00");
    let (s, v) = resource(Method::POST, shifts, Some(json!({"id": 2, "days": ["x"]}))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("22P02")),
        "{v}"
    );
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", cluster.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let days = &doc["components"]["schemas"]["shifts"]["properties"]["days"];
    assert_eq!(days["type"], "array");
    assert_eq!(days["items"]["type"], "integer");
}
