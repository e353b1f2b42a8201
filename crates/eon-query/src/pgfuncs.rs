//! PostgreSQL functions that drivers call and that neither DataFusion nor
//! datafusion-pg-catalog provides.
//!
//! - `version()` worded as PostgreSQL's (drivers and ORMs parse
//!   "PostgreSQL X.Y"), not DataFusion's;
//! - `to_regtype(text)`: the oid of a type name, NULL when there is none —
//!   psycopg's `TypeInfo.fetch` (and so SQLAlchemy on connect) looks types up
//!   with it. Names resolve as PostgreSQL's parser resolves them: SQL
//!   spellings (`integer`, `double precision`, `character varying(10)`),
//!   internal names (`int4`), `pg_catalog.` qualified, `[]` for arrays. The
//!   oids are PostgreSQL's own (postgres-types' table, the same one
//!   `pg_type` is built from).
//! - casts to the types eon stores as text — `'…'::uuid`, `::jsonb`,
//!   `::json`, `uuid '…'` — which DataFusion cannot plan, and to bytea,
//!   which DataFusion plans as the string's own bytes where PostgreSQL
//!   reads `\x…` hex and escapes: [`rewrite`] turns them into calls of
//!   `eon_cast_uuid` / `eon_cast_jsonb` / `eon_cast_json` / `eon_cast_bytea`, which convert
//!   the value as a column of that type would (22P02 for a bad one) and give
//!   the result the column type's metadata, so clients see a uuid or jsonb
//!   column, not text;
//! - `pg_typeof(any)`: the PostgreSQL type name of its argument;
//! - `json_build_object(k, v, …)`, which SQLAlchemy's reflection uses;
//! - scalar subqueries that are not aggregates, correlated with the outer
//!   row (`(SELECT d.text FROM defaults d WHERE d.col = c.id)` in a select
//!   list), which DataFusion refuses ("must be aggregated"): [`rewrite`]
//!   wraps their value in `eon_single(…)`, an aggregate that is the one
//!   value of its rows, NULL over none, and fails with 21000 over more —
//!   PostgreSQL's semantics for any scalar subquery;
//! - `pg_size_pretty(bigint)`: a byte count as psql shows sizes (`10 kB`,
//!   `123 MB`), PostgreSQL 15's units and rounding;
//! - catalog helpers with eon's answers: `pg_get_serial_sequence` (NULL:
//!   eon has no sequences yet), `pg_collation_is_visible` (true: there is
//!   one schema search path).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Builder};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    DataType as SqlDataType, Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, Statement, visit_expressions_mut,
};
use eon_common::SqlType;
use eon_common::schema::ColumnDef;
use pgwire::api::Type;

use crate::session::SERVER_VERSION;

/// Register the functions on a session context.
pub fn register(ctx: &SessionContext) {
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (eon {}) on {}-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
    ctx.register_udf(create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let sizes = args[0].to_array(1)?;
            let sizes = sizes.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let out: datafusion::arrow::array::StringArray =
                sizes.iter().map(|s| s.map(size_pretty)).collect();
            shaped_like(args, Arc::new(out))
        }),
    ));
    ctx.register_udf(create_udf(
        "pg_sleep",
        vec![DataType::Float64],
        DataType::Null,
        Volatility::Volatile,
        Arc::new(pg_sleep),
    ));
    // PostgreSQL's names of DataFusion's functions.
    for (name, alias) in [("ceil", "ceiling"), ("signum", "sign")] {
        if let Ok(f) = datafusion::execution::FunctionRegistry::udf(ctx, name) {
            ctx.register_udf(f.as_ref().clone().with_aliases([alias]));
        }
    }
    // variance is PostgreSQL's name for the sample variance.
    if let Ok(f) = datafusion::execution::FunctionRegistry::udaf(ctx, "var_samp") {
        ctx.register_udaf(f.as_ref().clone().with_aliases(["variance"]));
    }
    if let Ok(f) = datafusion::execution::FunctionRegistry::udf(ctx, "make_array") {
        ctx.register_udf(f.as_ref().clone().with_aliases([ARRAY_LITERAL]));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(crate::pgformat::Format::new()));
    for f in crate::pgformat::Variadic::all() {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
    crate::numeric::register(ctx);
    crate::pgmath::register(ctx);
    crate::moments::register(ctx);
    crate::pgscalar::register(ctx);
    crate::ordered::register(ctx);
    crate::extract::register(ctx);
    crate::numfmt::register(ctx);
    crate::jsonops::register(ctx);
    crate::enums::register(ctx);
    ctx.register_udf(expandarray());
    for ty in [SqlType::Uuid, SqlType::Jsonb, SqlType::Json, SqlType::Bytea] {
        ctx.register_udf(ScalarUDF::new_from_impl(TextTypeCast::new(ty)));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(PgTypeof {
        signature: Signature::any(1, Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(ArrayOrEmpty {
        signature: Signature::any(1, Volatility::Immutable),
    }));
    ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
        Single {
            signature: Signature::any(1, Volatility::Immutable),
        },
    ));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    ctx.register_udf(create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    ));
    ctx.register_udf(create_udf(
        "pg_collation_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    ));
}

/// `json_build_object(k1, v1, …)`: a JSON object of the pairs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

fn json_value(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        v if v.is_null() => J::Null,
        ScalarValue::Boolean(Some(b)) => J::Bool(*b),
        ScalarValue::Int8(Some(i)) => J::from(*i),
        ScalarValue::Int16(Some(i)) => J::from(*i),
        ScalarValue::Int32(Some(i)) => J::from(*i),
        ScalarValue::Int64(Some(i)) => J::from(*i),
        ScalarValue::UInt32(Some(i)) => J::from(*i),
        ScalarValue::UInt64(Some(i)) => J::from(*i),
        ScalarValue::Float32(Some(f)) => J::from(*f as f64),
        ScalarValue::Float64(Some(f)) => J::from(*f),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => J::String(s.clone()),
        other => J::String(other.to_string()),
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(
        &self,
        _args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        Ok(Arc::new(SqlType::Jsonb.field(self.name(), true)))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        if args.args.len() % 2 != 0 {
            return Err(DataFusionError::External(Box::new(
                eon_common::Error::user(
                    eon_common::error::sqlstate::INVALID_PARAMETER_VALUE,
                    "argument list must have even number of elements",
                ),
            )));
        }
        let n = args.number_rows.max(1);
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..n {
            let mut map = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                let key = match json_value(&key) {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, json_value(&value));
            }
            out.append_value(serde_json::Value::Object(map).to_string());
        }
        shaped_like(&args.args, Arc::new(out.finish()))
    }
}

/// `pg_typeof(x)`: the type of its argument, named as PostgreSQL names it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let field = &args.arg_fields[0];
        let name = match crate::pgtypes::sql_type_of(field) {
            Some(ty) => ty.type_name(),
            None if field.data_type() == &DataType::Null => "unknown".to_string(),
            None => field.data_type().to_string().to_lowercase(),
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// `eon_array(list)`: the list, or an empty one for NULL — what
/// `ARRAY(subquery)` becomes around the subquery's `array_agg` (see
/// [`array_of_subquery`]); named `array` in results.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayOrEmpty {
    signature: Signature,
}

impl ScalarUDFImpl for ArrayOrEmpty {
    fn name(&self) -> &str {
        "eon_array"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(match &args[0] {
            // No rows can even be typed: an empty array of text.
            DataType::Null => DataType::new_list(DataType::Utf8, true),
            other => other.clone(),
        })
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let ty = args.return_field.data_type().clone();
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let list = datafusion::arrow::compute::cast(&arrays[0], &ty)?;
        let DataType::List(field) = &ty else {
            return shaped_like(&args.args, list);
        };
        let list = list.as_list::<i32>();
        // Null entries become empty lists: same values, offsets kept.
        let out = datafusion::arrow::array::ListArray::try_new(
            field.clone(),
            list.offsets().clone(),
            list.values().clone(),
            None,
        )?;
        shaped_like(&args.args, Arc::new(out))
    }
}

/// The function a cast to `ty` becomes, when eon stores `ty` as text.
fn text_type_cast(ty: &SqlDataType) -> Option<&'static str> {
    match ty {
        SqlDataType::Uuid => Some("eon_cast_uuid"),
        SqlDataType::Bytea => Some("eon_cast_bytea"),
        SqlDataType::JSONB => Some("eon_cast_jsonb"),
        SqlDataType::JSON => Some("eon_cast_json"),
        SqlDataType::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
            "uuid" | "pg_catalog.uuid" => Some("eon_cast_uuid"),
            "bytea" | "pg_catalog.bytea" => Some("eon_cast_bytea"),
            "jsonb" | "pg_catalog.jsonb" => Some("eon_cast_jsonb"),
            "json" | "pg_catalog.json" => Some("eon_cast_json"),
            _ => None,
        },
        _ => None,
    }
}

