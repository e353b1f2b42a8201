//! CREATE TABLE and DROP TABLE, in or out of a transaction block (ALTER
//! TABLE is in `alter`).
//!
//! The query engine validates the definition (types, keys, defaults), meta
//! stores it and places the shards, and — for DROP — every data engine that
//! held a shard forgets the data.

use std::sync::Arc;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, CharacterLength, ColumnOption, CreateTable, CreateTableOptions,
    DataType as SqlDataType, ExactNumberInfo, Expr as SqlExpr, ForeignKeyConstraint, GeneratedAs,
    Ident, IndexColumn, ObjectName, ReferentialAction, SequenceOptions, SqlOption, Statement,
    TableConstraint, TimezoneInfo, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use eon_common::error::sqlstate;
use eon_common::schema::{ColumnDef, ForeignKeyDef, ROWID_COLUMN};
use eon_common::{Error, Result, SqlType, TableDef};
use eon_proto::v1 as pb;

use crate::cluster::Cluster;
use crate::dml::ident;
use crate::session::{Output, Session};

/// Map a SQL type name to eon's type.
pub fn sql_type(t: &SqlDataType) -> Result<SqlType> {
    use SqlDataType as D;
    let numeric = |info: &ExactNumberInfo| -> Result<SqlType> {
        Ok(match info {
            ExactNumberInfo::None => SqlType::Numeric {
                precision: 0,
                scale: 0,
            },
            ExactNumberInfo::Precision(p) => check_numeric(*p, 0)?,
            ExactNumberInfo::PrecisionAndScale(p, s) => check_numeric(*p, *s)?,
        })
    };
    let varchar = |len: &Option<CharacterLength>| match len {
        Some(CharacterLength::IntegerLength { length, .. }) => SqlType::Varchar {
            max_length: Some(*length as u32),
        },
        _ => SqlType::Varchar { max_length: None },
    };
    Ok(match t {
        D::SmallInt(_) | D::Int2(_) => SqlType::Int2,
        D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Int4,
        D::BigInt(_) | D::Int8(_) => SqlType::Int8,
        D::Real | D::Float4 => SqlType::Float4,
        D::DoublePrecision | D::Float8 | D::Double(_) => SqlType::Float8,
        D::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => SqlType::Float4,
        D::Float(_) => SqlType::Float8,
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => numeric(info)?,
        D::Text | D::String(_) => SqlType::Text,
        D::Varchar(len) | D::CharacterVarying(len) | D::CharVarying(len) => varchar(len),
        D::Char(len) | D::Character(len) => SqlType::Char {
            length: match len {
                Some(CharacterLength::IntegerLength { length, .. }) if *length >= 1 => {
                    *length as u32
                }
                Some(_) => {
                    return Err(Error::user(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "length for type char must be at least 1",
                    ));
                }
                None => 1,
            },
        },
        D::Boolean | D::Bool => SqlType::Bool,
        D::Date => SqlType::Date,
        D::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => SqlType::TimestampTz,
        D::Timestamp(_, _) => SqlType::Timestamp,
        D::Bytea => SqlType::Bytea,
        D::Uuid => SqlType::Uuid,
        D::JSONB => SqlType::Jsonb,
        D::JSON => SqlType::Json,
        D::Interval { .. } => SqlType::Interval,
        D::Array(
            ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => {
            let element = sql_type(inner)?;
            SqlType::array_of(element)
                .ok_or_else(|| Error::unsupported("multidimensional arrays are not supported"))?
        }
        D::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Time,
        D::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
            "timestamptz" => SqlType::TimestampTz,
            // PostgreSQL's type of identifiers (up to 63 bytes): text here.
            "name" | "pg_catalog.name" => SqlType::Text,
            other => {
                return Err(Error::user(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("type \"{other}\" does not exist"),
                ));
            }
        },
        other => return Err(Error::unsupported(format!("type {other} is not supported"))),
    })
}

