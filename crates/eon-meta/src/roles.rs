//! Roles: who may log in, with which password verifier and attributes.
//!
//! Meta keeps them with the catalog (each change bumps the catalog version,
//! so every query engine sees it at its next statement) and checks what
//! only it can: names are unique, the bootstrap superuser — made at the
//! first start from the admin password file — is never dropped nor demoted.
//! Who may create, change or drop a role is the query engine's check
//! (it knows the session's user).

use eon_common::Error;
use eon_common::error::sqlstate;
use eon_proto::v1 as pb;

use crate::{Inner, MetaService};

fn undefined(name: &str) -> Error {
    Error::user(
        sqlstate::UNDEFINED_OBJECT,
        format!("role \"{name}\" does not exist"),
    )
}

fn duplicate(name: &str) -> Error {
    Error::user(
        sqlstate::DUPLICATE_OBJECT,
        format!("role \"{name}\" already exists"),
    )
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::user(
            sqlstate::INVALID_NAME,
            "a role name cannot be empty",
        ));
    }
    if name.starts_with("pg_") {
        return Err(Error::user(
            sqlstate::RESERVED_NAME,
            format!("role name \"{name}\" is reserved: the prefix \"pg_\" is for system roles"),
        ));
    }
    Ok(())
}

impl MetaService {
    fn role_pos(inner: &Inner, name: &str) -> Option<usize> {
        inner.persisted.roles.iter().position(|r| r.name == name)
    }

    pub(crate) fn create_role(
        &self,
        req: pb::CreateRoleRequest,
    ) -> Result<pb::CreateRoleResponse, Error> {
        let mut role = req
            .role
            .ok_or_else(|| Error::internal("CreateRole without a role"))?;
        check_name(&role.name)?;
        let mut inner = self.inner.lock().unwrap();
        if let Some(pos) = Self::role_pos(&inner, &role.name) {
            if req.if_not_exists {
                return Ok(pb::CreateRoleResponse {
                    role: Some(inner.persisted.roles[pos].clone()),
                    created: false,
                });
            }
            return Err(duplicate(&role.name));
        }
        role.id = inner.new_catalog_id();
        inner.persisted.roles.push(role.clone());
        self.bump(&mut inner)?;
        Ok(pb::CreateRoleResponse {
            role: Some(role),
            created: true,
        })
    }

    pub(crate) fn alter_role(
        &self,
        req: pb::AlterRoleRequest,
    ) -> Result<pb::AlterRoleResponse, Error> {
        let mut role = req
            .role
            .ok_or_else(|| Error::internal("AlterRole without a role"))?;
        let mut inner = self.inner.lock().unwrap();
        let pos = Self::role_pos(&inner, &req.name).ok_or_else(|| undefined(&req.name))?;
        if role.name != req.name {
            check_name(&role.name)?;
            if Self::role_pos(&inner, &role.name).is_some() {
                return Err(duplicate(&role.name));
            }
        }
        let old = &inner.persisted.roles[pos];
        role.id = old.id;
        if old.id == inner.persisted.bootstrap_role && !role.superuser {
            return Err(Error::user(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "permission denied to alter role \"{}\": the bootstrap superuser must stay a superuser",
                    req.name
                ),
            ));
        }
        if role.name != req.name {
            // Ownership and grants follow the role to its new name.
            for t in &mut inner.persisted.tables {
                if t.owner == req.name {
                    t.owner = role.name.clone();
                }
                for g in &mut t.grants {
                    if g.role == req.name {
                        g.role = role.name.clone();
                    }
                }
            }
        }
        inner.persisted.roles[pos] = role.clone();
        self.bump(&mut inner)?;
        Ok(pb::AlterRoleResponse { role: Some(role) })
    }

    pub(crate) fn drop_role(
        &self,
        req: pb::DropRoleRequest,
    ) -> Result<pb::DropRoleResponse, Error> {
        let mut inner = self.inner.lock().unwrap();
        let Some(pos) = Self::role_pos(&inner, &req.name) else {
            if req.if_exists {
                return Ok(pb::DropRoleResponse { role: None });
            }
            return Err(undefined(&req.name));
        };
        if inner.persisted.roles[pos].id == inner.persisted.bootstrap_role {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop role \"{}\" because it is required by the database system",
                    req.name
                ),
            ));
        }
        // As PostgreSQL: a role that owns tables or holds privileges on
        // them stays until those are dropped or revoked.
        let depends: Vec<String> = inner
            .persisted
            .tables
            .iter()
            .filter_map(|t| {
                if t.owner == req.name {
                    Some(format!("owner of table {}", t.name))
                } else if t.grants.iter().any(|g| g.role == req.name) {
                    Some(format!("privileges for table {}", t.name))
                } else {
                    None
                }
            })
            .collect();
        if !depends.is_empty() {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "role \"{}\" cannot be dropped because some objects depend on it",
                    req.name
                ),
            )
            .with_detail(depends.join("\n")));
        }
        let role = inner.persisted.roles.remove(pos);
        self.bump(&mut inner)?;
        Ok(pb::DropRoleResponse { role: Some(role) })
    }

    pub(crate) fn set_table_grants(
        &self,
        req: pb::SetTableGrantsRequest,
    ) -> Result<pb::SetTableGrantsResponse, Error> {
        let schema = if req.schema.is_empty() {
            "public"
        } else {
            &req.schema
        };
        let mut inner = self.inner.lock().unwrap();
        for g in &req.grants {
            if g.role != "public" && Self::role_pos(&inner, &g.role).is_none() {
                return Err(undefined(&g.role));
            }
        }
        let Some(t) = inner
            .persisted
            .tables
            .iter_mut()
            .find(|t| t.schema == schema && t.name == req.name)
        else {
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", req.name),
            ));
        };
        t.grants = req.grants;
        let table = t.clone();
        self.bump(&mut inner)?;
        Ok(pb::SetTableGrantsResponse {
            table: Some(table),
            catalog_version: inner.persisted.catalog_version,
        })
    }

    /// The admin `eon up` prints a URL for: at the first start (no roles
    /// yet) `name` becomes the bootstrap superuser, logging in with
    /// `password`; at every later start its password is set back to
    /// `password` if it was changed, so the printed URL always logs in
    /// (the password file in the data dir is the admin password's truth).
    pub fn ensure_admin(&self, name: &str, password: &str) -> Result<(), Error> {
        let mut inner = self.inner.lock().unwrap();
        let bootstrap = inner.persisted.bootstrap_role;
        if let Some(admin) = inner.persisted.roles.iter_mut().find(|r| r.id == bootstrap) {
            if eon_common::scram::verifies(&admin.password, password) {
                return Ok(());
            }
            admin.password = eon_common::scram::Verifier::generate(password).to_string();
            tracing::info!(role = %admin.name, "admin password set from the password file");
        } else {
            let id = inner.new_catalog_id();
            inner.persisted.roles.retain(|r| r.name != name);
            inner.persisted.roles.push(pb::Role {
                id,
                name: name.to_string(),
                superuser: true,
                login: true,
                create_role: true,
                create_db: true,
                inherit: true,
                password: eon_common::scram::Verifier::generate(password).to_string(),
                connection_limit: -1,
            });
            inner.persisted.bootstrap_role = id;
            tracing::info!(role = name, "bootstrap superuser created");
        }
        self.bump(&mut inner)
    }
}
