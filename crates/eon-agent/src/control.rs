//! The control loop: the balancer acting on this host.
//!
//! Ten times a second it samples load — each front end's requests in
//! flight through the ingress (plus requests held for an instance), and
//! the statements in flight on the query engines (their `Stats`) — and once
//! a second it asks the decision core (`eon_balancer::Scaler`, the HPA
//! rule) how many of each should run, then acts on the answer: front ends
//! as `frontends` describes; query engines by starting one more (it takes
//! new connections on the PostgreSQL and REST ports as soon as it is ready)
//! or by draining one (no new connections; stopped once its connections
//! close, or after [`QE_DRAIN_TIMEOUT`]). Every action is a recorded
//! decision. Every two seconds it also reports every component's
//! statistics to meta's history window, and evens out the data engines'
//! shard copies (`eon_balancer::copies`): a few moves at a time, each
//! meta's `MoveReplica`, which the shard's group follows online.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eon_balancer::Observation;
use eon_proto::v1 as pb;
use eon_proto::v1::query_engine_client::QueryEngineClient;

use crate::AgentState;
use crate::frontends::Frontend;
use crate::supervisor::{STOP_TIMEOUT, State};

/// How often load is sampled; decisions are taken every [`DECIDE_EVERY`]
/// samples.
const SAMPLE: Duration = Duration::from_millis(100);
const DECIDE_EVERY: u64 = 10;
/// How often (in samples) the balancer looks at where shards' copies are.
const BALANCE_DATA_EVERY: u64 = 20;
/// A move asked of meta counts as under way for this long at least (its
/// group shows it as changing within a second or two).
const MOVE_SETTLES: Duration = Duration::from_secs(5);
/// How often statistics of everything are reported to meta's history.
const REPORT_EVERY: u64 = 20;
/// How long a drained query engine's clients may keep their connections.
pub const QE_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Decisions kept for `eon status --decisions`.
const DECISIONS_KEPT: usize = 1000;

/// The balancer's decisions — front ends, query engines, hosts — newest
/// last, the latest [`DECISIONS_KEPT`] of them.
#[derive(Default)]
pub struct DecisionLog(Mutex<VecDeque<pb::Decision>>);

impl DecisionLog {
    pub fn record(&self, d: pb::Decision) {
        tracing::info!(service = %d.service, current = d.current, desired = d.desired, actions = ?d.actions, "{}", d.rule);
        let mut log = self.0.lock().unwrap();
        if log.len() == DECISIONS_KEPT {
            log.pop_front();
        }
        log.push_back(d);
    }

    /// The latest `limit` decisions (all when 0), oldest first.
    pub fn latest(&self, limit: usize) -> Vec<pb::Decision> {
        let log = self.0.lock().unwrap();
        let skip = if limit == 0 {
            0
        } else {
            log.len().saturating_sub(limit)
        };
        log.iter().skip(skip).cloned().collect()
    }
}

/// How the balancer scales query engines (`eon up` flags).
#[derive(Debug, Clone)]
pub struct QueryEngineScaling {
    pub scale: eon_common::recipe::Scale,
    /// Statements in flight per query engine.
    pub target: f64,
}

impl QueryEngineScaling {
    pub fn new(min: u32, max: u32, target: f64) -> QueryEngineScaling {
        let scale = eon_common::recipe::Scale {
            min,
            max: max.max(min),
            idle: Duration::MAX,
            up_window: Duration::ZERO,
            down_window: Duration::from_secs(60),
            up_step: 1,
            down_step: 1,
        };
        QueryEngineScaling { scale, target }
    }
}

