use anyhow::{Context, ensure};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use eon_common::node::Channel;
use eon_common::{ipc, node};
use eon_proto::v1 as pb;
use eon_proto::v1::query_engine_client::QueryEngineClient;

use crate::{Report, sqlstate};

/// Run SQL; the batches and the command tag.
async fn exec(
    c: &mut QueryEngineClient<Channel>,
    sql: &str,
    params: &[Option<&str>],
) -> Result<(Vec<RecordBatch>, String), tonic::Status> {
    let params = params
        .iter()
        .map(|p| pb::Param {
            text: p.map(str::to_string),
        })
        .collect();
    let mut stream = c
        .execute(pb::ExecuteRequest {
            sql: sql.into(),
            params,
        })
        .await?
        .into_inner();
    let (mut batches, mut tag) = (vec![], String::new());
    while let Some(msg) = stream.message().await? {
        match msg.kind {
            Some(pb::execute_response::Kind::ArrowIpc(b)) => batches.extend(
                ipc::decode(&b)
                    .map_err(|e| tonic::Status::internal(e.to_string()))?
                    .1,
            ),
            Some(pb::execute_response::Kind::CommandTag(t)) => tag = t,
            None => {}
        }
    }
    Ok((batches, tag))
}

/// The QueryEngine contract: SQL in, Arrow IPC and command tags out, errors
/// with SQLSTATEs. Creates and drops its own table.
pub async fn query_engine(addr: &str, secret: Option<&str>) -> anyhow::Result<Report> {
    let mut r = Report::new("query-engine");
    let mut c = QueryEngineClient::new(node::channel_with(addr, secret)?);
    let table = format!("conformance_qe_{}", eon_common::unix_us());

    let (_, tag) = exec(
        &mut c,
        &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, name text)"),
        &[],
    )
    .await
    .context("CREATE TABLE")?;
    ensure!(
        tag == "CREATE TABLE",
        "DDL answers with its command tag (got {tag:?})"
    );
    r.pass("DDL returns its command tag");

    let (_, tag) = exec(
        &mut c,
        &format!("INSERT INTO {table} VALUES (1, 'a'), (2, 'b'), (3, NULL)"),
        &[],
    )
    .await?;
    ensure!(
        tag == "INSERT 0 3",
        "INSERT reports the rows written (got {tag:?})"
    );
    r.pass("INSERT returns INSERT 0 <rows>");

    let (batches, tag) = exec(
        &mut c,
        &format!("SELECT id, name FROM {table} WHERE id >= $1 ORDER BY id"),
        &[Some("2")],
    )
    .await?;
    ensure!(
        tag == "SELECT 2",
        "SELECT reports its row count (got {tag:?})"
    );
    let schema = batches
        .first()
        .context("the first message describes the columns")?
        .schema();
    ensure!(
        schema.field(0).name() == "id" && schema.field(1).name() == "name",
        "columns are named"
    );
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ensure!(
        ids == vec![2, 3],
        "parameters bind and rows come back as Arrow"
    );
    r.pass("SELECT with parameters returns Arrow batches");

    let (batches, _) = exec(&mut c, &format!("SELECT count(*) FROM {table}"), &[]).await?;
    ensure!(
        batches.first().map(|b| b.schema().fields().len()) == Some(1),
        "zero-row queries still describe their columns"
    );
    r.pass("results always carry their schema");

    let missing = exec(&mut c, "SELECT * FROM conformance_no_such_table", &[]).await;
    ensure!(
        missing.as_ref().err().map(sqlstate).as_deref() == Some("42P01"),
        "a missing table fails with 42P01"
    );
    let syntax = exec(&mut c, "SELEC 1", &[]).await;
    ensure!(
        syntax.as_ref().err().map(sqlstate).as_deref() == Some("42601"),
        "bad syntax fails with 42601"
    );
    let dup = exec(
        &mut c,
        &format!("INSERT INTO {table} VALUES (1, 'again')"),
        &[],
    )
    .await;
    ensure!(
        dup.as_ref().err().map(sqlstate).as_deref() == Some("23505"),
        "a duplicate key fails with 23505"
    );
    r.pass("errors carry PostgreSQL SQLSTATEs");

    let (_, tag) = exec(&mut c, &format!("DROP TABLE {table}"), &[]).await?;
    ensure!(tag == "DROP TABLE", "DROP TABLE answers with its tag");
    r.pass("DROP TABLE");

    let s = c.stats(pb::StatsRequest {}).await?.into_inner();
    ensure!(
        s.component == "query-engine" && s.requests_total > 0,
        "Stats counts requests"
    );
    r.pass("Stats has the common shape");
    Ok(r)
}
