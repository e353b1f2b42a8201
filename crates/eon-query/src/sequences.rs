//! Sequences: `CREATE SEQUENCE`, `DROP SEQUENCE`, `SERIAL` and
//! `GENERATED … AS IDENTITY` columns, and `nextval`, `currval`, `lastval`,
//! `setval`.
//!
//! A sequence hands out integers, each once, whatever the transactions that
//! asked for them do (a rolled back INSERT leaves a gap, as in PostgreSQL).
//! Meta keeps every sequence with the catalog and hands out its values
//! (`Meta.NextVal`, a block of values per call: an INSERT of many rows asks
//! once per batch); it writes a sequence's state only every thousand values,
//! ahead of what it handed out, so a restart skips values rather than repeat
//! one. `currval` and `lastval` are the session's own memory of what its
//! `nextval` calls returned.
//!
//! A `SERIAL` column is an integer column whose default is the `nextval` of
//! a sequence named `<table>_<column>_seq` that the column owns: meta creates
//! it with the table and drops it with the table. An identity column is the
//! same with the sequence options written on the column; `GENERATED ALWAYS`
//! refuses values written by hand (428C9).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{
    DataType as SqlDataType, Expr as SqlExpr, ObjectName, SequenceOptions, Statement,
    UnaryOperator, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use eon_common::error::sqlstate;
use eon_common::{Error, Result, SqlType};
use eon_proto::v1 as pb;

use crate::cluster::Cluster;
use crate::provider::to_df;
use crate::session::{Output, Session};

/// The integer type of a `SERIAL`-family type name, if it is one.
pub fn serial_type(t: &SqlDataType) -> Option<SqlType> {
    let SqlDataType::Custom(name, _) = t else {
        return None;
    };
    match name.to_string().to_ascii_lowercase().as_str() {
        "serial" | "serial4" => Some(SqlType::Int4),
        "bigserial" | "serial8" => Some(SqlType::Int8),
        "smallserial" | "serial2" => Some(SqlType::Int2),
        _ => None,
    }
}

/// The range of a sequence of integer type `ty`.
fn bounds(ty: &SqlType) -> Result<(i64, i64, &'static str)> {
    Ok(match ty {
        SqlType::Int2 => (i16::MIN as i64, i16::MAX as i64, "smallint"),
        SqlType::Int4 => (i32::MIN as i64, i32::MAX as i64, "integer"),
        SqlType::Int8 => (i64::MIN, i64::MAX, "bigint"),
        other => {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "sequence type must be smallint, integer, or bigint, not {}",
                    other.sql_name()
                ),
            ));
        }
    })
}

fn integer(e: &SqlExpr, what: &str) -> Result<i64> {
    let bad = || {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{what} must be an integer"),
        )
    };
    match e {
        SqlExpr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n.parse().map_err(|_| bad()),
            _ => Err(bad()),
        },
        SqlExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => integer(expr, what)?.checked_neg().ok_or_else(bad),
        SqlExpr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => integer(expr, what),
        _ => Err(bad()),
    }
}

