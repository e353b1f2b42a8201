use std::sync::Arc;

use anyhow::{Context, ensure};
use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use datafusion::prelude::{col, lit};
use datafusion_proto::bytes::Serializeable;
use eon_common::key::{encode_batch_keys, shard_of};
use eon_common::node::Channel;
use eon_common::schema::ColumnDef;
use eon_common::{SqlType, TableDef, ipc, node};
use eon_proto::v1 as pb;
use eon_proto::v1::data_engine_client::DataEngineClient;

use crate::{Report, sqlstate};

const SHARDS: u32 = 4;

/// A table of (k bigint primary key, v text) held entirely by `engine`.
fn table(engine: u64) -> TableDef {
    let cols = vec![
        ColumnDef {
            name: "k".into(),
            ty: SqlType::Int8,
            nullable: false,
            default_sql: None,
            hidden: false,
        },
        ColumnDef {
            name: "v".into(),
            ty: SqlType::Text,
            nullable: true,
            default_sql: None,
            hidden: false,
        },
    ];
    let mut t = TableDef::new_proto("public", "conformance", cols, vec![0], SHARDS);
    t.id = (1 << 40) + eon_common::unix_us() % (1 << 30);
    t.placement = vec![engine; SHARDS as usize];
    TableDef::from_proto(t).expect("valid table")
}

fn rows(t: &TableDef, keys: &[i64], value: &str) -> RecordBatch {
    let v: Vec<String> = keys.iter().map(|k| format!("{value}{k}")).collect();
    RecordBatch::try_new(
        t.arrow_schema().clone(),
        vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(StringArray::from(v)),
        ],
    )
    .unwrap()
}

/// Write ops for `batch` (whole rows, or key columns for DELETE), split by shard.
fn ops(t: &TableDef, kind: pb::WriteKind, batch: &RecordBatch) -> Vec<pb::WriteOp> {
    let keys = encode_batch_keys(&batch.project(&[0]).unwrap()).unwrap();
    (0..SHARDS)
        .filter_map(|s| {
            let idx: Vec<u32> = (0..keys.len())
                .filter(|&i| shard_of(&keys[i], SHARDS) == s)
                .map(|i| i as u32)
                .collect();
            if idx.is_empty() {
                return None;
            }
            let part =
                arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(idx))
                    .unwrap();
            Some(pb::WriteOp {
                table: Some(t.proto().clone()),
                shard: s,
                kind: kind as i32,
                rows: ipc::encode_batch(&part).unwrap().into(),
            })
        })
        .collect()
}

async fn scan(
    c: &mut DataEngineClient<Channel>,
    req: pb::ScanRequest,
) -> anyhow::Result<(Vec<RecordBatch>, u64, u64)> {
    let mut stream = c.scan(req).await?.into_inner();
    let (mut batches, mut scanned, mut returned) = (vec![], 0, 0);
    while let Some(msg) = stream.message().await? {
        if !msg.arrow_ipc.is_empty() {
            batches.extend(ipc::decode(&msg.arrow_ipc)?.1);
        }
        scanned += msg.rows_scanned;
        returned += msg.rows_returned;
    }
    Ok((batches, scanned, returned))
}

fn keys_of(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    out.sort();
    out
}

fn scan_req(t: &TableDef, ts: u64) -> pb::ScanRequest {
    pb::ScanRequest {
        table: Some(t.proto().clone()),
        shards: (0..SHARDS).collect(),
        read_ts: ts,
        ..Default::default()
    }
}

