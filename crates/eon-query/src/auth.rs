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
}

impl ServerParameterProvider for Params {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let mut p = DefaultServerParameterProvider::default().server_parameters(client)?;
        p.insert(
            "server_version".into(),
            format!("{SERVER_VERSION} (eon {})", env!("CARGO_PKG_VERSION")),
        );
        p.insert("DateStyle".into(), "ISO, MDY".into());
        p.insert("TimeZone".into(), "UTC".into());
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
        let (pid, key) = self.pids.generate(client);
        self.cancels.register(pid, key.to_bytes(), &self.session);
        client.set_pid_and_secret_key(pid, key);
        finish_authentication(
            client,
            &Params {
                superuser: role.superuser,
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
                    HeaderValue::from_static("Basic realm=\"eon\", charset=\"UTF-8\""),
                );
            }
            response
        }
    }
}

/// Who an `Authorization: Basic` header says the client is, checked.
async fn basic_user(engine: &Arc<Engine>, header: Option<&HeaderValue>) -> Result<String, Error> {
    let unauthorized = |m: &str| Error::user(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION, m);
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
            "authentication required: HTTP basic authentication with a role's name and password",
        ));
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or_else(|| unauthorized("only HTTP basic authentication is supported"))?;
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
