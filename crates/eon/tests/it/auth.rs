//! Roles and authentication: SCRAM-SHA-256 on the PostgreSQL wire (tokio-
//! postgres and psql's libpq as clients), HTTP basic over REST, the admin
//! `eon up` makes, CREATE/ALTER/DROP ROLE and who may run them, `--trust`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use eon_testkit::TestCluster;
use serde_json::{Value, json};

use crate::{code, refused};

/// Connect as `user` with `password`: the client, or the error.
async fn login(
    cluster: &TestCluster,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&cluster.pg_url_as(user, password), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE and message of a refused login.
async fn login_refused(cluster: &TestCluster, user: &str, password: &str) -> (String, String) {
    match login(cluster, user, password).await {
        Ok(_) => panic!("{user} logged in with {password:?}"),
        Err(e) => (
            code(&e),
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default(),
        ),
    }
}

/// A REST request (`POST` with a JSON body, else `GET`) as `user` (none:
/// no credentials): its status and JSON body.
async fn rest(
    cluster: &TestCluster,
    path: &str,
    user: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = match user {
        Some((name, password)) => Auth::Basic(name, password),
        None => Auth::Nothing,
    };
    rest_with(cluster, path, auth, body).await
}

enum Auth<'a> {
    Nothing,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

async fn rest_with(
    cluster: &TestCluster,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", cluster.http_port);
    let http = reqwest::Client::new();
    let mut req = match &body {
        Some(b) => http.post(url).json(b),
        None => http.get(url),
    };
    req = match auth {
        Auth::Nothing => req,
        Auth::Basic(name, password) => req.basic_auth(name, Some(password)),
        Auth::Bearer(token) => req.bearer_auth(token),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenged = resp.headers().contains_key("www-authenticate");
    assert_eq!(
        challenged,
        status == 401,
        "WWW-Authenticate goes with 401 only"
    );
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn first_text(c: &tokio_postgres::Client, sql: &str) -> String {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_log_in_with_scram_and_only_with_the_right_password() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();

    // The admin's password file: readable by its owner only.
    let file = cluster.dir.join("admin-password");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let admin = cluster.pg().await.unwrap();
    assert_eq!(first_text(&admin, "SELECT current_user").await, "eon");

    // Wrong password, unknown role: the same answer, as PostgreSQL.
    let wrong = login_refused(&cluster, "eon", "not-the-password").await;
    assert_eq!(
        wrong,
        (
            "28P01".into(),
            "password authentication failed for user \"eon\"".into()
        )
    );
    let unknown = login_refused(&cluster, "nobody", "x").await;
    assert_eq!(
        unknown,
        (
            "28P01".into(),
            "password authentication failed for user \"nobody\"".into()
        )
    );

    // A new role logs in, and is who the session says it is.
    admin
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'first secret'")
        .await
        .unwrap();
    let app = login(&cluster, "app", "first secret").await.unwrap();
    let row = app
        .query_one("SELECT current_user, session_user", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("app".into(), "app".into())
    );
    // It is no superuser: it cannot make roles, nor make itself one…
    refused(&app, "CREATE ROLE other", "42501").await;
    refused(&app, "ALTER ROLE app SUPERUSER", "42501").await;
    refused(&app, "DROP ROLE eon", "42501").await;
    // …but it may change its own password.
    app.batch_execute("ALTER ROLE app PASSWORD 'second secret'")
        .await
        .unwrap();
    assert_eq!(
        login_refused(&cluster, "app", "first secret").await.0,
        "28P01"
    );
    login(&cluster, "app", "second secret").await.unwrap();
    // The admin sets it again; psql (libpq's SCRAM) logs in with it.
    admin
        .batch_execute("ALTER USER app WITH PASSWORD 'third secret'")
        .await
        .unwrap();
    let out = Command::new("psql")
        .arg(cluster.pg_url_as("app", "third secret"))
        .args(["-X", "-At", "-c", "SELECT current_user"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");

    // NOLOGIN: the password is right, the login is still refused.
    admin
        .batch_execute("CREATE ROLE reader NOLOGIN PASSWORD 'r'")
        .await
        .unwrap();
    assert_eq!(
        login_refused(&cluster, "reader", "r").await,
        (
            "28000".into(),
            "role \"reader\" is not permitted to log in".into()
        )
    );
    // CREATE USER may log in; a verifier as pg_dump writes it is kept, and
    // the password it was made from logs in.
    let verifier = postgres_protocol::password::scram_sha_256(b"dumped");
    admin
        .batch_execute(&format!("CREATE USER restored PASSWORD '{verifier}'"))
        .await
        .unwrap();
    login(&cluster, "restored", "dumped").await.unwrap();

    // The catalog shows them; passwords never.
    let rows = admin
        .query(
            "SELECT rolname, rolsuper, rolcanlogin, rolpassword FROM pg_roles ORDER BY rolname",
            &[],
        )
        .await
        .unwrap();
    let roles: Vec<(String, bool, bool, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let masked = Some("********".to_string());
    assert_eq!(
        roles,
        vec![
            ("app".into(), false, true, masked.clone()),
            ("eon".into(), true, true, masked.clone()),
            ("reader".into(), false, false, masked.clone()),
            ("restored".into(), false, true, masked.clone()),
        ]
    );
    let users: Vec<String> = admin
        .query("SELECT usename FROM pg_user ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, ["app", "eon", "restored"]);
    // psql's \du reads them (with an ARRAY(subquery) of memberships).
    let out = Command::new("psql")
        .arg(cluster.pg_url())
        .args(["-X", "-c", "\\du"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("reader    | Cannot login"), "{text}");
    assert!(
        text.contains("eon       | Superuser, Create role, Create DB"),
        "{text}"
    );

    // PostgreSQL's errors for the rest.
    refused(&admin, "CREATE ROLE app", "42710").await;
    refused(&admin, "DROP ROLE ghost", "42704").await;
    admin
        .batch_execute("DROP ROLE IF EXISTS ghost")
        .await
        .unwrap();
    refused(&admin, "DROP ROLE eon", "55006").await;
    refused(&admin, "CREATE ROLE pg_mine", "42939").await;
    // A role statement in a rolled back block is undone.
    admin
        .batch_execute("BEGIN; CREATE ROLE passing; ALTER ROLE app NOLOGIN; ROLLBACK")
        .await
        .unwrap();
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'passing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    login(&cluster, "app", "third secret").await.unwrap();
    // A dropped role cannot log in any more.
    admin.batch_execute("DROP ROLE app").await.unwrap();
    assert_eq!(
        login_refused(&cluster, "app", "third secret").await.0,
        "28P01"
    );

    // REST: the same roles, by HTTP basic authentication.
    admin
        .batch_execute("CREATE ROLE web LOGIN PASSWORD 'w'")
        .await
        .unwrap();
    let sql = || Some(json!({"sql": "SELECT current_user AS who"}));
    let (status, body) = rest(&cluster, "/v1/sql", None, sql()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("28000")),
        "{body}"
    );
    let (status, body) = rest(&cluster, "/v1/sql", Some(("web", "nope")), sql()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("28P01")),
        "{body}"
    );
    for _ in 0..2 {
        // Twice: the second is answered from the remembered check.
        let (status, body) = rest(&cluster, "/v1/sql", Some(("web", "w")), sql()).await;
        assert_eq!((status, &body["rows"]), (200, &json!([["web"]])), "{body}");
    }
    // A changed password stops working at once.
    admin
        .batch_execute("ALTER ROLE web PASSWORD 'w2'")
        .await
        .unwrap();
    let (status, _) = rest(&cluster, "/v1/sql", Some(("web", "w")), sql()).await;
    assert_eq!(status, 401);
    // Credentials in the URL (what front ends get) work too; health needs none.
    let ok = reqwest::Client::new()
        .post(format!("{}/v1/sql", cluster.http_url()))
        .json(&sql())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(rest(&cluster, "/v1/health", None, None).await.0, 200);
}

/// Table privileges: the owner's, GRANTed, REVOKEd, PUBLIC; checked on the
/// wire and over REST, in subqueries, for every kind of write.
#[tokio::test]
async fn grants_decide_who_reads_and_writes_a_table() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let admin = cluster.pg().await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, label text);
             INSERT INTO items VALUES (1, 'one'), (2, 'two');
             CREATE ROLE clerk LOGIN PASSWORD 'c';
             CREATE ROLE viewer LOGIN PASSWORD 'v';",
        )
        .await
        .unwrap();
    let clerk = login(&cluster, "clerk", "c").await.unwrap();
    let e = refused(&clerk, "SELECT * FROM items", "42501").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "permission denied for table items"
    );
    admin
        .batch_execute("GRANT SELECT ON items TO clerk")
        .await
        .unwrap();
    let n: i64 = clerk
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    refused(&clerk, "INSERT INTO items VALUES (3, 'three')", "42501").await;

    // has_table_privilege answers from the grants: the session's role, a
    // named one, by name or by pg_class oid.
    let row = clerk
        .query_one(
            "SELECT has_table_privilege('items', 'SELECT'),
                    has_table_privilege('public.items', 'insert'),
                    has_table_privilege('items', 'UPDATE, SELECT WITH GRANT OPTION'),
                    has_table_privilege('viewer', 'items', 'SELECT'),
                    has_table_privilege('eon', 'items', 'DELETE'),
                    has_table_privilege('pg_class', 'SELECT'),
                    (SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c
                      WHERE c.relname = 'items')",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<bool> = (0..7).map(|i| row.get(i)).collect();
    assert_eq!(got, [true, false, true, false, true, true, true]);
    refused(
        &clerk,
        "SELECT has_table_privilege('nope', 'SELECT')",
        "42P01",
    )
    .await;
    refused(
        &clerk,
        "SELECT has_table_privilege('ghost', 'items', 'SELECT')",
        "42704",
    )
    .await;
    refused(
        &clerk,
        "SELECT has_table_privilege('items', 'FLY')",
        "22023",
    )
    .await;
    admin
        .batch_execute("GRANT INSERT, UPDATE ON TABLE items TO clerk")
        .await
        .unwrap();
    clerk
        .batch_execute(
            "INSERT INTO items VALUES (3, 'three'); UPDATE items SET label = 'THREE' WHERE id = 3",
        )
        .await
        .unwrap();
    refused(&clerk, "DELETE FROM items WHERE id = 3", "42501").await;
    refused(&clerk, "TRUNCATE items", "42501").await;
    let e = refused(&clerk, "DROP TABLE items", "42501").await;
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "must be owner of table items"
    );
    refused(&clerk, "GRANT SELECT ON items TO viewer", "42501").await;

    // A table of its own: the owner may do anything and grant to PUBLIC.
    clerk
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
             INSERT INTO notes VALUES (1, 'hi');
             GRANT SELECT ON notes TO PUBLIC",
        )
        .await
        .unwrap();
    // The catalog shows owner and grants as PostgreSQL does (psql \dt, \dp).
    let row = admin
        .query_one(
            "SELECT pg_get_userbyid(relowner), relacl FROM pg_class WHERE relname = 'notes'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "clerk");
    assert_eq!(
        row.get::<_, Vec<String>>(1),
        ["clerk=arwdDxt/clerk", "=r/clerk"]
    );
    let viewer = login(&cluster, "viewer", "v").await.unwrap();
    let body: String = viewer
        .query_one("SELECT body FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "hi");
    // A subquery reads too.
    refused(
        &viewer,
        "SELECT * FROM notes WHERE id IN (SELECT id FROM items)",
        "42501",
    )
    .await;
    refused(&viewer, "COPY items TO STDOUT", "42501").await;

    // REVOKE, and a rolled back GRANT, take the privilege away.
    admin
        .batch_execute(
            "REVOKE SELECT ON items FROM clerk;
             BEGIN; GRANT ALL PRIVILEGES ON items TO viewer; ROLLBACK",
        )
        .await
        .unwrap();
    refused(&clerk, "SELECT * FROM items", "42501").await;
    refused(&viewer, "SELECT * FROM items", "42501").await;
    // A role that owns a table or holds privileges stays.
    let e = refused(&admin, "DROP ROLE clerk", "2BP01").await;
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap_or_default()
            .contains("owner of table notes"),
        "{e:?}"
    );

    // REST: the same checks, 403 when refused.
    let viewer = Some(("viewer", "v"));
    let (status, body) = rest(&cluster, "/v1/tables/items", viewer, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("42501")),
        "{body}"
    );
    let (status, body) = rest(&cluster, "/v1/tables/notes", viewer, None).await;
    assert_eq!((status, body), (200, json!([{"id": 1, "body": "hi"}])));
    let write = Some(json!({"id": 2, "body": "no"}));
    assert_eq!(
        rest(&cluster, "/v1/tables/notes", viewer, write).await.0,
        403
    );
}

/// `eon up --trust`: clients need no password (the role must still exist),
/// and REST without credentials runs as the admin.
#[tokio::test]
async fn trust_lets_clients_in_without_passwords() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .arg("--trust")
        .start()
        .unwrap();
    let admin = login(&cluster, "eon", "anything").await.unwrap();
    let url = format!(
        "postgresql://eon@127.0.0.1:{}/eon?sslmode=disable",
        cluster.pg_port
    );
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(first_text(&c, "SELECT current_user").await, "eon");
    assert_eq!(login_refused(&cluster, "nobody", "").await.0, "28000");
    admin
        .batch_execute("CREATE ROLE guest LOGIN")
        .await
        .unwrap();
    login(&cluster, "guest", "").await.unwrap();
    let sql = Some(json!({"sql": "SELECT current_user"}));
    let (status, body) = rest(&cluster, "/v1/sql", None, sql).await;
    assert_eq!((status, &body["rows"]), (200, &json!([["eon"]])), "{body}");
}

