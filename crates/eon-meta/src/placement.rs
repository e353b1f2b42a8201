//! Where a table's shards live: the engine of each shard
//! (`Table.placement`) and the engines keeping its copies
//! (`Table.replicas`).
//!
//! A shard's copies must not fail together. A host (a machine, or a
//! network namespace standing for one) fails as a whole, so copies go to
//! different hosts first; when there are fewer hosts than copies, the rest
//! go to different data engines on hosts already used, so that losing one
//! engine still leaves a majority. A data engine's host is the host part of
//! the address it registered.
//!
//! The first copy is the shard's `placement` engine (its preferred leader),
//! which rotates with the shard number and the table id so that leaders,
//! and so load, spread over the engines. Later copies are the next engines
//! in that rotation that are on hosts not used yet, then any not used yet.
//!
//! **Replacing a lost engine.** A data engine that has not been heard from
//! for `--replace-after` is lost: each copy it kept goes to an up engine
//! that keeps none of the shard, by the same preferences (a host the
//! shard's other copies do not use, then the engine with the fewest
//! copies), in its place in the list, whose `generation` then counts the
//! change. The shard's group follows (see `eon_data::replicas`): its
//! leader adds the new engine as a learner, which catches up by snapshot
//! and log, and then makes it a voter in place of the lost one.

use std::collections::{HashMap, HashSet};

pub use eon_common::node::host_of;
use eon_proto::v1 as pb;

/// Copies per shard when the table does not say: 3 once at least 3 data
/// engines are up (a majority survives losing one), else 1.
pub fn default_replication(engines: usize) -> u32 {
    if engines >= 3 { 3 } else { 1 }
}

/// An up data engine: its id and its host.
#[derive(Debug, Clone)]
pub struct Engine {
    pub id: u64,
    pub host: String,
}

/// Place `shards` shards, `factor` copies each, over `engines` (sorted by
/// id, at least `factor` of them), starting the rotation at `offset`.
/// Returns each shard's engine and its copies (that engine first).
pub fn place(
    shards: usize,
    factor: usize,
    engines: &[Engine],
    offset: usize,
) -> (Vec<u64>, Vec<pb::ShardReplicas>) {
    let mut placement = Vec::with_capacity(shards);
    let mut replicas = Vec::with_capacity(shards);
    for i in 0..shards {
        let start = (i + offset) % engines.len();
        let rotation = || (0..engines.len()).map(|k| &engines[(start + k) % engines.len()]);
        let mut chosen: Vec<&Engine> = Vec::with_capacity(factor);
        for e in rotation() {
            if chosen.len() < factor && chosen.iter().all(|c| c.host != e.host) {
                chosen.push(e);
            }
        }
        for e in rotation() {
            if chosen.len() < factor && chosen.iter().all(|c| c.id != e.id) {
                chosen.push(e);
            }
        }
        placement.push(chosen[0].id);
        replicas.push(pb::ShardReplicas {
            engines: chosen.iter().map(|e| e.id).collect(),
            generation: 0,
        });
    }
    (placement, replicas)
}

