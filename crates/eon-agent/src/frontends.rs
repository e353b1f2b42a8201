//! Front ends: users' programs, run from recipes and scaled by the balancer.
//!
//! A recipe (see `eon_common::recipe`) names a command; every instance of
//! the front end is that command run by the [`supervisor`](crate::supervisor)
//! with its own port in `$PORT` and eon's addresses in `EON_PG_URL` and
//! `EON_REST_URL`, with the credentials of the front end's own role (named
//! as the recipe; it owns the tables the front end creates, and needs a
//! GRANT for any other). Its instances form a [`Pool`] behind the ingress port,
//! reached by the recipe's route (a path prefix, or a Host header).
//!
//! The control loop (`control`) is the balancer acting on this host:
//! ten times a second it samples each front end's load (requests in flight
//! through the ingress plus requests held waiting for an instance, or a
//! Prometheus metric scraped from the instances), and once a second it asks
//! the pure decision core (`eon_balancer::Scaler`) how many instances
//! should run, then acts:
//!
//! - **up**: start instances; they take traffic once ready;
//! - **down**: drain — leave the routing table, wait the recipe's drain
//!   delay and until in-flight requests are done (bounded by the stop
//!   timeout), then the stop signal — so scale-down fails no request;
//! - **from zero**: a request held at the ingress starts an instance at
//!   once (no waiting for the next tick);
//! - **new recipe**: applying a changed recipe starts instances of the new
//!   version and drains the old ones once the new ones are ready.
//!
//! Every action is recorded as an `eon.v1.Decision` (inputs, rule, result)
//! in the agent's [`DecisionLog`](crate::control::DecisionLog), which
//! `eon status --decisions` and `GET /v1/cluster/decisions` show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use eon_balancer::{Observation, Scaler};
use eon_common::recipe::{LoadSignal, Recipe};
use eon_proto::v1 as pb;

use crate::AgentState;
use crate::hosts::Placement;
use crate::ingress::{Backend, Pool};
use crate::supervisor::{self, Launch};

/// One front end.
pub struct Frontend {
    pub name: String,
    pub recipe: RwLock<Arc<Recipe>>,
    /// The recipe as written (other hosts' agents parse it themselves).
    text: RwLock<String>,
    /// The directory the recipe's `dir` is relative to.
    base_dir: RwLock<PathBuf>,
    pub pool: Arc<Pool>,
    scaler: Mutex<Scaler>,
    /// Load samples since the last decision.
    pub(crate) samples: Mutex<Vec<f64>>,
    /// The last decision: the load it saw and what it said.
    last: Mutex<Option<(f64, eon_balancer::Decision)>>,
    next_id: AtomicU64,
    /// EON_PG_URL and EON_REST_URL with the credentials of its recipe's
    /// role (see [`AgentState::recipe_role`]).
    env: RwLock<Vec<(String, String)>>,
}

/// The front ends of this host, by name.
#[derive(Default)]
pub struct Frontends {
    pub by_name: RwLock<BTreeMap<String, Arc<Frontend>>>,
}

impl Frontends {
    /// The front end `host` and `path` route to, and the prefix to strip.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<(Arc<Frontend>, String)> {
        let all = self.by_name.read().unwrap();
        let host = host.map(|h| h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h));
        let mut best: Option<(Arc<Frontend>, String)> = None;
        for fe in all.values() {
            let recipe = fe.recipe.read().unwrap();
            if let (Some(want), Some(host)) = (&recipe.route.host, host)
                && want.eq_ignore_ascii_case(host)
            {
                return Some((fe.clone(), String::new()));
            }
            if let Some(prefix) = &recipe.route.prefix {
                let p = prefix.trim_end_matches('/');
                let hit = p.is_empty()
                    || path == p
                    || path.starts_with(&format!("{p}/"))
                    || path.starts_with(&format!("{p}?"));
                if hit && best.as_ref().is_none_or(|(_, b)| p.len() > b.len()) {
                    best = Some((fe.clone(), p.to_string()));
                }
            }
        }
        best
    }
}

fn signal_number(name: &str) -> i32 {
    match name {
        "SIGINT" => libc::SIGINT,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGHUP" => libc::SIGHUP,
        "SIGUSR1" => libc::SIGUSR1,
        "SIGUSR2" => libc::SIGUSR2,
        "SIGKILL" => libc::SIGKILL,
        _ => libc::SIGTERM,
    }
}

