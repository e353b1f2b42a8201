//! `information_schema`, as PostgreSQL presents it, from eon's catalog.
//!
//! The SQL standard's catalog views are what portable tools read (JDBC
//! metadata, SQLAlchemy's inspector on other dialects, admin GUIs): which
//! tables exist, their columns with SQL type names, lengths, precisions
//! and defaults, and their key constraints. DataFusion has an
//! `information_schema` of its own, but it speaks Arrow (`Int32`, `Utf8`);
//! this one is built from eon's table definitions on every read, so it
//! always agrees with the catalog and with `pg_catalog`, and its column
//! names and value spellings are PostgreSQL's (`integer`,
//! `character varying`, `YES`/`NO`, `<table>_pkey`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::MemTable;
use eon_common::{SqlType, TableDef};

use crate::cluster::Cluster;
use crate::session::DATABASE;

/// The schemas a client sees.
const SCHEMAS: [&str; 3] = ["information_schema", "pg_catalog", "public"];

const TABLES: [&str; 10] = [
    "schemata",
    "tables",
    "columns",
    "table_constraints",
    "check_constraints",
    "key_column_usage",
    "constraint_column_usage",
    "referential_constraints",
    "views",
    "sequences",
];

#[derive(Debug)]
pub struct InformationSchema {
    pub cluster: Arc<Cluster>,
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if !TABLES.contains(&name) {
            return Ok(None);
        }
        let mut tables = self.cluster.tables();
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        let (fields, rows) = view(
            name,
            &tables,
            &self.cluster.views(),
            &self.cluster.schemas(),
        );
        Ok(Some(Arc::new(mem_table(&fields, rows)?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// A column of a view: its name and whether it is a number (else text).
type Columns = Vec<(&'static str, bool)>;

/// The columns that name a constraint and its table.
const CONSTRAINT_AND_TABLE: [(&str, bool); 6] = [
    ("constraint_catalog", false),
    ("constraint_schema", false),
    ("constraint_name", false),
    ("table_catalog", false),
    ("table_schema", false),
    ("table_name", false),
];

/// Their values for constraint `name` of `t`.
fn named_constraint(t: &TableDef, name: &str) -> [ScalarValue; 6] {
    [
        text(DATABASE),
        text(&t.schema),
        text(name),
        text(DATABASE),
        text(&t.schema),
        text(&t.name),
    ]
}

fn text(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn int(n: impl TryInto<i32>) -> ScalarValue {
    ScalarValue::Int32(n.try_into().ok())
}

fn null() -> ScalarValue {
    ScalarValue::Null
}

fn yes_no(b: bool) -> ScalarValue {
    text(if b { "YES" } else { "NO" })
}

/// The primary key constraint's name, as PostgreSQL names it.
pub fn pkey_name(t: &TableDef) -> String {
    format!("{}_pkey", t.name)
}

/// True when the table's key is one the user declared (not the hidden
/// row id of a table without a primary key).
pub fn has_declared_key(t: &TableDef) -> bool {
    t.primary_key.iter().all(|&i| !t.columns[i].hidden)
}

fn visible(t: &TableDef) -> impl Iterator<Item = &eon_common::schema::ColumnDef> {
    t.columns.iter().filter(|c| !c.hidden)
}

/// (precision, radix, scale) of a numeric type, as information_schema
/// reports them.
fn numeric_info(ty: &SqlType) -> (Option<i32>, Option<i32>, Option<i32>) {
    match ty {
        SqlType::Int2 => (Some(16), Some(2), Some(0)),
        SqlType::Int4 => (Some(32), Some(2), Some(0)),
        SqlType::Int8 => (Some(64), Some(2), Some(0)),
        SqlType::Float4 => (Some(24), Some(2), None),
        SqlType::Float8 => (Some(53), Some(2), None),
        SqlType::Numeric { precision: 0, .. } => (None, Some(10), None),
        SqlType::Numeric { precision, scale } => {
            (Some(*precision as i32), Some(10), Some(*scale as i32))
        }
        _ => (None, None, None),
    }
}

fn view(
    name: &str,
    tables: &[Arc<TableDef>],
    views: &[eon_proto::v1::View],
    schemas: &[eon_proto::v1::Schema],
) -> (Columns, Vec<Vec<ScalarValue>>) {
    let mut rows = Vec::new();
    let cols: Columns = match name {
        "schemata" => {
            let fixed = SCHEMAS.iter().map(|s| (*s, "eon"));
            let made = schemas.iter().map(|s| (s.name.as_str(), s.owner.as_str()));
            for (s, owner) in fixed.chain(made) {
                rows.push(vec![
                    text(DATABASE),
                    text(s),
                    text(owner),
                    null(),
                    null(),
                    null(),
                    null(),
                ]);
            }
            vec![
                ("catalog_name", false),
                ("schema_name", false),
                ("schema_owner", false),
                ("default_character_set_catalog", false),
                ("default_character_set_schema", false),
                ("default_character_set_name", false),
                ("sql_path", false),
            ]
        }
        "tables" => {
            for t in tables {
                rows.push(vec![
                    text(DATABASE),
                    text(&t.schema),
                    text(&t.name),
                    text(if eon_common::schema::is_temp_schema(&t.schema) {
                        "LOCAL TEMPORARY"
                    } else {
                        "BASE TABLE"
                    }),
                    null(),
                    null(),
                    null(),
                    null(),
                    null(),
                    text("YES"),
                    text("NO"),
                    null(),
                ]);
            }
            for v in views {
                rows.push(vec![
                    text(DATABASE),
                    text(&v.schema),
                    text(&v.name),
                    text("VIEW"),
                    null(),
                    null(),
                    null(),
                    null(),
                    null(),
                    text("NO"),
                    text("NO"),
                    null(),
                ]);
            }
            vec![
                ("table_catalog", false),
                ("table_schema", false),
                ("table_name", false),
                ("table_type", false),
                ("self_referencing_column_name", false),
                ("reference_generation", false),
                ("user_defined_type_catalog", false),
                ("user_defined_type_schema", false),
                ("user_defined_type_name", false),
                ("is_insertable_into", false),
                ("is_typed", false),
                ("commit_action", false),
            ]
        }
        "columns" => {
            for t in tables {
                for (n, c) in visible(t).enumerate() {
                    let (precision, radix, scale) = numeric_info(&c.ty);
                    let length = match c.ty {
                        SqlType::Varchar { max_length } => max_length.map(|n| n as i32),
                        SqlType::Char { length } => Some(length as i32),
                        _ => None,
                    };
                    let datetime = matches!(c.ty, SqlType::Timestamp | SqlType::TimestampTz)
                        .then_some(6)
                        .or(matches!(c.ty, SqlType::Date).then_some(0));
                    rows.push(vec![
                        text(DATABASE),
                        text(&t.schema),
                        text(&t.name),
                        text(&c.name),
                        int(n + 1),
                        c.default_sql
                            .as_deref()
                            .map(|d| text(crate::sequences::display_default(d)))
                            .unwrap_or(null()),
                        yes_no(c.nullable),
                        text(c.ty.sql_name()),
                        length.map(int).unwrap_or(null()),
                        length.map(|n| int(n.saturating_mul(4))).unwrap_or(
                            if matches!(
                                c.ty,
                                SqlType::Text | SqlType::Varchar { .. } | SqlType::Char { .. }
                            ) {
                                int(1_073_741_824)
                            } else {
                                null()
                            },
                        ),
                        precision.map(int).unwrap_or(null()),
                        radix.map(int).unwrap_or(null()),
                        scale.map(int).unwrap_or(null()),
                        datetime.map(int).unwrap_or(null()),
                        null(),
                        text(DATABASE),
                        text("pg_catalog"),
                        text(c.ty.short_name()),
                        text("NO"),
                        null(),
                        text("NEVER"),
                        null(),
                        text("YES"),
                        null(),
                        text((n + 1).to_string()),
                    ]);
                }
            }
            vec![
                ("table_catalog", false),
                ("table_schema", false),
                ("table_name", false),
                ("column_name", false),
                ("ordinal_position", true),
                ("column_default", false),
                ("is_nullable", false),
                ("data_type", false),
                ("character_maximum_length", true),
                ("character_octet_length", true),
                ("numeric_precision", true),
                ("numeric_precision_radix", true),
                ("numeric_scale", true),
                ("datetime_precision", true),
                ("interval_type", false),
                ("udt_catalog", false),
                ("udt_schema", false),
                ("udt_name", false),
                ("is_identity", false),
                ("identity_generation", false),
                ("is_generated", false),
                ("generation_expression", false),
                ("is_updatable", false),
                ("collation_name", false),
                ("dtd_identifier", false),
            ]
        }
        "table_constraints" => {
            let kind = |t: &TableDef, name: &str, kind: &str| {
                [
                    named_constraint(t, name).to_vec(),
                    vec![text(kind), text("NO"), text("NO"), text("YES"), null()],
                ]
                .concat()
            };
            for t in tables.iter() {
                if has_declared_key(t) {
                    rows.push(kind(t, &pkey_name(t), "PRIMARY KEY"));
                }
                for fk in &t.foreign_keys {
                    rows.push(kind(t, &fk.name, "FOREIGN KEY"));
                }
                for check in &t.proto().checks {
                    rows.push(kind(t, &check.name, "CHECK"));
                }
                for ix in t.indexes.iter().filter(|i| i.constraint) {
                    rows.push(kind(t, &ix.name, "UNIQUE"));
                }
            }
            [
                &CONSTRAINT_AND_TABLE[..],
                &[
                    ("constraint_type", false),
                    ("is_deferrable", false),
                    ("initially_deferred", false),
                    ("enforced", false),
                    ("nulls_distinct", false),
                ],
            ]
            .concat()
        }
        "check_constraints" => {
            for t in tables.iter() {
                for check in &t.proto().checks {
                    let clause = crate::checks::definition(check);
                    rows.push(vec![
                        text(DATABASE),
                        text(&t.schema),
                        text(&check.name),
                        // "CHECK (x)" without the keyword, as PostgreSQL.
                        text(&clause["CHECK ".len()..]),
                    ]);
                }
            }
            vec![
                ("constraint_catalog", false),
                ("constraint_schema", false),
                ("constraint_name", false),
                ("check_clause", false),
            ]
        }
        "key_column_usage" | "constraint_column_usage" => {
            let key_usage = name == "key_column_usage";
            for t in tables.iter() {
                // (constraint, its columns here, the key they point at: the
                // referenced table and columns of a foreign key, else these)
                let mut keys: Vec<(String, Vec<usize>, Option<(&TableDef, Vec<usize>)>)> =
                    Vec::new();
                if has_declared_key(t) {
                    keys.push((pkey_name(t), t.primary_key.clone(), None));
                }
                for ix in t.indexes.iter().filter(|i| i.constraint) {
                    keys.push((ix.name.clone(), ix.columns.clone(), None));
                }
                for fk in &t.foreign_keys {
                    let parent = tables
                        .iter()
                        .find(|p| fk.references(&p.schema, &p.name))
                        .map(|p| (p.as_ref(), fk.ref_columns.clone()));
                    keys.push((fk.name.clone(), fk.columns.clone(), parent));
                }
                for (constraint, columns, target) in keys {
                    if key_usage {
                        for (pos, &i) in columns.iter().enumerate() {
                            rows.push(
                                [
                                    named_constraint(t, &constraint).to_vec(),
                                    vec![
                                        text(&t.columns[i].name),
                                        int(pos + 1),
                                        if target.is_some() {
                                            int(pos + 1)
                                        } else {
                                            null()
                                        },
                                    ],
                                ]
                                .concat(),
                            );
                        }
                        continue;
                    }
                    // constraint_column_usage: the columns a constraint
                    // uses — for a foreign key, the referenced ones.
                    let (owner, used) = target.unwrap_or((t.as_ref(), columns));
                    for i in used {
                        rows.push(vec![
                            text(DATABASE),
                            text(&owner.schema),
                            text(&owner.name),
                            text(&owner.columns[i].name),
                            text(DATABASE),
                            text(&t.schema),
                            text(&constraint),
                        ]);
                    }
                }
            }
            if key_usage {
                [
                    &CONSTRAINT_AND_TABLE[..],
                    &[
                        ("column_name", false),
                        ("ordinal_position", true),
                        ("position_in_unique_constraint", true),
                    ],
                ]
                .concat()
            } else {
                vec![
                    ("table_catalog", false),
                    ("table_schema", false),
                    ("table_name", false),
                    ("column_name", false),
                    ("constraint_catalog", false),
                    ("constraint_schema", false),
                    ("constraint_name", false),
                ]
            }
        }
        // Not filled in yet (foreign keys are in pg_constraint; eon has no
        // views, sequences here come later): the views exist, empty, so
        // that tools that read them work.
        "referential_constraints" => vec![
            ("constraint_catalog", false),
            ("constraint_schema", false),
            ("constraint_name", false),
            ("unique_constraint_catalog", false),
            ("unique_constraint_schema", false),
            ("unique_constraint_name", false),
            ("match_option", false),
            ("update_rule", false),
            ("delete_rule", false),
        ],
        "views" => {
            for v in views {
                rows.push(vec![
                    text(DATABASE),
                    text(&v.schema),
                    text(&v.name),
                    text(format!("{};", v.query)),
                    text("NONE"),
                    text("NO"),
                    text("NO"),
                    text("NO"),
                    text("NO"),
                    text("NO"),
                ]);
            }
            vec![
                ("table_catalog", false),
                ("table_schema", false),
                ("table_name", false),
                ("view_definition", false),
                ("check_option", false),
                ("is_updatable", false),
                ("is_insertable_into", false),
                ("is_trigger_updatable", false),
                ("is_trigger_deletable", false),
                ("is_trigger_insertable_into", false),
            ]
        }
        _ => vec![
            ("sequence_catalog", false),
            ("sequence_schema", false),
            ("sequence_name", false),
            ("data_type", false),
            ("numeric_precision", true),
            ("numeric_precision_radix", true),
            ("numeric_scale", true),
            ("start_value", false),
            ("minimum_value", false),
            ("maximum_value", false),
            ("increment", false),
            ("cycle_option", false),
        ],
    };
    (cols, rows)
}

fn mem_table(columns: &Columns, rows: Vec<Vec<ScalarValue>>) -> Result<MemTable, DataFusionError> {
    let schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, number)| {
                Field::new(
                    *name,
                    if *number {
                        DataType::Int32
                    } else {
                        DataType::Utf8
                    },
                    true,
                )
            })
            .collect::<Vec<_>>(),
    ));
    let arrays = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| -> Result<ArrayRef, DataFusionError> {
            if rows.is_empty() {
                return Ok(new_empty_array(f.data_type()));
            }
            let values = rows.iter().map(|r| match &r[i] {
                ScalarValue::Null => ScalarValue::try_from(f.data_type()),
                v => Ok(v.clone()),
            });
            ScalarValue::iter_to_array(values.collect::<Result<Vec<_>, _>>()?)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(rows.len())),
    )?;
    MemTable::try_new(schema, vec![vec![batch]])
}
