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
//!
//! Changing the columns — `ADD COLUMN` (with its default, or NULL, for the
//! rows there are), `DROP COLUMN`, `RENAME COLUMN … TO` — is the same
//! rewrite with another column list. (PostgreSQL does these in the
//! catalog alone; eon's stored rows are Arrow batches of the table's
//! columns, so they are written again — in the background of readers,
//! like the rest.)
//!
//! `COMMENT ON TABLE` and `COMMENT ON COLUMN` change the catalog alone
//! (meta's UpdateTable): the text is kept in the table's definition, where
//! pg_description, `obj_description` and `col_description` find it. So
//! does `RENAME TO`: rows are stored under the table's id, meta points the
//! foreign keys and owned sequences at the new name, and the views that
//! name the table get their stored query rewritten in the same change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, CommentObject, ObjectName, PrimaryKeyConstraint,
    RenameTableNameKind, SqlOption, TableConstraint,
};
use eon_common::error::sqlstate;
use eon_common::{Error, Result, TableDef};
use eon_proto::v1 as pb;

use crate::cluster::Cluster;
use crate::dml::{ident, quote};
use crate::session::{Output, Session};

/// How long a fence holds unless renewed, and how often it is renewed.
const FENCE_LEASE: Duration = Duration::from_secs(30);
const FENCE_RENEW: Duration = Duration::from_secs(5);
/// How long the rewrite waits for transactions with writes staged on the
/// table to end (PostgreSQL would wait for the table lock).
const FENCE_WAIT: Duration = Duration::from_secs(10);

/// The table `name` that a statement by its owner changes, as of a fresh
/// catalog: none if it does not exist and `if_exists`, else 42P01; 42501
/// for another role.
async fn owned_table(
    session: &Session,
    name: &ObjectName,
    if_exists: bool,
) -> Result<Option<Arc<TableDef>>> {
    let (schema, name) = session.relation(name)?;
    // A fresh timestamp brings the catalog up to date.
    session.cluster().timestamp().await?;
    let Some(table) = session.cluster().table(&schema, &name) else {
        if if_exists {
            return Ok(None);
        }
        return Err(Error::user(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        ));
    };
    crate::privileges::require_owner(&session.actor(), &table)?;
    Ok(Some(table))
}

pub async fn alter_table(session: &Session, at: &AlterTable) -> Result<Output> {
    let Some(table) = owned_table(session, &at.name, at.if_exists).await? else {
        return Ok(Output::Command("ALTER TABLE".into()));
    };
    if let [op] = at.operations.as_slice()
        && let Some((child, bound)) = crate::partitions::attachment(op)
    {
        crate::partitions::attach(session, &at.name, &child, bound.as_deref()).await?;
        return Ok(Output::Command("ALTER TABLE".into()));
    }
    let [operation] = at.operations.as_slice() else {
        // Several operations are made one after another, each as it would
        // be alone (each a change of its own: one that fails leaves the
        // ones before it made).
        for op in &at.operations {
            let one = AlterTable {
                operations: vec![op.clone()],
                ..at.clone()
            };
            Box::pin(alter_table(session, &one)).await?;
        }
        return Ok(Output::Command("ALTER TABLE".into()));
    };
    match operation {
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::PrimaryKey(pk),
            ..
        } => add_primary_key(session, &table, pk).await?,
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::Check(check),
            ..
        } => add_check(session, &table, check).await?,
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::Unique(unique),
            ..
        } => add_unique(session, &table, unique).await?,
        AlterTableOperation::DropConstraint {
            if_exists,
            name: constraint,
            ..
        } => drop_constraint(session, &table, &ident(constraint), *if_exists).await?,
        AlterTableOperation::AddColumn {
            if_not_exists,
            column_def,
            column_position: None,
            ..
        } => add_column(session, &table, column_def, *if_not_exists).await?,
        AlterTableOperation::DropColumn {
            column_names,
            if_exists,
            ..
        } => {
            for c in column_names {
                // Each drop works on the table the previous one left.
                let table = session
                    .cluster()
                    .table(&table.schema, &table.name)
                    .ok_or_else(|| Error::internal("the table went away"))?;
                drop_column(session, &table, &ident(c), *if_exists).await?;
            }
        }
        AlterTableOperation::RenameTable {
            table_name: RenameTableNameKind::To(new) | RenameTableNameKind::As(new),
        } => rename_table(session, &table, new).await?,
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => {
            rename_column(
                session,
                &table,
                &ident(old_column_name),
                &ident(new_column_name),
            )
            .await?
        }
        AlterTableOperation::SetOptionsParens { options } => storage_parameters(options)?,
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
    let mut def = TableDef::new_proto(
        &table.schema,
        &table.name,
        columns.clone(),
        key.clone(),
        table.shard_count,
    );
    // Identity columns stay identity columns.
    for (new, old) in def
        .columns
        .iter_mut()
        .zip(table.proto().columns.iter().filter(|c| !c.hidden))
    {
        new.identity = old.identity.clone();
    }
    def.foreign_keys = table.proto().foreign_keys.clone();
    def.checks = table.proto().checks.clone();
    def.indexes = table.proto().indexes.clone();
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    rewrite(
        session,
        table,
        def,
        Copy {
            new_key: Some(key),
            ..Copy::same(names)
        },
        "ALTER TABLE … ADD PRIMARY KEY",
    )
    .await
}

