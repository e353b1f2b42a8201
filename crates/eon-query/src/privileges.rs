//! Table privileges: GRANT, REVOKE, and the checks every statement passes.
//!
//! As in PostgreSQL, a table belongs to the role that created it; its
//! owner and superusers may do anything with it, anyone else what was
//! granted to them or to `PUBLIC`: SELECT to read it (in a query, a
//! subquery, COPY TO, a REST GET), INSERT, UPDATE, DELETE and TRUNCATE to
//! change it; only its owner may ALTER or DROP it and GRANT on it. A
//! refusal is 42501 "permission denied for table t" on the wire and 403
//! over REST, where the same roles and checks apply.
//!
//! pg_class shows a table's owner (`relowner`, named by
//! `pg_get_userbyid`) and its grants (`relacl`, see [`acl`]).
//!
//! The grants live in the table's definition in meta's catalog
//! (`Table.grants`, replaced whole by `Meta.SetTableGrants`), so every
//! query engine sees a GRANT at its next statement. Reads are checked
//! where a table is scanned ([`crate::provider::EonTable`]), for the role
//! in the statement's [`Actor`]; lookups eon makes on its own behalf
//! (foreign key checks, a table's rewrite) run without one, as PostgreSQL
//! runs its referential checks as the table's owner.

use std::collections::BTreeSet;

use datafusion::sql::sqlparser::ast::{
    Action, GrantObjects, Grantee, GranteeName, GranteesType, Privileges,
};
use eon_common::error::sqlstate;
use eon_common::{Error, Result, TableDef};
use eon_proto::v1 as pb;

use crate::ddl::DdlUndo;
use crate::session::{Output, Session};

/// The grantee every role belongs to.
pub const PUBLIC: &str = "public";

/// Table privileges eon knows, in PostgreSQL's order (`arwdDxt`).
const TABLE_PRIVILEGES: [&str; 7] = [
    "INSERT",
    "SELECT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

/// Whose privileges a statement's reads are checked against (a session
/// config extension; none for eon's own lookups).
#[derive(Debug, Clone)]
pub struct Actor(pub Option<pb::Role>);

/// Whether `actor` holds `privilege` on `table`.
pub fn allowed(actor: &pb::Role, table: &TableDef, privilege: &str) -> bool {
    let t = table.proto();
    actor.superuser
        || t.owner == actor.name
        || t.grants.iter().any(|g| {
            (g.role == actor.name || g.role == PUBLIC)
                && g.privileges.iter().any(|p| p == privilege)
        })
}

/// `privilege` on `table`, or 42501.
pub fn require(actor: &pb::Role, table: &TableDef, privilege: &str) -> Result<()> {
    if allowed(actor, table, privilege) {
        Ok(())
    } else {
        Err(Error::user(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for table {}", table.name),
        ))
    }
}

/// Ownership of `table` (ALTER, DROP, GRANT), or 42501.
pub fn require_owner(actor: &pb::Role, table: &TableDef) -> Result<()> {
    if actor.superuser || table.proto().owner == actor.name {
        Ok(())
    } else {
        Err(Error::user(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {}", table.name),
        ))
    }
}

fn privilege_names(p: &Privileges) -> Result<Vec<&'static str>> {
    match p {
        Privileges::All { .. } => Ok(TABLE_PRIVILEGES.to_vec()),
        Privileges::Actions(actions) => actions
            .iter()
            .map(|a| {
                let name = match a {
                    Action::Select { columns: None } => "SELECT",
                    Action::Insert { columns: None } => "INSERT",
                    Action::Update { columns: None } => "UPDATE",
                    Action::Delete => "DELETE",
                    Action::Truncate => "TRUNCATE",
                    Action::References { columns: None } => "REFERENCES",
                    Action::Trigger => "TRIGGER",
                    Action::Select { .. }
                    | Action::Insert { .. }
                    | Action::Update { .. }
                    | Action::References { .. } => {
                        return Err(Error::unsupported(
                            "column privileges are not supported yet",
                        ));
                    }
                    other => {
                        return Err(Error::user(
                            sqlstate::INVALID_GRANT_OPERATION,
                            format!("invalid privilege type {other} for table"),
                        ));
                    }
                };
                Ok(name)
            })
            .collect(),
    }
}

