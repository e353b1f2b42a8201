//! Where shards' copies should live: the moves that even out the data
//! engines.
//!
//! Like the rest of this crate, a pure function of what was observed — the
//! up data engines, each replicated shard's copies with what is known of
//! its cost — so it can be tested on made-up clusters. The caller (the
//! cluster's agent) asks meta to make each move (`MoveReplica`); the
//! shard's Raft group then follows online.
//!
//! The rule, after CockroachDB's replica rebalancing:
//!
//! ```text
//!   share(e, d) = load of engine e in dimension d / the mean over engines
//!                 (d: copies, bytes, requests — those with any load at all)
//!   score(e)    = the mean of share(e, d) over the dimensions
//!   overfull    = score > 1 + tolerance        (the band: ±25 % by default)
//!   underfull   = score < 1 − tolerance        (a new engine, say)
//! ```
//!
//! While an engine is overfull (or one is underfull: then every engine
//! above the mean may give) and fewer than `max_moves` moves are under
//! way, the move that lowers the higher of the two engines' scores the most
//! is planned — one of the giving engine's copies to an engine keeping
//! none of that shard, on a host the shard's other copies do not use when
//! they were on different hosts — if it gains at least `min_gain`. A
//! planned move counts as made for the next one (moves in flight count as
//! load), and a shard moves at most once per plan.
//!
//! **Draining.** An engine being drained (`eon shard drain`) takes no
//! copies and does not count in the means; its copies move first, each to
//! the engine with the lowest score among those keeping none of the shard
//! (on a host the shard's other copies do not use, when there is one),
//! within the same limit on moves under way.

use std::collections::{HashMap, HashSet};

/// An up data engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Engine {
    pub id: u64,
    pub host: String,
    /// Being emptied of its copies.
    pub draining: bool,
}

/// One replicated shard: where its copies are, and what one copy costs
/// (0 where unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub table: u64,
    pub shard: u32,
    pub engines: Vec<u64>,
    pub bytes: u64,
    /// Requests per second.
    pub requests: f64,
}

/// The knobs of the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// How far above the mean an engine may be before copies leave it.
    pub tolerance: f64,
    /// The least drop in the higher score a move must bring.
    pub min_gain: f64,
    /// Moves under way at once, at most.
    pub max_moves: usize,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            tolerance: 0.25,
            min_gain: 0.05,
            max_moves: 2,
        }
    }
}

/// A copy to move, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub table: u64,
    pub shard: u32,
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// Each engine's load in each dimension: copies, bytes, requests.
type Loads = HashMap<u64, [f64; 3]>;

fn loads(engines: &[Engine], shards: &[Shard]) -> Loads {
    let mut out: Loads = engines.iter().map(|e| (e.id, [0.0; 3])).collect();
    for s in shards {
        for e in &s.engines {
            if let Some(l) = out.get_mut(e) {
                l[0] += 1.0;
                l[1] += s.bytes as f64;
                l[2] += s.requests;
            }
        }
    }
    out
}

/// Each engine's score (see the module docs).
fn scores(loads: &Loads) -> HashMap<u64, f64> {
    let n = loads.len().max(1) as f64;
    let means: Vec<f64> = (0..3)
        .map(|d| loads.values().map(|l| l[d]).sum::<f64>() / n)
        .collect();
    let dims: Vec<usize> = (0..3).filter(|d| means[*d] > 0.0).collect();
    loads
        .iter()
        .map(|(e, l)| {
            let score = if dims.is_empty() {
                1.0
            } else {
                dims.iter().map(|d| l[*d] / means[*d]).sum::<f64>() / dims.len() as f64
            };
            (*e, score)
        })
        .collect()
}

/// The best move of one of `from`'s copies: (gain, shard index, to).
#[allow(clippy::too_many_arguments)]
fn best_move(
    engines: &[Engine],
    host: &HashMap<u64, &str>,
    shards: &[Shard],
    loads: &Loads,
    score: &HashMap<u64, f64>,
    moved: &HashSet<(u64, u32)>,
    from: u64,
    high: f64,
    rules: &Rules,
) -> Option<(f64, usize, u64)> {
    let mut best: Option<(f64, usize, u64)> = None;
    for (i, s) in shards.iter().enumerate() {
        if !s.engines.contains(&from) || moved.contains(&(s.table, s.shard)) {
            continue;
        }
        let others: Vec<&str> = s
            .engines
            .iter()
            .filter(|e| **e != from)
            .map(|e| host[e])
            .collect();
        let spread = {
            let all: HashSet<&str> = s.engines.iter().map(|e| host[e]).collect();
            all.len() == s.engines.len()
        };
        for to in engines.iter().map(|e| e.id) {
            if s.engines.contains(&to) || (spread && others.contains(&host[&to])) {
                continue;
            }
            let mut after = loads.clone();
            let cost = [1.0, s.bytes as f64, s.requests];
            for (d, c) in cost.iter().enumerate() {
                after.get_mut(&from).unwrap()[d] -= c;
                after.get_mut(&to).unwrap()[d] += c;
            }
            let new = scores(&after);
            let gain = high.max(score[&to]) - new[&from].max(new[&to]);
            if gain >= rules.min_gain && best.is_none_or(|(g, _, _)| gain > g + 1e-9) {
                best = Some((gain, i, to));
            }
        }
    }
    best
}

