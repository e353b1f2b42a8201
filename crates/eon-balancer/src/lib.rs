//! eon's balancer: how many instances of a service should run.
//!
//! This crate owns the *decision core*: a pure function of what was
//! observed, the service's recipe and the clock — no I/O, no processes —
//! so it can be tested on load traces (see the tests below) and every
//! decision can be explained. Acting on decisions (asking agents to start,
//! drain and stop instances) is the caller's job.
//!
//! The rule is Kubernetes' horizontal pod autoscaler:
//!
//! ```text
//!   raw      = ceil(load / target)            load summed over ready instances
//!   raw      = current   when |load / (current × target) − 1| ≤ tolerance (10 %)
//!   desired  = min(raw over the last up_window)    when scaling up
//!            = max(raw over the last down_window)  when scaling down
//!   desired  ∈ [current − down_step, current + up_step] ∩ [min, max]
//! ```
//!
//! Instances still starting (warming up) count toward `current` but their
//! load does not count, so a warm-up spike does not trigger more scale-up.
//! With `min = 0`, a service that had no load for `idle` goes to zero, and
//! any load (a request held at the ingress) brings it back to at least one
//! instance at once.
//!
//! Hosts have rules of their own, as pure: [`place`] packs new instances
//! onto the fullest awake host with room (so others stay empty), wakes a
//! parked host only when no awake one has room, and waits while one wakes;
//! [`to_park`] names the hosts that have been empty for their `park_after`.
//! The simulation tests below run load traces through both.
//!
//! Data engines' shard copies have a rule of their own ([`copies`]): the
//! moves that bring every engine within a band of the mean load.

pub mod copies;

use std::collections::VecDeque;
use std::time::Duration;

use eon_common::recipe::Scale;

/// Load within this fraction of the target changes nothing.
pub const TOLERANCE: f64 = 0.1;

/// What the balancer saw of one service at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Time since some fixed start.
    pub at: Duration,
    /// The load signal summed over ready instances (plus requests held at
    /// the ingress while nothing runs).
    pub load: f64,
    /// Ready instances.
    pub ready: u32,
    /// Instances started but not ready yet.
    pub starting: u32,
}

/// A decision, with what it was based on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub at: Duration,
    pub current: u32,
    pub desired: u32,
    /// The rule that set `desired`, in words.
    pub rule: String,
}

/// What the core remembers of one service between decisions.
#[derive(Debug, Clone, Default)]
pub struct Scaler {
    /// Raw recommendations inside the longest window.
    history: VecDeque<(Duration, u32)>,
    /// The last time the service had any load.
    last_load: Option<Duration>,
}

impl Scaler {
    pub fn new() -> Scaler {
        Scaler::default()
    }

    /// Decide how many instances the service should have.
    pub fn decide(&mut self, scale: &Scale, target: f64, obs: Observation) -> Decision {
        let current = obs.ready + obs.starting;
        if obs.load > 0.0 || self.last_load.is_none() {
            self.last_load = Some(obs.at);
        }
        let decision = |desired: u32, rule: String| Decision {
            at: obs.at,
            current,
            desired,
            rule,
        };

        // Scale from zero: any load starts one instance now (no window:
        // someone is waiting).
        if current == 0 {
            if obs.load > 0.0 {
                let d = 1.max(scale.min).min(scale.max);
                return decision(
                    d,
                    format!("scale from zero: load {:.1} with no instance", obs.load),
                );
            }
            if scale.min > 0 {
                return decision(scale.min.min(scale.max), "below min".into());
            }
            return decision(0, "scaled to zero and idle".into());
        }

        // The raw HPA recommendation.
        let raw = if obs.ready == 0 {
            current // all warming up: wait for them
        } else {
            let ratio = obs.load / (obs.ready as f64 * target);
            if (ratio - 1.0).abs() <= TOLERANCE {
                current
            } else {
                (obs.load / target).ceil() as u32
            }
        };
        let window = scale.up_window.max(scale.down_window);
        self.history.push_back((obs.at, raw));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| obs.at.saturating_sub(*t) > window)
        {
            self.history.pop_front();
        }
        let within = |w: Duration| {
            self.history
                .iter()
                .filter(move |(t, _)| obs.at.saturating_sub(*t) <= w)
                .map(|(_, r)| *r)
        };
        let (mut desired, mut rule) = if raw > current {
            let d = within(scale.up_window).min().unwrap_or(raw).max(current);
            (
                d,
                format!(
                    "load {:.1} over {} ready, target {target} each: {raw} wanted, {d} held over the up window",
                    obs.load, obs.ready
                ),
            )
        } else if raw < current {
            let d = within(scale.down_window).max().unwrap_or(raw).min(current);
            (
                d,
                format!(
                    "load {:.1} over {} ready, target {target} each: {raw} wanted, {d} held over the down window",
                    obs.load, obs.ready
                ),
            )
        } else {
            (
                current,
                format!(
                    "load {:.1} over {} ready within {:.0} % of target {target}",
                    obs.load,
                    obs.ready,
                    TOLERANCE * 100.0
                ),
            )
        };