/// A sequence definition from CREATE SEQUENCE's (or an identity column's)
/// options, with PostgreSQL's defaults and checks.
pub fn define(
    schema: &str,
    name: &str,
    ty: &SqlType,
    options: &[SequenceOptions],
) -> Result<pb::Sequence> {
    let (type_min, type_max, type_name) = bounds(ty)?;
    let (mut increment, mut min, mut max, mut start, mut cache, mut cycle) =
        (1i64, None, None, None, 1i64, false);
    for o in options {
        match o {
            SequenceOptions::IncrementBy(e, _) => increment = integer(e, "INCREMENT")?,
            SequenceOptions::MinValue(e) => {
                min = e.as_ref().map(|e| integer(e, "MINVALUE")).transpose()?
            }
            SequenceOptions::MaxValue(e) => {
                max = e.as_ref().map(|e| integer(e, "MAXVALUE")).transpose()?
            }
            SequenceOptions::StartWith(e, _) => start = Some(integer(e, "START")?),
            SequenceOptions::Cache(e) => cache = integer(e, "CACHE")?,
            SequenceOptions::Cycle(no) => cycle = !no,
        }
    }
    let invalid = |m: String| Error::user(sqlstate::INVALID_PARAMETER_VALUE, m);
    if increment == 0 {
        return Err(invalid("INCREMENT must not be zero".into()));
    }
    let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
    let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
    for (label, v) in [("MINVALUE", min), ("MAXVALUE", max)] {
        if v < type_min || v > type_max {
            return Err(invalid(format!(
                "{label} ({v}) is out of range for sequence data type {type_name}"
            )));
        }
    }
    if min >= max {
        return Err(invalid(format!(
            "MINVALUE ({min}) must be less than MAXVALUE ({max})"
        )));
    }
    let start = start.unwrap_or(if increment > 0 { min } else { max });
    if start < min {
        return Err(invalid(format!(
            "START value ({start}) cannot be less than MINVALUE ({min})"
        )));
    }
    if start > max {
        return Err(invalid(format!(
            "START value ({start}) cannot be greater than MAXVALUE ({max})"
        )));
    }
    if cache < 1 {
        return Err(invalid(format!(
            "CACHE ({cache}) must be greater than zero"
        )));
    }
    Ok(pb::Sequence {
        schema: schema.to_string(),
        name: name.to_string(),
        data_type: type_name.to_string(),
        start,
        increment,
        min_value: min,
        max_value: max,
        cycle,
        cache,
        last_value: start,
        ..Default::default()
    })
}

/// The sequence a SERIAL or identity column owns, and the column's default.
pub fn owned(
    schema: &str,
    table: &str,
    column: &str,
    ty: &SqlType,
    options: &[SequenceOptions],
) -> Result<(pb::Sequence, String)> {
    let mut q = define(schema, &format!("{table}_{column}_seq"), ty, options)?;
    q.owner_table = table.to_string();
    q.owner_column = column.to_string();
    let default = nextval_sql(schema, &q.name);
    Ok((q, default))
}

/// `nextval('[<schema>.]<name>')` (the schema named unless `public`),
/// quoting the names as a regclass text needs.
pub fn nextval_sql(schema: &str, name: &str) -> String {
    let quote = |name: &str| {
        let plain = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            name.to_string()
        } else {
            format!("\"{}\"", name.replace('"', "\"\""))
        }
    };
    let text = match schema {
        "public" | "" => quote(name),
        _ => format!("{}.{}", quote(schema), quote(name)),
    };
    format!("nextval('{}')", text.replace('\'', "''"))
}

/// A default as PostgreSQL prints it (psql's `\d`, information_schema):
/// a sequence's name argument is shown as a regclass.
pub fn display_default(sql: &str) -> String {
    match sql
        .strip_prefix("nextval('")
        .and_then(|r| r.strip_suffix("')"))
    {
        Some(name) if !name.contains('\'') => format!("nextval('{name}'::regclass)"),
        _ => sql.to_string(),
    }
}

/// Does a default expression draw from a sequence (so it must be evaluated
/// per row, and cannot be tried out when the table is created)?
pub fn is_volatile_default(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("nextval(")
}

