//! CREATE / ALTER / DROP ROLE (and USER): roles as PostgreSQL has them.
//!
//! A role is a name with attributes — SUPERUSER, LOGIN, CREATEROLE,
//! CREATEDB, INHERIT, CONNECTION LIMIT — and an optional password, kept as
//! its SCRAM-SHA-256 verifier (a password given in the clear is turned into
//! one here, before it leaves the query engine; one given already as a
//! verifier, as pg_dump writes it, is kept as is). `CREATE USER` is
//! `CREATE ROLE … LOGIN`.
//!
//! Who may do what follows PostgreSQL: a superuser may do anything; a role
//! with CREATEROLE may create, change and drop roles that are not
//! superusers; anyone may change their own password. Meta checks what
//! needs the whole catalog (unique names, the bootstrap superuser).
//!
//! As the other DDL, a role statement in a transaction block takes effect
//! at once and is undone by ROLLBACK ([`crate::ddl::DdlUndo::Role`]).

use datafusion::sql::sqlparser::ast::{
    AlterRoleOperation, CreateRole, Expr, ObjectName, Password, RoleOption, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use eon_common::error::sqlstate;
use eon_common::scram::Verifier;
use eon_common::{Error, Result};
use eon_proto::v1 as pb;

use crate::ddl::DdlUndo;
use crate::session::{Output, Session};

/// `CREATE USER …`: `CREATE ROLE …` that may log in unless it says
/// NOLOGIN (sqlparser reads CREATE USER in Snowflake's grammar).
pub fn parse_create_user(
    p: &mut Parser,
) -> std::result::Result<datafusion::sql::sqlparser::ast::Statement, ParserError> {
    let mut role = p.parse_create_role()?;
    role.login.get_or_insert(true);
    Ok(datafusion::sql::sqlparser::ast::Statement::CreateRole(role))
}

/// `ALTER USER …` is `ALTER ROLE …`.
pub fn parse_alter_user(
    p: &mut Parser,
) -> std::result::Result<datafusion::sql::sqlparser::ast::Statement, ParserError> {
    p.parse_alter_role()
}

/// Whether the parser is at `CREATE USER` / `ALTER USER` (consumed if so).
pub fn at_user_statement(p: &mut Parser) -> Option<bool> {
    if p.parse_keywords(&[Keyword::CREATE, Keyword::USER]) {
        Some(true)
    } else if p.parse_keywords(&[Keyword::ALTER, Keyword::USER]) {
        Some(false)
    } else {
        None
    }
}

fn role_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => Ok(part
            .as_ident()
            .map(crate::dml::ident)
            .unwrap_or_else(|| part.to_string())),
        _ => Err(Error::user(
            sqlstate::INVALID_NAME,
            format!("role name {name} must not be qualified"),
        )),
    }
}

fn denied(message: impl Into<String>) -> Error {
    Error::user(sqlstate::INSUFFICIENT_PRIVILEGE, message)
}

/// A password as stored: a verifier given as is, a clear one made into
/// one, NULL as none.
fn password_verifier(password: &Password) -> Result<String> {
    match password {
        Password::NullPassword => Ok(String::new()),
        Password::Password(expr) => {
            let text = match expr {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => s.clone(),
                    Value::Null => return Ok(String::new()),
                    _ => return Err(Error::syntax("a password must be a string literal")),
                },
                _ => return Err(Error::syntax("a password must be a string literal")),
            };
            if text.starts_with("SCRAM-SHA-256$") {
                return Verifier::parse(&text)
                    .map(|v| v.to_string())
                    .ok_or_else(|| {
                        Error::user(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            "malformed SCRAM-SHA-256 verifier",
                        )
                    });
            }
            if text.starts_with("md5") && text.len() == 35 {
                return Err(Error::unsupported(
                    "MD5 password hashes are not supported; give the password or its SCRAM-SHA-256 verifier",
                ));
            }
            if text.is_empty() {
                // PostgreSQL: an empty password is no password.
                return Ok(String::new());
            }
            Ok(Verifier::generate(&text).to_string())
        }
    }
}

fn int_option(expr: &Expr, what: &str) -> Result<i32> {
    let text = match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.clone(),
            _ => String::new(),
        },
        Expr::UnaryOp { op, expr } if op.to_string() == "-" => format!("-{expr}"),
        _ => String::new(),
    };
    text.parse().map_err(|_| {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{what} must be an integer"),
        )
    })
}

/// Apply role options to `role`.
fn apply(role: &mut pb::Role, options: &[RoleOption]) -> Result<()> {
    for o in options {
        match o {
            RoleOption::SuperUser(b) => role.superuser = *b,
            RoleOption::Login(b) => role.login = *b,
            RoleOption::CreateRole(b) => role.create_role = *b,
            RoleOption::CreateDB(b) => role.create_db = *b,
            RoleOption::Inherit(b) => role.inherit = *b,
            RoleOption::Password(p) => role.password = password_verifier(p)?,
            RoleOption::ConnectionLimit(e) => {
                role.connection_limit = int_option(e, "CONNECTION LIMIT")?
            }
            // Accepted and ignored: eon has no replication role, no row
            // level security and no password expiry yet.
            RoleOption::Replication(_) | RoleOption::BypassRLS(_) | RoleOption::ValidUntil(_) => {}
        }
    }
    Ok(())
}

