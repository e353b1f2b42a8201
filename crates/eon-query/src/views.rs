//! Views: `CREATE [OR REPLACE] VIEW`, `DROP VIEW`, and reading them.
//!
//! A view is a stored SELECT (`pb::View`, kept by meta as SQL text in the
//! namespace of tables, indexes and sequences). Reading one is expanding
//! it: before a statement is planned, [`expand`] replaces every reference
//! to a view in its FROM clauses by the view's query as a derived table
//! under the view's name (and column names) — so DataFusion plans it with
//! the rest of the statement, pushing filters and projections through it
//! into the scans like any subquery:
//!
//! ```text
//!  SELECT * FROM big WHERE x > 5        big = CREATE VIEW big AS SELECT x FROM t1 WHERE x > 0
//!  ──►  SELECT * FROM (SELECT x FROM t1 WHERE x > 0) AS big WHERE x > 5
//! ```
//!
//! The same pass completes column aliases that name only a relation's
//! first columns (`FROM tenk1 AS a(x)`), which PostgreSQL allows: the rest
//! keep the table's or view's own names.
//!
//! A view is read with the privileges of whoever reads it (PostgreSQL
//! checks the view owner's): the tables under it need their SELECT grant.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    CreateView, ObjectName, Query, Statement, TableAlias, TableAliasColumnDef, TableFactor,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use eon_common::error::sqlstate;
use eon_common::{Error, Result};
use eon_proto::v1 as pb;

use crate::dml::ident;
use crate::provider::StatementContext;
use crate::session::{Output, Session};

/// Views may name views; this many expansions means a cycle.
const MAX_EXPANSIONS: usize = 256;

/// Replace every view `statement` reads by its query (see the module doc).
pub fn expand(session: &Session, statement: &mut Statement) -> Result<()> {
    let views = session.cluster().views();
    // Names a WITH clause gives shadow views of the same name.
    struct CteNames(HashSet<String>);
    impl VisitorMut for CteNames {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                self.0
                    .extend(with.cte_tables.iter().map(|c| ident(&c.alias.name)));
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = CteNames(HashSet::new());
    let _ = statement.visit(&mut ctes);

    struct Expander<'a> {
        session: &'a Session,
        views: Vec<pb::View>,
        ctes: HashSet<String>,
        done: usize,
        error: Option<Error>,
    }
    impl VisitorMut for Expander<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = t
            else {
                return ControlFlow::Continue(());
            };
            // (A temporary table shadows a view of the same name.)
            let Ok((schema, view_name)) = self.session.relation(name) else {
                return ControlFlow::Continue(());
            };
            if name.0.len() == 1 && self.ctes.contains(&view_name) {
                return ControlFlow::Continue(());
            }
            let Some(view) = self
                .views
                .iter()
                .find(|v| v.schema == schema && v.name == view_name)
            else {
                // A table: its alias may name only its first columns.
                if let Some(alias) = alias
                    && let Some(table) = self.session.cluster().table(&schema, &view_name)
                {
                    let names = table.visible_schema().fields().iter().map(|f| f.name());
                    complete(alias, names);
                }
                return ControlFlow::Continue(());
            };
            self.done += 1;
            if self.done > MAX_EXPANSIONS {
                self.error = Some(Error::user(
                    sqlstate::INVALID_OBJECT_DEFINITION,
                    format!("infinite recursion detected in view \"{view_name}\""),
                ));
                return ControlFlow::Break(());
            }
            let query = match parse(&view.query) {
                Ok(q) => q,
                Err(e) => {
                    self.error = Some(e);
                    return ControlFlow::Break(());
                }
            };
            let mut alias = alias.clone().unwrap_or(TableAlias {
                explicit: true,
                name: datafusion::sql::sqlparser::ast::Ident::with_quote('"', &view.name),
                columns: vec![],
                at: None,
            });
            complete(&mut alias, view.columns.iter());
            *t = TableFactor::Derived {
                lateral: false,
                subquery: Box::new(query),
                alias: Some(alias),
                sample: None,
            };
            ControlFlow::Continue(())
        }
    }
    let mut expander = Expander {
        session,
        views,
        ctes: ctes.0,
        done: 0,
        error: None,
    };
    let _ = statement.visit(&mut expander);
    match expander.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Give `alias` a name for each of the relation's columns `names`: its