/// Rewrite casts DataFusion cannot plan into eon's cast functions (see the
/// module docs), in every expression of the statements.
/// Call `f` on every expression of the statements, stopping at the first
/// error (the rewrites of literals that must be read as PostgreSQL reads
/// them, where a bad one is the statement's error).
pub fn try_rewrite_expressions(
    statements: &mut [Statement],
    mut f: impl FnMut(&mut SqlExpr) -> eon_common::Result<()>,
) -> eon_common::Result<()> {
    for statement in statements.iter_mut() {
        let mut failed = None;
        let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(statement, |e| match f(e) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(err) => {
                failed = Some(err);
                std::ops::ControlFlow::Break(())
            }
        });
        if let Some(err) = failed {
            return Err(err);
        }
    }
    Ok(())
}

pub fn rewrite(statements: &mut [Statement]) {
    for statement in statements.iter_mut() {
        let _ = datafusion::sql::sqlparser::ast::VisitMut::visit(statement, &mut SeriesNames);
        let _ = datafusion::sql::sqlparser::ast::VisitMut::visit(statement, &mut ExistsAsValue);
        let _ = datafusion::sql::sqlparser::ast::VisitMut::visit(statement, &mut FunctionColumns);
        let _ = visit_expressions_mut(statement, |e: &mut SqlExpr| {
            let cast = match e {
                SqlExpr::Cast {
                    expr, data_type, ..
                } => text_type_cast(data_type).map(|f| (f, (**expr).clone())),
                SqlExpr::TypedString(t) => {
                    text_type_cast(&t.data_type).map(|f| (f, SqlExpr::Value(t.value.clone())))
                }
                _ => None,
            };
            if let SqlExpr::Subquery(q) = e {
                wrap_single(q);
            }
            if let Some((name, arg)) = cast {
                *e = call(name, arg);
            }
            text_alias(e);
            crate::ordered::rename(e);
            distinct_in_order(e);
            if let Some(array) = subscripts_of(e) {
                *e = call("unnest", subscripts(array));
            }
            series_rows(e);
            if is_user_keyword(e) {
                *e = call_with("session_user", vec![]);
            }
            // PostgreSQL's prefix operators |/ (square root), ||/ (cube
            // root) and @ (absolute value) are these functions.
            if let SqlExpr::UnaryOp { op, expr } = e {
                use datafusion::sql::sqlparser::ast::UnaryOperator as U;
                let function = match op {
                    U::PGSquareRoot => Some("sqrt"),
                    U::PGCubeRoot => Some("cbrt"),
                    U::PGAbs => Some("abs"),
                    _ => None,
                };
                if let Some(function) = function {
                    *e = call(function, (**expr).clone());
                }
            }
            crate::extract::rewrite(e);
            array_of_subquery(e);
            expand_array(e);
            ControlFlow::<()>::Continue(())
        });
    }
}

/// `array_agg(DISTINCT x)`: PostgreSQL removes the duplicates by sorting,
/// so the elements come out in order (NULL last); DataFusion's come in
/// the order of a hash table. It becomes `array_agg(DISTINCT x ORDER BY x)`.
fn distinct_in_order(e: &mut SqlExpr) {
    use datafusion::sql::sqlparser::ast::{
        DuplicateTreatment, FunctionArgumentClause, OrderByExpr, OrderByOptions,
    };
    let SqlExpr::Function(f) = e else {
        return;
    };
    if f.over.is_some() || !f.name.to_string().eq_ignore_ascii_case("array_agg") {
        return;
    }
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice() else {
        return;
    };
    if list.duplicate_treatment != Some(DuplicateTreatment::Distinct)
        || list
            .clauses
            .iter()
            .any(|c| matches!(c, FunctionArgumentClause::OrderBy(_)))
    {
        return;
    }
    let by = OrderByExpr {
        expr: arg.clone(),
        options: OrderByOptions {
            asc: None,
            nulls_first: None,
        },
        with_fill: None,
    };
    list.clauses.push(FunctionArgumentClause::OrderBy(vec![by]));
}

/// `'{1,2,NULL}'::int[]`: an array literal in PostgreSQL's text form,
/// which DataFusion would cast as one element, becomes the array of its
/// elements each cast to the element type (`'{}'` the empty array).
pub fn array_literals(statements: &mut [Statement]) -> eon_common::Result<()> {
    use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, CastKind, Value};
    try_rewrite_expressions(statements, |e: &mut SqlExpr| {
        let SqlExpr::Cast {
            expr, data_type, ..
        } = e
        else {
            return Ok(());
        };
        let SqlDataType::Array(
            ArrayElemTypeDef::SquareBracket(element, _) | ArrayElemTypeDef::AngleBracket(element),
        ) = &*data_type
        else {
            return Ok(());
        };
        let SqlExpr::Value(v) = &**expr else {
            return Ok(());
        };
        let Value::SingleQuotedString(text) = &v.value else {
            return Ok(());
        };
        let items = crate::coerce::parse_array_text(text)?
            .into_iter()
            .map(|item| SqlExpr::Cast {
                kind: CastKind::Cast,
                expr: Box::new(SqlExpr::value(match item {
                    Some(s) => Value::SingleQuotedString(s),
                    None => Value::Null,
                })),
                data_type: (**element).clone(),
                array: false,
                format: None,
            })
            .collect();
        **expr = call_with(ARRAY_LITERAL, items);
        Ok(())
    })
}

