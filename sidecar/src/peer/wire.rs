//! What peers say to each other. The first frame on a bidirectional QUIC
//! stream tells the stream's kind (DESIGN §5): a Raft RPC, a proposal
//! forwarded to the leader, a join, an artifact fetch or a status query
//! (each answered by one reply frame), or a burst job ([`Dispatch`],
//! answered by a sequence of [`DispatchReply`] frames). Load reports travel
//! as datagrams ([`spillway_topology::LoadGossip`], one frame each).

use crate::peer::ticket::{JoinTicket, TicketMember};
use serde::{Deserialize, Serialize};
use spillway_consensus::{ControlCommand, ControlResponse, JoinRefusal, MemberEntry};
use spillway_proto::{Completion, Digest, Execute, Failure, Refusal};

/// The first (and only) frame a peer sends on a stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Raft(RaftRequest),
    /// Append this command (sent to the leader).
    Propose(ControlCommand),
    /// A client's change the asking member's API took, with the client's
    /// token, for the leader to check and write audited.
    ProposeAudited {
        token: String,
        command: ControlCommand,
    },
    /// Admit the sender (the only request a ticket holder may make).
    Join(JoinRequest),
    /// Send the artifact with this digest from byte `from` on (answered
    /// by an [`crate::peer::artifact::ArtifactHeader`] frame, then those
    /// bytes); `from` > 0 resumes a transfer that broke.
    FetchArtifact {
        digest: Digest,
        from: u64,
    },
    /// How is your host doing?
    Status,
    /// As leader, how far must a reader apply to see every change
    /// committed so far? (`Control::catch_up`.)
    ReadIndex,
    /// How stands this async job you accepted, for this tenant (cancel it
    /// first when `cancel`)? The asker checked the client's token.
    AsyncJob {
        job: spillway_proto::JobId,
        tenant: spillway_proto::TenantId,
        cancel: bool,
    },
    /// Run this job (a burst from the sender, which never sends it on).
    Dispatch(Dispatch),
}

/// Largest reply frame (an artifact or a snapshot travels in one frame).
pub(crate) const MAX_REPLY: usize = spillway_proto::frame::MAX_FRAME_LEN;

/// The largest snapshot a host sends or takes (it is held in memory).
pub(crate) const MAX_SNAPSHOT: u64 = 1 << 30;

impl PeerRequest {
    /// Bytes that follow this request's frame raw on its stream (a job's
    /// input, a snapshot's data), and the most that may.
    pub(crate) fn trailing(&self) -> (u64, u64) {
        match self {
            PeerRequest::Dispatch(d) => (d.input_len, MAX_REPLY as u64),
            PeerRequest::Raft(RaftRequest::Snapshot { data_len, .. }) => (*data_len, MAX_SNAPSHOT),
            _ => (0, 0),
        }
    }

    /// Puts the trailing bytes where they belong.
    pub(crate) fn attach(&mut self, bytes: Vec<u8>) {
        match self {
            PeerRequest::Dispatch(d) => d.execute.input = bytes,
            PeerRequest::Raft(RaftRequest::Snapshot { data, .. }) => *data = bytes,
            _ => {}
        }
    }

    /// Takes the trailing bytes out of the request (to send them after
    /// its frame), setting the length the frame announces.
    pub(crate) fn detach(&mut self) -> Vec<u8> {
        match self {
            PeerRequest::Dispatch(d) => {
                let input = std::mem::take(&mut d.execute.input);
                d.input_len = input.len() as u64;
                input
            }
            PeerRequest::Raft(RaftRequest::Snapshot { data, data_len, .. }) => {
                let data = std::mem::take(data);
                *data_len = data.len() as u64;
                data
            }
            _ => Vec::new(),
        }
    }
}

/// A burst job: what the origin's node would have received, and why.
///
/// On the wire the input is not inside the frame: `execute.input` travels
/// empty and `input_len` raw bytes follow the frame on the stream (one copy
/// fewer on each side; see `PeerClient::open_dispatch`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Dispatch {
    /// The job, its spec and input; `remaining_ms` is what is left of its
    /// deadline when the origin sends it, `trace` the origin's dispatch
    /// span.
    pub execute: Execute,
    /// Bytes of input that follow the frame (set by the sender).
    pub input_len: u64,
    /// The client's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
    /// 1 for the first peer tried, 2 for the next, and so on.
    pub attempt: u32,
    /// The origin holds a permit of the tenant's quota for this job (its
    /// own lease): the peer runs it without taking one of its own.
    pub borrowed_quota: bool,
}