/// CREATE TABLE name [(column names)] AS query: a table (without a
/// primary key) whose columns take the query's names and types, then
/// `INSERT INTO name SELECT …` — the command tag is `SELECT n`, as in
/// PostgreSQL. In a transaction block both are part of the transaction;
/// outside one, a failing insert drops the new table again.
async fn create_table_as(
    session: &Session,
    ct: &CreateTable,
    query: &datafusion::sql::sqlparser::ast::Query,
) -> Result<Output> {
    let (schema, name) = session.new_relation(&ct.name, ct.temporary)?;
    if ct.if_not_exists && session.cluster().table(&schema, &name).is_some() {
        return Ok(Output::Command("CREATE TABLE AS".into()));
    }
    let ts = session.cluster().timestamp().await?;
    let state = session.statement_state(std::sync::Arc::new(crate::provider::StatementContext {
        read_ts: ts,
        ..Default::default()
    }));
    let plan = session
        .plan_query(&state, Statement::Query(Box::new(query.clone())))
        .await?;
    let fields = plan.schema().fields();
    if ct.columns.len() > fields.len() {
        return Err(Error::user(
            sqlstate::SYNTAX_ERROR,
            "too many column names were specified",
        ));
    }
    let mut columns = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        let cname = match ct.columns.get(i) {
            Some(c) => ident(&c.name),
            None => field.name().clone(),
        };
        let ty = SqlType::from_field(field)
            .or_else(|| SqlType::from_arrow(field.data_type()))
            .ok_or_else(|| {
                Error::unsupported(format!(
                    "column \"{cname}\" has a type eon cannot store ({})",
                    field.data_type()
                ))
            })?;
        columns.push(format!("\"{}\" {ty}", cname.replace('"', "\"\"")));
    }
    let target = ct.name.to_string();
    let definition = format!("CREATE TABLE {target} ({})", columns.join(", "));
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &definition)
        .map_err(|e| Error::syntax(e.to_string()))?;
    let Some(Statement::CreateTable(mut plain)) = parsed.into_iter().next() else {
        return Err(Error::internal("CREATE TABLE AS: no table definition"));
    };
    plain.temporary = ct.temporary;
    plain.table_options = ct.table_options.clone();
    create_table(session, &plain).await?;
    let names: Vec<String> = plain.columns.iter().map(|c| c.name.to_string()).collect();
    let insert = format!("INSERT INTO {target} ({}) {query}", names.join(", "));
    let inserted = async {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, &insert)
            .map_err(|e| Error::syntax(e.to_string()))?
            .remove(0);
        crate::dml::execute(session, &statement, &[]).await
    }
    .await;
    match inserted {
        Ok(Output::Command(tag)) => Ok(Output::Command(format!(
            "SELECT {}",
            tag.rsplit(' ').next().unwrap_or("0")
        ))),
        Ok(_) => Ok(Output::Command("SELECT 0".into())),
        Err(e) => {
            if !session.in_transaction() {
                let _ = drop_tables(session, std::slice::from_ref(&ct.name), true).await;
            }
            Err(e)
        }
    }
}

fn check_numeric(p: u64, s: i64) -> Result<SqlType> {
    // PostgreSQL's limits; eon stores at most NUMERIC_MAX_DIGITS digits of
    // them (a value needing more is a numeric field overflow).
    if !(1..=1000).contains(&p) {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("NUMERIC precision {p} must be between 1 and 1000"),
        ));
    }
    if !(-1000..=1000).contains(&s) {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("NUMERIC scale {s} must be between -1000 and 1000"),
        ));
    }
    let max = eon_common::types::NUMERIC_MAX_DIGITS;
    if s < -(max as i64) {
        return Err(Error::unsupported(format!(
            "NUMERIC scale {s}: eon stores at most {max} digits, so it cannot round beyond 10^{max}"
        )));
    }
    if s > max as i64 {
        return Err(Error::unsupported(format!(
            "NUMERIC scale {s}: eon stores at most {max} digits after the decimal point"
        )));
    }
    Ok(SqlType::Numeric {
        precision: p as u16,
        scale: s as i8,
    })
}

