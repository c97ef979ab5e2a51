//! The openraft type configuration.

use crate::command::{ControlCommand, ControlResponse};
use serde::{Deserialize, Serialize};

/// What the Raft membership records of a host (its node in openraft terms).
/// Identity keys, GPU inventory and labels join with the QUIC endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where its sidecar's QUIC endpoint listens.
    pub quic_addr: String,
    /// Where its HTTP ingress listens.
    pub http_addr: String,
}

openraft::declare_raft_types!(
    /// Spillway's Raft types: control commands in, control responses out,
    /// `u64` node ids, [`Member`] as the node.
    pub TypeConfig:
        D = ControlCommand,
        R = ControlResponse,
        NodeId = u64,
        Node = Member,
);
