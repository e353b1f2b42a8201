//! `eon agent --join ADDR`: the agent of another host.
//!
//! It runs front-end instances the cluster's agent places on this host
//! (`StartFrontend`, from the recipe's text; the recipe's directory must be
//! at the same path here), stops them (`Stop`), lists them (`List`) and
//! reports the host's statistics (`Stats`). It calls `Join` on the
//! cluster's agent at start and every two seconds after — that is its
//! heartbeat, and how it comes back after a restart or a power cycle. On
//! SIGTERM it stops its instances and exits. Its pid is in
//! `<data-dir>/agent.pid` (for power commands that stop it).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use eon_common::recipe::Recipe;
use eon_common::stats::Recorder;
use eon_proto::v1 as pb;
use eon_proto::v1::agent_client::AgentClient;
use eon_proto::v1::agent_server::Agent;
use tonic::{Request, Response, Status};

use crate::supervisor::{self, Instance, STOP_TIMEOUT};
use crate::{Signals, UpError};

#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The cluster's agent (`eon status` shows it).
    pub join: String,
    /// This host's name in the cluster.
    pub name: String,
    pub data_dir: PathBuf,
    pub listen: String,
    /// The address other hosts reach this one at.
    pub advertise: String,
}

struct Joined {
    opts: JoinOptions,
    instances: RwLock<Vec<Arc<Instance>>>,
    /// EON_PG_URL and EON_REST_URL, from the cluster.
    env: RwLock<Vec<(String, String)>>,
    stats: Arc<Recorder>,
}

impl Joined {
    fn own_stats(&self) -> pb::Stats {
        let mut s = self.stats.snapshot(0);
        s.counters.insert(
            "instances".into(),
            self.instances.read().unwrap().len() as u64,
        );
        eon_common::stats::add_host_counters(&mut s);
        s
    }

    /// An instance as the cluster sees it: reachable at the advertised
    /// address.
    fn proto(&self, i: &Instance) -> pb::Instance {
        let mut p = i.to_proto();
        p.host = self.opts.name.clone();
        if let Some(port) = p
            .address
            .rsplit(':')
            .next()
            .filter(|_| !p.address.is_empty())
        {
            p.address = format!("{}:{port}", self.opts.advertise);
        }
        p
    }
}