fn grantee_names(session: &Session, grantees: &[Grantee]) -> Result<Vec<String>> {
    grantees
        .iter()
        .map(|g| {
            let name = match (&g.grantee_type, &g.name) {
                (GranteesType::Public, _) => return Ok(PUBLIC.to_string()),
                (_, Some(GranteeName::ObjectName(n))) => match n.0.as_slice() {
                    [part] => part
                        .as_ident()
                        .map(crate::dml::ident)
                        .unwrap_or_else(|| part.to_string()),
                    _ => return Err(Error::syntax(format!("invalid role name {n}"))),
                },
                _ => return Err(Error::unsupported(format!("grantee {g}"))),
            };
            if name == PUBLIC {
                return Ok(name);
            }
            match session.cluster().role(&name) {
                Some(_) => Ok(name),
                None => Err(Error::user(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("role \"{name}\" does not exist"),
                )),
            }
        })
        .collect()
}

/// GRANT (`revoke` false) or REVOKE privileges on tables.
pub async fn grant_or_revoke(
    session: &Session,
    privileges: &Privileges,
    objects: Option<&GrantObjects>,
    grantees: &[Grantee],
    revoke: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let actor = session.actor();
    let names = match objects {
        Some(GrantObjects::Tables(names)) => names.clone(),
        _ => {
            return Err(Error::unsupported(
                "GRANT and REVOKE on tables only (ON [TABLE] name, …)",
            ));
        }
    };
    let privileges = privilege_names(privileges)?;
    let grantees = grantee_names(session, grantees)?;
    for name in &names {
        let table = crate::dml::resolve_table(session, name)?;
        require_owner(&actor, &table)?;
        let before = table.proto().grants.clone();
        let mut grants: Vec<pb::TableGrant> = before.clone();
        for grantee in &grantees {
            let current: BTreeSet<String> = grants
                .iter()
                .filter(|g| &g.role == grantee)
                .flat_map(|g| g.privileges.iter().cloned())
                .collect();
            let mut next = current.clone();
            for p in &privileges {
                if revoke {
                    next.remove(*p);
                } else {
                    next.insert(p.to_string());
                }
            }
            grants.retain(|g| &g.role != grantee);
            if !next.is_empty() {
                // In PostgreSQL's order, so that aclitems read the same.
                let ordered = TABLE_PRIVILEGES
                    .iter()
                    .filter(|p| next.contains(**p))
                    .map(|p| p.to_string())
                    .collect();
                grants.push(pb::TableGrant {
                    role: grantee.clone(),
                    privileges: ordered,
                });
            }
        }
        set_grants(cluster, &table, grants).await?;
        session.note_ddl(DdlUndo::Grants {
            schema: table.schema.clone(),
            name: table.name.clone(),
            grants: before,
        });
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command(
        if revoke { "REVOKE" } else { "GRANT" }.into(),
    ))
}

/// Replace a table's grants in meta.
pub async fn set_grants(
    cluster: &crate::cluster::Cluster,
    table: &TableDef,
    grants: Vec<pb::TableGrant>,
) -> Result<()> {
    cluster
        .meta()
        .set_table_grants(pb::SetTableGrantsRequest {
            schema: table.schema.clone(),
            name: table.name.clone(),
            grants,
        })
        .await
        .map_err(Error::from_status)?;
    Ok(())
}

/// A table's ACL as PostgreSQL prints `relacl` (`owner=arwdDxt/owner`,
/// `role=r/owner`, `=r/owner` for PUBLIC); none when nothing was granted
/// (the owner's implicit rights), as in PostgreSQL.
pub fn acl(table: &TableDef) -> Option<Vec<String>> {
    let t = table.proto();
    if t.grants.is_empty() {
        return None;
    }
    let letters = |privileges: &[String]| -> String {
        TABLE_PRIVILEGES
            .iter()
            .zip(['a', 'r', 'w', 'd', 'D', 'x', 't'])
            .filter(|(p, _)| privileges.iter().any(|q| q == *p))
            .map(|(_, c)| c)
            .collect()
    };
    let owner = &t.owner;
    let mut items = vec![format!("{owner}=arwdDxt/{owner}")];
    for g in &t.grants {
        let who = if g.role == PUBLIC { "" } else { &g.role };
        items.push(format!("{who}={}/{owner}", letters(&g.privileges)));
    }
    Some(items)
}
