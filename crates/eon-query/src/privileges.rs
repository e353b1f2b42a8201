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
//! `pg_get_userbyid`) and its grants (`relacl`, see [`acl`]);
//! `has_table_privilege` answers from them ([`has_table_privilege`]).
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

/// `has_table_privilege([role,] table, privilege)`: whether the role (the
/// session's unless named) holds the privilege — any of a comma-separated
/// list, `WITH GRANT OPTION` ignored — on the table, named (`'orders'`,
/// `'public.orders'`) or by pg_class oid. Tables of pg_catalog and
/// information_schema are readable by everyone, as in PostgreSQL. An
/// unknown table is 42P01, an unknown role 42704, an unknown privilege
/// 22023.
pub fn has_table_privilege(
    engine: std::sync::Arc<crate::session::Engine>,
    actor: pb::Role,
) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::{DataFusionError, ScalarValue};
    use datafusion::logical_expr::{ColumnarValue, Signature, TypeSignature, Volatility};
    let external = |e: Error| DataFusionError::External(Box::new(e));
    let f = move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let (role, table, privilege) = match arrays.as_slice() {
            [t, p] => (None, t, p),
            [r, t, p] => (Some(r), t, p),
            _ => unreachable!("the signature takes 2 or 3 arguments"),
        };
        let text = |a: &ArrayRef| datafusion::arrow::compute::cast(a, &DataType::Utf8);
        let roles = role.map(text).transpose()?;
        let by_oid = table.data_type().is_integer();
        let tables = text(table)?;
        let privileges = text(privilege)?;
        let mut out = BooleanBuilder::new();
        for i in 0..tables.len() {
            let role_name = roles
                .as_ref()
                .map(|r| r.as_string::<i32>())
                .map(|r| (!r.is_null(i)).then(|| r.value(i).to_string()));
            let (t, p) = (tables.as_string::<i32>(), privileges.as_string::<i32>());
            if t.is_null(i) || p.is_null(i) || matches!(role_name, Some(None)) {
                out.append_null();
                continue;
            }
            let who = match role_name.flatten() {
                None => actor.clone(),
                Some(name) => named_role(&engine, &name).map_err(external)?,
            };
            let wanted = privilege_list(p.value(i)).map_err(external)?;
            let table = if by_oid {
                t.value(i)
                    .parse()
                    .ok()
                    .and_then(|oid| engine.definitions.table(oid))
            } else {
                named_table(&engine, t.value(i)).map_err(external)?
            };
            out.append_value(match table {
                // Not one of eon's tables: the catalog's, readable by all.
                None => wanted.iter().any(|p| p == "SELECT") || who.superuser,
                Some(table) => wanted.iter().any(|p| allowed(&who, &table, p)),
            });
        }
        let out: ArrayRef = std::sync::Arc::new(out.finish());
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    };
    datafusion::logical_expr::ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "has_table_privilege",
            Signature::one_of(
                vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                Volatility::Stable,
            ),
            DataType::Boolean,
            std::sync::Arc::new(f),
        ),
    )
}

/// A role named in a privilege function (or its oid, as pg_roles shows it).
fn named_role(engine: &crate::session::Engine, name: &str) -> Result<pb::Role> {
    let roles = engine.cluster.roles();
    roles
        .iter()
        .find(|r| r.name == name)
        .or_else(|| {
            let oid: i64 = name.parse().ok()?;
            roles
                .iter()
                .find(|r| crate::pgcatalog::role_oid(r) as i64 == oid)
        })
        .cloned()
        .ok_or_else(|| {
            Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("role \"{name}\" does not exist"),
            )
        })
}

/// `'SELECT, INSERT WITH GRANT OPTION'` → `["SELECT", "INSERT"]`, each
/// checked.
fn privilege_list(text: &str) -> Result<Vec<String>> {
    text.split(',')
        .map(|p| {
            let p = p.trim().to_ascii_uppercase();
            let p = p
                .strip_suffix(" WITH GRANT OPTION")
                .unwrap_or(&p)
                .trim()
                .to_string();
            if TABLE_PRIVILEGES.contains(&p.as_str()) {
                Ok(p)
            } else {
                Err(Error::user(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("unrecognized privilege type: \"{}\"", text.trim()),
                ))
            }
        })
        .collect()
}

/// A table named as `regclass` text: `name` or `schema.name`, quoted parts
/// as written, unquoted ones folded to lower case. None: a catalog table.
fn named_table(
    engine: &crate::session::Engine,
    text: &str,
) -> Result<Option<std::sync::Arc<TableDef>>> {
    let part = |s: &str| {
        let s = s.trim();
        match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => s.to_lowercase(),
        }
    };
    let (schema, name) = match text.split_once('.') {
        Some((s, n)) => (Some(part(s)), part(n)),
        None => (None, part(text)),
    };
    let catalog = ["pg_catalog", "information_schema"];
    match schema.as_deref() {
        Some(s) if catalog.contains(&s) => return Ok(None),
        Some(s) => {
            if let Some(t) = engine.cluster.table(s, &name) {
                return Ok(Some(t));
            }
        }
        None => {
            if let Some(t) = engine.cluster.table("public", &name) {
                return Ok(Some(t));
            }
            if name.starts_with("pg_") {
                return Ok(None);
            }
        }
    }
    Err(Error::user(
        sqlstate::UNDEFINED_TABLE,
        format!("relation \"{}\" does not exist", text.trim()),
    ))
}
