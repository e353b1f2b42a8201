//! Supervision of processes: eon's own components and users' front ends.
//!
//! Each [`Instance`] is one child process — `eon meta`, `eon data-engine`,
//! `eon query-engine` ([`Launch::Eon`]) or a front end started from a recipe
//! ([`Launch::Shell`]) — watched by a task that:
//!
//! 1. starts it in its own process group (so a Ctrl-C in the terminal
//!    reaches only `eon up`, which then stops children in order, and a stop
//!    signal reaches everything a front end's shell started), with its
//!    output appended to `<data-dir>/logs/<name>.log` and a parent-death
//!    signal so no child outlives a killed supervisor;
//! 2. learns when it is ready: an eon component prints an
//!    `EON-READY {json}` line announcing its addresses; a front end passes
//!    its recipe's readiness check (HTTP, TCP or a command) within the
//!    start-up grace, and afterwards its liveness check — a front end that
//!    fails either is killed and restarted;
//! 3. when it exits without being asked to, logs why and starts it again
//!    after a back-off that doubles from 100 ms up to 5 s (and resets after
//!    30 s of healthy running);
//! 4. stops it with its stop signal (SIGTERM unless a recipe says
//!    otherwise), then SIGKILL after the stop timeout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eon_common::node::READY_PREFIX;
use eon_common::recipe::Check;
use eon_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, watch};

/// Longest a child may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long a child gets to stop after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

/// What a running child announced.
pub type Addresses = HashMap<String, String>;

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub pid: u32,
    pub restarts: u32,
    pub started_at_unix_ms: i64,
    pub addresses: Addresses,
    /// Why the last run ended, if it did.
    pub last_exit: Option<String>,
}

/// How an instance's process is started and known to be ready.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `eon <kind> <args…>`; ready when it prints its `EON-READY` line.
    Eon { exe: PathBuf },
    /// A user's front end: `sh -c <command>` in `dir` with `env`, listening
    /// on `port` (given to it in `$PORT`).
    Shell {
        command: String,
        dir: PathBuf,
        env: Vec<(String, String)>,
        port: u16,
        stop_signal: i32,
        stop_timeout: Duration,
        ready: Check,
        live: Option<Check>,
    },
    /// A front-end instance on another host: its agent runs it (as
    /// `Shell`), this one mirrors its state.
    Remote {
        host: String,
        agent: String,
        request: pb::StartFrontendRequest,
    },
}

impl Launch {
    fn stop_signal(&self) -> i32 {
        match self {
            Launch::Shell { stop_signal, .. } => *stop_signal,
            _ => libc::SIGTERM,
        }
    }

    fn stop_timeout(&self) -> Duration {
        match self {
            Launch::Shell { stop_timeout, .. } => *stop_timeout,
            _ => STOP_TIMEOUT,
        }
    }

    /// The host it runs on.
    pub fn host(&self) -> &str {
        match self {
            Launch::Remote { host, .. } => host,
            _ => "local",
        }
    }
}

pub struct Instance {
    pub name: String,
    pub kind: String,
    pub id: u64,
    /// Arguments after the executable; may be updated between restarts.
    pub args: Mutex<Vec<String>>,
    pub log_path: PathBuf,
    pub launch: Launch,
    status_tx: watch::Sender<Status>,
    stop: Notify,
    stopping: Mutex<bool>,
}

impl Instance {
    pub fn status(&self) -> Status {
        self.status_tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status_tx.subscribe()
    }

    pub fn to_proto(&self) -> pb::Instance {
        let s = self.status();
        pb::Instance {
            name: self.name.clone(),
            kind: self.kind.clone(),
            id: self.id,
            pid: if s.state == State::Running || s.state == State::Starting {
                s.pid
            } else {
                0
            },
            state: s.state.as_str().into(),
            restarts: s.restarts,
            started_at_unix_ms: s.started_at_unix_ms,
            log_path: self.log_path.display().to_string(),
            args: self.args.lock().unwrap().clone(),
            address: s
                .addresses
                .get("grpc")
                .or_else(|| s.addresses.get("http"))
                .cloned()
                .unwrap_or_default(),
            host: self.launch.host().to_string(),
        }
    }