/// Replace the `lost` engines among a replicated shard's copies with up
/// engines keeping none of it (see the module docs); `copies` counts the
/// copies each engine keeps, and is kept up to date. Returns the
/// replacements made (lost, new); a lost engine stays when no engine can
/// take its place.
pub fn replace(
    shard: &mut pb::ShardReplicas,
    lost: &HashSet<u64>,
    up: &[Engine],
    copies: &mut HashMap<u64, usize>,
) -> Vec<(u64, u64)> {
    let mut made = Vec::new();
    if shard.engines.len() < 2 {
        // One copy: there is nothing to rebuild it from.
        return made;
    }
    for slot in 0..shard.engines.len() {
        let old = shard.engines[slot];
        if !lost.contains(&old) {
            continue;
        }
        let hosts: HashSet<&str> = shard
            .engines
            .iter()
            .filter(|e| !lost.contains(e))
            .filter_map(|e| up.iter().find(|u| u.id == *e))
            .map(|u| u.host.as_str())
            .collect();
        let best = up
            .iter()
            .filter(|u| !lost.contains(&u.id) && !shard.engines.contains(&u.id))
            .min_by_key(|u| {
                (
                    hosts.contains(u.host.as_str()),
                    copies.get(&u.id).copied().unwrap_or(0),
                    u.id,
                )
            });
        let Some(new) = best else { continue };
        shard.engines[slot] = new.id;
        *copies.entry(new.id).or_default() += 1;
        if let Some(c) = copies.get_mut(&old) {
            *c = c.saturating_sub(1);
        }
        made.push((old, new.id));
    }
    if !made.is_empty() {
        shard.generation += 1;
    }
    made
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
            })
            .collect()
    }

    #[test]
    fn copies_go_to_different_hosts_first_then_different_engines() {
        // Four engines on two hosts: three copies need both hosts and a
        // second engine on one of them.
        let es = engines(&["a", "a", "b", "b"]);
        let (placement, replicas) = place(8, 3, &es, 0);
        for (i, r) in replicas.iter().enumerate() {
            assert_eq!(r.engines[0], placement[i]);
            let mut ids = r.engines.clone();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 3, "{r:?}");
            let hosts: std::collections::BTreeSet<&str> = r
                .engines
                .iter()
                .map(|id| es[*id as usize - 1].host.as_str())
                .collect();
            assert_eq!(hosts.len(), 2, "{r:?}");
        }
        // Leaders rotate over every engine.
        let mut leaders = placement.clone();
        leaders.sort();
        leaders.dedup();
        assert_eq!(leaders, vec![1, 2, 3, 4]);

        // Three hosts, one engine each: one copy per host.
        let es = engines(&["a", "b", "c"]);
        let (_, replicas) = place(3, 3, &es, 5);
        for r in &replicas {
            let mut ids = r.engines.clone();
            ids.sort();
            assert_eq!(ids, vec![1, 2, 3]);
        }
        // One copy: just the rotation.
        let (placement, replicas) = place(4, 1, &es, 1);
        assert_eq!(placement, vec![2, 3, 1, 2]);
        assert!(replicas.iter().all(|r| r.engines.len() == 1));
    }

    #[test]
    fn a_lost_engines_copies_go_to_other_hosts_then_the_emptiest_engine() {
        // Engines 1..=5; 1 and 2 share host a. Shard on 1, 3, 4; 3 is lost.
        let es = engines(&["a", "a", "b", "c", "d"]);
        let up: Vec<Engine> = es.iter().filter(|e| e.id != 3).cloned().collect();
        let lost = HashSet::from([3]);
        let mut copies = HashMap::from([(2, 0), (5, 4)]);
        let mut shard = pb::ShardReplicas {
            engines: vec![1, 3, 4],
            generation: 0,
        };
        // 2 keeps fewer copies, but shares host a with 1: 5 gets it.
        assert_eq!(replace(&mut shard, &lost, &up, &mut copies), vec![(3, 5)]);
        assert_eq!(shard.engines, vec![1, 5, 4]);
        assert_eq!(shard.generation, 1);
        assert_eq!(copies[&5], 5);
        // Nothing lost: nothing changes.
        assert!(replace(&mut shard, &HashSet::new(), &up, &mut copies).is_empty());
        assert_eq!(shard.generation, 1);
        // No engine left to take it: the lost one stays.
        let mut shard = pb::ShardReplicas {
            engines: vec![1, 2, 3],
            generation: 0,
        };
        let few: Vec<Engine> = es[..2].to_vec();
        assert!(replace(&mut shard, &lost, &few, &mut copies).is_empty());
        assert_eq!(shard.engines, vec![1, 2, 3]);
        // One copy: nothing to rebuild from.
        let mut single = pb::ShardReplicas {
            engines: vec![3],
            generation: 0,
        };
        assert!(replace(&mut single, &lost, &up, &mut copies).is_empty());
    }

    #[test]
    fn hosts_come_from_addresses() {
        assert_eq!(host_of("10.0.0.7:5000"), "10.0.0.7");
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(default_replication(2), 1);
        assert_eq!(default_replication(3), 3);
    }
}
