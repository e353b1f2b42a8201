//! The statistics every component reports, in one shape (`eon.v1.Stats`).
//!
//! A component owns one [`Recorder`]; request handlers wrap their work in
//! [`Recorder::start`] (counting requests, errors, in-flight work and
//! latency), and component-specific counters (rows scanned, WAL syncs, ...)
//! are named atomics from [`Recorder::counter`]. [`Recorder::snapshot`] adds
//! what the operating system knows (resident memory and CPU time, from
//! `/proc/self`). The balancer reads nothing but these snapshots.

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
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
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
            latency: Default::default(),
            counters: Mutex::new(BTreeMap::new()),
        })
    }

    /// A named counter; call once and keep the handle on hot paths.
    pub fn counter(&self, name: &'static str) -> Arc<AtomicU64> {
        self.counters.lock().unwrap().entry(name).or_default().clone()
    }

    /// Count a request; finish it with [`Request::ok`] or by dropping it
    /// (which counts an error unless `ok` was called).
    pub fn start(self: &Arc<Self>) -> Request {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Request { rec: self.clone(), started: Instant::now(), ok: false }
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
            latency_counts: self.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
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
        let bucket = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.rec.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.rec.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.ok {
            self.rec.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resident memory (bytes) and CPU time (seconds) of this process.
pub fn process_usage() -> (u64, f64) {
    let page = 4096u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * page)
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
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
}
