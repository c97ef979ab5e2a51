//! A host's load as its peers learn it: what it gossips, and the sample a
//! receiver keeps with the instant it arrived.

use serde::{Deserialize, Serialize};
use spillway_proto::Digest;
use std::time::{Duration, Instant};

/// The most weights one load report names.
pub const LOADED_WEIGHTS: usize = 16;

/// The weights resident on a host's GPUs, as its load reports carry them:
/// at most [`LOADED_WEIGHTS`] (the most recently used), each by the first 8
/// bytes of its digest. Fixed in size, so a report stays one small
/// datagram; a false match needs two weights of one cluster to share 64
/// bits of their BLAKE3 digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadedWeights {
    len: u8,
    ids: [u64; LOADED_WEIGHTS],
}

impl LoadedWeights {
    /// The first [`LOADED_WEIGHTS`] distinct digests of `digests`.
    pub fn of<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Self {
        let mut loaded = Self::default();
        for digest in digests {
            let id = Self::id(digest);
            if usize::from(loaded.len) == LOADED_WEIGHTS {
                break;
            }
            if !loaded.ids().contains(&id) {
                loaded.ids[usize::from(loaded.len)] = id;
                loaded.len += 1;
            }
        }
        loaded
    }

    fn id(digest: &Digest) -> u64 {
        u64::from_le_bytes(digest.0[..8].try_into().expect("eight bytes"))
    }

    fn ids(&self) -> &[u64] {
        &self.ids[..usize::from(self.len).min(LOADED_WEIGHTS)]
    }

    /// Whether `digest` is among them.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.ids().contains(&Self::id(digest))
    }

    pub fn len(&self) -> usize {
        self.ids().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a sidecar tells its peers about its load, a few times a second,
/// in one QUIC datagram. `seq` grows with every report of one run of the
/// sidecar, `incarnation` (the run's start, Unix ms) with every restart,
/// so a receiver can drop a report that arrives after a newer one
/// ([`LoadGossip::supersedes`]) and still hears a restarted host at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadGossip {
    pub incarnation: u64,
    pub seq: u64,
    /// Slots its node offers (0 while the node is down).
    pub slots: u32,
    /// Jobs holding a slot.
    pub running: u32,
    /// Jobs waiting in its local queue.
    pub queued: u32,
    /// Its recent mean execution time (0 when unknown).
    pub mean_exec_ms: u64,
    pub node_up: bool,
    /// Weights resident on its GPUs.
    pub weights: LoadedWeights,
}

impl LoadGossip {
    /// Whether this report is newer than `held` (the last one kept from
    /// the same host): from a later run of the host, or later in the same
    /// run. A restarted host's reports start a new run whose `seq` begins
    /// again at 1, so `seq` alone would drop them as stale for as long as
    /// the previous run lasted.
    pub fn supersedes(&self, held: Option<&LoadGossip>) -> bool {
        held.is_none_or(|h| (self.incarnation, self.seq) > (h.incarnation, h.seq))
    }
}

/// A peer's latest [`LoadGossip`] and when it arrived here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSample {
    pub report: LoadGossip,
    pub received: Instant,
}

impl LoadSample {
    /// Whether the sample is young enough to act on at `now`.
    pub fn fresh(&self, now: Instant, stale_after: Duration) -> bool {
        now.saturating_duration_since(self.received) <= stale_after
    }

    /// Slots free for a newcomer: neither running nor promised to a queued
    /// job (0 while the node is down).
    pub fn free(&self) -> u32 {
        let r = &self.report;
        if !r.node_up {
            return 0;
        }
        r.slots.saturating_sub(r.running.saturating_add(r.queued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_weights_keep_the_first_sixteen_distinct_digests() {
        let d = |i: u32| Digest::of(&i.to_le_bytes());
        let all: Vec<Digest> = (0..20).map(d).collect();
        let loaded = LoadedWeights::of(all.iter().chain(&all[..3]));
        assert_eq!(loaded.len(), LOADED_WEIGHTS);
        assert!((0..16).all(|i| loaded.contains(&d(i))));
        assert!(!loaded.contains(&d(16)), "past the cap");
        let twice = LoadedWeights::of([&d(1), &d(1), &d(2)]);
        assert_eq!(twice.len(), 2);
        assert!(LoadedWeights::default().is_empty());
        // One datagram: the report stays well under the 1 KiB the
        // receiver takes.
        let report = LoadGossip {
            weights: loaded,
            ..LoadGossip::default()
        };
        assert!(spillway_proto::frame::encode(&report).len() < 300);
    }

    #[test]
    fn a_restarted_host_is_heard_at_once_and_late_reports_are_dropped() {
        let report = |incarnation, seq| LoadGossip {
            incarnation,
            seq,
            ..LoadGossip::default()
        };
        let held = report(1_000, 500);
        for (new, kept) in [
            (report(1_000, 501), true),
            (report(1_000, 500), false),
            (report(1_000, 499), false),
            // The host restarted: its seq began again.
            (report(2_000, 1), true),
            // A report of a run before the one held, arriving late.
            (report(999, 900), false),
        ] {
            assert_eq!(new.supersedes(Some(&held)), kept, "{new:?}");
        }
        assert!(report(0, 0).supersedes(None));
    }

    #[test]
    fn free_slots_count_the_queue_and_a_down_node_has_none() {
        let t0 = Instant::now();
        let sample = |slots, running, queued, node_up| LoadSample {
            report: LoadGossip {
                incarnation: 1,
                seq: 1,
                slots,
                running,
                queued,
                mean_exec_ms: 10,
                node_up,
                weights: LoadedWeights::default(),
            },
            received: t0,
        };
        assert_eq!(sample(4, 1, 1, true).free(), 2);
        assert_eq!(sample(4, 4, 3, true).free(), 0);
        assert_eq!(sample(4, 0, 0, false).free(), 0);
        let s = sample(4, 0, 0, true);
        assert!(s.fresh(t0 + Duration::from_millis(500), Duration::from_secs(1)));
        assert!(!s.fresh(t0 + Duration::from_millis(1500), Duration::from_secs(1)));
    }
}