/// How a rewrite fills the new table: `INSERT INTO new (targets) SELECT
/// sources FROM old`; `new_key` when the rewrite makes a primary key (its
/// columns must hold no NULLs nor duplicates).
struct Copy {
    targets: Vec<String>,
    sources: Vec<String>,
    new_key: Option<Vec<usize>>,
    /// A unique index the rewrite makes: duplicates fail the copy with
    /// PostgreSQL's "could not create unique index".
    new_unique: Option<String>,
}

impl Copy {
    /// Columns `names` copied as they are.
    fn same(names: Vec<String>) -> Copy {
        Copy {
            sources: names.iter().map(|n| quote(n)).collect(),
            targets: names,
            new_key: None,
            new_unique: None,
        }
    }

    /// The new name of column `old` (None: not copied).
    fn renamed(&self, old: &str) -> Option<&str> {
        let source = quote(old);
        self.sources
            .iter()
            .position(|s| *s == source)
            .map(|i| self.targets[i].as_str())
    }
}

/// Rewrite `table` as `def`, an index added or a constraint that needs
/// every row checked (see the module doc): the rows are copied as they
/// are. `unique` names a unique index being made.
pub(crate) async fn rebuild(
    session: &Session,
    table: &TableDef,
    def: pb::Table,
    what: &str,
    unique: Option<&str>,
) -> Result<()> {
    let copy = Copy {
        new_unique: unique.map(str::to_string),
        ..Copy::same(visible(table))
    };
    rewrite(session, table, def, copy, what).await
}

/// Carry `def`'s indexes (columns numbered as in `table`) over to `def`'s
/// columns, following renames; an index on a column the copy leaves out
/// goes, as PostgreSQL drops an index with its column. Storage tables are
/// shaped anew.
fn carry_indexes(table: &TableDef, def: &mut pb::Table, copy: &Copy) -> Result<()> {
    let new_position = |old: u32| -> Option<u32> {
        let name = copy.renamed(&table.columns.get(old as usize)?.name)?;
        def.columns
            .iter()
            .position(|c| c.name == name)
            .map(|p| p as u32)
    };
    let carried: Vec<pb::Index> = def
        .indexes
        .iter()
        .filter_map(|ix| {
            let columns: Option<Vec<u32>> = ix.columns.iter().map(|&c| new_position(c)).collect();
            columns.map(|columns| pb::Index {
                columns,
                ..ix.clone()
            })
        })
        .collect();
    def.indexes = carried;
    crate::indexes::shape_storage(def)
}

