//! Schemas: namespaces of tables, views, indexes and sequences.
//!
//! A relation's name is `schema.name`. Three kinds of schema exist: `public`
//! (always there), the ones `CREATE SCHEMA` makes (kept by meta as
//! `pb::Schema`, with their owner), and each session's own `pg_temp_N` for
//! its temporary tables (implied by the tables in it, see
//! [`Session::relation`]).
//!
//! An unqualified name is looked up as PostgreSQL does: in the session's
//! temporary schema first (if it has made one), then along `search_path`
//! (default `"$user", public`; `$user` is the schema named like the
//! session's role, if there is one; schemas that do not exist are skipped).
//! A new relation with an unqualified name goes into the first schema of
//! the path that exists. DataFusion learns the path as its default schema,
//! spelled [`PATH_PREFIX`]`s1,s2,…`, which [`crate::provider::EonCatalog`]
//! turns into a schema provider that looks through them in order.
//!
//! `DROP SCHEMA … CASCADE` drops the schema's views, tables (with their
//! indexes and owned sequences) and sequences first; without CASCADE a
//! schema that holds anything is refused (2BP01), as meta checks.

use datafusion::sql::sqlparser::ast::{ObjectName, SchemaName};
use eon_common::error::sqlstate;
use eon_common::{Error, Result};
use eon_proto::v1 as pb;

use crate::ddl::DdlUndo;
use crate::dml::ident;
use crate::session::{Output, Session};

/// How a search path is written as DataFusion's default schema name.
pub const PATH_PREFIX: &str = "$path:";

/// The schemas of a `search_path` setting that exist, in order, for a
/// session of role `user`.
pub fn search_path(setting: &str, user: &str, exists: impl Fn(&str) -> bool) -> Vec<String> {
    let mut path = Vec::new();
    for part in setting.split(',') {
        let part = part.trim();
        let name = match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some("$user") => user.to_string(),
            Some(quoted) => quoted.replace("\"\"", "\""),
            None if part == "$user" => user.to_string(),
            None => part.to_lowercase(),
        };
        if !name.is_empty() && exists(&name) && !path.contains(&name) {
            path.push(name);
        }
    }
    path
}

fn schema_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(ident)
            .ok_or_else(|| Error::syntax(format!("improper schema name: {name}"))),
        _ => Err(Error::syntax(format!(
            "improper qualified name (too many dotted names): {name}"
        ))),
    }
}

/// CREATE SCHEMA [IF NOT EXISTS] name [AUTHORIZATION role] (or
/// `AUTHORIZATION role` alone: the schema is named after the role).
pub async fn create_schema(
    session: &Session,
    name: &SchemaName,
    if_not_exists: bool,
) -> Result<Output> {
    let (name, owner) = match name {
        SchemaName::Simple(n) => (schema_name(n)?, session.user()),
        SchemaName::UnnamedAuthorization(role) => (ident(role), ident(role)),
        SchemaName::NamedAuthorization(n, role) => (schema_name(n)?, ident(role)),
    };
    let cluster = session.cluster();
    if owner != session.user() {
        if cluster.role(&owner).is_none() {
            return Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("role \"{owner}\" does not exist"),
            ));
        }
        if !session.actor().superuser {
            return Err(Error::user(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("must be able to SET ROLE \"{owner}\""),
            ));
        }
    }
    // (Meta refuses `pg_…` names, 42939.)
    let r = cluster
        .meta()
        .create_schema(pb::CreateSchemaRequest {
            schema: Some(pb::Schema {
                id: 0,
                name: name.clone(),
                owner,
            }),
            if_not_exists,
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    if !r.created {
        session.notice(
            "NOTICE",
            "42P06",
            format!("schema \"{name}\" already exists, skipping"),
        );
    } else if session.in_transaction() {
        session.note_ddl(DdlUndo::Schema {
            created: r.schema,
            dropped: None,
        });
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("CREATE SCHEMA".into()))
}

/// DROP SCHEMA [IF EXISTS] names [CASCADE].
pub async fn drop_schemas(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    for n in names {
        let name = schema_name(n)?;
        let Some(schema) = cluster.schema(&name) else {
            if if_exists {
                session.notice(
                    "NOTICE",
                    "00000",
                    format!("schema \"{name}\" does not exist, skipping"),
                );
                continue;
            }
            if name == "public" {
                return Err(Error::unsupported("DROP SCHEMA public is not supported"));
            }
            return Err(Error::user(
                sqlstate::INVALID_SCHEMA_NAME,
                format!("schema \"{name}\" does not exist"),
            ));
        };
        if schema.owner != session.user() && !session.actor().superuser {
            return Err(Error::user(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("must be owner of schema {name}"),
            ));
        }
        if cascade {
            if session.in_transaction() {
                return Err(Error::user(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    "DROP SCHEMA … CASCADE cannot run inside a transaction block",
                ));
            }
            crate::ddl::drop_schema_tables(cluster, &name).await;
            for q in cluster.sequences().into_iter().filter(|q| q.schema == name) {
                cluster
                    .meta()
                    .drop_sequence(pb::DropSequenceRequest {
                        schema: q.schema,
                        name: q.name,
                        if_exists: true,
                    })
                    .await
                    .map_err(Error::from_status)?;
            }
        }
        let r = cluster
            .meta()
            .drop_schema(pb::DropSchemaRequest {
                name: name.clone(),
                if_exists,
            })
            .await
            .map_err(Error::from_status)?
            .into_inner();
        if session.in_transaction() {
            session.note_ddl(DdlUndo::Schema {
                created: None,
                dropped: r.schema,
            });
        }
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("DROP SCHEMA".into()))
}

/// Undo a block's CREATE or DROP SCHEMA.
pub(crate) async fn undo(
    cluster: &crate::cluster::Cluster,
    created: &Option<pb::Schema>,
    dropped: &Option<pb::Schema>,
) -> std::result::Result<(), tonic::Status> {
    if let Some(s) = created {
        cluster
            .meta()
            .drop_schema(pb::DropSchemaRequest {
                name: s.name.clone(),
                if_exists: true,
            })
            .await?;
    }
    if let Some(s) = dropped {
        cluster
            .meta()
            .create_schema(pb::CreateSchemaRequest {
                schema: Some(s.clone()),
                if_not_exists: true,
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_keeps_existing_schemas_in_order() {
        let exists = |s: &str| ["public", "app", "alice", "Mixed"].contains(&s);
        assert_eq!(
            search_path("\"$user\", public", "alice", exists),
            ["alice", "public"]
        );
        assert_eq!(search_path("\"$user\", public", "bob", exists), ["public"]);
        assert_eq!(
            search_path("APP, nope, public, app", "bob", exists),
            ["app", "public"]
        );
        assert_eq!(search_path("\"Mixed\"", "bob", exists), ["Mixed"]);
        assert!(search_path("", "bob", exists).is_empty());
    }
}
