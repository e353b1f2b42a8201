//! Noticing a stalled process.
//!
//! A component answers its peers from an async runtime with a few worker
//! threads. If every worker is busy with work that does not yield (a long
//! computation, a blocking call), nothing else runs: pings go unanswered,
//! Raft heartbeats are late, and peers decide the component is gone. And if
//! the machine itself is overloaded, the whole process is not scheduled.
//! Both look the same from outside: a silent peer. [`watch`] tells them
//! apart from inside: a task on the runtime ticks every 100 ms, and a plain
//! thread checks the tick. When the tick is late by more than a second the
//! thread logs a warning with the threads that were running (state `R`) or
//! waiting on the disk (`D`) and the CPU time each used meanwhile; when the
//! thread was late itself, the process was not scheduled. With
//! `EON_STALL_GDB` set, the warning also prints every thread's stack (gdb
//! attached for a moment), to find what holds the workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How late the runtime's tick may be before a warning.
const LATE: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(100);

/// Start watching the current runtime (call from within it). `component`
/// names the process in the warnings.
pub fn watch(component: &'static str) {
    let start = Instant::now();
    let ticked = Arc::new(AtomicU64::new(0));
    let t = ticked.clone();
    tokio::spawn(async move {
        loop {
            t.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(TICK).await;
        }
    });
    let spawned = std::thread::Builder::new()
        .name("stall-watch".into())
        .spawn(move || {
            // Samples of the last second, oldest first: CPU time is compared
            // with the oldest.
            let mut history = std::collections::VecDeque::from([threads()]);
            let mut last_check = Instant::now();
            let mut reported = false;
            loop {
                std::thread::sleep(TICK);
                let now = Instant::now();
                let own_delay = now.duration_since(last_check).saturating_sub(TICK);
                last_check = now;
                let lag = Duration::from_millis(
                    (start.elapsed().as_millis() as u64)
                        .saturating_sub(ticked.load(Ordering::Relaxed)),
                );
                let sample = threads();
                if lag > LATE && !reported {
                    reported = true;
                    let busy: Vec<String> = sample
                        .iter()
                        .filter_map(|(tid, (name, state, cpu))| {
                            let used = cpu.saturating_sub(history[0].get(tid).map_or(0, |b| b.2));
                            let wchan =
                                std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
                                    .unwrap_or_default();
                            (name.starts_with("tokio") || matches!(state, 'R' | 'D') || used > 0)
                                .then(|| format!("{name}[{tid}] {state} {wchan} {}ms", used * 10))
                        })
                        .collect();
                    if std::env::var_os("EON_STALL_GDB").is_some() {
                        // (Debugging aid: every thread's stack, by gdb.)
                        let out = std::process::Command::new("gdb")
                            .args(["-p", &std::process::id().to_string(), "-batch"])
                            .args(["-ex", "thread apply all bt 30"])
                            .output();
                        if let Ok(out) = out {
                            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
                        }
                    }
                    tracing::warn!(
                        component,
                        lag_ms = lag.as_millis() as u64,
                        watcher_late_ms = own_delay.as_millis() as u64,
                        "the async runtime has not run a timer for over a second; busy threads: {}",
                        busy.join(", ")
                    );
                } else if lag <= LATE && reported {
                    reported = false;
                    tracing::info!(component, "the async runtime runs again");
                }
                history.push_back(sample);
                if history.len() > 10 {
                    history.pop_front();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the stall watcher: {e}");
    }
}

/// This process's threads: id → (name, state, CPU ticks), from
/// `/proc/self/task` (empty elsewhere).
fn threads() -> std::collections::HashMap<u32, (String, char, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "tid (name) S ppid … utime stime …": the name may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let state = rest.first().and_then(|s| s.chars().next()).unwrap_or('?');
        let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after ")".
        out.insert(tid, (name, state, ticks(11) + ticks(12)));
    }
    out
}
