//! TLS on the front doors: psql's libpq with `sslmode=require` and
//! `verify-full` against the cluster's own CA (and refusing a wrong host
//! name or a foreign CA), HTTPS on the REST port checked by curl, the CA
//! kept across restarts, an operator's certificate, and `--require-tls`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use eon_testkit::TestCluster;

/// psql with `conninfo` (a URL or key=value string): success, stdout, stderr.
fn psql(conninfo: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-At", "-c", sql])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The admin's libpq key=value string with `ssl` appended.
fn conninfo(cluster: &TestCluster, host: &str, ssl: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} dbname=eon user=eon password={} {ssl}",
        cluster.pg_port,
        cluster.admin_password()
    )
}

/// curl on the REST port: exit code, HTTP status, body.
fn curl(args: &[&str], url: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        status.to_string(),
        body.to_string(),
    )
}

/// A certificate authority that is not the cluster's (openssl's CLI).
fn foreign_ca(dir: &Path) -> String {
    let (key, cert) = (dir.join("other.key"), dir.join("other.crt"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=someone else"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert.display().to_string()
}

#[tokio::test]
async fn tls_on_the_postgresql_wire_and_rest() {
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .start()
        .unwrap();
    let tls = cluster.dir.join("tls");
    let ca = tls.join("ca.crt").display().to_string();
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(tls.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // sslmode=require: encrypted, not verified.
    let (ok, out, err) = psql(
        &conninfo(&cluster, "localhost", "sslmode=require"),
        "SELECT current_user",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "eon");
    let (ok, out, err) = psql(
        &conninfo(&cluster, "localhost", "sslmode=require"),
        "\\conninfo",
    );
    assert!(
        ok && out.contains("SSL connection (protocol: TLSv1.3"),
        "{out} {err}"
    );

    // verify-full: the CA signed the server's certificate, for the names
    // clients use (a DNS name and an IP address).
    for host in ["localhost", "127.0.0.1"] {
        let (ok, out, err) = psql(
            &conninfo(
                &cluster,
                host,
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
            "SELECT 40 + 2",
        );
        assert!(ok, "{host}: {err}");
        assert_eq!(out, "42");
    }
    // … and refuses a name the certificate is not for, or another CA.
    let (ok, _, err) = psql(
        &conninfo(
            &cluster,
            "db.example.com",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        "SELECT 1",
    );
    assert!(!ok && err.contains("does not match host name"), "{err}");
    let other = foreign_ca(&cluster.dir);
    let (ok, _, err) = psql(
        &conninfo(
            &cluster,
            "localhost",
            &format!("sslmode=verify-full sslrootcert={other}"),
        ),
        "SELECT 1",
    );
    assert!(!ok && err.contains("certificate verify failed"), "{err}");
    // A client that does not ask for TLS is still served (no --require-tls).
    let (ok, _, err) = psql(
        &conninfo(&cluster, "localhost", "sslmode=disable"),
        "SELECT 1",
    );
    assert!(ok, "{err}");

    // REST: HTTPS and HTTP on one port; curl verifies against the CA.
    let https = format!("https://127.0.0.1:{}/v1/sql", cluster.http_port);
    let user = format!("eon:{}", cluster.admin_password());
    let sql = r#"{"sql": "SELECT 7 AS seven"}"#;
    let (rc, status, body) = curl(&["--cacert", &ca, "-u", &user, "-d", sql], &https);
    assert_eq!((rc, status.as_str()), (0, "200"), "{body}");
    assert!(body.contains(r#""rows":[[7]]"#), "{body}");
    let (rc, _, _) = curl(&["-u", &user, "-d", sql], &https);
    assert_eq!(rc, 60, "curl must refuse a certificate it cannot verify");
    let (rc, status, _) = curl(&["--cacert", &other, "-u", &user, "-d", sql], &https);
    assert_eq!((rc, status.as_str()), (60, "000"));
    let (rc, status, body) = curl(
        &["-u", &user, "-d", sql],
        &format!("http://127.0.0.1:{}/v1/sql", cluster.http_port),
    );
    assert_eq!((rc, status.as_str()), (0, "200"), "{body}");
    // Credentials are still checked over TLS.
    let (_, status, _) = curl(&["--cacert", &ca, "-u", "eon:wrong", "-d", sql], &https);
    assert_eq!(status, "401");

    // After a restart the CA is the same, so clients keep trusting it; the
    // server's certificate is issued anew.
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let server_pem = std::fs::read_to_string(tls.join("server.crt")).unwrap();
    let cluster = cluster.restart().unwrap();
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_pem);
    assert_ne!(
        std::fs::read_to_string(tls.join("server.crt")).unwrap(),
        server_pem
    );
    let (ok, _, err) = psql(
        &conninfo(
            &cluster,
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        "SELECT 1",
    );
    assert!(ok, "{err}");
}

/// `--require-tls` with an operator's certificate (`--tls-cert`/`--tls-key`):
/// plain clients are refused on both doors, TLS clients served.
#[tokio::test]
async fn require_tls_with_an_operators_certificate() {
    // The operator's certificate: issued by a CA of their own (here, a
    // throwaway cluster's, made by `eon`'s own code).
    let certs = tempfile::tempdir().unwrap();
    let (files, ca) = eon_common::tls::cluster_certificates(
        &certs.path().join("ca"),
        &["localhost".to_string(), "127.0.0.1".to_string()],
    )
    .unwrap();
    let ca = ca.display().to_string();
    let cluster = TestCluster::builder()
        .data_engines(1)
        .shards(2)
        .arg("--tls-cert")
        .arg(files.cert.display().to_string())
        .arg("--tls-key")
        .arg(files.key.display().to_string())
        .arg("--require-tls")
        .start()
        .unwrap();
    assert!(
        !cluster.dir.join("tls").exists(),
        "no CA of its own is made"
    );

    let (ok, out, err) = psql(
        &conninfo(
            &cluster,
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        "SELECT current_user",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "eon");
    let (ok, _, err) = psql(
        &conninfo(&cluster, "localhost", "sslmode=disable"),
        "SELECT 1",
    );
    assert!(!ok && err.contains("accepts TLS connections only"), "{err}");
    let e = tokio_postgres::connect(&cluster.pg_url(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a plain connection must be refused");
    assert_eq!(crate::code(&e), "28000");

    let user = format!("eon:{}", cluster.admin_password());
    let sql = r#"{"sql": "SELECT 1 AS one"}"#;
    let (rc, status, body) = curl(
        &["--cacert", &ca, "-u", &user, "-d", sql],
        &format!("https://localhost:{}/v1/sql", cluster.http_port),
    );
    assert_eq!((rc, status.as_str()), (0, "200"), "{body}");
    let (rc, status, body) = curl(
        &["-u", &user, "-d", sql],
        &format!("http://127.0.0.1:{}/v1/sql", cluster.http_port),
    );
    assert_eq!((rc, status.as_str()), (0, "400"), "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "28000");
}

/// A certificate that cannot be used stops `eon up` with one line naming it.
#[test]
fn a_bad_certificate_stops_eon_up() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let out = Command::new(eon_testkit::eon_bin())
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--pg-port", &eon_testkit::free_port().to_string()])
        .args(["--http-port", &eon_testkit::free_port().to_string()])
        .args(["--ingress-port", &eon_testkit::free_port().to_string()])
        .arg("--tls-cert")
        .arg(&bogus)
        .arg("--tls-key")
        .arg(&bogus)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("eon: TLS:")
            && err.contains("bogus.pem")
            && err.trim().lines().count() == 1,
        "{err}"
    );
}
