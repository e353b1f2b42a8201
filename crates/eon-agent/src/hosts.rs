//! Hosts and their power states, as the cluster's agent sees them.
//!
//! Every front-end instance runs on a host: `local` (the machine of
//! `eon up`) or one whose agent joined with `eon agent --join` (see
//! [`crate::joined`]). Hosts come from `eon up --hosts FILE`
//! (`eon_common::hosts`) or join undeclared.
//!
//! - **Placement** packs: a new instance goes to the awake host with a
//!   free slot that already runs the most instances (the local host first
//!   among equals), so that other hosts stay empty and can be parked. When
//!   no awake host has room, a parked host is woken (its `power_on`
//!   command) and the instance is placed once the host's agent has joined;
//!   with nothing left to wake, the least-busy awake host takes it beyond
//!   its slots (serving beats refusing).
//! - **Scale-down** drains instances on the emptiest non-local host first
//!   (see `frontends`).
//! - **Parking**: a host with power commands that has run no instance for
//!   its `park_after` gets its `power_off` command and is *parked*: nothing
//!   is placed on it until it is woken.
//! - **Liveness**: a joined host calls `Join` every two seconds; one silent
//!   for six seconds is *unreachable* (its instances are replaced
//!   elsewhere) until it joins again.
//!
//! Waking, parking and losing a host are decisions in the log like any
//! other.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use eon_common::hosts::HostSpec;
use eon_proto::v1 as pb;

use crate::AgentState;
use crate::supervisor::State;

/// A joined host that has not called `Join` for this long is unreachable.
const SILENT_AFTER: Duration = Duration::from_secs(6);
/// A woken host that has not joined within this is considered still off
/// (and may be woken again).
const WAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// A parked host's agent may call in a last time while its power-off
/// command stops it: for this long after parking that is not a return.
const PARK_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Awake,
    Waking,
    Parked,
    Unreachable,
}

impl HostState {
    fn as_str(self) -> &'static str {
        match self {
            HostState::Awake => "awake",
            HostState::Waking => "waking",
            HostState::Parked => "parked",
            HostState::Unreachable => "unreachable",
        }
    }
}

pub struct Host {
    pub spec: HostSpec,
    /// Its agent's gRPC address; `None` for the local host.
    pub address: Option<String>,
    pub state: HostState,
    since: Instant,
    since_unix_ms: i64,
    last_seen: Instant,
    empty_since: Option<Instant>,
}

impl Host {
    pub fn new(spec: HostSpec, address: Option<String>, state: HostState) -> Host {
        let now = Instant::now();
        Host {
            spec,
            address,
            state,
            since: now,
            since_unix_ms: eon_common::unix_ms(),
            last_seen: now,
            empty_since: None,
        }
    }

    fn set(&mut self, state: HostState) {
        if self.state != state {
            self.state = state;
            self.since = Instant::now();
            self.since_unix_ms = eon_common::unix_ms();
        }
    }
}

/// Where a new instance goes.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub name: String,
    pub address: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Placement {
    On(Chosen),
    /// Wake this host first.
    Wake(String),
    /// A host is waking; place when it has joined.
    Wait(String),
}

impl AgentState {
    /// Front-end instances (not stopped, not draining) per host.
    pub(crate) fn instances_per_host(&self) -> HashMap<String, u32> {
        let mut n = HashMap::new();
        for fe in self.frontends.by_name.read().unwrap().values() {
            for b in fe.pool.backends() {
                if !b.draining() && b.instance.status().state != State::Stopped {
                    *n.entry(b.instance.launch.host().to_string()).or_default() += 1;
                }
            }
        }
        n
    }

    /// Where the next front-end instance goes (the rule is
    /// `eon_balancer::place`).
    pub(crate) fn place(&self) -> Placement {
        let per_host = self.instances_per_host();
        let hosts = self.hosts.lock().unwrap();
        let chosen = |name: &str| {
            let h = &hosts[name];
            Chosen {
                name: h.spec.name.clone(),
                address: h.address.clone(),
            }
        };
        match eon_balancer::place(&views(&hosts, &per_host)) {
            Some(eon_balancer::Place::On(n)) => Placement::On(chosen(&n)),
            Some(eon_balancer::Place::Wake(n)) => Placement::Wake(n),
            Some(eon_balancer::Place::Wait(n)) => Placement::Wait(n),
            None => Placement::On(chosen("local")),
        }
    }