/// `make_array` under the name [`array_literals`] calls it by, so that
/// the column is named after the cast's type.
pub const ARRAY_LITERAL: &str = "eon_array_literal";

/// Casts to PostgreSQL's `name` (the type of identifiers) are casts to
/// text, as eon stores `name` columns.
fn text_alias(e: &mut SqlExpr) {
    let data_type = match e {
        SqlExpr::Cast { data_type, .. } => data_type,
        SqlExpr::TypedString(t) => &mut t.data_type,
        _ => return,
    };
    if let SqlDataType::Custom(name, _) = data_type
        && matches!(
            name.to_string().to_ascii_lowercase().as_str(),
            "name" | "pg_catalog.name"
        )
    {
        *data_type = SqlDataType::Text;
    }
}

/// `ARRAY(SELECT x FROM … [ORDER BY …])` — the subquery's rows as an
/// array, `{}` when there are none — as the aggregate DataFusion can plan
/// (correlated or not): `eon_array((SELECT array_agg(x ORDER BY …) FROM
/// …))`, `eon_array` making NULL (no rows) an empty array. A subquery that
/// aggregates without grouping is one element (`make_array(subquery)`);
/// one that groups, is DISTINCT or has a LIMIT aggregates over itself as a
/// derived table (which cannot be correlated). psql's `\du` asks for an
/// array this way.
fn array_of_subquery(e: &mut SqlExpr) {
    use datafusion::sql::sqlparser::ast::{
        FunctionArgumentClause, OrderByKind, SelectItem, SetExpr, TableFactor, TableWithJoins,
    };
    let SqlExpr::Function(f) = e else { return };
    if !f.name.to_string().eq_ignore_ascii_case("array") {
        return;
    }
    let FunctionArguments::Subquery(query) = &f.args else {
        return;
    };
    let mut query = (**query).clone();
    let order_by = query.order_by.clone();
    let order = match query.order_by.take().map(|o| o.kind) {
        Some(OrderByKind::Expressions(exprs)) => exprs,
        Some(OrderByKind::All(_)) => return,
        None => vec![],
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let [item] = select.projection.as_slice() else {
        return;
    };
    let item = match item {
        SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => x.clone(),
        _ => return,
    };
    let ungrouped = select.distinct.is_none()
        && query.limit_clause.is_none()
        && matches!(&select.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty())
        && select.having.is_none();
    if ungrouped && contains_aggregate(&item) {
        // An aggregate without GROUP BY: exactly one row, one element.
        *e = call("make_array", SqlExpr::Subquery(Box::new(query)));
        return;
    }
    // Rows a set-returning call makes are aggregated as a derived table.
    let simple = ungrouped && !contains_call(&item, |name| name == "unnest");
    let aggregate = |arg: SqlExpr, order: Vec<datafusion::sql::sqlparser::ast::OrderByExpr>| {
        let mut agg = call("array_agg", arg);
        if let SqlExpr::Function(Function {
            args: FunctionArguments::List(list),
            ..
        }) = &mut agg
            && !order.is_empty()
        {
            list.clauses.push(FunctionArgumentClause::OrderBy(order));
        }
        agg
    };
    let aggregated = if simple {
        select.projection = vec![SelectItem::UnnamedExpr(aggregate(item, order))];
        query
    } else {
        // SELECT array_agg(eon_array.x ORDER BY eon_array.n)
        // FROM (subquery, numbered in its order) AS eon_array(x, n)
        // — a derived table's ORDER BY alone would not hold. (A DISTINCT
        // one is not numbered: the number would make its rows distinct.)
        let numbered = !order.is_empty() && select.distinct.is_none();
        if numbered {
            let items: Vec<SqlExpr> = select
                .projection
                .iter()
                .filter_map(|i| match i {
                    SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => {
                        Some(x.clone())
                    }
                    _ => None,
                })
                .collect();
            // ORDER BY an output column's alias or position means its
            // expression (a window's ORDER BY sees neither).
            let resolved: Vec<_> = order
                .iter()
                .map(|o| {
                    let mut o = o.clone();
                    let by_alias = select.projection.iter().find_map(|i| match (i, &o.expr) {
                        (SelectItem::ExprWithAlias { expr, alias }, SqlExpr::Identifier(id))
                            if crate::dml::ident(alias) == crate::dml::ident(id) =>
                        {
                            Some(expr.clone())
                        }
                        _ => None,
                    });
                    let by_position = match &o.expr {
                        SqlExpr::Value(v) => match &v.value {
                            datafusion::sql::sqlparser::ast::Value::Number(n, _) => n
                                .parse::<usize>()
                                .ok()
                                .and_then(|n| items.get(n.wrapping_sub(1)).cloned()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(x) = by_alias.or(by_position) {
                        o.expr = x;
                    }
                    o
                })
                .collect();
            let window = parse_query("SELECT row_number() OVER (ORDER BY 1)");
            if let SetExpr::Select(w) = window.body.as_ref()
                && let Some(SelectItem::UnnamedExpr(SqlExpr::Function(mut f))) =
                    w.projection.first().cloned()
                && let Some(datafusion::sql::sqlparser::ast::WindowType::WindowSpec(spec)) =
                    f.over.as_mut()
            {
                spec.order_by = resolved;
                select
                    .projection
                    .push(SelectItem::UnnamedExpr(SqlExpr::Function(f)));
            }
        }
        query.order_by = order_by;
        let mut outer = parse_query(if numbered {
            "SELECT array_agg(eon_array.x ORDER BY eon_array.n) FROM (SELECT 1, 2) AS eon_array(x, n)"
        } else {
            "SELECT array_agg(eon_array.x) FROM (SELECT 1) AS eon_array(x)"
        });
        if let SetExpr::Select(s) = outer.body.as_mut()
            && let Some(TableWithJoins {
                relation: TableFactor::Derived { subquery, .. },
                ..
            }) = s.from.first_mut()
        {
            **subquery = query;
        }
        outer
    };
    *e = call("eon_array", SqlExpr::Subquery(Box::new(aggregated)));
}

/// A query eon writes itself (a template that parses).
fn parse_query(sql: &str) -> datafusion::sql::sqlparser::ast::Query {
    let mut p = datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(sql)
    .expect("eon's own SQL tokenizes");
    *p.parse_query().expect("eon's own SQL parses")
}

/// Whether an expression calls an aggregate function.
/// Refuses what PostgreSQL refuses in the recursive term of a recursive
/// CTE — an aggregate (42P19), ORDER BY or OFFSET (0A000) — which
/// DataFusion would otherwise run until memory runs out: `WITH RECURSIVE
/// x(n) AS (SELECT 1 UNION ALL SELECT count(*) FROM x)` never ends.
/// `VALUES` rows with a scalar subquery in a cell (`VALUES (1),
/// ((SELECT 2))`) become `SELECT … AS column1 UNION ALL SELECT …`:
/// DataFusion evaluates VALUES while it plans them, before any subquery
/// has run ("ScalarSubqueryExpr evaluated before the subquery was
/// executed"); a SELECT runs them first. Same rows, same column names.
pub fn values_with_subqueries(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{Query, SetExpr, VisitMut, VisitorMut};
    struct V;
    impl VisitorMut for V {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            let SetExpr::Values(values) = q.body.as_ref() else {
                return ControlFlow::Continue(());
            };
            let has_subquery =
                datafusion::sql::sqlparser::ast::visit_expressions(&values.rows, |e: &SqlExpr| {
                    if matches!(e, SqlExpr::Subquery(_)) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .is_break();
            if !has_subquery {
                return ControlFlow::Continue(());
            }
            let selects: Vec<String> = values
                .rows
                .iter()
                .map(|row| {
                    let items: Vec<String> = row
                        .iter()
                        .enumerate()
                        .map(|(j, c)| format!("{c} AS column{}", j + 1))
                        .collect();
                    format!("SELECT {}", items.join(", "))
                })
                .collect();
            let text = selects.join(" UNION ALL ");
            let parsed = datafusion::sql::sqlparser::parser::Parser::new(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            )
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_query());
            if let Ok(select) = parsed {
                *q.body = SetExpr::Query(select);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut V);
}

/// Refuse an aggregate with DISTINCT ordered by an expression that is not
/// one of its arguments (42P10, at that expression), as PostgreSQL does
/// while it plans; DataFusion finds it only when the query runs, with
/// no place to point at. (Expressions are compared as written, ignoring
/// case.)
pub fn check_distinct_order(statement: &Statement) -> eon_common::Result<()> {
    use datafusion::sql::sqlparser::ast::{
        DuplicateTreatment, FunctionArgumentClause, FunctionArguments, Spanned,
    };
    let mut found = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(statement, |x: &SqlExpr| {
        let SqlExpr::Function(f) = x else {
            return ControlFlow::Continue(());
        };
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        if list.duplicate_treatment != Some(DuplicateTreatment::Distinct) {
            return ControlFlow::Continue(());
        }
        let args: Vec<String> = list
            .args
            .iter()
            .map(|a| a.to_string().to_ascii_lowercase())
            .collect();
        for clause in &list.clauses {
            if let FunctionArgumentClause::OrderBy(order) = clause
                && let Some(o) = order
                    .iter()
                    .find(|o| !args.contains(&o.expr.to_string().to_ascii_lowercase()))
            {
                found = Some(o.expr.span());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match found {
        None => Ok(()),
        Some(at) => Err(crate::errors::at_span(
            eon_common::Error::user(
                eon_common::error::sqlstate::INVALID_COLUMN_REFERENCE,
                "in an aggregate with DISTINCT, ORDER BY expressions must appear in argument list",
            ),
            Some(at),
        )),
    }
}

/// Where the first aggregate call in `e` is (its name).
pub(crate) fn first_aggregate(e: &SqlExpr) -> Option<datafusion::sql::sqlparser::tokenizer::Span> {
    use datafusion::sql::sqlparser::ast::Spanned;
    let mut found = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |x: &SqlExpr| {
        if let SqlExpr::Function(f) = x {
            let name = f.name.to_string().to_ascii_lowercase();
            if AGGREGATES.contains(&name.as_str()) {
                found = Some(f.name.span());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

fn contains_aggregate(e: &SqlExpr) -> bool {
    contains_call(e, |name| AGGREGATES.contains(&name))
}

/// Whether `e` calls a function whose (lower-case) name `matches`.
fn contains_call(e: &SqlExpr, matches: impl Fn(&str) -> bool) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |x: &SqlExpr| {
        if let SqlExpr::Function(f) = x {
            let name = f.name.to_string().to_ascii_lowercase();
            found |= matches(&name);
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// `current_user`, `session_user`, `current_role`, `user`: SQL's special
/// values without parentheses, which the planner would take for columns.
fn is_user_keyword(e: &SqlExpr) -> bool {
    let name = match e {
        SqlExpr::Identifier(i) if i.quote_style.is_none() => &i.value,
        SqlExpr::Function(f) if matches!(f.args, FunctionArguments::None) => {
            match f.name.0.as_slice() {
                [part] => match part.as_ident() {
                    Some(i) if i.quote_style.is_none() => &i.value,
                    _ => return false,
                },
                _ => return false,
            }
        }
        _ => return false,
    };
    ["current_user", "session_user", "current_role", "user"]
        .iter()
        .any(|k| name.eq_ignore_ascii_case(k))
}

/// `nextval('s'::regclass)` (how PostgreSQL prints a SERIAL default, and
/// so how pg_dump writes it) → `nextval('s')`: eon's sequence functions take
/// the name as text. Done before the catalog rules, which would turn the
/// cast into a pg_class lookup. True when something changed.
pub fn sequence_names_as_text(statements: &mut [Statement]) -> bool {
    let mut changed = false;
    for statement in statements.iter_mut() {
        let _ = visit_expressions_mut(statement, |e: &mut SqlExpr| {
            changed |= sequence_name_text(e);
            ControlFlow::<()>::Continue(())
        });
    }
    changed
}

fn sequence_name_text(e: &mut SqlExpr) -> bool {
    let SqlExpr::Function(f) = e else {
        return false;
    };
    let name = f.name.to_string().to_ascii_lowercase();
    let name = name.rsplit('.').next().unwrap_or_default();
    if !matches!(name, "nextval" | "currval" | "setval") {
        return false;
    }
    let FunctionArguments::List(list) = &mut f.args else {
        return false;
    };
    if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) = list.args.first_mut() {
        if let SqlExpr::Cast {
            expr, data_type, ..
        } = arg
        {
            let regclass = matches!(data_type, SqlDataType::Regclass)
                || data_type.to_string().eq_ignore_ascii_case("regclass");
            if regclass {
                *arg = (**expr).clone();
                return true;
            }
        }
    }
    false
}

/// The arguments of a call to function `name` (schema-qualified or not),
/// when all are plain unnamed expressions.
fn call_args<'a>(e: &'a SqlExpr, name: &str) -> Option<Vec<&'a SqlExpr>> {
    let SqlExpr::Function(f) = e else {
        return None;
    };
    let fname = f.name.to_string().to_ascii_lowercase();
    if fname.rsplit('.').next() != Some(name) {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x),
            _ => None,
        })
        .collect()
}

/// A select list's bare `generate_series(…)` keeps PostgreSQL's column
/// name (`generate_series`) once [`series_rows`] has wrapped it in
/// `unnest`.
struct SeriesNames;

impl datafusion::sql::sqlparser::ast::VisitorMut for SeriesNames {
    type Break = ();
    fn pre_visit_query(
        &mut self,
        q: &mut datafusion::sql::sqlparser::ast::Query,
    ) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{Ident, SelectItem, SetExpr};
        if let SetExpr::Select(select) = q.body.as_mut() {
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(e) = item
                    && call_args(e, "generate_series").is_some()
                {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: Ident::new("generate_series"),
                    };
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// `generate_series(…)` in an expression — a select list — is a
/// set-returning function in PostgreSQL: a row per value, as many as the
/// longest such call gives beside it. DataFusion's is one list, which
/// `unnest` turns into those rows (several unnests in step, NULL-padded,
/// as PostgreSQL pairs them). A series the query unnests itself is left
/// as written. (`FROM generate_series(…)` is a table, not an expression.)
fn series_rows(e: &mut SqlExpr) {
    if call_args(e, "generate_series").is_some() {
        *e = call("unnest", e.clone());
        return;
    }
    // unnest(generate_series(…)): its argument was wrapped just before.
    let written = match call_args(e, "unnest").as_deref() {
        Some([inner]) => match call_args(inner, "unnest").as_deref() {
            Some([series]) if call_args(series, "generate_series").is_some() => {
                Some((*inner).clone())
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(inner) = written {
        *e = inner;
    }
}

/// The array of `generate_subscripts(array, 1)`, a set-returning function
/// catalog queries use beside `unnest(array)` to number its elements.
fn subscripts_of(e: &SqlExpr) -> Option<SqlExpr> {
    match call_args(e, "generate_subscripts")?.as_slice() {
        [array, _] => Some((*array).clone()),
        _ => None,
    }
}

/// `information_schema._pg_expandarray(a)`, the set-returning function
/// JDBC's getPrimaryKeys numbers key columns with: one row `(x, n)` per
/// element. It becomes `unnest(eon_expandarray(a))` (a struct per row),
/// and `(_pg_expandarray(a)).n` — which PostgreSQL evaluates as a second
/// set-returning call in step with the first — `unnest(generate_series(1,
/// cardinality(a)))`, which DataFusion's unnest pairs the same way.
/// (Children are rewritten before their parent, so the parent sees the
/// first form.)
fn expand_array(e: &mut SqlExpr) {
    let array_of = |f: &SqlExpr, name: &str| -> Option<SqlExpr> {
        match call_args(f, name)?.as_slice() {
            [a] => Some((*a).clone()),
            _ => None,
        }
    };
    if let Some(array) = array_of(e, "_pg_expandarray") {
        *e = call("unnest", call("eon_expandarray", array));
        return;
    }
    let SqlExpr::CompoundFieldAccess { root, access_chain } = e else {
        return;
    };
    let SqlExpr::Nested(root) = root.as_ref() else {
        return;
    };
    let root = root.as_ref();
    let [datafusion::sql::sqlparser::ast::AccessExpr::Dot(SqlExpr::Identifier(field))] =
        access_chain.as_slice()
    else {
        return;
    };
    let array = array_of(root, "unnest").and_then(|inner| array_of(&inner, "eon_expandarray"));
    match array {
        Some(array) if field.value.eq_ignore_ascii_case("n") => {
            *e = call("unnest", subscripts(array))
        }
        // `(composite).field` in general: DataFusion's get_field.
        _ => {
            let name = SqlExpr::value(datafusion::sql::sqlparser::ast::Value::SingleQuotedString(
                field.value.to_ascii_lowercase(),
            ));
            *e = call_with("get_field", vec![root.clone(), name]);
        }
    }
}

/// `eon_expandarray(a)`: the list of `{x: element, n: position from 1}`.
fn expandarray() -> ScalarUDF {
    fn element_type(args: &[DataType]) -> datafusion::common::Result<DataType> {
        match args {
            [DataType::List(f) | DataType::LargeList(f)] => Ok(f.data_type().clone()),
            _ => Err(DataFusionError::Plan(
                "_pg_expandarray takes an array".into(),
            )),
        }
    }
    fn struct_fields(element: DataType) -> datafusion::arrow::datatypes::Fields {
        vec![
            datafusion::arrow::datatypes::Field::new("x", element, true),
            datafusion::arrow::datatypes::Field::new("n", DataType::Int32, false),
        ]
        .into()
    }
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Expand(Signature);
    impl ScalarUDFImpl for Expand {
        fn name(&self) -> &str {
            "eon_expandarray"
        }
        fn signature(&self) -> &Signature {
            &self.0
        }
        fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
            let fields = struct_fields(element_type(args)?);
            Ok(DataType::new_list(DataType::Struct(fields), true))
        }
        fn invoke_with_args(
            &self,
            args: ScalarFunctionArgs,
        ) -> datafusion::common::Result<ColumnarValue> {
            use datafusion::arrow::array::{Int32Array, ListArray, StructArray};
            let arrays = ColumnarValue::values_to_arrays(&args.args)?;
            let element = element_type(&[arrays[0].data_type().clone()])?;
            let list = datafusion::arrow::compute::cast(
                &arrays[0],
                &DataType::new_list(element.clone(), true),
            )?;
            let list = list.as_list::<i32>();
            let offsets = list.offsets();
            let first = offsets[0];
            let last = offsets[offsets.len() - 1];
            let values = list.values().slice(first as usize, (last - first) as usize);
            let mut positions = Vec::with_capacity(values.len());
            for w in offsets.windows(2) {
                positions.extend(1..=(w[1] - w[0]));
            }
            let fields = struct_fields(element);
            let structs = StructArray::try_new(
                fields.clone(),
                vec![values, Arc::new(Int32Array::from(positions))],
                None,
            )?;
            let offsets = datafusion::arrow::buffer::OffsetBuffer::new(
                offsets
                    .iter()
                    .map(|o| o - first)
                    .collect::<Vec<i32>>()
                    .into(),
            );
            let out = ListArray::try_new(
                Arc::new(datafusion::arrow::datatypes::Field::new(
                    "item",
                    DataType::Struct(fields),
                    true,
                )),
                offsets,
                Arc::new(structs),
                list.nulls().cloned(),
            )?;
            shaped_like(&args.args, Arc::new(out))
        }
    }
    ScalarUDF::new_from_impl(Expand(Signature::any(1, Volatility::Stable)))
}

/// `generate_series(1, cardinality(array))`: the list of an array's
/// subscripts, which `unnest` beside `unnest(array)` pairs element by
/// element as PostgreSQL's `generate_subscripts(array, 1)` does.
fn subscripts(array: SqlExpr) -> SqlExpr {
    let one = SqlExpr::value(datafusion::sql::sqlparser::ast::Value::Number(
        "1".into(),
        false,
    ));
    call_with("generate_series", vec![one, call("cardinality", array)])
}

/// `EXISTS (SELECT … FROM … WHERE …)` used as a value (in a select list,
/// as psql's `\\d index` does): DataFusion plans EXISTS only as a filter.
/// It becomes `(SELECT count(*) > 0 FROM … WHERE …)` — the same truth
/// value, as a scalar subquery DataFusion decorrelates. EXISTS in WHERE
/// and elsewhere stays (a semi join there).
/// PostgreSQL names the one column of a set-returning function in FROM
/// after its alias (`FROM generate_series(1, 3) x` has a column `x`), or
/// after the function when there is none (`generate_series`); DataFusion
/// calls it `value`. Both spelled out as the alias's column list.
struct FunctionColumns;

impl datafusion::sql::sqlparser::ast::VisitorMut for FunctionColumns {
    type Break = ();

    fn pre_visit_table_factor(
        &mut self,
        factor: &mut datafusion::sql::sqlparser::ast::TableFactor,
    ) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{TableAlias, TableAliasColumnDef, TableFactor};
        let (function, alias) = match factor {
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                ..
            } => {
                let function = name.to_string().to_ascii_lowercase();
                let single = match function.as_str() {
                    "generate_series" | "pg_catalog.generate_series" => true,
                    "unnest" | "pg_catalog.unnest" => args.args.len() == 1,
                    _ => false,
                };
                if !single {
                    return ControlFlow::Continue(());
                }
                (function, alias)
            }
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_ordinality: false,
                ..
            } if array_exprs.len() == 1 => ("unnest".to_string(), alias),
            _ => return ControlFlow::Continue(()),
        };
        let function = function.rsplit('.').next().unwrap_or(&function).to_string();
        let alias = alias.get_or_insert_with(|| TableAlias {
            explicit: false,
            name: Ident::new(function),
            columns: vec![],
            at: None,
        });
        if alias.columns.is_empty() {
            alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
        }
        ControlFlow::Continue(())
    }
}

struct ExistsAsValue;

impl datafusion::sql::sqlparser::ast::VisitorMut for ExistsAsValue {
    type Break = ();

    fn pre_visit_query(
        &mut self,
        query: &mut datafusion::sql::sqlparser::ast::Query,
    ) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr};
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        for item in &mut select.projection {
            // PostgreSQL names a bare EXISTS column "exists".
            if let SelectItem::UnnamedExpr(e @ SqlExpr::Exists { negated: false, .. }) = item {
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::new("exists"),
                };
            }
            let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item
            else {
                continue;
            };
            let _ = visit_expressions_mut(e, |x: &mut SqlExpr| {
                if let SqlExpr::Exists { subquery, negated } = x {
                    if let Some(found) = exists_as_count(subquery) {
                        *x = if *negated {
                            SqlExpr::UnaryOp {
                                op: datafusion::sql::sqlparser::ast::UnaryOperator::Not,
                                expr: Box::new(found),
                            }
                        } else {
                            found
                        };
                    }
                }
                ControlFlow::<()>::Continue(())
            });
        }
        ControlFlow::Continue(())
    }
}

/// A SELECT that reads rows from somewhere and neither groups nor is
/// DISTINCT: one output row per row it reads.
fn plain_select(select: &datafusion::sql::sqlparser::ast::Select) -> bool {
    use datafusion::sql::sqlparser::ast::GroupByExpr;
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    !grouped && select.having.is_none() && select.distinct.is_none() && !select.from.is_empty()
}

/// `(SELECT count(*) > 0 FROM … WHERE …)` for a plain EXISTS subquery.
fn exists_as_count(q: &datafusion::sql::sqlparser::ast::Query) -> Option<SqlExpr> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, SelectItem, SetExpr, Value};
    if q.limit_clause.is_some() || q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    match q.body.as_ref() {
        SetExpr::Select(select) if plain_select(select) => {}
        _ => return None,
    }
    let mut counted = q.clone();
    counted.order_by = None;
    let SetExpr::Select(select) = counted.body.as_mut() else {
        return None;
    };
    let count = call_of("count", vec![FunctionArgExpr::Wildcard]);
    select.projection = vec![SelectItem::UnnamedExpr(SqlExpr::BinaryOp {
        left: Box::new(count),
        op: BinaryOperator::Gt,
        right: Box::new(SqlExpr::value(Value::Number("0".into(), false))),
    })];
    Some(SqlExpr::Subquery(Box::new(counted)))
}

/// PostgreSQL 15's `pg_size_pretty(bigint)` (dbsize.c): bytes below
/// 10 kB, then each unit while under 20 of it, halves rounded away from
/// zero.
pub fn size_pretty(size: i64) -> String {
    // (name, limit, round, unit bits)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (i, &(name, limit, round, bits)) in UNITS.iter().enumerate() {
        let last = i + 1 == UNITS.len();
        if last || size.unsigned_abs() < limit as u64 {
            if round {
                size = half_rounded(size);
            }
            return format!("{size} {name}");
        }
        let (_, _, next_round, next_bits) = UNITS[i + 1];
        let shift = next_bits - bits - u32::from(next_round) + u32::from(round);
        size /= 1i64 << shift;
    }
    unreachable!("the last unit always answers")
}

/// pg_sleep(seconds): the statement waits. Functions are synchronous, so
/// the wait blocks its thread — moved out of the runtime's way when the
/// runtime has threads to spare.
fn pg_sleep(args: &[ColumnarValue]) -> datafusion::common::Result<ColumnarValue> {
    let seconds = match &args[0] {
        ColumnarValue::Scalar(ScalarValue::Float64(Some(s))) => *s,
        ColumnarValue::Scalar(_) => 0.0,
        ColumnarValue::Array(a) => datafusion::arrow::array::AsArray::as_primitive::<
            datafusion::arrow::datatypes::Float64Type,
        >(a)
        .iter()
        .flatten()
        .sum(),
    };
    if seconds > 0.0 && seconds.is_finite() {
        let wait = std::time::Duration::from_secs_f64(seconds);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| std::thread::sleep(wait))
            }
            _ => std::thread::sleep(wait),
        }
    }
    Ok(ColumnarValue::Scalar(ScalarValue::Null))
}

/// A function call `name(arg)`.
pub(crate) fn call(name: &str, arg: SqlExpr) -> SqlExpr {
    call_with(name, vec![arg])
}

/// A function call `name(args…)`.
pub(crate) fn call_with(name: &str, args: Vec<SqlExpr>) -> SqlExpr {
    call_of(name, args.into_iter().map(FunctionArgExpr::Expr).collect())
}

/// A function call `name(args…)`, `*` among them allowed.
fn call_of(name: &str, args: Vec<FunctionArgExpr>) -> SqlExpr {
    SqlExpr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(FunctionArg::Unnamed).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Aggregate functions: a select item calling one is already aggregated.
const AGGREGATES: [&str; 24] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "string_agg",
    "array_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bit_and",
    "bit_or",
    "median",
    "eon_single",
];

/// Wrap the value of a plain one-column scalar subquery in `eon_single`
/// (see the module docs), or, when it ends in `[ORDER BY …] LIMIT 1`, in
/// `first_value(value ORDER BY …)`: the first row's value, NULL over no
/// rows — an aggregate DataFusion can decorrelate, where it cannot
/// decorrelate a LIMIT. Subqueries that aggregate, group, are DISTINCT,
/// set operations, or sort without LIMIT 1 are left alone.
fn wrap_single(q: &mut datafusion::sql::sqlparser::ast::Query) {
    use datafusion::sql::sqlparser::ast::{
        FunctionArgumentClause, LimitClause, OrderByKind, SelectItem, SetExpr, Value,
        visit_expressions,
    };
    let limit_one = match &q.limit_clause {
        None => false,
        Some(LimitClause::LimitOffset {
            limit: Some(SqlExpr::Value(v)),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() && v.value == Value::Number("1".into(), false) => true,
        Some(_) => return,
    };
    let order = match &q.order_by {
        None => Vec::new(),
        Some(o) => match &o.kind {
            OrderByKind::Expressions(e) if limit_one => e.clone(),
            _ => return,
        },
    };
    if q.fetch.is_some() || q.with.is_some() {
        return;
    }
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    if !plain_select(select) {
        return;
    }
    let (value, alias) = match select.projection.as_mut_slice() {
        [SelectItem::UnnamedExpr(value)] => (value, None),
        [SelectItem::ExprWithAlias { expr, alias }] => (expr, Some(alias.value.clone())),
        _ => return,
    };
    let mut aggregated = false;
    let _ = visit_expressions(&*value, |e: &SqlExpr| {
        if let SqlExpr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            let name = name.rsplit('.').next().unwrap_or_default();
            if f.over.is_some() || AGGREGATES.contains(&name) {
                aggregated = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if aggregated {
        return;
    }
    if !limit_one {
        *value = call("eon_single", value.clone());
        return;
    }
    // ORDER BY 1 or the column's alias name the value itself.
    let mut order = order;
    for o in &mut order {
        let names_value = match &o.expr {
            SqlExpr::Value(v) => v.value == Value::Number("1".into(), false),
            SqlExpr::Identifier(i) => alias.as_deref() == Some(i.value.as_str()),
            _ => false,
        };
        if names_value {
            o.expr = value.clone();
        }
    }
    let mut first = call("first_value", value.clone());
    if let (SqlExpr::Function(f), false) = (&mut first, order.is_empty()) {
        if let FunctionArguments::List(list) = &mut f.args {
            list.clauses.push(FunctionArgumentClause::OrderBy(order));
        }
    }
    *value = first;
    q.order_by = None;
    q.limit_clause = None;
}

/// `eon_single(x)`: the value of its only row; NULL over no rows; an error
/// (21000) over more than one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Single {
    signature: Signature,
}

impl datafusion::logical_expr::AggregateUDFImpl for Single {
    fn name(&self) -> &str {
        "eon_single"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(args[0].clone())
    }

    fn accumulator(
        &self,
        args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> datafusion::common::Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        Ok(Box::new(SingleAcc {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            rows: 0,
        }))
    }

    fn state_fields(
        &self,
        args: datafusion::logical_expr::function::StateFieldsArgs,
    ) -> datafusion::common::Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(
                args.return_field
                    .as_ref()
                    .clone()
                    .with_name("value")
                    .with_nullable(true),
            ),
            Arc::new(datafusion::arrow::datatypes::Field::new(
                "rows",
                DataType::Int64,
                false,
            )),
        ])
    }
}

#[derive(Debug)]
struct SingleAcc {
    value: ScalarValue,
    rows: i64,
}

impl SingleAcc {
    fn add(&mut self, value: ScalarValue, rows: i64) -> datafusion::common::Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.rows += rows;
        if self.rows > 1 {
            return Err(DataFusionError::External(Box::new(
                eon_common::Error::user(
                    eon_common::error::sqlstate::CARDINALITY_VIOLATION,
                    "more than one row returned by a subquery used as an expression",
                ),
            )));
        }
        self.value = value;
        Ok(())
    }
}

impl datafusion::logical_expr::Accumulator for SingleAcc {
    fn update_batch(
        &mut self,
        values: &[datafusion::arrow::array::ArrayRef],
    ) -> datafusion::common::Result<()> {
        for i in 0..values[0].len() {
            self.add(ScalarValue::try_from_array(&values[0], i)?, 1)?;
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        states: &[datafusion::arrow::array::ArrayRef],
    ) -> datafusion::common::Result<()> {
        let rows = states[1].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..states[0].len() {
            self.add(ScalarValue::try_from_array(&states[0], i)?, rows.value(i))?;
        }
        Ok(())
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![
            self.value.clone(),
            ScalarValue::Int64(Some(self.rows)),
        ])
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size()
    }
}

/// A cast to a type eon stores as text (uuid, jsonb).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextTypeCast {
    name: String,
    ty: SqlType,
    signature: Signature,
}

impl TextTypeCast {
    fn new(ty: SqlType) -> TextTypeCast {
        TextTypeCast {
            name: format!("eon_cast_{}", ty.short_name()),
            ty,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TextTypeCast {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(self.ty.arrow_type())
    }

    fn return_field_from_args(
        &self,
        _args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        Ok(Arc::new(self.ty.field(self.name(), true)))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        cast_as_stored(&args, self.ty)
    }
}

/// The first argument of a cast function as a column of type `ty` stores
/// it (read from its text, with the column's checks and errors).
pub(crate) fn cast_as_stored(
    args: &ScalarFunctionArgs,
    ty: SqlType,
) -> datafusion::common::Result<ColumnarValue> {
    let input = args.args[0].to_array(args.number_rows.max(1))?;
    let input = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
    let column = ColumnDef {
        name: String::new(),
        ty,
        nullable: true,
        default_sql: None,
        hidden: false,
    };
    let out = crate::coerce::coerce(&input, &column, "")
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    shaped_like(&args.args[..1], out)
}

/// `to_regtype(name)`: a built-in type's oid, else the oid of one of
/// `enums`' types (by name, qualified or not), else NULL.
pub(crate) fn to_regtype(
    enums: impl Fn() -> Vec<eon_proto::v1::EnumType> + Send + Sync + 'static,
) -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let mut out = Int32Builder::with_capacity(names.len());
            let types = enums();
            let enum_oid = |name: &str| {
                let name = name.trim_matches('"');
                let found = types
                    .iter()
                    .find(|t| t.name == name || format!("{}.{}", t.schema, t.name) == name);
                found.map(|t| t.id as u32)
            };
            for i in 0..names.len() {
                match (!names.is_null(i))
                    .then(|| type_oid(names.value(i)).or_else(|| enum_oid(names.value(i))))
                    .flatten()
                {
                    Some(oid) => out.append_value(oid as i32),
                    None => out.append_null(),
                }
            }
            shaped_like(args, Arc::new(out.finish()))
        }),
    )
}

