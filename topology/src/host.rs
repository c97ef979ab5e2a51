//! One host as seen from a sidecar.

use serde::{Deserialize, Serialize};
use spillway_proto::{Capabilities, LoadReport, NodeId};
use std::time::{Duration, Instant};

/// A host's part in the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Voter,
    Learner,
}

/// Whether a host serves work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its node is up and reporting.
    Active,
    /// Its sidecar serves but its node is down or restarting: new work
    /// waits in the queue (or goes to peers, once there are peers).
    Degraded,
}

/// One host: addresses, what its node can do and its latest load.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub id: NodeId,
    pub role: Role,
    pub http_addr: String,
    pub quic_addr: Option<String>,
    /// From the node's hello; `None` until the node has connected once.
    pub capabilities: Option<Capabilities>,
    /// The latest load report and when it arrived.
    pub load: Option<(LoadReport, Instant)>,
    /// Jobs waiting in the sidecar's queue.
    pub queued: u32,
    /// Whether the node is connected now.
    pub node_up: bool,
}

impl HostView {
    /// Active when the node is connected, else degraded.
    pub fn state(&self) -> HostState {
        if self.node_up {
            HostState::Active
        } else {
            HostState::Degraded
        }
    }

    /// Healthy: the node is up and its last load report is younger than
    /// `max_age` at `now`.
    pub fn healthy(&self, now: Instant, max_age: Duration) -> bool {
        self.node_up
            && self
                .load
                .is_some_and(|(_, at)| now.saturating_duration_since(at) <= max_age)
    }

    /// Slots the node offers (0 before its hello).
    pub fn slots(&self) -> u32 {
        self.capabilities.as_ref().map_or(0, |c| c.slots)
    }

    /// Jobs running on the node per its last report.
    pub fn running(&self) -> u32 {
        self.load.map_or(0, |(l, _)| l.running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(node_up: bool, load_at: Option<Instant>) -> HostView {
        HostView {
            id: NodeId(1),
            role: Role::Voter,
            http_addr: "127.0.0.1:1".into(),
            quic_addr: None,
            capabilities: None,
            load: load_at.map(|at| {
                (
                    LoadReport {
                        slots: 2,
                        running: 1,
                        ..Default::default()
                    },
                    at,
                )
            }),
            queued: 0,
            node_up,
        }
    }

    #[test]
    fn health_needs_a_live_node_and_a_fresh_report() {
        let t0 = Instant::now();
        let max = Duration::from_secs(3);
        assert!(host(true, Some(t0)).healthy(t0 + Duration::from_secs(1), max));
        assert!(!host(true, Some(t0)).healthy(t0 + Duration::from_secs(4), max));
        assert!(!host(false, Some(t0)).healthy(t0, max));
        assert!(!host(true, None).healthy(t0, max));
        assert_eq!(host(false, None).state(), HostState::Degraded);
        assert_eq!(host(true, Some(t0)).running(), 1);
    }
}
