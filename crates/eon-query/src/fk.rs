//! FOREIGN KEY enforcement.
//!
//! A foreign key says every non-NULL tuple of a child table's columns is the
//! primary key of a row of the parent table. Rows of the two tables live on
//! different shards, usually on different data engines, so no data engine
//! can check it alone: the query engine does, inside the writing statement,
//! at the statement's snapshot and within its transaction (its own earlier
//! writes count):
//!
//! - writing child rows (INSERT, or an UPDATE of the key columns) looks the
//!   referenced keys up in the parent — point reads by primary key — and
//!   fails with 23503 if one is missing;
//! - removing parent keys (DELETE, or an UPDATE that changes a key) looks for
//!   child rows still referencing them (a filtered scan of the child, as eon
//!   has no secondary indexes yet) and fails with 23503 if there is one
//!   (NO ACTION / RESTRICT; CASCADE and SET NULL are not supported yet).
//!
//! Concurrency: the lookups are reads of the transaction, so under
//! SERIALIZABLE (eon's default) they are tracked and re-checked at commit —
//! a parent deleted, or a child inserted, by a transaction that committed
//! meanwhile makes this one fail with 40001 instead of breaking the
//! constraint. Under READ COMMITTED two such transactions can both commit,
//! where PostgreSQL would make one wait on a row lock.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::common::ScalarValue;
use eon_common::error::sqlstate;
use eon_common::schema::ForeignKeyDef;
use eon_common::{Error, Result, TableDef};

use crate::dml::quote;
use crate::provider::StatementContext;
use crate::session::Session;

/// How many keys one lookup query carries.
const CHUNK: usize = 500;

/// A row's values of some columns, or None when one is NULL (a NULL
/// reference references nothing).
fn tuple(columns: &[ArrayRef], row: usize) -> Result<Option<Vec<ScalarValue>>> {
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        let v = ScalarValue::try_from_array(c, row).map_err(crate::errors::from_df)?;
        if v.is_null() {
            return Ok(None);
        }
        out.push(v);
    }
    Ok(Some(out))
}

