//! Enum types (`CREATE TYPE name AS ENUM (labels)`).
//!
//! A type lives in a schema beside the relations — PostgreSQL gives every
//! table and view a row type of its name, so a type cannot take a table's
//! name nor a table a type's. Its id is its PostgreSQL type oid (numbered
//! from [`ENUM_OID_BASE`], above any oid PostgreSQL or the catalog tables
//! use). Each column of an enum type carries a copy of the type (labels in
//! order) so that storage and the query engines need nothing else to read
//! it; meta keeps those copies current: a change of the type is written
//! into every column that uses it, and a table created or updated by a
//! query engine that knew an older definition gets the current one. A type
//! used by a column cannot be dropped.

use eon_common::Error;
use eon_common::error::sqlstate;
use eon_common::types::ENUM_OID_BASE;
use eon_proto::v1 as pb;

use crate::{Inner, MetaService, schema_or_public};

/// PostgreSQL's NAMEDATALEN - 1: the longest label.
const MAX_LABEL_BYTES: usize = 63;

fn undefined(name: &str) -> Error {
    Error::user(
        sqlstate::UNDEFINED_OBJECT,
        format!("type \"{name}\" does not exist"),
    )
}

fn duplicate(name: &str) -> Error {
    Error::user(
        sqlstate::DUPLICATE_OBJECT,
        format!("type \"{name}\" already exists"),
    )
}

fn check_label(label: &str) -> Result<(), Error> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(Error::user(
            sqlstate::INVALID_NAME,
            format!("invalid enum label \"{label}\""),
        )
        .with_detail(format!("Labels must be {MAX_LABEL_BYTES} bytes or less.")));
    }
    Ok(())
}

impl MetaService {
    fn type_pos(inner: &Inner, schema: &str, name: &str) -> Option<usize> {
        inner
            .persisted
            .types
            .iter()
            .position(|t| t.schema == schema && t.name == name)
    }

    /// No enum type has this name (a table or view of this name would have
    /// a row type of this name).
    pub(crate) fn check_type_name(inner: &Inner, schema: &str, name: &str) -> Result<(), Error> {
        if Self::type_pos(inner, schema, name).is_some() {
            return Err(duplicate(name));
        }
        Ok(())
    }

    /// No table or view has this name (each has a row type of its name).
    fn check_relations_leave_name(inner: &Inner, schema: &str, name: &str) -> Result<(), Error> {
        let p = &inner.persisted;
        if p.tables
            .iter()
            .any(|t| t.schema == schema && t.name == name)
            || p.views.iter().any(|v| v.schema == schema && v.name == name)
        {
            return Err(duplicate(name));
        }
        Ok(())
    }

