//! Who is asking: authentication on the PostgreSQL wire and over REST.
//!
//! Both front doors check the same roles (meta's catalog, cached by the
//! query engine) against the same SCRAM-SHA-256 verifiers
//! ([`eon_common::scram`]):
//!
//! - **PostgreSQL wire**: SASL authentication with SCRAM-SHA-256, as
//!   PostgreSQL 10+ does with `password_encryption = scram-sha-256` — the
//!   password never crosses the wire and the server proves it knows the
//!   verifier too. A role that does not exist goes through the same
//!   exchange with a made-up verifier and fails at the proof, so a client
//!   cannot probe for names; it ends with FATAL 28P01 "password
//!   authentication failed for user …", as PostgreSQL. A role without
//!   LOGIN is refused with 28000 after its password checked out.
//! - **REST**: HTTP basic authentication (`Authorization: Basic …`, or
//!   `http://user:password@host/` in a client's URL); a missing or wrong
//!   one gets 401 with a JSON error and `WWW-Authenticate: Basic`. Checking
//!   a password costs a PBKDF2 of 4096 rounds, so a right one is
//!   remembered (by a hash of name and password) while its role's verifier
//!   is unchanged.
//!
//! - **REST bearer tokens**: `SELECT eon_create_token()` (or
//!   `eon_create_token(seconds)`; a day by default) gives the session's role
//!   a token to send as `Authorization: Bearer …` — PostgREST's way, with a
//!   token signed like a JWT: `eon1.<role, expiry, nonce>.<HMAC-SHA256>`,
//!   keyed by the cluster's secret (so every query engine accepts it) and
//!   the role's password verifier (so changing the password revokes the
//!   role's tokens). Nothing is stored; a token lasts until it expires, its
//!   role's password changes, or the role is dropped.
//!
//! `eon up --trust` turns both off: every client is whoever it says it is
//! (the role must still exist and may log in, as PostgreSQL's `trust`).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use eon_common::Error;
use eon_common::error::sqlstate;
use eon_common::scram::{ScramError, ServerExchange, Verifier, mock_verifier};
use eon_proto::v1 as pb;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, ServerParameterProvider, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sha2::Digest;

use crate::pg::Cancels;
use crate::session::{Engine, SERVER_VERSION, Session};

/// How clients prove who they are, shared by a query engine's front doors.
pub struct Authenticator {
    /// `--trust`: nobody needs a password.
    pub trust: bool,
    /// `--require-tls`: PostgreSQL clients must have asked for TLS.
    pub require_tls: bool,
    /// Key of the made-up verifiers of unknown roles (random per process).
    mock_key: [u8; 32],
    /// Right REST passwords seen: hash of (name, password) → the verifier
    /// they matched (a changed password makes the entry stale).
    basic_seen: Mutex<HashMap<[u8; 32], String>>,
}