    /// Wait until the instance is running (returns its addresses), or fails
    /// to get there within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Addresses, String> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let s = rx.borrow_and_update();
                match s.state {
                    State::Running => return Ok(s.addresses.clone()),
                    State::Stopped => return Err(format!("{} stopped", self.name)),
                    _ => {}
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let why = self
                    .status()
                    .last_exit
                    .unwrap_or_else(|| "no ready line".into());
                return Err(format!(
                    "{} did not become ready within {:?} ({why}); see {}",
                    self.name,
                    timeout,
                    self.log_path.display()
                ));
            }
        }
    }

    /// Ask the instance to stop (SIGTERM, then SIGKILL after `timeout`) and
    /// wait until it has.
    pub async fn stop(&self, timeout: Duration) {
        *self.stopping.lock().unwrap() = true;
        let mut rx = self.subscribe();
        let _ = self.status_tx.send_modify(|s| {
            if s.state != State::Stopped {
                s.state = State::Stopping
            }
        });
        self.stop.notify_one();
        let _ = tokio::time::timeout(
            timeout + Duration::from_secs(2),
            rx.wait_for(|s| s.state == State::Stopped),
        )
        .await;
    }
}

/// Start supervising a child: `eon kind args...` or a front end's command.
pub fn spawn(
    launch: Launch,
    name: &str,
    kind: &str,
    id: u64,
    args: Vec<String>,
    log_path: PathBuf,
) -> Arc<Instance> {
    let (status_tx, _) = watch::channel(Status {
        state: State::Starting,
        pid: 0,
        restarts: 0,
        started_at_unix_ms: 0,
        addresses: HashMap::new(),
        last_exit: None,
    });
    let inst = Arc::new(Instance {
        name: name.into(),
        kind: kind.into(),
        id,
        args: Mutex::new(args),
        log_path,
        launch,
        status_tx,
        stop: Notify::new(),
        stopping: Mutex::new(false),
    });
    tokio::spawn(supervise(inst.clone()));
    inst
}

async fn log_line(path: &PathBuf, line: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
    }
}

fn start_child(inst: &Instance) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&inst.log_path)?;
    let mut cmd = match &inst.launch {
        Launch::Eon { exe } => {
            let mut cmd = Command::new(exe);
            // The role is the first argument, so `ps` shows which process is
            // which.
            cmd.arg(&inst.kind).args(inst.args.lock().unwrap().iter());
            if let Some(secret) = eon_common::node::cluster_secret() {
                cmd.env(eon_common::node::SECRET_ENV, secret);
            }
            cmd
        }
        Launch::Shell {
            command,
            dir,
            env,
            port,
            ..
        } => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(command)
                .current_dir(dir)
                .env("PORT", port.to_string())
                .env("EON_INSTANCE", &inst.name)
                // Front ends are users' code, not members of the cluster.
                .env_remove(eon_common::node::SECRET_ENV);
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            cmd
        }
        Launch::Remote { .. } => unreachable!("remote instances are mirrored, not started here"),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Signal the child's whole process group (a front end's shell and what it
/// started).
fn signal_group(pid: u32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain syscall; the child leads its own process group.
        unsafe { libc::kill(-(pid as i32), sig) };
    }
}

