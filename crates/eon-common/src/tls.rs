//! TLS on eon's front doors (rustls, with ring's cryptography).
//!
//! A client that asks for TLS gets it on both public ports: PostgreSQL
//! clients send an SSLRequest first (`sslmode=require`, or libpq's default
//! `prefer`), HTTPS clients start with a TLS ClientHello on the REST port.
//! Clients that do not ask are served in the clear, as by a PostgreSQL
//! server with `ssl = on` and a `host` line in pg_hba.conf — unless the
//! operator says `eon up --require-tls`.
//!
//! Certificates: an operator may bring a certificate and key of their own
//! (`eon up --tls-cert FILE --tls-key FILE`). Otherwise `eon up` keeps a
//! certificate authority of the cluster's own in `<data-dir>/tls/` — made
//! at the first start (`ca.crt`, and `ca.key` readable only by its owner) —
//! and issues the server a fresh certificate from it at every start, for
//! the names clients use to reach this host (localhost, 127.0.0.1, ::1, the
//! host name and the listen address). Clients that verify the server
//! (`sslmode=verify-full sslrootcert=<data-dir>/tls/ca.crt`,
//! `curl --cacert …`) trust `ca.crt`, which stays the same across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where `eon up` keeps the cluster's certificates, in its data dir.
pub const TLS_DIR: &str = "tls";

/// A server certificate (chain) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The cluster's own certificates in `dir` (`<data-dir>/tls`): the CA made
/// at the first start, and a server certificate for `names` (DNS names or
/// IP addresses) issued by it now. Returns the server's files and the CA
/// certificate's path.
pub fn cluster_certificates(dir: &Path, names: &[String]) -> Result<(CertFiles, PathBuf), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(&format!("cannot create {}", dir.display()), &e))?;
    let ca_cert = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let ca_key = if ca_key_path.exists() && ca_cert.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| fail(&format!("cannot read {}", ca_key_path.display()), &e))?;
        KeyPair::from_pem(&pem)
            .map_err(|e| fail(&format!("{} is not a key", ca_key_path.display()), &e))?
    } else {
        let key = KeyPair::generate().map_err(|e| fail("cannot make a key", &e))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| fail("cannot make the CA certificate", &e))?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert, cert.pem())
            .map_err(|e| fail(&format!("cannot write {}", ca_cert.display()), &e))?;
        key
    };
    // The issuer needs only the CA's name, key usages and key: they are
    // the same every time, so the CA certificate need not be parsed back.
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate().map_err(|e| fail("cannot make a key", &e))?;
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(|e| fail("bad certificate name", &e))?;
    params.distinguished_name.push(DnType::CommonName, "eon");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 397);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| fail("cannot issue the server certificate", &e))?;
    let files = CertFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    write_private(&files.key, &key.serialize_pem())?;
    std::fs::write(&files.cert, cert.pem())
        .map_err(|e| fail(&format!("cannot write {}", files.cert.display()), &e))?;
    Ok((files, ca_cert))
}

/// The cluster CA's parameters (ten years, signs certificates only).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "eon cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, 3650);
    params
}

/// Valid from yesterday (clocks differ a little) for `days` days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    use chrono::Datelike;
    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    params.not_before = ymd(now - chrono::Duration::days(1));
    params.not_after = ymd(now + chrono::Duration::days(days));
}

/// Write a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The names a server certificate for this host covers: loopback, the host
/// name, and the listen address unless it is a wildcard.
pub fn host_names(listen: &str) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = hostname() {
        names.push(host);
    }
    let listen = listen.trim_matches(|c| c == '[' || c == ']');
    let wildcard = listen
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !wildcard && !listen.is_empty() {
        names.push(listen.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A rustls server configuration from PEM files: the certificate chain
/// (server first) and its private key. `alpn` lists the protocols the
/// server speaks (`postgresql` for PostgreSQL 17's direct TLS; `http/1.1`).
pub fn server_config(files: &CertFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read certificates from {}: {e}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable certificate: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A TLS acceptor for `files` (see [`server_config`]).
pub fn acceptor(files: &CertFiles, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, String> {
    server_config(files, alpn).map(tokio_rustls::TlsAcceptor::from)
}

/// Does the first byte a client sent start a TLS handshake (a TLS record
/// of type "handshake")? How one port serves both HTTP and HTTPS.
pub async fn starts_tls(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_stays_and_the_server_certificate_is_renewed() {
        let dir = tempfile_dir();
        let names = host_names("127.0.0.1");
        let (files, ca) = cluster_certificates(&dir, &names).unwrap();
        let ca_pem = std::fs::read_to_string(&ca).unwrap();
        let first = std::fs::read_to_string(&files.cert).unwrap();
        server_config(&files, &[b"postgresql"]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for key in [&files.key, &dir.join("ca.key")] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let (files, ca) = cluster_certificates(&dir, &names).unwrap();
        assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_pem);
        assert_ne!(std::fs::read_to_string(&files.cert).unwrap(), first);
        server_config(&files, &[]).unwrap();
        // A key that is not the certificate's is refused with both names.
        let wrong = CertFiles {
            cert: files.cert.clone(),
            key: dir.join("ca.key"),
        };
        let e = server_config(&wrong, &[]).unwrap_err();
        assert!(e.contains("server.crt") && e.contains("ca.key"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn host_names_leave_out_wildcards_and_repeats() {
        let names = host_names("0.0.0.0");
        assert_eq!(&names[..3], &["localhost", "127.0.0.1", "::1"]);
        assert!(!names.iter().any(|n| n == "0.0.0.0"));
        assert_eq!(
            host_names("127.0.0.1")
                .iter()
                .filter(|n| *n == "127.0.0.1")
                .count(),
            1
        );
        assert!(host_names("10.1.2.3").iter().any(|n| n == "10.1.2.3"));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "eon-tls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
