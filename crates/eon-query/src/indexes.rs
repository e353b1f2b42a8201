//! Secondary indexes: `CREATE [UNIQUE] INDEX`, UNIQUE constraints, `DROP
//! INDEX`, and the index entries every write keeps in step.
//!
//! An index is a table of its own, hidden behind the table it indexes (its
//! *storage*, `pb::Index.storage`): one entry per row, holding the indexed
//! columns followed by the row's primary key columns not among them. Entries
//! are sharded, versioned, logged and committed by the data engines like any
//! rows, and the query engine writes them in the same transaction as the
//! rows they point at — so an index can never disagree with its table, not
//! even across shards or after a crash:
//!
//! ```text
//!  INSERT row (id 7, email 'a@x')  ──►  rows of t:        key (7)         → whole row
//!                                  └─►  entries of t_email_key: key ('a@x') → (7)
//! ```
//!
//! - A **unique** index keys its entries by the indexed columns alone, so a
//!   second row with the same values is a duplicate key on the data engine
//!   holding that entry — 23505 naming the index — wherever the two rows
//!   live. A plain index keys them by every entry column (many rows may
//!   share a value; the primary key tells them apart).
//! - A row with NULL in an indexed column has no entry: SQL's comparisons
//!   never match NULL (so no lookup misses it), and NULLs never collide in
//!   a UNIQUE index (PostgreSQL's NULLS DISTINCT).
//! - UPDATE deletes the entries whose values changed and inserts the new
//!   ones; DELETE deletes them. [`changes`] works out which.
//!
//! Lookups: the planner ([`crate::provider`]) reads the entries in the range
//! a query's conditions allow, then fetches the rows by primary key.
//!
//! Making an index fills it from every row there is: eon runs the same
//! rewrite ALTER TABLE does (`alter::rewrite`) — writers wait while the rows
//! are copied into a new table that has the index, whose entries the copy
//! writes; readers go on. Dropping one changes only the catalog (meta's
//! `UpdateTable`) and frees its storage.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::sql::sqlparser::ast::{CreateIndex, IndexColumn, IndexType, ObjectName};
use eon_common::error::sqlstate;
use eon_common::key::encode_keys;
use eon_common::schema::IndexDef;
use eon_common::{Error, Result, TableDef};
use eon_proto::v1 as pb;

use crate::dml::ident;
use crate::provider::StatementContext;
use crate::session::{Output, Session};

/// One write to an index's storage.
pub struct EntryWrite {
    pub storage: Arc<TableDef>,
    pub kind: pb::WriteKind,
    /// Whole entries (INSERT, PUT) or their key columns (DELETE).
    pub rows: RecordBatch,
}

/// The entries of `rows` (whole rows of `table`) in index `ix`, and which
/// row each came from: rows with NULL in an indexed column have none.
pub fn entries(
    table: &TableDef,
    ix: &IndexDef,
    rows: &RecordBatch,
) -> Result<(RecordBatch, Vec<u32>)> {
    let indexed: Vec<u32> = (0..rows.num_rows())
        .filter(|&r| ix.columns.iter().all(|&c| rows.column(c).is_valid(r)))
        .map(|r| r as u32)
        .collect();
    let kept = if indexed.len() == rows.num_rows() {
        rows.clone()
    } else {
        take_record_batch(rows, &UInt32Array::from(indexed.clone()))?
    };
    let columns = ix
        .entry_columns(table)
        .iter()
        .map(|&c| kept.column(c).clone())
        .collect();
    let batch = RecordBatch::try_new(ix.storage.arrow_schema().clone(), columns)?;
    Ok((batch, indexed))
}

/// The index writes that keep every index of `table` in step when rows
/// change from `old` to `new` (row *i* of one is row *i* of the other;
/// either may be absent: INSERT has no old rows, DELETE no new ones).
/// Per index, deletions come first so that values moving between rows in
/// one statement do not collide.
pub fn changes(
    table: &TableDef,
    old: Option<&RecordBatch>,
    new: Option<&RecordBatch>,
) -> Result<Vec<EntryWrite>> {
    let mut out = Vec::new();
    for ix in &table.indexes {
        let storage = &ix.storage;
        let (old_batch, old_e) = encoded(table, ix, old)?;
        let (new_batch, new_e) = encoded(table, ix, new)?;
        // Positions (within each entries batch) of what to delete, put and
        // insert.
        let (mut delete, mut put, mut insert) = (vec![], vec![], vec![]);
        for r in 0..old_e.len().max(new_e.len()) {
            let o = old_e.get(r).and_then(|e| e.as_ref());
            let w = new_e.get(r).and_then(|e| e.as_ref());
            match (o, w) {
                (Some(o), Some(w)) if o.whole == w.whole => {}
                (Some(o), Some(w)) if o.key == w.key => put.push(w.at),
                _ => {
                    delete.extend(o.map(|o| o.at));
                    insert.extend(w.map(|w| w.at));
                }
            }
        }
        let pick = |batch: &Option<RecordBatch>, at: Vec<u32>| -> Result<Option<RecordBatch>> {
            match batch {
                Some(b) if !at.is_empty() => {
                    Ok(Some(take_record_batch(b, &UInt32Array::from(at))?))
                }
                _ => Ok(None),
            }
        };
        if let Some(rows) = pick(&old_batch, delete)? {
            out.push(EntryWrite {
                storage: storage.clone(),
                kind: pb::WriteKind::Delete,
                rows: rows.project(&storage.primary_key)?,
            });
        }
        for (at, kind) in [(put, pb::WriteKind::Put), (insert, pb::WriteKind::Insert)] {
            if let Some(rows) = pick(&new_batch, at)? {
                out.push(EntryWrite {
                    storage: storage.clone(),
                    kind,
                    rows,
                });
            }
        }
    }
    Ok(out)
}

