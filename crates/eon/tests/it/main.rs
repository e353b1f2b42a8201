//! eon's integration tests: real `eon` processes (started by
//! `eon_testkit::TestCluster`) on real sockets, driven by real clients.
//! One test binary, one module per area.

mod auth;
mod bank;
mod clients;
mod cluster;
mod conformance;
mod ddl;
mod distributed;
mod durability;
mod frontends;
mod history;
mod indexes;
mod load;
mod pg;
mod psql;
mod pushdown;
mod regress;
mod rest;
mod slt;
mod tls;
mod tpch;
mod txn;

/// The SQLSTATE of a failed statement (or why there is none).
fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Run `sql`, which must fail with `sqlstate`; the error.
async fn refused(c: &tokio_postgres::Client, sql: &str, sqlstate: &str) -> tokio_postgres::Error {
    let e = c.batch_execute(sql).await.expect_err(sql);
    assert_eq!(code(&e), sqlstate, "{sql}: {e:?}");
    e
}

/// `COPY … FROM STDIN` (`sql`) of `data`, sent as one CopyData message:
/// the rows copied, or the error.
async fn copy_in(
    c: &tokio_postgres::Client,
    sql: &str,
    data: &'static [u8],
) -> Result<u64, tokio_postgres::Error> {
    use futures::SinkExt;
    let sink = c.copy_in::<_, bytes::Bytes>(sql).await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(data)).await?;
    sink.finish().await
}

/// Every row of `sql`'s result as text (None: NULL), by the simple
/// protocol.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The first column of every row `sql` returns, as text.
async fn texts(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect()
}
