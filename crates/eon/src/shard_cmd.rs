//! `eon shard move`: move one copy of a replicated shard to another data
//! engine, online. Meta changes the shard's list of copies at once; the
//! shard's Raft group then follows it (its leader adds the new engine as a
//! learner, which catches up by snapshot and log, then swaps it for the old
//! one among the voters), while reads and writes go on.
//!
//! `eon shard drain`: mark a data engine as being drained (meta places no
//! new copy on it) and wait while the balancer moves its copies away.

use anyhow::{Context, anyhow};
use eon_proto::v1 as pb;
use eon_proto::v1::meta_client::MetaClient;

use crate::client::Find;

/// The catalog's table (or index storage table) called `name`
/// (`schema.table`, or a table of `public`).
fn find_table<'a>(catalog: &'a pb::GetCatalogResponse, name: &str) -> Option<&'a pb::Table> {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    let schema_of = |t: &pb::Table| {
        if t.schema.is_empty() {
            "public".to_string()
        } else {
            t.schema.clone()
        }
    };
    catalog
        .tables
        .iter()
        .find(|t| t.name == table && schema_of(t) == schema)
        .or_else(|| {
            catalog
                .tables
                .iter()
                .flat_map(|t| t.indexes.iter().filter_map(|ix| ix.storage.as_ref()))
                .find(|s| s.name == name)
        })
}

pub async fn move_copy(
    find: &Find,
    table: &str,
    shard: u32,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let file = find.cluster().await?;
    let mut meta = MetaClient::new(find.channel(&file.meta)?);
    let catalog = meta
        .get_catalog(pb::GetCatalogRequest {})
        .await
        .map_err(|e| anyhow!("meta at {} is unreachable: {}", file.meta, e.message()))?
        .into_inner();
    let t = find_table(&catalog, table).with_context(|| format!("no table named {table}"))?;
    let moved = meta
        .move_replica(pb::MoveReplicaRequest {
            table: t.id,
            shard,
            from,
            to,
        })
        .await
        .map_err(|e| anyhow!("{}", e.message()))?
        .into_inner();
    let copies = moved.replicas.unwrap_or_default();
    println!(
        "shard {shard} of {table}: copies on data engines {:?} (generation {}); the group follows \
         online: engine {to} catches up, then replaces engine {from}",
        copies.engines, copies.generation
    );
    if !moved.also_moved.is_empty() {
        println!(
            "colocated tables moved along: {}",
            moved
                .also_moved
                .iter()
                .map(|id| catalog
                    .tables
                    .iter()
                    .find(|t| t.id == *id)
                    .map_or(id.to_string(), |t| t.name.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// How often `eon shard drain` reports progress.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn drain(find: &Find, engine: u64, cancel: bool, wait: bool) -> anyhow::Result<()> {
    let file = find.cluster().await?;
    let mut meta = MetaClient::new(find.channel(&file.meta)?);
    let ask = |meta: &mut MetaClient<_>| {
        let mut meta = meta.clone();
        async move {
            meta.drain_data_engine(pb::DrainDataEngineRequest { engine, cancel })
                .await
                .map(|r| r.into_inner())
                .map_err(|e| anyhow!("{}", e.message()))
        }
    };
    let mut state = ask(&mut meta).await?;
    if cancel {
        println!(
            "data engine {engine} takes copies again ({} now)",
            state.copies
        );
        return Ok(());
    }
    println!(
        "draining data engine {engine}: {} copies to move",
        state.copies - state.single
    );
    if state.single > 0 {
        println!(
            "{} of its shards have one copy and cannot move online (raise their tables' \
             replication, or they stay)",
            state.single
        );
    }
    if !wait {
        return Ok(());
    }
    let mut last = state.copies;
    while state.copies > state.single {
        tokio::time::sleep(DRAIN_POLL).await;
        state = ask(&mut meta).await?;
        if state.copies != last {
            println!("  {} copies left", state.copies - state.single);
            last = state.copies;
        }
    }
    println!("data engine {engine} keeps no replicated copy");
    Ok(())
}