/// One row's entry in an index: where it is in the entries batch, its key
/// and its whole encoding.
struct Entry {
    at: u32,
    key: Vec<u8>,
    whole: Vec<u8>,
}

/// The entries of `rows` in `ix`, and each row's entry (None: it has none).
fn encoded(
    table: &TableDef,
    ix: &IndexDef,
    rows: Option<&RecordBatch>,
) -> Result<(Option<RecordBatch>, Vec<Option<Entry>>)> {
    let Some(rows) = rows else {
        return Ok((None, vec![]));
    };
    let (batch, from) = entries(table, ix, rows)?;
    let storage = &ix.storage;
    let keys = encode_keys(
        &storage
            .primary_key
            .iter()
            .map(|&c| batch.column(c).clone())
            .collect::<Vec<_>>(),
    )?;
    let whole = encode_keys(batch.columns())?;
    let mut per_row: Vec<Option<Entry>> = (0..rows.num_rows()).map(|_| None).collect();
    for (i, (key, whole)) in keys.into_iter().zip(whole).enumerate() {
        per_row[from[i] as usize] = Some(Entry {
            at: i as u32,
            key,
            whole,
        });
    }
    Ok((Some(batch), per_row))
}

/// Rows of `rows` (whole rows of `table`) whose values a unique index
/// already holds among the rows before them: the ones ON CONFLICT DO
/// NOTHING skips within one statement.
pub fn repeated_in_batch(table: &TableDef, rows: &RecordBatch) -> Result<Vec<bool>> {
    let mut repeated = vec![false; rows.num_rows()];
    let mut keys: Vec<Vec<usize>> = vec![table.primary_key.clone()];
    keys.extend(
        table
            .indexes
            .iter()
            .filter(|i| i.unique)
            .map(|i| i.columns.clone()),
    );
    for cols in keys {
        for (r, again) in repeated_on(rows, &cols)?.into_iter().enumerate() {
            repeated[r] |= again;
        }
    }
    Ok(repeated)
}

/// Rows of `rows` whose values in `cols` an earlier row already has. A
/// row with a NULL among them repeats none: NULLs are never equal.
pub fn repeated_on(rows: &RecordBatch, cols: &[usize]) -> Result<Vec<bool>> {
    let keys = encode_keys(
        &cols
            .iter()
            .map(|&c| rows.column(c).clone())
            .collect::<Vec<_>>(),
    )?;
    let mut seen = std::collections::HashSet::new();
    Ok(keys
        .iter()
        .enumerate()
        .map(|(r, k)| cols.iter().all(|&c| rows.column(c).is_valid(r)) && !seen.insert(k))
        .collect())
}

/// Which of `rows` (whole rows of `table`) collide with a row already
/// there: same primary key, or same values in a unique index.
pub async fn existing(
    session: &Session,
    ctx: &Arc<StatementContext>,
    table: &TableDef,
    rows: &RecordBatch,
) -> Result<Vec<bool>> {
    existing_on(session, ctx, table, rows, None).await
}

