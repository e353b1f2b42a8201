use anyhow::{Context, ensure};
use eon_common::node;
use eon_proto::v1 as pb;
use eon_proto::v1::agent_client::AgentClient;

use crate::Report;

/// The Agent contract: List, Start, Stop, Stats. Starts one extra query
/// engine and stops it again.
pub async fn agent(addr: &str, secret: Option<&str>) -> anyhow::Result<Report> {
    let mut r = Report::new("agent");
    let mut c = AgentClient::new(node::channel_with(addr, secret)?);
    let list = c
        .list(pb::ListInstancesRequest {})
        .await
        .context("List")?
        .into_inner()
        .instances;
    ensure!(
        list.iter()
            .any(|i| i.kind == "meta" && i.state == "running" && i.pid > 0),
        "List shows a running meta with its pid"
    );
    ensure!(
        list.iter()
            .all(|i| !i.name.is_empty() && !i.log_path.is_empty()),
        "instances have names and log paths"
    );
    r.pass("List shows every instance with pid, state and log");

    let bad = c
        .start(pb::StartInstanceRequest {
            kind: "toaster".into(),
        })
        .await;
    ensure!(bad.is_err(), "starting an unknown kind fails");
    let started = c
        .start(pb::StartInstanceRequest {
            kind: "query-engine".into(),
        })
        .await
        .context("Start")?
        .into_inner();
    ensure!(
        started.state == "running" && started.pid > 0,
        "Start returns a running instance"
    );
    let list = c
        .list(pb::ListInstancesRequest {})
        .await?
        .into_inner()
        .instances;
    ensure!(
        list.iter().any(|i| i.name == started.name),
        "the new instance is listed"
    );
    r.pass("Start runs a new instance");

    // An instance started by hand is the operator's: an autoscaler (eon's
    // decides once a second) must not stop it behind their back.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let list = c
        .list(pb::ListInstancesRequest {})
        .await?
        .into_inner()
        .instances;
    ensure!(
        list.iter()
            .any(|i| i.name == started.name && i.state == "running"),
        "a started instance keeps running until it is stopped"
    );

    let alive = std::path::Path::new(&format!("/proc/{}", started.pid)).exists();
    let stopped = c
        .stop(pb::StopInstanceRequest {
            name: started.name.clone(),
            timeout_ms: 10_000,
        })
        .await
        .context("Stop")?
        .into_inner();
    ensure!(
        stopped.state == "stopped",
        "Stop waits until the instance stopped"
    );
    if alive {
        ensure!(
            !std::path::Path::new(&format!("/proc/{}", started.pid)).exists()
                || is_zombie(started.pid),
            "the process is gone"
        );
    }
    let missing = c
        .stop(pb::StopInstanceRequest {
            name: "no-such-instance".into(),
            timeout_ms: 0,
        })
        .await;
    ensure!(
        missing.as_ref().err().map(|s| s.code()) == Some(tonic::Code::NotFound),
        "stopping an unknown instance is NotFound"
    );
    r.pass("Stop stops an instance (and only known ones)");

    let s = c.stats(pb::StatsRequest {}).await?.into_inner();
    ensure!(
        s.component == "agent" && s.counters.contains_key("instances"),
        "Stats counts instances"
    );
    r.pass("Stats has the common shape");
    Ok(r)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}