/// Components authenticate each other with the cluster's secret: a process
/// that is not part of the cluster (no secret, or a wrong one) cannot call
/// a data engine, meta, a query engine or the agent; the secret is kept
/// readable by its owner only and never shows on a command line.
#[tokio::test]
async fn components_refuse_callers_without_the_cluster_secret() {
    use eon_proto::v1 as pb;
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let secret_file = cluster.dir.join("cluster-secret");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = cluster.secret();
    assert!(secret.len() >= 24, "{secret:?}");

    let nodes = cluster
        .meta()
        .unwrap()
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let addr_of = |kind: pb::NodeKind| {
        nodes
            .iter()
            .find(|n| n.kind == kind as i32)
            .unwrap()
            .grpc_address
            .clone()
    };
    let (de, qe) = (
        addr_of(pb::NodeKind::DataEngine),
        addr_of(pb::NodeKind::QueryEngine),
    );
    let (meta, agent) = (cluster.meta_addr().unwrap(), cluster.agent_addr().unwrap());
    let wrong = format!("{secret}x");
    for (who, secret) in [("nobody", None), ("a wrong secret", Some(wrong.as_str()))] {
        let ch = |addr: &str| eon_common::node::channel_with(addr, secret).unwrap();
        let refused = [
            pb::data_engine_client::DataEngineClient::new(ch(&de))
                .stats(pb::StatsRequest {})
                .await
                .map(|_| ()),
            pb::meta_client::MetaClient::new(ch(&meta))
                .list_nodes(pb::ListNodesRequest {})
                .await
                .map(|_| ()),
            pb::query_engine_client::QueryEngineClient::new(ch(&qe))
                .stats(pb::StatsRequest {})
                .await
                .map(|_| ()),
            pb::agent_client::AgentClient::new(ch(&agent))
                .list(pb::ListInstancesRequest {})
                .await
                .map(|_| ()),
        ];
        for (component, r) in ["data engine", "meta", "query engine", "agent"]
            .iter()
            .zip(refused)
        {
            let e = r.expect_err(&format!("{component} answered {who}"));
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{component}: {e}");
        }
    }
    // With the secret, the data engine answers (its statistics stay open
    // over plain HTTP too, for Prometheus).
    let stats = pb::data_engine_client::DataEngineClient::new(cluster.channel(&de).unwrap())
        .stats(pb::StatsRequest {})
        .await
        .unwrap();
    assert!(!stats.into_inner().counters.is_empty());
    let metrics = reqwest::get(format!("http://{de}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);

    // The secret reaches the components in their environment, not in
    // their arguments.
    let pid = cluster.pid_of("data-engine-1").await.unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&secret));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains(&format!("EON_CLUSTER_SECRET={secret}")));

    // An agent cannot join without it.
    let out = Command::new(eon_testkit::eon_bin())
        .args([
            "agent",
            "--join",
            &agent,
            "--name",
            "intruder",
            "--data-dir",
        ])
        .arg(cluster.dir.join("intruder"))
        .env_remove("EON_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the cluster's secret"), "{err}");
}

