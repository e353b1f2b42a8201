//! ALTER TABLE.
//!
//! A table's rows are stored under its primary key (the key is what a
//! shard is chosen by and what rows are sorted by), so adding a primary key
//! to a table that had none — pgbench's `-i` does it to every table once
//! the data is loaded — means storing every row again. eon rewrites the
//! table:
//!
//! 1. A new table (a new id, the new key) is created under a temporary
//!    name.
//! 2. The old table is *fenced* on every data engine holding a shard of it:
//!    once the writes already staged on it are resolved, the engines refuse
//!    new ones with a serialization failure (40001), so a writing statement
//!    runs again — and finds the new table once it is in place. The fence
//!    is a lease the rewrite renews while it copies; it does not survive a
//!    data engine's restart, so each renewal checks the engine's
//!    incarnation and the rewrite gives up if one changed.
//! 3. The rows are copied at a snapshot taken after the fence, which
//!    nothing can change any more. NULL or duplicate keys fail the copy
//!    (23502, 23505) and leave the old table as it was.
//! 4. Meta swaps the two in one step (`SwapTable`): the new table takes the
//!    name, the old one's data is dropped.
//!
//! Readers are never stopped; writers wait (retrying) while the rows are
//! copied.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, PrimaryKeyConstraint, TableConstraint,
};
use eon_common::error::sqlstate;
use eon_common::{Error, Result, TableDef};
use eon_proto::v1 as pb;

use crate::cluster::Cluster;
use crate::dml::{quote, table_name};
use crate::session::{Output, Session};

/// How long a fence holds unless renewed, and how often it is renewed.
const FENCE_LEASE: Duration = Duration::from_secs(30);
const FENCE_RENEW: Duration = Duration::from_secs(5);
/// How long the rewrite waits for transactions with writes staged on the
/// table to end (PostgreSQL would wait for the table lock).
const FENCE_WAIT: Duration = Duration::from_secs(10);