impl Authenticator {
    pub fn new(trust: bool, require_tls: bool) -> Authenticator {
        Authenticator {
            trust,
            require_tls,
            mock_key: rand::random(),
            basic_seen: Mutex::new(HashMap::new()),
        }
    }
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

fn password_failed(user: &str) -> Error {
    Error::user(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// The role `user` logs in as, once its password (if needed) checked out:
/// it must exist and have LOGIN.
fn login_role(session: &Session, user: &str) -> Result<pb::Role, Error> {
    let role = session.engine.cluster.role(user).ok_or_else(|| {
        Error::user(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("role \"{user}\" does not exist"),
        )
    })?;
    if !role.login {
        return Err(Error::user(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("role \"{user}\" is not permitted to log in"),
        ));
    }
    Ok(role)
}

/// The startup of one PostgreSQL connection: SCRAM-SHA-256 (unless
/// trusted), then the server parameters and the cancel key.
pub struct Startup {
    pub pids: Arc<RandomPidSecretKeyGenerator>,
    pub cancels: Arc<Cancels>,
    pub session: Arc<Session>,
    /// The exchange between the client's first and final SCRAM messages.
    pub exchange: Mutex<Option<ServerExchange>>,
}

struct Params {
    superuser: bool,
    /// The session's reported parameters, after the startup message's.
    settings: Vec<(&'static str, String)>,
}

impl ServerParameterProvider for Params {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let mut p = DefaultServerParameterProvider::default().server_parameters(client)?;
        p.insert(
            "server_version".into(),
            format!("{SERVER_VERSION} (eon {})", env!("CARGO_PKG_VERSION")),
        );
        for (name, value) in &self.settings {
            p.insert(name.to_string(), value.clone());
        }
        p.insert(
            "is_superuser".into(),
            if self.superuser { "on" } else { "off" }.into(),
        );
        Some(p)
    }
}

impl Startup {
    /// Let the client in as `role`.
    async fn admit<C>(&self, client: &mut C, role: pb::Role) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session.set_user(&role.name);
        let params: Vec<(String, String)> = client
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.session
            .apply_startup(&params)
            .map_err(|e| fatal(&e.code, e.message))?;
        let (pid, key) = self.pids.generate(client);
        self.cancels.register(pid, key.to_bytes(), &self.session);
        client.set_pid_and_secret_key(pid, key);
        finish_authentication(
            client,
            &Params {
                superuser: role.superuser,
                settings: self.session.reported_settings(),
            },
        )
        .await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.session.engine.auth.require_tls && !client.is_secure() {
                    // PostgreSQL's answer when only `hostssl` lines match.
                    return Err(fatal(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        format!(
                            "no encryption: this server accepts TLS connections only (user \"{}\"; connect with sslmode=require)",
                            client_user(client)
                        ),
                    ));
                }
                // A fresh catalog: a role created a moment ago through
                // another query engine can log in here.
                let _ = self.session.engine.cluster.timestamp().await;
                if self.session.engine.auth.trust {
                    let role = login_role(&self.session, &client_user(client))
                        .map_err(|e| fatal(&e.code, e.message))?;
                    return self.admit(client, role).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![eon_common::scram::MECHANISM.to_string()],
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let started = self.exchange.lock().unwrap().take();
                match started {
                    None => {
                        let initial = msg.into_sasl_initial_response()?;
                        if initial.auth_method != eon_common::scram::MECHANISM {
                            return Err(fatal(
                                sqlstate::PROTOCOL_VIOLATION,
                                "client selected an invalid SASL authentication mechanism",
                            ));
                        }
                        let data = initial.data.unwrap_or_default();
                        let first = std::str::from_utf8(&data).map_err(|_| {
                            fatal(sqlstate::PROTOCOL_VIOLATION, "malformed SCRAM message")
                        })?;
                        let name = client_user(client);
                        let verifier = self
                            .session
                            .engine
                            .cluster
                            .role(&name)
                            .and_then(|r| Verifier::parse(&r.password))
                            .unwrap_or_else(|| {
                                mock_verifier(&name, &self.session.engine.auth.mock_key)
                            });
                        let (exchange, server_first) = ServerExchange::start(first, verifier)
                            .map_err(|e| scram_error(e, &name))?;
                        *self.exchange.lock().unwrap() = Some(exchange);
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                    }
                    Some(exchange) => {
                        let response = msg.into_sasl_response()?;
                        let name = client_user(client);
                        let last = std::str::from_utf8(&response.data).map_err(|_| {
                            fatal(sqlstate::PROTOCOL_VIOLATION, "malformed SCRAM message")
                        })?;
                        let server_final =
                            exchange.finish(last).map_err(|e| scram_error(e, &name))?;
                        // A made-up verifier never matches; this is a real
                        // role whose password checked out.
                        let role = login_role(&self.session, &name)
                            .map_err(|e| fatal(&e.code, e.message))?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into_bytes().into()),
                            ))
                            .await?;
                        self.admit(client, role).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn client_user<C: ClientInfo>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_default()
}

fn scram_error(e: ScramError, user: &str) -> PgWireError {
    match e {
        ScramError::WrongPassword => {
            let e = password_failed(user);
            fatal(&e.code, e.message)
        }
        ScramError::Malformed(m) => fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed SCRAM message: {m}"),
        ),
    }
}

/// The role a REST request runs as (put in the request's extensions by
/// [`rest_auth`]).
#[derive(Debug, Clone)]
pub struct RestUser(pub String);

/// REST middleware: HTTP basic authentication against the roles.
pub async fn rest_auth(
    State(engine): State<Arc<Engine>>,
    mut request: Request,
    next: Next,
) -> Response {
    match basic_user(&engine, request.headers().get(header::AUTHORIZATION)).await {
        Ok(user) => {
            request.extensions_mut().insert(RestUser(user));
            next.run(request).await
        }
        Err(e) => {
            let mut response = crate::rest::ApiError(e).into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Basic realm=\"eon\", charset=\"UTF-8\", Bearer realm=\"eon\"",
                    ),
                );
            }
            response
        }
    }
}