/// Parse `sql` as the SQL parser does, except that `CREATE SEQUENCE`
/// takes its options in any order, as PostgreSQL does (pg_dump writes
/// `START WITH … INCREMENT BY …`; the parser wants one fixed order), and
/// `CREATE USER` / `ALTER USER` are PostgreSQL's (see [`crate::roles`]).
pub fn parse_statements(sql: &str) -> std::result::Result<Vec<Statement>, ParserError> {
    let tokens = order_by_using(crate::windows::frame_tokens(sql)?);
    let tokens = crate::pgformat::variadic_tokens(tokens);
    let (tokens, search_cycle) = crate::searchcycle::take_clauses(tokens)?;
    let mut parser = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let mut statements = Vec::new();
    let mut expecting_delimiter = false;
    loop {
        while parser.consume_token(&Token::SemiColon) {
            expecting_delimiter = false;
        }
        let next = parser.peek_token();
        if next.token == Token::EOF {
            break;
        }
        if expecting_delimiter {
            return parser.expected("end of statement", next);
        }
        let statement =
            if parser.parse_keywords(&[Keyword::RESET, Keyword::SESSION, Keyword::AUTHORIZATION]) {
                // PostgreSQL's spelling of SET SESSION AUTHORIZATION DEFAULT.
                use datafusion::sql::sqlparser::ast::{
                    Set, SetSessionAuthorizationParam, SetSessionAuthorizationParamKind,
                };
                Statement::Set(Set::SetSessionAuthorization(SetSessionAuthorizationParam {
                    scope: datafusion::sql::sqlparser::ast::ContextModifier::Session,
                    kind: SetSessionAuthorizationParamKind::Default,
                }))
            } else if parser.parse_keywords(&[Keyword::CREATE, Keyword::SEQUENCE]) {
                create_sequence_statement(&mut parser)?
            } else if crate::partitions::at_attach(&parser) {
                crate::partitions::parse_attach(&mut parser)?
            } else if let Some(is_move) = crate::cursors::at_fetch(&parser) {
                crate::cursors::parse_fetch(&mut parser, is_move)?
            } else if let Some(create) = crate::roles::at_user_statement(&mut parser) {
                if create {
                    crate::roles::parse_create_user(&mut parser)?
                } else {
                    crate::roles::parse_alter_user(&mut parser)?
                }
            } else {
                parser.parse_statement()?
            };
        statements.push(statement);
        expecting_delimiter = true;
    }
    crate::searchcycle::apply(&mut statements, &search_cycle)?;
    Ok(statements)
}

/// `ORDER BY x USING <` (or `>`): PostgreSQL's way of naming the sort
/// operator, which for the built-in orderings is `ASC` (or `DESC`).
fn order_by_using(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let solid = crate::windows::solid(&tokens);
    let mut drop = vec![false; tokens.len()];
    for w in solid.windows(2) {
        let direction = match tokens[w[1]].token {
            Token::Lt => Keyword::ASC,
            Token::Gt => Keyword::DESC,
            _ => continue,
        };
        if matches!(&tokens[w[0]].token, Token::Word(k) if k.keyword == Keyword::USING) {
            let name = if direction == Keyword::ASC {
                "ASC"
            } else {
                "DESC"
            };
            tokens[w[0]].token = Token::make_keyword(name);
            drop[w[1]] = true;
        }
    }
    crate::windows::without(tokens, &drop)
}

/// The rest of `CREATE SEQUENCE`, options in any order.
fn create_sequence_statement(p: &mut Parser) -> std::result::Result<Statement, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let data_type = if p.parse_keyword(Keyword::AS) {
        Some(p.parse_data_type()?)
    } else {
        None
    };
    let mut options = Vec::new();
    let mut owned_by = None;
    loop {
        let option = if p.parse_keyword(Keyword::INCREMENT) {
            let by = p.parse_keyword(Keyword::BY);
            SequenceOptions::IncrementBy(p.parse_number()?, by)
        } else if p.parse_keyword(Keyword::MINVALUE) {
            SequenceOptions::MinValue(Some(p.parse_number()?))
        } else if p.parse_keywords(&[Keyword::NO, Keyword::MINVALUE]) {
            SequenceOptions::MinValue(None)
        } else if p.parse_keyword(Keyword::MAXVALUE) {
            SequenceOptions::MaxValue(Some(p.parse_number()?))
        } else if p.parse_keywords(&[Keyword::NO, Keyword::MAXVALUE]) {
            SequenceOptions::MaxValue(None)
        } else if p.parse_keyword(Keyword::START) {
            let with = p.parse_keyword(Keyword::WITH);
            SequenceOptions::StartWith(p.parse_number()?, with)
        } else if p.parse_keyword(Keyword::CACHE) {
            SequenceOptions::Cache(p.parse_number()?)
        } else if p.parse_keywords(&[Keyword::NO, Keyword::CYCLE]) {
            SequenceOptions::Cycle(true)
        } else if p.parse_keyword(Keyword::CYCLE) {
            SequenceOptions::Cycle(false)
        } else if p.parse_keywords(&[Keyword::OWNED, Keyword::BY]) {
            owned_by = Some(p.parse_object_name(false)?);
            continue;
        } else {
            break;
        };
        options.push(option);
    }
    Ok(Statement::CreateSequence {
        temporary: false,
        if_not_exists,
        name,
        data_type,
        sequence_options: options,
        owned_by,
    })
}