pub async fn alter_table(session: &Session, at: &AlterTable) -> Result<Output> {
    let (schema, name) = table_name(&at.name)?;
    let cluster = session.cluster();
    // A fresh timestamp brings the catalog up to date.
    cluster.timestamp().await?;
    let Some(table) = cluster.table(&schema, &name) else {
        if at.if_exists {
            return Ok(Output::Command("ALTER TABLE".into()));
        }
        return Err(Error::user(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        ));
    };
    crate::privileges::require_owner(&session.actor(), &table)?;
    let [operation] = at.operations.as_slice() else {
        return Err(Error::unsupported(
            "ALTER TABLE with several operations is not supported yet",
        ));
    };
    match operation {
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::PrimaryKey(pk),
            ..
        } => add_primary_key(session, &table, pk).await?,
        other => {
            return Err(Error::unsupported(format!(
                "ALTER TABLE … {} is not supported yet",
                other
                    .to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
    }
    Ok(Output::Command("ALTER TABLE".into()))
}

async fn add_primary_key(
    session: &Session,
    table: &TableDef,
    pk: &PrimaryKeyConstraint,
) -> Result<()> {
    if !table.has_rowid() {
        return Err(Error::user(
            sqlstate::INVALID_TABLE_DEFINITION,
            format!(
                "multiple primary keys for table \"{}\" are not allowed",
                table.name
            ),
        ));
    }
    if session.in_transaction() {
        return Err(Error::user(
            sqlstate::ACTIVE_SQL_TRANSACTION,
            "ALTER TABLE … ADD PRIMARY KEY cannot run inside a transaction block",
        ));
    }
    let mut columns: Vec<_> = table
        .columns
        .iter()
        .filter(|c| !c.hidden)
        .cloned()
        .collect();
    let key = crate::ddl::key_columns(&pk.columns, &columns)?;
    for &i in &key {
        columns[i].nullable = false;
    }
    let cluster = session.cluster();
    let temp = format!("{}$rewrite{}", table.name, table.id);
    // What an earlier attempt that died half way left behind.
    if let Some((left, _)) = crate::ddl::detach(cluster, &table.schema, &temp).await? {
        crate::ddl::forget_data(cluster, &left).await;
    }
    let mut def = TableDef::new_proto(
        &table.schema,
        &temp,
        columns.clone(),
        key.clone(),
        table.shard_count,
    );
    def.foreign_keys = table.proto().foreign_keys.clone();
    let new = cluster
        .meta()
        .create_table(pb::CreateTableRequest {
            table: Some(def),
            if_not_exists: false,
            restore: false,
            sequences: vec![],
        })
        .await
        .map_err(Error::from_status)?
        .into_inner()
        .table
        .ok_or_else(|| Error::internal("meta created no table"))?;
    cluster.refresh_catalog().await?;
    let copied = async {
        let epochs = fence(cluster, table, FENCE_WAIT).await?;
        // Renew the fence; an engine with another incarnation lost it.
        let renew = || async {
            if fence(cluster, table, Duration::ZERO).await? != epochs {
                return Err(Error::write_conflict(format!(
                    "a data engine holding \"{}\" restarted during ALTER TABLE; run it again",
                    table.name
                )));
            }
            Ok(())
        };
        let renewing = async {
            loop {
                tokio::time::sleep(FENCE_RENEW).await;
                renew().await?;
            }
        };
        tokio::select! {
            r = copy_rows(session, table, &temp, &columns, &key) => r?,
            e = renewing => return e,
        }
        // The fence must still have held when the copy finished.
        renew().await?;
        cluster
            .meta()
            .swap_table(pb::SwapTableRequest {
                schema: table.schema.clone(),
                name: table.name.clone(),
                old_id: table.id,
                new_name: temp.clone(),
            })
            .await
            .map_err(Error::from_status)
    }
    .await;
    match copied {
        Ok(swapped) => {
            if let Some(old) = swapped.into_inner().old {
                crate::ddl::forget_data(cluster, &old).await;
            }
            cluster.refresh_catalog().await?;
            Ok(())
        }
        Err(e) => {
            let _ = lift_fence(cluster, table).await;
            crate::ddl::forget_data(cluster, &new).await;
            let _ = crate::ddl::detach(cluster, &table.schema, &temp).await;
            let _ = cluster.refresh_catalog().await;
            Err(e)
        }
    }
}

/// Copy the rows of `table` into `temp` (keyed by `key`), with
/// PostgreSQL's errors for keys that cannot be a primary key.
async fn copy_rows(
    session: &Session,
    table: &TableDef,
    temp: &str,
    columns: &[eon_common::schema::ColumnDef],
    key: &[usize],
) -> Result<()> {
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    let from = format!("{}.{}", quote(&table.schema), quote(&table.name));
    // NULL keys first: the copy would name the temporary table.
    let (ctx, _) = session.begin_statement().await?;
    let counts: Vec<String> = key
        .iter()
        .map(|&i| format!("count({})", names[i]))
        .chain(["count(*)".to_string()])
        .collect();
    let sql = format!("SELECT {} FROM {from}", counts.join(", "));
    let batches = crate::dml::query_rows(session, &ctx, &sql).await?;
    if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
        let count = |c: usize| {
            datafusion::common::ScalarValue::try_from_array(b.column(c), 0)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let all = count(key.len());
        if let Some(j) = (0..key.len()).find(|&j| count(j) != all) {
            return Err(Error::user(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "column \"{}\" of relation \"{}\" contains null values",
                    columns[key[j]].name, table.name
                ),
            ));
        }
    }
    let sql = format!(
        "INSERT INTO {}.{} ({list}) SELECT {list} FROM {from}",
        quote(&table.schema),
        quote(temp),
        list = names.join(", ")
    );
    let insert = session.parse(&sql)?.remove(0);
    match crate::dml::execute(session, &insert, &[]).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == sqlstate::UNIQUE_VIOLATION => {
            let mut out = Error::user(
                sqlstate::UNIQUE_VIOLATION,
                format!("could not create unique index \"{}\"", table.pkey_name()),
            );
            if let Some(d) = &e.detail {
                out = out.with_detail(d.replace("already exists", "is duplicated"));
            }
            Err(out)
        }
        Err(e) => Err(e),
    }
}

/// Fence `table` on every data engine holding a shard of it (or renew the
/// fence), waiting up to `wait` for its staged writes to resolve. Returns
/// each engine's incarnation.
async fn fence(cluster: &Cluster, table: &TableDef, wait: Duration) -> Result<BTreeMap<u64, u64>> {
    fence_request(cluster, table, FENCE_LEASE, wait).await
}

async fn lift_fence(cluster: &Cluster, table: &TableDef) -> Result<BTreeMap<u64, u64>> {
    fence_request(cluster, table, Duration::ZERO, Duration::ZERO).await
}

async fn fence_request(
    cluster: &Cluster,
    table: &TableDef,
    lease: Duration,
    wait: Duration,
) -> Result<BTreeMap<u64, u64>> {
    let mut epochs = BTreeMap::new();
    for &engine in &table.placement {
        if epochs.contains_key(&engine) {
            continue;
        }
        let request = pb::FenceTableRequest {
            table_id: table.id,
            lease_ms: lease.as_millis() as u64,
            wait_ms: wait.as_millis() as u64,
        };
        let r = cluster
            .with_engine(engine, Duration::from_secs(3), true, |mut c| {
                let request = request.clone();
                async move { c.fence_table(request).await }
            })
            .await?;
        epochs.insert(engine, r.into_inner().epoch);
    }
    Ok(epochs)
}