/// A function's result in the shape of its arguments: one value when they
/// were all constants, else a column.
pub(crate) fn shaped_like(
    args: &[ColumnarValue],
    out: ArrayRef,
) -> datafusion::common::Result<ColumnarValue> {
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(out.as_ref(), 0)?)
        } else {
            ColumnarValue::Array(out)
        },
    )
}

/// `session_user` (and `current_user`, `user`, which the catalog rules
/// rewrite to it): the role the session logged in as.
pub fn session_user(name: String) -> ScalarUDF {
    let value = move |_args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name.clone()))))
    };
    ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "session_user",
            Signature::exact(vec![], Volatility::Stable),
            DataType::Utf8,
            Arc::new(value),
        ),
    )
}

/// `pg_table_is_visible(oid)` for a session whose search path (its
/// temporary schema first, if it has one) is `path`: whether an
/// unqualified name finds the table — its schema is on the path and no
/// schema before it there has a table of that name (so not another
/// session's temporary table, nor a permanent one that a temporary one
/// shadows). Relations that are not eon's tables (views, sequences, the
/// catalog's own) are visible.
pub fn table_is_visible(
    definitions: Arc<crate::pgcatalog::Definitions>,
    cluster: Arc<crate::cluster::Cluster>,
    path: Vec<String>,
) -> ScalarUDF {
    let visible = move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let oids = datafusion::arrow::compute::cast(&arrays[0], &DataType::Int32)?;
        let out: datafusion::arrow::array::BooleanArray = oids
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
            .iter()
            .map(|oid| {
                let t = definitions.table(oid?)?;
                let first = path.iter().find(|s| cluster.table(s, &t.name).is_some());
                Some(first == Some(&t.schema))
            })
            .map(|v| Some(v.unwrap_or(true)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    };
    ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "pg_table_is_visible",
            Signature::exact(vec![DataType::Int32], Volatility::Stable),
            DataType::Boolean,
            Arc::new(visible),
        ),
    )
}

