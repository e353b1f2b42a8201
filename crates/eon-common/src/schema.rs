//! Table definitions.
//!
//! Meta stores tables as `eon.v1.Table` messages; everyone else works with a
//! [`TableDef`], the same definition with its Arrow schema and SQL types
//! resolved once.
//!
//! A table without a primary key gets a hidden `bigint` column,
//! [`ROWID_COLUMN`], as its key (like PostgreSQL's `ctid`, it is never shown by
//! `SELECT *`); ids come from meta's id allocator, so they are unique across
//! query engines.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use eon_proto::v1 as pb;

use crate::error::{Error, Result, sqlstate};
use crate::types::SqlType;

/// The hidden key column of a table declared without a primary key.
pub const ROWID_COLUMN: &str = "_eon_rowid";

/// Default number of shards of a new table.
pub const DEFAULT_SHARD_COUNT: u32 = 8;

/// Every table of a catalog that keeps shards: each table, and its
/// indexes' storage tables after it.
pub fn stored_tables(tables: &[pb::Table]) -> impl Iterator<Item = &pb::Table> {
    tables.iter().flat_map(|t| {
        std::iter::once(t).chain(t.indexes.iter().filter_map(|ix| ix.storage.as_ref()))
    })
}

/// [`stored_tables`], to change each.
pub fn for_each_stored_table(tables: &mut [pb::Table], mut f: impl FnMut(&mut pb::Table)) {
    for t in tables {
        f(t);
        for ix in &mut t.indexes {
            if let Some(s) = ix.storage.as_mut() {
                f(s);
            }
        }
    }
}

/// What the schemas of sessions' temporary tables are called, before the
/// session's number (PostgreSQL's `pg_temp_N`).
pub const TEMP_SCHEMA_PREFIX: &str = "pg_temp_";

/// Whether `schema` holds a session's temporary relations.
pub fn is_temp_schema(schema: &str) -> bool {
    schema.starts_with(TEMP_SCHEMA_PREFIX)
}

/// Every data engine holding any of `table`'s shards: where each shard is
/// placed, and each copy of a replicated shard.
pub fn engines_of(table: &pb::Table) -> std::collections::BTreeSet<u64> {
    table
        .placement
        .iter()
        .chain(table.replicas.iter().flat_map(|r| &r.engines))
        .copied()
        .collect()
}

/// Whether `schema` exists without CREATE SCHEMA: `public`, or a session's
/// temporary schema (which exists while it holds relations).
pub fn is_implied_schema(schema: &str) -> bool {
    schema == "public" || is_temp_schema(schema)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// The DEFAULT expression as SQL text.
    pub default_sql: Option<String>,
    pub hidden: bool,
}

/// FOREIGN KEY (columns) REFERENCES ref_schema.ref_table (ref_columns),
/// where ref_columns are the referenced table's primary key, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyDef {
    pub name: String,
    /// Indexes into this table's columns.
    pub columns: Vec<usize>,
    pub ref_schema: String,
    pub ref_table: String,
    /// Indexes into the referenced table's columns.
    pub ref_columns: Vec<usize>,
}

impl ForeignKeyDef {
    /// True when it references table `schema.name`.
    pub fn references(&self, schema: &str, name: &str) -> bool {
        self.ref_schema == schema && self.ref_table == name
    }

    pub fn to_proto(&self) -> pb::ForeignKey {
        pb::ForeignKey {
            name: self.name.clone(),
            columns: self.columns.iter().map(|&i| i as u32).collect(),
            ref_schema: self.ref_schema.clone(),
            ref_table: self.ref_table.clone(),
            ref_columns: self.ref_columns.iter().map(|&i| i as u32).collect(),
        }
    }
}

/// A secondary index (see `pb::Index`).
#[derive(Debug, Clone)]
pub struct IndexDef {
    pub name: String,
    /// Indexes into the table's columns.
    pub columns: Vec<usize>,
    pub unique: bool,
    /// Made by a UNIQUE constraint.
    pub constraint: bool,
    /// Where its entries live: columns `columns`, then the table's primary
    /// key columns not among them.
    pub storage: Arc<TableDef>,
}

impl IndexDef {
    /// The table's column behind each column of an entry.
    pub fn entry_columns(&self, table: &TableDef) -> Vec<usize> {
        entry_of(&table.primary_key, &self.columns)
    }
}