pub async fn create_sequence(
    session: &Session,
    if_not_exists: bool,
    name: &ObjectName,
    data_type: Option<&SqlDataType>,
    options: &[SequenceOptions],
    owned_by: Option<&ObjectName>,
) -> Result<Output> {
    if owned_by.is_some() {
        return Err(Error::unsupported(
            "CREATE SEQUENCE … OWNED BY is not supported yet",
        ));
    }
    let (schema, name) = session.new_relation(name, false)?;
    let ty = match data_type {
        Some(t) => crate::ddl::sql_type(t)?,
        None => SqlType::Int8,
    };
    let q = define(&schema, &name, &ty, options)?;
    session
        .cluster()
        .meta()
        .create_sequence(pb::CreateSequenceRequest {
            sequence: Some(q),
            if_not_exists,
        })
        .await
        .map_err(Error::from_status)?;
    session.cluster().refresh_catalog().await?;
    Ok(Output::Command("CREATE SEQUENCE".into()))
}

pub async fn drop_sequences(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    for n in names {
        let (schema, name) = session.relation(n)?;
        if let Some(q) = cluster
            .find_sequence(|q| q.schema == schema && q.name == name && !q.owner_table.is_empty())
        {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop sequence {name} because other objects depend on it: default value for column {} of table {} depends on sequence {name}",
                    q.owner_column, q.owner_table
                ),
            ));
        }
        cluster
            .meta()
            .drop_sequence(pb::DropSequenceRequest {
                schema,
                name,
                if_exists,
            })
            .await
            .map_err(Error::from_status)?;
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("DROP SEQUENCE".into()))
}

/// A sequence name as `nextval`'s text argument spells it: `name` or
/// `schema.name`, unquoted parts folded to lower case.
pub fn parse_name(text: &str) -> (String, String) {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c if quoted => cur.push(c),
            c => cur.push(c.to_ascii_lowercase()),
        }
    }
    parts.push(cur);
    match parts.len() {
        1 => ("public".into(), parts.remove(0)),
        _ => {
            let name = parts.pop().unwrap_or_default();
            (parts.pop().unwrap_or_default(), name)
        }
    }
}

/// What a session's `nextval` calls returned: `currval` and `lastval`.
#[derive(Debug, Default)]
pub struct SeqSession {
    last: HashMap<(String, String), i64>,
    lastval: Option<i64>,
}

/// Run a meta call from inside a (synchronous) function evaluation: the
/// query engine's runtime is multi-threaded, so this worker may block while
/// another drives the call.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// nextval, currval, lastval, setval and pg_get_serial_sequence: one
/// implementation, told apart by name (they share the cluster and the
/// session's memory).
#[derive(Debug)]
struct SeqFn {
    name: &'static str,
    signature: Signature,
    cluster: Arc<Cluster>,
    session: Arc<Mutex<SeqSession>>,
}

