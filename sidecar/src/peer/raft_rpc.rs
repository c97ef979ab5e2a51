//! Raft RPCs over QUIC: the [`RaftTransport`] of `spillway host`, over the
//! peer protocol's [`PeerClient`] (one stream per call, a deadline per
//! call, one reused connection per peer).

use crate::peer::client::PeerClient;
use crate::peer::wire::{PeerReply, PeerRequest, RaftReply, RaftRequest};
use spillway_consensus::{RaftTransport, Snapshot, TransportError};
use std::time::Duration;

use openraft_types::*;

/// The openraft message types this module carries (re-exported by the
/// consensus crate's dependency; named here once).
mod openraft_types {
    pub(super) use spillway_consensus::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
        TransferLeaderResponse, Vote, VoteRequest, VoteResponse,
    };
}

/// Deadline of a vote or append.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of a snapshot transfer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

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
