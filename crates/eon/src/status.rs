//! `eon status`: what runs, where, for how long, and where every table's
//! shards live.

use eon_proto::v1 as pb;

use crate::client::Find;
use eon_proto::v1::agent_client::AgentClient;

fn uptime(started_ms: i64) -> String {
    if started_ms <= 0 {
        return "-".into();
    }
    let s = ((eon_common::unix_ms() - started_ms).max(0) / 1000) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `eon status --decisions`: the balancer's latest decisions.
pub async fn decisions(find: &Find, limit: u32) -> anyhow::Result<()> {
    let mut agent = find.agent().await?;
    let list = agent
        .decisions(pb::DecisionsRequest { limit })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .decisions;
    if list.is_empty() {
        println!("no decisions yet");
        return Ok(());
    }
    println!(
        "{:<12} {:<16} {:>7} {:>5} {:>5} {:>7}  {:>7}  RULE / ACTIONS",
        "AGE", "SERVICE", "LOAD", "READY", "START", "TARGET", "CUR→DES"
    );
    for d in &list {
        let age = format!(
            "{:.1}s ago",
            (eon_common::unix_ms() - d.at_unix_ms).max(0) as f64 / 1000.0
        );
        if d.service.starts_with("host ") || d.service == "data-engine" {
            // Power, membership and shard-copy decisions have no load
            // inputs of this shape.
            println!(
                "{:<12} {:<16} {:>7} {:>5} {:>5} {:>7}  {:>7}  {}",
                age, d.service, "-", "-", "-", "-", "-", d.rule
            );
        } else {
            println!(
                "{:<12} {:<16} {:>7.1} {:>5} {:>5} {:>7.1}  {:>7}  {}",
                age,
                d.service,
                d.load,
                d.ready,
                d.starting,
                d.target,
                format!("{}→{}", d.current, d.desired),
                d.rule
            );
        }
        if !d.actions.is_empty() {
            println!("{:>70}{}", "", d.actions.join(", "));
        }
    }
    Ok(())
}

pub async fn run(find: &Find) -> anyhow::Result<()> {
    let file = find.cluster().await?;
    let agent_addr = (!file.agent.is_empty()).then(|| file.agent.clone());
    let meta_addr = file.meta.clone();
    let file = (file.pid != 0).then_some(file);
    let mut meta = pb::meta_client::MetaClient::new(find.channel(&meta_addr)?);
    let nodes = meta
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("meta at {meta_addr} is unreachable: {}", e.message()))?
        .into_inner()
        .nodes;
    let catalog = meta
        .get_catalog(pb::GetCatalogRequest {})
        .await?
        .into_inner();
    let instances = match &agent_addr {
        Some(a) => {
            let mut client = AgentClient::new(find.channel(a)?);
            client
                .list(pb::ListInstancesRequest {})
                .await
                .map(|r| r.into_inner().instances)
                .unwrap_or_default()
        }
        None => vec![],
    };
    if let Some(f) = &file {
        println!(
            "cluster (eon up pid {}): PostgreSQL {}  REST {}  ingress {}  agent {}",
            f.pid, f.pg, f.http, f.ingress, f.agent
        );
    }
    println!();
    println!(
        "{:<16} {:>7}  {:<9} {:>8}  {:>8}  ADDRESS",
        "COMPONENT", "PID", "STATE", "UPTIME", "RESTARTS"
    );
    let address_of = |kind: &str, id: u64| -> String {
        let k = match kind {
            "meta" => return meta_addr.clone(),
            "data-engine" => pb::NodeKind::DataEngine as i32,
            "query-engine" => pb::NodeKind::QueryEngine as i32,
            _ => 0,
        };
        nodes
            .iter()
            .find(|n| n.kind == k && n.id == id)
            .map(|n| {
                if n.pg_address.is_empty() {
                    n.grpc_address.clone()
                } else {
                    format!(
                        "{} (pg {}, http {})",
                        n.grpc_address, n.pg_address, n.http_address
                    )
                }
            })
            .unwrap_or_else(|| "-".into())
    };
    if instances.is_empty() {
        for n in &nodes {
            let kind = match pb::NodeKind::try_from(n.kind) {
                Ok(pb::NodeKind::DataEngine) => "data-engine",
                Ok(pb::NodeKind::QueryEngine) => "query-engine",
                _ => "node",
            };
            let state = if n.up { "running" } else { "down" };
            println!(
                "{:<16} {:>7}  {:<9} {:>8}  {:>8}  {}",
                format!("{kind}-{}", n.id),
                n.pid,
                state,
                uptime(n.started_at_unix_ms),
                "-",
                address_of(kind, n.id)
            );
        }
    }
    for i in &instances {
        let up = i.state == "running";
        let draining = up
            && i.kind == "data-engine"
            && nodes
                .iter()
                .any(|n| n.kind == pb::NodeKind::DataEngine as i32 && n.id == i.id && n.draining);
        println!(
            "{:<16} {:>7}  {:<9} {:>8}  {:>8}  {}",
            i.name,
            if i.pid > 0 {
                i.pid.to_string()
            } else {
                "-".into()
            },
            if draining { "draining" } else { &i.state },
            if up {
                uptime(i.started_at_unix_ms)
            } else {
                "-".into()
            },
            i.restarts,
            if !up {
                "-".into()
            } else if i.kind == "frontend" {
                if i.host.is_empty() || i.host == "local" {
                    format!("http {}", i.address)
                } else {
                    format!("http {} on host {}", i.address, i.host)
                }
            } else {
                address_of(&i.kind, i.id)
            }
        );
    }
    if let Some(a) = &agent_addr {
        let mut client = AgentClient::new(find.channel(a)?);
        let hosts = client
            .list_hosts(pb::ListHostsRequest {})
            .await
            .map(|r| r.into_inner().hosts)
            .unwrap_or_default();
        if hosts.len() > 1 {
            println!();
            println!(
                "{:<16} {:<12} {:>9}  {:>6}  ADDRESS",
                "HOST", "STATE", "INSTANCES", "SLOTS"
            );
            for h in &hosts {
                let slots = if h.slots == u32::MAX {
                    "-".to_string()
                } else {
                    h.slots.to_string()
                };
                let addr = if h.address.is_empty() {
                    "(this agent)".to_string()
                } else {
                    h.address.clone()
                };
                println!(
                    "{:<16} {:<12} {:>9}  {:>6}  {addr}",
                    h.name, h.state, h.instances, slots
                );
            }
        }
    }
    println!();
    if catalog.tables.is_empty() {
        println!("no tables (catalog version {})", catalog.version);
        return Ok(());
    }
    println!("{:<24} {:>6}  SHARDS BY DATA ENGINE", "TABLE", "SHARDS");
    for t in &catalog.tables {
        let mut by_engine: std::collections::BTreeMap<u64, Vec<usize>> =
            std::collections::BTreeMap::new();
        for (shard, engine) in t.placement.iter().enumerate() {
            by_engine.entry(*engine).or_default().push(shard);
        }
        let parts: Vec<String> = by_engine
            .iter()
            .map(|(e, s)| {
                format!(
                    "data-engine-{e}: [{}]",
                    s.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        println!(
            "{:<24} {:>6}  {}",
            format!("{}.{}", t.schema, t.name),
            t.shard_count,
            parts.join("  ")
        );
    }
    Ok(())
}