/// REST bearer tokens made by SQL: `eon_create_token()` gives the session's
/// role a token every query engine accepts, under that role's privileges,
/// until it expires or the role's password changes.
#[tokio::test]
async fn rest_bearer_tokens_created_by_sql() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let admin = cluster.pg().await.unwrap();
    admin
        .batch_execute(
            "CREATE ROLE app LOGIN PASSWORD 'app pw';
             CREATE TABLE notes (id int PRIMARY KEY, body text);
             INSERT INTO notes VALUES (1, 'one');
             CREATE TABLE secrets (id int PRIMARY KEY);
             GRANT SELECT ON notes TO app",
        )
        .await
        .unwrap();
    let app = login(&cluster, "app", "app pw").await.unwrap();
    let token = first_text(&app, "SELECT eon_create_token()").await;
    assert!(token.starts_with("eon1."), "{token}");

    let sql = |q: &str| Some(json!({ "sql": q }));
    let (status, body) = rest_with(
        &cluster,
        "/v1/sql",
        Auth::Bearer(&token),
        sql("SELECT current_user"),
    )
    .await;
    assert_eq!((status, &body["rows"]), (200, &json!([["app"]])), "{body}");
    let (status, body) = rest_with(&cluster, "/v1/tables/notes", Auth::Bearer(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([{"id": 1, "body": "one"}]));
    // The token's role's privileges, not more.
    let (status, body) =
        rest_with(&cluster, "/v1/tables/secrets", Auth::Bearer(&token), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("42501")),
        "{body}"
    );

    // Forged, tampered, expired: 401.
    let mut tampered = token.clone().into_bytes();
    tampered[8] ^= 1;
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in ["eon1.bm9ib2R5.AAAA", "not-a-token", tampered.as_str()] {
        let (status, body) =
            rest_with(&cluster, "/v1/sql", Auth::Bearer(bad), sql("SELECT 1")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("28000")),
            "{bad}: {body}"
        );
    }
    let short = first_text(&app, "SELECT eon_create_token(1)").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _) = rest_with(&cluster, "/v1/sql", Auth::Bearer(&short), sql("SELECT 1")).await;
    assert_eq!(status, 401);
    refused(&app, "SELECT eon_create_token(0)", "22023").await;

    // The cluster's own paths on the REST port are a superuser's.
    let (status, _) = rest_with(&cluster, "/v1/cluster", Auth::Nothing, None).await;
    assert_eq!(status, 401);
    let (status, body) = rest_with(
        &cluster,
        "/v1/cluster/frontends",
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("42501")),
        "{body}"
    );
    let (status, _) = rest_with(&cluster, "/metrics", Auth::Basic("app", "app pw"), None).await;
    assert_eq!(status, 403);
    let (status, body) = rest_with(&cluster, "/v1/whoami", Auth::Bearer(&token), None).await;
    assert_eq!(
        (status, body),
        (200, json!({"user": "app", "superuser": false}))
    );
    let admin_token = first_text(&admin, "SELECT eon_create_token()").await;
    let (status, body) = rest_with(&cluster, "/v1/cluster", Auth::Bearer(&admin_token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pg"], format!("127.0.0.1:{}", cluster.pg_port));

    // A changed password revokes the role's tokens.
    admin
        .batch_execute("ALTER ROLE app PASSWORD 'new pw'")
        .await
        .unwrap();
    let (status, _) = rest_with(&cluster, "/v1/sql", Auth::Bearer(&token), sql("SELECT 1")).await;
    assert_eq!(status, 401);
}
