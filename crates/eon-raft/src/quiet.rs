//! Quiet groups: liveness per peer process instead of beats per group.
//!
//! A Raft leader proves it is alive by beating: every heartbeat interval it
//! sends each follower a message, and a follower that hears nothing for an
//! election timeout stands for election. That is one message per follower
//! per group per interval, idle or not: a data engine holding copies of 320
//! shards (40 tables of 8) spent about 18 % of a core on beats alone.
//!
//! With [`Options::quiet`](crate::Options::quiet), a process's groups
//! neither beat nor time out on their own (openraft's `enable_heartbeat`
//! and `enable_elect` are off). Instead the process beats once per *peer
//! process* every heartbeat interval ([`Beat`]: the groups it leads), and
//! watches its peers' beats, as CockroachDB quiesces idle ranges and
//! relies on node liveness:
//!
//! - **Followers.** A group that no peer has claimed to lead for
//!   [`SILENCE`] (its leader's process froze, died or was cut off, or
//!   nobody leads) gets its elections back, after a random stagger so that
//!   two followers seldom stand at once. openraft still waits out the lease
//!   the follower granted its last leader before it stands, so read leases
//!   stay sound. Once a peer claims the group again, it goes quiet again.
//! - **Leaders.** A group in which a live follower's log is behind the
//!   leader's (it was down, or missed entries) gets a heartbeat, which makes
//!   openraft send what is missing; so does a group another live peer
//!   claims too (one of the two claims is stale, and the exchange tells).
//! - **Everything else is unchanged.** Entries and the commit index go to
//!   followers as they happen, without beats, and a linearizable read's
//!   `ensure_linearizable` sends its own round.
//!
//! Meta's one group beats as usual; data engines' shard groups are quiet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{GroupId, Node, NodeId, Raft};

/// A group no live peer has claimed to lead for this long may elect
/// (about six missed beats at 150 ms).
pub const SILENCE: Duration = Duration::from_millis(1000);

/// Followers wait up to this much more, at random, before standing.
const STAGGER_MS: u64 = 500;

/// A leader sends a group at most one extra heartbeat this often.
const NUDGE_EVERY: Duration = Duration::from_millis(300);

/// One process's beat to a peer process.
#[derive(Debug, Serialize, Deserialize)]
pub struct Beat {
    pub from: NodeId,
    /// The groups whose leader it is.
    pub leads: Vec<GroupId>,
}

/// What this process last heard from each peer.
#[derive(Default)]
pub(crate) struct Peers(Mutex<HashMap<NodeId, Heard>>);

struct Heard {
    at: Instant,
    leads: HashSet<GroupId>,
}

impl Peers {
    pub(crate) fn heard(&self, beat: Beat) {
        self.0.lock().unwrap().insert(
            beat.from,
            Heard {
                at: Instant::now(),
                leads: beat.leads.into_iter().collect(),
            },
        );
    }

    /// The peers heard from within [`SILENCE`], and for each group the
    /// last time a peer's beat claimed it.
    fn view(&self, now: Instant) -> (HashSet<NodeId>, HashMap<GroupId, Instant>) {
        let heard = self.0.lock().unwrap();
        let mut alive = HashSet::new();
        let mut claimed: HashMap<GroupId, Instant> = HashMap::new();
        for (id, h) in heard.iter() {
            if now.duration_since(h.at) < SILENCE {
                alive.insert(*id);
            }
            for g in &h.leads {
                let at = claimed.entry(*g).or_insert(h.at);
                *at = (*at).max(h.at);
            }
        }
        (alive, claimed)
    }
}

/// What the watch remembers of one group between rounds.
struct Watch {
    /// When the watch first saw the group (a claim may not have come yet).
    since: Instant,
    /// Elections are on (the group went unclaimed).
    electing: bool,
    /// This episode's random wait on top of [`SILENCE`].
    stagger: Duration,
    nudged: Option<Instant>,
}

impl Watch {
    fn new(now: Instant) -> Watch {
        Watch {
            since: now,
            electing: false,
            stagger: stagger(),
            nudged: None,
        }
    }
}

fn stagger() -> Duration {
    Duration::from_millis(rand::random_range(0..=STAGGER_MS))
}

enum Act {
    Nudge(Raft),
    Elect(Raft, bool),
}

impl Node {
    /// Beat to peers and watch their beats, for as long as the node lives
    /// (quiet nodes only; see the module docs). Call once, on a runtime.
    pub fn watch_peers(self: &Arc<Self>) {
        if !self.quiet {
            return;
        }
        let node: Weak<Node> = Arc::downgrade(self);
        let every = self.beat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut watch: HashMap<GroupId, Watch> = HashMap::new();
            loop {
                tick.tick().await;
                let Some(node) = node.upgrade() else { return };
                node.quiet_round(&mut watch).await;
            }
        });
    }

    async fn quiet_round(&self, watch: &mut HashMap<GroupId, Watch>) {
        let now = Instant::now();
        let groups = self.running();
        watch.retain(|g, _| groups.iter().any(|(h, _)| h == g));
        let (alive, claimed) = self.peers.view(now);
        let mut leads = Vec::new();
        let mut peers: HashMap<NodeId, String> = HashMap::new();
        let mut acts = Vec::new();
        for (group, raft) in &groups {
            let w = watch.entry(*group).or_insert_with(|| Watch::new(now));
            // Decide under the metrics' borrow; act after it.
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            for (id, n) in membership.nodes() {
                if *id != self.id {
                    peers.entry(*id).or_insert_with(|| n.addr.clone());
                }
            }
            let last_claim = claimed.get(group).copied();
            if m.state == ServerState::Leader {
                leads.push(*group);
                let behind = m.replication.as_ref().is_some_and(|r| {
                    r.iter().any(|(id, matched)| {
                        *id != self.id
                            && alive.contains(id)
                            && matched.as_ref().map(|l| l.index) < m.last_log_index
                    })
                });
                let contested = last_claim.is_some_and(|t| now.duration_since(t) < SILENCE);
                if (behind || contested)
                    && w.nudged
                        .is_none_or(|t| now.duration_since(t) >= NUDGE_EVERY)
                {
                    w.nudged = Some(now);
                    acts.push(Act::Nudge(raft.clone()));
                }
                continue;
            }
            if !membership.voter_ids().any(|v| v == self.id) {
                continue;
            }
            let heard = last_claim.map_or(w.since, |t| t.max(w.since));
            let quiet_for = now.duration_since(heard);
            if quiet_for < SILENCE {
                if w.electing {
                    w.electing = false;
                    w.stagger = stagger();
                    acts.push(Act::Elect(raft.clone(), false));
                }
            } else if !w.electing && quiet_for >= SILENCE + w.stagger {
                w.electing = true;
                acts.push(Act::Elect(raft.clone(), true));
            }
        }
        for act in acts {
            match act {
                Act::Nudge(raft) => {
                    let _ = raft.trigger().heartbeat().await;
                }
                Act::Elect(raft, on) => {
                    tracing::debug!(on, "elections in a quiet group");
                    raft.runtime_config().elect(on);
                }
            }
        }
        let beat = Beat {
            from: self.id,
            leads,
        };
        self.network.beat(peers, &beat, SILENCE);
    }
}