pub async fn create_table(session: &Session, ct: &CreateTable) -> Result<Output> {
    if ct.like.is_some() || ct.clone.is_some() {
        return Err(Error::unsupported("CREATE TABLE LIKE is not supported yet"));
    }
    if let Some(query) = &ct.query {
        return Box::pin(create_table_as(session, ct, query)).await;
    }
    if ct.or_replace {
        return Err(Error::unsupported("CREATE OR REPLACE TABLE"));
    }
    let (schema, name) = session.new_relation(&ct.name, ct.temporary)?;
    // PARTITION OF: the parent's columns (with their defaults and NOT
    // NULL), primary key and CHECK constraints.
    let parent = match &ct.partition_of {
        Some(p) => Some(crate::partitions::parent(session, p)?),
        None => None,
    };
    let mut columns: Vec<ColumnDef> = match &parent {
        Some(p) => p.columns.iter().filter(|c| !c.hidden).cloned().collect(),
        None => Vec::with_capacity(ct.columns.len() + 1),
    };
    let mut primary_key: Option<Vec<usize>> = parent
        .as_ref()
        .filter(|p| !p.has_rowid())
        .map(|p| p.primary_key.clone());
    let mut pending_fks: Vec<(&ForeignKeyConstraint, Option<usize>)> = vec![];
    // CHECK constraints: a name if given, the expression.
    let mut pending_checks: Vec<(Option<String>, &SqlExpr)> = vec![];
    // UNIQUE constraints: a name if given, the columns.
    let mut pending_unique: Vec<(Option<String>, Vec<usize>)> = vec![];
    // Sequences its SERIAL and identity columns own, and which columns are
    // identity columns ("a": ALWAYS, "d": BY DEFAULT).
    let mut sequences: Vec<pb::Sequence> = vec![];
    let mut identities: Vec<(usize, &'static str)> = vec![];
    let pk_twice = || {
        Error::user(
            sqlstate::INVALID_TABLE_DEFINITION,
            format!("multiple primary keys for table \"{name}\" are not allowed"),
        )
    };
    for c in &ct.columns {
        let cname = ident(&c.name);
        if parent.is_some() {
            // A partition's column list only adds options to the
            // parent's columns.
            let Some(existing) = columns.iter().position(|x| x.name == cname) else {
                return Err(Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{cname}\" does not exist"),
                ));
            };
            for opt in &c.options {
                match &opt.option {
                    ColumnOption::NotNull => columns[existing].nullable = false,
                    ColumnOption::Null => {}
                    ColumnOption::Default(e) => columns[existing].default_sql = Some(e.to_string()),
                    other => {
                        return Err(Error::unsupported(format!(
                            "column option {other} on a partition is not supported"
                        )));
                    }
                }
            }
            continue;
        }
        if columns.iter().any(|x| x.name == cname) {
            return Err(Error::user(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{cname}\" specified more than once"),
            ));
        }
        if cname == ROWID_COLUMN {
            return Err(Error::user(
                sqlstate::DUPLICATE_COLUMN,
                format!("column name \"{cname}\" is reserved"),
            ));
        }
        let serial = crate::sequences::serial_type(&c.data_type);
        let ty = match &serial {
            Some(t) => t.clone(),
            None => crate::enums::column_type(session, &c.data_type)?,
        };
        let mut col = ColumnDef {
            name: cname.clone(),
            ty,
            nullable: true,
            default_sql: None,
            hidden: false,
        };
        let mut owned = |col: &mut ColumnDef, options: &[SequenceOptions]| -> Result<()> {
            if col.default_sql.is_some() {
                return Err(Error::syntax(format!(
                    "both default and identity specified for column \"{}\" of table \"{name}\"",
                    col.name
                )));
            }
            let (q, default) =
                crate::sequences::owned(&schema, &name, &col.name, &col.ty, options)?;
            sequences.push(q);
            col.default_sql = Some(default);
            col.nullable = false;
            Ok(())
        };
        if serial.is_some() {
            owned(&mut col, &[])?;
        }
        for opt in &c.options {
            match &opt.option {
                ColumnOption::Null => col.nullable = true,
                ColumnOption::NotNull => col.nullable = false,
                ColumnOption::Default(_) if col.default_sql.is_some() => {
                    return Err(Error::syntax(format!(
                        "multiple default values specified for column \"{cname}\" of table \"{name}\""
                    )));
                }
                ColumnOption::Default(e) => col.default_sql = Some(e.to_string()),
                ColumnOption::Generated {
                    generated_as: kind @ (GeneratedAs::Always | GeneratedAs::ByDefault),
                    sequence_options,
                    generation_expr: None,
                    ..
                } => {
                    owned(&mut col, sequence_options.as_deref().unwrap_or(&[]))?;
                    identities.push((
                        columns.len(),
                        if matches!(kind, GeneratedAs::Always) {
                            "a"
                        } else {
                            "d"
                        },
                    ));
                }
                ColumnOption::PrimaryKey(_) => {
                    if primary_key.is_some() {
                        return Err(pk_twice());
                    }
                    primary_key = Some(vec![columns.len()]);
                }
                ColumnOption::Unique(u) => pending_unique.push((
                    opt.name.as_ref().or(u.name.as_ref()).map(ident),
                    vec![columns.len()],
                )),
                ColumnOption::ForeignKey(fk) => pending_fks.push((fk, Some(columns.len()))),
                ColumnOption::Check(check) => pending_checks.push((
                    opt.name.as_ref().or(check.name.as_ref()).map(ident),
                    &check.expr,
                )),
                ColumnOption::Generated { .. } => {
                    return Err(Error::unsupported(
                        "generated columns are not supported yet",
                    ));
                }
                other => {
                    return Err(Error::unsupported(format!(
                        "column option {other} is not supported"
                    )));
                }
            }
        }
        columns.push(col);
    }
    for tc in &ct.constraints {
        match tc {
            TableConstraint::PrimaryKey(pk) => {
                if primary_key.is_some() {
                    return Err(pk_twice());
                }
                primary_key = Some(key_columns(&pk.columns, &columns)?);
            }
            TableConstraint::Unique(u) => pending_unique.push((
                u.name.as_ref().map(ident),
                constraint_columns(&u.columns, &columns, "unique")?,
            )),
            TableConstraint::ForeignKey(fk) => pending_fks.push((fk, None)),
            TableConstraint::Check(check) => {
                pending_checks.push((check.name.as_ref().map(ident), &check.expr))
            }
            other => {
                return Err(Error::unsupported(format!(
                    "table constraint {other} is not supported"
                )));
            }
        }
    }
    if ct.inherits.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(Error::unsupported(
            "table inheritance (INHERITS) is not supported yet",
        ));
    }
    let partition_of = match (&parent, &ct.for_values) {
        (Some(p), Some(bound)) => Some(crate::partitions::check_bound(session, p, &name, bound)?),
        _ => None,
    };
    let partition_key = match &ct.partition_by {
        Some(key) => Some(crate::partitions::parse_key(key, &columns)?),
        None => None,
    };
    if columns.is_empty() {
        return Err(Error::unsupported(
            "tables without columns are not supported",
        ));
    }
    let primary_key = match primary_key {
        Some(pk) => {
            for &i in &pk {
                columns[i].nullable = false;
            }
            pk
        }
        None => {
            columns.push(ColumnDef {
                name: ROWID_COLUMN.into(),
                ty: SqlType::Int8,
                nullable: false,
                default_sql: None,
                hidden: true,
            });
            vec![columns.len() - 1]
        }
    };
    let mut shard_count = session.cluster().default_shards;
    let mut shards_given = false;
    let mut distribute_by = None;
    let mut colocate_with = None;
    let mut replication = 0;
    let options = match &ct.table_options {
        CreateTableOptions::With(o)
        | CreateTableOptions::Options(o)
        | CreateTableOptions::Plain(o) => o.as_slice(),
        _ => &[],
    };
    for o in options {
        match o {
            SqlOption::KeyValue { key, value }
                if matches!(ident(key).as_str(), "shards" | "shard_count") =>
            {
                shard_count = match value {
                    SqlExpr::Value(v) => match &v.value {
                        SqlValue::Number(n, _) => n.parse().ok(),
                        SqlValue::SingleQuotedString(s) => s.parse().ok(),
                        _ => None,
                    },
                    _ => None,
                }
                .filter(|&n: &u32| (1..=4096).contains(&n))
                .ok_or_else(|| {
                    Error::user(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "shards must be an integer from 1 to 4096",
                    )
                })?;
                shards_given = true;
            }
            SqlOption::KeyValue { key, value } if ident(key) == "replication" => {
                replication = option_text(value)
                    .parse()
                    .ok()
                    .filter(|n: &u32| (1..=7).contains(n))
                    .ok_or_else(|| {
                        Error::user(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            "replication must be an integer from 1 to 7",
                        )
                    })?;
            }
            SqlOption::KeyValue { key, value } if ident(key) == "distribute_by" => {
                distribute_by = Some(option_text(value));
            }
            SqlOption::KeyValue { key, value } if ident(key) == "colocate_with" => {
                colocate_with = Some(option_text(value));
            }
            // PostgreSQL's heap storage parameters mean nothing to eon's
            // storage; accepted so that DDL written for PostgreSQL (pgbench's
            // `WITH (fillfactor=100)`) runs.
            SqlOption::KeyValue { key, .. }
                if ident(key) == "fillfactor"
                    || ident(key).starts_with("autovacuum_")
                    || ident(key).starts_with("toast.")
                    || ident(key) == "parallel_workers" => {}
            other => {
                return Err(Error::user(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("unrecognized parameter \"{other}\""),
                ));
            }
        }
    }
    let distribution = distribution(&columns, &primary_key, distribute_by)?;
    let mut colocated_with = 0;
    if let Some(other) = colocate_with {
        let other = crate::dml::resolve_table(session, &ObjectName::from(vec![Ident::new(other)]))?;
        let ours = &primary_key[..distribution.unwrap_or(primary_key.len())];
        let theirs = other.distribution_key();
        let alike = ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .all(|(&a, &b)| eon_common::key::same_encoding(columns[a].ty, other.columns[b].ty));
        if !alike || other.has_rowid() || crate::partitions::key_of(&other).is_some() {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "table \"{name}\" cannot be colocated with \"{}\": their distribution keys ({}; {}) differ in number or type",
                    other.name,
                    column_list(ours.iter().map(|&c| columns[c].name.as_str())),
                    column_list(other.column_names(theirs).into_iter()),
                ),
            ));
        }
        if shards_given && shard_count != other.shard_count {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "table \"{name}\" is colocated with \"{}\", which has {} shards",
                    other.name, other.shard_count
                ),
            ));
        }
        shard_count = other.shard_count;
        colocated_with = other.id;
    }
    // Defaults must be constants of the column's type: evaluate them now.
    let ts = session.cluster().timestamp().await?;
    let state = session.statement_state(std::sync::Arc::new(crate::provider::StatementContext {
        read_ts: ts,
        ..Default::default()
    }));
    for col in &columns {
        if let Some(d) = col
            .default_sql
            .as_ref()
            .filter(|d| !crate::sequences::is_volatile_default(d))
        {
            let stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                &format!("SELECT {d}"),
            )
            .map_err(|e| Error::syntax(e.to_string()))?
            .remove(0);
            let plan = session.plan_query(&state, stmt).await?;
            let physical = state
                .create_physical_plan(&plan)
                .await
                .map_err(crate::errors::from_df)?;
            let batches = datafusion::physical_plan::collect(physical, state.task_ctx())
                .await
                .map_err(crate::errors::from_df)?;
            if let Some(b) = batches.first() {
                crate::coerce::coerce(
                    b.column(0),
                    &ColumnDef {
                        nullable: true,
                        ..col.clone()
                    },
                    &name,
                )?;
            }
        }
    }
    let mut foreign_keys = Vec::with_capacity(pending_fks.len());
    for (fk, column) in pending_fks {
        let def = foreign_key(session, &schema, &name, &columns, &primary_key, fk, column)?;
        if foreign_keys
            .iter()
            .any(|f: &ForeignKeyDef| f.name == def.name)
        {
            return Err(Error::user(
                sqlstate::DUPLICATE_OBJECT,
                format!(
                    "constraint \"{}\" for relation \"{name}\" already exists",
                    def.name
                ),
            ));
        }
        foreign_keys.push(def);
    }
    let mut taken: Vec<String> = foreign_keys.iter().map(|f| f.name.clone()).collect();
    taken.push(format!("{name}_pkey"));
    let visible: Vec<String> = columns
        .iter()
        .filter(|c| !c.hidden)
        .map(|c| c.name.clone())
        .collect();
    let mut checks = Vec::with_capacity(pending_checks.len());
    for (given, expr) in pending_checks {
        let cname = crate::checks::name(&name, given, &visible, expr, &taken)?;
        taken.push(cname.clone());
        checks.push(crate::checks::define(
            session, &name, &columns, cname, expr,
        )?);
    }
    let mut indexes: Vec<pb::Index> = Vec::with_capacity(pending_unique.len());
    for (given, cols) in pending_unique {
        let names: Vec<&str> = cols.iter().map(|&c| columns[c].name.as_str()).collect();
        let taken = |n: &str| {
            taken.iter().any(|t| t == n)
                || n == name
                || indexes.iter().any(|i| i.name == n)
                || crate::indexes::relation_exists(session, &schema, n)
        };
        let cname = match given {
            Some(n) if taken(&n) => {
                return Err(Error::user(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{n}\" already exists"),
                ));
            }
            Some(n) => n,
            None => crate::indexes::default_name(&name, &names, "key", taken),
        };
        indexes.push(crate::indexes::define(&cname, cols, true, true));
    }
    let mut table = TableDef::new_proto(&schema, &name, columns, primary_key, shard_count);
    table.indexes = indexes;
    crate::indexes::shape_storage(&mut table)?;
    table.owner = session.user();
    if let Some(p) = &parent {
        for check in &p.proto().checks {
            if !checks.iter().any(|c| c.name == check.name) {
                checks.push(check.clone());
            }
        }
    }
    table.checks = checks;
    table.foreign_keys = foreign_keys.iter().map(ForeignKeyDef::to_proto).collect();
    table.partition_of = partition_of;
    table.distribution_columns = distribution.unwrap_or(0) as u32;
    table.colocated_with = colocated_with;
    table.replication = replication;
    if let Some(key) = partition_key {
        let mut probe = table.clone();
        probe.placement = vec![0; probe.shard_count as usize];
        crate::partitions::check_key(session, &key, &TableDef::from_proto(probe)?)?;
        table.partition_key = Some(key);
    }
    for (i, kind) in identities {
        table.columns[i].identity = kind.to_string();
    }
    let r = session
        .cluster()
        .meta()
        .create_table(pb::CreateTableRequest {
            table: Some(table),
            if_not_exists: ct.if_not_exists,
            restore: false,
            sequences,
            replaces: 0,
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    session.cluster().refresh_catalog().await?;
    if r.created {
        if let Some(t) = r.table {
            session.note_ddl(DdlUndo::Created(t));
        }
    }
    Ok(Output::Command("CREATE TABLE".into()))
}

/// The columns a PRIMARY KEY constraint names, as indexes into `columns`.
pub(crate) fn key_columns(named: &[IndexColumn], columns: &[ColumnDef]) -> Result<Vec<usize>> {
    constraint_columns(named, columns, "primary key")
}

/// The columns a PRIMARY KEY or UNIQUE constraint (`what`) names.
pub(crate) fn constraint_columns(
    named: &[IndexColumn],
    columns: &[ColumnDef],
    what: &str,
) -> Result<Vec<usize>> {
    let mut key = Vec::with_capacity(named.len());
    for ic in named {
        let SqlExpr::Identifier(id) = &ic.column.expr else {
            return Err(Error::unsupported(format!("expressions in a {what}")));
        };
        let cname = ident(id);
        let idx = columns
            .iter()
            .position(|c| c.name == cname && !c.hidden)
            .ok_or_else(|| {
                Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{cname}\" named in key does not exist"),
                )
            })?;
        if key.contains(&idx) {
            return Err(Error::user(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{cname}\" appears twice in {what} constraint"),
            ));
        }
        key.push(idx);
    }
    Ok(key)
}