/// A peer's answers on a dispatch stream, in order: `Accepted` or
/// `Refused`; after `Accepted`, any number of `Output` chunks as the guest
/// emits them, then `Completed` or `Failed`.
#[derive(Debug, Serialize, Deserialize)]
pub enum DispatchReply {
    /// The peer took a slot for the job: from now on it may run.
    Accepted,
    /// The peer will not run it (the job never ran there).
    Refused(Refusal),
    /// A chunk the guest emitted (numbered from 0), sent as it comes.
    Output {
        seq: u32,
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// The bytes `run` returned and the completion. The body is not inside
    /// the frame: `body_len` raw bytes follow it (`write_dispatch_reply` /
    /// `read_dispatch_reply` do this).
    Completed {
        #[serde(skip)]
        body: Vec<u8>,
        body_len: u64,
        completion: Completion,
        /// The peer's executor that ran it.
        executor: String,
    },
    /// The job failed there; `exec_us` when the node ran it.
    Failed {
        failure: Failure,
        exec_us: Option<u64>,
    },
}

impl DispatchReply {
    /// A job's output as a `Completed` answer.
    pub fn completed(body: Vec<u8>, completion: Completion, executor: String) -> Self {
        DispatchReply::Completed {
            body_len: body.len() as u64,
            body,
            completion,
            executor,
        }
    }
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    Raft(RaftReply),
    /// The answer and the entry's log index.
    Proposed(Result<(ControlResponse, u64), ProposeError>),
    Joined(Result<JoinAccepted, JoinRefusal>),
    Status(HostStatus),
    /// The leader's read index, or `NotLeader` / `Failed`.
    ReadIndex(Result<u64, ProposeError>),
    /// An async job's view (JSON), or why there is none.
    AsyncJob(Result<String, JobMiss>),
    /// The request was not understood or not allowed; the text says why.
    Error(String),
}

/// Why a host has no record of an async job to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JobMiss {
    /// No such job for this tenant (never, or so long ago it is forgotten).
    #[error("no job with that id")]
    Unknown,
    /// It ended and its result was kept for its time, or pushed out by
    /// newer results: gone.
    #[error("the job's result has expired")]
    Expired,
}

/// Why a forwarded proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The receiver is not the leader; try `leader`.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("{0}")]
    Failed(String),
    /// The client's token does not let it make the change.
    #[error("{0}")]
    Denied(crate::auth::Denial),
    /// Not a change the asker may make (a client's change without a token,
    /// another host's facts, a change for another tenant).
    #[error("refused: {0}")]
    Refused(String),
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
    /// Jobs its node has completed (and failed) since it started.
    pub completed: u64,
    pub failed: u64,
    /// Burst jobs this host sent to peers, and ran for peers.
    pub burst_out: u64,
    pub burst_in: u64,
    /// Each tenant with a concurrency quota: its use of this host's lease
    /// (what the leader rebalances by).
    pub quota_usage: std::collections::BTreeMap<spillway_proto::TenantId, QuotaUsage>,
    /// Weights resident on its GPUs.
    pub weights: Vec<spillway_proto::GpuWeights>,
    /// Each of its GPUs' memory.
    pub gpu_memory: Vec<spillway_proto::GpuMemory>,
    /// Burst jobs this host sent to each peer (by member id) and that
    /// ran there, since it started.
    pub burst_to: Vec<(u64, u64)>,
    /// Each of its executors (node processes).
    pub executors: Vec<ExecutorStatus>,
    /// Each tenant with a GPU memory quota: its use of this host's lease,
    /// in MiB. (Last: a status without it, from an earlier build, does
    /// not decode, so the leader writes no GPU memory leases until every
    /// host runs a build that applies them.)
    pub gpu_usage: std::collections::BTreeMap<spillway_proto::TenantId, QuotaUsage>,
}

/// One executor (node process) of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorStatus {
    pub name: String,
    pub up: bool,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub slots: u32,
    /// Jobs its sidecar has on it now.
    pub running: u32,
    /// The GPUs it uses (their ordinals on the host).
    pub gpus: Vec<u32>,
    /// The tenants it is kept for; empty: shared.
    pub confined_to: Vec<spillway_proto::TenantId>,
    /// How each of its GPUs is shared with other processes (MPS, MIG).
    pub sharing: Vec<spillway_proto::GpuSharing>,
}

/// The openraft message types a [`RaftRequest`] carries (re-exported by
/// the consensus crate's dependency; named here once).
mod openraft_types {
    pub(super) use spillway_consensus::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotMeta, SnapshotResponse,
        TransferLeaderRequest, TransferLeaderResponse, Vote, VoteRequest, VoteResponse,
    };
}
use openraft_types::*;

/// A Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest),
    Vote(VoteRequest),
    /// A whole snapshot: the frame, then `data_len` raw bytes of data
    /// (at most 1 GiB; see `PeerRequest::detach`).
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        #[serde(skip)]
        data: Vec<u8>,
        data_len: u64,
    },
    /// Take over as leader.
    TransferLeader(TransferLeaderRequest),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(AppendEntriesResponse),
    Vote(VoteResponse),
    Snapshot(SnapshotResponse),
    TransferLeader(TransferLeaderResponse),
    /// The receiving Raft refused or failed; the text says why.
    Error(String),
}

/// A tenant's use of its share on one host, as reported to the leader: in
/// jobs for its concurrency quota, in MiB for its GPU memory quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuotaUsage {
    /// Permits held (jobs waiting or running here, or burst from here), or
    /// MiB of GPU memory held.
    pub held: u32,
    /// Permits (or MiB) refused in the last two seconds: demand the share
    /// lacked.
    pub refused: u32,
    /// The lease epoch this host had applied when it measured.
    pub epoch: u64,
}