/// How long `eon_create_token()` tokens last unless told.
pub const TOKEN_TTL_SECONDS: i64 = 24 * 3600;

const TOKEN_PREFIX: &str = "eon1.";

/// The key a role's tokens are signed with: the cluster's secret (or, in a
/// query engine started without one, this process's random key) and the
/// role's password verifier.
fn token_key(engine: &Engine, role: &pb::Role) -> Vec<u8> {
    let secret = match eon_common::node::cluster_secret() {
        Some(s) => s.as_bytes().to_vec(),
        None => engine.auth.mock_key.to_vec(),
    };
    sha2::Sha256::new()
        .chain_update(b"eon rest token\0")
        .chain_update(&secret)
        .chain_update([0])
        .chain_update(role.password.as_bytes())
        .finalize()
        .to_vec()
}

fn token_mac(key: &[u8], payload: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    mac.update(payload);
    mac
}

/// A bearer token for `role`, valid for `seconds`.
pub fn create_token(engine: &Engine, role: &pb::Role, seconds: i64) -> Result<String, Error> {
    if seconds <= 0 {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("a token must last a positive number of seconds, not {seconds}"),
        ));
    }
    use hmac::Mac;
    let expires = eon_common::unix_ms() / 1000 + seconds;
    let nonce: u128 = rand::random();
    let payload = format!("{}\n{expires}\n{nonce:032x}", role.name);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mac = token_mac(&token_key(engine, role), payload.as_bytes()).finalize();
    Ok(format!(
        "{TOKEN_PREFIX}{}.{}",
        b64.encode(payload),
        b64.encode(mac.into_bytes())
    ))
}

/// The role a bearer token was made for, if it is genuine, unexpired, and
/// its role still has the password it had then.
fn token_role(engine: &Engine, token: &str) -> Result<pb::Role, Error> {
    use hmac::Mac;
    let invalid = || {
        Error::user(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "invalid or expired bearer token",
        )
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, mac) = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|t| t.split_once('.'))
        .ok_or_else(invalid)?;
    let payload = b64.decode(payload).map_err(|_| invalid())?;
    let mac = b64.decode(mac).map_err(|_| invalid())?;
    let text = std::str::from_utf8(&payload).map_err(|_| invalid())?;
    let mut parts = text.split('\n');
    let (Some(name), Some(expires)) = (parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let role = engine.cluster.role(name).ok_or_else(invalid)?;
    token_mac(&token_key(engine, &role), &payload)
        .verify_slice(&mac)
        .map_err(|_| invalid())?;
    let expires: i64 = expires.parse().map_err(|_| invalid())?;
    if expires <= eon_common::unix_ms() / 1000 {
        return Err(invalid());
    }
    Ok(role)
}