/// Resolve a FOREIGN KEY of a table being created: its columns (`column`
/// for one written on a column), and the referenced table's primary key,
/// which is what it must reference (eon has no other unique constraints).
fn foreign_key(
    session: &Session,
    schema: &str,
    table: &str,
    columns: &[ColumnDef],
    primary_key: &[usize],
    fk: &ForeignKeyConstraint,
    column: Option<usize>,
) -> Result<ForeignKeyDef> {
    for action in [&fk.on_delete, &fk.on_update].into_iter().flatten() {
        if !matches!(
            action,
            ReferentialAction::NoAction | ReferentialAction::Restrict
        ) {
            return Err(Error::unsupported(format!(
                "foreign keys with ON DELETE/UPDATE {action} are not supported yet"
            )));
        }
    }
    let find = |cols: &[ColumnDef], id: &datafusion::sql::sqlparser::ast::Ident| {
        let cname = ident(id);
        cols.iter()
            .position(|c| c.name == cname && !c.hidden)
            .ok_or_else(|| {
                Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!(
                        "column \"{cname}\" referenced in foreign key constraint does not exist"
                    ),
                )
            })
    };
    let mut local: Vec<usize> = match column {
        Some(i) => vec![i],
        None => fk
            .columns
            .iter()
            .map(|c| find(columns, c))
            .collect::<Result<_>>()?,
    };
    let (ref_schema, ref_table) = match crate::dml::name_parts(&fk.foreign_table)? {
        // The table being created, referencing itself.
        (None, t) if t == table => (schema.to_string(), t),
        _ => session.relation(&fk.foreign_table)?,
    };
    let temp = eon_common::schema::is_temp_schema;
    if temp(&ref_schema) != temp(schema) {
        return Err(Error::user(
            sqlstate::INVALID_TABLE_DEFINITION,
            if temp(schema) {
                "constraints on temporary tables may reference only temporary tables"
            } else {
                "constraints on permanent tables may reference only permanent tables"
            },
        ));
    }
    let (ref_columns, ref_key): (Vec<ColumnDef>, Vec<usize>) =
        if ref_schema == schema && ref_table == table {
            (columns.to_vec(), primary_key.to_vec())
        } else {
            let t = session
                .cluster()
                .table(&ref_schema, &ref_table)
                .ok_or_else(|| {
                    Error::user(
                        sqlstate::UNDEFINED_TABLE,
                        format!("relation \"{ref_table}\" does not exist"),
                    )
                })?;
            (t.columns.clone(), t.primary_key.clone())
        };
    let referred: Vec<usize> = if fk.referred_columns.is_empty() {
        ref_key.clone()
    } else {
        fk.referred_columns
            .iter()
            .map(|c| find(&ref_columns, c))
            .collect::<Result<_>>()?
    };
    if referred.len() != local.len() {
        return Err(Error::user(
            sqlstate::INVALID_FOREIGN_KEY,
            "number of referencing and referenced columns for foreign key disagree",
        ));
    }
    let mut sorted = referred.clone();
    sorted.sort();
    let mut key_sorted = ref_key.clone();
    key_sorted.sort();
    if sorted != key_sorted || ref_columns[ref_key[0]].hidden {
        return Err(Error::user(
            sqlstate::INVALID_FOREIGN_KEY,
            format!(
                "there is no unique constraint matching given keys for referenced table \"{ref_table}\""
            ),
        ));
    }
    // Pair the local columns with the key in key order.
    local = ref_key
        .iter()
        .map(|k| local[referred.iter().position(|r| r == k).unwrap()])
        .collect();
    for (&l, &r) in local.iter().zip(&ref_key) {
        let (a, b) = (&columns[l].ty, &ref_columns[r].ty);
        let integer = |t: &SqlType| matches!(t, SqlType::Int2 | SqlType::Int4 | SqlType::Int8);
        let text = |t: &SqlType| {
            matches!(
                t,
                SqlType::Text | SqlType::Varchar { .. } | SqlType::Char { .. }
            )
        };
        if !(a.short_name() == b.short_name() || (integer(a) && integer(b)) || (text(a) && text(b)))
        {
            return Err(Error::user(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "foreign key constraint cannot be implemented: key columns \"{}\" and \"{}\" are of incompatible types: {a} and {b}",
                    columns[l].name, ref_columns[r].name
                ),
            ));
        }
    }
    let name = match &fk.name {
        Some(n) => ident(n),
        None => format!(
            "{table}_{}_fkey",
            local
                .iter()
                .map(|&i| columns[i].name.as_str())
                .collect::<Vec<_>>()
                .join("_")
        ),
    };
    Ok(ForeignKeyDef {
        name,
        columns: local,
        ref_schema,
        ref_table,
        ref_columns: ref_key,
    })
}