/// Run a joined agent until SIGTERM or SIGINT.
pub async fn run(opts: JoinOptions) -> Result<(), UpError> {
    std::fs::create_dir_all(opts.data_dir.join("logs")).map_err(|e| {
        UpError(format!(
            "cannot create data directory {}: {e}",
            opts.data_dir.display()
        ))
    })?;
    let _lock = crate::lock(&opts.data_dir)?;
    std::fs::write(
        opts.data_dir.join("agent.pid"),
        format!("{}\n", std::process::id()),
    )
    .map_err(|e| {
        UpError(format!(
            "cannot write {}: {e}",
            opts.data_dir.join("agent.pid").display()
        ))
    })?;
    let mut signals = Signals::new();
    let (listener, addr) = eon_common::node::bind(&opts.listen, 0)
        .await
        .map_err(|e| UpError(e.to_string()))?;
    let advertised = format!("{}:{}", opts.advertise, addr.port());
    let state = Arc::new(Joined {
        opts: opts.clone(),
        instances: RwLock::new(Vec::new()),
        env: RwLock::new(Vec::new()),
        stats: Recorder::new("agent", 0),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = state.clone();
    let server = crate::serve_agent(
        listener,
        JoinedService {
            state: state.clone(),
        },
        move || metrics.own_stats(),
        stop_rx,
    );
    // Join, then keep calling in.
    let heartbeat_state = state.clone();
    let heartbeat = tokio::spawn(async move {
        let mut told = false;
        loop {
            let req = pb::JoinRequest {
                name: heartbeat_state.opts.name.clone(),
                address: advertised.clone(),
                stats: Some(heartbeat_state.own_stats()),
            };
            let joined = match eon_common::node::channel(&heartbeat_state.opts.join) {
                Ok(ch) => AgentClient::new(ch)
                    .join(req)
                    .await
                    .map_err(|e| e.message().to_string()),
                Err(e) => Err(e.to_string()),
            };
            match joined {
                Ok(r) => {
                    let r = r.into_inner();
                    *heartbeat_state.env.write().unwrap() = vec![
                        ("EON_PG_URL".into(), r.pg_url),
                        ("EON_REST_URL".into(), r.rest_url),
                    ];
                    if !told {
                        println!(
                            "eon agent {:?} joined the cluster at {}",
                            heartbeat_state.opts.name, heartbeat_state.opts.join
                        );
                        told = true;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot join {}: {e}", heartbeat_state.opts.join);
                    told = false;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    signals.recv().await;
    heartbeat.abort();
    let all = state.instances.read().unwrap().clone();
    futures::future::join_all(all.iter().map(|i| i.stop(STOP_TIMEOUT))).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let _ = std::fs::remove_file(opts.data_dir.join("agent.pid"));
    Ok(())
}

struct JoinedService {
    state: Arc<Joined>,
}

type Reply<T> = Result<Response<T>, Status>;

fn only_front_ends(what: &str) -> Status {
    Status::failed_precondition(format!(
        "{what}: a joined agent runs front ends for its cluster; ask the cluster's agent"
    ))
}

#[tonic::async_trait]
impl Agent for JoinedService {
    async fn list(
        &self,
        _req: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let instances = self
            .state
            .instances
            .read()
            .unwrap()
            .iter()
            .map(|i| self.state.proto(i))
            .collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }

    async fn start(&self, _req: Request<pb::StartInstanceRequest>) -> Reply<pb::Instance> {
        Err(only_front_ends("Start"))
    }

    async fn stop(&self, req: Request<pb::StopInstanceRequest>) -> Reply<pb::Instance> {
        let req = req.into_inner();
        let inst = self
            .state
            .instances
            .read()
            .unwrap()
            .iter()
            .find(|i| i.name == req.name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no instance named {:?} here", req.name)))?;
        let timeout = if req.timeout_ms == 0 {
            STOP_TIMEOUT
        } else {
            Duration::from_millis(req.timeout_ms as u64)
        };
        inst.stop(timeout).await;
        self.state
            .instances
            .write()
            .unwrap()
            .retain(|i| !Arc::ptr_eq(i, &inst));
        Ok(Response::new(self.state.proto(&inst)))
    }

    async fn stats(&self, _req: Request<pb::StatsRequest>) -> Reply<pb::Stats> {
        Ok(Response::new(self.state.own_stats()))
    }

    async fn start_frontend(&self, req: Request<pb::StartFrontendRequest>) -> Reply<pb::Instance> {
        let r = self.state.stats.start();
        let req = req.into_inner();
        let recipe = Recipe::parse(&req.recipe_toml).map_err(Status::invalid_argument)?;
        if self
            .state
            .instances
            .read()
            .unwrap()
            .iter()
            .any(|i| i.name == req.instance)
        {
            return Err(Status::already_exists(format!(
                "{} already runs here",
                req.instance
            )));
        }
        let mut env = self.state.env.read().unwrap().clone();
        // The front end's own credentials, when the cluster sent them.
        for (key, value) in [("EON_PG_URL", &req.pg_url), ("EON_REST_URL", &req.rest_url)] {
            if !value.is_empty() {
                env.retain(|(k, _)| k != key);
                env.push((key.to_string(), value.clone()));
            }
        }
        let launch =
            crate::frontends::shell_launch(&recipe, std::path::Path::new(&req.base_dir), &env)
                .map_err(|e| Status::resource_exhausted(format!("no free port: {e}")))?;
        let log = self
            .state
            .opts
            .data_dir
            .join("logs")
            .join(format!("{}.log", req.instance));
        let inst = supervisor::spawn(launch, &req.instance, "frontend", req.id, vec![], log);
        self.state.instances.write().unwrap().push(inst.clone());
        r.ok();
        Ok(Response::new(self.state.proto(&inst)))
    }

    async fn apply_recipe(&self, _req: Request<pb::ApplyRecipeRequest>) -> Reply<pb::Frontend> {
        Err(only_front_ends("ApplyRecipe"))
    }
    async fn remove_recipe(&self, _req: Request<pb::RemoveRecipeRequest>) -> Reply<pb::Frontend> {
        Err(only_front_ends("RemoveRecipe"))
    }
    async fn list_frontends(
        &self,
        _req: Request<pb::ListFrontendsRequest>,
    ) -> Reply<pb::ListFrontendsResponse> {
        Err(only_front_ends("ListFrontends"))
    }
    async fn decisions(&self, _req: Request<pb::DecisionsRequest>) -> Reply<pb::DecisionsResponse> {
        Err(only_front_ends("Decisions"))
    }
    async fn join(&self, _req: Request<pb::JoinRequest>) -> Reply<pb::JoinResponse> {
        Err(only_front_ends("Join"))
    }
    async fn list_hosts(
        &self,
        _req: Request<pb::ListHostsRequest>,
    ) -> Reply<pb::ListHostsResponse> {
        Err(only_front_ends("ListHosts"))
    }
}
