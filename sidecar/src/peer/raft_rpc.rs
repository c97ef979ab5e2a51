//! Raft RPCs over QUIC: the [`RaftTransport`] of `spillway host`, over the
//! peer protocol's [`PeerClient`] (one stream per call, a deadline per
//! call, one reused connection per peer).

use crate::peer::client::PeerClient;
use crate::peer::service::{RaftOnly, serve};
use crate::peer::wire::{PeerReply, PeerRequest};
use crate::peer::{PeerEndpoint, PinnedPeers};
use serde::{Deserialize, Serialize};
use spillway_consensus::{Raft, RaftTransport, Snapshot, TransportError};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft_types::*;

/// The openraft message types this module carries (re-exported by the
/// consensus crate's dependency; named here once).
mod openraft_types {
    pub(super) use spillway_consensus::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotMeta, SnapshotResponse,
        TransferLeaderRequest, TransferLeaderResponse, Vote, VoteRequest, VoteResponse,
    };
}

/// Deadline of a vote or append.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of a snapshot transfer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Raft messages to peers over QUIC.
#[derive(Debug, Clone)]
pub struct QuicTransport {
    client: PeerClient,
}

impl QuicTransport {
    pub fn new(client: PeerClient) -> Self {
        Self { client }
    }

    async fn call(
        &self,
        target: u64,
        request: RaftRequest,
        deadline: Duration,
    ) -> Result<RaftReply, TransportError> {
        let mut request = PeerRequest::Raft(request);
        let trailing = request.detach();
        match self
            .client
            .call_with(target, &request, &trailing, deadline)
            .await?
        {
            PeerReply::Raft(reply) => Ok(reply),
            other => Err(TransportError::Failed {
                peer: target,
                reason: format!("unexpected reply {other:?}"),
            }),
        }
    }
}

fn unexpected(peer: u64, reply: RaftReply) -> TransportError {
    let reason = match reply {
        RaftReply::Error(e) => e,
        other => format!("unexpected reply {other:?}"),
    };
    TransportError::Failed { peer, reason }
}

impl RaftTransport for QuicTransport {
    async fn append_entries(
        &self,
        target: u64,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, TransportError> {
        match self
            .call(target, RaftRequest::Append(rpc), RPC_TIMEOUT)
            .await?
        {
            RaftReply::Append(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }

    async fn vote(&self, target: u64, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        match self
            .call(target, RaftRequest::Vote(rpc), RPC_TIMEOUT)
            .await?
        {
            RaftReply::Vote(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }

    async fn full_snapshot(
        &self,
        target: u64,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse, TransportError> {
        let request = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
            data_len: 0, // set when it is sent
        };
        match self.call(target, request, SNAPSHOT_TIMEOUT).await? {
            RaftReply::Snapshot(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }

    async fn transfer_leader(
        &self,
        target: u64,
        rpc: TransferLeaderRequest,
    ) -> Result<TransferLeaderResponse, TransportError> {
        match self
            .call(target, RaftRequest::TransferLeader(rpc), RPC_TIMEOUT)
            .await?
        {
            RaftReply::TransferLeader(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }
}

/// Serves Raft RPCs arriving on `endpoint` to `raft` until the endpoint
/// closes (a host with nothing but Raft; `spillway host` serves the whole
/// peer protocol). Connections from unpinned keys fail their handshake and
/// are never read.
pub async fn serve_raft(endpoint: PeerEndpoint, pinned: PinnedPeers, raft: Raft) {
    serve(endpoint, pinned, Arc::new(RaftOnly(raft))).await;
}

/// Hands one Raft RPC to the local Raft.
pub(crate) async fn answer_raft(raft: &Raft, request: RaftRequest) -> RaftReply {
    match request {
        RaftRequest::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => RaftReply::Append(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => RaftReply::Vote(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::Snapshot {
            vote, meta, data, ..
        } => {
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(data),
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => RaftReply::Snapshot(r),
                Err(e) => RaftReply::Error(e.to_string()),
            }
        }
        RaftRequest::TransferLeader(rpc) => match raft.handle_transfer_leader(rpc).await {
            Ok(r) => RaftReply::TransferLeader(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
    }
}
