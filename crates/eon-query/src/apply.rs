//! Per-row evaluation ("apply") of the subqueries DataFusion cannot
//! decorrelate.
//!
//! A correlated subquery names columns of the row it is evaluated for:
//! `LATERAL (SELECT x.q1, y.q1 UNION ALL SELECT x.q2, y.q2)`, `(SELECT
//! count(*) FILTER (WHERE outer_c <> 0) FROM t0)`, `f3 IN (SELECT upper.f1
//! + f2 FROM …)`. PostgreSQL plans these as a nested loop that re-runs the
//! subquery for every outer row. DataFusion instead rewrites them into joins
//! (its decorrelation rules, and eon's [`crate::decorrelate`]); a shape none
//! of those rules knows stays behind as a subquery with *outer references*,
//! which DataFusion cannot execute ("Physical plan does not support logical
//! expression OuterReferenceColumn").
//!
//! This module runs those the way PostgreSQL does. [`ApplyRule`], placed
//! right after DataFusion's decorrelation rules (before projections are
//! pruned and joins reordered, which would not keep the columns an outer
//! reference names), replaces what is left by an [`Apply`] node over the
//! outer input:
//!
//! - a lateral join `outer [LEFT] JOIN LATERAL (inner) ON cond` (or a comma /
//!   CROSS JOIN) becomes `Apply { Lateral }`: for each outer row, the inner
//!   rows that meet `cond`, or one row of NULLs for a LEFT join without any;
//! - a correlated scalar subquery, `EXISTS` or `IN` inside a projection,
//!   filter or aggregate becomes an `Apply` that adds its value as a column,
//!   which the expression then reads.
//!
//! [`ApplyExec`] executes it: for every distinct combination of the outer
//! values the subquery refers to, it substitutes them as constants (the
//! subquery is then uncorrelated), lets DataFusion optimize and run it at the
//! statement's snapshot, and remembers the answer for the next row with the
//! same values. The distinct values of one outer batch are answered several
//! at a time, as each answer mostly waits on data engines. A subquery nested in the substituted one that refers to the
//! same outer row is substituted too, and one that still cannot be
//! decorrelated becomes an `Apply` of its own when the substituted plan is
//! optimized.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, new_null_array};
use datafusion::arrow::compute::{cast, concat, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, DataFusionError, Result, ScalarValue, TableReference,
};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::{Exists, InSubquery};
use datafusion::logical_expr::logical_plan::builder::build_join_schema;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, Extension, Join, JoinType, LogicalPlan, LogicalPlanBuilder,
    Projection, Subquery, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    Partitioning, PlanProperties, ReplaceChildrenOptions, collect_partitioned,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName, Statement, TableAlias,
    TableFactor, VisitMut, VisitorMut, visit_expressions,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::{StreamExt, TryStreamExt};
use std::ops::ControlFlow;

/// How many distinct outer values [`ApplyExec`] answers at once.
const CONCURRENT_ANSWERS: usize = 8;

/// What an [`Apply`] computes for each outer row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
enum Kind {
    /// `outer [LEFT] JOIN LATERAL inner ON condition`: the outer row with
    /// each inner row meeting `condition` (over the joined columns).
    Lateral { left: bool, condition: Option<Expr> },
    /// `(inner)` as a value: its one column, NULL without rows, an error
    /// with more than one.
    Scalar,
    /// `[NOT] EXISTS (inner)`.
    Exists { negated: bool },
    /// `expr [NOT] IN (inner)`, `expr` over the outer row.
    In { expr: Expr, negated: bool },
}

impl Kind {
    /// The expressions over the outer row (lateral: the joined row).
    fn exprs(&self) -> Vec<&Expr> {
        match self {
            Kind::Lateral {
                condition: Some(c), ..
            } => vec![c],
            Kind::In { expr, .. } => vec![expr],
            _ => vec![],
        }
    }

    fn map_exprs(self, f: &mut impl FnMut(Expr) -> Result<Expr>) -> Result<Kind> {
        Ok(match self {
            Kind::Lateral {
                left,
                condition: Some(c),
            } => Kind::Lateral {
                left,
                condition: Some(f(c)?),
            },
            Kind::In { expr, negated } => Kind::In {
                expr: f(expr)?,
                negated,
            },
            other => other,
        })
    }
}