impl PartialEq for SeqFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for SeqFn {}
impl Hash for SeqFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl SeqFn {
    fn names(arg: &ColumnarValue, rows: usize) -> datafusion::common::Result<Vec<Option<String>>> {
        Ok(match arg {
            ColumnarValue::Scalar(s) => {
                let s = s.cast_to(&DataType::Utf8)?;
                let ScalarValue::Utf8(v) = s else {
                    unreachable!()
                };
                vec![v; rows]
            }
            ColumnarValue::Array(a) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                a.as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect()
            }
        })
    }

    /// The sequence a `nextval` argument names: its text, or the oid a
    /// `'name'::regclass` cast turned it into.
    fn resolve(&self, text: &str) -> (String, String) {
        if let Ok(oid) = text.parse::<i64>() {
            let id = oid - crate::pgcatalog::SEQUENCE_OID as i64;
            if let Some(q) = self.cluster.find_sequence(|q| q.id as i64 == id) {
                return (q.schema, q.name);
            }
        }
        parse_name(text)
    }

    fn known(&self, schema: &str, name: &str) -> datafusion::common::Result<()> {
        if self
            .cluster
            .find_sequence(|q| q.schema == schema && q.name == name)
            .is_some()
        {
            return Ok(());
        }
        Err(to_df(Error::user(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        )))
    }

    fn nextval(&self, names: Vec<Option<String>>) -> datafusion::common::Result<Int64Array> {
        // Runs of the same name (all of them, for a literal) are one call.
        let mut out: Vec<Option<i64>> = Vec::with_capacity(names.len());
        let mut i = 0;
        while i < names.len() {
            let Some(text) = &names[i] else {
                out.push(None);
                i += 1;
                continue;
            };
            let run = names[i..]
                .iter()
                .take_while(|n| n.as_ref() == Some(text))
                .count();
            let (schema, name) = self.resolve(text);
            let values = block_on(self.cluster.meta().next_val(pb::NextValRequest {
                schema: schema.clone(),
                name: name.clone(),
                count: run as u32,
            }))
            .map_err(|e| to_df(Error::from_status(e)))?
            .into_inner()
            .values;
            if let Some(&v) = values.last() {
                let mut s = self.session.lock().unwrap();
                s.last.insert((schema, name), v);
                s.lastval = Some(v);
            }
            out.extend(values.into_iter().map(Some));
            i += run;
        }
        Ok(Int64Array::from(out))
    }
}

