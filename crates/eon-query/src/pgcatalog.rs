//! eon's view of `pg_catalog`.
//!
//! datafusion-pg-catalog builds PostgreSQL's catalog tables from DataFusion's
//! catalog, which knows only Arrow types: a uuid column would show as text,
//! `varchar(10)` and `numeric(10,2)` lose their modifiers, and no column has
//! a default. This schema provider passes every table through, except that
//! it completes two from eon's own table definitions:
//!
//! - `pg_attribute`: `atttypid` and `atttypmod` of eon's columns from their
//!   SQL types, `atthasdef` from their defaults;
//! - `pg_attrdef`: one row per column default, its text in `adbin` (what
//!   `pg_get_expr` shows).
//!
//! so that `\d table` in psql describes columns as PostgreSQL would.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use eon_common::{SqlType, TableDef};

use crate::cluster::Cluster;

#[derive(Debug)]
pub struct EonPgCatalog {
    pub inner: Arc<dyn SchemaProvider>,
    pub cluster: Arc<Cluster>,
}

#[async_trait]
impl SchemaProvider for EonPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let inner = self.inner.table(name).await?;
        Ok(match (name, inner) {
            ("pg_attribute" | "pg_attrdef", Some(t)) => Some(Arc::new(Completed {
                kind: name.to_string(),
                inner: t,
                catalog: self.inner.clone(),
                cluster: self.cluster.clone(),
            })),
            (_, other) => other,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_attribute` or `pg_attrdef`, completed from eon's definitions.
#[derive(Debug)]
struct Completed {
    kind: String,
    inner: Arc<dyn TableProvider>,
    catalog: Arc<dyn SchemaProvider>,
    cluster: Arc<Cluster>,
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
            ((*precision as i32) << 16 | (*scale as i32 & 0xffff)) + 4
        }
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

impl Completed {
    /// eon's tables by their pg_class oid.
    async fn tables_by_oid(
        &self,
        state: &dyn Session,
    ) -> Result<HashMap<i32, Arc<TableDef>>, DataFusionError> {
        let mut out = HashMap::new();
        let Some(pg_class) = self.catalog.table("pg_class").await? else {
            return Ok(out);
        };
        for b in rows_of(&pg_class, state).await? {
            let oids = int32(column(&b, "oid")?)?;
            let names = cast(column(&b, "relname")?, &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            for (i, oid) in oids.into_iter().enumerate() {
                if let (Some(oid), false) = (oid, names.is_null(i)) {
                    if let Some(t) = self.cluster.table("public", names.value(i)) {
                        out.insert(oid, t);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn complete(&self, state: &dyn Session) -> Result<Vec<RecordBatch>, DataFusionError> {
        let tables = self.tables_by_oid(state).await?;
        let batches = rows_of(&self.inner, state).await?;
        if self.kind == "pg_attribute" {
            batches
                .into_iter()
                .map(|b| patch_attributes(b, &tables))
                .collect()
        } else {
            let mut out = batches;
            out.push(attrdefs(&self.inner.schema(), &tables)?);
            Ok(out)
        }
    }
}

fn patch_attributes(
    b: RecordBatch,
    tables: &HashMap<i32, Arc<TableDef>>,
) -> Result<RecordBatch, DataFusionError> {
    let rel = int32(column(&b, "attrelid")?)?;
    let names = cast(column(&b, "attname")?, &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    let mut typid = int32(column(&b, "atttypid")?)?;
    let mut typmods = int32(column(&b, "atttypmod")?)?;
    let hasdef_col = column(&b, "atthasdef")?.as_boolean().clone();
    let mut hasdef: Vec<Option<bool>> = hasdef_col.iter().collect();
    for i in 0..b.num_rows() {
        let Some(t) = rel[i].and_then(|r| tables.get(&r)) else {
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
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One pg_attrdef row per column default of eon's tables.
fn attrdefs(
    schema: &SchemaRef,
    tables: &HashMap<i32, Arc<TableDef>>,
) -> Result<RecordBatch, DataFusionError> {
    let mut rows: Vec<(i32, i32, i16, String)> = Vec::new();
    let mut ordered: Vec<(&i32, &Arc<TableDef>)> = tables.iter().collect();
    ordered.sort_by_key(|(oid, _)| **oid);
    for (oid, t) in ordered {
        let visible = t.columns.iter().filter(|c| !c.hidden);
        for (n, c) in visible.enumerate() {
            if let Some(d) = &c.default_sql {
                rows.push((1_000_000 + rows.len() as i32, *oid, n as i16 + 1, d.clone()));
            }
        }
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let values: Vec<ScalarValue> = rows
            .iter()
            .map(|(id, rel, num, text)| match f.name().as_str() {
                "oid" => ScalarValue::Int32(Some(*id)),
                "adrelid" => ScalarValue::Int32(Some(*rel)),
                "adnum" => ScalarValue::Int16(Some(*num)),
                "adbin" => ScalarValue::Utf8(Some(text.clone())),
                _ => ScalarValue::Null,
            })
            .collect();
        let array = if values.is_empty() {
            datafusion::arrow::array::new_empty_array(f.data_type())
        } else {
            let a = ScalarValue::iter_to_array(values)?;
            if a.data_type() == &DataType::Null {
                datafusion::arrow::array::new_null_array(f.data_type(), a.len())
            } else {
                cast(&a, f.data_type())?
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(rows.len())),
    )?)
}

#[async_trait]
impl TableProvider for Completed {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
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
