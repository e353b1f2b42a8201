//! Supervision of component processes.
//!
//! Each [`Instance`] is one child process (`eon meta`, `eon data-engine`,
//! `eon query-engine`), watched by a task that:
//!
//! 1. starts it in its own process group (so a Ctrl-C in the terminal
//!    reaches only `eon up`, which then stops children in order), with
//!    stderr appended to `<data-dir>/logs/<name>.log` and a parent-death
//!    signal so no child outlives a killed supervisor;
//! 2. reads its standard output for the `EON-READY {json}` line that
//!    announces its addresses;
//! 3. when it exits without being asked to, logs why and starts it again
//!    after a back-off that doubles from 100 ms up to 5 s (and resets after
//!    30 s of healthy running).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eon_common::node::READY_PREFIX;
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

pub struct Instance {
    pub name: String,
    pub kind: String,
    pub id: u64,
    /// Arguments after the executable; may be updated between restarts.
    pub args: Mutex<Vec<String>>,
    pub log_path: PathBuf,
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
            pid: if s.state == State::Running || s.state == State::Starting { s.pid } else { 0 },
            state: s.state.as_str().into(),
            restarts: s.restarts,
            started_at_unix_ms: s.started_at_unix_ms,
            log_path: self.log_path.display().to_string(),
            args: self.args.lock().unwrap().clone(),
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
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                let why = self.status().last_exit.unwrap_or_else(|| "no ready line".into());
                return Err(format!("{} did not become ready within {:?} ({why}); see {}", self.name, timeout, self.log_path.display()));
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
        let _ = tokio::time::timeout(timeout + Duration::from_secs(2), rx.wait_for(|s| s.state == State::Stopped)).await;
    }
}

/// Start supervising a child: `exe args...`.
pub fn spawn(exe: PathBuf, name: &str, kind: &str, id: u64, args: Vec<String>, log_path: PathBuf) -> Arc<Instance> {
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
        status_tx,
        stop: Notify::new(),
        stopping: Mutex::new(false),
    });
    tokio::spawn(supervise(exe, inst.clone()));
    inst
}

async fn log_line(path: &PathBuf, line: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
    }
}

fn start_child(exe: &PathBuf, inst: &Instance) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&inst.log_path)?;
    let mut cmd = Command::new(exe);
    // The role is the first argument, so `ps` shows which process is which.
    cmd.arg(&inst.kind)
        .args(inst.args.lock().unwrap().iter())
        .stdin(Stdio::null())
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

async fn supervise(exe: PathBuf, inst: Arc<Instance>) {
    let mut backoff = BACKOFF_START;
    loop {
        if *inst.stopping.lock().unwrap() {
            break;
        }
        inst.status_tx.send_modify(|s| {
            s.state = State::Starting;
            s.addresses.clear();
        });
        let mut child = match start_child(&exe, &inst) {
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
        let exit = tokio::select! {
            status = child.wait() => Some(status),
            _ = inst.stop.notified() => None,
        };
        let exit = match exit {
            Some(status) => status,
            None => {
                // Asked to stop: SIGTERM, then SIGKILL after the timeout.
                inst.status_tx.send_modify(|s| s.state = State::Stopping);
                if let Some(pid) = child.id() {
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        tracing::warn!(name = %inst.name, "did not stop within {STOP_TIMEOUT:?}; killing");
                        let _ = child.kill().await;
                        child.wait().await
                    }
                }
            }
        };
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
        let msg = format!("{} (pid {pid}) exited unexpectedly: {how}; restarting in {backoff:?}", inst.name);
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
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    inst.status_tx.send_modify(|s| {
        s.state = State::Stopped;
        s.addresses.clear();
    });
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
        .map(|m| m.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))).collect())
        .unwrap_or_default()
}
