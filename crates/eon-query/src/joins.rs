//! The columns of a `USING` join as PostgreSQL merges them.
//!
//! In PostgreSQL `a JOIN b USING (x)` has one column `x`, listed first by
//! `SELECT *` (then `a`'s other columns, then `b`'s), and in a FULL join
//! it is `COALESCE(a.x, b.x)` — the key of a row that only `b` has is
//! `b.x`, not NULL; in a RIGHT join it is `b.x`. DataFusion keeps `a`'s
//! column where `a` has it, listed where `a` lists it, and a bare `x` is
//! ambiguous to it (`a.x` or `b.x`?) — in a subquery it then takes the
//! outer query's `x`, if there is one. So before planning, in a SELECT
//! over one USING join of two named relations (tables, or subqueries with
//! an alias), [`merge_using_columns`] writes what PostgreSQL means: `*`
//! becomes the merged columns followed by `a.* EXCLUDE (x), b.* EXCLUDE
//! (x)`, and a bare `x` in the select list becomes the merged value named
//! `x` (`a.x` in an inner or LEFT join, `b.x` in a RIGHT one,
//! `COALESCE(a.x, b.x)` in a FULL one), as does a bare `x` in WHERE
//! (outside its subqueries). (NATURAL joins, whose columns are
//! known only from the catalog, and chains of several USING joins are
//! left as DataFusion reads them.)

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    ExcludeSelectItem, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, JoinConstraint, JoinOperator, ObjectName, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
    WildcardAdditionalOptions,
};

/// Which side's column a merged USING column is.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Left,
    Right,
    Both,
}

/// Rewrite the SELECTs over a USING join in the queries among
/// `statements` (see the module docs).
pub fn merge_using_columns(statements: &mut [Statement]) {
    struct Selects;
    impl VisitorMut for Selects {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                rewrite(select);
            }
            ControlFlow::Continue(())
        }
    }
    // Queries only: a view or COPY keeps its query as text, which
    // PostgreSQL's dialect could not read back with `EXCLUDE`.
    for s in statements {
        if let Statement::Query(_) = s {
            let _ = s.visit(&mut Selects);
        }
    }
}

/// The name a relation's columns are qualified with.
fn relation_name(t: &TableFactor) -> Option<Ident> {
    match t {
        TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => {
            Some(a.name.clone())
        }
        TableFactor::Table {
            name, alias: None, ..
        } => name.0.last().and_then(|p| p.as_ident()).cloned(),
        _ => None,
    }
}

fn rewrite(select: &mut Select) {
    let [from] = select.from.as_slice() else {
        return;
    };
    let [join] = from.joins.as_slice() else {
        return;
    };
    let (columns, side) = match &join.join_operator {
        JoinOperator::Right(JoinConstraint::Using(c))
        | JoinOperator::RightOuter(JoinConstraint::Using(c)) => (c, Side::Right),
        JoinOperator::FullOuter(JoinConstraint::Using(c)) => (c, Side::Both),
        JoinOperator::Join(JoinConstraint::Using(c))
        | JoinOperator::Inner(JoinConstraint::Using(c))
        | JoinOperator::Left(JoinConstraint::Using(c))
        | JoinOperator::LeftOuter(JoinConstraint::Using(c)) => (c, Side::Left),
        _ => return,
    };
    let (Some(left), Some(right)) = (relation_name(&from.relation), relation_name(&join.relation))
    else {
        return;
    };
    let columns: Vec<Ident> = columns
        .iter()
        .filter_map(|c| c.0.last().and_then(|p| p.as_ident()).cloned())
        .collect();
    let merged = |c: &Ident| -> Expr {
        let of = |t: &Ident| Expr::CompoundIdentifier(vec![t.clone(), c.clone()]);
        match side {
            Side::Left => of(&left),
            Side::Right => of(&right),
            Side::Both => Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new("coalesce")]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(of(&left))),
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(of(&right))),
                    ],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            }),
        }
    };
    let is_using = |i: &Ident| {
        columns
            .iter()
            .any(|c| c.value.eq_ignore_ascii_case(&i.value))
    };
    let mut items = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(options) if is_plain(&options) => {
                for c in &columns {
                    items.push(SelectItem::ExprWithAlias {
                        expr: merged(c),
                        alias: c.clone(),
                    });
                }
                for t in [&left, &right] {
                    items.push(SelectItem::QualifiedWildcard(
                        SelectItemQualifiedWildcardKind::ObjectName(ObjectName::from(vec![
                            t.clone(),
                        ])),
                        WildcardAdditionalOptions {
                            opt_exclude: Some(ExcludeSelectItem::Multiple(
                                columns
                                    .iter()
                                    .map(|c| ObjectName::from(vec![c.clone()]))
                                    .collect(),
                            )),
                            ..options.clone()
                        },
                    ));
                }
            }
            SelectItem::UnnamedExpr(Expr::Identifier(i)) if is_using(&i) => {
                items.push(SelectItem::ExprWithAlias {
                    expr: merged(&i),
                    alias: i,
                });
            }
            item => items.push(item),
        }
    }
    select.projection = items;
    // A bare USING column in WHERE is the merged one too; not inside a
    // subquery, whose own relations may have a column of that name.
    struct Bare<'a, F> {
        depth: usize,
        is_using: &'a dyn Fn(&Ident) -> bool,
        merged: F,
    }
    impl<F: Fn(&Ident) -> Expr> VisitorMut for Bare<'_, F> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::Identifier(i) = e
                && self.depth == 0
                && (self.is_using)(i)
            {
                *e = (self.merged)(i);
            }
            ControlFlow::Continue(())
        }
    }
    if let Some(selection) = &mut select.selection {
        let _ = selection.visit(&mut Bare {
            depth: 0,
            is_using: &is_using,
            merged,
        });
    }
}

/// `*` without EXCLUDE, EXCEPT, REPLACE, … of its own.
fn is_plain(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}
