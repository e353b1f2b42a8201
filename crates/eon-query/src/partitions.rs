//! Partitioned tables: PostgreSQL's declarative partitioning.
//!
//! A **partitioned table** (`CREATE TABLE t (…) PARTITION BY LIST|RANGE|HASH
//! (key, …)`) holds no rows of its own: its rows live in its
//! **partitions**, tables made with `CREATE TABLE p PARTITION OF t FOR
//! VALUES …` (or attached with `ALTER TABLE t ATTACH PARTITION p FOR VALUES
//! …`), each owning the rows whose partition key falls within its bound —
//! a list of values, a range `FROM (…) TO (…)` (lower bound included,
//! upper excluded, compared column by column, `MINVALUE`/`MAXVALUE`
//! unbounded), a hash remainder `WITH (MODULUS m, REMAINDER r)`, or
//! `DEFAULT` (every row no other partition takes). A partition may itself
//! be partitioned: the tables form a tree whose leaves hold the rows.
//!
//! This is a layer above eon's sharding, not a replacement for it: every
//! leaf is an ordinary eon table, sharded by its primary key across the
//! data engines like any other. What partitioning adds is *which table* a
//! row belongs to, decided by the query engine:
//!
//! - **catalog**: the parent carries its key (`Table.partition_key`: the
//!   strategy and the key expressions as SQL), each partition its parent's
//!   id and its bound as PostgreSQL prints it (`Table.partition_of`);
//! - **reads**: the parent's name resolves to [`PartitionedTable`], which
//!   scans the leaves one after another in bound order (as PostgreSQL's
//!   Append does), so `SELECT * FROM t` lists partition by partition;
//! - **INSERT** into the parent evaluates the key over each row and
//!   routes it down the tree ([`Tree::route`]); a row no partition takes
//!   fails with 23514 "no partition of relation … found for row". INSERT
//!   straight into a partition checks its bound and its ancestors' bounds
//!   ([`check_rows`]) — "new row for relation … violates partition
//!   constraint";
//! - **UPDATE and DELETE** of the parent run over each leaf in turn, their
//!   writes gathered into one statement; an UPDATE that moves a row's key
//!   out of its partition deletes it there and routes the new row from the
//!   top, as PostgreSQL's row movement does;
//! - **DDL**: a new or attached partition's bound may not overlap a
//!   sibling's; an attached table must have the parent's columns, and its
//!   rows must fit the bound. DROP and TRUNCATE of the parent take its
//!   partitions along.
//!
//! Bound values and keys are compared as typed values (the key's type), so
//! `FOR VALUES FROM (1) TO (10)` on an int key and `FROM ('a') TO ('b')` on
//! a text key order the way the type does. Hash partitions use eon's own
//! key hash (the one that places rows on shards), not PostgreSQL's.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::sql::sqlparser::ast::{
    AlterTableOperation, Expr as SqlExpr, ForValues, FunctionArg, FunctionArgExpr,
    FunctionArguments, ObjectName, Partition, PartitionBoundValue, Statement, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use eon_common::error::sqlstate;
use eon_common::key::{encode_keys, shard_of};
use eon_common::schema::{ColumnDef, ROWID_COLUMN};
use eon_common::{Error, Result, SqlType, TableDef};
use eon_proto::v1 as pb;
use futures::StreamExt;

use crate::cluster::Cluster;
use crate::errors::from_df;
use crate::session::Session;

/// The key of a partitioned table, if it is one.
pub(crate) fn key_of(table: &TableDef) -> Option<&pb::PartitionKey> {
    table.proto().partition_key.as_ref()
}

/// The parent and bound of a partition, if it is one.
pub(crate) fn bound_of(table: &TableDef) -> Option<&pb::PartitionBound> {
    table.proto().partition_of.as_ref()
}

/// True when `table` is partitioned or is a partition: its writes go
/// through this module.
pub(crate) fn involved(table: &TableDef) -> bool {
    key_of(table).is_some() || bound_of(table).is_some()
}

/// What planning a partition key needs: DataFusion's state (for its
/// expressions) and the catalog (for the partitions).
pub(crate) struct Cx<'a> {
    pub state: &'a SessionState,
    pub cluster: &'a Cluster,
}

impl<'a> Cx<'a> {
    pub fn of(session: &'a Session) -> Cx<'a> {
        Cx {
            state: session.engine.base_state(),
            cluster: session.cluster(),
        }
    }
}

/// The partitions of `parent`, in bound order.
fn children(cx: &Cx, parent: &TableDef) -> Result<Vec<(Arc<TableDef>, Bound)>> {
    let Some(key) = key_of(parent) else {
        return Ok(vec![]);
    };
    partitions_of(cx, parent.id, &KeyPlan::new(cx, key, parent)?)
}

/// The partitions of table `parent`, their bounds read with its key
/// (`plan`, over any layout of its columns), in bound order.
fn partitions_of(cx: &Cx, parent: u64, plan: &KeyPlan) -> Result<Vec<(Arc<TableDef>, Bound)>> {
    let mut out = Vec::new();
    for t in cx.cluster.tables() {
        if let Some(b) = bound_of(&t).filter(|b| b.parent == parent) {
            let bound = Bound::parse(cx, &b.bound, plan)?;
            out.push((t, bound));
        }
    }
    out.sort_by(|a, b| a.1.order(&b.1));
    Ok(out)
}

/// The leaves under `table` (itself when it is not partitioned), in the
/// order PostgreSQL's Append lists them.
pub(crate) fn leaves(cx: &Cx, table: &Arc<TableDef>) -> Result<Vec<Arc<TableDef>>> {
    if key_of(table).is_none() {
        return Ok(vec![table.clone()]);
    }
    let mut out = Vec::new();
    for (child, _) in children(cx, table)? {
        out.extend(leaves(cx, &child)?);
    }
    Ok(out)
}

/// Every table under `table` (partitions at every level, not itself),
/// parents before their children.
pub(crate) fn descendants(cluster: &Cluster, table: &TableDef) -> Vec<Arc<TableDef>> {
    let mut out = Vec::new();
    let mut queue = vec![table.id];
    while let Some(id) = queue.pop() {
        for t in cluster.tables() {
            if bound_of(&t).is_some_and(|b| b.parent == id) {
                queue.push(t.id);
                out.push(t);
            }
        }
    }
    out
}

// ------------------------------------------------------------ the key

#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    List,
    Range,
    Hash,
}

impl Strategy {
    fn parse(s: &str) -> Option<Strategy> {
        match s {
            "list" => Some(Strategy::List),
            "range" => Some(Strategy::Range),
            "hash" => Some(Strategy::Hash),
            _ => None,
        }
    }
}

/// A table's partition key planned over a layout of its columns (the
/// parent's own, or a partition's, whose columns may sit elsewhere).
struct KeyPlan {
    strategy: Strategy,
    /// The key as PostgreSQL's messages show it: `a, (b + 0)`.
    text: Vec<String>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Each key value's column definition (its type; for coercing bounds).
    columns: Vec<ColumnDef>,
}

