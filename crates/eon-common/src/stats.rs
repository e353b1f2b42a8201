//! The statistics every component reports, in one shape (`eon.v1.Stats`).
//!
//! A component owns one [`Recorder`]; request handlers wrap their work in
//! [`Recorder::start`] (counting requests, errors, in-flight work and
//! latency), and component-specific counters (rows scanned, WAL syncs, ...)
//! are named atomics from [`Recorder::counter`]. [`Recorder::snapshot`] adds
//! what the operating system knows (resident memory and CPU time, from
//! `/proc/self`). The balancer reads nothing but these snapshots.
//!
//! [`prometheus`] renders snapshots as Prometheus text: every component
//! serves its own at `GET /metrics` on its gRPC port (see
//! [`crate::node::metrics_routes`]), and the REST port serves the whole
//! cluster's. Every name starts with `eon_`; `component` and `instance`
//! labels tell the components apart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eon_proto::v1 as pb;

/// Upper bounds (µs) of the latency histogram buckets.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    10_000_000,
];

pub struct Recorder {
    component: &'static str,
    node_id: u64,
    started: Instant,
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    queue_depth: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    latency_sum_us: AtomicU64,
    counters: Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>,
}

impl Recorder {
    pub fn new(component: &'static str, node_id: u64) -> Arc<Recorder> {
        Arc::new(Recorder {
            component,
            node_id,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            counters: Mutex::new(BTreeMap::new()),
        })
    }

    /// A named counter; call once and keep the handle on hot paths.
    pub fn counter(&self, name: &'static str) -> Arc<AtomicU64> {
        self.counters
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .clone()
    }

    /// Set the number of requests waiting (for an instance, a lock, ...).
    pub fn set_queue_depth(&self, n: u64) {
        self.queue_depth.store(n, Ordering::Relaxed);
    }

    /// Count a request; finish it with [`Request::ok`] or by dropping it
    /// (which counts an error unless `ok` was called).
    pub fn start(self: &Arc<Self>) -> Request {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Request {
            rec: self.clone(),
            started: Instant::now(),
            ok: false,
        }
    }

    /// Time an async request body, counting an error when it fails.
    pub async fn track<T, E>(
        self: &Arc<Self>,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let req = self.start();
        let r = fut.await;
        if r.is_ok() {
            req.ok();
        }
        r
    }

