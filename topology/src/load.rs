//! A host's load as its peers learn it: what it gossips, and the sample a
//! receiver keeps with the instant it arrived.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What a sidecar tells its peers about its load, a few times a second,
/// in one QUIC datagram. `seq` grows with every report, so a receiver can
/// drop one that arrives after a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadGossip {
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
    fn free_slots_count_the_queue_and_a_down_node_has_none() {
        let t0 = Instant::now();
        let sample = |slots, running, queued, node_up| LoadSample {
            report: LoadGossip {
                seq: 1,
                slots,
                running,
                queued,
                mean_exec_ms: 10,
                node_up,
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
