//! The cluster at one instant.

use crate::HostView;
use spillway_proto::NodeId;

/// A snapshot of the cluster: the scheduler's input and the status API's
/// answer. A single host sees itself as the whole cluster, its own leader.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub cluster_id: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<HostView>,
}

impl ClusterView {
    /// The view of a cluster of one host.
    pub fn single(cluster_id: String, host: HostView) -> Self {
        Self {
            cluster_id,
            leader: Some(host.id),
            term: 1,
            members: vec![host],
        }
    }

    /// A member by id.
    pub fn member(&self, id: NodeId) -> Option<&HostView> {
        self.members.iter().find(|m| m.id == id)
    }
}