impl KeyPlan {
    fn new(cx: &Cx, key: &pb::PartitionKey, layout: &TableDef) -> Result<KeyPlan> {
        let strategy = Strategy::parse(&key.strategy)
            .ok_or_else(|| Error::internal(format!("partition strategy {}", key.strategy)))?;
        let state = cx.state;
        let schema = layout.arrow_schema();
        let df_schema =
            DFSchema::try_from_qualified_schema(&layout.name, schema).map_err(from_df)?;
        let mut exprs = Vec::with_capacity(key.exprs.len());
        let mut columns = Vec::with_capacity(key.exprs.len());
        for text in &key.exprs {
            let logical = state
                .create_logical_expr(text, &df_schema)
                .map_err(from_df)?;
            let physical = state
                .create_physical_expr(logical, &df_schema)
                .map_err(from_df)?;
            let ty = physical.data_type(schema).map_err(from_df)?;
            let column = match layout.column_index(text) {
                Some(i) => ColumnDef {
                    nullable: true,
                    default_sql: None,
                    ..layout.columns[i].clone()
                },
                None => ColumnDef {
                    name: text.clone(),
                    ty: SqlType::from_arrow(&ty).unwrap_or(SqlType::Text),
                    nullable: true,
                    default_sql: None,
                    hidden: false,
                },
            };
            exprs.push(physical);
            columns.push(column);
        }
        Ok(KeyPlan {
            strategy,
            text: key.exprs.clone(),
            exprs,
            columns,
        })
    }

    /// The key of every row of `rows` (in the layout planned over).
    fn evaluate(&self, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.exprs
            .iter()
            .map(|e| {
                e.evaluate(rows)
                    .and_then(|v| v.into_array(rows.num_rows()))
                    .map_err(from_df)
            })
            .collect()
    }
}

impl KeyPlan {
    /// Each row's key encoded for hashing (hash partitioning only; other
    /// strategies compare values). A NULL hashes as its own encoding.
    fn hashed(&self, keys: &[ArrayRef]) -> Result<Vec<Vec<u8>>> {
        let n = keys.first().map_or(0, |k| k.len());
        if self.strategy != Strategy::Hash {
            return Ok(vec![vec![]; n]);
        }
        let mut out = vec![Vec::new(); n];
        for k in keys {
            let nulls = datafusion::arrow::compute::is_null(k)?;
            let filled = datafusion::arrow::compute::kernels::zip::zip(
                &nulls,
                &ScalarValue::new_default(k.data_type())
                    .and_then(|z| z.to_scalar())
                    .map_err(from_df)?,
                k,
            );
            let column = match filled {
                Ok(c) => c,
                Err(_) => k.clone(),
            };
            for (row, key) in encode_keys(&[column])?.into_iter().enumerate() {
                out[row].push(u8::from(nulls.value(row)));
                out[row].extend(key);
            }
        }
        Ok(out)
    }
}

/// Row `row` of the key arrays.
fn key_values(keys: &[ArrayRef], row: usize) -> Result<Vec<ScalarValue>> {
    keys.iter()
        .map(|a| ScalarValue::try_from_array(a, row).map_err(from_df))
        .collect()
}

// ------------------------------------------------------------ bounds

/// One value of a range bound.
#[derive(Debug, Clone)]
enum Datum {
    Min,
    Value(ScalarValue),
    Max,
}

/// A partition's bound, its values of the key's types.
#[derive(Debug, Clone)]
enum Bound {
    List {
        values: Vec<ScalarValue>,
        null: bool,
    },
    Range {
        from: Vec<Datum>,
        to: Vec<Datum>,
    },
    Hash {
        modulus: u64,
        remainder: u64,
    },
    Default,
}

/// Parse a bound as PostgreSQL writes it (`FOR VALUES …` or `DEFAULT`).
fn parse_for_values(text: &str) -> Result<ForValues> {
    let sql = format!("CREATE TABLE x PARTITION OF y {text}");
    let mut statements =
        Parser::parse_sql(&PostgreSqlDialect {}, &sql).map_err(|e| Error::syntax(e.to_string()))?;
    match statements.pop() {
        Some(Statement::CreateTable(ct)) => ct
            .for_values
            .ok_or_else(|| Error::internal("partition bound without FOR VALUES")),
        _ => Err(Error::internal(format!("bad partition bound {text}"))),
    }
}

/// A constant bound expression as a value of the key column's type.
fn constant(cx: &Cx, expr: &SqlExpr, column: &ColumnDef) -> Result<ScalarValue> {
    if let SqlExpr::Value(v) = expr
        && matches!(v.value, SqlValue::Null)
    {
        return ScalarValue::try_from(column.ty.arrow_type()).map_err(from_df);
    }
    let state = cx.state;
    let empty = DFSchema::empty();
    let logical = state
        .create_logical_expr(&expr.to_string(), &empty)
        .map_err(|_| {
            Error::user(
                sqlstate::INVALID_OBJECT_DEFINITION,
                "cannot use column reference in partition bound expression",
            )
        })?;
    let physical = state
        .create_physical_expr(logical, &empty)
        .map_err(from_df)?;
    let one = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = physical
        .evaluate(&one)
        .and_then(|v| v.into_array(1))
        .map_err(from_df)?;
    let value = crate::coerce::coerce(&value, column, "partition bound")?;
    ScalarValue::try_from_array(&value, 0).map_err(from_df)
}

impl Bound {
    fn parse(cx: &Cx, text: &str, key: &KeyPlan) -> Result<Bound> {
        Bound::of(cx, &parse_for_values(text)?, key, None)
    }

