//! Passwords as PostgreSQL keeps them: SCRAM-SHA-256 verifiers.
//!
//! A role's password is never stored. What is stored is the verifier
//! PostgreSQL writes into `pg_authid.rolpassword`:
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//! ```
//!
//! where `SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)`,
//! `StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")` (RFC 5802, RFC 7677).
//! The verifier lets the server check a client's proof — the client shows
//! it knows `ClientKey` without sending it — and prove itself to the client
//! with `ServerKey`; it is not enough to log in as the role.
//!
//! The exchange on the wire (PostgreSQL's SASL authentication):
//!
//! 1. client-first: `n,,n=,r=<client nonce>`;
//! 2. server-first: `r=<client nonce><server nonce>,s=<salt>,i=<iterations>`;
//! 3. client-final: `c=biws,r=<nonce>,p=<proof>` where
//!    `proof = ClientKey XOR HMAC(StoredKey, AuthMessage)` and
//!    `AuthMessage = client-first-bare "," server-first "," client-final-without-proof`;
//! 4. server-final: `v=<HMAC(ServerKey, AuthMessage)>`.
//!
//! Hand-written rather than pgwire's SCRAM: pgwire keeps the salted password
//! itself (which is as good as the password for logging in) and one
//! iteration count for all roles, where PostgreSQL — and so pg_dump's
//! `ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'` — keeps these verifiers.
//! The primitives (HMAC, SHA-256, SASLprep) come from RustCrypto and
//! stringprep.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A parsed verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    // SASLprep as PostgreSQL: a password it cannot normalise is used as is.
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut prev = hmac(prepared.as_bytes(), &[salt, &[0, 0, 0, 1]]);
    let mut out = prev;
    for _ in 1..iterations {
        prev = hmac(prepared.as_bytes(), &[&prev]);
        for (o, p) in out.iter_mut().zip(prev) {
            *o ^= p;
        }
    }
    out
}

impl Verifier {
    /// The verifier of `password` with `salt`.
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// The verifier of `password` with a fresh random salt.
    pub fn generate(password: &str) -> Verifier {
        Verifier::new(password, &rand::random::<[u8; SALT_LEN]>(), ITERATIONS)
    }

    /// Parse `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |s: &str| -> Option<[u8; 32]> { STANDARD.decode(s).ok()?.try_into().ok() };
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Whether `password` is the one this verifier was made from (HTTP
    /// basic authentication, where the client sends the password itself).
    pub fn matches(&self, password: &str) -> bool {
        let v = Verifier::new(password, &self.salt, self.iterations);
        constant_time_eq(&v.stored_key, &self.stored_key)
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's side of one SCRAM exchange, after the client-first message.
#[derive(Debug)]
pub struct ServerExchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

/// Why an exchange failed: a malformed message, or a wrong password.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    Malformed(String),
    WrongPassword,
}

impl ServerExchange {
    /// Take the client-first message; answers the server-first message.
    /// `verifier` is the role's (or, for a role that cannot log in with a
    /// password, a made-up one, so the exchange looks the same).
    pub fn start(
        client_first: &str,
        verifier: Verifier,
    ) -> Result<(ServerExchange, String), ScramError> {
        let bad = |m: &str| ScramError::Malformed(m.to_string());
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = client_first
            .split_once(',')
            .ok_or_else(|| bad("missing GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(bad(
                    "channel binding is not supported (connect with channel_binding=disable or prefer)",
                ));
            }
            _ => return Err(bad("unexpected channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| bad("missing GS2 header"))?;
        if !authzid.is_empty() {
            return Err(bad("authorization identities are not supported"));
        }
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(n) = attr.strip_prefix("r=") {
                client_nonce = Some(n);
            } else if attr.starts_with("m=") {
                return Err(bad("mandatory SCRAM extensions are not supported"));
            }
        }
        let client_nonce = client_nonce
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or_else(|| bad("missing or invalid nonce"))?;
        let nonce = format!(
            "{client_nonce}{}",
            STANDARD.encode(rand::random::<[u8; 18]>())
        );
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            ServerExchange {
                verifier,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
                gs2_header: format!("{flag},{authzid},"),
            },
            server_first,
        ))
    }

    /// Take the client-final message; answers the server-final message if
    /// the client's proof is right.
    pub fn finish(&self, client_final: &str) -> Result<String, ScramError> {
        let bad = |m: &str| ScramError::Malformed(m.to_string());
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| bad("missing proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        if channel != Some(STANDARD.encode(&self.gs2_header).as_str()) {
            return Err(bad("unexpected channel binding data"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(bad("nonce does not match"));
        }
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| bad("malformed proof"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(signature) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_eq(&stored, &self.verifier.stored_key) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

/// Whether `verifier` (a stored verifier's text) was made from `password`;
/// false for no or a malformed verifier.
pub fn verifies(verifier: &str, password: &str) -> bool {
    Verifier::parse(verifier).is_some_and(|v| v.matches(password))
}

/// A password kept in a file (the admin's, a recipe role's): its first
/// line; an empty one is an error.
pub fn read_password(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the password file is empty",
        ));
    }
    Ok(password.to_string())
}

/// A new password: 24 random letters and digits (safe in URLs).
pub fn random_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// A made-up verifier for `user`, the same every time for the same name
/// and `secret`: a role that does not exist (or has no password) gets an
/// exchange that looks like any other and fails at the proof, as in
/// PostgreSQL, so a client cannot tell which names exist.
pub fn mock_verifier(user: &str, secret: &[u8]) -> Verifier {
    let salt = hmac(secret, &[user.as_bytes()]);
    Verifier {
        iterations: ITERATIONS,
        salt: salt[..SALT_LEN].to_vec(),
        stored_key: hmac(secret, &[b"stored", user.as_bytes()]),
        server_key: hmac(secret, &[b"server", user.as_bytes()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example exchange of RFC 7677, section 3 (user "user", password
    /// "pencil"), run through the server side with its nonces.
    #[test]
    fn rfc7677_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::new("pencil", &salt, 4096);
        let client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let (mut ex, _) = ServerExchange::start(client_first, verifier.clone()).unwrap();
        // Replace the random server nonce with the RFC's.
        ex.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        ex.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", ex.nonce);
        let server_final = ex
            .finish(
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // A wrong proof is a wrong password.
        assert_eq!(
            ex.finish(
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn verifiers_print_and_parse_as_postgresql_writes_them() {
        let v = Verifier::generate("secret");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text), Some(v.clone()));
        assert!(v.matches("secret"));
        assert!(!v.matches("Secret"));
        assert_eq!(Verifier::parse("md5abc"), None);
        assert_eq!(Verifier::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA"), None);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let v = Verifier::generate("x");
        for first in [
            "",
            "n",
            "n,,",
            "p=tls-server-end-point,,n=,r=abc",
            "n,a=x,n=,r=abc",
        ] {
            assert!(
                matches!(
                    ServerExchange::start(first, v.clone()),
                    Err(ScramError::Malformed(_))
                ),
                "{first}"
            );
        }
        let (ex, _) = ServerExchange::start("n,,n=,r=abc", v).unwrap();
        assert!(matches!(
            ex.finish("c=biws,r=abc,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn mock_verifiers_are_stable_per_name() {
        assert_eq!(mock_verifier("a", b"k"), mock_verifier("a", b"k"));
        assert_ne!(mock_verifier("a", b"k").salt, mock_verifier("b", b"k").salt);
    }
}