/// `current_setting(name [, missing_ok])` over a session's settings as a
/// statement starts (its SETs, else the defaults SHOW also answers).
pub fn current_setting(settings: Arc<crate::session::SessionSettings>) -> ScalarUDF {
    let lookup = move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let missing_ok = match arrays.get(1) {
            Some(a) => datafusion::arrow::compute::cast(a, &DataType::Boolean)?
                .as_boolean()
                .iter()
                .map(|b| b.unwrap_or(false))
                .collect(),
            None => vec![false; names.len()],
        };
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for (name, ok) in names.as_string::<i32>().iter().zip(missing_ok) {
            let Some(name) = name else {
                out.append_null();
                continue;
            };
            let name = name.to_ascii_lowercase();
            match settings.value(&name) {
                Some(v) => out.append_value(v),
                None if ok => out.append_null(),
                None => {
                    return Err(DataFusionError::External(Box::new(
                        eon_common::Error::user(
                            eon_common::error::sqlstate::UNDEFINED_OBJECT,
                            format!("unrecognized configuration parameter \"{name}\""),
                        ),
                    )));
                }
            }
        }
        shaped_like(args, Arc::new(out.finish()))
    };
    ScalarUDF::new_from_impl(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            "current_setting",
            Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8]),
                    datafusion::logical_expr::TypeSignature::Exact(vec![
                        DataType::Utf8,
                        DataType::Boolean,
                    ]),
                ],
                Volatility::Stable,
            ),
            DataType::Utf8,
            Arc::new(lookup),
        ),
    )
}