/// [`existing`], judged by one unique constraint only when `arbiter` (its
/// columns, in any order) is given.
pub async fn existing_on(
    session: &Session,
    ctx: &Arc<StatementContext>,
    table: &TableDef,
    rows: &RecordBatch,
    arbiter: Option<&[usize]>,
) -> Result<Vec<bool>> {
    // Compared as sets: a partition may list the arbiter's columns in
    // another order than the table named.
    let sorted = |c: &[usize]| {
        let mut c = c.to_vec();
        c.sort();
        c
    };
    let arbiter = arbiter.map(sorted);
    let judges = |columns: &[usize]| arbiter.as_ref().is_none_or(|a| &sorted(columns) == a);
    let mut hit = vec![false; rows.num_rows()];
    // (table or index storage, its key columns per row, rows they come from)
    let mut probes: Vec<(Arc<TableDef>, RecordBatch, Vec<u32>)> = Vec::new();
    if judges(&table.primary_key) {
        probes.push((
            Arc::new(table.clone()),
            rows.project(&table.primary_key)?,
            (0..rows.num_rows() as u32).collect(),
        ));
    }
    for ix in table
        .indexes
        .iter()
        .filter(|i| i.unique && judges(&i.columns))
    {
        let (batch, from) = entries(table, ix, rows)?;
        probes.push((
            ix.storage.clone(),
            batch.project(&ix.storage.primary_key)?,
            from,
        ));
    }
    for (def, keys, from) in probes {
        if keys.num_rows() == 0 {
            continue;
        }
        let key_cols: Vec<u32> = def.primary_key.iter().map(|&k| k as u32).collect();
        let found = crate::provider::lookup(
            session.cluster().clone(),
            ctx.clone(),
            def.clone(),
            &keys,
            key_cols,
        )
        .await
        .map_err(crate::errors::from_df)?;
        let mut there = std::collections::HashSet::new();
        for b in &found {
            there.extend(encode_keys(b.columns())?);
        }
        for (k, r) in encode_keys(keys.columns())?.into_iter().zip(from) {
            if there.contains(&k) {
                hit[r as usize] = true;
            }
        }
    }
    Ok(hit)
}

/// Keep the rows of `rows` not flagged.
pub fn keep(rows: &RecordBatch, drop: &[bool]) -> Result<RecordBatch> {
    let mask = BooleanArray::from(drop.iter().map(|d| !d).collect::<Vec<_>>());
    Ok(filter_record_batch(rows, &mask)?)
}

/// The name PostgreSQL gives a new index or constraint: `<table>_<cols>_<suffix>`,
/// numbered while `taken` (PostgreSQL's ChooseRelationName, without its
/// 63-byte truncation).
pub fn default_name(
    table: &str,
    columns: &[&str],
    suffix: &str,
    taken: impl Fn(&str) -> bool,
) -> String {
    let base = format!("{table}_{}_{suffix}", columns.join("_"));
    let mut name = base.clone();
    let mut n = 0;
    while taken(&name) {
        n += 1;
        name = format!("{base}{n}");
    }
    name
}

/// The name of a new UNIQUE constraint of `table` on `columns`: the
/// `given` one or `<table>_<cols>_key`; a name another relation or one of
/// the table's constraints (`taken`) has is refused (42P07 / 42710).
pub fn constraint_name(
    session: &Session,
    table: &TableDef,
    given: Option<String>,
    columns: &[usize],
    taken: &[String],
) -> Result<String> {
    match given {
        Some(n) if taken.contains(&n) => Err(Error::user(
            sqlstate::DUPLICATE_OBJECT,
            format!(
                "constraint \"{n}\" for relation \"{}\" already exists",
                table.name
            ),
        )),
        Some(n) if relation_exists(session, &table.schema, &n) => Err(Error::user(
            sqlstate::DUPLICATE_TABLE,
            format!("relation \"{n}\" already exists"),
        )),
        Some(n) => Ok(n),
        None => Ok(default_name(
            &table.name,
            &table.column_names(columns),
            "key",
            |n| taken.iter().any(|t| t == n) || relation_exists(session, &table.schema, n),
        )),
    }
}

/// Whether `name` names a relation (table, index or sequence) in `schema`.
pub fn relation_exists(session: &Session, schema: &str, name: &str) -> bool {
    let cluster = session.cluster();
    cluster.table(schema, name).is_some()
        || find(session, schema, name).is_some()
        || cluster
            .sequences()
            .iter()
            .any(|q| q.schema == schema && q.name == name)
        || cluster.view(schema, name).is_some()
}

/// The table holding index `name` of `schema`, and the index's position.
pub fn find(session: &Session, schema: &str, name: &str) -> Option<(Arc<TableDef>, usize)> {
    session.cluster().tables().into_iter().find_map(|t| {
        let pos = t.indexes.iter().position(|i| i.name == name);
        (t.schema == schema)
            .then_some(pos)
            .flatten()
            .map(|p| (t, p))
    })
}

/// The columns an index or UNIQUE constraint names (plain columns only).
pub fn columns(table: &TableDef, named: &[IndexColumn], what: &str) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(named.len());
    for ic in named {
        let datafusion::sql::sqlparser::ast::Expr::Identifier(id) = &ic.column.expr else {
            return Err(Error::unsupported(format!(
                "{what} on expressions is not supported"
            )));
        };
        let name = ident(id);
        let i = table
            .columns
            .iter()
            .position(|c| c.name == name && !c.hidden)
            .ok_or_else(|| {
                Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{name}\" does not exist"),
                )
            })?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

