//! eon's view of `pg_catalog`.
//!
//! datafusion-pg-catalog builds PostgreSQL's catalog tables from DataFusion's
//! catalog, which knows only Arrow types: a uuid column would show as text,
//! `varchar(10)` and `numeric(10,2)` lose their modifiers, no column has a
//! default, and there are no keys. This schema provider passes every table
//! through, except the ones it completes (or builds) from eon's own table
//! definitions:
//!
//! - `pg_attribute`: `atttypid` and `atttypmod` from the columns' SQL types,
//!   `atthasdef` from their defaults;
//! - `pg_attrdef`: one row per column default, its text in `adbin` (what
//!   `pg_get_expr` shows);
//! - `pg_class`: a row (relkind `i`) for each primary key's index and each
//!   secondary index, one (relkind `S`) for each sequence, one (relkind `v`)
//!   for each view, and
//!   `relhasindex`/`relhastriggers` (PostgreSQL enforces foreign keys with
//!   triggers; psql looks for them only then);
//! - `pg_index` and `pg_constraint`: primary keys, secondary indexes,
//!   UNIQUE, CHECK and foreign key constraints, their column
//!   numbers as arrays (`indkey`, `conkey`, `confkey`) as drivers unnest them;
//! - `pg_settings`: the parameters eon knows, with the session's values;
//! - `pg_roles`, `pg_authid` and `pg_user`: eon's roles;
//! - `pg_type` and `pg_enum`: PostgreSQL's types, then eon's enum types
//!   (typtype `e`) and their labels in order;
//! - `pg_description`: the comments of tables and columns (COMMENT ON),
//!   after PostgreSQL's own, which `obj_description` and `col_description`
//!   also answer;
//! - `pg_attribute.attacl` and `pg_policy.polroles` as arrays (NULL / no
//!   rows: eon has neither column privileges nor row security), so psql's
//!   `\dp` runs.
//!
//! The oids of indexes and constraints derive from their table's oid. The
//! definitions `pg_get_constraintdef` and `pg_get_indexdef` print are kept
//! in [`Definitions`], refreshed whenever a statement reads these tables —
//! which a statement asking for a definition by oid has just done.
//! `pg_get_viewdef` answers from the views in eon's catalog (the query as
//! written, by oid or name).
//!
//! With these, psql's `\d` shows a table's keys, SQLAlchemy reflects
//! columns, keys and foreign keys, and JDBC's getPrimaryKeys and
//! getImportedKeys answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::pgformat::quote_ident; // as the deparser writes identifiers: reserved words quoted too
use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, StringArray,
    new_empty_array, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::{MemTable, TableType};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::{ExecutionPlan, collect};
use eon_common::{SqlType, TableDef};

use crate::cluster::Cluster;

#[derive(Debug)]
pub struct EonPgCatalog {
    pub inner: Arc<dyn SchemaProvider>,
    pub cluster: Arc<Cluster>,
    pub definitions: Arc<Definitions>,
}

/// The text `pg_get_constraintdef` and `pg_get_indexdef` answer, by oid.
/// Filled from eon's catalog whenever a statement reads one of the tables
/// completed here — the oids come from those tables, so a statement that
/// asks for a definition has just read them.
#[derive(Debug, Default)]
pub struct Definitions {
    relations: RwLock<HashMap<i32, String>>,
    tables: RwLock<HashMap<i32, Arc<TableDef>>>,
    constraints: RwLock<HashMap<i32, String>>,
    indexes: RwLock<HashMap<i32, IndexText>>,
}

/// An index: its CREATE statement and its key columns' names.
#[derive(Debug, Clone)]
struct IndexText {
    create: String,
    columns: Vec<String>,
}

// Oids of the objects eon's catalog implies, derived from their table's
// oid (datafusion-pg-catalog numbers relations from 16384 upwards).
const PKEY_INDEX_OID: i32 = 1_000_000_000;
const PKEY_CONSTRAINT_OID: i32 = 1_100_000_000;
const FOREIGN_KEY_OID: i32 = 1_200_000_000;
const CHECK_OID: i32 = 1_500_000_000;
const INDEX_OID: i32 = 1_600_000_000;
/// Views are numbered from their own id.
const VIEW_OID: i32 = 1_800_000_000;
const UNIQUE_OID: i32 = 1_700_000_000;
const BTREE: i32 = 403;
/// Sequences are numbered from their own id (not a table's oid).
pub(crate) const SEQUENCE_OID: i32 = 1_300_000_000;
/// Roles other than the admin are numbered from their own id.
const ROLE_OID: i32 = 1_400_000_000;

