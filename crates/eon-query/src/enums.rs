//! Enum types: `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`.
//!
//! An enum's values are its labels, and they order as the type lists them
//! (`'sad' < 'happy'`), not alphabetically. Meta keeps the types (see
//! eon-meta's `types`); a column of an enum type carries the whole type in
//! its Arrow field's metadata ([`SqlType::Enum`]), so everything below the
//! SQL layer stores and moves a label as text:
//!
//! - writes check each value is a label (`22P02 invalid input value for
//!   enum mood: "x"`, in `coerce`), and `'x'::mood` becomes
//!   `eon_cast_enum('x', '<type>')`, which checks the same and gives its
//!   result the enum's type;
//! - the wire sends the label with the type's oid (text and binary are
//!   both the label, as PostgreSQL's enum_send);
//! - ORDER BY and the comparisons `<`, `<=`, `>`, `>=` on an enum value
//!   compare positions: the analyzer rule [`EnumOrder`] rewrites them to
//!   `eon_enum_position(x, '<type>')` wherever an operand has an enum
//!   type;
//! - pg_type and pg_enum list the types and their labels (`pgcatalog`).
//!
//! `ALTER TYPE … ADD VALUE [BEFORE|AFTER]`, `RENAME VALUE` and `RENAME TO`
//! change the type in place: meta writes the new definition into every
//! column. As values are stored as text, `RENAME VALUE` is refused (0A000)
//! while a column uses the type. `min`/`max` of enum values compare text.
//! Arrays of enums and composite or range types are not supported.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int32Builder};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AlterType, AlterTypeAddValuePosition, AlterTypeOperation, DataType as SqlDataType,
    Expr as SqlExpr, ObjectName, Statement, UserDefinedTypeRepresentation, Value as SqlValue,
};
use eon_common::error::sqlstate;
use eon_common::types::EnumDef;
use eon_common::{Error, Result, SqlType};
use eon_proto::v1 as pb;

use crate::ddl::DdlUndo;
use crate::dml::{ident, name_parts};
use crate::pgfuncs::{call_with, shaped_like};
use crate::session::{Output, Session};

/// The enum type a (possibly qualified) name means for this session: the
/// first schema of the search path that has one of that name.
pub fn lookup(session: &Session, name: &ObjectName) -> Result<Option<EnumDef>> {
    let (schema, type_name) = name_parts(name)?;
    let cluster = session.cluster();
    let found = match schema {
        Some(s) => cluster.enum_type(&s, &type_name),
        None => session
            .search_path()
            .iter()
            .find_map(|s| cluster.enum_type(s, &type_name)),
    };
    Ok(found.as_ref().map(EnumDef::from_proto))
}

/// A column's type: an enum type by name, or one of the built-in types.
pub fn column_type(session: &Session, t: &SqlDataType) -> Result<SqlType> {
    if let SqlDataType::Custom(name, modifiers) = t
        && modifiers.is_empty()
        && let Some(def) = lookup(session, name)?
    {
        return Ok(SqlType::enum_of(def));
    }
    crate::ddl::sql_type(t)
}

/// CREATE TYPE name AS ENUM (labels).
pub async fn create_type(
    session: &Session,
    name: &ObjectName,
    representation: &Option<UserDefinedTypeRepresentation>,
) -> Result<Output> {
    let labels = match representation {
        Some(UserDefinedTypeRepresentation::Enum { labels }) => {
            labels.iter().map(|l| l.value.clone()).collect()
        }
        _ => {
            return Err(Error::unsupported(
                "only enum types can be created (CREATE TYPE … AS ENUM)",
            ));
        }
    };
    let (schema, type_name) = session.new_relation(name, false)?;
    let cluster = session.cluster();
    cluster.timestamp().await?;
    if cluster.table(&schema, &type_name).is_some() || cluster.view(&schema, &type_name).is_some() {
        return Err(Error::user(
            sqlstate::DUPLICATE_OBJECT,
            format!("type \"{type_name}\" already exists"),
        ));
    }
    let r = cluster
        .meta()
        .create_type(pb::CreateTypeRequest {
            r#type: Some(pb::EnumType {
                id: 0,
                schema,
                name: type_name,
                labels,
                owner: session.user(),
            }),
            if_not_exists: false,
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    if session.in_transaction() {
        session.note_ddl(DdlUndo::Type {
            created: r.r#type,
            dropped: None,
        });
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("CREATE TYPE".into()))
}

/// The type a statement changes or drops, which the session's role must
/// own (or be a superuser).
fn owned_type(session: &Session, name: &ObjectName) -> Result<Option<pb::EnumType>> {
    let Some(def) = lookup(session, name)? else {
        return Ok(None);
    };
    let ty = session
        .cluster()
        .enum_type(&def.schema, &def.name)
        .ok_or_else(|| Error::internal("an enum type vanished from the catalog"))?;
    if ty.owner != session.user() && !session.actor().superuser {
        return Err(Error::user(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("must be owner of type {}", ty.name),
        ));
    }
    Ok(Some(ty))
}