async fn supervise(inst: Arc<Instance>) {
    if let Launch::Remote { agent, request, .. } = &inst.launch {
        return mirror(inst.clone(), agent.clone(), request.clone()).await;
    }
    let mut backoff = BACKOFF_START;
    loop {
        if *inst.stopping.lock().unwrap() {
            break;
        }
        inst.status_tx.send_modify(|s| {
            s.state = State::Starting;
            s.addresses.clear();
        });
        let mut child = match start_child(&inst) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot start {}: {e}", inst.name);
                tracing::error!("{msg}");
                inst.status_tx.send_modify(|s| {
                    s.state = State::Backoff;
                    s.last_exit = Some(msg);
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        let started = Instant::now();
        inst.status_tx.send_modify(|s| {
            s.pid = pid;
            s.started_at_unix_ms = eon_common::unix_ms();
        });
        tracing::info!(name = %inst.name, pid, "started");
        // Standard output: the ready line, then anything else into the log.
        let stdout = child.stdout.take().expect("piped stdout");
        let reader_inst = inst.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix(READY_PREFIX) {
                    let addrs: Addresses = serde_json_map(json);
                    reader_inst.status_tx.send_modify(|s| {
                        s.state = State::Running;
                        s.addresses = addrs;
                    });
                } else {
                    log_line(&reader_inst.log_path, &line).await;
                }
            }
        });
        // A front end is ready when its checks say so.
        let probe = match &inst.launch {
            Launch::Shell {
                port, ready, live, ..
            } => Some(tokio::spawn(probe(
                inst.clone(),
                pid,
                *port,
                ready.clone(),
                live.clone(),
            ))),
            _ => None,
        };
        let exit = tokio::select! {
            status = child.wait() => Some(status),
            _ = inst.stop.notified() => None,
        };
        let exit = match exit {
            Some(status) => status,
            None => {
                // Asked to stop: the stop signal, then SIGKILL after the
                // timeout.
                inst.status_tx.send_modify(|s| s.state = State::Stopping);
                signal_group(pid, inst.launch.stop_signal());
                let timeout = inst.launch.stop_timeout();
                match tokio::time::timeout(timeout, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        tracing::warn!(name = %inst.name, "did not stop within {timeout:?}; killing");
                        signal_group(pid, libc::SIGKILL);
                        let _ = child.kill().await;
                        child.wait().await
                    }
                }
            }
        };
        if let Some(p) = probe {
            p.abort();
        }
        if matches!(inst.launch, Launch::Shell { .. }) {
            // Whatever the shell left behind goes with it.
            signal_group(pid, libc::SIGKILL);
        }
        reader.abort();
        let how = match &exit {
            Ok(s) => describe_exit(s),
            Err(e) => format!("wait failed: {e}"),
        };
        if *inst.stopping.lock().unwrap() {
            tracing::info!(name = %inst.name, "stopped ({how})");
            break;
        }
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = BACKOFF_START;
        }
        let msg = format!(
            "{} (pid {pid}) exited unexpectedly: {how}; restarting in {backoff:?}",
            inst.name
        );
        tracing::warn!("{msg}");
        eprintln!("eon: {msg}");
        log_line(&inst.log_path, &format!("[eon up] {msg}")).await;
        inst.status_tx.send_modify(|s| {
            s.state = State::Backoff;
            s.restarts += 1;
            s.last_exit = Some(how);
            s.addresses.clear();
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = inst.stop.notified() => {}
        }
        // A stop may have been asked while it was down.
        if *inst.stopping.lock().unwrap() {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    inst.status_tx.send_modify(|s| {
        s.state = State::Stopped;
        s.addresses.clear();
    });
}

/// Watch a front end's checks: mark it running once its readiness check
/// passes (killing it if that takes longer than the grace), then kill it
/// after `failures` liveness failures in a row. The supervise loop restarts
/// it.
async fn probe(inst: Arc<Instance>, pid: u32, port: u16, ready: Check, live: Option<Check>) {
    let started = Instant::now();
    loop {
        if run_check(&ready, port, &inst).await {
            break;
        }
        if started.elapsed() >= ready.grace {
            let msg = format!(
                "{} did not pass its readiness check within {:?}; killing it",
                inst.name, ready.grace
            );
            tracing::warn!("{msg}");
            log_line(&inst.log_path, &format!("[eon] {msg}")).await;
            signal_group(pid, libc::SIGKILL);
            return;
        }
        tokio::time::sleep(ready.interval.min(Duration::from_millis(200))).await;
    }
    inst.status_tx.send_modify(|s| {
        if s.state == State::Starting {
            s.state = State::Running;
            s.addresses = HashMap::from([("http".to_string(), format!("127.0.0.1:{port}"))]);
        }
    });
    let Some(live) = live else { return };
    let mut failures = 0;
    loop {
        tokio::time::sleep(live.interval).await;
        if run_check(&live, port, &inst).await {
            failures = 0;
            continue;
        }
        failures += 1;
        if failures >= live.failures {
            let msg = format!(
                "{} failed its liveness check {failures} times in a row; restarting it",
                inst.name
            );
            tracing::warn!("{msg}");
            log_line(&inst.log_path, &format!("[eon] {msg}")).await;
            signal_group(pid, libc::SIGKILL);
            return;
        }
    }
}

/// Run one check against a front end on `port`; a check gets at most its
/// interval (and at least a second) to answer.
async fn run_check(check: &Check, port: u16, inst: &Instance) -> bool {
    let timeout = check.interval.max(Duration::from_secs(1));
    let attempt = async {
        if let Some(path) = &check.http {
            crate::ingress::http_get_ok(&format!("127.0.0.1:{port}"), path).await
        } else if let Some(command) = &check.command {
            let (dir, env) = match &inst.launch {
                Launch::Shell { dir, env, .. } => (dir.clone(), env.clone()),
                _ => (PathBuf::from("."), vec![]),
            };
            Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(dir)
                .envs(env)
                .env_remove(eon_common::node::SECRET_ENV)
                .env("PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success())
        } else {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

/// Supervise an instance another host's agent runs: start it there, mirror
/// its state here every 200 ms, stop it there when asked. When that agent
/// cannot be reached for two seconds the instance counts as lost (stopped)
/// and the balancer replaces it.
async fn mirror(inst: Arc<Instance>, agent: String, request: pb::StartFrontendRequest) {
    use eon_proto::v1::agent_client::AgentClient;
    let finish = |why: String| {
        inst.status_tx.send_modify(|s| {
            s.state = State::Stopped;
            s.addresses.clear();
            s.last_exit = Some(why);
        })
    };
    let Ok(channel) = eon_common::node::channel(&agent) else {
        return finish(format!("bad agent address {agent}"));
    };
    let mut client = AgentClient::new(channel);
    let remote = tokio::select! {
        r = client.start_frontend(request.clone()) => r,
        _ = inst.stop.notified() => return finish("stopped before it started".into()),
    };
    if let Err(e) = remote {
        let msg = format!("{} could not start on {agent}: {}", inst.name, e.message());
        tracing::warn!("{msg}");
        return finish(msg);
    }
    let mut unreachable_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = inst.stop.notified() => {
                let stop = pb::StopInstanceRequest { name: inst.name.clone(), timeout_ms: 0 };
                let _ = tokio::time::timeout(STOP_TIMEOUT + Duration::from_secs(2), client.stop(stop)).await;
                return finish("stopped".into());
            }
        }
        let listed = tokio::time::timeout(
            Duration::from_secs(1),
            client.list(pb::ListInstancesRequest {}),
        )
        .await;
        match listed {
            Ok(Ok(list)) => {
                unreachable_since = None;
                let Some(r) = list
                    .into_inner()
                    .instances
                    .into_iter()
                    .find(|i| i.name == inst.name)
                else {
                    return finish(format!("{} is gone from its host", inst.name));
                };
                inst.status_tx.send_if_modified(|s| {
                    let state = match r.state.as_str() {
                        "running" => State::Running,
                        "backoff" => State::Backoff,
                        "stopped" => State::Stopped,
                        "stopping" => State::Stopping,
                        _ => State::Starting,
                    };
                    let addresses = if r.address.is_empty() {
                        HashMap::new()
                    } else {
                        HashMap::from([("http".to_string(), r.address.clone())])
                    };
                    let changed = s.state != state
                        || s.pid != r.pid
                        || s.addresses != addresses
                        || s.restarts != r.restarts;
                    (
                        s.state,
                        s.pid,
                        s.addresses,
                        s.restarts,
                        s.started_at_unix_ms,
                    ) = (state, r.pid, addresses, r.restarts, r.started_at_unix_ms);
                    changed
                });
                if inst.status().state == State::Stopped {
                    return finish(format!("{} stopped on its host", inst.name));
                }
            }
            _ => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(2) {
                    return finish(format!("{}'s host agent {agent} is unreachable", inst.name));
                }
            }
        }
    }
}

fn describe_exit(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".into(),
    }
}

/// Parse the ready line's flat JSON object of strings.
fn serde_json_map(json: &str) -> Addresses {
    serde_json::from_str::<HashMap<String, serde_json::Value>>(json)
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