/// The distinct non-NULL tuples of `columns` of `rows`.
fn tuples(rows: &RecordBatch, columns: &[usize]) -> Result<Vec<Vec<ScalarValue>>> {
    let arrays: Vec<ArrayRef> = columns.iter().map(|&i| rows.column(i).clone()).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for row in 0..rows.num_rows() {
        if let Some(t) = tuple(&arrays, row)? {
            if seen.insert(t.clone()) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The same, quoted for generated SQL.
fn quoted(table: &TableDef, columns: &[usize]) -> Vec<String> {
    table.column_names(columns).into_iter().map(quote).collect()
}

/// `(a = 1 AND b = 2) OR …` over `names`, one disjunct per tuple.
fn any_of(names: &[String], tuples: &[Vec<ScalarValue>]) -> Result<String> {
    if names.len() == 1 {
        let list = tuples
            .iter()
            .map(|t| crate::dml::sql_literal(&t[0]))
            .collect::<Result<Vec<_>>>()?;
        return Ok(format!("{} IN ({})", names[0], list.join(", ")));
    }
    let mut out = Vec::with_capacity(tuples.len());
    for t in tuples {
        let conj = names
            .iter()
            .zip(t)
            .map(|(n, v)| Ok(format!("{n} = {}", crate::dml::sql_literal(v)?)))
            .collect::<Result<Vec<_>>>()?;
        out.push(format!("({})", conj.join(" AND ")));
    }
    Ok(out.join(" OR "))
}

fn describe(names: &[&str], values: &[ScalarValue]) -> String {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("({})=({})", names.join(", "), values.join(", "))
}

/// Child rows about to be written to `table`: every foreign key's
/// referenced row must exist.
pub async fn check_references(
    session: &Session,
    ctx: &Arc<StatementContext>,
    table: &TableDef,
    rows: &RecordBatch,
) -> Result<()> {
    for fk in &table.foreign_keys {
        let wanted = tuples(rows, &fk.columns)?;
        if wanted.is_empty() {
            continue;
        }
        let parent = session.cluster().table(&fk.ref_schema, &fk.ref_table);
        let Some(parent) = parent else {
            return Err(Error::internal(format!(
                "foreign key {} references a missing table",
                fk.name
            )));
        };
        let ref_names = quoted(&parent, &fk.ref_columns);
        let mut found: HashSet<Vec<ScalarValue>> = HashSet::new();
        // A self-reference may name a row of this very statement.
        if parent.id == table.id {
            found.extend(tuples(rows, &fk.ref_columns)?);
        }
        for chunk in wanted.chunks(CHUNK) {
            let sql = format!(
                "SELECT {} FROM {}.{} WHERE {}",
                ref_names.join(", "),
                quote(&parent.schema),
                quote(&parent.name),
                any_of(&ref_names, chunk)?
            );
            for b in crate::dml::query_rows(session, ctx, &sql).await? {
                found.extend(tuples(&b, &(0..b.num_columns()).collect::<Vec<_>>())?);
            }
        }
        if let Some(missing) = wanted.iter().find(|t| !contains(&found, t)) {
            return Err(Error::user(
                sqlstate::FOREIGN_KEY_VIOLATION,
                format!(
                    "insert or update on table \"{}\" violates foreign key constraint \"{}\"",
                    table.name, fk.name
                ),
            )
            .with_detail(format!(
                "Key {} is not present in table \"{}\".",
                describe(&table.column_names(&fk.columns), missing),
                parent.name
            )));
        }
    }
    Ok(())
}

/// A key read back may differ in Arrow type from the one written (an int4
/// child column referencing an int8 key): compare as text then.
fn contains(found: &HashSet<Vec<ScalarValue>>, t: &[ScalarValue]) -> bool {
    found.contains(t)
        || found.iter().any(|f| {
            f.len() == t.len() && f.iter().zip(t).all(|(a, b)| a.to_string() == b.to_string())
        })
}

/// Keys about to disappear from `table` (`keys`: its primary key columns,
/// in key order): no row of any table may still reference one.
pub async fn check_unreferenced(
    session: &Session,
    ctx: &Arc<StatementContext>,
    table: &TableDef,
    keys: &RecordBatch,
) -> Result<()> {
    let referencing: Vec<(Arc<TableDef>, ForeignKeyDef)> = session
        .cluster()
        .tables()
        .into_iter()
        .flat_map(|t| {
            t.foreign_keys
                .iter()
                .filter(|f| f.references(&table.schema, &table.name))
                .cloned()
                .map(|f| (t.clone(), f))
                .collect::<Vec<_>>()
        })
        .collect();
    if referencing.is_empty() {
        return Ok(());
    }
    let gone = tuples(keys, &(0..keys.num_columns()).collect::<Vec<_>>())?;
    if gone.is_empty() {
        return Ok(());
    }
    for (child, fk) in referencing {
        let child_names = quoted(&child, &fk.columns);
        for chunk in gone.chunks(CHUNK) {
            let mut sql = format!(
                "SELECT {} FROM {}.{} WHERE ({})",
                child_names.join(", "),
                quote(&child.schema),
                quote(&child.name),
                any_of(&child_names, chunk)?
            );
            if child.id == table.id {
                // Rows deleted by this statement do not count.
                let key_names = quoted(table, &table.primary_key);
                sql.push_str(&format!(" AND NOT ({})", any_of(&key_names, chunk)?));
            }
            sql.push_str(" LIMIT 1");
            let batches = crate::dml::query_rows(session, ctx, &sql).await?;
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                let key = tuple(b.columns(), 0)?.unwrap_or_default();
                return Err(Error::user(
                    sqlstate::FOREIGN_KEY_VIOLATION,
                    format!(
                        "update or delete on table \"{}\" violates foreign key constraint \"{}\" on table \"{}\"",
                        table.name, fk.name, child.name
                    ),
                )
                .with_detail(format!(
                    "Key {} is still referenced from table \"{}\".",
                    describe(&table.column_names(&table.primary_key), &key),
                    child.name
                )));
            }
        }
    }
    Ok(())
}