/// An index entry's columns: the indexed ones, then the primary key's others.
fn entry_of(primary_key: &[usize], columns: &[usize]) -> Vec<usize> {
    let mut entry = columns.to_vec();
    entry.extend(primary_key.iter().filter(|k| !columns.contains(k)));
    entry
}

#[derive(Debug, Clone)]
pub struct TableDef {
    pub id: u64,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Indexes into `columns`, in key order.
    pub primary_key: Vec<usize>,
    pub shard_count: u32,
    /// `placement[shard]` is the id of the data engine holding the shard.
    pub placement: Vec<u64>,
    /// Its FOREIGN KEY constraints.
    pub foreign_keys: Vec<ForeignKeyDef>,
    /// Its secondary indexes.
    pub indexes: Vec<IndexDef>,
    /// All columns, hidden ones included.
    arrow_schema: SchemaRef,
    /// Only the columns a user sees.
    visible_schema: SchemaRef,
    proto: pb::Table,
}

impl TableDef {
    pub fn from_proto(t: pb::Table) -> Result<TableDef> {
        let mut columns = Vec::with_capacity(t.columns.len());
        for c in &t.columns {
            let ty = c
                .r#type
                .as_ref()
                .and_then(SqlType::from_proto)
                .ok_or_else(|| Error::internal(format!("column {} has no valid type", c.name)))?;
            columns.push(ColumnDef {
                name: c.name.clone(),
                ty,
                nullable: c.nullable,
                default_sql: (!c.default_sql.is_empty()).then(|| c.default_sql.clone()),
                hidden: c.hidden,
            });
        }
        let primary_key: Vec<usize> = t.primary_key.iter().map(|&i| i as usize).collect();
        if primary_key.is_empty() || primary_key.iter().any(|&i| i >= columns.len()) {
            return Err(Error::internal(format!(
                "table {} has an invalid primary key",
                t.name
            )));
        }
        let fields: Vec<_> = columns
            .iter()
            .map(|c| c.ty.field(&c.name, c.nullable))
            .collect();
        let arrow_schema = Arc::new(Schema::new(fields.clone()));
        let visible_schema = Arc::new(Schema::new(
            columns
                .iter()
                .zip(fields)
                .filter(|(c, _)| !c.hidden)
                .map(|(_, f)| f)
                .collect::<Vec<_>>(),
        ));
        Ok(TableDef {
            id: t.id,
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns,
            primary_key,
            shard_count: t.shard_count,
            placement: t.placement.clone(),
            foreign_keys: t
                .foreign_keys
                .iter()
                .map(|f| ForeignKeyDef {
                    name: f.name.clone(),
                    columns: f.columns.iter().map(|&i| i as usize).collect(),
                    ref_schema: f.ref_schema.clone(),
                    ref_table: f.ref_table.clone(),
                    ref_columns: f.ref_columns.iter().map(|&i| i as usize).collect(),
                })
                .collect(),
            indexes: t
                .indexes
                .iter()
                .map(|ix| {
                    let storage = ix.storage.clone().ok_or_else(|| {
                        Error::internal(format!("index {} has no storage table", ix.name))
                    })?;
                    Ok(IndexDef {
                        name: ix.name.clone(),
                        columns: ix.columns.iter().map(|&i| i as usize).collect(),
                        unique: ix.unique,
                        constraint: ix.constraint,
                        storage: Arc::new(TableDef::from_proto(storage)?),
                    })
                })
                .collect::<Result<_>>()?,
            arrow_schema,
            visible_schema,
            proto: t,
        })
    }

    /// Build the message for a new table (meta fills id and placement).
    pub fn new_proto(
        schema: &str,
        name: &str,
        columns: Vec<ColumnDef>,
        primary_key: Vec<usize>,
        shard_count: u32,
    ) -> pb::Table {
        pb::Table {
            id: 0,
            schema: schema.to_string(),
            name: name.to_string(),
            columns: columns
                .into_iter()
                .map(|c| pb::Column {
                    name: c.name,
                    r#type: Some(c.ty.to_proto()),
                    nullable: c.nullable,
                    default_sql: c.default_sql.unwrap_or_default(),
                    hidden: c.hidden,
                    identity: String::new(),
                    comment: String::new(),
                })
                .collect(),
            primary_key: primary_key.into_iter().map(|i| i as u32).collect(),
            shard_count,
            placement: vec![],
            foreign_keys: vec![],
            checks: vec![],
            owner: String::new(),
            grants: vec![],
            indexes: vec![],
            index_name: String::new(),
            comment: String::new(),
            partition_key: None,
            partition_of: None,
            distribution_columns: 0,
            colocated_with: 0,
            replicas: vec![],
            replication: 0,
        }
    }