        // Step limits.
        if desired > current + scale.up_step {
            desired = current + scale.up_step;
            rule.push_str(&format!("; limited to +{}", scale.up_step));
        }
        if desired + scale.down_step < current {
            desired = current - scale.down_step;
            rule.push_str(&format!("; limited to -{}", scale.down_step));
        }
        // Bounds, and scale to zero after the idle period.
        let idle_for = obs.at.saturating_sub(self.last_load.unwrap_or(obs.at));
        let floor = if scale.min == 0 && idle_for < scale.idle {
            1
        } else {
            scale.min
        };
        if scale.min == 0 && obs.load == 0.0 && idle_for >= scale.idle {
            return decision(
                0,
                format!(
                    "no load for {}s (idle {}s): scale to zero",
                    idle_for.as_secs(),
                    scale.idle.as_secs()
                ),
            );
        }
        if desired < floor {
            desired = floor;
            rule.push_str(&format!("; at least {floor}"));
        }
        if desired > scale.max {
            desired = scale.max;
            rule.push_str(&format!("; at most {}", scale.max));
        }
        decision(desired, rule)
    }
}

/// A host's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Awake,
    Waking,
    Parked,
    Unreachable,
}

/// What the balancer sees of one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub name: String,
    /// The cluster's own host (never parked; first among equals).
    pub local: bool,
    pub power: Power,
    /// Instances it takes.
    pub slots: u32,
    /// Instances on it now (not draining).
    pub instances: u32,
    /// It has power commands.
    pub can_power: bool,
    /// How long it has had no instance (zero while it has some).
    pub empty_for: Duration,
    pub park_after: Duration,
}

/// Where a new instance goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    On(String),
    /// No awake host has room: wake this one first.
    Wake(String),
    /// A host is waking; place once it has joined.
    Wait(String),
}

/// Where the next instance goes: pack onto the awake host with a free slot
/// that runs the most (the local host first among equals), so the others
/// stay empty and can be parked; with no room, wake a parked host (or wait
/// for one waking); with nothing to wake, the least-busy awake host takes
/// it beyond its slots — serving beats refusing.
pub fn place(hosts: &[HostView]) -> Option<Place> {
    let awake = || hosts.iter().filter(|h| h.power == Power::Awake);
    if let Some(h) = awake()
        .filter(|h| h.instances < h.slots)
        .max_by_key(|h| (h.instances, h.local))
    {
        return Some(Place::On(h.name.clone()));
    }
    if let Some(h) = hosts.iter().find(|h| h.power == Power::Waking) {
        return Some(Place::Wait(h.name.clone()));
    }
    if let Some(h) = hosts
        .iter()
        .find(|h| h.power == Power::Parked && h.can_power)
    {
        return Some(Place::Wake(h.name.clone()));
    }
    awake()
        .min_by_key(|h| (h.instances, !h.local))
        .map(|h| Place::On(h.name.clone()))
}