/// The moves to make now, `in_flight` being under way already.
pub fn plan(engines: &[Engine], shards: &[Shard], in_flight: usize, rules: &Rules) -> Vec<Move> {
    let host: HashMap<u64, &str> = engines.iter().map(|e| (e.id, e.host.as_str())).collect();
    // Shards with a copy on an engine that is not up are the replacement's
    // business, not the balancer's.
    let mut shards: Vec<Shard> = shards
        .iter()
        .filter(|s| s.engines.len() > 1 && s.engines.iter().all(|e| host.contains_key(e)))
        .cloned()
        .collect();
    let staying: Vec<Engine> = engines.iter().filter(|e| !e.draining).cloned().collect();
    if staying.is_empty() {
        return vec![];
    }
    let mut loads = loads(&staying, &shards);
    let mut moved: HashSet<(u64, u32)> = HashSet::new();
    let mut out = Vec::new();
    for s in shards.iter_mut() {
        if in_flight + out.len() >= rules.max_moves {
            return out;
        }
        let Some(from) = s
            .engines
            .iter()
            .copied()
            .find(|e| engines.iter().any(|d| d.id == *e && d.draining))
        else {
            continue;
        };
        let others: Vec<&str> = s
            .engines
            .iter()
            .filter(|e| **e != from)
            .map(|e| host[e])
            .collect();
        let score = scores(&loads);
        let to = staying
            .iter()
            .filter(|e| !s.engines.contains(&e.id))
            .min_by(|a, b| {
                let shared = |e: &Engine| others.contains(&e.host.as_str());
                shared(a)
                    .cmp(&shared(b))
                    .then(score[&a.id].total_cmp(&score[&b.id]))
                    .then(a.id.cmp(&b.id))
            })
            .map(|e| e.id);
        let Some(to) = to else { continue };
        let reason = format!(
            "data engine {from} is being drained: shard {} of table {} moves to data engine \
             {to}, at {:.0} % of the mean load",
            s.shard,
            s.table,
            100.0 * score[&to]
        );
        out.push(make(s, &mut loads, &mut moved, from, to, reason));
    }
    while in_flight + out.len() < rules.max_moves {
        let score = scores(&loads);
        // Overfull engines, the fullest first; the first with a move
        // worth making gives one.
        let under = score.values().any(|s| *s < 1.0 - rules.tolerance);
        let mut overfull: Vec<(u64, f64)> = score
            .iter()
            .filter(|(_, s)| **s > 1.0 + rules.tolerance || (under && **s > 1.0))
            .map(|(e, s)| (*e, *s))
            .collect();
        overfull.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let Some((from, high, (_, i, to))) = overfull.into_iter().find_map(|(from, high)| {
            best_move(
                &staying, &host, &shards, &loads, &score, &moved, from, high, rules,
            )
            .map(|b| (from, high, b))
        }) else {
            break;
        };
        let s = &mut shards[i];
        let reason = format!(
            "data engine {from} is at {:.0} % of the mean load (band ±{:.0} %): shard {} of table {} \
             moves to data engine {to}, at {:.0} %",
            100.0 * high,
            100.0 * rules.tolerance,
            s.shard,
            s.table,
            100.0 * score[&to],
        );
        out.push(make(s, &mut loads, &mut moved, from, to, reason));
    }
    out
}