impl ScalarUDFImpl for SeqFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(if self.name == "pg_get_serial_sequence" {
            DataType::Utf8
        } else {
            DataType::Int64
        })
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows;
        if self.name == "pg_get_serial_sequence" {
            // (table, column): the sequence the column owns, as
            // `schema.name`; the column name is taken as written.
            let tables = Self::names(&args.args[0], rows)?;
            let columns = Self::names(&args.args[1], rows)?;
            let out: datafusion::arrow::array::StringArray = tables
                .into_iter()
                .zip(columns)
                .map(|(t, c)| {
                    let (schema, table) = parse_name(&t?);
                    let c = c?;
                    self.cluster
                        .find_sequence(|q| {
                            q.schema == schema && q.owner_table == table && q.owner_column == c
                        })
                        .map(|q| format!("{}.{}", q.schema, q.name))
                })
                .collect();
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        let out = match self.name {
            "nextval" => self.nextval(Self::names(&args.args[0], rows)?)?,
            "currval" => {
                let names = Self::names(&args.args[0], rows)?;
                let s = self.session.lock().unwrap();
                let mut out = Vec::with_capacity(rows);
                for n in names {
                    let Some(n) = n else {
                        out.push(None);
                        continue;
                    };
                    let (schema, name) = self.resolve(&n);
                    self.known(&schema, &name)?;
                    match s.last.get(&(schema, name.clone())) {
                        Some(v) => out.push(Some(*v)),
                        None => {
                            return Err(to_df(Error::user(
                                "55000",
                                format!(
                                    "currval of sequence \"{name}\" is not yet defined in this session"
                                ),
                            )));
                        }
                    }
                }
                Int64Array::from(out)
            }
            "lastval" => match self.session.lock().unwrap().lastval {
                Some(v) => Int64Array::from(vec![v; rows]),
                None => {
                    return Err(to_df(Error::user(
                        "55000",
                        "lastval is not yet defined in this session",
                    )));
                }
            },
            _ => {
                // setval(name, value [, is_called])
                let names = Self::names(&args.args[0], rows)?;
                let values = args.args[1].to_array(rows)?;
                let values = datafusion::arrow::compute::cast(&values, &DataType::Int64)?;
                let called = match args.args.get(2) {
                    Some(c) => {
                        let c = c.to_array(rows)?;
                        datafusion::arrow::compute::cast(&c, &DataType::Boolean)?
                    }
                    None => Arc::new(datafusion::arrow::array::BooleanArray::from(vec![
                        true;
                        rows
                    ])),
                };
                let mut out = Vec::with_capacity(rows);
                for (i, n) in names.into_iter().enumerate() {
                    let (Some(n), false) = (n, values.is_null(i)) else {
                        out.push(None);
                        continue;
                    };
                    let value = values
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(i);
                    let is_called = called.as_boolean().value(i);
                    let (schema, name) = self.resolve(&n);
                    block_on(self.cluster.meta().set_val(pb::SetValRequest {
                        schema: schema.clone(),
                        name: name.clone(),
                        value,
                        is_called,
                    }))
                    .map_err(|e| to_df(Error::from_status(e)))?;
                    if is_called {
                        self.session
                            .lock()
                            .unwrap()
                            .last
                            .insert((schema, name), value);
                    }
                    out.push(Some(value));
                }
                Int64Array::from(out)
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The sequence functions of a session, to register for a statement.
pub fn functions(cluster: &Arc<Cluster>, session: &Arc<Mutex<SeqSession>>) -> Vec<ScalarUDF> {
    let text = || vec![DataType::Utf8];
    let make = |name: &'static str, signature: Signature| {
        ScalarUDF::new_from_impl(SeqFn {
            name,
            signature,
            cluster: cluster.clone(),
            session: session.clone(),
        })
    };
    vec![
        make("nextval", Signature::exact(text(), Volatility::Volatile)),
        make("currval", Signature::exact(text(), Volatility::Volatile)),
        make("lastval", Signature::exact(vec![], Volatility::Volatile)),
        make(
            "pg_get_serial_sequence",
            Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Stable),
        ),
        make(
            "setval",
            Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64, DataType::Boolean]),
                ],
                Volatility::Volatile,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_like_regclass_text() {
        assert_eq!(
            parse_name("Items_ID_seq"),
            ("public".into(), "items_id_seq".into())
        );
        assert_eq!(
            parse_name("app.\"Odd\"\"Name\""),
            ("app".into(), "Odd\"Name".into())
        );
        assert_eq!(nextval_sql("public", "t_id_seq"), "nextval('t_id_seq')");
        assert_eq!(nextval_sql("public", "T's"), "nextval('\"T''s\"')");
        assert_eq!(nextval_sql("app", "t_id_seq"), "nextval('app.t_id_seq')");
    }

    #[test]
    fn create_sequence_options_come_in_any_order() {
        let s = parse_statements(
            "CREATE SEQUENCE public.s AS integer START WITH 5 INCREMENT BY -1 NO MINVALUE MAXVALUE 9 CACHE 1; SELECT 1",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        let Statement::CreateSequence {
            sequence_options,
            data_type,
            ..
        } = &s[0]
        else {
            panic!("{:?}", s[0]);
        };
        assert!(data_type.is_some());
        assert_eq!(sequence_options.len(), 5);
        assert!(parse_statements("CREATE SEQUENCE s START 1 bogus").is_err());
    }

    #[test]
    fn definitions_follow_postgresql_defaults_and_checks() {
        let q = define("public", "s", &SqlType::Int4, &[]).unwrap();
        assert_eq!(
            (q.start, q.increment, q.min_value, q.max_value),
            (1, 1, 1, i32::MAX as i64)
        );
        let down = define(
            "public",
            "s",
            &SqlType::Int8,
            &[SequenceOptions::IncrementBy(
                SqlExpr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr: Box::new(SqlExpr::value(SqlValue::Number("2".into(), false))),
                },
                true,
            )],
        )
        .unwrap();
        assert_eq!(
            (down.start, down.min_value, down.max_value),
            (-1, i64::MIN, -1)
        );
        let e = define(
            "public",
            "s",
            &SqlType::Int2,
            &[SequenceOptions::StartWith(
                SqlExpr::value(SqlValue::Number("0".into(), false)),
                true,
            )],
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "START value (0) cannot be less than MINVALUE (1)"
        );
        assert!(define("public", "s", &SqlType::Text, &[]).is_err());
    }
}
