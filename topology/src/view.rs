//! The cluster at one instant, from one host.

use crate::HostView;
use spillway_proto::NodeId;

/// Every member as this host sees it, itself included.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// This host.
    pub local: NodeId,
    pub hosts: Vec<HostView>,
    /// Measured artifact transfer rate from peers, bytes per second (0:
    /// not measured yet; the scheduler then uses its policy's default).
    pub fetch_bytes_per_s: u64,
}

impl ClusterView {
    /// A member by id.
    pub fn host(&self, id: NodeId) -> Option<&HostView> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// This host's own entry, if the membership lists it yet.
    pub fn local_host(&self) -> Option<&HostView> {
        self.host(self.local)
    }

    /// Every member but this host.
    pub fn peers(&self) -> impl Iterator<Item = &HostView> {
        self.hosts.iter().filter(move |h| h.id != self.local)
    }
}