/// How to undo one DDL statement of a transaction block.
///
/// eon's catalog changes are not versioned with transactions: DDL in a
/// block takes effect at once (other sessions see it before COMMIT), and
/// ROLLBACK — of the block, or to a savepoint before the statement —
/// undoes it: a created table is dropped, a dropped table put back as it
/// was. Its data is only dropped once the block commits, so a rolled back
/// DROP loses nothing.
#[derive(Debug, Clone)]
pub enum DdlUndo {
    Created(pb::Table),
    /// With the sequences it owned (dropped with it).
    Dropped(pb::Table, Vec<pb::Sequence>),
    /// A role as it was before the statement and after it (none: it did
    /// not exist).
    Role {
        before: Option<pb::Role>,
        after: Option<pb::Role>,
    },
    /// A table's grants before a GRANT or REVOKE.
    Grants {
        schema: String,
        name: String,
        grants: Vec<pb::TableGrant>,
    },
    /// A schema CREATE SCHEMA made, or DROP SCHEMA dropped.
    Schema {
        created: Option<pb::Schema>,
        dropped: Option<pb::Schema>,
    },
    /// An enum type CREATE TYPE made, or DROP TYPE dropped.
    Type {
        created: Option<pb::EnumType>,
        dropped: Option<pb::EnumType>,
    },
}

