use anyhow::{Context, ensure};
use eon_common::schema::ColumnDef;
use eon_common::{SqlType, TableDef, node};
use eon_proto::v1 as pb;

use crate::{Report, sqlstate};

/// The Meta contract. Registers a data engine node (id 900001) with a
/// placeholder address, so run it against a scratch meta.
pub async fn meta(addr: &str, secret: Option<&str>) -> anyhow::Result<Report> {
    let mut r = Report::new("meta");
    let mut m = eon_proto::v1::meta_client::MetaClient::new(node::channel_with(addr, secret)?);

    let fake = pb::NodeInfo {
        kind: pb::NodeKind::DataEngine as i32,
        id: 900_001,
        grpc_address: "127.0.0.1:9".into(),
        pid: 1,
        started_at_unix_ms: eon_common::unix_ms(),
        ..Default::default()
    };
    let reg = m
        .register_node(pb::RegisterNodeRequest {
            node: Some(fake.clone()),
        })
        .await
        .context("RegisterNode")?
        .into_inner();
    ensure!(
        reg.current_ts > 0,
        "RegisterNode returns the current timestamp"
    );
    r.pass("RegisterNode answers with a timestamp");

    let hb = m
        .heartbeat(pb::HeartbeatRequest {
            kind: fake.kind,
            id: fake.id,
            leading: vec![],
        })
        .await?
        .into_inner();
    ensure!(hb.known, "a registered node is known to Heartbeat");
    let unknown = m
        .heartbeat(pb::HeartbeatRequest {
            kind: fake.kind,
            id: 900_999,
            leading: vec![],
        })
        .await?
        .into_inner();
    ensure!(
        !unknown.known,
        "an unregistered node is unknown to Heartbeat"
    );
    r.pass("Heartbeat tells known from unknown nodes");

    let nodes = m
        .list_nodes(pb::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let me = nodes
        .iter()
        .find(|n| n.kind == fake.kind && n.id == fake.id)
        .context("ListNodes lists the registered node")?;
    ensure!(
        me.up && me.grpc_address == fake.grpc_address,
        "the node is up with its address"
    );
    r.pass("ListNodes lists registered nodes as up");

    let mut prev = 0;
    for i in 0..200u32 {
        let count = i % 4; // 0 and 1 both mean one timestamp
        let ts = m
            .get_timestamp(pb::GetTimestampRequest { count })
            .await?
            .into_inner()
            .ts;
        ensure!(
            ts > prev,
            "timestamps strictly increase ({ts} after {prev})"
        );
        prev = ts + count.max(1) as u64 - 1;
    }
    r.pass("GetTimestamp is strictly increasing, also over reserved blocks");

    let a = m
        .allocate_ids(pb::AllocateIdsRequest { count: 10 })
        .await?
        .into_inner();
    let b = m
        .allocate_ids(pb::AllocateIdsRequest { count: 10 })
        .await?
        .into_inner();
    ensure!(
        a.count >= 10 && b.count >= 10,
        "AllocateIds grants what was asked"
    );
    ensure!(
        b.start >= a.start + a.count || a.start >= b.start + b.count,
        "id blocks do not overlap"
    );
    r.pass("AllocateIds hands out disjoint blocks");

    let name = format!("conformance_{}", eon_common::unix_us());
    let cols = vec![ColumnDef {
        name: "id".into(),
        ty: SqlType::Int8,
        nullable: false,
        default_sql: None,
        hidden: false,
    }];
    let table = TableDef::new_proto("public", &name, cols, vec![0], 4);
    let before = m
        .get_catalog(pb::GetCatalogRequest {})
        .await?
        .into_inner()
        .version;
    let created = m
        .create_table(pb::CreateTableRequest {
            table: Some(table.clone()),
            if_not_exists: false,
            restore: false,
            sequences: vec![],
            replaces: 0,
        })
        .await
        .context("CreateTable")?
        .into_inner();
    let t = created.table.context("CreateTable returns the table")?;
    ensure!(
        created.created && t.id > 0 && t.shard_count == 4 && t.placement.len() == 4,
        "table gets an id and a placement per shard"
    );
    ensure!(
        created.catalog_version > before,
        "DDL bumps the catalog version"
    );
    let ts = m
        .get_timestamp(pb::GetTimestampRequest { count: 1 })
        .await?
        .into_inner();
    ensure!(
        ts.catalog_version == created.catalog_version,
        "timestamps carry the catalog version"
    );
    r.pass("CreateTable assigns an id, places shards, bumps the version");

    let dup = m
        .create_table(pb::CreateTableRequest {
            table: Some(table.clone()),
            if_not_exists: false,
            restore: false,
            sequences: vec![],
            replaces: 0,
        })
        .await;
    ensure!(
        dup.as_ref().err().map(sqlstate).as_deref() == Some("42P07"),
        "a duplicate CreateTable fails with 42P07"
    );
    let again = m
        .create_table(pb::CreateTableRequest {
            table: Some(table),
            if_not_exists: true,
            restore: false,
            sequences: vec![],
            replaces: 0,
        })
        .await?
        .into_inner();
    ensure!(
        !again.created && again.table.map(|x| x.id) == Some(t.id),
        "IF NOT EXISTS returns the existing table"
    );
    r.pass("CreateTable refuses duplicates (42P07) unless IF NOT EXISTS");

    let catalog = m.get_catalog(pb::GetCatalogRequest {}).await?.into_inner();
    ensure!(
        catalog.tables.iter().any(|x| x.id == t.id),
        "GetCatalog lists the table"
    );
    r.pass("GetCatalog lists tables");

    // SwapTable: a rewritten copy built under another name takes the
    // table's place in one step.
    let mut copy = t.clone();
    copy.name = format!("{name}$copy");
    copy.id = 0;
    copy.placement.clear();
    let copy = m
        .create_table(pb::CreateTableRequest {
            table: Some(copy),
            if_not_exists: false,
            restore: false,
            sequences: vec![],
            replaces: 0,
        })
        .await
        .context("CreateTable")?
        .into_inner()
        .table
        .context("CreateTable returns the table")?;
    let stale = m
        .swap_table(pb::SwapTableRequest {
            schema: "public".into(),
            name: name.clone(),
            old_id: copy.id,
            new_name: copy.name.clone(),
        })
        .await;
    ensure!(
        stale.as_ref().err().map(sqlstate).as_deref() == Some("40001"),
        "SwapTable naming the wrong old table fails with 40001"
    );
    let swapped = m
        .swap_table(pb::SwapTableRequest {
            schema: "public".into(),
            name: name.clone(),
            old_id: t.id,
            new_name: copy.name.clone(),
        })
        .await
        .context("SwapTable")?
        .into_inner();
    ensure!(
        swapped.old.map(|x| x.id) == Some(t.id)
            && swapped.table.as_ref().map(|x| (x.id, x.name.as_str()))
                == Some((copy.id, name.as_str())),
        "SwapTable returns the old table and the new one under the name"
    );
    let catalog = m.get_catalog(pb::GetCatalogRequest {}).await?.into_inner();
    ensure!(
        catalog.version == swapped.catalog_version
            && !catalog
                .tables
                .iter()
                .any(|x| x.id == t.id || x.name == copy.name)
            && catalog
                .tables
                .iter()
                .any(|x| x.id == copy.id && x.name == name),
        "after SwapTable the catalog has the new table under the name only"
    );
    r.pass("SwapTable replaces a table by its copy in one step (40001 if it changed)");
    let t = swapped.table.unwrap();

    let dropped = m
        .drop_table(pb::DropTableRequest {
            schema: "public".into(),
            name: name.clone(),
            if_exists: false,
        })
        .await?
        .into_inner();
    ensure!(
        dropped.table.map(|x| x.id) == Some(t.id),
        "DropTable returns the dropped table"
    );
    let missing = m
        .drop_table(pb::DropTableRequest {
            schema: "public".into(),
            name: name.clone(),
            if_exists: false,
        })
        .await;
    ensure!(
        missing.as_ref().err().map(sqlstate).as_deref() == Some("42P01"),
        "dropping a missing table fails with 42P01"
    );
    let quiet = m
        .drop_table(pb::DropTableRequest {
            schema: "public".into(),
            name,
            if_exists: true,
        })
        .await?
        .into_inner();
    ensure!(quiet.table.is_none(), "IF EXISTS drops nothing quietly");
    r.pass("DropTable removes tables (42P01 when missing, unless IF EXISTS)");

    let role_name = format!("conformance_role_{}", eon_common::unix_us());
    let before = m.get_catalog(pb::GetCatalogRequest {}).await?.into_inner();
    let created = m
        .create_role(pb::CreateRoleRequest {
            role: Some(pb::Role {
                name: role_name.clone(),
                login: true,
                connection_limit: -1,
                ..Default::default()
            }),
            if_not_exists: false,
        })
        .await
        .context("CreateRole")?
        .into_inner();
    ensure!(
        created.created && created.role.as_ref().is_some_and(|r| r.id > 0),
        "CreateRole returns the role with its id"
    );
    let again = m
        .create_role(pb::CreateRoleRequest {
            role: Some(pb::Role {
                name: role_name.clone(),
                ..Default::default()
            }),
            if_not_exists: false,
        })
        .await;
    ensure!(
        again.as_ref().err().map(sqlstate).as_deref() == Some("42710"),
        "creating an existing role fails with 42710"
    );
    let mut renamed = created.role.clone().unwrap();
    renamed.name = format!("{role_name}_2");
    renamed.superuser = true;
    m.alter_role(pb::AlterRoleRequest {
        name: role_name.clone(),
        role: Some(renamed.clone()),
    })
    .await
    .context("AlterRole")?;
    let catalog = m.get_catalog(pb::GetCatalogRequest {}).await?.into_inner();
    ensure!(
        catalog.version > before.version
            && catalog.roles.iter().any(|r| r == &renamed)
            && !catalog.roles.iter().any(|r| r.name == role_name),
        "AlterRole replaces the role (a new name renames it) and bumps the catalog version"
    );
    let dropped = m
        .drop_role(pb::DropRoleRequest {
            name: renamed.name.clone(),
            if_exists: false,
        })
        .await?
        .into_inner();
    let missing = m
        .drop_role(pb::DropRoleRequest {
            name: renamed.name.clone(),
            if_exists: false,
        })
        .await;
    ensure!(
        dropped.role.map(|r| r.id) == Some(renamed.id)
            && missing.as_ref().err().map(sqlstate).as_deref() == Some("42704"),
        "DropRole returns the dropped role; a missing one fails with 42704"
    );
    r.pass("CreateRole, AlterRole and DropRole keep roles in the catalog (42710, 42704)");

    let s = m.stats(pb::StatsRequest {}).await?.into_inner();
    ensure!(
        s.component == "meta" && s.requests_total > 0,
        "Stats reports the component and its requests"
    );
    r.pass("Stats has the common shape");
    Ok(r)
}