/// The oid of a type name as PostgreSQL resolves it, if it names a type.
pub fn type_oid(name: &str) -> Option<u32> {
    let mut name = name.trim().to_ascii_lowercase();
    if let Some(rest) = name.strip_prefix("pg_catalog.") {
        name = rest.to_string();
    }
    let array = name.ends_with("[]");
    let base = name.trim_end_matches("[]").trim();
    // A type modifier does not change the type: varchar(10), numeric(8,2).
    let base = match base.find('(') {
        Some(open) => {
            let close = base.rfind(')')?;
            let rest = base[close + 1..].trim();
            format!("{} {rest}", base[..open].trim()).trim().to_string()
        }
        None => base.to_string(),
    };
    let internal = match base.as_str() {
        "smallint" => "int2",
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "decimal" => "numeric",
        "boolean" => "bool",
        "character varying" | "char varying" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        "bit varying" => "varbit",
        other => other,
    };
    let wanted = if array {
        format!("_{internal}")
    } else {
        internal.to_string()
    };
    // postgres-types knows PostgreSQL's built-in types by oid; the highest
    // built-in oid is below 16384 (FirstNormalObjectId).
    (1..16384u32)
        .filter_map(Type::from_oid)
        .find(|t| t.name() == wanted)
        .map(|t| t.oid())
}

#[cfg(test)]
mod tests {
    use super::type_oid;

    #[test]
    fn type_names_resolve_as_postgresql_resolves_them() {
        assert_eq!(type_oid("numeric"), Some(1700));
        assert_eq!(type_oid("integer"), Some(23));
        assert_eq!(type_oid("INT4"), Some(23));
        assert_eq!(type_oid("pg_catalog.int8"), Some(20));
        assert_eq!(type_oid("double precision"), Some(701));
        assert_eq!(type_oid("character varying(10)"), Some(1043));
        assert_eq!(type_oid("timestamp with time zone"), Some(1184));
        assert_eq!(type_oid("int4[]"), Some(1007));
        assert_eq!(type_oid("text[]"), Some(1009));
        assert_eq!(type_oid("jsonb"), Some(3802));
        assert_eq!(type_oid("hstore"), None);
        assert_eq!(type_oid("no_such_type"), None);
    }
}

/// Where `word` first occurs in `text` as a whole word (not inside a longer
/// identifier). Both are expected in the same case.
pub(crate) fn find_word(text: &str, word: &str) -> Option<usize> {
    let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        boundary(text[..i].chars().next_back()) && boundary(text[i + word.len()..].chars().next())
    })
}