/// Who an `Authorization: Basic` (or `Bearer`) header says the client is,
/// checked.
async fn basic_user(engine: &Arc<Engine>, header: Option<&HeaderValue>) -> Result<String, Error> {
    let unauthorized = |m: &str| Error::user(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION, m);
    if let Some(token) = header.and_then(|v| v.to_str().ok()).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) {
        // A fresh catalog: a changed password or a dropped role counts now.
        engine.cluster.timestamp().await?;
        let role = token_role(engine, token.trim())?;
        return if role.login {
            Ok(role.name)
        } else {
            Err(unauthorized(&format!(
                "role \"{}\" is not permitted to log in",
                role.name
            )))
        };
    }
    let Some(value) = header else {
        if engine.auth.trust {
            // Trusted and anonymous: the admin, as `eon up --trust` promises.
            return Ok(engine
                .cluster
                .roles()
                .into_iter()
                .find(|r| r.superuser && r.login)
                .map(|r| r.name)
                .ok_or_else(|| unauthorized("no role may log in"))?);
        }
        return Err(unauthorized(
            "authentication required: HTTP basic authentication with a role's name and password, or a bearer token (SELECT eon_create_token())",
        ));
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or_else(|| {
            unauthorized("only HTTP basic authentication and bearer tokens are supported")
        })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unauthorized("malformed basic credentials"))?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("malformed basic credentials"))?;
    // A fresh catalog: roles and passwords changed elsewhere count now.
    engine.cluster.timestamp().await?;
    let role = engine.cluster.role(name);
    if !engine.auth.trust {
        let verifier = role
            .as_ref()
            .map(|r| r.password.clone())
            .unwrap_or_default();
        let key: [u8; 32] = sha2::Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let seen = engine.auth.basic_seen.lock().unwrap().get(&key) == Some(&verifier);
        if !seen {
            let parsed = Verifier::parse(&verifier);
            let ok = match parsed {
                Some(v) => {
                    let password = password.to_string();
                    tokio::task::spawn_blocking(move || v.matches(&password))
                        .await
                        .unwrap_or(false)
                }
                None => false,
            };
            if !ok {
                return Err(password_failed(name));
            }
            let mut seen = engine.auth.basic_seen.lock().unwrap();
            if seen.len() > 10_000 {
                seen.clear();
            }
            seen.insert(key, verifier);
        }
    }
    match role {
        Some(r) if r.login => Ok(r.name),
        Some(r) => Err(unauthorized(&format!(
            "role \"{}\" is not permitted to log in",
            r.name
        ))),
        None => Err(password_failed(name)),
    }
}

/// `eon_create_token([seconds])`: a REST bearer token for `role` (the
/// statement's session's), valid for `seconds` (a day by default).
pub fn create_token_udf(
    engine: Arc<Engine>,
    role: pb::Role,
) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    use datafusion::common::{DataFusionError, ScalarValue};
    use datafusion::logical_expr::{ColumnarValue, Signature, TypeSignature, Volatility};
    let make = move |seconds: i64| {
        create_token(&engine, &role, seconds).map_err(|e| DataFusionError::External(Box::new(e)))
    };
    let f = move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        match args.first() {
            None => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(make(
                TOKEN_TTL_SECONDS,
            )?)))),
            Some(ColumnarValue::Scalar(s)) => {
                let seconds = match s.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(v) => v,
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                    seconds.map(&make).transpose()?,
                )))
            }
            Some(ColumnarValue::Array(a)) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Int64)?;
                let tokens = a
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|s| s.map(&make).transpose())
                    .collect::<datafusion::common::Result<StringArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(tokens)))
            }
        }
    };
    datafusion::logical_expr::ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "eon_create_token",
            Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![]),
                    TypeSignature::Exact(vec![DataType::Int64]),
                ],
                Volatility::Volatile,
            ),
            DataType::Utf8,
            Arc::new(f),
        ),
    )
}