/// Count a planned move as made: its cost leaves `from` (a draining engine
/// has no load to lose) for `to`, and the shard moves no more this plan.
fn make(
    s: &mut Shard,
    loads: &mut Loads,
    moved: &mut HashSet<(u64, u32)>,
    from: u64,
    to: u64,
    reason: String,
) -> Move {
    let cost = [1.0, s.bytes as f64, s.requests];
    for (d, c) in cost.iter().enumerate() {
        if let Some(l) = loads.get_mut(&from) {
            l[d] -= c;
        }
        loads.get_mut(&to).unwrap()[d] += c;
    }
    for e in &mut s.engines {
        if *e == from {
            *e = to;
        }
    }
    moved.insert((s.table, s.shard));
    Move {
        table: s.table,
        shard: s.shard,
        from,
        to,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines(hosts: &[&str]) -> Vec<Engine> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Engine {
                id: i as u64 + 1,
                host: h.to_string(),
                draining: false,
            })
            .collect()
    }

    fn shards(lists: &[&[u64]]) -> Vec<Shard> {
        lists
            .iter()
            .enumerate()
            .map(|(i, l)| Shard {
                table: 7,
                shard: i as u32,
                engines: l.to_vec(),
                bytes: 0,
                requests: 0.0,
            })
            .collect()
    }

    /// Plan and make moves until there are none; returns how many.
    fn settle(es: &[Engine], ss: &mut [Shard], rules: &Rules) -> usize {
        let mut made = 0;
        loop {
            let moves = plan(es, ss, 0, rules);
            if moves.is_empty() {
                return made;
            }
            for m in moves {
                let s = ss.iter_mut().find(|s| s.shard == m.shard).unwrap();
                for e in &mut s.engines {
                    if *e == m.from {
                        *e = m.to;
                    }
                }
                made += 1;
            }
            assert!(made < 100, "moves do not end");
        }
    }

    fn copies(ss: &[Shard], e: u64) -> usize {
        ss.iter().filter(|s| s.engines.contains(&e)).count()
    }

    #[test]
    fn a_new_engine_gets_its_share_and_the_moves_end() {
        // Eight shards, three copies each, on three engines; a fourth comes.
        let es = engines(&["a", "b", "c", "d"]);
        let mut ss = shards(&[&[1, 2, 3][..]; 8]);
        let first = plan(&es, &ss, 0, &Rules::default());
        assert_eq!(first.len(), 2, "at most two moves at once: {first:?}");
        assert!(first.iter().all(|m| m.to == 4));
        assert!(first[0].reason.contains("133 %"), "{}", first[0].reason);
        // Moves in flight count: none more while two are under way.
        assert!(plan(&es, &ss, 2, &Rules::default()).is_empty());
        let made = settle(&es, &mut ss, &Rules::default());
        // 24 copies over 4 engines: 6 each is the mean; within ±25 %.
        assert!(copies(&ss, 4) >= 5, "{ss:?}");
        for e in 1..=4 {
            assert!(copies(&ss, e) <= 7, "{e}: {ss:?}");
        }
        assert!(made <= 6, "{made}");
        // Every shard still has three copies on three engines.
        for s in &ss {
            let set: HashSet<u64> = s.engines.iter().copied().collect();
            assert_eq!(set.len(), 3);
        }
    }

    #[test]
    fn balanced_clusters_and_down_engines_are_left_alone() {
        let es = engines(&["a", "b", "c", "d"]);
        let ss = shards(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1], &[4, 1, 2]]);
        assert!(plan(&es, &ss, 0, &Rules::default()).is_empty());
        // Engine 5 is not up: its shard is left to the replacement.
        let mut ss = shards(&[&[1, 2, 5][..]; 8]);
        assert!(plan(&es, &ss, 0, &Rules::default()).is_empty());
        ss[0].engines = vec![1, 2, 3];
        assert!(plan(&es[..3], &ss[..1], 0, &Rules::default()).is_empty());
    }

    #[test]
    fn a_draining_engine_is_emptied_first_and_gets_nothing() {
        // Four engines, 8 shards of three copies spread evenly; engine 2
        // is drained.
        let mut es = engines(&["a", "b", "c", "d"]);
        es[1].draining = true;
        let mut ss = shards(&[
            &[1, 2, 3],
            &[2, 3, 4],
            &[3, 4, 1],
            &[4, 1, 2],
            &[1, 2, 3],
            &[2, 3, 4],
            &[3, 4, 1],
            &[4, 1, 2],
        ]);
        let first = plan(&es, &ss, 0, &Rules::default());
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first.iter().all(|m| m.from == 2 && m.to != 2), "{first:?}");
        assert!(
            first[0].reason.contains("being drained"),
            "{}",
            first[0].reason
        );
        assert!(plan(&es, &ss, 2, &Rules::default()).is_empty());
        settle(&es, &mut ss, &Rules::default());
        assert_eq!(copies(&ss, 2), 0, "{ss:?}");
        for s in &ss {
            let set: HashSet<u64> = s.engines.iter().copied().collect();
            assert_eq!(set.len(), 3, "{ss:?}");
        }
        // 24 copies on the three others: 8 each.
        for e in [1, 3, 4] {
            assert_eq!(copies(&ss, e), 8, "{e}: {ss:?}");
        }
        // Draining every engine moves nothing: there is nowhere to go.
        for e in &mut es {
            e.draining = true;
        }
        assert!(plan(&es, &shards(&[&[1, 2, 3]]), 0, &Rules::default()).is_empty());
    }

    #[test]
    fn bytes_and_requests_weigh_and_hosts_stay_apart() {
        // Same copy counts, but engine 1's shards are big and busy.
        let es = engines(&["a", "b", "c", "d"]);
        let mut ss = shards(&[&[1, 2, 3], &[1, 2, 3], &[2, 3, 4], &[3, 4, 2], &[4, 2, 3]]);
        ss[0].bytes = 1000;
        ss[1].bytes = 1000;
        ss[0].requests = 50.0;
        // Engines 2 and 3 are at 133 % (1 at 107 %): the move that helps
        // most takes a big, busy shard to the empty engine 4.
        let moves = plan(&es, &ss, 0, &Rules::default());
        assert!(!moves.is_empty());
        assert!(moves[0].shard <= 1 && moves[0].to == 4, "{moves:?}");
        // Copies on different hosts stay on different hosts: 3 and 4 share
        // host c, so shard 0's copy on 1 may not go to 4.
        let es = engines(&["a", "b", "c", "c"]);
        let ss = shards(&[&[1, 2, 3][..]; 8]);
        let moves = plan(&es, &ss, 0, &Rules::default());
        assert!(moves.iter().all(|m| m.from == 3 && m.to == 4), "{moves:?}");
    }
}