/// The logical node: `inner` evaluated for each row of `outer` (see the
/// module docs). `inner` is not an input of the node: it refers to outer
/// columns and is planned per row, after substitution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Apply {
    outer: LogicalPlan,
    inner: LogicalPlan,
    kind: Kind,
    schema: DFSchemaRef,
}

impl PartialOrd for Apply {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.outer, &self.inner, &self.kind).partial_cmp(&(
            &other.outer,
            &other.inner,
            &other.kind,
        ))
    }
}

/// Names of the columns an Apply adds for a subquery's value.
static NEXT_COLUMN: AtomicUsize = AtomicUsize::new(0);

impl Apply {
    fn try_new(outer: LogicalPlan, inner: LogicalPlan, kind: Kind) -> Result<Apply> {
        let added = match &kind {
            Kind::Lateral { .. } => None,
            Kind::Scalar => Some(inner.schema().field(0).data_type().clone()),
            _ => Some(DataType::Boolean),
        }
        .map(|t| {
            let n = NEXT_COLUMN.fetch_add(1, AtomicOrdering::Relaxed);
            (
                None,
                Arc::new(Field::new(format!("__eon_apply_{n}"), t, true)),
            )
        });
        Apply::assemble(outer, inner, kind, added)
    }

    /// The same Apply over another outer input or subquery (for a value,
    /// the added column keeps its name: the plan above reads it).
    fn rebuilt(&self, outer: LogicalPlan, inner: LogicalPlan, kind: Kind) -> Result<Apply> {
        let added = match &kind {
            Kind::Lateral { .. } => None,
            _ => {
                let (qualifier, field) =
                    self.schema.qualified_field(self.schema.fields().len() - 1);
                Some((qualifier.cloned(), field.clone()))
            }
        };
        Apply::assemble(outer, inner, kind, added)
    }

    /// An Apply's schema: a lateral join's, or the outer row's columns and
    /// the `added` one.
    fn assemble(
        outer: LogicalPlan,
        inner: LogicalPlan,
        kind: Kind,
        added: Option<(Option<TableReference>, FieldRef)>,
    ) -> Result<Apply> {
        let schema = match (&kind, added) {
            (Kind::Lateral { left, .. }, _) => {
                let join_type = if *left {
                    JoinType::Left
                } else {
                    JoinType::Inner
                };
                build_join_schema(outer.schema(), inner.schema(), &join_type)?
            }
            (_, Some(field)) => outer.schema().join(&DFSchema::new_with_metadata(
                vec![field],
                Default::default(),
            )?)?,
            (_, None) => {
                return Err(DataFusionError::Internal(
                    "an Apply of a value adds a column".into(),
                ));
            }
        };
        Ok(Apply {
            outer,
            inner,
            kind,
            schema: Arc::new(schema),
        })
    }

    /// The column an Apply of a value adds (the last).
    fn added_column(&self) -> Expr {
        let (qualifier, field) = self.schema.qualified_field(self.schema.fields().len() - 1);
        Expr::Column(Column::new(qualifier.cloned(), field.name()))
    }

    fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

impl UserDefinedLogicalNodeCore for Apply {
    fn name(&self) -> &str {
        "Apply"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.outer]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        // The expressions are over the joined row, not over the input:
        // kept out of the optimizer's reach.
        vec![]
    }

    fn prevent_predicate_push_down_columns(&self) -> std::collections::HashSet<String> {
        // A filter on what the apply adds stays above it.
        let outer = self.outer.schema().fields().len();
        self.schema
            .fields()
            .iter()
            .skip(outer)
            .map(|f| f.name().clone())
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.kind {
            Kind::Lateral { left, condition } => {
                write!(
                    f,
                    "Apply: per row, {} lateral join",
                    if *left { "left" } else { "inner" }
                )?;
                if let Some(c) = condition {
                    write!(f, " on {c}")?;
                }
                Ok(())
            }
            Kind::Scalar => write!(f, "Apply: per row, scalar subquery"),
            Kind::Exists { negated } => {
                write!(
                    f,
                    "Apply: per row, {}EXISTS",
                    if *negated { "NOT " } else { "" }
                )
            }
            Kind::In { expr, negated } => {
                write!(
                    f,
                    "Apply: per row, {expr} {}IN",
                    if *negated { "NOT " } else { "" }
                )
            }
        }?;
        write!(
            f,
            "\n    {}",
            self.inner
                .display_indent()
                .to_string()
                .replace('\n', "\n    ")
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let outer = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("Apply takes one input".into()))?;
        if outer.schema() == self.outer.schema() {
            return Ok(Apply {
                outer,
                ..self.clone()
            });
        }
        self.rebuilt(outer, self.inner.clone(), self.kind.clone())
    }
}