/// Undo a block's DDL, newest first.
pub async fn undo(cluster: &Cluster, ddl: Vec<(u32, DdlUndo)>) {
    for (_, step) in ddl.into_iter().rev() {
        let result = match &step {
            DdlUndo::Created(t) => match detach(cluster, &t.schema, &t.name).await {
                Ok(Some((t, _))) => {
                    forget_data(cluster, &t).await;
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            DdlUndo::Dropped(t, sequences) => cluster
                .meta()
                .create_table(pb::CreateTableRequest {
                    table: Some(t.clone()),
                    if_not_exists: false,
                    restore: true,
                    sequences: sequences.clone(),
                    replaces: 0,
                })
                .await
                .map(|_| ())
                .map_err(Error::from_status),
            DdlUndo::Schema { created, dropped } => crate::schemas::undo(cluster, created, dropped)
                .await
                .map_err(Error::from_status),
            DdlUndo::Type { created, dropped } => crate::enums::undo(cluster, created, dropped)
                .await
                .map_err(Error::from_status),
            DdlUndo::Role { before, after } => crate::roles::undo(cluster, before, after)
                .await
                .map_err(Error::from_status),
            DdlUndo::Grants {
                schema,
                name,
                grants,
            } => cluster
                .meta()
                .set_table_grants(pb::SetTableGrantsRequest {
                    schema: schema.clone(),
                    name: name.clone(),
                    grants: grants.clone(),
                })
                .await
                .map(|_| ())
                .map_err(Error::from_status),
        };
        if let Err(e) = result {
            tracing::error!(?step, "could not undo DDL of a rolled back block: {e}");
        }
    }
    let _ = cluster.refresh_catalog().await;
}

/// The block committed: the data of the tables it dropped goes.
pub async fn committed(cluster: &Cluster, ddl: Vec<(u32, DdlUndo)>) {
    for (_, step) in ddl {
        if let DdlUndo::Dropped(t, _) = step {
            forget_data(cluster, &t).await;
        }
    }
}

pub async fn drop_tables(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let mut targets = Vec::with_capacity(names.len());
    for n in names {
        let (schema, name) = session.relation(n)?;
        if cluster.table(&schema, &name).is_none() {
            if if_exists {
                session.notice(
                    "NOTICE",
                    "00000",
                    format!("table \"{name}\" does not exist, skipping"),
                );
                continue;
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{name}\" does not exist"),
            ));
        }
        if let Some(t) = cluster.table(&schema, &name) {
            crate::privileges::require_owner(&session.actor(), &t)?;
            // A partitioned table's partitions go with it.
            for d in crate::partitions::descendants(cluster, &t) {
                targets.push((d.schema.clone(), d.name.clone()));
            }
        }
        targets.push((schema, name));
    }
    targets.dedup();
    // Tables that reference others go first, so that dropping a parent
    // with its children in one statement works.
    let references = |(s, n): &(String, String), (ps, pn): &(String, String)| {
        cluster.table(s, n).is_some_and(|t| {
            t.foreign_keys
                .iter()
                .any(|f| f.references(ps, pn) && (s, n) != (ps, pn))
        })
    };
    for (schema, name) in children_first(targets, references) {
        let Some((table, sequences)) = detach(cluster, &schema, &name).await? else {
            continue;
        };
        if session.in_transaction() {
            session.note_ddl(DdlUndo::Dropped(table, sequences));
        } else {
            forget_data(cluster, &table).await;
        }
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("DROP TABLE".into()))
}