    /// Column `i`'s identity kind: "a" (GENERATED ALWAYS), "d" (BY
    /// DEFAULT) or "" (not an identity column).
    pub fn identity(&self, i: usize) -> &str {
        self.proto
            .columns
            .get(i)
            .map(|c| c.identity.as_str())
            .unwrap_or("")
    }

    pub fn proto(&self) -> &pb::Table {
        &self.proto
    }

    /// Arrow schema of all columns (the layout data engines store and scan).
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow_schema
    }

    /// Arrow schema of the columns users see.
    pub fn visible_schema(&self) -> &SchemaRef {
        &self.visible_schema
    }

    /// Arrow schema of the primary key columns, in key order.
    pub fn key_schema(&self) -> SchemaRef {
        Arc::new(
            self.arrow_schema
                .project(&self.primary_key)
                .expect("key columns exist"),
        )
    }

    /// True when the key is eon's hidden row id.
    pub fn has_rowid(&self) -> bool {
        self.primary_key.len() == 1 && self.columns[self.primary_key[0]].hidden
    }

    /// The names of some of its columns (indexes into `columns`).
    pub fn column_names(&self, indexes: &[usize]) -> Vec<&str> {
        indexes
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The column index of a user-visible column, or 42703.
    pub fn visible_column(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name && !c.hidden)
            .ok_or_else(|| {
                Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!(
                        "column \"{name}\" of relation \"{}\" does not exist",
                        self.name
                    ),
                )
            })
    }

    /// The primary key columns that choose a row's shard (the
    /// distribution key, `WITH (distribute_by = …)`): its leading ones, by
    /// default all of them.
    pub fn distribution_key(&self) -> &[usize] {
        match self.proto.distribution_columns as usize {
            0 => &self.primary_key,
            n => &self.primary_key[..n.min(self.primary_key.len())],
        }
    }

    /// The shard of the row whose encoded primary key is `key`: the hash of
    /// the encoding of its distribution key ([`crate::key::prefix_len`]).
    pub fn shard_of_key(&self, key: &[u8]) -> u32 {
        let n = self.distribution_key().len();
        let key = if n == self.primary_key.len() {
            key
        } else {
            let types = self.primary_key[..n].iter().map(|&c| self.columns[c].ty);
            &key[..crate::key::prefix_len(key, types)]
        };
        crate::key::shard_of(key, self.shard_count)
    }

    /// Whether rows of `self` and `other` whose distribution keys are
    /// equal are always on the same data engine: the same shard count and
    /// placement, and distribution keys of the same encodings.
    pub fn colocated(&self, other: &TableDef) -> bool {
        let (a, b) = (self.distribution_key(), other.distribution_key());
        self.shard_count == other.shard_count
            && self.placement == other.placement
            && !self.has_rowid()
            && !other.has_rowid()
            && a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| crate::key::same_encoding(self.columns[x].ty, other.columns[y].ty))
    }

    /// The data engine holding `shard`.
    pub fn engine_of(&self, shard: u32) -> Option<u64> {
        self.placement.get(shard as usize).copied()
    }

    /// Name of the primary key constraint, as PostgreSQL names it (an
    /// index's storage table: the index's name).
    pub fn pkey_name(&self) -> String {
        if self.proto.index_name.is_empty() {
            format!("{}_pkey", self.name)
        } else {
            self.proto.index_name.clone()
        }
    }

    /// The storage table of a new index on `columns` (meta gives it an id
    /// and shards): the indexed columns, then the primary key columns not
    /// among them, keyed by the indexed columns alone when unique.
    pub fn index_storage(&self, name: &str, columns: &[usize], unique: bool) -> pb::Table {
        let entry = entry_of(&self.primary_key, columns);
        let key: Vec<usize> = if unique {
            (0..columns.len()).collect()
        } else {
            (0..entry.len()).collect()
        };
        // Entries hold no NULLs: rows with one in an indexed column have none.
        let cols = entry
            .iter()
            .map(|&i| ColumnDef {
                nullable: false,
                default_sql: None,
                ..self.columns[i].clone()
            })
            .collect();
        let mut t = TableDef::new_proto(&self.schema, name, cols, key, self.shard_count);
        t.index_name = name.to_string();
        t
    }
}