/// Rewrite `table` as `def` (see the module doc), copying its rows as
/// `copy` says; `what` names the operation in errors.
async fn rewrite(
    session: &Session,
    table: &TableDef,
    mut def: pb::Table,
    copy: Copy,
    what: &str,
) -> Result<()> {
    if session.in_transaction() {
        return Err(Error::user(
            sqlstate::ACTIVE_SQL_TRANSACTION,
            format!("{what} cannot run inside a transaction block"),
        ));
    }
    let cluster = session.cluster();
    let temp = format!("{}$rewrite{}", table.name, table.id);
    carry_indexes(table, &mut def, &copy)?;
    // What an earlier attempt that died half way left behind.
    if let Some((left, _)) = crate::ddl::detach(cluster, &table.schema, &temp).await? {
        crate::ddl::forget_data(cluster, &left).await;
    }
    def.id = 0;
    def.name = temp.clone();
    // Not a partition until it replaces the table (SwapTable moves the
    // bound over): a partitioned table must not see its rows twice.
    def.partition_of = None;
    def.placement = vec![];
    def.replicas = vec![];
    def.owner = table.proto().owner.clone();
    def.grants = vec![];
    def.shard_count = table.shard_count;
    let new = cluster
        .meta()
        .create_table(pb::CreateTableRequest {
            table: Some(def),
            if_not_exists: false,
            restore: false,
            sequences: vec![],
            replaces: table.id,
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
            r = copy_rows(session, table, &temp, &copy) => r?,
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

/// COMMENT ON TABLE t | COLUMN t.c IS 'text' | NULL (NULL or '' removes it).
pub async fn comment_on(
    session: &Session,
    object_type: &CommentObject,
    object: &ObjectName,
    comment: Option<&str>,
    if_exists: bool,
) -> Result<Output> {
    let (table_part, column) = match object_type {
        CommentObject::Table => (object.clone(), None),
        CommentObject::Column => {
            let mut parts = object.0.clone();
            let column = parts.pop().and_then(|p| p.as_ident().map(ident));
            match column {
                Some(c) if !parts.is_empty() => (ObjectName(parts), Some(c)),
                _ => {
                    return Err(Error::syntax(format!(
                        "column name must be qualified: {object}"
                    )));
                }
            }
        }
        other => {
            return Err(Error::unsupported(format!(
                "COMMENT ON {other} is not supported yet"
            )));
        }
    };
    let Some(table) = owned_table(session, &table_part, if_exists).await? else {
        return Ok(Output::Command("COMMENT".into()));
    };
    let text = comment.unwrap_or_default().to_string();
    let mut def = table.proto().clone();
    match column {
        None => def.comment = text,
        Some(c) => {
            let i = column_index(&table, &c).ok_or_else(|| no_column(&table, &c))?;
            def.columns[i].comment = text;
        }
    }
    crate::indexes::update_table(session, def, vec![], "COMMENT").await?;
    Ok(Output::Command("COMMENT".into()))
}

/// The index of visible column `name`, or 42703.
fn column_index(table: &TableDef, name: &str) -> Option<usize> {
    table
        .columns
        .iter()
        .position(|c| c.name == name && !c.hidden)
}

fn no_column(table: &TableDef, name: &str) -> Error {
    Error::user(
        sqlstate::UNDEFINED_COLUMN,
        format!(
            "column \"{name}\" of relation \"{}\" does not exist",
            table.name
        ),
    )
}

/// The visible columns' names (the hidden row id left out).
fn visible(table: &TableDef) -> Vec<String> {
    table
        .columns
        .iter()
        .filter(|c| !c.hidden)
        .map(|c| c.name.clone())
        .collect()
}

async fn add_column(
    session: &Session,
    table: &TableDef,
    c: &datafusion::sql::sqlparser::ast::ColumnDef,
    if_not_exists: bool,
) -> Result<()> {
    use datafusion::sql::sqlparser::ast::ColumnOption;
    let name = ident(&c.name);
    if table.columns.iter().any(|x| x.name == name) {
        if if_not_exists {
            // PostgreSQL adds a NOTICE; eon sends none yet.
            return Ok(());
        }
        return Err(Error::user(
            sqlstate::DUPLICATE_COLUMN,
            format!(
                "column \"{name}\" of relation \"{}\" already exists",
                table.name
            ),
        ));
    }
    if crate::sequences::serial_type(&c.data_type).is_some() {
        return Err(Error::unsupported(
            "ALTER TABLE … ADD COLUMN of a serial column is not supported yet",
        ));
    }
    let mut column = pb::Column {
        name: name.clone(),
        r#type: Some(crate::enums::column_type(session, &c.data_type)?.to_proto()),
        nullable: true,
        ..Default::default()
    };
    for opt in &c.options {
        match &opt.option {
            ColumnOption::Null => column.nullable = true,
            ColumnOption::NotNull => column.nullable = false,
            ColumnOption::Default(e) => column.default_sql = e.to_string(),
            other => {
                return Err(Error::unsupported(format!(
                    "ALTER TABLE … ADD COLUMN with {other} is not supported yet"
                )));
            }
        }
    }
    if !column.nullable && column.default_sql.is_empty() {
        // PostgreSQL's check: only an empty table can take it.
        let (ctx, _) = session.begin_statement().await?;
        let sql = format!(
            "SELECT 1 FROM {}.{} LIMIT 1",
            quote(&table.schema),
            quote(&table.name)
        );
        let rows = crate::dml::query_rows(session, &ctx, &sql).await?;
        if rows.iter().any(|b| b.num_rows() > 0) {
            return Err(Error::user(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "column \"{name}\" of relation \"{}\" contains null values",
                    table.name
                ),
            ));
        }
    }
    let mut def = table.proto().clone();
    def.columns.push(column);
    let names = visible(table);
    rewrite(
        session,
        table,
        def,
        // The new column is left out: the INSERT fills in its default.
        Copy::same(names),
        "ALTER TABLE … ADD COLUMN",
    )
    .await
}

async fn add_check(
    session: &Session,
    table: &TableDef,
    check: &datafusion::sql::sqlparser::ast::CheckConstraint,
) -> Result<()> {
    let name = crate::checks::name(
        &table.name,
        check.name.as_ref().map(ident),
        &visible(table),
        &check.expr,
        &constraint_names(table),
    )?;
    let mut def = table.proto().clone();
    def.checks.push(crate::checks::define(
        session,
        &table.name,
        &table.columns,
        name.clone(),
        &check.expr,
    )?);
    // The copy checks every row against the new constraint — the only one
    // they can fail: they met the others.
    rewrite(
        session,
        table,
        def,
        Copy::same(visible(table)),
        "ALTER TABLE … ADD CONSTRAINT",
    )
    .await
    .map_err(|e| {
        if e.code != sqlstate::CHECK_VIOLATION {
            return e;
        }
        Error::user(
            sqlstate::CHECK_VIOLATION,
            format!(
                "check constraint \"{name}\" of relation \"{}\" is violated by some row",
                table.name
            ),
        )
    })
}

/// ADD [CONSTRAINT name] UNIQUE (columns): a unique index, filled by a
/// rewrite whose copy finds any duplicates.
async fn add_unique(
    session: &Session,
    table: &TableDef,
    unique: &datafusion::sql::sqlparser::ast::UniqueConstraint,
) -> Result<()> {
    let columns = crate::indexes::columns(table, &unique.columns, "UNIQUE constraints")?;
    let name = crate::indexes::constraint_name(
        session,
        table,
        unique.name.as_ref().map(ident),
        &columns,
        &constraint_names(table),
    )?;
    let mut def = table.proto().clone();
    def.indexes
        .push(crate::indexes::define(&name, columns, true, true));
    rebuild(
        session,
        table,
        def,
        "ALTER TABLE … ADD CONSTRAINT",
        Some(&name),
    )
    .await
}

/// The names of `table`'s constraints.
fn constraint_names(table: &TableDef) -> Vec<String> {
    let mut names: Vec<String> = table.foreign_keys.iter().map(|f| f.name.clone()).collect();
    names.extend(table.proto().checks.iter().map(|c| c.name.clone()));
    names.extend(
        table
            .indexes
            .iter()
            .filter(|i| i.constraint)
            .map(|i| i.name.clone()),
    );
    if !table.has_rowid() {
        names.push(table.pkey_name());
    }
    names
}

/// DROP CONSTRAINT of a CHECK constraint or a foreign key. (Neither needs
/// the rows rewritten — PostgreSQL only changes its catalog — but a
/// rewrite is the one way eon changes a table's definition yet.)
async fn drop_constraint(
    session: &Session,
    table: &TableDef,
    name: &str,
    if_exists: bool,
) -> Result<()> {
    let mut def = table.proto().clone();
    let count = |d: &pb::Table| d.checks.len() + d.foreign_keys.len() + d.indexes.len();
    let before = count(&def);
    def.checks.retain(|c| c.name != name);
    def.foreign_keys.retain(|f| f.name != name);
    def.indexes.retain(|i| !(i.constraint && i.name == name));
    if count(&def) == before {
        if !table.has_rowid() && table.pkey_name() == name {
            return Err(Error::unsupported(
                "dropping a table's primary key is not supported",
            ));
        }
        if if_exists {
            return Ok(());
        }
        return Err(Error::user(
            sqlstate::UNDEFINED_OBJECT,
            format!(
                "constraint \"{name}\" of relation \"{}\" does not exist",
                table.name
            ),
        ));
    }
    // Rows stay as they are: only the catalog changes.
    crate::indexes::update_table(session, def, vec![], "ALTER TABLE … DROP CONSTRAINT").await
}

async fn drop_column(
    session: &Session,
    table: &TableDef,
    name: &str,
    if_exists: bool,
) -> Result<()> {
    let Some(i) = column_index(table, name) else {
        if if_exists {
            // PostgreSQL adds a NOTICE; eon sends none yet.
            return Ok(());
        }
        return Err(no_column(table, name));
    };
    let depends = |what: String| {
        Error::user(
            sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
            format!(
                "cannot drop column {name} of table {} because {what} depends on it",
                table.name
            ),
        )
    };
    if table.primary_key.contains(&i) {
        return Err(depends(format!("constraint {}", table.pkey_name())));
    }
    if table.columns.iter().filter(|c| !c.hidden).count() == 1 {
        return Err(Error::unsupported(
            "a table without columns is not supported",
        ));
    }
    if let Some(fk) = table.foreign_keys.iter().find(|fk| fk.columns.contains(&i)) {
        return Err(depends(format!("constraint {}", fk.name)));
    }
    // Other tables' foreign keys name this table's key columns by position.
    let shifted = table.primary_key.iter().any(|&k| k > i);
    if shifted {
        let cluster = session.cluster();
        if let Some(other) = cluster.tables().into_iter().find(|t| {
            t.foreign_keys
                .iter()
                .any(|fk| fk.ref_schema == table.schema && fk.ref_table == table.name)
        }) {
            return Err(Error::unsupported(format!(
                "dropping a column before the primary key of a table that \"{}\" references is not supported yet",
                other.name
            )));
        }
    }
    let shift = |k: u32| if k as usize > i { k - 1 } else { k };
    let mut def = table.proto().clone();
    def.columns.remove(i);
    // CHECK constraints on the column go with it, as in PostgreSQL.
    def.checks
        .retain(|c| !crate::checks::columns(table, c).contains(&i));
    def.primary_key = def.primary_key.iter().map(|&k| shift(k)).collect();
    for fk in &mut def.foreign_keys {
        fk.columns = fk.columns.iter().map(|&k| shift(k)).collect();
    }
    let names: Vec<String> = visible(table).into_iter().filter(|n| n != name).collect();
    rewrite(
        session,
        table,
        def,
        Copy::same(names),
        "ALTER TABLE … DROP COLUMN",
    )
    .await
}

/// ALTER TABLE … RENAME TO new: a change of the catalog alone (rows are
/// stored under the table's id, not its name). In the same change meta
/// points the foreign keys that reference it and the sequences it owns at
/// the new name, and the views that name it get their query rewritten.
async fn rename_table(session: &Session, table: &TableDef, new: &ObjectName) -> Result<()> {
    let (schema, name) = crate::dml::name_parts(new)?;
    if schema.is_some() {
        return Err(Error::syntax(format!(
            "syntax error at or near \".\": RENAME TO takes a name without a schema ({new})"
        )));
    }
    let mut def = table.proto().clone();
    def.name = name.clone();
    let mut views = Vec::new();
    for mut view in session.cluster().views() {
        let mut query = crate::views::parse(&view.query)?;
        let mut changed = false;
        let _ = datafusion::sql::sqlparser::ast::visit_relations_mut(&mut query, |rel| {
            let names: Vec<String> = rel
                .0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(ident)
                .collect();
            let refers = match names.as_slice() {
                [t] => {
                    t == &table.name && (table.schema == "public" || table.schema == view.schema)
                }
                [s, t] | [_, s, t] => t == &table.name && s == &table.schema,
                _ => false,
            };
            if refers && let Some(last) = rel.0.last_mut() {
                *last = datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(
                    datafusion::sql::sqlparser::ast::Ident::with_quote('"', &name),
                );
                changed = true;
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        if changed {
            view.query = query.to_string();
            views.push(view);
        }
    }
    crate::indexes::update_table(session, def, views, "ALTER TABLE … RENAME").await
}

async fn rename_column(session: &Session, table: &TableDef, old: &str, new: &str) -> Result<()> {
    let i = column_index(table, old).ok_or_else(|| no_column(table, old))?;
    if table.columns.iter().any(|c| c.name == new) {
        return Err(Error::user(
            sqlstate::DUPLICATE_COLUMN,
            format!(
                "column \"{new}\" of relation \"{}\" already exists",
                table.name
            ),
        ));
    }
    let mut def = table.proto().clone();
    def.columns[i].name = new.to_string();
    for check in &mut def.checks {
        check.expr = crate::checks::rename_column(&check.expr, old, new);
    }
    let sources: Vec<String> = visible(table).iter().map(|n| quote(n)).collect();
    let targets: Vec<String> = visible(table)
        .into_iter()
        .map(|n| if n == old { new.to_string() } else { n })
        .collect();
    rewrite(
        session,
        table,
        def,
        Copy {
            targets,
            sources,
            new_key: None,
            new_unique: None,
        },
        "ALTER TABLE … RENAME COLUMN",
    )
    .await
}

/// Copy the rows of `table` into `temp` as `copy` says, with PostgreSQL's
/// errors for keys that cannot be a primary key when it makes one.
async fn copy_rows(session: &Session, table: &TableDef, temp: &str, copy: &Copy) -> Result<()> {
    let from = format!("{}.{}", quote(&table.schema), quote(&table.name));
    if let Some(key) = &copy.new_key {
        // NULL keys first: the copy would name the temporary table.
        let (ctx, _) = session.begin_statement().await?;
        let counts: Vec<String> = key
            .iter()
            .map(|&i| format!("count({})", copy.sources[i]))
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
                        copy.targets[key[j]], table.name
                    ),
                ));
            }
        }
    }
    let targets: Vec<String> = copy.targets.iter().map(|n| quote(n)).collect();
    let sql = format!(
        "INSERT INTO {}.{} ({}) SELECT {} FROM {from}",
        quote(&table.schema),
        quote(temp),
        targets.join(", "),
        copy.sources.join(", ")
    );
    let insert = session.parse(&sql)?.remove(0);
    match crate::dml::execute(session, &insert, &[]).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.code == sqlstate::UNIQUE_VIOLATION
                && (copy.new_key.is_some() || copy.new_unique.is_some()) =>
        {
            let index = match &copy.new_unique {
                Some(name) => name.clone(),
                None => table.pkey_name(),
            };
            let mut out = Error::user(
                sqlstate::UNIQUE_VIOLATION,
                format!("could not create unique index \"{index}\""),
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
    // Every copy: a replicated shard's leader may move while it holds.
    let mut epochs = BTreeMap::new();
    for engine in eon_common::schema::engines_of(table.proto()) {
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

/// PostgreSQL's storage parameters of a table (`ALTER TABLE … SET
/// (fillfactor = 70)`). They tune PostgreSQL's heap, vacuum and parallel
/// planner, none of which eon has: a known one is accepted and has no
/// effect, as an application or migration tool setting it expects;
/// another is 22023, as PostgreSQL refuses it.
fn storage_parameters(options: &[SqlOption]) -> Result<()> {
    const KNOWN: &[&str] = &[
        "fillfactor",
        "parallel_workers",
        "toast_tuple_target",
        "autovacuum_enabled",
        "vacuum_index_cleanup",
        "vacuum_truncate",
        "log_autovacuum_min_duration",
        "user_catalog_table",
    ];
    for o in options {
        let name = match o {
            SqlOption::KeyValue { key, .. } => ident(key),
            SqlOption::Ident(key) => ident(key),
            other => return Err(Error::syntax(format!("invalid storage parameter {other}"))),
        };
        let bare = name.strip_prefix("toast.").unwrap_or(&name);
        if !KNOWN.contains(&bare) && !bare.starts_with("autovacuum_") {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("unrecognized parameter \"{name}\""),
            ));
        }
    }
    Ok(())
}