    /// Write meta's definition of each enum type into the columns of
    /// `table` (and its indexes' storage) that use it.
    pub(crate) fn fresh_enum_columns(inner: &Inner, table: &mut pb::Table) -> Result<(), Error> {
        let columns = table.columns.iter_mut().chain(
            table
                .indexes
                .iter_mut()
                .filter_map(|ix| ix.storage.as_mut())
                .flat_map(|s| s.columns.iter_mut()),
        );
        for c in columns {
            let Some(used) = c.r#type.as_mut().and_then(|t| t.enum_type.as_mut()) else {
                continue;
            };
            let current = inner
                .persisted
                .types
                .iter()
                .find(|t| t.id == used.id)
                .ok_or_else(|| undefined(&used.name))?;
            *used = current.clone();
        }
        Ok(())
    }

    pub(crate) fn create_type(
        &self,
        req: pb::CreateTypeRequest,
    ) -> Result<pb::CreateTypeResponse, Error> {
        let mut ty = req
            .r#type
            .ok_or_else(|| Error::internal("CreateType without a type"))?;
        ty.schema = schema_or_public(&ty.schema).to_string();
        for (i, label) in ty.labels.iter().enumerate() {
            check_label(label)?;
            if ty.labels[..i].contains(label) {
                return Err(Error::user(
                    sqlstate::DUPLICATE_OBJECT,
                    format!("enum label \"{label}\" used more than once"),
                ));
            }
        }
        let mut inner = self.inner.lock().unwrap();
        Self::check_schema(&inner, &ty.schema)?;
        if let Some(pos) = Self::type_pos(&inner, &ty.schema, &ty.name) {
            if req.if_not_exists {
                return Ok(pb::CreateTypeResponse {
                    r#type: Some(inner.persisted.types[pos].clone()),
                    created: false,
                    catalog_version: inner.persisted.catalog_version,
                });
            }
            return Err(duplicate(&ty.name));
        }
        Self::check_relations_leave_name(&inner, &ty.schema, &ty.name)?;
        ty.id = ENUM_OID_BASE as u64 + inner.new_catalog_id();
        inner.persisted.types.push(ty.clone());
        self.bump(&mut inner)?;
        tracing::info!(r#type = %ty.name, oid = ty.id, "enum type created");
        Ok(pb::CreateTypeResponse {
            r#type: Some(ty),
            created: true,
            catalog_version: inner.persisted.catalog_version,
        })
    }

    pub(crate) fn alter_type(
        &self,
        req: pb::AlterTypeRequest,
    ) -> Result<pb::AlterTypeResponse, Error> {
        let schema = schema_or_public(&req.schema);
        let mut inner = self.inner.lock().unwrap();
        let pos = Self::type_pos(&inner, schema, &req.name).ok_or_else(|| undefined(&req.name))?;
        let mut ty = inner.persisted.types[pos].clone();
        if !req.add_value.is_empty() {
            let label = &req.add_value;
            check_label(label)?;
            if ty.labels.contains(label) {
                if req.if_not_exists {
                    return Ok(pb::AlterTypeResponse {
                        r#type: Some(ty),
                        catalog_version: inner.persisted.catalog_version,
                    });
                }
                return Err(Error::user(
                    sqlstate::DUPLICATE_OBJECT,
                    format!("enum label \"{label}\" already exists"),
                ));
            }
            let at = match (req.before.as_str(), req.after.as_str()) {
                ("", "") => ty.labels.len(),
                (neighbor, "") => Self::label_pos(&ty, neighbor)?,
                (_, neighbor) => Self::label_pos(&ty, neighbor)? + 1,
            };
            ty.labels.insert(at, label.clone());
        } else if !req.rename_value.is_empty() {
            let at = Self::label_pos(&ty, &req.rename_value)?;
            check_label(&req.to)?;
            if ty.labels.contains(&req.to) {
                return Err(Error::user(
                    sqlstate::DUPLICATE_OBJECT,
                    format!("enum label \"{}\" already exists", req.to),
                ));
            }
            ty.labels[at] = req.to.clone();
        } else if !req.new_name.is_empty() {
            Self::check_type_name(&inner, schema, &req.new_name)?;
            Self::check_relations_leave_name(&inner, schema, &req.new_name)?;
            ty.name = req.new_name.clone();
        } else {
            return Err(Error::internal("AlterType without a change"));
        }
        inner.persisted.types[pos] = ty.clone();
        let mut tables = std::mem::take(&mut inner.persisted.tables);
        let written = tables
            .iter_mut()
            .try_for_each(|t| Self::fresh_enum_columns(&inner, t));
        inner.persisted.tables = tables;
        written?;
        self.bump(&mut inner)?;
        Ok(pb::AlterTypeResponse {
            r#type: Some(ty),
            catalog_version: inner.persisted.catalog_version,
        })
    }

    fn label_pos(ty: &pb::EnumType, label: &str) -> Result<usize, Error> {
        ty.labels.iter().position(|l| l == label).ok_or_else(|| {
            Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("\"{label}\" is not an existing enum label"),
            )
        })
    }

    pub(crate) fn drop_type(
        &self,
        req: pb::DropTypeRequest,
    ) -> Result<pb::DropTypeResponse, Error> {
        let schema = schema_or_public(&req.schema);
        let mut inner = self.inner.lock().unwrap();
        let Some(pos) = Self::type_pos(&inner, schema, &req.name) else {
            if req.if_exists {
                return Ok(pb::DropTypeResponse {
                    r#type: None,
                    catalog_version: inner.persisted.catalog_version,
                });
            }
            return Err(undefined(&req.name));
        };
        let id = inner.persisted.types[pos].id;
        let user = inner.persisted.tables.iter().find_map(|t| {
            t.columns
                .iter()
                .find(|c| {
                    c.r#type
                        .as_ref()
                        .and_then(|ty| ty.enum_type.as_ref())
                        .is_some_and(|e| e.id == id)
                })
                .map(|c| format!("column {} of table {}", c.name, t.name))
        });
        if let Some(user) = user {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop type {} because other objects depend on it",
                    req.name
                ),
            )
            .with_detail(format!("{user} depends on type {}", req.name)));
        }
        let ty = inner.persisted.types.remove(pos);
        self.bump(&mut inner)?;
        Ok(pb::DropTypeResponse {
            r#type: Some(ty),
            catalog_version: inner.persisted.catalog_version,
        })
    }
}