    /// `for_values` over `key`; `partition` names the partition in errors
    /// (when it is being defined).
    fn of(
        cx: &Cx,
        for_values: &ForValues,
        key: &KeyPlan,
        partition: Option<&str>,
    ) -> Result<Bound> {
        let spec_error = |what: &str| {
            Error::user(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!("invalid bound specification for a {what} partition"),
            )
        };
        Ok(match (for_values, key.strategy) {
            (ForValues::Default, _) => Bound::Default,
            (ForValues::In(values), Strategy::List) => {
                let mut out = Vec::new();
                let mut null = false;
                for v in values {
                    let s = constant(cx, v, &key.columns[0])?;
                    if s.is_null() {
                        null = true;
                    } else if !out.contains(&s) {
                        out.push(s);
                    }
                }
                Bound::List { values: out, null }
            }
            (ForValues::From { from, to }, Strategy::Range) => {
                let n = key.columns.len();
                if from.len() != n || to.len() != n {
                    return Err(Error::user(
                        sqlstate::INVALID_TABLE_DEFINITION,
                        format!(
                            "{} partition bound has too {} columns",
                            if from.len() != n { "FROM" } else { "TO" },
                            if from.len().max(to.len()) > n {
                                "many"
                            } else {
                                "few"
                            }
                        ),
                    ));
                }
                let datums = |vs: &[PartitionBoundValue]| -> Result<Vec<Datum>> {
                    vs.iter()
                        .zip(&key.columns)
                        .map(|(v, c)| {
                            Ok(match v {
                                PartitionBoundValue::MinValue => Datum::Min,
                                PartitionBoundValue::MaxValue => Datum::Max,
                                PartitionBoundValue::Expr(e) => {
                                    let s = constant(cx, e, c)?;
                                    if s.is_null() {
                                        return Err(Error::user(
                                            sqlstate::INVALID_TABLE_DEFINITION,
                                            "cannot specify NULL in range bound",
                                        ));
                                    }
                                    Datum::Value(s)
                                }
                            })
                        })
                        .collect()
                };
                let (from, to) = (datums(from)?, datums(to)?);
                for side in [&from, &to] {
                    for pair in side.windows(2) {
                        match pair {
                            [Datum::Min, Datum::Value(_) | Datum::Max] => {
                                return Err(Error::user(
                                    sqlstate::INVALID_TABLE_DEFINITION,
                                    "every bound following MINVALUE must also be MINVALUE",
                                ));
                            }
                            [Datum::Max, Datum::Value(_) | Datum::Min] => {
                                return Err(Error::user(
                                    sqlstate::INVALID_TABLE_DEFINITION,
                                    "every bound following MAXVALUE must also be MAXVALUE",
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(name) = partition
                    && compare_bounds(&from, &to) != Ordering::Less
                {
                    return Err(Error::user(
                        sqlstate::INVALID_OBJECT_DEFINITION,
                        format!("empty range bound specified for partition \"{name}\""),
                    )
                    .with_detail(format!(
                        "Specified lower bound {} is greater than or equal to upper bound {}.",
                        datums_text(&from),
                        datums_text(&to)
                    )));
                }
                Bound::Range { from, to }
            }
            (ForValues::With { modulus, remainder }, Strategy::Hash) => {
                if *modulus == 0 {
                    return Err(Error::user(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "modulus for hash partition must be an integer value greater than zero",
                    ));
                }
                if remainder >= modulus {
                    return Err(Error::user(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "remainder for hash partition must be less than modulus",
                    ));
                }
                Bound::Hash {
                    modulus: *modulus,
                    remainder: *remainder,
                }
            }
            (_, Strategy::List) => return Err(spec_error("list")),
            (_, Strategy::Range) => return Err(spec_error("range")),
            (_, Strategy::Hash) => return Err(spec_error("hash")),
        })
    }

    /// Whether a row whose key is `key` (with `hash`, its key's encoding
    /// hashed, for hash bounds) belongs here (DEFAULT: never by itself).
    fn holds(&self, key: &[ScalarValue], encoded: &[u8]) -> bool {
        match self {
            Bound::List { values, null } => match key.first() {
                Some(k) if k.is_null() => *null,
                Some(k) => values.iter().any(|v| v == k),
                None => false,
            },
            Bound::Range { from, to } => {
                !key.iter().any(|k| k.is_null())
                    && compare_key(key, from) != Ordering::Less
                    && compare_key(key, to) == Ordering::Less
            }
            Bound::Hash { modulus, remainder } => modulus_of(encoded, *modulus) == *remainder,
            Bound::Default => false,
        }
    }

    /// PostgreSQL's order of partitions (its Append's): by the lowest
    /// value they take, a NULL-only list partition after the others, the
    /// default last.
    fn order(&self, other: &Bound) -> Ordering {
        let rank = |b: &Bound| match b {
            Bound::List { values, .. } if values.is_empty() => 1,
            Bound::Default => 2,
            _ => 0,
        };
        match (self, other) {
            (Bound::List { values: a, .. }, Bound::List { values: b, .. })
                if !a.is_empty() && !b.is_empty() =>
            {
                let least = |vs: &[ScalarValue]| {
                    vs.iter()
                        .min_by(|x, y| x.partial_cmp(y).unwrap_or(Ordering::Equal))
                        .cloned()
                };
                least(a).partial_cmp(&least(b)).unwrap_or(Ordering::Equal)
            }
            (Bound::Range { from: a, .. }, Bound::Range { from: b, .. }) => compare_bounds(a, b),
            (
                Bound::Hash {
                    modulus: m1,
                    remainder: r1,
                },
                Bound::Hash {
                    modulus: m2,
                    remainder: r2,
                },
            ) => (m1, r1).cmp(&(m2, r2)),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    /// Whether no row could belong to both (DEFAULT overlaps only DEFAULT).
    fn overlaps(&self, other: &Bound) -> bool {
        match (self, other) {
            (
                Bound::List {
                    values: a,
                    null: n1,
                },
                Bound::List {
                    values: b,
                    null: n2,
                },
            ) => (*n1 && *n2) || a.iter().any(|v| b.contains(v)),
            (Bound::Range { from: f1, to: t1 }, Bound::Range { from: f2, to: t2 }) => {
                compare_bounds(f1, t2) == Ordering::Less && compare_bounds(f2, t1) == Ordering::Less
            }
            (
                Bound::Hash {
                    modulus: m1,
                    remainder: r1,
                },
                Bound::Hash {
                    modulus: m2,
                    remainder: r2,
                },
            ) => {
                // Moduli must divide one another (PostgreSQL's rule); then
                // the partitions share rows when the remainders agree
                // modulo the smaller.
                let small = (*m1).min(*m2);
                r1 % small == r2 % small
            }
            (Bound::Default, Bound::Default) => true,
            _ => false,
        }
    }
}

fn modulus_of(encoded: &[u8], modulus: u64) -> u64 {
    shard_of(encoded, modulus.min(u32::MAX as u64) as u32) as u64
}

fn datum_cmp(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Min, Datum::Min) | (Datum::Max, Datum::Max) => Ordering::Equal,
        (Datum::Min, _) | (_, Datum::Max) => Ordering::Less,
        (_, Datum::Min) | (Datum::Max, _) => Ordering::Greater,
        (Datum::Value(x), Datum::Value(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
    }
}

/// Two range bounds, column by column (PostgreSQL: after a MINVALUE or
/// MAXVALUE the later columns do not matter).
fn compare_bounds(a: &[Datum], b: &[Datum]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = datum_cmp(x, y);
        if o != Ordering::Equal || matches!(x, Datum::Min | Datum::Max) {
            return o;
        }
    }
    Ordering::Equal
}

/// A key against a range bound.
fn compare_key(key: &[ScalarValue], bound: &[Datum]) -> Ordering {
    for (k, b) in key.iter().zip(bound) {
        let o = match b {
            Datum::Min => Ordering::Greater,
            Datum::Max => Ordering::Less,
            Datum::Value(v) => k.partial_cmp(v).unwrap_or(Ordering::Equal),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn datums_text(ds: &[Datum]) -> String {
    let parts: Vec<String> = ds
        .iter()
        .map(|d| match d {
            Datum::Min => "MINVALUE".to_string(),
            Datum::Max => "MAXVALUE".to_string(),
            Datum::Value(v) => match v {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
                    format!("'{}'", s.replace('\'', "''"))
                }
                other => other.to_string(),
            },
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// The key values of a row as "Partition key of the failing row contains
/// (a, (b + 0)) = (a, 11)." shows them.
fn key_text(key: &KeyPlan, keys: &[ArrayRef], row: usize) -> Result<String> {
    let mut values = Vec::with_capacity(keys.len());
    for (a, c) in keys.iter().zip(&key.columns) {
        values.push(if a.is_null(row) {
            "null".to_string()
        } else {
            let field = c.ty.field(&c.name, true);
            crate::pgtypes::ColumnEncoder::new(&field, a, false)?.text_value(row)
        });
    }
    Ok(format!(
        "Partition key of the failing row contains ({}) = ({}).",
        key.text.join(", "),
        values.join(", ")
    ))
}

// ------------------------------------------------------------ writes

/// Rows bound for one leaf: the leaf, the rows in its layout, and their
/// positions in the rows routed.
pub(crate) struct Placed {
    pub table: Arc<TableDef>,
    pub rows: RecordBatch,
    pub positions: Vec<u32>,
}

/// Partition `leaf` with the CHECK constraints of `ancestor` it lacks (one
/// added to the partitioned table after the partition was made), to check
/// the rows routed to it.
pub(crate) fn with_checks_of(leaf: &Arc<TableDef>, ancestor: &TableDef) -> Result<Arc<TableDef>> {
    let own = &leaf.proto().checks;
    let missing: Vec<pb::Check> = ancestor
        .proto()
        .checks
        .iter()
        .filter(|c| !own.iter().any(|o| o.name == c.name))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(leaf.clone());
    }
    let mut proto = leaf.proto().clone();
    proto.checks.extend(missing);
    Ok(Arc::new(TableDef::from_proto(proto)?))
}

/// `rows` of table `from`'s layout in table `to`'s, column by name; a
/// hidden row id `from` lacks is drawn fresh.
pub(crate) async fn relayout(
    session: &Session,
    rows: &RecordBatch,
    from: &TableDef,
    to: &TableDef,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(to.columns.len());
    for c in &to.columns {
        let array = match from.column_index(&c.name) {
            Some(i) => rows.column(i).clone(),
            None if c.name == ROWID_COLUMN => session.cluster().rowid_column(n).await?,
            None => datafusion::arrow::array::new_null_array(&c.ty.arrow_type(), n),
        };
        columns.push(crate::coerce::coerce(&array, c, &to.name)?);
    }
    Ok(RecordBatch::try_new_with_options(
        to.arrow_schema().clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

/// Where the rows of an INSERT into `table` (in its layout) go: `table`
/// itself when it is an ordinary table; checked against its bounds when a
/// partition; routed down to the leaves when partitioned.
pub(crate) async fn place(
    session: &Session,
    table: &Arc<TableDef>,
    rows: RecordBatch,
) -> Result<Vec<Placed>> {
    if bound_of(table).is_some() {
        check_rows(session, table, &rows)?;
    }
    let positions: Vec<u32> = (0..rows.num_rows() as u32).collect();
    if key_of(table).is_none() {
        return Ok(vec![Placed {
            table: table.clone(),
            rows,
            positions,
        }]);
    }
    let cx = Cx::of(session);
    let mut out = Vec::new();
    let mut queue = vec![(table.clone(), rows, positions)];
    while let Some((parent, rows, positions)) = queue.pop() {
        let Some(key) = key_of(&parent) else {
            out.push(Placed {
                table: parent,
                rows,
                positions,
            });
            continue;
        };
        let plan = KeyPlan::new(&cx, key, &parent)?;
        let kids = partitions_of(&cx, parent.id, &plan)?;
        let keys = plan.evaluate(&rows)?;
        let encoded = plan.hashed(&keys)?;
        let default = kids.iter().position(|(_, b)| matches!(b, Bound::Default));
        let mut groups: Vec<Vec<u32>> = vec![vec![]; kids.len()];
        for row in 0..rows.num_rows() {
            let values = key_values(&keys, row)?;
            let found = kids
                .iter()
                .position(|(_, b)| b.holds(&values, &encoded[row]))
                .or(default);
            match found {
                Some(k) => groups[k].push(row as u32),
                None => {
                    return Err(Error::user(
                        sqlstate::CHECK_VIOLATION,
                        format!("no partition of relation \"{}\" found for row", parent.name),
                    )
                    .with_detail(key_text(&plan, &keys, row)?));
                }
            }
        }
        for ((child, _), group) in kids.into_iter().zip(groups).rev() {
            if group.is_empty() {
                continue;
            }
            let taken = take_record_batch(&rows, &UInt32Array::from(group.clone()))?;
            let moved = relayout(session, &taken, &parent, &child).await?;
            let at = group.iter().map(|&g| positions[g as usize]).collect();
            queue.push((child, moved, at));
        }
    }
    out.sort_by_key(|p| p.positions.first().copied());
    Ok(out)
}

/// Which rows of `rows` (in `table`'s layout) lie outside `table`'s
/// partition bound or an ancestor's, by position.
pub(crate) fn outside(
    session: &Session,
    table: &TableDef,
    rows: &RecordBatch,
) -> Result<Vec<bool>> {
    let cx = Cx::of(session);
    let mut out = vec![false; rows.num_rows()];
    let mut level = table.id;
    let mut bound = bound_of(table).cloned();
    while let Some(b) = bound {
        let Some(parent) = cx.cluster.tables().into_iter().find(|t| t.id == b.parent) else {
            break;
        };
        let Some(key) = key_of(&parent) else { break };
        let plan = KeyPlan::new(&cx, key, table)?;
        let keys = plan.evaluate(rows)?;
        let encoded = plan.hashed(&keys)?;
        let own = Bound::parse(&cx, &b.bound, &plan)?;
        let others: Vec<Bound> = match own {
            Bound::Default => partitions_of(&cx, parent.id, &plan)?
                .into_iter()
                .filter(|(t, _)| t.id != level)
                .map(|(_, b)| b)
                .collect(),
            _ => vec![],
        };
        for (row, out) in out.iter_mut().enumerate() {
            let values = key_values(&keys, row)?;
            let inside = match &own {
                Bound::Default => !others.iter().any(|o| o.holds(&values, &encoded[row])),
                b => b.holds(&values, &encoded[row]),
            };
            *out |= !inside;
        }
        level = parent.id;
        bound = bound_of(&parent).cloned();
    }
    Ok(out)
}

/// Refuse rows written straight into partition `table` that its bound (or
/// an ancestor's) excludes: 23514, with the first such row.
pub(crate) fn check_rows(session: &Session, table: &TableDef, rows: &RecordBatch) -> Result<()> {
    match outside(session, table, rows)?.iter().position(|&o| o) {
        None => Ok(()),
        Some(row) => Err(Error::user(
            sqlstate::CHECK_VIOLATION,
            format!(
                "new row for relation \"{}\" violates partition constraint",
                table.name
            ),
        )
        .with_detail(format!(
            "Failing row contains ({}).",
            crate::checks::row_text(table, rows, row)?
        ))),
    }
}

// ------------------------------------------------------------ DDL

/// The key of `PARTITION BY strategy (exprs)` (sqlparser reads
/// `RANGE (a, b)` as a call of a function named RANGE).
pub(crate) fn parse_key(expr: &SqlExpr, columns: &[ColumnDef]) -> Result<pb::PartitionKey> {
    let SqlExpr::Function(f) = expr else {
        return Err(Error::syntax(format!("syntax error at or near \"{expr}\"")));
    };
    let strategy = f.name.to_string().to_ascii_lowercase();
    if Strategy::parse(&strategy).is_none() {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("unrecognized partitioning strategy \"{strategy}\""),
        ));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(Error::syntax("a partition key needs a list of columns"));
    };
    let mut exprs = Vec::new();
    for a in &list.args {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = a else {
            return Err(Error::syntax(format!("syntax error at or near \"{a}\"")));
        };
        let text = match e {
            SqlExpr::Identifier(id) => {
                let name = crate::dml::ident(id);
                if !columns.iter().any(|c| c.name == name && !c.hidden) {
                    return Err(Error::user(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{name}\" named in partition key does not exist"),
                    ));
                }
                name
            }
            other => other.to_string(),
        };
        exprs.push(text);
    }
    if strategy == "list" && exprs.len() > 1 {
        return Err(Error::user(
            sqlstate::INVALID_OBJECT_DEFINITION,
            "cannot use \"list\" partition strategy with more than one column",
        ));
    }
    Ok(pb::PartitionKey { strategy, exprs })
}

/// Check a new partition key against its table: the expressions plan, and
/// a primary key includes every key column.
pub(crate) fn check_key(session: &Session, key: &pb::PartitionKey, table: &TableDef) -> Result<()> {
    KeyPlan::new(&Cx::of(session), key, table)?;
    if !table.has_rowid() {
        for e in &key.exprs {
            if !table
                .primary_key
                .iter()
                .any(|&k| &table.columns[k].name == e)
            {
                let missing = table
                    .column_index(e)
                    .map(|_| format!("lacks column \"{e}\" which is part of the partition key"))
                    .unwrap_or_else(|| {
                        "cannot be used with an expression in the partition key".into()
                    });
                return Err(Error::unsupported(
                    "unique constraint on partitioned table must include all partitioning columns",
                )
                .with_detail(format!(
                    "PRIMARY KEY constraint on table \"{}\" {missing}.",
                    table.name
                )));
            }
        }
    }
    Ok(())
}

/// Check a new partition `name` of `parent` with bound `for_values`
/// against the partitions it already has; the bound as stored.
pub(crate) fn check_bound(
    session: &Session,
    parent: &TableDef,
    name: &str,
    for_values: &ForValues,
) -> Result<pb::PartitionBound> {
    let Some(key) = key_of(parent) else {
        return Err(Error::user(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("table \"{}\" is not partitioned", parent.name),
        ));
    };
    let cx = Cx::of(session);
    let plan = KeyPlan::new(&cx, key, parent)?;
    let bound = Bound::of(&cx, for_values, &plan, Some(name))?;
    for (sibling, b) in children(&cx, parent)? {
        if sibling.name == name && sibling.schema == parent.schema {
            continue;
        }
        if bound.overlaps(&b) {
            return Err(if matches!(bound, Bound::Default) {
                Error::user(
                    sqlstate::INVALID_OBJECT_DEFINITION,
                    format!(
                        "partition \"{name}\" conflicts with existing default partition \"{}\"",
                        sibling.name
                    ),
                )
            } else {
                Error::user(
                    sqlstate::INVALID_OBJECT_DEFINITION,
                    format!(
                        "partition \"{name}\" would overlap partition \"{}\"",
                        sibling.name
                    ),
                )
            });
        }
    }
    Ok(pb::PartitionBound {
        parent: parent.id,
        bound: for_values.to_string(),
    })
}

/// The table `PARTITION OF name` names, which must be partitioned.
pub(crate) fn parent(session: &Session, name: &ObjectName) -> Result<Arc<TableDef>> {
    let parent = crate::dml::resolve_table(session, name)?;
    if key_of(&parent).is_none() {
        return Err(Error::user(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("\"{}\" is not partitioned", parent.name),
        ));
    }
    Ok(parent)
}

/// Whether the parser is at `ALTER TABLE [IF EXISTS] [ONLY] t ATTACH|DETACH
/// PARTITION`, which sqlparser does not read as PostgreSQL means it.
pub fn at_attach(p: &Parser) -> bool {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let tokens = p.peek_tokens::<16>();
    let word = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k);
    if !(word(&tokens[0], Keyword::ALTER) && word(&tokens[1], Keyword::TABLE)) {
        return false;
    }
    let mut i = 2;
    if word(&tokens[i], Keyword::IF) && word(&tokens[i + 1], Keyword::EXISTS) {
        i += 2;
    }
    if word(&tokens[i], Keyword::ONLY) {
        i += 1;
    }
    // The table's name: words separated by periods.
    while i < 13 && matches!(tokens[i], Token::Word(_)) {
        i += 1;
        if tokens[i] == Token::Period {
            i += 1;
        } else {
            break;
        }
    }
    (word(&tokens[i], Keyword::ATTACH) || word(&tokens[i], Keyword::DETACH))
        && word(&tokens[i + 1], Keyword::PARTITION)
}

/// Parse the statement [`at_attach`] found, in the shape [`attachment`]
/// reads back: the partition's name, and for ATTACH its bound as text.
pub fn parse_attach(p: &mut Parser) -> std::result::Result<Statement, ParserError> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    p.expect_keywords(&[Keyword::ALTER, Keyword::TABLE])?;
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let only = p.parse_keyword(Keyword::ONLY);
    let table = p.parse_object_name(false)?;
    let attach = p.parse_keyword(Keyword::ATTACH);
    if !attach {
        p.expect_keyword(Keyword::DETACH)?;
    }
    p.expect_keyword(Keyword::PARTITION)?;
    let partition = p.parse_object_name(false)?;
    let child = SqlExpr::CompoundIdentifier(
        partition
            .0
            .iter()
            .filter_map(|part| part.as_ident().cloned())
            .collect(),
    );
    let operation = if attach {
        // The bound's tokens, read back as CREATE TABLE … PARTITION OF
        // reads them.
        let mut text = Vec::new();
        let mut depth = 0i32;
        loop {
            let t = p.peek_token().token;
            match t {
                Token::EOF => break,
                Token::SemiColon if depth == 0 => break,
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            text.push(t.to_string());
            p.next_token();
        }
        let bound = parse_for_values(&text.join(" "))
            .map_err(|e| ParserError::ParserError(e.message.clone()))?;
        AlterTableOperation::AttachPartition {
            partition: Partition::Partitions(vec![
                child,
                SqlExpr::value(SqlValue::SingleQuotedString(bound.to_string())),
            ]),
        }
    } else {
        // CONCURRENTLY changes nothing here.
        let _ = p.parse_keyword(Keyword::CONCURRENTLY);
        AlterTableOperation::DetachPartition {
            partition: Partition::Expr(child),
        }
    };
    Ok(Statement::AlterTable(
        datafusion::sql::sqlparser::ast::AlterTable {
            name: table,
            if_exists,
            only,
            operations: vec![operation],
            location: None,
            on_cluster: None,
            table_type: None,
            end_token:
                datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        },
    ))
}

/// What [`parse_attach`] made of an ALTER TABLE operation: the partition's
/// name and, for ATTACH, its bound.
pub(crate) fn attachment(op: &AlterTableOperation) -> Option<(ObjectName, Option<String>)> {
    let name = |e: &SqlExpr| match e {
        SqlExpr::CompoundIdentifier(parts) => Some(ObjectName::from(parts.clone())),
        _ => None,
    };
    match op {
        AlterTableOperation::AttachPartition {
            partition: Partition::Partitions(items),
        } => match items.as_slice() {
            [child, SqlExpr::Value(v)] => match &v.value {
                SqlValue::SingleQuotedString(bound) => Some((name(child)?, Some(bound.clone()))),
                _ => None,
            },
            _ => None,
        },
        AlterTableOperation::DetachPartition {
            partition: Partition::Expr(child),
        } => Some((name(child)?, None)),
        _ => None,
    }
}

/// ATTACH PARTITION (`bound` given) or DETACH PARTITION of `child` to or
/// from `parent`.
pub(crate) async fn attach(
    session: &Session,
    parent: &ObjectName,
    child: &ObjectName,
    bound: Option<&str>,
) -> Result<()> {
    let parent = crate::dml::resolve_table(session, parent)?;
    let child = crate::dml::resolve_table(session, child)?;
    crate::privileges::require_owner(&session.actor(), &parent)?;
    crate::privileges::require_owner(&session.actor(), &child)?;
    if key_of(&parent).is_none() {
        return Err(Error::user(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("table \"{}\" is not partitioned", parent.name),
        ));
    }
    let mut proto = child.proto().clone();
    match bound {
        None => {
            if bound_of(&child).is_none_or(|b| b.parent != parent.id) {
                return Err(Error::user(
                    sqlstate::UNDEFINED_TABLE,
                    format!(
                        "relation \"{}\" is not a partition of relation \"{}\"",
                        child.name, parent.name
                    ),
                ));
            }
            proto.partition_of = None;
        }
        Some(text) => {
            if bound_of(&child).is_some() {
                return Err(Error::user(
                    sqlstate::OBJECT_IN_USE,
                    format!("\"{}\" is already a partition", child.name),
                ));
            }
            if child.id == parent.id
                || descendants(session.cluster(), &child)
                    .iter()
                    .any(|d| d.id == parent.id)
            {
                return Err(Error::user(
                    sqlstate::DUPLICATE_TABLE,
                    format!(
                        "circular inheritance not allowed: \"{}\" is already a child of \"{}\".",
                        parent.name, child.name
                    ),
                ));
            }
            for c in child.columns.iter().filter(|c| !c.hidden) {
                if parent
                    .column_index(&c.name)
                    .is_none_or(|i| parent.columns[i].hidden)
                {
                    return Err(Error::user(
                        sqlstate::DATATYPE_MISMATCH,
                        format!(
                            "table \"{}\" contains column \"{}\" not found in parent \"{}\"",
                            child.name, c.name, parent.name
                        ),
                    )
                    .with_detail(
                        "The new partition may contain only the columns present in parent.",
                    ));
                }
            }
            for c in parent.columns.iter().filter(|c| !c.hidden) {
                match child.column_index(&c.name) {
                    None => {
                        return Err(Error::user(
                            sqlstate::DATATYPE_MISMATCH,
                            format!("child table is missing column \"{}\"", c.name),
                        ));
                    }
                    Some(i) if child.columns[i].ty != c.ty => {
                        return Err(Error::user(
                            sqlstate::DATATYPE_MISMATCH,
                            format!(
                                "child table \"{}\" has different type for column \"{}\"",
                                child.name, c.name
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            let for_values = parse_for_values(text)?;
            let stored = check_bound(session, &parent, &child.name, &for_values)?;
            proto.partition_of = Some(stored);
            // Its rows must fit: read them all at the statement's snapshot.
            let candidate = TableDef::from_proto(proto.clone())?;
            for leaf in leaves(&Cx::of(session), &child)? {
                let rows = read_all(session, &leaf).await?;
                let rows = relayout(session, &rows, &leaf, &candidate).await?;
                if outside(session, &candidate, &rows)?.contains(&true) {
                    return Err(Error::user(
                        sqlstate::CHECK_VIOLATION,
                        format!(
                            "partition constraint of relation \"{}\" is violated by some row",
                            leaf.name
                        ),
                    ));
                }
            }
        }
    }
    session
        .cluster()
        .meta()
        .update_table(pb::UpdateTableRequest {
            table: Some(proto),
            views: vec![],
        })
        .await
        .map_err(Error::from_status)?;
    session.cluster().refresh_catalog().await?;
    Ok(())
}

/// Every row of `table` (all columns) as of now.
async fn read_all(session: &Session, table: &TableDef) -> Result<RecordBatch> {
    let ts = session.cluster().timestamp().await?;
    let ctx = Arc::new(crate::provider::StatementContext {
        read_ts: ts,
        ..Default::default()
    });
    let state = session.statement_state(ctx);
    let provider =
        crate::provider::EonTable::new(Arc::new(table.clone()), session.cluster().clone(), true);
    let plan = provider
        .scan(&state, None, &[], None)
        .await
        .map_err(from_df)?;
    let batches = datafusion::physical_plan::collect(plan, state.task_ctx())
        .await
        .map_err(from_df)?;
    Ok(datafusion::arrow::compute::concat_batches(
        table.arrow_schema(),
        &batches,
    )?)
}

// ------------------------------------------------------------ tableoid

/// The name suffix under which a table is read with its `tableoid`
/// system column (see [`rewrite_tableoid`]).
pub const TABLEOID_SUFFIX: &str = "$tableoid";
/// The hidden column that carries a row's table name (`tableoid::regclass`).
const RELNAME: &str = "__eon_relname";

fn names_tableoid(e: &SqlExpr) -> bool {
    match e {
        SqlExpr::Identifier(i) => i.value.eq_ignore_ascii_case("tableoid"),
        SqlExpr::CompoundIdentifier(parts) => parts
            .last()
            .is_some_and(|i| i.value.eq_ignore_ascii_case("tableoid")),
        _ => false,
    }
}

fn is_regclass(t: &datafusion::sql::sqlparser::ast::DataType) -> bool {
    let name = t.to_string().to_ascii_lowercase();
    name == "regclass" || name == "pg_catalog.regclass"
}

/// `tableoid::regclass` (or what [`crate::catalogsql`] made of it,
/// `eon_regclass_name(tableoid)`): the `tableoid` operand.
fn tableoid_regclass(e: &SqlExpr) -> Option<&SqlExpr> {
    match e {
        SqlExpr::Cast {
            expr, data_type, ..
        } if is_regclass(data_type) && names_tableoid(expr) => Some(expr),
        SqlExpr::Function(f) if f.name.to_string() == "eon_regclass_name" => match &f.args {
            FunctionArguments::List(list) => match list.args.as_slice() {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] if names_tableoid(x) => Some(x),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The hidden column standing for `tableoid::regclass` over `operand`.
fn relname_of(operand: &SqlExpr) -> SqlExpr {
    use datafusion::sql::sqlparser::ast::Ident;
    match operand {
        SqlExpr::CompoundIdentifier(parts) => {
            let mut parts = parts.clone();
            if let Some(last) = parts.last_mut() {
                *last = Ident::new(RELNAME);
            }
            SqlExpr::CompoundIdentifier(parts)
        }
        _ => SqlExpr::Identifier(Ident::new(RELNAME)),
    }
}

/// PostgreSQL's `tableoid` system column: which table a row comes from —
/// mostly asked of a partitioned table as `tableoid::regclass`. eon's
/// tables have no system columns, so a SELECT that names `tableoid` reads
/// its tables under `<name>$tableoid`, which adds two columns (the table's
/// id as `tableoid`, its name for `tableoid::regclass`) that `*` leaves
/// out.
pub fn rewrite_tableoid(session: &Session, statements: &mut [Statement]) {
    use datafusion::sql::sqlparser::ast::{
        ExcludeSelectItem, Ident, Query, SelectItem, SetExpr, TableAlias, TableFactor, Visit,
        VisitMut, Visitor, VisitorMut,
    };
    use std::ops::ControlFlow;

    struct Mentions(bool);
    impl Visitor for Mentions {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &SqlExpr) -> ControlFlow<()> {
            if names_tableoid(e) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }

    struct Rewrite<'a>(&'a Session);
    impl VisitorMut for Rewrite<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            let SetExpr::Select(select) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            let mut m = Mentions(false);
            let _ = select.projection.visit(&mut m);
            let _ = select.selection.visit(&mut m);
            let _ = select.group_by.visit(&mut m);
            let _ = q.order_by.visit(&mut m);
            if !m.0 {
                return ControlFlow::Continue(());
            }
            let mut changed = false;
            let mut relations: Vec<&mut TableFactor> = Vec::new();
            for twj in &mut select.from {
                relations.push(&mut twj.relation);
                for j in &mut twj.joins {
                    relations.push(&mut j.relation);
                }
            }
            for r in relations {
                let TableFactor::Table {
                    name, alias, args, ..
                } = r
                else {
                    continue;
                };
                if args.is_some() || crate::dml::resolve_table(self.0, name).is_err() {
                    continue;
                }
                let Some(datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(last)) =
                    name.0.last_mut()
                else {
                    continue;
                };
                if alias.is_none() {
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: Ident::new(crate::dml::ident(last)),
                        columns: vec![],
                        at: None,
                    });
                }
                *last =
                    Ident::with_quote('"', format!("{}{TABLEOID_SUFFIX}", crate::dml::ident(last)));
                changed = true;
            }
            if !changed {
                return ControlFlow::Continue(());
            }
            let exclude = || {
                Some(ExcludeSelectItem::Multiple(vec![
                    Ident::new("tableoid").into(),
                    Ident::new(RELNAME).into(),
                ]))
            };
            for item in &mut select.projection {
                match item {
                    SelectItem::Wildcard(o) | SelectItem::QualifiedWildcard(_, o) => {
                        if o.opt_exclude.is_none() {
                            o.opt_exclude = exclude();
                        }
                    }
                    SelectItem::UnnamedExpr(e) => {
                        // `tableoid::regclass[::text]` is named tableoid.
                        let mut inner = &*e;
                        loop {
                            match inner {
                                SqlExpr::Cast { expr, .. } => inner = expr,
                                other => match tableoid_regclass(other) {
                                    Some(x) => inner = x,
                                    None => break,
                                },
                            }
                        }
                        if names_tableoid(inner)
                            && !matches!(e, SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_))
                        {
                            *item = SelectItem::ExprWithAlias {
                                expr: e.clone(),
                                alias: Ident::new("tableoid"),
                            };
                        }
                    }
                    _ => {}
                }
            }
            // `tableoid::regclass` is the table's name.
            let relname = |e: &mut SqlExpr| {
                if let Some(operand) = tableoid_regclass(e) {
                    *e = relname_of(operand);
                }
                ControlFlow::<()>::Continue(())
            };
            let _ =
                datafusion::sql::sqlparser::ast::visit_expressions_mut(select.as_mut(), relname);
            let _ =
                datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut q.order_by, relname);
            ControlFlow::Continue(())
        }
    }
    for s in statements {
        if matches!(s, Statement::Query(_) | Statement::Explain { .. }) {
            let _ = s.visit(&mut Rewrite(session));
        }
    }
}

// ------------------------------------------------------------ reads

/// A partitioned table as DataFusion sees it: the rows of its leaves, one
/// leaf after another in bound order. (Also any table read with its
/// `tableoid`, a partitioned one or not: see [`rewrite_tableoid`].)
#[derive(Debug)]
pub struct PartitionedTable {
    def: Arc<TableDef>,
    cluster: Arc<Cluster>,
    schema: SchemaRef,
    /// Visible columns (the rest are `tableoid` and its name).
    visible: usize,
}

impl PartitionedTable {
    pub fn new(def: Arc<TableDef>, cluster: Arc<Cluster>, tableoid: bool) -> Self {
        let mut fields: Vec<Field> = def
            .visible_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let visible = fields.len();
        if tableoid {
            fields.push(Field::new("tableoid", DataType::Int64, false));
            fields.push(Field::new(RELNAME, DataType::Utf8, false));
        }
        PartitionedTable {
            def,
            cluster,
            schema: Arc::new(Schema::new(fields)),
            visible,
        }
    }
}

#[async_trait]
impl TableProvider for PartitionedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> std::result::Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        // Each leaf's data engines apply them, as a table's do.
        Ok(filters
            .iter()
            .map(|f| {
                let system = f
                    .column_refs()
                    .iter()
                    .any(|c| c.name == "tableoid" || c.name == RELNAME);
                if !system && crate::provider::shippable(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> std::result::Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        if let Some(actor) = state.config().get_extension::<crate::privileges::Actor>()
            && let Some(role) = &actor.0
        {
            crate::privileges::require(role, &self.def, "SELECT")
                .map_err(crate::provider::to_df)?;
        }
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&wanted)?);
        let layout: Vec<Source> = wanted
            .iter()
            .map(|&i| match i.checked_sub(self.visible) {
                None => Source::Column,
                Some(0) => Source::TableOid,
                Some(_) => Source::Name,
            })
            .collect();
        let session_state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("a scan outside a session".into()))?;
        let cx = Cx {
            state: session_state,
            cluster: &self.cluster,
        };
        let leaves = leaves(&cx, &self.def).map_err(crate::provider::to_df)?;
        let mut parts = Vec::with_capacity(leaves.len());
        for leaf in &leaves {
            let table = crate::provider::EonTable::new(leaf.clone(), self.cluster.clone(), false);
            let leaf_schema = table.schema();
            let columns = wanted
                .iter()
                .filter(|&&i| i < self.visible)
                .map(|&i| leaf_schema.index_of(self.schema.field(i).name()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            // Privileges were checked on the partitioned table, as
            // PostgreSQL does for its partitions read through it.
            let plan = table
                .scan_unchecked(state, Some(&columns), filters, None)
                .await?;
            parts.push(Part {
                plan,
                id: leaf.id as i64,
                name: crate::pgformat::quote_ident(&leaf.name),
            });
        }
        Ok(Arc::new(AppendExec::new(schema, layout, parts)))
    }
}

/// Where an output column of [`AppendExec`] comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The next column of the leaf's scan.
    Column,
    TableOid,
    Name,
}

/// One leaf's scan and its `tableoid` values.
#[derive(Debug, Clone)]
struct Part {
    plan: Arc<dyn ExecutionPlan>,
    id: i64,
    name: String,
}

/// The leaves' scans one after another, as one partition.
#[derive(Debug)]
struct AppendExec {
    schema: SchemaRef,
    layout: Vec<Source>,
    parts: Vec<Part>,
    props: Arc<PlanProperties>,
}

impl AppendExec {
    fn new(schema: SchemaRef, layout: Vec<Source>, parts: Vec<Part>) -> AppendExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        AppendExec {
            schema,
            layout,
            parts,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for AppendExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let tables: Vec<&str> = self.parts.iter().map(|p| p.name.as_str()).collect();
        write!(
            f,
            "AppendExec: partitions=[{}] in bound order",
            tables.join(", ")
        )
    }
}

impl ExecutionPlan for AppendExec {
    fn name(&self) -> &str {
        "AppendExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    // No children: the leaves' scans are planned whole by
    // `PartitionedTable::scan` and run as they are. Shown to DataFusion as
    // children, its optimizer would split them into parallel partitions
    // and lose the order the rows are listed in.
    crate::provider::leaf_plan_methods!();

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "AppendExec has one partition, not {partition}"
            )));
        }
        let mut streams = Vec::new();
        for part in &self.parts {
            for p in 0..part
                .plan
                .properties()
                .output_partitioning()
                .partition_count()
            {
                streams.push((part.clone(), p));
            }
        }
        let schema = self.schema.clone();
        let layout = self.layout.clone();
        let rows = futures::stream::iter(streams)
            .map(move |(part, p)| {
                let (out, layout) = (schema.clone(), layout.clone());
                let stream = match part.plan.execute(p, ctx.clone()) {
                    Ok(s) => s.boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                };
                stream.map(move |b| {
                    let b = b?;
                    let n = b.num_rows();
                    let mut leaf_columns = b.columns().iter();
                    let columns: Vec<ArrayRef> = layout
                        .iter()
                        .map(|s| match s {
                            Source::Column => leaf_columns.next().cloned().ok_or_else(|| {
                                DataFusionError::Internal("a leaf scan lacks a column".into())
                            }),
                            Source::TableOid => {
                                Ok(Arc::new(Int64Array::from(vec![part.id; n])) as ArrayRef)
                            }
                            Source::Name => {
                                Ok(Arc::new(datafusion::arrow::array::StringArray::from(vec![
                                    part.name.as_str();
                                    n
                                ])) as ArrayRef)
                            }
                        })
                        .collect::<datafusion::common::Result<_>>()?;
                    Ok(RecordBatch::try_new_with_options(
                        out.clone(),
                        columns,
                        &RecordBatchOptions::new().with_row_count(Some(n)),
                    )?)
                })
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(i: i32) -> Datum {
        Datum::Value(ScalarValue::Int32(Some(i)))
    }

    #[test]
    fn range_bounds_take_the_lower_and_not_the_upper() {
        let b = Bound::Range {
            from: vec![v(1)],
            to: vec![v(10)],
        };
        let key = |i: i32| vec![ScalarValue::Int32(Some(i))];
        assert!(b.holds(&key(1), &[]));
        assert!(b.holds(&key(9), &[]));
        assert!(!b.holds(&key(10), &[]));
        assert!(!b.holds(&key(0), &[]));
        assert!(!b.holds(&[ScalarValue::Int32(None)], &[]));
    }

    #[test]
    fn minvalue_and_maxvalue_are_unbounded() {
        let b = Bound::Range {
            from: vec![Datum::Min, Datum::Min],
            to: vec![v(5), Datum::Max],
        };
        let key = |a: i32, b: i32| vec![ScalarValue::Int32(Some(a)), ScalarValue::Int32(Some(b))];
        assert!(b.holds(&key(-100, 7), &[]));
        assert!(b.holds(&key(5, 1000), &[]));
        assert!(!b.holds(&key(6, 0), &[]));
    }

    #[test]
    fn overlaps_and_order() {
        let r = |a, b| Bound::Range {
            from: vec![v(a)],
            to: vec![v(b)],
        };
        assert!(r(1, 10).overlaps(&r(5, 20)));
        assert!(!r(1, 10).overlaps(&r(10, 20)));
        assert_eq!(r(10, 20).order(&r(1, 10)), Ordering::Greater);
        let l = |vals: &[i32], null| Bound::List {
            values: vals.iter().map(|&i| ScalarValue::Int32(Some(i))).collect(),
            null,
        };
        assert!(l(&[1, 2], false).overlaps(&l(&[2], false)));
        assert!(!l(&[1], true).overlaps(&l(&[2], false)));
        assert!(l(&[], true).overlaps(&l(&[3], true)));
        assert_eq!(l(&[], true).order(&l(&[9], false)), Ordering::Greater);
        assert_eq!(Bound::Default.order(&l(&[], true)), Ordering::Greater);
        let h = |m, r| Bound::Hash {
            modulus: m,
            remainder: r,
        };
        assert!(h(4, 1).overlaps(&h(2, 1)));
        assert!(!h(4, 2).overlaps(&h(2, 1)));
    }
}