/// Hosts to park now: awake, not local, able to power off, and empty for
/// their `park_after`.
pub fn to_park(hosts: &[HostView]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| {
            h.power == Power::Awake
                && !h.local
                && h.can_power
                && h.instances == 0
                && h.empty_for >= h.park_after
        })
        .map(|h| h.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(min: u32, max: u32, up: u64, down: u64) -> Scale {
        Scale {
            min,
            max,
            idle: Duration::from_secs(60),
            up_window: Duration::from_secs(up),
            down_window: Duration::from_secs(down),
            up_step: 4,
            down_step: 1,
        }
    }

    /// Run a load trace (load per second) through the core with instances
    /// that become ready `warmup` seconds after they are started. Returns
    /// the instance count after each second.
    fn simulate(scale: &Scale, target: f64, warmup: u64, trace: &[f64]) -> Vec<u32> {
        let mut s = Scaler::new();
        // (ready at) for each instance.
        let mut instances: Vec<u64> = vec![0; scale.min as usize];
        let mut counts = Vec::new();
        for (sec, &load) in trace.iter().enumerate() {
            let now = sec as u64;
            let ready = instances.iter().filter(|&&r| r <= now).count() as u32;
            let starting = instances.len() as u32 - ready;
            // Requests are held while nothing runs; instances still warming
            // up carry none.
            let seen = if ready == 0 && !instances.is_empty() {
                0.0
            } else {
                load
            };
            let d = s.decide(
                scale,
                target,
                Observation {
                    at: Duration::from_secs(now),
                    load: seen,
                    ready,
                    starting,
                },
            );
            while (instances.len() as u32) < d.desired {
                instances.push(now + warmup);
            }
            while (instances.len() as u32) > d.desired {
                instances.pop();
            }
            counts.push(instances.len() as u32);
        }
        counts
    }

    fn changes(counts: &[u32]) -> usize {
        counts.windows(2).filter(|w| w[0] != w[1]).count()
    }

    #[test]
    fn a_load_step_is_met_quickly_and_within_bounds() {
        let sc = scale(1, 10, 0, 30);
        let mut trace = vec![8.0; 10];
        trace.extend(vec![40.0; 30]); // 5x
        let counts = simulate(&sc, 10.0, 2, &trace);
        assert_eq!(counts[9], 1);
        let reached = counts.iter().position(|&c| c >= 4).unwrap();
        assert!(
            reached <= 11,
            "4 instances {} s after the step: {counts:?}",
            reached - 10
        );
        assert!(counts.iter().all(|&c| (1..=10).contains(&c)));
        assert_eq!(*counts.last().unwrap(), 4);
    }

    #[test]
    fn noise_around_the_target_causes_no_flapping() {
        let sc = scale(1, 10, 0, 60);
        // ±20 % noise around 3 instances' worth of load.
        let mut x: u64 = 12345;
        let trace: Vec<f64> = (0..300)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                30.0 * (0.8 + 0.4 * ((x >> 33) as f64 / (1u64 << 31) as f64))
            })
            .collect();
        let counts = simulate(&sc, 10.0, 2, &trace);
        let settled = &counts[30..];
        assert!(
            changes(settled) <= 2,
            "flapping: {} changes, {counts:?}",
            changes(settled)
        );
        assert!(settled.iter().all(|&c| (3..=4).contains(&c)), "{counts:?}");
    }

    #[test]
    fn a_one_second_spike_with_an_up_window_starts_nothing() {
        let sc = scale(2, 10, 5, 60);
        let mut trace = vec![15.0; 20];
        trace[10] = 100.0;
        let counts = simulate(&sc, 10.0, 2, &trace);
        assert!(counts.iter().all(|&c| c == 2), "{counts:?}");
    }

    #[test]
    fn scale_down_waits_for_the_window_and_steps_down() {
        let sc = scale(1, 10, 0, 20);
        let mut trace = vec![60.0; 20];
        trace.extend(vec![5.0; 60]);
        let counts = simulate(&sc, 10.0, 1, &trace);
        assert_eq!(counts[19], 6);
        // Still 6 until the down window has passed since the drop.
        assert!(counts[20..39].iter().all(|&c| c == 6), "{counts:?}");
        // Then one at a time.
        let tail = &counts[39..];
        assert!(
            tail.windows(2).all(|w| w[0] == w[1] || w[0] == w[1] + 1),
            "{counts:?}"
        );
        assert_eq!(*counts.last().unwrap(), 1);
    }

    #[test]
    fn idle_services_go_to_zero_and_come_back_at_once() {
        let sc = scale(0, 5, 0, 10);
        let mut trace = vec![5.0; 10];
        trace.extend(vec![0.0; 100]); // long idle (idle = 60 s)
        trace.extend(vec![25.0; 20]);
        let counts = simulate(&sc, 10.0, 2, &trace);
        assert_eq!(counts[9], 1);
        assert!(
            counts[10..69].iter().all(|&c| c == 1),
            "kept one until idle: {counts:?}"
        );
        assert!(
            counts[71..110].iter().all(|&c| c == 0),
            "at zero: {counts:?}"
        );
        assert_eq!(counts[110], 1, "a request brings one back at once");
        assert_eq!(*counts.last().unwrap(), 3);
    }

    #[test]
    fn warming_instances_do_not_trigger_more_scale_up() {
        let sc = scale(1, 20, 0, 60);
        let mut trace = vec![10.0; 5];
        trace.extend(vec![50.0; 30]);
        // Slow warm-up: 10 s.
        let counts = simulate(&sc, 10.0, 10, &trace);
        assert!(
            counts.iter().all(|&c| c <= 5),
            "overshoot during warm-up: {counts:?}"
        );
    }

    #[test]
    fn decisions_explain_themselves() {
        let mut s = Scaler::new();
        let d = s.decide(
            &scale(1, 3, 0, 0),
            10.0,
            Observation {
                at: Duration::ZERO,
                load: 80.0,
                ready: 1,
                starting: 0,
            },
        );
        assert_eq!((d.current, d.desired), (1, 3));
        assert!(
            d.rule.contains("8 wanted") && d.rule.contains("at most 3"),
            "{}",
            d.rule
        );
    }

    #[test]
    fn a_ramp_is_followed_without_going_back_down() {
        let sc = scale(1, 8, 0, 30);
        // 0 → 16 over 60 s, held for 20 s.
        let mut trace: Vec<f64> = (0..60).map(|s| s as f64 * 16.0 / 60.0).collect();
        trace.extend(vec![16.0; 20]);
        let counts = simulate(&sc, 2.0, 2, &trace);
        assert!(
            counts.windows(2).all(|w| w[1] >= w[0]),
            "went down on a ramp: {counts:?}"
        );
        assert!(counts.iter().all(|&c| (1..=8).contains(&c)), "{counts:?}");
        // Keeps up: within 3 s of the ramp, enough instances (± tolerance).
        for (sec, &load) in trace.iter().enumerate().skip(3) {
            let needed = ((trace[sec - 3] / 2.0) * (1.0 - TOLERANCE)).floor() as u32;
            assert!(
                counts[sec] >= needed.min(8),
                "second {sec}: load {load}, {} instances: {counts:?}",
                counts[sec]
            );
        }
        assert_eq!(*counts.last().unwrap(), 8);
    }

    /// An empty host; all but the local one can be powered on and off,
    /// and park after 5 s empty.
    fn host(name: &str, local: bool, power: Power, slots: u32) -> HostView {
        HostView {
            name: name.into(),
            local,
            power,
            slots,
            instances: 0,
            can_power: !local,
            empty_for: Duration::ZERO,
            park_after: Duration::from_secs(5),
        }
    }

    /// Hosts over time: a load trace scaled by the core, instances placed
    /// by [`place`], hosts woken (ready `wake` seconds later) and parked by
    /// [`to_park`]. Returns, per second, the instances on each host and
    /// each host's power state.
    fn simulate_hosts(trace: &[f64], wake: u64) -> Vec<Vec<(u32, Power)>> {
        let sc = Scale {
            idle: Duration::from_secs(3600),
            ..scale(1, 5, 0, 3)
        };
        let mut s = Scaler::new();
        let mut hosts = vec![
            // The local host: one slot, no power commands.
            host("local", true, Power::Awake, 1),
            // b and c: two slots each, parked until needed.
            host("b", false, Power::Parked, 2),
            host("c", false, Power::Parked, 2),
        ];
        let mut woken_at: Vec<Option<u64>> = vec![None; 3];
        let mut out = Vec::new();
        for (sec, &load) in trace.iter().enumerate() {
            let now = sec as u64;
            for (h, at) in hosts.iter_mut().zip(woken_at.iter_mut()) {
                if h.power == Power::Waking && at.is_some_and(|t| now >= t + wake) {
                    h.power = Power::Awake;
                    *at = None;
                }
            }
            let current: u32 = hosts.iter().map(|h| h.instances).sum();
            let d = s.decide(
                &sc,
                2.0,
                Observation {
                    at: Duration::from_secs(now),
                    load,
                    ready: current,
                    starting: 0,
                },
            );
            for _ in current..d.desired {
                match place(&hosts) {
                    Some(Place::On(n)) => {
                        hosts.iter_mut().find(|h| h.name == n).unwrap().instances += 1
                    }
                    Some(Place::Wake(n)) => {
                        let i = hosts.iter().position(|h| h.name == n).unwrap();
                        hosts[i].power = Power::Waking;
                        woken_at[i] = Some(now);
                        break;
                    }
                    Some(Place::Wait(_)) | None => break,
                }
            }
            for _ in d.desired..current {
                // Drain from the emptiest non-local host first.
                let h = hosts
                    .iter_mut()
                    .filter(|h| h.instances > 0)
                    .min_by_key(|h| (h.local, h.instances))
                    .unwrap();
                h.instances -= 1;
            }
            for h in hosts.iter_mut() {
                h.empty_for = if h.instances == 0 {
                    h.empty_for + Duration::from_secs(1)
                } else {
                    Duration::ZERO
                };
            }
            for n in to_park(&hosts) {
                hosts.iter_mut().find(|h| h.name == n).unwrap().power = Power::Parked;
            }
            out.push(hosts.iter().map(|h| (h.instances, h.power)).collect());
        }
        out
    }

    #[test]
    fn hosts_are_woken_only_when_needed_and_parked_when_empty() {
        // Load for 1, then for 3, then 1 again, then 5, then 1.
        let mut trace = vec![2.0; 10];
        trace.extend(vec![6.0; 20]);
        trace.extend(vec![2.0; 20]);
        trace.extend(vec![10.0; 20]);
        trace.extend(vec![2.0; 25]);
        let states = simulate_hosts(&trace, 2);
        // Never an instance on a host that is not awake.
        for (sec, hs) in states.iter().enumerate() {
            for (i, (n, p)) in hs.iter().enumerate() {
                assert!(
                    *n == 0 || *p == Power::Awake,
                    "second {sec}: host {i} has {n} instances while {p:?}"
                );
            }
        }
        // Low load: only the local host.
        assert_eq!(
            states[9],
            vec![(1, Power::Awake), (0, Power::Parked), (0, Power::Parked)]
        );
        // Three instances: b is woken (c stays parked) and takes two.
        assert_eq!(
            states[29],
            vec![(1, Power::Awake), (2, Power::Awake), (0, Power::Parked)]
        );
        // Load gone: b drained and parked again.
        assert_eq!(
            states[49],
            vec![(1, Power::Awake), (0, Power::Parked), (0, Power::Parked)]
        );
        // Five: b woken again first, then c.
        assert_eq!(
            states[69],
            vec![(1, Power::Awake), (2, Power::Awake), (2, Power::Awake)]
        );
        // And both parked at the end.
        assert_eq!(
            states[94],
            vec![(1, Power::Awake), (0, Power::Parked), (0, Power::Parked)]
        );
        // No flapping: each host changes power state only at those steps
        // (b: wake, park, wake, park; c: wake, park).
        let flips = |i: usize| states.windows(2).filter(|w| w[0][i].1 != w[1][i].1).count();
        assert_eq!(flips(1), 6, "b: parked→waking→awake→parked twice");
        assert_eq!(flips(2), 3, "c: parked→waking→awake→parked once");
    }
}