/// Sample, decide, act — until `stop`.
pub async fn control_loop(state: Arc<AgentState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        n += 1;
        if n % REPORT_EVERY == 0 {
            let state = state.clone();
            tokio::spawn(async move { state.report_stats().await });
        }
        let all: Vec<Arc<Frontend>> = state
            .frontends
            .by_name
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for fe in all {
            fe.samples.lock().unwrap().push(fe.pool.load() as f64);
            // Someone is waiting and nothing is coming: decide now.
            let nothing = fe.pool.backends().iter().all(|b| b.draining());
            if n % DECIDE_EVERY == 0 || (nothing && fe.pool.held() > 0) {
                state.decide(&fe).await;
            }
        }
        let load = state.query_engine_load().await;
        state.qe_samples.lock().unwrap().push(load);
        if n % DECIDE_EVERY == 0 {
            state.decide_query_engines();
            state.host_tick();
        }
        if n % BALANCE_DATA_EVERY == 0 {
            let state = state.clone();
            tokio::spawn(async move { state.balance_data().await });
        }
    }
}

impl AgentState {
    /// Statements in flight on all ready query engines the autoscaler
    /// manages now.
    async fn query_engine_load(&self) -> f64 {
        let addrs: Vec<String> = self
            .qe_pg
            .backends()
            .iter()
            .filter(|b| !b.draining() && !self.is_manual(&b.instance.name))
            .filter_map(|b| {
                let s = b.instance.status();
                (s.state == State::Running)
                    .then(|| s.addresses.get("grpc").cloned())
                    .flatten()
            })
            .collect();
        let asks = addrs.iter().map(|addr| async move {
            let mut client = QueryEngineClient::new(self.channel_to(addr)?);
            let ask = client.stats(pb::StatsRequest {});
            let s = tokio::time::timeout(Duration::from_millis(500), ask)
                .await
                .ok()?
                .ok()?
                .into_inner();
            Some(s.in_flight as f64)
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .sum()
    }

    fn decide_query_engines(self: &Arc<Self>) {
        let samples = std::mem::take(&mut *self.qe_samples.lock().unwrap());
        let load = if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<f64>() / samples.len() as f64
        };
        let live: Vec<_> = self
            .qe_pg
            .backends()
            .into_iter()
            .filter(|b| !b.draining() && !self.is_manual(&b.instance.name))
            .collect();
        let ready = live.iter().filter(|b| b.ready()).count() as u32;
        let starting = live.len() as u32 - ready;
        let target = self.qe_scaling.target;
        let obs = Observation {
            at: self.clock.elapsed(),
            load,
            ready,
            starting,
        };
        let d = self
            .qe_scaler
            .lock()
            .unwrap()
            .decide(&self.qe_scaling.scale, target, obs);
        let n = live.len() as u32;
        let mut actions = Vec::new();
        if d.desired > n {
            for _ in n..d.desired {
                actions.push(match self.start("query-engine") {
                    Ok(inst) => format!("start {}", inst.name),
                    Err(e) => e,
                });
            }
        } else if d.desired < n {
            // The one with the fewest connections goes, newest first.
            let mut order = live.clone();
            order.sort_by_key(|b| (b.ready(), b.in_flight(), std::cmp::Reverse(b.instance.id)));
            for b in order.into_iter().take((n - d.desired) as usize) {
                actions.push(format!("drain {}", b.instance.name));
                self.drain_query_engine(&b.instance.name);
            }
        }
        if !actions.is_empty() {
            self.decisions.record(pb::Decision {
                at_unix_ms: eon_common::unix_ms(),
                service: "query-engine".into(),
                load,
                ready,
                starting,
                target,
                current: d.current,
                desired: d.desired,
                rule: d.rule,
                actions,
            });
        }
    }

    /// Move shards' copies toward evenly loaded data engines
    /// (`eon_balancer::copies`), a few at a time: each move is meta's
    /// `MoveReplica`, and in the decision log with its reason. Load is
    /// counted in copies for now (data engines do not report bytes and
    /// requests per shard yet).
    async fn balance_data(&self) {
        let Ok(_one_at_a_time) = self.balancing.try_lock() else {
            return;
        };
        let Ok(mut meta) = eon_common::node::meta_client(&self.meta_addr) else {
            return;
        };
        let (Ok(catalog), Ok(nodes)) = (
            meta.get_catalog(pb::GetCatalogRequest {}).await,
            meta.list_nodes(pb::ListNodesRequest {}).await,
        ) else {
            return;
        };
        let engines: Vec<(eon_balancer::copies::Engine, String)> = nodes
            .into_inner()
            .nodes
            .into_iter()
            .filter(|n| n.kind == pb::NodeKind::DataEngine as i32 && n.up)
            .map(|n| {
                let host = eon_common::node::host_of(&n.grpc_address);
                (
                    eon_balancer::copies::Engine {
                        id: n.id,
                        host,
                        draining: n.draining,
                    },
                    n.grpc_address,
                )
            })
            .collect();
        if engines.len() < 2 {
            return;
        }
        let catalog = catalog.into_inner();
        let shards: Vec<eon_balancer::copies::Shard> =
            eon_common::schema::stored_tables(&catalog.tables)
                .flat_map(|t| {
                    t.replicas
                        .iter()
                        .enumerate()
                        .map(|(i, r)| eon_balancer::copies::Shard {
                            table: t.id,
                            shard: i as u32,
                            engines: r.engines.clone(),
                            bytes: 0,
                            requests: 0.0,
                        })
                })
                .collect();
        // Moves under way: groups whose voters are not their list yet, and
        // moves asked for lately (which may not show there yet).
        let asks = engines.iter().map(|(_, addr)| async move {
            let mut client =
                eon_proto::v1::data_engine_client::DataEngineClient::new(self.channel_to(addr)?);
            let s = tokio::time::timeout(
                Duration::from_millis(500),
                client.stats(pb::StatsRequest {}),
            )
            .await
            .ok()?
            .ok()?
            .into_inner();
            s.counters.get("shard_groups_changing").copied()
        });
        let changing: u64 = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .sum();
        let recent = {
            let mut moves = self.data_moves.lock().unwrap();
            moves.retain(|at| at.elapsed() < MOVE_SETTLES);
            moves.len()
        };
        let in_flight = (changing as usize).max(recent);
        let engines: Vec<eon_balancer::copies::Engine> =
            engines.into_iter().map(|(e, _)| e).collect();
        let rules = eon_balancer::copies::Rules::default();
        for m in eon_balancer::copies::plan(&engines, &shards, in_flight, &rules) {
            let asked = meta
                .move_replica(pb::MoveReplicaRequest {
                    table: m.table,
                    shard: m.shard,
                    from: m.from,
                    to: m.to,
                })
                .await;
            let action = match &asked {
                Ok(_) => format!(
                    "move table {}'s shard {} from data-engine-{} to data-engine-{}",
                    m.table, m.shard, m.from, m.to
                ),
                Err(e) => format!(
                    "moving table {}'s shard {}: {}",
                    m.table,
                    m.shard,
                    e.message()
                ),
            };
            if asked.is_ok() {
                self.data_moves
                    .lock()
                    .unwrap()
                    .push(std::time::Instant::now());
            }
            self.decisions.record(pb::Decision {
                at_unix_ms: eon_common::unix_ms(),
                service: "data-engine".into(),
                load: 0.0,
                ready: engines.len() as u32,
                starting: 0,
                target: 0.0,
                current: in_flight as u32,
                desired: in_flight as u32 + 1,
                rule: m.reason,
                actions: vec![action],
            });
        }
    }

    /// Stop giving a query engine new connections; stop it once its
    /// connections and requests are done (or after the drain timeout).
    fn drain_query_engine(self: &Arc<Self>, name: &str) {
        let (Some(pg), Some(http)) = (self.qe_pg.find(name), self.qe_http.find(name)) else {
            return;
        };
        self.qe_pg.drain(&pg);
        self.qe_http.drain(&http);
        let state = self.clone();
        tokio::spawn(async move {
            crate::ingress::wait_idle(&[&pg, &http], QE_DRAIN_TIMEOUT).await;
            pg.instance.stop(STOP_TIMEOUT).await;
            state.qe_pg.remove(&pg.instance.name);
            state.qe_http.remove(&pg.instance.name);
            state.forget(&pg.instance);
        });
    }
}
