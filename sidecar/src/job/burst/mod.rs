//! Peer burst: what this host knows of its peers' load, so that when its
//! node is full its jobs run on a peer that has room.
//!
//! ```text
//!  gossip loop ──datagram (LoadGossip) every --gossip-ms──▶ peers ──▶ Burst::record_load
//!  job::run ──▶ Burst::view (ClusterView from the log + loads + RTTs) ──▶ scheduler::place
//!         ──Decision::Peer──▶ origin::offer ──QUIC stream──▶ job::for_peer ──▶ its node
//! ```
//!
//! - `gossip` sends this host's load to every member a few times a second
//!   and keeps what the others send, with the RTT of each connection.
//! - `origin` offers a job to one peer and turns its answers into the
//!   job's outcome.
//! - a peer's job runs through `job::for_peer`, only if a slot is free
//!   now: one hop, a burst job is never queued or sent on.
//!
//! What it is not: the decision (`job::run`, through `scheduler::place`),
//! the scheduler's policy (pure, in `spillway-scheduler`), the transport
//! (`peer`), or artifact transfer (`artifacts`).

mod gossip;
pub(crate) mod origin;

pub(crate) use gossip::gossip_loop;

use crate::link::NodeStatus;
use crate::queue::LocalQueue;
use spillway_consensus::{ControlState, MemberState};
use spillway_proto::NodeId;
use spillway_scheduler::PlacementPolicy;
use spillway_topology::{ClusterView, HostView, LoadGossip, LoadSample, LoadedWeights};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What this host knows of its peers' load, and its burst settings.
#[derive(Debug)]
pub(crate) struct Burst {
    /// Whether jobs may go to peers at all (`--no-burst` turns it off:
    /// local queueing only).
    pub(crate) enabled: bool,
    pub(crate) policy: PlacementPolicy,
    pub(crate) gossip_every: Duration,
    peers: Mutex<HashMap<u64, PeerLoad>>,
    seq: AtomicU64,
    /// This run's start (Unix ms), so peers tell its reports from an
    /// earlier run's.
    incarnation: u64,
    pub(crate) sent: AtomicU64,
    /// `sent`, by peer.
    sent_by_peer: Mutex<std::collections::BTreeMap<u64, u64>>,
    pub(crate) received: AtomicU64,
    /// Signalled when a peer is known to have room (a report with free
    /// slots, or a burst job of ours ending there): wakes a job waiting in
    /// the local queue to be placed again at once, rather than at its next
    /// gossip round.
    pub(crate) room: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct PeerLoad {
    sample: Option<LoadSample>,
    rtt: Option<Duration>,
    /// Our jobs that peer took (+) and finished (−) since its last report,
    /// so placement between reports counts what it already sent.
    since_report: i64,
}

impl Burst {
    pub(crate) fn new(enabled: bool, policy: PlacementPolicy, gossip_every: Duration) -> Self {
        Self {
            enabled,
            policy,
            gossip_every,
            peers: Mutex::default(),
            seq: AtomicU64::new(0),
            incarnation: crate::now_unix_ms(),
            sent: AtomicU64::new(0),
            sent_by_peer: Mutex::default(),
            received: AtomicU64::new(0),
            room: Notify::new(),
        }
    }

    /// Keeps a peer's report unless a newer one already arrived.
    pub(crate) fn record_load(&self, peer: u64, report: LoadGossip, now: Instant) {
        let mut peers = self.peers.lock().expect("peer loads lock");
        let entry = peers.entry(peer).or_default();
        if !report.supersedes(entry.sample.as_ref().map(|s| &s.report)) {
            return;
        }
        entry.sample = Some(LoadSample {
            report,
            received: now,
        });
        entry.since_report = 0;
        let free = entry.sample.map_or(0, |s| s.free());
        drop(peers);
        if free > 0 {
            self.room.notify_one();
        }
    }

    /// One of our jobs ran on `peer` and was answered.
    pub(crate) fn ran_on(&self, peer: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        *self
            .sent_by_peer
            .lock()
            .expect("burst flows lock")
            .entry(peer)
            .or_default() += 1;
    }

    /// Jobs of ours that ran on each peer, by member id.
    pub(crate) fn sent_to(&self) -> Vec<(u64, u64)> {
        let flows = self.sent_by_peer.lock().expect("burst flows lock");
        flows.iter().map(|(&p, &n)| (p, n)).collect()
    }

    /// A peer accepted one of our jobs.
    pub(crate) fn peer_took(&self, peer: u64) {
        let mut peers = self.peers.lock().expect("peer loads lock");
        peers.entry(peer).or_default().since_report += 1;
    }

    /// One of our jobs ended on a peer: its slot is free now.
    pub(crate) fn peer_freed(&self, peer: u64) {
        let mut peers = self.peers.lock().expect("peer loads lock");
        peers.entry(peer).or_default().since_report -= 1;
        drop(peers);
        self.room.notify_one();
    }

    pub(crate) fn record_rtt(&self, peer: u64, rtt: Duration) {
        self.peers
            .lock()
            .expect("peer loads lock")
            .entry(peer)
            .or_default()
            .rtt = Some(rtt);
    }

    /// Each peer heard from: its gossip round trip and the age of its
    /// last load report at `now`.
    pub(crate) fn peers_seen(&self, now: Instant) -> Vec<crate::metrics::PeerSeen> {
        let peers = self.peers.lock().expect("peer loads lock");
        let mut seen: Vec<_> = peers
            .iter()
            .map(|(&peer, known)| crate::metrics::PeerSeen {
                peer,
                rtt: known.rtt,
                gossip_age: known
                    .sample
                    .map(|s| now.saturating_duration_since(s.received)),
            })
            .collect();
        seen.sort_by_key(|p| p.peer);
        seen
    }

    /// The next load report of this host.
    pub(crate) fn report(&self, queue: &LocalQueue, node: &NodeStatus) -> LoadGossip {
        let load = queue.load(node);
        LoadGossip {
            incarnation: self.incarnation,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            slots: if node.up { load.slots } else { 0 },
            running: load.running,
            queued: load.queued,
            mean_exec_ms: load.mean_exec_ms,
            node_up: node.up,
            weights: LoadedWeights::of(
                node.load
                    .iter()
                    .flat_map(|(report, _)| &report.weights)
                    .map(|w| &w.digest),
            ),
        }
    }

    /// The cluster as this host sees it now; `fetch_bytes_per_s` is the
    /// measured transfer rate between hosts.
    pub(crate) fn view(
        &self,
        state: &ControlState,
        local: u64,
        fetch_bytes_per_s: u64,
    ) -> ClusterView {
        let peers = self.peers.lock().expect("peer loads lock");
        let hosts = state
            .members()
            .filter(|m| m.state != MemberState::Removed)
            .map(|m| {
                let known = peers.get(&m.id).copied().unwrap_or_default();
                let load = known.sample.map(|mut s| {
                    let running = i64::from(s.report.running) + known.since_report;
                    s.report.running = running.clamp(0, i64::from(u32::MAX)) as u32;
                    s
                });
                HostView {
                    id: NodeId(m.id),
                    accepting: m.state == MemberState::Active,
                    gpus: m.gpus.len() as u32,
                    labels: m.labels.clone(),
                    load,
                    rtt: known.rtt,
                }
            })
            .collect();
        ClusterView {
            local: NodeId(local),
            hosts,
            fetch_bytes_per_s,
        }
    }
}