fn undefined(name: &ObjectName) -> Error {
    let shown = name_parts(name).map(|(_, n)| n).unwrap_or_default();
    Error::user(
        sqlstate::UNDEFINED_OBJECT,
        format!("type \"{shown}\" does not exist"),
    )
}

/// ALTER TYPE name ADD VALUE / RENAME VALUE / RENAME TO. Not undone by
/// ROLLBACK (PostgreSQL's ADD VALUE cannot be used in the block either).
pub async fn alter_type(session: &Session, at: &AlterType) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    let ty = owned_type(session, &at.name)?.ok_or_else(|| undefined(&at.name))?;
    let mut req = pb::AlterTypeRequest {
        schema: ty.schema.clone(),
        name: ty.name.clone(),
        ..Default::default()
    };
    match &at.operation {
        AlterTypeOperation::AddValue(add) => {
            req.add_value = add.value.value.clone();
            req.if_not_exists = add.if_not_exists;
            match &add.position {
                Some(AlterTypeAddValuePosition::Before(n)) => req.before = n.value.clone(),
                Some(AlterTypeAddValuePosition::After(n)) => req.after = n.value.clone(),
                None => {}
            }
        }
        AlterTypeOperation::RenameValue(r) => {
            // Stored values are the labels' text: renaming one would mean
            // rewriting every row that holds it.
            let used = cluster.tables().iter().any(|t| {
                t.columns
                    .iter()
                    .any(|c| c.ty.enum_def().is_some_and(|d| d.oid as u64 == ty.id))
            });
            if used {
                return Err(Error::unsupported(format!(
                    "ALTER TYPE … RENAME VALUE is not supported for a type that columns use ({})",
                    ty.name
                )));
            }
            req.rename_value = r.from.value.clone();
            req.to = r.to.value.clone();
        }
        AlterTypeOperation::Rename(r) => req.new_name = ident(&r.new_name),
    }
    if !req.add_value.is_empty() && req.if_not_exists && ty.labels.contains(&req.add_value) {
        session.notice(
            "NOTICE",
            "42710",
            format!("enum label \"{}\" already exists, skipping", req.add_value),
        );
    }
    cluster
        .meta()
        .alter_type(req)
        .await
        .map_err(Error::from_status)?;
    cluster.refresh_catalog().await?;
    Ok(Output::Command("ALTER TYPE".into()))
}

/// DROP TYPE [IF EXISTS] names. A type a column uses is not dropped
/// (2BP01, with or without CASCADE: eon does not drop columns for it).
pub async fn drop_types(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    for name in names {
        let Some(ty) = owned_type(session, name)? else {
            if if_exists {
                let shown = name_parts(name).map(|(_, n)| n).unwrap_or_default();
                session.notice(
                    "NOTICE",
                    "00000",
                    format!("type \"{shown}\" does not exist, skipping"),
                );
                continue;
            }
            return Err(undefined(name));
        };
        let r = cluster
            .meta()
            .drop_type(pb::DropTypeRequest {
                schema: ty.schema,
                name: ty.name,
                if_exists,
            })
            .await
            .map_err(Error::from_status)?
            .into_inner();
        if session.in_transaction() {
            session.note_ddl(DdlUndo::Type {
                created: None,
                dropped: r.r#type,
            });
        }
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("DROP TYPE".into()))
}

/// Undo a block's CREATE or DROP TYPE (a type dropped comes back with a
/// new oid: no column used it).
pub(crate) async fn undo(
    cluster: &crate::cluster::Cluster,
    created: &Option<pb::EnumType>,
    dropped: &Option<pb::EnumType>,
) -> std::result::Result<(), tonic::Status> {
    if let Some(t) = created {
        cluster
            .meta()
            .drop_type(pb::DropTypeRequest {
                schema: t.schema.clone(),
                name: t.name.clone(),
                if_exists: true,
            })
            .await?;
    }
    if let Some(t) = dropped {
        cluster
            .meta()
            .create_type(pb::CreateTypeRequest {
                r#type: Some(t.clone()),
                if_not_exists: true,
            })
            .await?;
    }
    Ok(())
}

/// `x::mood` and `mood 'x'` (casts to enum types, which DataFusion cannot
/// plan) become `eon_cast_enum(x, '<type>')`.
pub fn rewrite_casts(session: &Session, statements: &mut [Statement]) -> Result<()> {
    if session.cluster().enum_types().is_empty() {
        return Ok(());
    }
    crate::pgfuncs::try_rewrite_expressions(statements, |e| {
        let (value, data_type) = match e {
            SqlExpr::Cast {
                expr, data_type, ..
            } => ((**expr).clone(), &*data_type),
            SqlExpr::TypedString(t) => (SqlExpr::Value(t.value.clone()), &t.data_type),
            _ => return Ok(()),
        };
        let SqlDataType::Custom(name, _) = data_type else {
            return Ok(());
        };
        if let Some(def) = lookup(session, name)? {
            // The type travels as its tag, which SqlType::parse reads.
            let ty = SqlExpr::value(SqlValue::SingleQuotedString(SqlType::enum_of(def).tag()));
            *e = call_with("eon_cast_enum", vec![value, ty]);
        }
        Ok(())
    })
}

