//! What peers say to each other: one request frame and one reply frame per
//! bidirectional QUIC stream. The first frame tells the stream's kind
//! (DESIGN §5): a Raft RPC, a proposal forwarded to the leader, a join, an
//! artifact fetch, or a status query.

use crate::peer::raft_rpc::{RaftReply, RaftRequest};
use crate::peer::ticket::{JoinTicket, TicketMember};
use serde::{Deserialize, Serialize};
use spillway_consensus::{ControlCommand, ControlResponse, JoinRefusal, MemberEntry};
use spillway_proto::Digest;

/// The first (and only) frame a peer sends on a stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Raft(RaftRequest),
    /// Append this command (sent to the leader).
    Propose(ControlCommand),
    /// Admit the sender (the only request a ticket holder may make).
    Join(JoinRequest),
    /// Send the artifact with this digest.
    FetchArtifact {
        digest: Digest,
    },
    /// How is your host doing?
    Status,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    Raft(RaftReply),
    /// The answer and the entry's log index.
    Proposed(Result<(ControlResponse, u64), ProposeError>),
    Joined(Result<JoinAccepted, JoinRefusal>),
    Artifact(Result<Vec<u8>, String>),
    Status(HostStatus),
    /// The request was not understood or not allowed; the text says why.
    Error(String),
}

/// Why a forwarded proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The receiver is not the leader; try `leader`.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("{0}")]
    Failed(String),
}

/// A host asking to be admitted.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub version: u16,
    pub ticket: JoinTicket,
    /// The joining host: its identity key, addresses, labels and GPUs (the
    /// id is assigned by the cluster).
    pub member: MemberEntry,
}

/// A host was admitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAccepted {
    pub id: u64,
    pub cluster_id: String,
    /// The members it must trust (and reach) until the log catches it up.
    pub members: Vec<TicketMember>,
}

/// One host's state, as `spillway status` shows it for every member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub node_up: bool,
    pub node_pid: Option<u32>,
    pub node_restarts: u64,
    pub slots: u32,
    pub running: u32,
    pub queued: u32,
    pub resident_artifacts: usize,
    pub backends: Vec<String>,
    /// The last control-log entry applied on that host.
    pub applied_index: Option<u64>,
}