/// The DataEngine contract, on a scratch table the suite places entirely on
/// the engine under test (it drops the table at the end).
pub async fn data_engine(addr: &str, secret: Option<&str>) -> anyhow::Result<Report> {
    let mut r = Report::new("data-engine");
    let mut c = DataEngineClient::new(node::channel_with(addr, secret)?);
    let engine = c
        .stats(pb::StatsRequest {})
        .await
        .context("Stats")?
        .into_inner()
        .node_id;
    let t = table(engine);
    let now = eon_common::unix_us();
    // Transaction ids of this run (records outlive a run).
    let base = now << 8;

    // One-phase insert, then scans at snapshots before and after it.
    let w = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 11,
            read_ts: now,
            one_phase: true,
            ops: ops(&t, pb::WriteKind::Insert, &rows(&t, &[1, 2, 3, 4, 5], "v")),
        })
        .await
        .context("Write")?
        .into_inner();
    let t1 = w.commit_ts;
    ensure!(
        t1 >= now,
        "a one-phase write commits at or above its read timestamp"
    );
    ensure!(
        w.results.iter().map(|x| x.rows_affected).sum::<u64>() == 5,
        "rows_affected counts the rows"
    );
    let (before, _, _) = scan(&mut c, scan_req(&t, t1 - 1)).await?;
    let (after, scanned, returned) = scan(&mut c, scan_req(&t, t1)).await?;
    ensure!(
        keys_of(&before).is_empty(),
        "a snapshot before the commit sees nothing"
    );
    ensure!(
        keys_of(&after) == vec![1, 2, 3, 4, 5],
        "a snapshot at the commit sees every row"
    );
    ensure!(
        scanned >= 5 && returned == 5,
        "the last message reports rows scanned and returned"
    );
    r.pass("one-phase writes are visible exactly from their commit timestamp");

    // Projection, filter, limit, point lookups.
    let mut req = scan_req(&t, t1);
    req.projection = Some(pb::Projection { columns: vec![1] });
    let (proj, _, _) = scan(&mut c, req).await?;
    ensure!(
        proj.iter()
            .all(|b| b.num_columns() == 1 && b.schema().field(0).name() == "v"),
        "only projected columns come back"
    );
    r.pass("projection returns only the requested columns");

    let mut req = scan_req(&t, t1);
    req.filter = col("k").gt(lit(3i64)).to_bytes()?;
    let (filtered, scanned, returned) = scan(&mut c, req).await?;
    ensure!(
        keys_of(&filtered) == vec![4, 5],
        "the filter is applied by the engine"
    );
    ensure!(
        scanned == 5 && returned == 2,
        "filtered rows are scanned but not returned"
    );
    r.pass("filters run on the data engine");

    let mut req = scan_req(&t, t1);
    req.limit = 2;
    let (limited, _, _) = scan(&mut c, req).await?;
    ensure!(
        limited.iter().map(|b| b.num_rows()).sum::<usize>() == 2,
        "limit caps the rows returned"
    );
    r.pass("limit stops the scan early");

    let key_batch = RecordBatch::try_new(
        t.key_schema(),
        vec![Arc::new(Int64Array::from(vec![2, 4, 99]))],
    )?;
    let mut req = scan_req(&t, t1);
    req.keys = ipc::encode_batch(&key_batch)?.into();
    let (points, scanned, _) = scan(&mut c, req).await?;
    ensure!(
        keys_of(&points) == vec![2, 4],
        "point lookups return the keys that exist"
    );
    ensure!(scanned <= 3, "point lookups read only the requested keys");
    r.pass("point lookups read only the given keys");

    // Constraint and conflict errors leave nothing behind.
    let dup = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 12,
            read_ts: t1,
            one_phase: true,
            ops: ops(&t, pb::WriteKind::Insert, &rows(&t, &[6, 1], "dup")),
        })
        .await;
    ensure!(
        dup.as_ref().err().map(sqlstate).as_deref() == Some("23505"),
        "a duplicate key fails with 23505"
    );
    let (still, _, _) = scan(&mut c, scan_req(&t, eon_common::unix_us())).await?;
    ensure!(
        keys_of(&still) == vec![1, 2, 3, 4, 5],
        "a failed write writes nothing (not even key 6)"
    );
    r.pass("duplicate keys fail with 23505 and write nothing");

    let ignore = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 13,
            read_ts: t1,
            one_phase: true,
            ops: ops(&t, pb::WriteKind::InsertIgnore, &rows(&t, &[1, 6], "new")),
        })
        .await?
        .into_inner();
    ensure!(
        ignore.results.iter().map(|x| x.rows_affected).sum::<u64>() == 1,
        "INSERT_IGNORE inserts only new keys"
    );
    ensure!(
        ignore
            .results
            .iter()
            .map(|x| x.skipped.len())
            .sum::<usize>()
            == 1,
        "INSERT_IGNORE reports the skipped row"
    );
    let t2 = ignore.commit_ts;
    r.pass("INSERT_IGNORE skips existing keys and reports them");

    let stale = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 14,
            read_ts: t1 - 1,
            one_phase: true,
            ops: ops(&t, pb::WriteKind::Put, &rows(&t, &[1], "stale")),
        })
        .await;
    ensure!(
        stale.as_ref().err().map(sqlstate).as_deref() == Some("40001"),
        "a write based on a stale snapshot fails with 40001"
    );
    r.pass("first committer wins: stale updates fail with 40001");

    // Two-phase: staged writes are invisible until committed; aborts vanish.
    let staged = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 15,
            read_ts: t2 + 1000,
            one_phase: false,
            ops: ops(&t, pb::WriteKind::Put, &rows(&t, &[2], "two-phase")),
        })
        .await?
        .into_inner();
    ensure!(
        staged.min_commit_ts >= t2 + 1000,
        "a staged write commits no lower than its read timestamp"
    );
    let (early, _, _) = scan(&mut c, scan_req(&t, staged.min_commit_ts - 1)).await?;
    ensure!(
        keys_of(&early).len() == 6,
        "snapshots below the minimum commit timestamp do not wait"
    );
    let commit_ts = staged.min_commit_ts + 10;
    c.commit(pb::CommitRequest {
        txn_id: base + 15,
        commit_ts,
        epoch: 0,
    })
    .await
    .context("Commit")?;
    c.commit(pb::CommitRequest {
        txn_id: base + 15,
        commit_ts,
        epoch: 0,
    })
    .await
    .context("a repeated Commit is harmless")?;
    let mut req = scan_req(&t, commit_ts);
    req.keys = ipc::encode_batch(&RecordBatch::try_new(
        t.key_schema(),
        vec![Arc::new(Int64Array::from(vec![2]))],
    )?)?
    .into();
    let (two, _, _) = scan(&mut c, req).await?;
    let v = two
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(1).as_string::<i32>().value(0).to_string());
    ensure!(
        v.as_deref() == Some("two-phase2"),
        "a committed staged write is visible at its commit timestamp"
    );
    r.pass("staged writes become visible at Commit's timestamp");

    c.write(pb::WriteRequest {
        anchor: engine,
        seq: 1,
        txn_id: base + 16,
        read_ts: commit_ts,
        one_phase: false,
        ops: ops(
            &t,
            pb::WriteKind::Delete,
            &RecordBatch::try_new(t.key_schema(), vec![Arc::new(Int64Array::from(vec![3]))])?,
        ),
    })
    .await?;
    c.abort(pb::AbortRequest { txn_id: base + 16 })
        .await
        .context("Abort")?;
    let (kept, _, _) = scan(&mut c, scan_req(&t, eon_common::unix_us())).await?;
    ensure!(
        keys_of(&kept).contains(&3),
        "an aborted delete deletes nothing"
    );
    r.pass("Abort discards staged writes");

    // Savepoints: RollbackTo undoes what later statements staged.
    let put = |seq: u32, keys: &[i64], v: &str| pb::WriteRequest {
        anchor: engine,
        seq,
        txn_id: base + 18,
        read_ts: eon_common::unix_us(),
        one_phase: false,
        ops: ops(&t, pb::WriteKind::Put, &rows(&t, keys, v)),
    };
    c.write(put(1, &[5], "sp-a")).await?;
    c.write(put(2, &[5, 30], "sp-b")).await?;
    c.rollback_to(pb::RollbackToRequest {
        txn_id: base + 18,
        seq: 1,
    })
    .await
    .context("RollbackTo")?;
    c.write(put(3, &[6], "sp-c")).await?;
    let sp_ts = c
        .commit(pb::CommitRequest {
            txn_id: base + 18,
            commit_ts: 0,
            epoch: 0,
        })
        .await
        .context("Commit")?
        .into_inner()
        .commit_ts;
    let mut req = scan_req(&t, sp_ts);
    req.keys = ipc::encode_batch(&RecordBatch::try_new(
        t.key_schema(),
        vec![Arc::new(Int64Array::from(vec![5, 6, 30]))],
    )?)?
    .into();
    let (sp, _, _) = scan(&mut c, req).await?;
    let mut got: Vec<String> = sp
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|i| b.column(1).as_string::<i32>().value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort();
    ensure!(
        got == vec!["sp-a5".to_string(), "sp-c6".to_string()],
        "after RollbackTo(1) and commit: statement 1's value and statement 3's, got {got:?}"
    );
    r.pass("RollbackTo undoes the writes of later statements (savepoints)");

    let del = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 17,
            read_ts: eon_common::unix_us(),
            one_phase: true,
            ops: ops(
                &t,
                pb::WriteKind::Delete,
                &RecordBatch::try_new(
                    t.key_schema(),
                    vec![Arc::new(Int64Array::from(vec![3, 4]))],
                )?,
            ),
        })
        .await?
        .into_inner();
    let (gone, _, _) = scan(&mut c, scan_req(&t, del.commit_ts)).await?;
    ensure!(
        keys_of(&gone) == vec![1, 2, 5, 6],
        "deleted rows are gone at later snapshots"
    );
    let (past, _, _) = scan(&mut c, scan_req(&t, t2)).await?;
    ensure!(
        keys_of(&past) == vec![1, 2, 3, 4, 5, 6],
        "older snapshots still see deleted rows"
    );
    r.pass("deletes are versioned: old snapshots keep seeing the rows");

    // Transaction records on the anchor engine.
    let epoch = c
        .write(pb::WriteRequest {
            anchor: engine,
            seq: 1,
            txn_id: base + 20,
            read_ts: eon_common::unix_us(),
            one_phase: false,
            ops: ops(&t, pb::WriteKind::Insert, &rows(&t, &[20], "r")),
        })
        .await?
        .into_inner()
        .epoch;
    ensure!(epoch != 0, "staged writes name the engine's incarnation");
    let status = |r: pb::TxnStatusResponse| {
        (
            pb::TxnState::try_from(r.state).unwrap_or(pb::TxnState::Unspecified),
            r.commit_ts,
        )
    };
    let st = status(
        c.txn_status(pb::TxnStatusRequest {
            txn_id: base + 20,
            stale_after_ms: 0,
        })
        .await?
        .into_inner(),
    );
    ensure!(
        st.0 == pb::TxnState::Pending,
        "a staged write anchored here starts a pending record"
    );
    let hb = status(
        c.heartbeat_txn(pb::HeartbeatTxnRequest { txn_id: base + 20 })
            .await?
            .into_inner(),
    );
    ensure!(
        hb.0 == pb::TxnState::Pending,
        "heartbeats answer the record's state"
    );
    let other = c
        .finalize(pb::FinalizeRequest {
            txn_id: base + 20,
            epoch: epoch ^ 2,
        })
        .await;
    ensure!(
        other.as_ref().err().map(sqlstate).as_deref() == Some("40001"),
        "Finalize naming another incarnation fails with 40001"
    );
    let fin = c
        .finalize(pb::FinalizeRequest {
            txn_id: base + 20,
            epoch,
        })
        .await?
        .into_inner()
        .min_commit_ts;
    let end = status(
        c.end_txn(pb::EndTxnRequest {
            txn_id: base + 20,
            commit: true,
            commit_ts: fin,
        })
        .await?
        .into_inner(),
    );
    ensure!(
        end == (pb::TxnState::Committed, fin),
        "EndTxn commits the record"
    );
    let again = status(
        c.end_txn(pb::EndTxnRequest {
            txn_id: base + 20,
            commit: false,
            commit_ts: 0,
        })
        .await?
        .into_inner(),
    );
    ensure!(
        again.0 == pb::TxnState::Committed,
        "a final record does not change"
    );
    c.commit(pb::CommitRequest {
        txn_id: base + 20,
        commit_ts: fin,
        epoch: 0,
    })
    .await?;
    let gone = status(
        c.txn_status(pb::TxnStatusRequest {
            txn_id: base + 21,
            stale_after_ms: 1,
        })
        .await?
        .into_inner(),
    );
    ensure!(
        gone.0 == pb::TxnState::Aborted,
        "asking with a staleness bound about an unknown transaction aborts it"
    );
    let late = status(
        c.end_txn(pb::EndTxnRequest {
            txn_id: base + 21,
            commit: true,
            commit_ts: fin + 1,
        })
        .await?
        .into_inner(),
    );
    ensure!(
        late.0 == pb::TxnState::Aborted,
        "an aborted transaction can no longer commit"
    );
    r.pass("transaction records: pending, committed at EndTxn, aborted when stale, final once final; Finalize checks the incarnation");

    // FenceTable: writes are refused while the fence holds, once the
    // writes staged on the table have resolved.
    let write = |txn: u64, one_phase: bool, key: i64| pb::WriteRequest {
        anchor: engine,
        seq: 1,
        txn_id: txn,
        read_ts: eon_common::unix_us(),
        one_phase,
        ops: ops(&t, pb::WriteKind::Put, &rows(&t, &[key], "fenced")),
    };
    let fence = |lease_ms: u64, wait_ms: u64| pb::FenceTableRequest {
        table_id: t.id,
        lease_ms,
        wait_ms,
    };
    c.write(write(base + 40, false, 60))
        .await
        .context("Write")?;
    let busy = c.fence_table(fence(60_000, 100)).await;
    ensure!(
        busy.as_ref().err().map(sqlstate).as_deref() == Some("55P03"),
        "a fence waits for staged writes, then fails with 55P03"
    );
    c.abort(pb::AbortRequest { txn_id: base + 40 })
        .await
        .context("Abort")?;
    let fenced = c
        .fence_table(fence(60_000, 1000))
        .await
        .context("FenceTable")?
        .into_inner();
    ensure!(fenced.epoch != 0, "FenceTable reports the incarnation");
    let refused = c.write(write(base + 41, true, 61)).await;
    ensure!(
        refused.as_ref().err().map(sqlstate).as_deref() == Some("40001"),
        "a write to a fenced table fails with 40001"
    );
    c.fence_table(fence(0, 0)).await.context("FenceTable")?;
    c.write(write(base + 42, true, 62))
        .await
        .context("a write once the fence is lifted")?;
    r.pass("FenceTable refuses writes (40001) once staged ones resolve (55P03 while they do not), until lifted");

    let s = c.stats(pb::StatsRequest {}).await?.into_inner();
    ensure!(
        s.component == "data-engine"
            && s.counters.contains_key("rows_scanned")
            && s.counters.contains_key("rows_returned"),
        "Stats reports rows scanned and returned"
    );
    r.pass("Stats reports scan counters");

    c.drop_table(pb::DropTableDataRequest { table_id: t.id })
        .await
        .context("DropTable")?;
    // A query engine whose catalog still names the table runs again
    // with a fresh one rather than read nothing.
    let gone = scan(&mut c, scan_req(&t, eon_common::unix_us())).await;
    ensure!(
        gone.as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<tonic::Status>())
            .map(sqlstate)
            .as_deref()
            == Some("40001"),
        "a scan of a dropped table fails with 40001, got {:?}",
        gone.map(|(b, _, _)| b.len())
    );
    let late = c.write(write(base + 43, true, 63)).await;
    ensure!(
        late.as_ref().err().map(sqlstate).as_deref() == Some("40001"),
        "a write to a dropped table fails with 40001"
    );
    r.pass("DropTable forgets the data and refuses later scans and writes");
    Ok(r)
}