#[async_trait]
impl SchemaProvider for EonPgCatalog {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push("pg_user".into());
        names.push("pg_indexes".into());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let kind = match name {
            "pg_attribute" => Kind::Attribute,
            "pg_attrdef" => Kind::Attrdef,
            "pg_class" => Kind::Class,
            "pg_index" => Kind::Index,
            "pg_constraint" => Kind::Constraint,
            "pg_settings" => Kind::Settings,
            "pg_roles" | "pg_authid" => Kind::Roles,
            "pg_user" => Kind::User,
            "pg_indexes" => Kind::Indexes,
            "pg_policy" => Kind::Policy,
            "pg_description" => Kind::Description,
            "pg_type" => Kind::Type,
            "pg_enum" => Kind::Enum,
            _ => return self.inner.table(name).await,
        };
        let inner = self.inner.table(name).await?;
        let schema = match (kind, &inner) {
            (Kind::Index, _) => pg_index_schema(),
            (Kind::Constraint, _) => pg_constraint_schema(),
            (Kind::Class, Some(t)) => with_reloptions(t.schema()),
            (Kind::Attribute, Some(t)) => with_acl_lists(t.schema()),
            (Kind::Policy, Some(t)) => Arc::new(Schema::new(
                t.schema()
                    .fields()
                    .iter()
                    .map(|f| match f.name().as_str() {
                        "polroles" => Field::new("polroles", oid_list(), true),
                        _ => f.as_ref().clone().with_nullable(true),
                    })
                    .collect::<Vec<_>>(),
            )),
            (Kind::Settings | Kind::Roles | Kind::Enum, Some(t)) => nullable(t.schema()),
            // typacl as an array, as psql's `\dT+` reads it (eon has no
            // privileges on types: NULL); the codes as `"char"`, which
            // drivers' type lookups read (tokio-postgres: typtype as i8).
            (Kind::Type, Some(t)) => Arc::new(Schema::new(
                nullable(t.schema())
                    .fields()
                    .iter()
                    .map(|f| match f.name().as_str() {
                        "typacl" => {
                            Field::new("typacl", DataType::new_list(DataType::Utf8, true), true)
                        }
                        "typtype" | "typcategory" | "typalign" | "typstorage" | "typdelim"
                            if f.data_type() == &DataType::Utf8 =>
                        {
                            SqlType::PgChar.field(f.name(), true)
                        }
                        _ => f.as_ref().clone(),
                    })
                    .collect::<Vec<_>>(),
            )),
            (Kind::User, _) => pg_user_schema(),
            (Kind::Indexes, _) => fields(&[
                ("schemaname", DataType::Utf8),
                ("tablename", DataType::Utf8),
                ("indexname", DataType::Utf8),
                ("tablespace", DataType::Utf8),
                ("indexdef", DataType::Utf8),
            ]),
            (_, Some(t)) => t.schema(),
            (_, None) => return Ok(None),
        };
        Ok(Some(Arc::new(Completed {
            kind,
            schema,
            inner,
            catalog: self.inner.clone(),
            cluster: self.cluster.clone(),
            definitions: self.definitions.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(name, "pg_user" | "pg_indexes") || self.inner.table_exist(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Attribute,
    Attrdef,
    Class,
    Index,
    Constraint,
    Settings,
    /// pg_roles and pg_authid, from eon's roles.
    Roles,
    User,
    /// pg_indexes (a view in PostgreSQL): every index with its definition.
    Indexes,
    /// pg_policy: eon has no row security policies (an empty table, with
    /// `polroles` an oid array as psql's `\dp` expects).
    Policy,
    /// pg_description: PostgreSQL's own rows, then eon's comments.
    Description,
    /// pg_type: PostgreSQL's own rows, then eon's enum types.
    Type,
    /// pg_enum: the labels of eon's enum types.
    Enum,
}

/// A pg_catalog table completed (or, for pg_index and pg_constraint, made)
/// from eon's definitions.
#[derive(Debug)]
struct Completed {
    kind: Kind,
    schema: SchemaRef,
    /// datafusion-pg-catalog's table (static and empty for pg_index and
    /// pg_constraint).
    inner: Option<Arc<dyn TableProvider>>,
    catalog: Arc<dyn SchemaProvider>,
    cluster: Arc<Cluster>,
    definitions: Arc<Definitions>,
}

async fn rows_of(
    t: &Arc<dyn TableProvider>,
    state: &dyn Session,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let plan: Arc<dyn ExecutionPlan> = t.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

/// PostgreSQL's type modifier of a column type (-1: none).
fn typmod(t: &SqlType) -> i32 {
    match t {
        SqlType::Varchar {
            max_length: Some(n),
        }
        | SqlType::Char { length: n } => *n as i32 + 4,
        SqlType::Numeric { precision, scale } if *precision > 0 => {
            // PostgreSQL's encoding: the scale in 11 bits (it may be
            // negative), read back with its sign by format_type.
            ((*precision as i32) << 16 | (*scale as i32 & 0x7ff)) + 4
        }
        // An array column carries its element's modifier.
        SqlType::Array(element) => typmod(element),
        _ => -1,
    }
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, DataFusionError> {
    b.column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog lacks column {name}")))
}

fn int32(a: &ArrayRef) -> Result<Vec<Option<i32>>, DataFusionError> {
    let a = cast(a, &DataType::Int32)?;
    Ok(a.as_primitive::<Int32Type>().iter().collect())
}

/// eon's tables as pg_class numbers them: oid → (namespace oid, table),
/// in oid order.
struct Tables {
    by_oid: BTreeMap<i32, (i32, Arc<TableDef>)>,
}

impl Tables {
    fn get(&self, oid: i32) -> Option<&Arc<TableDef>> {
        self.by_oid.get(&oid).map(|(_, t)| t)
    }

    /// The oid and definition of table `schema.name`.
    fn named(&self, schema: &str, name: &str) -> Option<(i32, &Arc<TableDef>)> {
        self.by_oid
            .iter()
            .find(|(_, (_, t))| t.schema == schema && t.name == name)
            .map(|(oid, (_, t))| (*oid, t))
    }

    /// True when some table's foreign key references `t`.
    fn is_referenced(&self, t: &TableDef) -> bool {
        self.by_oid.values().any(|(_, other)| {
            other
                .foreign_keys
                .iter()
                .any(|fk| fk.references(&t.schema, &t.name))
        })
    }
}

/// PostgreSQL's attribute number of column `index` of `t`: its position
/// among the columns a user sees, from 1.
fn attnum(t: &TableDef, index: usize) -> i16 {
    t.columns[..index].iter().filter(|c| !c.hidden).count() as i16 + 1
}

fn attnums(t: &TableDef, indexes: &[usize]) -> ScalarValue {
    let nums: Vec<ScalarValue> = indexes
        .iter()
        .map(|&i| ScalarValue::Int16(Some(attnum(t, i))))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&nums, &DataType::Int16))
}

fn ident_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// pg_namespace's rows: oid → schema name.
fn namespace_names(
    namespace_rows: &[RecordBatch],
) -> Result<HashMap<i32, String>, DataFusionError> {
    let mut namespaces = HashMap::new();
    for b in namespace_rows {
        let oids = int32(column(b, "oid")?)?;
        let names = cast(column(b, "nspname")?, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        for (i, oid) in oids.into_iter().enumerate() {
            if let (Some(oid), false) = (oid, names.is_null(i)) {
                namespaces.insert(oid, names.value(i).to_string());
            }
        }
    }
    Ok(namespaces)
}

/// pg_type's rows of eon's enum types (typtype `e`, category `E`), in
/// the schemas pg_namespace numbers.
fn enum_types(
    schema: &SchemaRef,
    types: &[eon_proto::v1::EnumType],
    namespaces: &HashMap<i32, String>,
    roles: &[eon_proto::v1::Role],
) -> Result<RecordBatch, DataFusionError> {
    let rows = types
        .iter()
        .map(|t| {
            let namespace = namespaces
                .iter()
                .find(|(_, n)| **n == t.schema)
                .map(|(oid, _)| *oid);
            let owner = roles.iter().find(|r| r.name == t.owner).map(role_oid);
            let regproc = |name: &str| ScalarValue::Utf8(Some(name.into()));
            vec![
                ("oid", ScalarValue::Int32(Some(t.id as i32))),
                ("typname", ScalarValue::Utf8(Some(t.name.clone()))),
                ("typnamespace", ScalarValue::Int32(namespace)),
                ("typowner", ScalarValue::Int32(owner)),
                ("typlen", ScalarValue::Int16(Some(4))),
                ("typbyval", ScalarValue::Boolean(Some(true))),
                ("typtype", ScalarValue::Utf8(Some("e".into()))),
                ("typcategory", ScalarValue::Utf8(Some("E".into()))),
                ("typispreferred", ScalarValue::Boolean(Some(false))),
                ("typisdefined", ScalarValue::Boolean(Some(true))),
                ("typdelim", ScalarValue::Utf8(Some(",".into()))),
                ("typrelid", ScalarValue::Int32(Some(0))),
                ("typelem", ScalarValue::Int32(Some(0))),
                ("typarray", ScalarValue::Int32(Some(0))),
                ("typinput", regproc("enum_in")),
                ("typoutput", regproc("enum_out")),
                ("typreceive", regproc("enum_recv")),
                ("typsend", regproc("enum_send")),
                ("typalign", ScalarValue::Utf8(Some("i".into()))),
                ("typstorage", ScalarValue::Utf8(Some("p".into()))),
                ("typnotnull", ScalarValue::Boolean(Some(false))),
                ("typbasetype", ScalarValue::Int32(Some(0))),
                ("typtypmod", ScalarValue::Int32(Some(-1))),
                ("typndims", ScalarValue::Int32(Some(0))),
                ("typcollation", ScalarValue::Int32(Some(0))),
            ]
        })
        .collect();
    batch(schema, rows)
}

/// pg_enum: each label of each enum type, its sort order its position.
fn enum_labels(
    schema: &SchemaRef,
    types: &[eon_proto::v1::EnumType],
) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for t in types {
        for (i, label) in t.labels.iter().enumerate() {
            rows.push(vec![
                (
                    "oid",
                    ScalarValue::Int32(Some((t.id as i32).wrapping_add(i as i32 + 1))),
                ),
                ("enumtypid", ScalarValue::Int32(Some(t.id as i32))),
                ("enumsortorder", ScalarValue::Float32(Some(i as f32 + 1.0))),
                ("enumlabel", ScalarValue::Utf8(Some(label.clone()))),
            ]);
        }
    }
    batch(schema, rows)
}

impl Completed {
    /// pg_type: PostgreSQL's static rows in this table's schema (nullable,
    /// typacl an array), then eon's enum types.
    async fn types(
        &self,
        state: &dyn Session,
        namespace_rows: &[RecordBatch],
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let builtin = match &self.inner {
            Some(t) => rows_of(t, state).await?,
            None => Vec::new(),
        };
        let mut batches = builtin
            .into_iter()
            .map(|b| {
                let columns = self
                    .schema
                    .fields()
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| match f.data_type() {
                        DataType::List(_) => new_null_array(f.data_type(), b.num_rows()),
                        _ => c.clone(),
                    })
                    .collect();
                RecordBatch::try_new(self.schema.clone(), columns)
            })
            .collect::<Result<Vec<_>, _>>()?;
        batches.push(enum_types(
            &self.schema,
            &self.cluster.enum_types(),
            &namespace_names(namespace_rows)?,
            &self.cluster.roles(),
        )?);
        Ok(batches)
    }

    /// eon's tables, found in pg_class's rows by namespace and name.
    fn tables(
        &self,
        class_rows: &[RecordBatch],
        namespace_rows: &[RecordBatch],
    ) -> Result<Tables, DataFusionError> {
        let namespaces = namespace_names(namespace_rows)?;
        let mut by_oid = BTreeMap::new();
        for b in class_rows {
            let oids = int32(column(b, "oid")?)?;
            let relnamespaces = int32(column(b, "relnamespace")?)?;
            let names = cast(column(b, "relname")?, &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            for (i, oid) in oids.into_iter().enumerate() {
                if let (Some(oid), false) = (oid, names.is_null(i)) {
                    let namespace = relnamespaces[i].unwrap_or(0);
                    let schema = namespaces.get(&namespace).map_or("public", |s| s.as_str());
                    if let Some(t) = self.cluster.table(schema, names.value(i)) {
                        by_oid.insert(oid, (namespace, t));
                    }
                }
            }
        }
        Ok(Tables { by_oid })
    }

    async fn complete(&self, state: &dyn Session) -> Result<Vec<RecordBatch>, DataFusionError> {
        if self.kind == Kind::Settings {
            let session = state
                .config()
                .get_extension::<crate::session::SessionSettings>()
                .unwrap_or_default();
            return Ok(vec![settings(&self.schema, &session)?]);
        }
        if matches!(self.kind, Kind::Roles | Kind::User) {
            return Ok(vec![roles(&self.schema, &self.cluster.roles())?]);
        }
        if self.kind == Kind::Policy {
            return Ok(vec![]);
        }
        if self.kind == Kind::Enum {
            return Ok(vec![enum_labels(&self.schema, &self.cluster.enum_types())?]);
        }
        let namespace_rows = match self.catalog.table("pg_namespace").await? {
            Some(pg_namespace) => rows_of(&pg_namespace, state).await?,
            None => Vec::new(),
        };
        if self.kind == Kind::Type {
            return self.types(state, &namespace_rows).await;
        }
        // datafusion-pg-catalog's pg_class, read once: it numbers the tables
        // (and is the table being completed when that is pg_class).
        let class_rows = match self.catalog.table("pg_class").await? {
            Some(pg_class) => rows_of(&pg_class, state).await?,
            None => Vec::new(),
        };
        let tables = self.tables(&class_rows, &namespace_rows)?;
        self.definitions.refresh(&tables);
        let mut batches = match (&self.inner, self.kind) {
            (_, Kind::Class) => class_rows,
            (Some(t), Kind::Attribute | Kind::Attrdef | Kind::Description) => {
                rows_of(t, state).await?
            }
            _ => Vec::new(),
        };
        match self.kind {
            Kind::Attribute => {
                batches = batches
                    .into_iter()
                    .map(|b| patch_attributes(b, &tables, &self.schema))
                    .collect::<Result<_, _>>()?
            }
            Kind::Attrdef => batches.push(attrdefs(&self.schema, &tables)?),
            Kind::Description => batches.push(descriptions(&self.schema, &tables)?),
            Kind::Class => {
                batches = batches
                    .into_iter()
                    .map(|b| patch_classes(b, &self.schema, &tables, &self.cluster.roles()))
                    .collect::<Result<_, _>>()?;
                batches.push(index_classes(
                    &self.schema,
                    &tables,
                    &self.cluster.sequences(),
                    &self.cluster.views(),
                )?);
            }
            Kind::Index => batches.push(indexes(&self.schema, &tables)?),
            Kind::Indexes => batches.push(index_definitions(&self.schema, &tables)?),
            Kind::Constraint => batches.push(constraints(&self.schema, &tables)?),
            Kind::Settings | Kind::Roles | Kind::User | Kind::Policy | Kind::Type | Kind::Enum => {
                unreachable!("answered above")
            }
        }
        Ok(batches)
    }
}

impl Definitions {
    fn refresh(&self, tables: &Tables) {
        let mut constraints = HashMap::new();
        let mut indexes = HashMap::new();
        let mut relations = HashMap::new();
        for (oid, (_, t)) in &tables.by_oid {
            relations.insert(*oid, quote_ident(&t.name));
            if !t.has_rowid() {
                let columns = t.column_names(&t.primary_key);
                constraints.insert(
                    PKEY_CONSTRAINT_OID + oid,
                    format!("PRIMARY KEY ({})", ident_list(&columns)),
                );
            }
            indexes.extend(index_texts(*oid, t));
            for (i, fk) in t.foreign_keys.iter().enumerate() {
                let ref_columns = tables
                    .named(&fk.ref_schema, &fk.ref_table)
                    .map(|(_, r)| r.column_names(&fk.ref_columns))
                    .unwrap_or_default();
                constraints.insert(
                    FOREIGN_KEY_OID + oid * 64 + i as i32,
                    format!(
                        "FOREIGN KEY ({}) REFERENCES {}({})",
                        ident_list(&t.column_names(&fk.columns)),
                        quote_ident(&fk.ref_table),
                        ident_list(&ref_columns)
                    ),
                );
            }
            for (i, check) in t.proto().checks.iter().enumerate() {
                constraints.insert(
                    CHECK_OID + oid * 64 + i as i32,
                    crate::checks::definition(check),
                );
            }
            for (i, ix) in t.indexes.iter().enumerate() {
                relations.insert(INDEX_OID + oid * 64 + i as i32, quote_ident(&ix.name));
                if ix.constraint {
                    constraints.insert(
                        UNIQUE_OID + oid * 64 + i as i32,
                        format!("UNIQUE ({})", ident_list(&t.column_names(&ix.columns))),
                    );
                }
            }
        }
        *self.relations.write().expect("definitions lock") = relations;
        *self.tables.write().expect("definitions lock") = tables
            .by_oid
            .iter()
            .map(|(oid, (_, t))| (*oid, t.clone()))
            .collect();
        *self.constraints.write().expect("definitions lock") = constraints;
        *self.indexes.write().expect("definitions lock") = indexes;
    }

    /// A relation's name as `oid::regclass` prints it: the name of one of
    /// eon's tables, else the number.
    fn relation(&self, oid: i32) -> String {
        let map = self.relations.read().expect("definitions lock");
        map.get(&oid).cloned().unwrap_or_else(|| oid.to_string())
    }

    /// One of eon's tables by its pg_class oid (as of the last statement
    /// that read pg_class — as one asking by oid has).
    pub fn table(&self, oid: i32) -> Option<Arc<TableDef>> {
        let map = self.tables.read().expect("definitions lock");
        map.get(&oid).cloned()
    }

    /// The comment on table `oid` (`column` 0) or on its column numbered
    /// `column`.
    fn description(&self, oid: i32, column: i64) -> Option<String> {
        let map = self.tables.read().expect("definitions lock");
        let t = map.get(&oid)?;
        let text = if column == 0 {
            &t.proto().comment
        } else {
            let i = (0..t.columns.len()).find(|&i| i64::from(attnum(t, i)) == column)?;
            &t.proto().columns[i].comment
        };
        (!text.is_empty()).then(|| text.clone())
    }

    fn constraint(&self, oid: i32) -> Option<String> {
        let map = self.constraints.read().expect("definitions lock");
        map.get(&oid).cloned()
    }

    /// `pg_get_indexdef(oid, column)`: the CREATE statement for column 0,
    /// else the name of key column `column` (from 1).
    fn index(&self, oid: i32, column: i64) -> Option<String> {
        let map = self.indexes.read().expect("definitions lock");
        let index = map.get(&oid)?;
        if column == 0 {
            return Some(index.create.clone());
        }
        let n = usize::try_from(column).ok()?.checked_sub(1)?;
        index.columns.get(n).map(|c| quote_ident(c))
    }
}

/// pg_attribute with `attacl` an array of aclitem text, as in PostgreSQL
/// (psql's `\dp` runs array_to_string over it).
fn with_acl_lists(schema: SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "attacl" => Field::new("attacl", DataType::new_list(DataType::Utf8, true), true),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

fn patch_attributes(
    b: RecordBatch,
    tables: &Tables,
    target: &SchemaRef,
) -> Result<RecordBatch, DataFusionError> {
    let rel = int32(column(&b, "attrelid")?)?;
    let names = cast(column(&b, "attname")?, &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    let mut typid = int32(column(&b, "atttypid")?)?;
    let mut typmods = int32(column(&b, "atttypmod")?)?;
    let hasdef_col = column(&b, "atthasdef")?.as_boolean().clone();
    let mut hasdef: Vec<Option<bool>> = hasdef_col.iter().collect();
    for i in 0..b.num_rows() {
        let Some(t) = rel[i].and_then(|r| tables.get(r)) else {
            continue;
        };
        let Some(c) = t
            .columns
            .iter()
            .find(|c| !names.is_null(i) && c.name == names.value(i))
        else {
            continue;
        };
        typid[i] = Some(c.ty.pg_oid() as i32);
        typmods[i] = Some(typmod(&c.ty));
        hasdef[i] = Some(c.default_sql.is_some());
    }
    let schema = b.schema();
    let mut columns: Vec<ArrayRef> = b.columns().to_vec();
    for (name, values) in [("atttypid", typid), ("atttypmod", typmods)] {
        let idx = schema.index_of(name)?;
        let ty = schema.field(idx).data_type().clone();
        columns[idx] = cast(
            &(Arc::new(datafusion::arrow::array::Int32Array::from(values)) as ArrayRef),
            &ty,
        )?;
    }
    let idx = schema.index_of("atthasdef")?;
    columns[idx] = Arc::new(datafusion::arrow::array::BooleanArray::from(hasdef));
    // No column privileges (yet): every attacl is NULL.
    if let Ok(idx) = target.index_of("attacl") {
        columns[idx] = new_null_array(target.field(idx).data_type(), b.num_rows());
    }
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// One pg_attrdef row per column default of eon's tables.
fn attrdefs(schema: &SchemaRef, tables: &Tables) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for (oid, (_, t)) in &tables.by_oid {
        for (i, c) in t.columns.iter().enumerate() {
            if let Some(d) = &c.default_sql {
                let id = 1_000_000 + rows.len() as i32;
                rows.push(vec![
                    ("oid", ScalarValue::Int32(Some(id))),
                    ("adrelid", ScalarValue::Int32(Some(*oid))),
                    ("adnum", ScalarValue::Int16(Some(attnum(t, i)))),
                    (
                        "adbin",
                        ScalarValue::Utf8(Some(crate::sequences::display_default(d))),
                    ),
                ]);
            }
        }
    }
    batch(schema, rows)
}

/// The oid of pg_class, the `classoid` of a relation's description.
const PG_CLASS_OID: i32 = 1259;

/// One pg_description row per comment on eon's tables and their columns.
fn descriptions(schema: &SchemaRef, tables: &Tables) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for (oid, (_, t)) in &tables.by_oid {
        let columns = t
            .proto()
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (attnum(t, i), &c.comment));
        for (sub, text) in [(0, &t.proto().comment)].into_iter().chain(columns) {
            if !text.is_empty() {
                rows.push(vec![
                    ("objoid", ScalarValue::Int32(Some(*oid))),
                    ("classoid", ScalarValue::Int32(Some(PG_CLASS_OID))),
                    ("objsubid", ScalarValue::Int32(Some(sub.into()))),
                    ("description", ScalarValue::Utf8(Some(text.clone()))),
                ]);
            }
        }
    }
    batch(schema, rows)
}

/// pg_class with `reloptions` (SQLAlchemy reads it; datafusion-pg-catalog
/// has no such column), every column nullable as the rows of indexes
/// leave some out.
fn with_reloptions(schema: SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = nullable(schema.clone())
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for name in ["reloptions", "relacl"] {
        if schema.index_of(name).is_err() {
            fields.push(Field::new(
                name,
                DataType::new_list(DataType::Utf8, true),
                true,
            ));
        }
    }
    Arc::new(Schema::new(fields))
}

/// pg_class rows of eon's tables say whether they have an index (their
/// primary key) and triggers (PostgreSQL enforces foreign keys with
/// triggers; psql shows them only then).
fn patch_classes(
    b: RecordBatch,
    schema: &SchemaRef,
    tables: &Tables,
    roles: &[eon_proto::v1::Role],
) -> Result<RecordBatch, DataFusionError> {
    let oids = int32(column(&b, "oid")?)?;
    // Owners as role oids, grants as PostgreSQL's aclitem text (psql \dp).
    let mut owners: Vec<Option<i32>> = int32(column(&b, "relowner")?)?;
    let mut acls: Vec<Option<Vec<Option<String>>>> = vec![None; b.num_rows()];
    for (i, oid) in oids.iter().enumerate() {
        if let Some(t) = oid.and_then(|o| tables.get(o)) {
            if let Some(owner) = roles.iter().find(|r| r.name == t.proto().owner) {
                owners[i] = Some(role_oid(owner));
            }
            acls[i] = crate::privileges::acl(t).map(|items| items.into_iter().map(Some).collect());
        }
    }
    let mut has_index: Vec<Option<bool>> = column(&b, "relhasindex")?.as_boolean().iter().collect();
    let mut has_triggers: Vec<Option<bool>> =
        column(&b, "relhastriggers")?.as_boolean().iter().collect();
    for (i, oid) in oids.iter().enumerate() {
        if let Some(t) = oid.and_then(|o| tables.get(o)) {
            has_index[i] = Some(!t.has_rowid() || !t.indexes.is_empty());
            has_triggers[i] = Some(!t.foreign_keys.is_empty() || tables.is_referenced(t));
        }
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        columns.push(match f.name().as_str() {
            "relhasindex" => Arc::new(BooleanArray::from(has_index.clone())) as ArrayRef,
            "relhastriggers" => Arc::new(BooleanArray::from(has_triggers.clone())),
            "relowner" => cast(
                &(Arc::new(datafusion::arrow::array::Int32Array::from(owners.clone())) as ArrayRef),
                f.data_type(),
            )?,
            "relacl" => text_lists(&acls),
            name => match b.column_by_name(name) {
                Some(c) => c.clone(),
                None => new_null_array(f.data_type(), b.num_rows()),
            },
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A pg_class row (relkind 'i') for each index, one (relkind 'S') for each
/// sequence and one (relkind 'v') for each view.
fn index_classes(
    schema: &SchemaRef,
    tables: &Tables,
    sequences: &[eon_proto::v1::Sequence],
    views: &[eon_proto::v1::View],
) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for (oid, (namespace, t)) in &tables.by_oid {
        if t.has_rowid() {
            continue;
        }
        rows.push(class_row(
            PKEY_INDEX_OID + oid,
            t.pkey_name(),
            *namespace,
            "i",
            BTREE,
            t.primary_key.len() as i16,
        ));
    }
    for (oid, (namespace, t)) in &tables.by_oid {
        for (i, ix) in t.indexes.iter().enumerate() {
            rows.push(class_row(
                INDEX_OID + oid * 64 + i as i32,
                ix.name.clone(),
                *namespace,
                "i",
                BTREE,
                ix.columns.len() as i16,
            ));
        }
    }
    // (eon has one schema: the namespace of its tables.)
    let public = tables
        .by_oid
        .values()
        .next()
        .map(|(ns, _)| *ns)
        .unwrap_or(2200);
    for q in sequences {
        rows.push(class_row(
            SEQUENCE_OID + q.id as i32,
            q.name.clone(),
            public,
            "S",
            0,
            3,
        ));
    }
    for v in views {
        rows.push(class_row(
            VIEW_OID + v.id as i32,
            v.name.clone(),
            public,
            "v",
            0,
            0,
        ));
    }
    batch(schema, rows)
}

/// A pg_class row of a relation eon's catalog implies.
fn class_row(
    oid: i32,
    name: String,
    namespace: i32,
    relkind: &str,
    am: i32,
    natts: i16,
) -> Vec<(&'static str, ScalarValue)> {
    vec![
        ("oid", ScalarValue::Int32(Some(oid))),
        ("relname", ScalarValue::Utf8(Some(name))),
        ("relnamespace", ScalarValue::Int32(Some(namespace))),
        ("reltype", ScalarValue::Int32(Some(0))),
        ("reloftype", ScalarValue::Int32(Some(0))),
        ("relowner", ScalarValue::Int32(Some(10))),
        ("relam", ScalarValue::Int32(Some(am))),
        ("relfilenode", ScalarValue::Int32(Some(oid))),
        ("reltablespace", ScalarValue::Int32(Some(0))),
        ("relpages", ScalarValue::Int32(Some(0))),
        ("reltuples", ScalarValue::Float64(Some(-1.0))),
        ("relallvisible", ScalarValue::Int32(Some(0))),
        ("reltoastrelid", ScalarValue::Int32(Some(0))),
        ("relhasindex", ScalarValue::Boolean(Some(false))),
        ("relisshared", ScalarValue::Boolean(Some(false))),
        ("relpersistence", ScalarValue::Utf8(Some("p".into()))),
        ("relkind", ScalarValue::Utf8(Some(relkind.into()))),
        ("relnatts", ScalarValue::Int16(Some(natts))),
        ("relchecks", ScalarValue::Int16(Some(0))),
        ("relhasrules", ScalarValue::Boolean(Some(false))),
        ("relhastriggers", ScalarValue::Boolean(Some(false))),
        ("relhassubclass", ScalarValue::Boolean(Some(false))),
        ("relrowsecurity", ScalarValue::Boolean(Some(false))),
        ("relforcerowsecurity", ScalarValue::Boolean(Some(false))),
        ("relispopulated", ScalarValue::Boolean(Some(true))),
        ("relreplident", ScalarValue::Utf8(Some("n".into()))),
        ("relispartition", ScalarValue::Boolean(Some(false))),
        ("relrewrite", ScalarValue::Int32(Some(0))),
        ("relfrozenxid", ScalarValue::Int32(Some(0))),
        ("relminmxid", ScalarValue::Int32(Some(0))),
    ]
}

/// pg_settings: every parameter eon knows, with the session's value.
fn settings(
    schema: &SchemaRef,
    session: &crate::session::SessionSettings,
) -> Result<RecordBatch, DataFusionError> {
    let text = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
    let rows = crate::session::SETTINGS
        .iter()
        .map(|(name, default)| {
            let key = name.to_ascii_lowercase();
            let value = session.value(&key).unwrap_or_else(|| default.to_string());
            let source = if session.is_set(&key) {
                "session"
            } else {
                "default"
            };
            vec![
                ("name", text(name)),
                ("setting", text(&value)),
                ("category", text("eon")),
                ("context", text("user")),
                ("vartype", text("string")),
                ("source", text(source)),
                ("reset_val", text(default)),
                ("pending_restart", ScalarValue::Boolean(Some(false))),
            ]
        })
        .collect();
    batch(schema, rows)
}

/// A role's oid: the admin is 10, PostgreSQL's bootstrap superuser (the
/// owner datafusion-pg-catalog gives every relation); others derive from
/// their id.
pub(crate) fn role_oid(role: &eon_proto::v1::Role) -> i32 {
    if role.name == eon_common::ADMIN_ROLE {
        10
    } else {
        ROLE_OID + role.id as i32
    }
}

/// pg_roles, pg_authid and pg_user: one row per role. Passwords show as
/// `********` (pg_roles, pg_user) or not at all (pg_authid: its verifiers
/// are for superusers' eyes only, and eon does not restrict reading
/// catalogs yet).
fn roles(
    schema: &SchemaRef,
    roles: &[eon_proto::v1::Role],
) -> Result<RecordBatch, DataFusionError> {
    let text = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
    let flag = |b: bool| ScalarValue::Boolean(Some(b));
    // pg_user lists only the roles that can log in.
    let users_only = schema.index_of("usename").is_ok();
    let rows = roles
        .iter()
        .filter(|r| r.login || !users_only)
        .map(|r| {
            let oid = ScalarValue::Int32(Some(role_oid(r)));
            let masked = if r.password.is_empty() {
                ScalarValue::Utf8(None)
            } else {
                text("********")
            };
            vec![
                ("oid", oid.clone()),
                ("rolname", text(&r.name)),
                ("rolsuper", flag(r.superuser)),
                ("rolinherit", flag(r.inherit)),
                ("rolcreaterole", flag(r.create_role)),
                ("rolcreatedb", flag(r.create_db)),
                ("rolcanlogin", flag(r.login)),
                ("rolreplication", flag(false)),
                ("rolbypassrls", flag(r.superuser)),
                ("rolconnlimit", ScalarValue::Int32(Some(r.connection_limit))),
                ("rolpassword", masked.clone()),
                ("usename", text(&r.name)),
                ("usesysid", oid),
                ("usecreatedb", flag(r.create_db)),
                ("usesuper", flag(r.superuser)),
                ("userepl", flag(false)),
                ("usebypassrls", flag(r.superuser)),
                ("passwd", masked),
            ]
        })
        .collect();
    batch(schema, rows)
}

/// pg_user: the roles that can log in.
fn pg_user_schema() -> SchemaRef {
    fields(&[
        ("usename", DataType::Utf8),
        ("usesysid", DataType::Int32),
        ("usecreatedb", DataType::Boolean),
        ("usesuper", DataType::Boolean),
        ("userepl", DataType::Boolean),
        ("usebypassrls", DataType::Boolean),
        ("passwd", DataType::Utf8),
        (
            "valuntil",
            DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
        ),
        ("useconfig", DataType::new_list(DataType::Utf8, true)),
    ])
}

/// A list-of-text column.
fn text_lists(rows: &[Option<Vec<Option<String>>>]) -> ArrayRef {
    let mut b =
        datafusion::arrow::array::ListBuilder::new(datafusion::arrow::array::StringBuilder::new());
    for row in rows {
        match row {
            Some(items) => {
                for item in items {
                    b.values().append_option(item.as_deref());
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn nullable(schema: SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

fn oid_list() -> DataType {
    DataType::new_list(DataType::Int32, true)
}

fn int2_list() -> DataType {
    DataType::new_list(DataType::Int16, true)
}

fn fields(spec: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        spec.iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// PostgreSQL 15's pg_index; `int2vector` and `oidvector` as arrays.
fn pg_index_schema() -> SchemaRef {
    use DataType::{Boolean, Int16, Int32, Utf8};
    fields(&[
        ("indexrelid", Int32),
        ("indrelid", Int32),
        ("indnatts", Int16),
        ("indnkeyatts", Int16),
        ("indisunique", Boolean),
        ("indnullsnotdistinct", Boolean),
        ("indisprimary", Boolean),
        ("indisexclusion", Boolean),
        ("indimmediate", Boolean),
        ("indisclustered", Boolean),
        ("indisvalid", Boolean),
        ("indcheckxmin", Boolean),
        ("indisready", Boolean),
        ("indislive", Boolean),
        ("indisreplident", Boolean),
        ("indkey", int2_list()),
        ("indcollation", oid_list()),
        ("indclass", oid_list()),
        ("indoption", int2_list()),
        ("indexprs", Utf8),
        ("indpred", Utf8),
    ])
}

/// PostgreSQL 15's pg_constraint.
fn pg_constraint_schema() -> SchemaRef {
    use DataType::{Boolean, Int16, Int32, Utf8};
    fields(&[
        ("oid", Int32),
        ("conname", Utf8),
        ("connamespace", Int32),
        ("contype", Utf8),
        ("condeferrable", Boolean),
        ("condeferred", Boolean),
        ("convalidated", Boolean),
        ("conrelid", Int32),
        ("contypid", Int32),
        ("conindid", Int32),
        ("conparentid", Int32),
        ("confrelid", Int32),
        ("confupdtype", Utf8),
        ("confdeltype", Utf8),
        ("confmatchtype", Utf8),
        ("conislocal", Boolean),
        ("coninhcount", Int16),
        ("connoinherit", Boolean),
        ("conkey", int2_list()),
        ("confkey", int2_list()),
        ("conpfeqop", oid_list()),
        ("conppeqop", oid_list()),
        ("conffeqop", oid_list()),
        ("confdelsetcols", int2_list()),
        ("conexclop", oid_list()),
        ("conbin", Utf8),
    ])
}

/// The indexes of table `t` (pg_class oid `oid`) by their oids: primary
/// key first, then secondary indexes.
fn index_texts(oid: i32, t: &TableDef) -> Vec<(i32, IndexText)> {
    let text = |name: &str, unique: bool, columns: &[usize]| {
        let columns = t.column_names(columns);
        let create = format!(
            "CREATE {}INDEX {} ON {}.{} USING btree ({})",
            if unique { "UNIQUE " } else { "" },
            quote_ident(name),
            quote_ident(&t.schema),
            quote_ident(&t.name),
            ident_list(&columns)
        );
        let columns = columns.iter().map(|c| c.to_string()).collect();
        IndexText { create, columns }
    };
    let mut out = Vec::new();
    if !t.has_rowid() {
        out.push((
            PKEY_INDEX_OID + oid,
            text(&t.pkey_name(), true, &t.primary_key),
        ));
    }
    for (i, ix) in t.indexes.iter().enumerate() {
        out.push((
            INDEX_OID + oid * 64 + i as i32,
            text(&ix.name, ix.unique, &ix.columns),
        ));
    }
    out
}

/// pg_indexes: schema, table, name and CREATE statement of every index.
fn index_definitions(schema: &SchemaRef, tables: &Tables) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for (oid, (_, t)) in &tables.by_oid {
        let names = (!t.has_rowid())
            .then(|| t.pkey_name())
            .into_iter()
            .chain(t.indexes.iter().map(|i| i.name.clone()));
        for (name, (_, text)) in names.zip(index_texts(*oid, t)) {
            rows.push(vec![
                ("schemaname", ScalarValue::Utf8(Some(t.schema.clone()))),
                ("tablename", ScalarValue::Utf8(Some(t.name.clone()))),
                ("indexname", ScalarValue::Utf8(Some(name))),
                ("indexdef", ScalarValue::Utf8(Some(text.create))),
            ]);
        }
    }
    batch(schema, rows)
}

/// One pg_index row per primary key and per secondary index.
fn indexes(schema: &SchemaRef, tables: &Tables) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for (oid, (_, t)) in &tables.by_oid {
        if !t.has_rowid() {
            rows.push(index_row(
                PKEY_INDEX_OID + oid,
                *oid,
                t,
                &t.primary_key,
                true,
                true,
            ));
        }
        for (i, ix) in t.indexes.iter().enumerate() {
            rows.push(index_row(
                INDEX_OID + oid * 64 + i as i32,
                *oid,
                t,
                &ix.columns,
                ix.unique,
                false,
            ));
        }
    }
    batch(schema, rows)
}

/// The pg_index row of index `id` on `columns` of table `t` (oid `table`).
fn index_row(
    id: i32,
    table: i32,
    t: &TableDef,
    columns: &[usize],
    unique: bool,
    primary: bool,
) -> Vec<(&'static str, ScalarValue)> {
    let n = columns.len();
    let zeros = |ty: &DataType| {
        let zero = match ty {
            DataType::Int16 => ScalarValue::Int16(Some(0)),
            _ => ScalarValue::Int32(Some(0)),
        };
        ScalarValue::List(ScalarValue::new_list_nullable(&vec![zero; n], ty))
    };
    let mut row = vec![
        ("indexrelid", ScalarValue::Int32(Some(id))),
        ("indrelid", ScalarValue::Int32(Some(table))),
        ("indnatts", ScalarValue::Int16(Some(n as i16))),
        ("indnkeyatts", ScalarValue::Int16(Some(n as i16))),
        ("indkey", attnums(t, columns)),
        ("indcollation", zeros(&DataType::Int32)),
        ("indclass", zeros(&DataType::Int32)),
        ("indoption", zeros(&DataType::Int16)),
    ];
    for (name, value) in [
        ("indisunique", unique),
        ("indnullsnotdistinct", false),
        ("indisprimary", primary),
        ("indisexclusion", false),
        ("indimmediate", true),
        ("indisclustered", false),
        ("indisvalid", true),
        ("indcheckxmin", false),
        ("indisready", true),
        ("indislive", true),
        ("indisreplident", false),
    ] {
        row.push((name, ScalarValue::Boolean(Some(value))));
    }
    row
}

/// pg_constraint: each table's primary key, foreign keys and CHECK constraints.
fn constraints(schema: &SchemaRef, tables: &Tables) -> Result<RecordBatch, DataFusionError> {
    let mut rows = Vec::new();
    for (oid, (namespace, t)) in &tables.by_oid {
        let common = |id: i32, name: String, kind: &str| {
            vec![
                ("oid", ScalarValue::Int32(Some(id))),
                ("conname", ScalarValue::Utf8(Some(name))),
                ("connamespace", ScalarValue::Int32(Some(*namespace))),
                ("contype", ScalarValue::Utf8(Some(kind.to_string()))),
                ("condeferrable", ScalarValue::Boolean(Some(false))),
                ("condeferred", ScalarValue::Boolean(Some(false))),
                ("convalidated", ScalarValue::Boolean(Some(true))),
                ("conrelid", ScalarValue::Int32(Some(*oid))),
                ("contypid", ScalarValue::Int32(Some(0))),
                ("conparentid", ScalarValue::Int32(Some(0))),
                ("conislocal", ScalarValue::Boolean(Some(true))),
                ("coninhcount", ScalarValue::Int16(Some(0))),
                ("connoinherit", ScalarValue::Boolean(Some(true))),
            ]
        };
        if !t.has_rowid() {
            let mut row = common(PKEY_CONSTRAINT_OID + oid, t.pkey_name(), "p");
            row.push(("conindid", ScalarValue::Int32(Some(PKEY_INDEX_OID + oid))));
            row.push(("confrelid", ScalarValue::Int32(Some(0))));
            row.push(("conkey", attnums(t, &t.primary_key)));
            rows.push(row);
        }
        for (i, fk) in t.foreign_keys.iter().enumerate() {
            let referenced = tables.named(&fk.ref_schema, &fk.ref_table);
            let ref_oid = referenced.map_or(0, |(oid, _)| oid);
            let mut row = common(FOREIGN_KEY_OID + oid * 64 + i as i32, fk.name.clone(), "f");
            row.push((
                "conindid",
                ScalarValue::Int32(Some(PKEY_INDEX_OID + ref_oid)),
            ));
            row.push(("confrelid", ScalarValue::Int32(Some(ref_oid))));
            // NO ACTION on update and delete, MATCH SIMPLE.
            row.push(("confupdtype", ScalarValue::Utf8(Some("a".into()))));
            row.push(("confdeltype", ScalarValue::Utf8(Some("a".into()))));
            row.push(("confmatchtype", ScalarValue::Utf8(Some("s".into()))));
            row.push(("conkey", attnums(t, &fk.columns)));
            if let Some((_, r)) = referenced {
                row.push(("confkey", attnums(r, &fk.ref_columns)));
            }
            rows.push(row);
        }
        for (i, check) in t.proto().checks.iter().enumerate() {
            let mut row = common(CHECK_OID + oid * 64 + i as i32, check.name.clone(), "c");
            row.push(("conindid", ScalarValue::Int32(Some(0))));
            row.push(("confrelid", ScalarValue::Int32(Some(0))));
            row.push(("conkey", attnums(t, &crate::checks::columns(t, check))));
            row.push(("conbin", ScalarValue::Utf8(Some(check.expr.clone()))));
            rows.push(row);
        }
        for (i, ix) in t.indexes.iter().enumerate().filter(|(_, ix)| ix.constraint) {
            let mut row = common(UNIQUE_OID + oid * 64 + i as i32, ix.name.clone(), "u");
            row.push((
                "conindid",
                ScalarValue::Int32(Some(INDEX_OID + oid * 64 + i as i32)),
            ));
            row.push(("confrelid", ScalarValue::Int32(Some(0))));
            row.push(("conkey", attnums(t, &ix.columns)));
            rows.push(row);
        }
    }
    batch(schema, rows)
}

/// A batch of `schema` from rows given as (column, value) pairs; columns a
/// row does not name are NULL.
fn batch(
    schema: &SchemaRef,
    rows: Vec<Vec<(&str, ScalarValue)>>,
) -> Result<RecordBatch, DataFusionError> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let values = rows.iter().map(|row| {
            row.iter()
                .find(|(name, _)| name == f.name())
                .map(|(_, v)| v.clone())
                .unwrap_or(ScalarValue::Null)
        });
        let array = if rows.is_empty() {
            new_empty_array(f.data_type())
        } else {
            let values: Vec<ScalarValue> = values.collect();
            if values.iter().all(ScalarValue::is_null) {
                new_null_array(f.data_type(), values.len())
            } else {
                let ty = values
                    .iter()
                    .find(|v| !v.is_null())
                    .map(ScalarValue::data_type)
                    .unwrap_or(DataType::Null);
                let values = values.into_iter().map(|v| {
                    if v.is_null() {
                        ScalarValue::try_from(&ty).unwrap_or(ScalarValue::Null)
                    } else {
                        v
                    }
                });
                cast(&ScalarValue::iter_to_array(values)?, f.data_type())?
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )?)
}

#[async_trait]
impl TableProvider for Completed {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let batches = self.complete(state).await?;
        let mem = MemTable::try_new(self.schema(), vec![batches])?;
        mem.scan(state, projection, filters, limit).await
    }
}

/// `pg_get_expr`, `pg_get_constraintdef`, `pg_get_indexdef` and
/// `pg_get_viewdef`, answering from eon's definitions
/// (datafusion-pg-catalog's answer empty strings).
pub fn register(ctx: &SessionContext, definitions: &Arc<Definitions>, cluster: &Arc<Cluster>) {
    // pg_get_userbyid(oid): the role's name, from eon's roles (psql's
    // "Owner" columns).
    let roles = cluster.clone();
    let by_id = move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let oids = cast(&arrays[0], &DataType::Int64)?;
        let known = roles.roles();
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for oid in oids.as_primitive::<Int64Type>().iter() {
            match oid {
                None => out.append_null(),
                Some(oid) => match known.iter().find(|r| role_oid(r) as i64 == oid) {
                    Some(r) => out.append_value(&r.name),
                    None => out.append_value(format!("unknown (OID={oid})")),
                },
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(match &args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(out),
        })
    };
    ctx.register_udf(ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "pg_get_userbyid",
            Signature::any(1, Volatility::Stable),
            DataType::Utf8,
            Arc::new(by_id),
        ),
    ));
    if let Ok(original) = datafusion::execution::FunctionRegistry::udf(ctx, "format_type") {
        ctx.register_udf(ScalarUDF::new_from_impl(FormatType {
            original: original.as_ref().clone(),
            cluster: cluster.clone(),
        }));
    }
    // pg_get_viewdef(view [, pretty]): the view's query as eon keeps it
    // (the SELECT as written, where PostgreSQL decompiles its rewrite
    // rule), by oid or by name; NULL for neither.
    let views = cluster.clone();
    let viewdef = move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let known = views.views();
        let find = |key: &str| {
            let oid = key.parse::<i64>().ok();
            known.iter().find(|v| match oid {
                Some(oid) => (VIEW_OID + v.id as i32) as i64 == oid,
                None => v.name == key || format!("{}.{}", v.schema, v.name) == key,
            })
        };
        let out: StringArray = cast(&arrays[0], &DataType::Utf8)?
            .as_string::<i32>()
            .iter()
            .map(|key| Some(format!(" {};", find(key?)?.query)))
            .collect();
        crate::pgfuncs::shaped_like(args, Arc::new(out))
    };
    ctx.register_udf(ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "pg_get_viewdef",
            Signature::variadic_any(Volatility::Stable),
            DataType::Utf8,
            Arc::new(viewdef),
        ),
    ));
    let types = cluster.clone();
    ctx.register_udf(crate::pgfuncs::to_regtype(move || types.enum_types()));
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "pg_type_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    ));
    for kind in [
        Definition::Expr,
        Definition::Constraint,
        Definition::Index,
        Definition::Trigger,
        Definition::Relation,
        Definition::ObjDescription,
        Definition::ColDescription,
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(DefinitionFn {
            kind,
            definitions: definitions.clone(),
            signature: Signature::variadic_any(Volatility::Stable),
        }));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Definition {
    /// `pg_get_expr(text, relation)`: eon keeps a default's SQL text, which
    /// is what PostgreSQL decompiles its expression trees into.
    Expr,
    Constraint,
    Index,
    /// eon has no triggers (pg_trigger is empty): NULL, as PostgreSQL
    /// answers for an oid that names none.
    Trigger,
    /// `eon_regclass_name(oid)`: what a regclass value prints (see
    /// [`crate::catalogsql`]).
    Relation,
    /// `obj_description(oid [, catalog])`: a table's comment (NULL for
    /// another catalog's objects: eon keeps comments on relations only).
    ObjDescription,
    /// `col_description(oid, attnum)`: a column's comment.
    ColDescription,
}

/// `format_type(oid, typmod)`: datafusion-pg-catalog's answer, with the
/// names of eon's enum types.
#[derive(Debug)]
struct FormatType {
    original: ScalarUDF,
    cluster: Arc<Cluster>,
}

impl PartialEq for FormatType {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for FormatType {}

impl std::hash::Hash for FormatType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "format_type".hash(state)
    }
}

impl ScalarUDFImpl for FormatType {
    fn name(&self) -> &str {
        "format_type"
    }

    fn signature(&self) -> &Signature {
        self.original.signature()
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        self.original.return_type(args)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows.max(1);
        let oids = cast(&args.args[0].to_array(rows)?, &DataType::Int64)?;
        let typmods = match args.args.get(1) {
            Some(t) => Some(cast(&t.to_array(rows)?, &DataType::Int64)?),
            None => None,
        };
        let shape = args.args.clone();
        let names = self.original.invoke_with_args(args)?.to_array(rows)?;
        let names = cast(&names, &DataType::Utf8)?;
        let types = self.cluster.enum_types();
        let out: StringArray = oids
            .as_primitive::<Int64Type>()
            .iter()
            .zip(names.as_string::<i32>().iter())
            .enumerate()
            .map(|(i, (oid, name))| {
                let typmod = typmods
                    .as_ref()
                    .map(|t| t.as_primitive::<Int64Type>())
                    .filter(|t| t.is_valid(i))
                    .map(|t| t.value(i));
                // numeric(p,s) with PostgreSQL's signed 11-bit scale.
                if let (Some(1700), Some(m)) = (oid, typmod.filter(|m| *m >= 4)) {
                    let m = m - 4;
                    let scale = ((m & 0x7ff) ^ 1024) - 1024;
                    return Some(format!("numeric({},{scale})", (m >> 16) & 0xffff));
                }
                let def = oid.and_then(|o| types.iter().find(|t| t.id as i64 == o));
                match def {
                    Some(t) => Some(eon_common::types::EnumDef::from_proto(t).display_name()),
                    None => name.map(str::to_string),
                }
            })
            .collect();
        crate::pgfuncs::shaped_like(&shape, Arc::new(out))
    }
}

#[derive(Debug)]
struct DefinitionFn {
    kind: Definition,
    definitions: Arc<Definitions>,
    signature: Signature,
}

impl PartialEq for DefinitionFn {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for DefinitionFn {}

impl std::hash::Hash for DefinitionFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state)
    }
}

impl ScalarUDFImpl for DefinitionFn {
    fn name(&self) -> &str {
        match self.kind {
            Definition::Expr => "pg_get_expr",
            Definition::Constraint => "pg_get_constraintdef",
            Definition::Index => "pg_get_indexdef",
            Definition::Trigger => "pg_get_triggerdef",
            Definition::Relation => "eon_regclass_name",
            Definition::ObjDescription => "obj_description",
            Definition::ColDescription => "col_description",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(first) = arrays.first() else {
            return Err(DataFusionError::Plan(format!(
                "function {}() does not exist",
                self.name()
            )));
        };
        let out: StringArray = match self.kind {
            Definition::Trigger => StringArray::new_null(first.len()),
            Definition::Relation => {
                let oids = cast(first, &DataType::Int32)?;
                oids.as_primitive::<Int32Type>()
                    .iter()
                    .map(|oid| oid.map(|o| self.definitions.relation(o)))
                    .collect()
            }
            Definition::Expr => cast(first, &DataType::Utf8)?
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect(),
            Definition::Constraint => {
                let oids = cast(first, &DataType::Int32)?;
                oids.as_primitive::<Int32Type>()
                    .iter()
                    .map(|oid| oid.and_then(|o| self.definitions.constraint(o)))
                    .collect()
            }
            Definition::ObjDescription => {
                let oids = cast(first, &DataType::Int32)?;
                let catalogs = match arrays.get(1) {
                    Some(c) => cast(c, &DataType::Utf8)?,
                    None => Arc::new(StringArray::from(vec!["pg_class"; rows])),
                };
                oids.as_primitive::<Int32Type>()
                    .iter()
                    .zip(catalogs.as_string::<i32>().iter())
                    .map(|(oid, catalog)| match catalog {
                        Some("pg_class" | "pg_catalog.pg_class") => {
                            self.definitions.description(oid?, 0)
                        }
                        _ => None,
                    })
                    .collect()
            }
            Definition::ColDescription => {
                let oids = cast(first, &DataType::Int32)?;
                let Some(columns) = arrays.get(1) else {
                    return Err(DataFusionError::Plan(
                        "function col_description(oid) does not exist".into(),
                    ));
                };
                let columns = cast(columns, &DataType::Int64)?;
                oids.as_primitive::<Int32Type>()
                    .iter()
                    .zip(columns.as_primitive::<Int64Type>().iter())
                    .map(|(oid, n)| self.definitions.description(oid?, n?))
                    .collect()
            }
            Definition::Index => {
                let oids = cast(first, &DataType::Int32)?;
                let columns = match arrays.get(1) {
                    Some(c) => cast(c, &DataType::Int64)?,
                    None => Arc::new(datafusion::arrow::array::Int64Array::from(vec![0; rows])),
                };
                let columns = columns.as_primitive::<Int64Type>();
                oids.as_primitive::<Int32Type>()
                    .iter()
                    .zip(columns.iter())
                    .map(|(oid, n)| self.definitions.index(oid?, n.unwrap_or(0)))
                    .collect()
            }
        };
        crate::pgfuncs::shaped_like(&args.args, Arc::new(out))
    }
}