// ---------------------------------------------------------------------------
// Finding outer references

/// The outer references in `plan` (its subqueries and applies included).
fn outer_refs(plan: &LogicalPlan) -> Vec<Column> {
    let mut out = vec![];
    collect_plan_refs(plan, &mut out);
    out
}

fn collect_plan_refs(plan: &LogicalPlan, out: &mut Vec<Column>) {
    let _ = plan.apply_with_subqueries(|p| {
        if let Some(apply) = as_apply(p) {
            collect_plan_refs(&apply.inner, out);
            for e in apply.kind.exprs() {
                collect_expr_refs(e, out);
            }
        }
        p.apply_expressions(|e| {
            collect_expr_refs(e, out);
            Ok(TreeNodeRecursion::Continue)
        })
    });
}

fn collect_expr_refs(e: &Expr, out: &mut Vec<Column>) {
    let _ = e.apply(|x| {
        if let Expr::OuterReferenceColumn(_, c) = x
            && !out.contains(c)
        {
            out.push(c.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn as_apply(plan: &LogicalPlan) -> Option<&Apply> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<Apply>(),
        _ => None,
    }
}

/// Whether `plan` refers to a column of `schema` from outside (what makes
/// it a subquery to apply over a plan of that schema).
fn correlated_to(plan: &LogicalPlan, schema: &DFSchema) -> bool {
    outer_refs(plan).iter().any(|c| schema.has_column(c))
}

/// Refuses a subquery with an aggregate over nothing but the outer row's
/// columns (`(SELECT max(o.x) FROM t)`, `count(*) FILTER (WHERE o.c <> 0)`):
/// PostgreSQL computes such an aggregate in the outer query, over all its
/// rows; run per row it would answer something else.
fn check_aggregate_levels(inner: &LogicalPlan, outer: &DFSchema) -> Result<()> {
    let mut outer_only = false;
    let _ = inner.apply(|p| {
        if let LogicalPlan::Aggregate(a) = p {
            for e in &a.aggr_expr {
                let mut refs = vec![];
                collect_expr_refs(e, &mut refs);
                if refs.iter().any(|c| outer.has_column(c)) && e.column_refs().is_empty() {
                    outer_only = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if outer_only {
        return Err(DataFusionError::External(Box::new(
            eon_common::Error::unsupported(
                "an aggregate over only the outer query's columns inside a subquery is not supported",
            ),
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The rule

/// Replaces the correlated subqueries DataFusion's rules left by [`Apply`]
/// nodes (see the module docs). Runs right after DataFusion's decorrelation
/// rules.
#[derive(Debug, Default)]
pub struct ApplyRule;

impl OptimizerRule for ApplyRule {
    fn name(&self) -> &str {
        "eon_apply_correlated_subqueries"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match plan {
            LogicalPlan::Join(join) => lateral(join),
            LogicalPlan::Projection(p) => {
                let Some((exprs, input)) = hoist(p.expr.clone(), &p.input, true)? else {
                    return Ok(Transformed::no(LogicalPlan::Projection(p)));
                };
                Ok(Transformed::yes(LogicalPlan::Projection(
                    Projection::try_new(exprs, Arc::new(input))?,
                )))
            }
            LogicalPlan::Filter(f) => {
                let Some((mut exprs, input)) = hoist(vec![f.predicate.clone()], &f.input, false)?
                else {
                    return Ok(Transformed::no(LogicalPlan::Filter(f)));
                };
                Ok(Transformed::yes(crate::decorrelate::filter_keeping(
                    exprs.remove(0),
                    input,
                    f.input.schema(),
                )?))
            }
            LogicalPlan::Aggregate(a) => {
                let groups = a.group_expr.len();
                let all: Vec<Expr> = a.group_expr.iter().chain(&a.aggr_expr).cloned().collect();
                let Some((mut exprs, input)) = hoist(all, &a.input, true)? else {
                    return Ok(Transformed::no(LogicalPlan::Aggregate(a)));
                };
                let aggr = exprs.split_off(groups);
                Ok(Transformed::yes(LogicalPlan::Aggregate(
                    Aggregate::try_new(Arc::new(input), exprs, aggr)?,
                )))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

/// `left [LEFT] JOIN right` whose right side refers to the left's columns.
fn lateral(join: Join) -> Result<Transformed<LogicalPlan>> {
    let left = match join.join_type {
        JoinType::Inner => false,
        JoinType::Left => true,
        _ => return Ok(Transformed::no(LogicalPlan::Join(join))),
    };
    if !correlated_to(&join.right, join.left.schema()) {
        return Ok(Transformed::no(LogicalPlan::Join(join)));
    }
    let mut parts: Vec<Expr> = join
        .on
        .iter()
        .map(|(l, r)| l.clone().eq(r.clone()))
        .collect();
    parts.extend(join.filter.clone());
    let condition = conjunction(parts);
    check_aggregate_levels(&join.right, join.left.schema())?;
    let apply = Apply::try_new(
        Arc::unwrap_or_clone(join.left),
        Arc::unwrap_or_clone(join.right),
        Kind::Lateral { left, condition },
    )?;
    Ok(Transformed::yes(apply.into_plan()))
}

/// Moves the correlated subqueries of `exprs` (over `input`) into Applies
/// stacked on `input`; `None` when there are none. With `named`, each
/// expression keeps its name (a projection's or aggregate's output, which
/// the plan above reads by name).
fn hoist(
    exprs: Vec<Expr>,
    input: &LogicalPlan,
    named: bool,
) -> Result<Option<(Vec<Expr>, LogicalPlan)>> {
    let schema = input.schema().clone();
    let mut plan = input.clone();
    let mut changed = false;
    let mut out = Vec::with_capacity(exprs.len());
    for e in exprs {
        let name = named.then(|| e.schema_name().to_string());
        let e = e
            .transform_up(|x| {
                // Scalar subqueries without outer references DataFusion
                // runs itself; EXISTS and IN only where they are a
                // filter's condition (a semi join), so any left here is
                // applied, correlated or not.
                let (inner, kind) = match x {
                    Expr::ScalarSubquery(ref sq) if correlated_to(&sq.subquery, &schema) => {
                        (sq.subquery.as_ref().clone(), Kind::Scalar)
                    }
                    Expr::Exists(Exists {
                        ref subquery,
                        negated,
                    }) => (subquery.subquery.as_ref().clone(), Kind::Exists { negated }),
                    Expr::InSubquery(InSubquery {
                        ref expr,
                        ref subquery,
                        negated,
                    }) => (
                        subquery.subquery.as_ref().clone(),
                        Kind::In {
                            expr: expr.as_ref().clone(),
                            negated,
                        },
                    ),
                    other => return Ok(Transformed::no(other)),
                };
                check_aggregate_levels(&inner, &schema)?;
                let apply = Apply::try_new(plan.clone(), inner, kind)?;
                let column = apply.added_column();
                plan = apply.into_plan();
                changed = true;
                Ok(Transformed::yes(column))
            })?
            .data;
        out.push(match name {
            Some(name) => e.alias_if_changed(name)?,
            None => e,
        });
    }
    Ok(changed.then_some((out, plan)))
}

// ---------------------------------------------------------------------------
// Substitution

/// The outer row's values, by column.
type Binding = HashMap<Column, ScalarValue>;

/// `plan` with the outer references to `values` replaced by constants.
fn bind_plan(plan: LogicalPlan, values: &Binding) -> Result<LogicalPlan> {
    let bound = plan
        .transform_up(|p| {
            let p = match p {
                LogicalPlan::Subquery(sq) => {
                    // Its input is bound already: unwrap when nothing
                    // outside is left to refer to.
                    let refs = sq.subquery.all_out_ref_exprs();
                    if refs.is_empty() {
                        Arc::unwrap_or_clone(sq.subquery)
                    } else {
                        LogicalPlan::Subquery(Subquery {
                            outer_ref_columns: refs,
                            ..sq
                        })
                    }
                }
                LogicalPlan::Extension(ref e) if as_apply(&p).is_some() => {
                    let apply = e.node.as_any().downcast_ref::<Apply>().unwrap();
                    let inner = bind_plan(apply.inner.clone(), values)?;
                    let kind = apply
                        .kind
                        .clone()
                        .map_exprs(&mut |x| bind_expr(x, values, false))?;
                    apply.rebuilt(apply.outer.clone(), inner, kind)?.into_plan()
                }
                other => other,
            };
            // What a projection, aggregate or window computes keeps its
            // name (the plan above reads it by name), `outer_ref(a.x)` too.
            let named = matches!(
                p,
                LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
            );
            p.map_expressions(|e| {
                let name = named.then(|| e.schema_name().to_string());
                let bound = bind_expr(e, values, false)?;
                Ok(Transformed::yes(match name {
                    Some(name) => bound.alias_if_changed(name)?,
                    None => bound,
                }))
            })
        })?
        .data;
    bound.recompute_schema()
}

fn bind_subquery(sq: Subquery, values: &Binding) -> Result<Subquery> {
    let plan = bind_plan(Arc::unwrap_or_clone(sq.subquery), values)?;
    Ok(Subquery {
        outer_ref_columns: plan.all_out_ref_exprs(),
        subquery: Arc::new(plan),
        spans: sq.spans,
    })
}

/// `e` with the outer references (and, if `columns`, the plain columns) to
/// `values` replaced by constants.
fn bind_expr(e: Expr, values: &Binding, columns: bool) -> Result<Expr> {
    let constant = |field_type: Option<&DataType>, v: &ScalarValue| -> Result<Expr> {
        let v = match field_type {
            Some(t) if t != &v.data_type() => v.cast_to(t)?,
            _ => v.clone(),
        };
        Ok(Expr::Literal(v, None))
    };
    Ok(e.transform_up(|x| {
        Ok(match x {
            Expr::OuterReferenceColumn(f, c) => match values.get(&c) {
                Some(v) => Transformed::yes(constant(Some(f.data_type()), v)?),
                None => Transformed::no(Expr::OuterReferenceColumn(f, c)),
            },
            Expr::Column(c) if columns && values.contains_key(&c) => {
                Transformed::yes(constant(None, &values[&c])?)
            }
            Expr::ScalarSubquery(sq) => {
                Transformed::yes(Expr::ScalarSubquery(bind_subquery(sq, values)?))
            }
            Expr::Exists(Exists { subquery, negated }) => Transformed::yes(Expr::Exists(Exists {
                subquery: bind_subquery(subquery, values)?,
                negated,
            })),
            Expr::InSubquery(InSubquery {
                expr,
                subquery,
                negated,
            }) => Transformed::yes(Expr::InSubquery(InSubquery {
                expr,
                subquery: bind_subquery(subquery, values)?,
                negated,
            })),
            other => Transformed::no(other),
        })
    })?
    .data)
}

// ---------------------------------------------------------------------------
// Execution

/// Plans [`Apply`] nodes (with DataFusion's planner for the rest).
#[derive(Debug)]
pub struct EonQueryPlanner;

#[async_trait]
impl QueryPlanner for EonQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ApplyPlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

struct ApplyPlanner;

#[async_trait]
impl ExtensionPlanner for ApplyPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(apply) = node.as_any().downcast_ref::<Apply>() else {
            return Ok(None);
        };
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("Apply needs a SessionState".into()))?;
        let outer_schema = apply.outer.schema();
        // The outer columns the subquery (or a lateral join's condition)
        // reads.
        let mut columns = outer_refs(&apply.inner);
        if let Kind::Lateral {
            condition: Some(c), ..
        } = &apply.kind
        {
            for c in c.column_refs() {
                if !columns.contains(c) {
                    columns.push(c.clone());
                }
            }
        }
        // IN's left side, evaluated over each outer batch.
        let probe = match &apply.kind {
            Kind::In { expr, .. } => Some((
                planner.create_physical_expr(expr, outer_schema, session, planning_ctx)?,
                expr.get_type(outer_schema)?,
            )),
            _ => None,
        };
        let params = columns
            .into_iter()
            .filter_map(|c| outer_schema.index_of_column(&c).ok().map(|i| (i, c)))
            .collect();
        let outer = physical_inputs
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("Apply takes one input".into()))?;
        Ok(Some(Arc::new(ApplyExec::new(
            outer,
            Arc::new(Runner {
                inner: apply.inner.clone(),
                kind: apply.kind.clone(),
                params,
                probe,
                state: state.clone(),
                schema: Arc::new(apply.schema.as_arrow().clone()),
                memo: Default::default(),
            }),
        ))))
    }
}

/// What one Apply knows to run its subquery for a row.
struct Runner {
    inner: LogicalPlan,
    kind: Kind,
    /// The outer columns the subquery refers to: index in the outer row.
    params: Vec<(usize, Column)>,
    /// IN's left side, over the outer row.
    probe: Option<(Arc<dyn PhysicalExpr>, DataType)>,
    state: SessionState,
    /// The output: the outer row's columns, then the added ones.
    schema: SchemaRef,
    /// Answers by the values of `params`.
    memo: tokio::sync::Mutex<HashMap<Vec<ScalarValue>, Answer>>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Runner").field("kind", &self.kind).finish()
    }
}

/// The subquery's answer for one binding.
#[derive(Clone)]
enum Answer {
    /// A lateral join's inner rows (columns as in the output schema).
    Rows(Vec<ArrayRef>, usize),
    Value(ScalarValue),
    /// IN's subquery: its distinct values, and whether one was NULL.
    Set(Arc<HashSet<ScalarValue>>, bool),
}

impl Runner {
    fn added_types(&self, outer_width: usize) -> Vec<DataType> {
        self.schema
            .fields()
            .iter()
            .skip(outer_width)
            .map(|f| f.data_type().clone())
            .collect()
    }

    async fn answer(
        &self,
        key: Vec<ScalarValue>,
        ctx: &Arc<TaskContext>,
        outer_width: usize,
    ) -> Result<Answer> {
        if let Some(a) = self.memo.lock().await.get(&key) {
            return Ok(a.clone());
        }
        let binding: Binding = self
            .params
            .iter()
            .map(|(_, c)| c.clone())
            .zip(key.iter().cloned())
            .collect();
        let inner = bind_plan(self.inner.clone(), &binding)?;
        let (plan, fetch) = match &self.kind {
            Kind::Lateral { condition, .. } => {
                let plan = match condition {
                    Some(c) => LogicalPlanBuilder::from(inner)
                        .filter(bind_expr(c.clone(), &binding, true)?)?
                        .build()?,
                    None => inner,
                };
                (plan, None)
            }
            Kind::Scalar => (inner, Some(2)),
            Kind::Exists { .. } => (inner, Some(1)),
            Kind::In { .. } => (inner, None),
        };
        let plan = match fetch {
            Some(n) => LogicalPlanBuilder::from(plan).limit(0, Some(n))?.build()?,
            None => plan,
        };
        let physical = self.state.create_physical_plan(&plan).await?;
        // Partition by partition, in order: a UNION ALL's branches one
        // after the other, as PostgreSQL appends them.
        let batches: Vec<RecordBatch> = collect_partitioned(physical, ctx.clone())
            .await?
            .into_iter()
            .flatten()
            .collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let column = |i: usize| -> Result<ArrayRef> {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            if parts.is_empty() {
                return Ok(new_null_array(
                    &plan.schema().field(i).data_type().clone(),
                    0,
                ));
            }
            Ok(concat(&parts)?)
        };
        let answer = match &self.kind {
            Kind::Lateral { .. } => {
                let types = self.added_types(outer_width);
                let columns = types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let c = column(i)?;
                        Ok(if c.data_type() == t { c } else { cast(&c, t)? })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Answer::Rows(columns, rows)
            }
            Kind::Scalar => {
                if rows > 1 {
                    return Err(DataFusionError::External(Box::new(
                        eon_common::Error::user(
                            eon_common::error::sqlstate::CARDINALITY_VIOLATION,
                            "more than one row returned by a subquery used as an expression",
                        ),
                    )));
                }
                let t = &self.added_types(outer_width)[0];
                let v = if rows == 0 {
                    ScalarValue::try_from(t)?
                } else {
                    ScalarValue::try_from_array(&column(0)?, 0)?
                };
                Answer::Value(if &v.data_type() == t {
                    v
                } else {
                    v.cast_to(t)?
                })
            }
            Kind::Exists { negated } => {
                Answer::Value(ScalarValue::Boolean(Some((rows > 0) != *negated)))
            }
            Kind::In { .. } => {
                let values = column(0)?;
                let values = match &self.probe {
                    Some((_, t)) if values.data_type() != t => cast(&values, t)?,
                    _ => values,
                };
                let mut set = HashSet::with_capacity(values.len());
                for i in 0..values.len() {
                    set.insert(ScalarValue::try_from_array(&values, i)?);
                }
                let null = set.iter().any(|v| v.is_null());
                set.retain(|v| !v.is_null());
                Answer::Set(Arc::new(set), null)
            }
        };
        self.memo.lock().await.insert(key, answer.clone());
        Ok(answer)
    }

    /// One outer batch, applied.
    async fn apply(&self, batch: RecordBatch, ctx: &Arc<TaskContext>) -> Result<RecordBatch> {
        let width = batch.num_columns();
        let keys = (0..batch.num_rows())
            .map(|row| {
                self.params
                    .iter()
                    .map(|(i, _)| ScalarValue::try_from_array(batch.column(*i), row))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        // The batch's distinct values not answered yet are asked
        // CONCURRENT_ANSWERS at a time: each answer is a round of planning
        // and of requests to data engines, mostly spent waiting.
        let todo: Vec<Vec<ScalarValue>> = {
            let memo = self.memo.lock().await;
            let mut seen = HashSet::new();
            keys.iter()
                .filter(|k| !memo.contains_key(*k) && seen.insert(*k))
                .cloned()
                .collect()
        };
        futures::stream::iter(todo)
            .map(|key| self.answer(key, ctx, width))
            .buffer_unordered(CONCURRENT_ANSWERS)
            .try_collect::<Vec<_>>()
            .await?;
        let answers: Vec<Answer> = {
            let memo = self.memo.lock().await;
            keys.iter()
                .map(|k| memo.get(k).cloned().expect("every value was answered"))
                .collect()
        };
        let types = self.added_types(width);
        let mut columns: Vec<ArrayRef>;
        match &self.kind {
            Kind::Lateral { left, .. } => {
                let mut indices: Vec<u32> = vec![];
                let mut parts: Vec<Vec<ArrayRef>> = vec![vec![]; types.len()];
                for (row, answer) in answers.iter().enumerate() {
                    let Answer::Rows(cols, n) = answer else {
                        unreachable!("a lateral apply answers rows")
                    };
                    let n = if *n == 0 && *left {
                        for (i, t) in types.iter().enumerate() {
                            parts[i].push(new_null_array(t, 1));
                        }
                        1
                    } else {
                        for (i, c) in cols.iter().enumerate() {
                            parts[i].push(c.clone());
                        }
                        *n
                    };
                    indices.extend(std::iter::repeat_n(row as u32, n));
                }
                let indices = UInt32Array::from(indices);
                columns = batch
                    .columns()
                    .iter()
                    .map(|c| Ok(take(c, &indices, None)?))
                    .collect::<Result<Vec<_>>>()?;
                for (i, t) in types.iter().enumerate() {
                    let refs: Vec<&dyn Array> = parts[i].iter().map(|a| a.as_ref()).collect();
                    columns.push(if refs.is_empty() {
                        new_null_array(t, 0)
                    } else {
                        concat(&refs)?
                    });
                }
            }
            Kind::In { negated, .. } => {
                let (probe, _) = self.probe.as_ref().expect("IN has a probe");
                let probe = probe.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mut values = Vec::with_capacity(batch.num_rows());
                for (row, answer) in answers.iter().enumerate() {
                    let Answer::Set(set, null) = answer else {
                        unreachable!("IN answers sets")
                    };
                    let v = ScalarValue::try_from_array(&probe, row)?;
                    // PostgreSQL's IN: true on a match; else NULL if the
                    // value or one of the subquery's is NULL; else false
                    // (also for NULL against no rows at all).
                    let found = if set.is_empty() && !null {
                        Some(false)
                    } else if v.is_null() {
                        None
                    } else if set.contains(&v) {
                        Some(true)
                    } else if *null {
                        None
                    } else {
                        Some(false)
                    };
                    values.push(ScalarValue::Boolean(found.map(|f| f != *negated)));
                }
                columns = batch.columns().to_vec();
                columns.push(to_array(values, &DataType::Boolean)?);
            }
            _ => {
                columns = batch.columns().to_vec();
                let values = answers
                    .into_iter()
                    .map(|a| match a {
                        Answer::Value(v) => v,
                        _ => unreachable!("a value apply answers values"),
                    })
                    .collect();
                columns.push(to_array(values, &types[0])?);
            }
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// An array of `values` (of type `t`, also when there are none).
fn to_array(values: Vec<ScalarValue>, t: &DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(new_null_array(t, 0));
    }
    ScalarValue::iter_to_array(values)
}

/// Executes an [`Apply`]: each outer batch in turn, each row's subquery
/// answered from the memo or by running it.
#[derive(Debug)]
pub struct ApplyExec {
    outer: Arc<dyn ExecutionPlan>,
    runner: Arc<Runner>,
    props: Arc<PlanProperties>,
}

impl ApplyExec {
    fn new(outer: Arc<dyn ExecutionPlan>, runner: Arc<Runner>) -> ApplyExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(runner.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ApplyExec {
            outer,
            runner,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for ApplyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let what = match &self.runner.kind {
            Kind::Lateral { left: true, .. } => "left lateral join",
            Kind::Lateral { .. } => "lateral join",
            Kind::Scalar => "scalar subquery",
            Kind::Exists { .. } => "exists",
            Kind::In { .. } => "in",
        };
        write!(f, "ApplyExec: {what}, re-planned per distinct outer value")
    }
}

impl ExecutionPlan for ApplyExec {
    fn name(&self) -> &str {
        "ApplyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.outer]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    // One partition in, in its order: the outer rows come out in the order
    // they are read (a table without a key: insertion order), each with
    // its subquery's rows — PostgreSQL's nested loop order.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let outer = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("ApplyExec takes one input".into()))?;
        Ok(Arc::new(ApplyExec::new(outer, self.runner.clone())))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.outer.execute(partition, ctx.clone())?;
        let runner = self.runner.clone();
        let rows = input.and_then(move |batch| {
            let runner = runner.clone();
            let ctx = ctx.clone();
            async move { runner.apply(batch, &ctx).await }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.runner.schema.clone(),
            rows.boxed(),
        )))
    }
}

// ---------------------------------------------------------------------------
// Functions in FROM

/// A function in FROM whose arguments name columns of the tables before it
/// is lateral in PostgreSQL (`FROM t, generate_series(1, t.n) g`,
/// `JOIN unnest(v.arr) AS u(x) ON …`); DataFusion's table functions take
/// constants only. Such a call becomes `LATERAL (SELECT f(args) AS col) AS
/// alias`: a set-returning function in a select list gives a row per value,
/// and the [`ApplyRule`] runs the subquery per outer row. The column is
/// named as PostgreSQL names a function's single column: the alias's column
/// name, else the alias, else the function's name. Calls WITH ORDINALITY and
/// calls of constants are left to DataFusion.
pub fn lateral_functions(statements: &mut [Statement]) {
    struct Functions;
    impl VisitorMut for Functions {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let Some(derived) = lateral_call(factor) {
                *factor = derived;
            }
            ControlFlow::Continue(())
        }
    }
    for statement in statements.iter_mut() {
        let _ = statement.visit(&mut Functions);
    }
}

fn lateral_call(factor: &TableFactor) -> Option<TableFactor> {
    // The call as written, and the function's own name (unqualified).
    let last = |name: &ObjectName| Some(name.0.last()?.as_ident()?.clone());
    let (call, function, alias) = match factor {
        TableFactor::Table {
            name,
            alias,
            args: Some(args),
            with_ordinality: false,
            ..
        } if names_columns(&args.args) => {
            (format!("{name}({})", list(&args.args)), last(name)?, alias)
        }
        TableFactor::Function {
            name,
            args,
            with_ordinality: false,
            alias,
            ..
        } if names_columns(args) => (format!("{name}({})", list(args)), last(name)?, alias),
        TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 && names_columns_in(array_exprs) => (
            format!("unnest({})", array_exprs[0]),
            Ident::new("unnest"),
            alias,
        ),
        _ => return None,
    };
    let (name, column) = match alias {
        Some(a) => (
            a.name.clone(),
            a.columns
                .first()
                .map_or_else(|| a.name.clone(), |c| c.name.clone()),
        ),
        None => (function.clone(), function),
    };
    let sql = format!("SELECT {call} AS {column}");
    let query = match Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?.pop()? {
        Statement::Query(q) => q,
        _ => return None,
    };
    Some(TableFactor::Derived {
        lateral: true,
        subquery: query,
        alias: Some(TableAlias {
            explicit: true,
            name,
            columns: vec![],
            at: None,
        }),
        sample: None,
    })
}

fn list(args: &[FunctionArg]) -> String {
    args.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a column is named among the arguments.
fn names_columns(args: &[FunctionArg]) -> bool {
    args.iter().any(|a| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
        | FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => names_column(e),
        _ => false,
    })
}

fn names_columns_in(exprs: &[SqlExpr]) -> bool {
    exprs.iter().any(names_column)
}

fn names_column(e: &SqlExpr) -> bool {
    visit_expressions(e, |x| match x {
        SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}