    /// Run a parked host's power-on command.
    pub(crate) fn wake(&self, name: &str, wanted_by: &str) {
        let mut hosts = self.hosts.lock().unwrap();
        let Some(h) = hosts.get_mut(name) else { return };
        let Some(cmd) = h.spec.power_on.clone() else {
            return;
        };
        h.set(HostState::Waking);
        drop(hosts);
        self.run_power_command(name, "power_on", &cmd);
        self.decisions.record(pb::Decision {
            at_unix_ms: eon_common::unix_ms(),
            service: format!("host {name}"),
            rule: format!(
                "{wanted_by} needs an instance and no awake host has a free slot: wake {name} first"
            ),
            actions: vec![format!("wake {name}")],
            ..Default::default()
        });
    }

    fn run_power_command(&self, host: &str, what: &str, cmd: &str) {
        let log = self.log_path(&format!("host-{host}"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .env("EON_HOST", host)
            .env(
                "EON_AGENT",
                self.agent_addr.get().cloned().unwrap_or_default(),
            )
            .env("EON_BIN", &self.exe)
            // For the host's `eon agent --join` (the agents of a cluster
            // share its secret).
            .env(
                eon_common::node::SECRET_ENV,
                eon_common::node::cluster_secret().unwrap_or_default(),
            );
        // A command that *is* the host (a local `eon agent`, as in tests)
        // ends with this agent.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        if let Ok(f) = out {
            let _ = c.stdout(
                f.try_clone()
                    .map(std::process::Stdio::from)
                    .unwrap_or(std::process::Stdio::null()),
            );
            let _ = c.stderr(std::process::Stdio::from(f));
        }
        match c.spawn() {
            Ok(mut child) => {
                tracing::info!(host, what, cmd, "power command started");
                // Reap it whenever it ends.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
            Err(e) => tracing::error!(host, what, cmd, "cannot run power command: {e}"),
        }
    }

    /// A host's agent joined (or called in again).
    pub(crate) fn join(&self, req: &pb::JoinRequest) -> Result<(), String> {
        if req.name.is_empty() || req.name == "local" {
            return Err(format!(
                "a joining host needs a name other than {:?}",
                req.name
            ));
        }
        let mut hosts = self.hosts.lock().unwrap();
        let h = hosts.entry(req.name.clone()).or_insert_with(|| {
            Host::new(HostSpec::joined(&req.name), None, HostState::Unreachable)
        });
        if h.state == HostState::Parked && h.since.elapsed() < PARK_GRACE {
            return Ok(());
        }
        if h.address.as_deref() != Some(&req.address) {
            tracing::info!(host = %req.name, address = %req.address, "host joined");
        }
        h.address = Some(req.address.clone());
        h.last_seen = Instant::now();
        if h.state != HostState::Awake {
            let was = h.state;
            h.set(HostState::Awake);
            drop(hosts);
            self.decisions.record(pb::Decision {
                at_unix_ms: eon_common::unix_ms(),
                service: format!("host {}", req.name),
                rule: format!("its agent joined (was {})", was.as_str()),
                actions: vec![format!("use {}", req.name)],
                ..Default::default()
            });
        }
        Ok(())
    }

    /// Once a second: park empty hosts, notice silent ones, give up on
    /// hosts that did not wake.
    pub(crate) fn host_tick(&self) {
        let per_host = self.instances_per_host();
        let mut decisions = Vec::new();
        let mut off = Vec::new();
        {
            let mut hosts = self.hosts.lock().unwrap();
            for h in hosts.values_mut() {
                let name = h.spec.name.clone();
                match h.state {
                    HostState::Awake
                        if h.address.is_some() && h.last_seen.elapsed() >= SILENT_AFTER =>
                    {
                        h.set(HostState::Unreachable);
                        decisions.push((
                            name.clone(),
                            format!("no word from its agent for {}s", SILENT_AFTER.as_secs()),
                            format!("lose {name}"),
                        ));
                    }
                    HostState::Waking if h.since.elapsed() >= WAKE_TIMEOUT => {
                        h.set(HostState::Parked);
                        decisions.push((
                            name.clone(),
                            format!("did not join within {}s of waking", WAKE_TIMEOUT.as_secs()),
                            format!("give up waking {name}"),
                        ));
                    }
                    _ => {}
                }
                let empty = h.state == HostState::Awake
                    && per_host.get(&h.spec.name).copied().unwrap_or(0) == 0;
                if !empty {
                    h.empty_since = None;
                } else if h.empty_since.is_none() {
                    h.empty_since = Some(Instant::now());
                }
            }
            for name in eon_balancer::to_park(&views(&hosts, &per_host)) {
                let h = hosts.get_mut(&name).expect("a viewed host");
                let empty_for = h.empty_since.map(|t| t.elapsed()).unwrap_or_default();
                h.set(HostState::Parked);
                h.empty_since = None;
                off.push((name.clone(), h.spec.power_off.clone().unwrap_or_default()));
                decisions.push((
                    name.clone(),
                    format!(
                        "no instance for {}s (park_after {}s)",
                        empty_for.as_secs(),
                        h.spec.park_after.as_secs()
                    ),
                    format!("park {name}"),
                ));
            }
        }
        for (name, cmd) in off {
            self.run_power_command(&name, "power_off", &cmd);
        }
        for (name, rule, action) in decisions {
            self.decisions.record(pb::Decision {
                at_unix_ms: eon_common::unix_ms(),
                service: format!("host {name}"),
                rule,
                actions: vec![action],
                ..Default::default()
            });
        }
    }

    pub(crate) fn hosts_proto(&self) -> Vec<pb::Host> {
        let per_host = self.instances_per_host();
        self.hosts
            .lock()
            .unwrap()
            .values()
            .map(|h| pb::Host {
                name: h.spec.name.clone(),
                state: h.state.as_str().into(),
                address: h.address.clone().unwrap_or_default(),
                slots: h.spec.slots,
                instances: per_host.get(&h.spec.name).copied().unwrap_or(0),
                can_park: h.spec.power_off.is_some(),
                since_unix_ms: h.since_unix_ms,
            })
            .collect()
    }
}

/// The hosts as the balancer's rules see them.
fn views(
    hosts: &BTreeMap<String, Host>,
    per_host: &HashMap<String, u32>,
) -> Vec<eon_balancer::HostView> {
    hosts
        .values()
        .map(|h| eon_balancer::HostView {
            name: h.spec.name.clone(),
            local: h.spec.name == "local",
            power: match h.state {
                HostState::Awake => eon_balancer::Power::Awake,
                HostState::Waking => eon_balancer::Power::Waking,
                HostState::Parked => eon_balancer::Power::Parked,
                HostState::Unreachable => eon_balancer::Power::Unreachable,
            },
            slots: h.spec.slots,
            instances: per_host.get(&h.spec.name).copied().unwrap_or(0),
            can_power: h.spec.power_on.is_some() && h.spec.power_off.is_some(),
            empty_for: h.empty_since.map(|t| t.elapsed()).unwrap_or_default(),
            park_after: h.spec.park_after,
        })
        .collect()
}

/// The hosts a cluster starts with: `local`, and those declared (parked
/// until they join, if they can be powered on; unreachable otherwise).
pub fn initial(declared: &[HostSpec]) -> BTreeMap<String, Host> {
    let mut hosts = BTreeMap::new();
    let local = declared
        .iter()
        .find(|h| h.name == "local")
        .cloned()
        .unwrap_or_else(|| HostSpec {
            slots: u32::MAX,
            ..HostSpec::joined("local")
        });
    hosts.insert(
        "local".to_string(),
        Host::new(local, None, HostState::Awake),
    );
    for h in declared.iter().filter(|h| h.name != "local") {
        let state = if h.power_on.is_some() {
            HostState::Parked
        } else {
            HostState::Unreachable
        };
        hosts.insert(h.name.clone(), Host::new(h.clone(), None, state));
    }
    hosts
}

/// The host table of `AgentState`.
pub type HostTable = std::sync::Mutex<BTreeMap<String, Host>>;
