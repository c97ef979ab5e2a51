//! The answering side of Raft RPCs: [`answer_raft`] hands one to the local
//! Raft (for `spillway host`'s peer handler), and [`serve_raft`] serves a
//! bare Raft member with nothing else ([`RaftOnly`]; tests and the control
//! log benchmark). The calling side is `raft_rpc`.

use crate::peer::artifact::ArtifactRefusal;
use crate::peer::service::{PeerHandler, PeerKind, serve, write_dispatch_reply};
use crate::peer::wire::{Dispatch, DispatchReply, PeerReply, PeerRequest, RaftReply, RaftRequest};
use crate::peer::{PeerEndpoint, PinnedPeers};
use spillway_consensus::{PublicKey, Raft, Snapshot};
use spillway_proto::{Digest, Refusal};
use std::io::Cursor;
use std::sync::Arc;

/// Answers Raft RPCs only (tests and tools that run a bare Raft).
#[derive(Debug, Clone)]
pub struct RaftOnly(pub Raft);

impl PeerHandler for RaftOnly {
    async fn handle(&self, _from: PeerKind, request: PeerRequest) -> PeerReply {
        match request {
            PeerRequest::Raft(r) => PeerReply::Raft(answer_raft(&self.0, r).await),
            _ => PeerReply::Error("this host answers Raft requests only".into()),
        }
    }

    async fn dispatch(&self, _from: PublicKey, _job: Dispatch, mut send: quinn::SendStream) {
        // A bare Raft member has no node.
        let refused = DispatchReply::Refused(Refusal::PeerFull);
        if write_dispatch_reply(&mut send, &refused).await {
            let _ = send.finish();
        }
    }

    fn datagram(&self, _from: PublicKey, _bytes: &[u8]) {}

    type Artifact = std::convert::Infallible;
    async fn artifact(
        &self,
        _digest: Digest,
        _from: u64,
    ) -> Result<Self::Artifact, ArtifactRefusal> {
        Err(ArtifactRefusal::Unavailable(
            "a bare Raft member has no node".into(),
        ))
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