/// A new index of `table` (its storage is made by the rewrite that fills it).
pub fn define(name: &str, columns: Vec<usize>, unique: bool, constraint: bool) -> pb::Index {
    pb::Index {
        name: name.to_string(),
        columns: columns.into_iter().map(|c| c as u32).collect(),
        unique,
        constraint,
        storage: None,
    }
}

/// Give every index of `def` (columns numbered as in `def`) a storage
/// table shaped for `def`.
pub fn shape_storage(def: &mut pb::Table) -> Result<()> {
    let mut bare = def.clone();
    bare.indexes.clear();
    if bare.placement.len() != bare.shard_count as usize {
        bare.placement = vec![0; bare.shard_count as usize];
    }
    let table = TableDef::from_proto(bare)?;
    for ix in &mut def.indexes {
        let cols: Vec<usize> = ix.columns.iter().map(|&c| c as usize).collect();
        ix.storage = Some(table.index_storage(&ix.name, &cols, ix.unique));
    }
    Ok(())
}

/// CREATE [UNIQUE] INDEX [IF NOT EXISTS] [name] ON table [USING btree|hash] (columns).
pub async fn create_index(session: &Session, ci: &CreateIndex) -> Result<Output> {
    match &ci.using {
        None | Some(IndexType::BTree) | Some(IndexType::Hash) => {}
        Some(other) => {
            return Err(Error::user(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "access method \"{}\" is not supported",
                    other.to_string().to_lowercase()
                ),
            ));
        }
    }
    if ci.predicate.is_some() {
        return Err(Error::unsupported(
            "partial indexes (CREATE INDEX … WHERE) are not supported yet",
        ));
    }
    if ci.nulls_distinct == Some(false) {
        return Err(Error::unsupported(
            "NULLS NOT DISTINCT is not supported yet",
        ));
    }
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let table = crate::dml::resolve_table(session, &ci.table_name)?;
    crate::privileges::require_owner(&session.actor(), &table)?;
    let cols = columns(&table, &ci.columns, "indexes")?;
    let name = match &ci.name {
        Some(n) => {
            let (_, n) = crate::dml::name_parts(n)?;
            if relation_exists(session, &table.schema, &n) {
                if ci.if_not_exists {
                    return Ok(Output::Command("CREATE INDEX".into()));
                }
                return Err(Error::user(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{n}\" already exists"),
                ));
            }
            n
        }
        None => default_name(&table.name, &table.column_names(&cols), "idx", |n| {
            relation_exists(session, &table.schema, n)
        }),
    };
    let mut def = table.proto().clone();
    def.indexes.push(define(&name, cols, ci.unique, false));
    crate::alter::rebuild(
        session,
        &table,
        def,
        "CREATE INDEX",
        ci.unique.then_some(name.as_str()),
    )
    .await?;
    Ok(Output::Command("CREATE INDEX".into()))
}

/// DROP INDEX [IF EXISTS] names: a change of the catalog alone.
pub async fn drop_indexes(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    for n in names {
        let (schema, name) = session.relation(n)?;
        let Some((table, pos)) = find(session, &schema, &name) else {
            if if_exists {
                continue;
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("index \"{name}\" does not exist"),
            ));
        };
        crate::privileges::require_owner(&session.actor(), &table)?;
        if table.indexes[pos].constraint {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop index {name} because constraint {name} on table {} requires it",
                    table.name
                ),
            )
            .with_detail(format!(
                "You can drop constraint {name} on table {} instead.",
                table.name
            )));
        }
        let mut def = table.proto().clone();
        def.indexes.remove(pos);
        update_table(session, def, vec![], "DROP INDEX").await?;
    }
    Ok(Output::Command("DROP INDEX".into()))
}

/// Change `def`'s table in the catalog alone (meta's UpdateTable) and free
/// the storage of the indexes it no longer has. Not transactional, so not
/// inside a transaction block.
pub async fn update_table(
    session: &Session,
    def: pb::Table,
    views: Vec<pb::View>,
    what: &str,
) -> Result<()> {
    if session.in_transaction() {
        return Err(Error::user(
            sqlstate::ACTIVE_SQL_TRANSACTION,
            format!("{what} cannot run inside a transaction block"),
        ));
    }
    let cluster = session.cluster();
    let r = cluster
        .meta()
        .update_table(pb::UpdateTableRequest {
            table: Some(def),
            views,
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    cluster.refresh_catalog().await?;
    for storage in r.dropped {
        let t = pb::Table {
            indexes: vec![],
            ..storage
        };
        crate::ddl::forget_data(cluster, &t).await;
    }
    Ok(())
}