/// Drop every view and table of `schema`, children first: a session's
/// temporary ones, when it ends (no client waits; failures are logged).
pub(crate) async fn drop_schema_tables(cluster: &Cluster, schema: &str) {
    let _ = cluster.refresh_catalog().await;
    for v in cluster.views().into_iter().filter(|v| v.schema == schema) {
        let dropped = cluster
            .meta()
            .drop_view(pb::DropViewRequest {
                schema: v.schema,
                name: v.name.clone(),
                if_exists: true,
            })
            .await;
        if let Err(e) = dropped {
            tracing::warn!(
                schema,
                view = v.name,
                "could not drop a temporary view: {e}"
            );
        }
    }
    let tables: Vec<Arc<TableDef>> = cluster
        .tables()
        .into_iter()
        .filter(|t| t.schema == schema)
        .collect();
    let references = |a: &Arc<TableDef>, b: &Arc<TableDef>| {
        a.name != b.name
            && a.foreign_keys
                .iter()
                .any(|f| f.references(&b.schema, &b.name))
    };
    for t in children_first(tables, references) {
        match detach(cluster, schema, &t.name).await {
            Ok(Some((table, _))) => forget_data(cluster, &table).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(
                schema,
                table = t.name,
                "could not drop a temporary table: {e}"
            ),
        }
    }
    let _ = cluster.refresh_catalog().await;
}