    pub fn snapshot(&self, bytes_stored: u64) -> pb::Stats {
        let (memory_bytes, cpu_seconds) = process_usage();
        pb::Stats {
            component: self.component.to_string(),
            node_id: self.node_id,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            requests_total: self.requests.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_bounds_us: LATENCY_BOUNDS_US.to_vec(),
            latency_counts: self
                .latency
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            memory_bytes,
            cpu_seconds,
            bytes_stored,
            counters: self
                .counters
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
                .collect(),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }
}

/// One request in flight.
pub struct Request {
    rec: Arc<Recorder>,
    started: Instant,
    ok: bool,
}

impl Request {
    pub fn ok(mut self) {
        self.ok = true;
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let us = self.started.elapsed().as_micros() as u64;
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.rec.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.rec.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.rec.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.ok {
            self.rec.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resident memory (bytes) and CPU time (seconds) of this process.
pub fn process_usage() -> (u64, f64) {
    process_usage_of("self")
}

/// Resident memory (bytes) and CPU time (seconds) of process `pid` ("self"
/// or a number); zeros when it is gone.
pub fn process_usage_of(pid: &str) -> (u64, f64) {
    let page = 4096u64;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * page)
        .unwrap_or(0);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are
            // the 14th and 15th fields overall, in clock ticks (100 per second).
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// What a host has and uses: CPUs, total and available memory (bytes),
/// and the one-minute load average (from `/proc`).
pub fn host_usage() -> (u64, u64, u64, f64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    (cpus, field("MemTotal:"), field("MemAvailable:"), load1)
}

/// Add the host's CPUs, memory and load to an agent's statistics.
pub fn add_host_counters(s: &mut pb::Stats) {
    let (cpus, mem_total, mem_available, load1) = host_usage();
    s.counters.insert("host_cpus".into(), cpus);
    s.counters
        .insert("host_memory_total_bytes".into(), mem_total);
    s.counters
        .insert("host_memory_available_bytes".into(), mem_available);
    s.counters
        .insert("host_load1_percent".into(), (load1 * 100.0) as u64);
}

/// The `instance` label of a snapshot: `data-engine-2`, `meta`, ...
pub fn instance_name(s: &pb::Stats) -> String {
    if s.node_id == 0 {
        s.component.clone()
    } else {
        format!("{}-{}", s.component, s.node_id)
    }
}

/// Prometheus text (format 0.0.4) for some snapshots, each with its
/// `instance` label. Samples of one metric are grouped under one `# TYPE`
/// line, as the format requires.
pub fn prometheus(all: &[(String, pb::Stats)]) -> String {
    use std::fmt::Write;
    fn label(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }
    let mut out = String::new();
    let labels = |inst: &str, s: &pb::Stats| {
        format!(
            "component=\"{}\",instance=\"{}\"",
            label(&s.component),
            label(inst)
        )
    };
    type Get = fn(&pb::Stats) -> f64;
    let simple: [(&str, &str, &str, Get); 8] = [
        ("eon_up", "gauge", "1 when the component answered", |_| 1.0),
        (
            "eon_uptime_seconds",
            "gauge",
            "seconds since the component started",
            |s| s.uptime_ms as f64 / 1000.0,
        ),
        ("eon_requests_total", "counter", "requests served", |s| {
            s.requests_total as f64
        }),
        ("eon_errors_total", "counter", "requests that failed", |s| {
            s.errors_total as f64
        }),
        ("eon_in_flight", "gauge", "requests being served now", |s| {
            s.in_flight as f64
        }),
        ("eon_queue_depth", "gauge", "requests waiting", |s| {
            s.queue_depth as f64
        }),
        (
            "eon_resident_memory_bytes",
            "gauge",
            "resident memory of the process",
            |s| s.memory_bytes as f64,
        ),
        (
            "eon_bytes_stored",
            "gauge",
            "bytes the component stores",
            |s| s.bytes_stored as f64,
        ),
    ];
    for (name, kind, help, get) in simple {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (inst, s) in all {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(inst, s), get(s));
        }
    }
    let _ = writeln!(
        out,
        "# HELP eon_cpu_seconds_total user and system CPU time of the process\n# TYPE eon_cpu_seconds_total counter"
    );
    for (inst, s) in all {
        let _ = writeln!(
            out,
            "eon_cpu_seconds_total{{{}}} {}",
            labels(inst, s),
            s.cpu_seconds
        );
    }
    let _ = writeln!(
        out,
        "# HELP eon_request_duration_seconds request latency\n# TYPE eon_request_duration_seconds histogram"
    );
    for (inst, s) in all {
        let l = labels(inst, s);
        let mut cumulative = 0;
        for (i, count) in s.latency_counts.iter().enumerate() {
            cumulative += count;
            let le = match s.latency_bounds_us.get(i) {
                Some(b) => format!("{}", *b as f64 / 1e6),
                None => "+Inf".into(),
            };
            let _ = writeln!(
                out,
                "eon_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "eon_request_duration_seconds_sum{{{l}}} {}",
            s.latency_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "eon_request_duration_seconds_count{{{l}}} {cumulative}"
        );
    }
    // Component-specific counters: one metric per name.
    let mut names: BTreeMap<String, Vec<(&String, &pb::Stats, u64)>> = BTreeMap::new();
    for (inst, s) in all {
        for (k, v) in &s.counters {
            let name: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            names
                .entry(format!("eon_{name}"))
                .or_default()
                .push((inst, s, *v));
        }
    }
    for (name, samples) in names {
        let _ = writeln!(out, "# TYPE {name} untyped");
        for (inst, s, v) in samples {
            let _ = writeln!(out, "{name}{{{}}} {v}", labels(inst, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_errors_and_counters_are_counted() {
        let rec = Recorder::new("test", 1);
        rec.start().ok();
        drop(rec.start());
        rec.counter("rows").fetch_add(5, Ordering::Relaxed);
        let s = rec.snapshot(10);
        assert_eq!((s.requests_total, s.errors_total, s.in_flight), (2, 1, 0));
        assert_eq!(s.latency_counts.iter().sum::<u64>(), 2);
        assert_eq!(s.counters["rows"], 5);
        assert!(s.memory_bytes > 0);
    }

    #[test]
    fn prometheus_text_groups_samples_and_accumulates_buckets() {
        let a = Recorder::new("data-engine", 1);
        a.start().ok();
        a.start().ok();
        a.counter("rows_scanned").fetch_add(7, Ordering::Relaxed);
        let b = Recorder::new("data-engine", 2);
        drop(b.start());
        let text = prometheus(&[
            ("data-engine-1".into(), a.snapshot(5)),
            ("data-engine-2".into(), b.snapshot(0)),
        ]);
        assert_eq!(
            text.matches("# TYPE eon_requests_total counter").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains(
                "eon_requests_total{component=\"data-engine\",instance=\"data-engine-1\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "eon_errors_total{component=\"data-engine\",instance=\"data-engine-2\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "eon_bytes_stored{component=\"data-engine\",instance=\"data-engine-1\"} 5"
            ),
            "{text}"
        );
        assert!(text.contains("eon_request_duration_seconds_bucket{component=\"data-engine\",instance=\"data-engine-1\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("eon_request_duration_seconds_count{component=\"data-engine\",instance=\"data-engine-1\"} 2"), "{text}");
        assert!(
            text.contains(
                "eon_rows_scanned{component=\"data-engine\",instance=\"data-engine-1\"} 7"
            ),
            "{text}"
        );
        // Every sample line is `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