/// The enum type a call's second argument names.
fn def_argument(args: &[ColumnarValue]) -> datafusion::common::Result<&'static EnumDef> {
    let text = match args.get(1) {
        Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)))) => s.as_str(),
        _ => "",
    };
    def_of(text)
}

fn def_of(text: &str) -> datafusion::common::Result<&'static EnumDef> {
    SqlType::parse(text)
        .and_then(|t| t.enum_def())
        .ok_or_else(|| DataFusionError::Internal(format!("not an enum type: {text}")))
}

fn scalar_def(args: &ReturnFieldArgs) -> datafusion::common::Result<&'static EnumDef> {
    match args.scalar_arguments.get(1).copied().flatten() {
        Some(ScalarValue::Utf8(Some(s))) => def_of(s),
        _ => Err(DataFusionError::Plan(
            "the enum type must be a literal".into(),
        )),
    }
}

/// `eon_cast_enum(x, '<type>')`: x as a value of the enum type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CastEnum {
    signature: Signature,
}

impl ScalarUDFImpl for CastEnum {
    fn name(&self) -> &str {
        "eon_cast_enum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        let def = scalar_def(&args)?;
        Ok(Arc::new(SqlType::Enum(def).field(&def.name, true)))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let def = def_argument(&args.args)?;
        crate::pgfuncs::cast_as_stored(&args, SqlType::Enum(def))
    }
}

/// `eon_enum_position(x, '<type>')`: the position of label x in the type
/// (22P02 when it is none of them), what enums sort and compare by.
#[derive(Debug, PartialEq, Eq, Hash)]
struct EnumPosition {
    signature: Signature,
}

impl ScalarUDFImpl for EnumPosition {
    fn name(&self) -> &str {
        "eon_enum_position"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let def = def_argument(&args.args)?;
        let input = args.args[0].to_array(args.number_rows.max(1))?;
        let text = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
        let mut out = Int32Builder::with_capacity(text.len());
        for v in text.as_string::<i32>().iter() {
            match v {
                None => out.append_null(),
                Some(s) => match def.position(s) {
                    Some(p) => out.append_value(p as i32),
                    None => return Err(DataFusionError::External(Box::new(def.invalid_input(s)))),
                },
            }
        }
        shaped_like(&args.args[..1], Arc::new(out.finish()) as ArrayRef)
    }
}

pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(CastEnum {
        signature: Signature::any(2, Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(EnumPosition {
        signature: Signature::any(2, Volatility::Immutable),
    }));
    ctx.add_analyzer_rule(Arc::new(EnumOrder));
}

/// Sorting and ordering comparisons of enum values by their position in
/// the type (see the module docs).
#[derive(Debug)]
pub struct EnumOrder;

impl AnalyzerRule for EnumOrder {
    fn name(&self) -> &str {
        "eon_enum_order"
    }

    fn analyze(
        &self,
        plan: LogicalPlan,
        _config: &ConfigOptions,
    ) -> datafusion::common::Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let LogicalPlan::Sort(mut sort) = plan else {
                return compare_positions(plan);
            };
            let schema = sort.input.schema().clone();
            let mut changed = false;
            for s in &mut sort.expr {
                if let Some(def) = enum_type_of(&s.expr, &schema) {
                    s.expr = position(s.expr.clone(), def);
                    changed = true;
                }
            }
            let plan = LogicalPlan::Sort(sort);
            Ok(if changed {
                Transformed::yes(plan)
            } else {
                Transformed::no(plan)
            })
        })
        .map(|t| t.data)
    }
}

fn enum_type_of(expr: &Expr, schema: &DFSchema) -> Option<&'static EnumDef> {
    let (_, field) = expr.to_field(schema).ok()?;
    SqlType::from_field(&field)?.enum_def()
}

fn position(expr: Expr, def: &'static EnumDef) -> Expr {
    let udf = Arc::new(ScalarUDF::new_from_impl(EnumPosition {
        signature: Signature::any(2, Volatility::Immutable),
    }));
    let ty = lit(SqlType::Enum(def).tag());
    Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![expr, ty]))
}

/// `a < b` (and `<=`, `>`, `>=`) where a or b is an enum value: compare
/// their positions.
fn compare_positions(plan: LogicalPlan) -> datafusion::common::Result<Transformed<LogicalPlan>> {
    let schemas: Vec<_> = plan.inputs().iter().map(|p| p.schema().clone()).collect();
    if schemas.is_empty() {
        return Ok(Transformed::no(plan));
    }
    plan.map_expressions(|expr| {
        expr.transform_up(|e| {
            let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
                return Ok(Transformed::no(e));
            };
            if !matches!(
                op,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            ) {
                return Ok(Transformed::no(e));
            }
            let def = schemas
                .iter()
                .find_map(|s| enum_type_of(left, s).or_else(|| enum_type_of(right, s)));
            let Some(def) = def else {
                return Ok(Transformed::no(e));
            };
            Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left: Box::new(position((**left).clone(), def)),
                op: *op,
                right: Box::new(position((**right).clone(), def)),
            })))
        })
    })
}