/// How to run an instance of `recipe` on this host: its command with a free
/// port and eon's addresses (`env`) before the recipe's own environment.
pub(crate) fn shell_launch(
    recipe: &Recipe,
    base_dir: &Path,
    env: &[(String, String)],
) -> std::io::Result<Launch> {
    let mut all: Vec<(String, String)> = env.to_vec();
    all.extend(recipe.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Launch::Shell {
        command: recipe.command.clone(),
        dir: base_dir.join(&recipe.dir),
        env: all,
        port: eon_common::node::free_port()?,
        stop_signal: signal_number(&recipe.stop.signal),
        stop_timeout: recipe.stop.timeout,
        ready: recipe.ready.clone(),
        live: recipe.live.clone(),
    })
}

fn env_value(env: &[(String, String)], key: &str) -> String {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Whether instances of `old` must be replaced to run `new` (anything but
/// scaling, load and routing changed).
fn launch_changed(old: &Recipe, new: &Recipe) -> bool {
    let mut a = old.clone();
    a.scale = new.scale.clone();
    a.load = new.load.clone();
    a.route = new.route.clone();
    &a != new
}

impl AgentState {
    /// Run a front end from recipe text, or update the one of that name.
    pub(crate) async fn apply_recipe(
        self: &Arc<Self>,
        text: &str,
        base_dir: &Path,
    ) -> Result<Arc<Frontend>, String> {
        let recipe = Recipe::parse(text)?;
        let env = self.recipe_role(&recipe.name).await?;
        self.install_recipe(recipe, text, base_dir, env)
    }

    fn install_recipe(
        self: &Arc<Self>,
        recipe: Recipe,
        text: &str,
        base_dir: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Arc<Frontend>, String> {
        let mut all = self.frontends.by_name.write().unwrap();
        for other in all.values() {
            let r = other.recipe.read().unwrap();
            if other.name != recipe.name && r.route == recipe.route {
                return Err(format!(
                    "route: {} is already the route of front end {:?}",
                    recipe.route.describe(),
                    other.name
                ));
            }
        }
        if let Some(fe) = all.get(&recipe.name) {
            let old = fe.recipe.read().unwrap().clone();
            let moved = *fe.base_dir.read().unwrap() != base_dir;
            if launch_changed(&old, &recipe) || moved {
                for b in fe.pool.backends() {
                    b.outdated.store(true, Ordering::Relaxed);
                }
            }
            *fe.pool.hold_timeout.write().unwrap() = recipe.ready.grace;
            *fe.recipe.write().unwrap() = Arc::new(recipe);
            *fe.text.write().unwrap() = text.to_string();
            *fe.base_dir.write().unwrap() = base_dir.to_path_buf();
            *fe.env.write().unwrap() = env;
            return Ok(fe.clone());
        }
        let fe = Arc::new(Frontend {
            name: recipe.name.clone(),
            pool: Pool::new(&recipe.name, "http", "frontend", recipe.ready.grace),
            recipe: RwLock::new(Arc::new(recipe)),
            text: RwLock::new(text.to_string()),
            base_dir: RwLock::new(base_dir.to_path_buf()),
            scaler: Mutex::new(Scaler::new()),
            samples: Mutex::new(Vec::new()),
            last: Mutex::new(None),
            next_id: AtomicU64::new(0),
            env: RwLock::new(env),
        });
        all.insert(fe.name.clone(), fe.clone());
        Ok(fe)
    }

    /// Stop routing to a front end, drain and stop its instances.
    pub(crate) fn remove_recipe(self: &Arc<Self>, name: &str) -> Option<Arc<Frontend>> {
        let fe = self.frontends.by_name.write().unwrap().remove(name)?;
        let names: Vec<String> = fe
            .pool
            .backends()
            .iter()
            .filter(|b| !b.draining())
            .map(|b| b.instance.name.clone())
            .collect();
        for b in fe.pool.backends() {
            if !b.draining() {
                self.drain(&fe, b);
            }
        }
        self.decisions.record(pb::Decision {
            at_unix_ms: eon_common::unix_ms(),
            service: fe.name.clone(),
            current: names.len() as u32,
            rule: "recipe removed".into(),
            actions: names.iter().map(|n| format!("drain {n}")).collect(),
            ..Default::default()
        });
        Some(fe)
    }

    /// Start one more instance of a front end on the host placement picks
    /// (waking a parked host first when none has room: then the instance
    /// is started by a later decision, once the host has joined).
    fn start_instance(self: &Arc<Self>, fe: &Arc<Frontend>) -> Result<String, String> {
        let host = match self.place() {
            Placement::On(host) => host,
            Placement::Wake(host) => {
                self.wake(&host, &fe.name);
                return Err(format!("place on {host} once it wakes"));
            }
            Placement::Wait(host) => return Err(format!("waiting for host {host} to wake")),
        };
        let id = fe.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}-{id}", fe.name);
        let base_dir = fe.base_dir.read().unwrap().clone();
        let launch = match host.address {
            None => {
                let recipe = fe.recipe.read().unwrap().clone();
                shell_launch(&recipe, &base_dir, &fe.env.read().unwrap())
                    .map_err(|e| format!("no free port for {name}: {e}"))?
            }
            Some(agent) => Launch::Remote {
                host: host.name.clone(),
                agent,
                request: pb::StartFrontendRequest {
                    instance: name.clone(),
                    id,
                    recipe_toml: fe.text.read().unwrap().clone(),
                    base_dir: base_dir.display().to_string(),
                    pg_url: env_value(&fe.env.read().unwrap(), "EON_PG_URL"),
                    rest_url: env_value(&fe.env.read().unwrap(), "EON_REST_URL"),
                },
            },
        };
        let inst = supervisor::spawn(launch, &name, "frontend", id, vec![], self.log_path(&name));
        self.instances.write().unwrap().push(inst.clone());
        fe.pool.add(inst);
        Ok(name)
    }

    /// Take an instance out of the routing table, let its requests finish,
    /// then stop it.
    fn drain(self: &Arc<Self>, fe: &Arc<Frontend>, b: Arc<Backend>) {
        fe.pool.drain(&b);
        let state = self.clone();
        let fe = fe.clone();
        tokio::spawn(async move {
            let stop = fe.recipe.read().unwrap().stop.clone();
            tokio::time::sleep(stop.drain).await;
            crate::ingress::wait_idle(&[&b], stop.timeout).await;
            b.instance.stop(stop.timeout).await;
            fe.pool.remove(&b.instance.name);
            state.forget(&b.instance);
        });
    }

    /// The load signal of a front end now: the mean of the samples since
    /// the last decision, or the Prometheus metric summed over ready
    /// instances.
    async fn measure(&self, fe: &Frontend, recipe: &Recipe) -> f64 {
        let samples = std::mem::take(&mut *fe.samples.lock().unwrap());
        let held = fe.pool.held() as f64;
        match (recipe.load.signal, &recipe.load.metric) {
            (LoadSignal::Prometheus, Some(metric)) => {
                let ready: Vec<String> = fe
                    .pool
                    .backends()
                    .iter()
                    .filter(|b| b.ready() && !b.draining())
                    .filter_map(|b| b.instance.status().addresses.get("http").cloned())
                    .collect();
                let scrapes = ready.iter().map(|addr| async move {
                    let text = tokio::time::timeout(
                        Duration::from_millis(500),
                        crate::ingress::http_get_text(&self.http_client, addr, "/metrics"),
                    )
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                    prometheus_sum(&text, metric)
                });
                futures::future::join_all(scrapes)
                    .await
                    .into_iter()
                    .sum::<f64>()
                    + held
            }
            _ if samples.is_empty() => fe.pool.load() as f64,
            _ => samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }

    /// One decision for one front end, and the actions it calls for.
    pub(crate) async fn decide(self: &Arc<Self>, fe: &Arc<Frontend>) {
        let recipe = fe.recipe.read().unwrap().clone();
        let load = self.measure(fe, &recipe).await;
        // Instances lost with their host (or that could not start there)
        // are forgotten; the rule below replaces them.
        for b in fe.pool.backends() {
            if !b.draining() && b.instance.status().state == crate::supervisor::State::Stopped {
                tracing::warn!(instance = %b.instance.name, why = ?b.instance.status().last_exit, "instance lost");
                fe.pool.remove(&b.instance.name);
                self.forget(&b.instance);
            }
        }
        let live: Vec<Arc<Backend>> = fe
            .pool
            .backends()
            .into_iter()
            .filter(|b| !b.draining())
            .collect();
        let (fresh, outdated): (Vec<_>, Vec<_>) = live
            .iter()
            .cloned()
            .partition(|b| !b.outdated.load(Ordering::Relaxed));
        let ready = live.iter().filter(|b| b.ready()).count() as u32;
        let starting = fresh.iter().filter(|b| !b.ready()).count() as u32;
        let at = self.clock.elapsed();
        let target = recipe.load.target;
        let mut actions = Vec::new();
        let (current, desired, rule);
        if !outdated.is_empty() {
            // A new version of the recipe: as many new instances as old
            // ones (within bounds), then the old ones drain.
            current = outdated.len() as u32;
            desired = current
                .max(recipe.scale.min)
                .min(recipe.scale.max)
                .max(u32::from(load > 0.0));
            rule = format!(
                "recipe changed: replace {} instance(s) of the old version",
                outdated.len()
            );
            for _ in fresh.len() as u32..desired {
                actions.push(
                    self.start_instance(fe)
                        .map(|n| format!("start {n}"))
                        .unwrap_or_else(|e| e),
                );
            }
            let fresh_ready = fresh.iter().filter(|b| b.ready()).count() as u32;
            if fresh_ready >= desired {
                for b in outdated {
                    actions.push(format!("drain {}", b.instance.name));
                    self.drain(fe, b);
                }
            }
        } else {
            let d = fe.scaler.lock().unwrap().decide(
                &recipe.scale,
                target,
                Observation {
                    at,
                    load,
                    ready,
                    starting,
                },
            );
            (current, desired, rule) = (d.current, d.desired, d.rule.clone());
            let n = fresh.len() as u32;
            if desired > n {
                for _ in n..desired {
                    actions.push(
                        self.start_instance(fe)
                            .map(|n| format!("start {n}"))
                            .unwrap_or_else(|e| e),
                    );
                }
            } else if desired < n {
                // Drain those not ready first, then those on the emptiest
                // other host (so hosts empty out and can be parked), then
                // the least busy, then the newest.
                let per_host = self.instances_per_host();
                let mut order = fresh.clone();
                order.sort_by_key(|b| {
                    let host = b.instance.launch.host();
                    (
                        b.ready(),
                        host == "local",
                        per_host.get(host).copied().unwrap_or(0),
                        b.in_flight(),
                        std::cmp::Reverse(b.instance.id),
                    )
                });
                for b in order.into_iter().take((n - desired) as usize) {
                    actions.push(format!("drain {}", b.instance.name));
                    self.drain(fe, b);
                }
            }
            *fe.last.lock().unwrap() = Some((load, d));
        }
        // Waiting for a host to wake is not news after the first time.
        if actions.iter().any(|a| !a.starts_with("waiting for host")) {
            self.decisions.record(pb::Decision {
                at_unix_ms: eon_common::unix_ms(),
                service: fe.name.clone(),
                load,
                ready,
                starting,
                target,
                current,
                desired,
                rule,
                actions,
            });
        }
    }

    /// Send every component's statistics to meta's history window.
    pub(crate) async fn report_stats(&self) {
        let at = eon_common::unix_ms();
        let samples = self
            .cluster_stats()
            .await
            .into_iter()
            .filter(|(name, _)| name != "meta") // meta adds its own
            .map(|(instance, s)| pb::StatsSample {
                at_unix_ms: at,
                instance,
                stats: Some(s),
            })
            .collect();
        if let Ok(mut meta) = eon_common::node::meta_client(&self.meta_addr) {
            let _ = meta.report_stats(pb::ReportStatsRequest { samples }).await;
        }
    }

    pub(crate) fn frontend_proto(&self, fe: &Frontend) -> pb::Frontend {
        let recipe = fe.recipe.read().unwrap().clone();
        let last = fe.last.lock().unwrap().clone();
        let instances = fe
            .pool
            .backends()
            .iter()
            .map(|b| pb::FrontendInstance {
                instance: Some(b.instance.to_proto()),
                port: match &b.instance.launch {
                    Launch::Shell { port, .. } => *port as u32,
                    _ => b
                        .instance
                        .status()
                        .addresses
                        .get("http")
                        .and_then(|a| a.rsplit(':').next()?.parse().ok())
                        .unwrap_or(0),
                },
                in_flight: b.in_flight(),
                draining: b.draining(),
                outdated: b.outdated.load(Ordering::Relaxed),
            })
            .collect();
        pb::Frontend {
            name: fe.name.clone(),
            route: recipe.route.describe(),
            min: recipe.scale.min,
            max: recipe.scale.max,
            signal: match (recipe.load.signal, &recipe.load.metric) {
                (LoadSignal::Prometheus, Some(m)) => m.clone(),
                _ => "inflight".into(),
            },
            target: recipe.load.target,
            load: last.as_ref().map(|(l, _)| *l).unwrap_or(0.0),
            held: fe.pool.held(),
            desired: last.as_ref().map(|(_, d)| d.desired).unwrap_or(0),
            rule: last.map(|(_, d)| d.rule).unwrap_or_default(),
            instances,
            stats: Some(fe.pool.snapshot().1),
        }
    }
}

/// The sum of a metric's samples (over all label sets) in Prometheus text.
pub fn prometheus_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            if &l[..name_end] != metric {
                return None;
            }
            let rest = &l[name_end..];
            let rest = if rest.starts_with('{') {
                &rest[rest.find('}')? + 1..]
            } else {
                rest
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_summed_over_labels() {
        let text = "# HELP q queue\n# TYPE q gauge\nq{worker=\"a\"} 3\nq{worker=\"b\"} 4.5 1700000000\nqq 100\nq 1\n";
        assert_eq!(prometheus_sum(text, "q"), 8.5);
        assert_eq!(prometheus_sum(text, "missing"), 0.0);
    }
}