/// The options of a CREATE ROLE statement, as ALTER ROLE's list.
fn create_options(c: &CreateRole) -> Vec<RoleOption> {
    let mut o = Vec::new();
    let flags = [
        (c.superuser, RoleOption::SuperUser as fn(bool) -> RoleOption),
        (c.login, RoleOption::Login),
        (c.create_role, RoleOption::CreateRole),
        (c.create_db, RoleOption::CreateDB),
        (c.inherit, RoleOption::Inherit),
        (c.replication, RoleOption::Replication),
        (c.bypassrls, RoleOption::BypassRLS),
    ];
    for (value, make) in flags {
        if let Some(b) = value {
            o.push(make(b));
        }
    }
    if let Some(p) = &c.password {
        o.push(RoleOption::Password(p.clone()));
    }
    if let Some(e) = &c.connection_limit {
        o.push(RoleOption::ConnectionLimit(e.clone()));
    }
    o
}

/// Whether `actor` may create or change a role that is (or is to become)
/// `target`.
fn may_manage(actor: &pb::Role, target: &pb::Role) -> bool {
    actor.superuser || (actor.create_role && !target.superuser)
}

pub async fn create_role(session: &Session, c: &CreateRole) -> Result<Output> {
    if !c.in_role.is_empty()
        || !c.in_group.is_empty()
        || !c.role.is_empty()
        || !c.user.is_empty()
        || !c.admin.is_empty()
    {
        return Err(Error::unsupported(
            "role membership (IN ROLE, ROLE, ADMIN) is not supported yet",
        ));
    }
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let actor = session.actor();
    let options = create_options(c);
    for name in &c.names {
        let mut role = pb::Role {
            name: role_name(name)?,
            inherit: true,
            connection_limit: -1,
            ..Default::default()
        };
        apply(&mut role, &options)?;
        if !may_manage(&actor, &role) {
            return Err(denied(if role.superuser {
                "permission denied to create role: only superusers can create superusers"
                    .to_string()
            } else {
                "permission denied to create role: it needs CREATEROLE".to_string()
            }));
        }
        let r = cluster
            .meta()
            .create_role(pb::CreateRoleRequest {
                role: Some(role),
                if_not_exists: c.if_not_exists,
            })
            .await
            .map_err(Error::from_status)?
            .into_inner();
        if r.created {
            session.note_ddl(DdlUndo::Role {
                before: None,
                after: r.role,
            });
        }
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("CREATE ROLE".into()))
}

pub async fn alter_role(
    session: &Session,
    name: &datafusion::sql::sqlparser::ast::Ident,
    operation: &AlterRoleOperation,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let actor = session.actor();
    let name = crate::dml::ident(name);
    let before = cluster.role(&name).ok_or_else(|| {
        Error::user(
            sqlstate::UNDEFINED_OBJECT,
            format!("role \"{name}\" does not exist"),
        )
    })?;
    let mut after = before.clone();
    match operation {
        AlterRoleOperation::RenameRole { role_name } => {
            if before.name == actor.name {
                return Err(Error::unsupported("session user cannot be renamed"));
            }
            if !may_manage(&actor, &before) {
                return Err(denied("permission denied to rename role"));
            }
            after.name = crate::dml::ident(role_name);
        }
        AlterRoleOperation::WithOptions { options } => {
            apply(&mut after, options)?;
            // Anyone may change their own password, and nothing else.
            let own_password_only = before.name == actor.name && {
                let mut only_password = before.clone();
                only_password.password = after.password.clone();
                only_password == after
            };
            if !own_password_only && !(may_manage(&actor, &before) && may_manage(&actor, &after)) {
                return Err(denied(format!(
                    "permission denied to alter role \"{name}\""
                )));
            }
        }
        _ => {
            return Err(Error::unsupported(
                "ALTER ROLE … SET/RESET and membership are not supported yet",
            ));
        }
    }
    let r = cluster
        .meta()
        .alter_role(pb::AlterRoleRequest {
            name: before.name.clone(),
            role: Some(after),
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    session.note_ddl(DdlUndo::Role {
        before: Some(before),
        after: r.role,
    });
    cluster.refresh_catalog().await?;
    Ok(Output::Command("ALTER ROLE".into()))
}

pub async fn drop_roles(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let actor = session.actor();
    for n in names {
        let name = role_name(n)?;
        let Some(role) = cluster.role(&name) else {
            if if_exists {
                continue;
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("role \"{name}\" does not exist"),
            ));
        };
        if role.name == actor.name {
            return Err(Error::user(
                sqlstate::OBJECT_IN_USE,
                "current user cannot be dropped",
            ));
        }
        if !may_manage(&actor, &role) {
            return Err(denied(format!("permission denied to drop role \"{name}\"")));
        }
        let r = cluster
            .meta()
            .drop_role(pb::DropRoleRequest {
                name: name.clone(),
                if_exists,
            })
            .await
            .map_err(Error::from_status)?
            .into_inner();
        if let Some(dropped) = r.role {
            session.note_ddl(DdlUndo::Role {
                before: Some(dropped),
                after: None,
            });
        }
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("DROP ROLE".into()))
}

/// Undo one role statement of a rolled back block.
pub async fn undo(
    cluster: &crate::cluster::Cluster,
    before: &Option<pb::Role>,
    after: &Option<pb::Role>,
) -> std::result::Result<(), tonic::Status> {
    let mut meta = cluster.meta();
    match (before, after) {
        (None, Some(created)) => {
            meta.drop_role(pb::DropRoleRequest {
                name: created.name.clone(),
                if_exists: true,
            })
            .await?;
        }
        (Some(dropped), None) => {
            meta.create_role(pb::CreateRoleRequest {
                role: Some(dropped.clone()),
                if_not_exists: true,
            })
            .await?;
        }
        (Some(old), Some(new)) => {
            meta.alter_role(pb::AlterRoleRequest {
                name: new.name.clone(),
                role: Some(old.clone()),
            })
            .await?;
        }
        (None, None) => {}
    }
    Ok(())
}