/// own for the first ones, the relation's for the rest. (PostgreSQL lets an
/// alias rename only the first columns, `FROM t AS f(a)`; DataFusion wants
/// all or none.) An alias naming more columns than there are is left for
/// the planner to refuse.
fn complete<'a>(alias: &mut TableAlias, names: impl Iterator<Item = &'a String>) {
    let more: Vec<TableAliasColumnDef> = names
        .skip(alias.columns.len())
        .map(|c| TableAliasColumnDef {
            name: datafusion::sql::sqlparser::ast::Ident::with_quote('"', c),
            data_type: None,
        })
        .collect();
    alias.columns.extend(more);
}

/// A stored view query parsed again.
pub(crate) fn parse(sql: &str) -> Result<Query> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map(|q| *q)
        .map_err(|e| Error::internal(format!("stored view query does not parse: {e}")))
}

/// CREATE [OR REPLACE] VIEW name [(columns)] AS query.
pub async fn create_view(session: &Session, cv: &CreateView) -> Result<Output> {
    if cv.materialized {
        return Err(Error::unsupported(
            "materialized views are not supported yet",
        ));
    }
    let (schema, name) = session.new_relation(&cv.name, cv.temporary)?;
    let cluster = session.cluster();
    let ts = cluster.timestamp().await?;
    if cv.if_not_exists && cluster.view(&schema, &name).is_some() {
        return Ok(Output::Command("CREATE VIEW".into()));
    }
    // Planned now, so a view that cannot run is refused now (42P01, 42703…).
    let state = session.statement_state(Arc::new(StatementContext {
        read_ts: ts,
        ..Default::default()
    }));
    let plan = session
        .plan_query(&state, Statement::Query(cv.query.clone()))
        .await?;
    let columns: Vec<String> = cv.columns.iter().map(|c| ident(&c.name)).collect();
    if columns.len() > plan.schema().fields().len() {
        return Err(Error::user(
            sqlstate::SYNTAX_ERROR,
            "CREATE VIEW specifies more column names than columns",
        ));
    }
    if cv.or_replace
        && let Some(old) = cluster.view(&schema, &name)
        && old.owner != session.user()
        && !session.actor().superuser
    {
        return Err(not_owner(&name));
    }
    cluster
        .meta()
        .create_view(pb::CreateViewRequest {
            view: Some(pb::View {
                id: 0,
                schema,
                name,
                query: cv.query.to_string(),
                columns,
                owner: session.user(),
            }),
            or_replace: cv.or_replace,
        })
        .await
        .map_err(Error::from_status)?;
    cluster.refresh_catalog().await?;
    Ok(Output::Command("CREATE VIEW".into()))
}

/// DROP VIEW [IF EXISTS] names.
pub async fn drop_views(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let cluster = session.cluster();
    cluster.timestamp().await?;
    for n in names {
        let (schema, name) = session.relation(n)?;
        if let Some(view) = cluster.view(&schema, &name)
            && view.owner != session.user()
            && !session.actor().superuser
        {
            return Err(not_owner(&name));
        }
        cluster
            .meta()
            .drop_view(pb::DropViewRequest {
                schema,
                name,
                if_exists,
            })
            .await
            .map_err(Error::from_status)?;
    }
    cluster.refresh_catalog().await?;
    Ok(Output::Command("DROP VIEW".into()))
}

fn not_owner(name: &str) -> Error {
    Error::user(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("must be owner of view {name}"),
    )
}
