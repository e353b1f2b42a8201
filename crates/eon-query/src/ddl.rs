//! CREATE TABLE and DROP TABLE.
//!
//! The query engine validates the definition (types, keys, defaults), meta
//! stores it and places the shards, and — for DROP — every data engine that
//! held a shard forgets the data.

use std::collections::BTreeSet;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    CharacterLength, ColumnOption, CreateTable, CreateTableOptions, DataType as SqlDataType,
    ExactNumberInfo, Expr as SqlExpr, ObjectName, SqlOption, TableConstraint, TimezoneInfo,
    Value as SqlValue,
};
use eon_common::error::sqlstate;
use eon_common::schema::{ColumnDef, ROWID_COLUMN};
use eon_common::{Error, Result, SqlType, TableDef};
use eon_proto::v1 as pb;

use crate::dml::{ident, table_name};
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
        D::Boolean | D::Bool => SqlType::Bool,
        D::Date => SqlType::Date,
        D::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => SqlType::TimestampTz,
        D::Timestamp(_, _) => SqlType::Timestamp,
        D::Bytea => SqlType::Bytea,
        D::Uuid => SqlType::Uuid,
        D::JSONB | D::JSON => SqlType::Jsonb,
        D::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
            "timestamptz" => SqlType::TimestampTz,
            "serial" | "bigserial" | "smallserial" => {
                return Err(Error::unsupported(
                    "serial columns are not supported yet; use an integer key with explicit values",
                ));
            }
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

fn check_numeric(p: u64, s: i64) -> Result<SqlType> {
    if !(1..=38).contains(&p) {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("NUMERIC precision {p} must be between 1 and 38"),
        ));
    }
    if s < 0 || s as u64 > p {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("NUMERIC scale {s} must be between 0 and precision {p}"),
        ));
    }
    Ok(SqlType::Numeric {
        precision: p as u8,
        scale: s as i8,
    })
}

pub async fn create_table(session: &Session, ct: &CreateTable) -> Result<Output> {
    if ct.query.is_some() || ct.like.is_some() || ct.clone.is_some() {
        return Err(Error::unsupported(
            "CREATE TABLE AS / LIKE is not supported yet",
        ));
    }
    if ct.or_replace {
        return Err(Error::unsupported("CREATE OR REPLACE TABLE"));
    }
    let (schema, name) = table_name(&ct.name)?;
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(ct.columns.len() + 1);
    let mut primary_key: Option<Vec<usize>> = None;
    let pk_twice = || {
        Error::user(
            sqlstate::INVALID_TABLE_DEFINITION,
            format!("multiple primary keys for table \"{name}\" are not allowed"),
        )
    };
    for c in &ct.columns {
        let cname = ident(&c.name);
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
        let ty = sql_type(&c.data_type)?;
        let mut col = ColumnDef {
            name: cname.clone(),
            ty,
            nullable: true,
            default_sql: None,
            hidden: false,
        };
        for opt in &c.options {
            match &opt.option {
                ColumnOption::Null => col.nullable = true,
                ColumnOption::NotNull => col.nullable = false,
                ColumnOption::Default(e) => col.default_sql = Some(e.to_string()),
                ColumnOption::PrimaryKey(_) => {
                    if primary_key.is_some() {
                        return Err(pk_twice());
                    }
                    primary_key = Some(vec![columns.len()]);
                }
                ColumnOption::Unique(_) => {
                    return Err(Error::unsupported(
                        "UNIQUE constraints are not supported yet",
                    ));
                }
                ColumnOption::ForeignKey(_) => {
                    return Err(Error::unsupported("foreign keys are not supported yet"));
                }
                ColumnOption::Check(_) => {
                    return Err(Error::unsupported(
                        "CHECK constraints are not supported yet",
                    ));
                }
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
                let mut key = Vec::with_capacity(pk.columns.len());
                for ic in &pk.columns {
                    let SqlExpr::Identifier(id) = &ic.column.expr else {
                        return Err(Error::unsupported("expressions in a primary key"));
                    };
                    let cname = ident(id);
                    let idx = columns
                        .iter()
                        .position(|c| c.name == cname)
                        .ok_or_else(|| {
                            Error::user(
                                sqlstate::UNDEFINED_COLUMN,
                                format!("column \"{cname}\" named in key does not exist"),
                            )
                        })?;
                    if key.contains(&idx) {
                        return Err(Error::user(
                            sqlstate::DUPLICATE_COLUMN,
                            format!("column \"{cname}\" appears twice in primary key constraint"),
                        ));
                    }
                    key.push(idx);
                }
                primary_key = Some(key);
            }
            TableConstraint::Unique(_) => {
                return Err(Error::unsupported(
                    "UNIQUE constraints are not supported yet",
                ));
            }
            TableConstraint::ForeignKey(_) => {
                return Err(Error::unsupported("foreign keys are not supported yet"));
            }
            TableConstraint::Check(_) => {
                return Err(Error::unsupported(
                    "CHECK constraints are not supported yet",
                ));
            }
            other => {
                return Err(Error::unsupported(format!(
                    "table constraint {other} is not supported"
                )));
            }
        }
    }
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
            }
            other => {
                return Err(Error::user(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("unrecognized parameter \"{other}\""),
                ));
            }
        }
    }
    // Defaults must be constants of the column's type: evaluate them now.
    let ts = session.cluster().timestamp().await?;
    let state = session.statement_state(std::sync::Arc::new(crate::provider::StatementContext {
        read_ts: ts,
        ..Default::default()
    }));
    for col in &columns {
        if let Some(d) = &col.default_sql {
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
    let table = TableDef::new_proto(&schema, &name, columns, primary_key, shard_count);
    let r = session
        .cluster()
        .meta()
        .create_table(pb::CreateTableRequest {
            table: Some(table),
            if_not_exists: ct.if_not_exists,
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    session.cluster().refresh_catalog().await?;
    let _ = r.created;
    Ok(Output::Command("CREATE TABLE".into()))
}

pub async fn drop_tables(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    session.cluster().timestamp().await?;
    let mut targets = Vec::with_capacity(names.len());
    for n in names {
        let (schema, name) = table_name(n)?;
        if session.cluster().table(&schema, &name).is_none() {
            if if_exists {
                continue;
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{name}\" does not exist"),
            ));
        }
        targets.push((schema, name));
    }
    for (schema, name) in targets {
        let r = session
            .cluster()
            .meta()
            .drop_table(pb::DropTableRequest {
                schema,
                name,
                if_exists: true,
            })
            .await
            .map_err(Error::from_status)?
            .into_inner();
        let Some(table) = r.table else { continue };
        let engines: BTreeSet<u64> = table.placement.iter().copied().collect();
        for engine in engines {
            let id = table.id;
            let r = session
                .cluster()
                .with_engine(engine, Duration::from_secs(3), true, |mut c| async move {
                    c.drop_table(pb::DropTableDataRequest { table_id: id })
                        .await
                })
                .await;
            if let Err(e) = r {
                // Meta no longer knows the table, so nothing can read the
                // data; the engine frees it when it next starts (it drops
                // the data of tables meta no longer has).
                tracing::warn!(table = id, engine, "could not drop table data: {e}");
            }
        }
    }
    session.cluster().refresh_catalog().await?;
    Ok(Output::Command("DROP TABLE".into()))
}