/// `items` ordered so that each comes before those it references
/// (`references(a, b)`: a references b) — children before parents, for
/// DROP and TRUNCATE of several tables. A cycle is broken anywhere.
pub(crate) fn children_first<T>(mut items: Vec<T>, references: impl Fn(&T, &T) -> bool) -> Vec<T> {
    let mut ordered = Vec::with_capacity(items.len());
    while !items.is_empty() {
        let next = (0..items.len())
            .find(|&i| {
                !items
                    .iter()
                    .enumerate()
                    .any(|(j, other)| j != i && references(other, &items[i]))
            })
            .unwrap_or(0);
        ordered.push(items.remove(next));
    }
    ordered
}

/// Take a table out of the catalog (nothing can read it after), keeping
/// its data: the dropped table, if there was one, and the sequences it
/// owned (dropped with it).
pub(crate) async fn detach(
    cluster: &Cluster,
    schema: &str,
    name: &str,
) -> Result<Option<(pb::Table, Vec<pb::Sequence>)>> {
    let r = cluster
        .meta()
        .drop_table(pb::DropTableRequest {
            schema: schema.to_string(),
            name: name.to_string(),
            if_exists: true,
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    Ok(r.table.map(|t| (t, r.sequences)))
}

/// Every data engine that held a shard of a dropped table (or of one of
/// its indexes) forgets it.
pub(crate) async fn forget_data(cluster: &Cluster, table: &pb::Table) {
    for ix in &table.indexes {
        if let Some(storage) = &ix.storage {
            forget_shards(cluster, storage).await;
        }
    }
    forget_shards(cluster, table).await;
}

async fn forget_shards(cluster: &Cluster, table: &pb::Table) {
    for engine in eon_common::schema::engines_of(table) {
        let id = table.id;
        let r = cluster
            .with_engine(engine, Duration::from_secs(3), true, |mut c| async move {
                c.drop_table(pb::DropTableDataRequest { table_id: id })
                    .await
            })
            .await;
        if let Err(e) = r {
            // Meta no longer knows the table, so nothing can read the
            // data; the engine frees it when it next starts (it drops the
            // data of tables meta no longer has).
            tracing::warn!(table = id, engine, "could not drop table data: {e}");
        }
    }
}

/// A storage parameter's value as text: `distribute_by = 'a, b'` or
/// `colocate_with = orders`.
fn option_text(value: &SqlExpr) -> String {
    match value {
        SqlExpr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        SqlExpr::Identifier(i) => ident(i),
        other => other.to_string(),
    }
}

/// `(a, b)`: column names as an error message lists them.
fn column_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!("({})", names.collect::<Vec<_>>().join(", "))
}

/// How many leading primary key columns `distribute_by` (a list of column
/// names) makes the distribution key; None when it is not given (all of
/// them). It must name leading primary key columns, in key order — so a
/// key's rows stay on one shard, where its uniqueness is checked — of types
/// whose encoding a shard can be found from.
fn distribution(
    columns: &[ColumnDef],
    primary_key: &[usize],
    distribute_by: Option<String>,
) -> Result<Option<usize>> {
    let Some(list) = distribute_by else {
        return Ok(None);
    };
    let names: Vec<String> = list
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .collect();
    let keyed = primary_key.len() != 1 || !columns[primary_key[0]].hidden;
    let leading = keyed
        && names.len() <= primary_key.len()
        && names
            .iter()
            .zip(primary_key)
            .all(|(n, &c)| columns[c].name == *n);
    if !leading || names.iter().any(|n| n.is_empty()) {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "distribute_by must name leading columns of the primary key {}, in its order, not \"{list}\"",
                if keyed {
                    column_list(primary_key.iter().map(|&c| columns[c].name.as_str()))
                } else {
                    "(the table has none)".to_string()
                }
            ),
        ));
    }
    if let Some(&c) = primary_key[..names.len()]
        .iter()
        .find(|&&c| !eon_common::key::distributable(columns[c].ty))
    {
        return Err(Error::user(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "column \"{}\" of type {} cannot be in a distribution key",
                columns[c].name, columns[c].ty
            ),
        ));
    }
    Ok(Some(names.len()))
}
