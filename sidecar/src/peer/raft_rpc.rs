//! Raft RPCs over QUIC: one bidirectional stream per call, one request
//! frame and one reply frame (`proto` framing), with a deadline per call and
//! one reused connection per peer.

use crate::peer::PeerEndpoint;
use serde::{Deserialize, Serialize};
use spillway_consensus::{Raft, RaftTransport, Snapshot, TransportError};
use spillway_proto::frame;
use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft_types::*;

/// The openraft message types this module carries (re-exported by the
/// consensus crate's dependency; named here once).
mod openraft_types {
    pub(super) use spillway_consensus::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotMeta, SnapshotResponse, Vote,
        VoteRequest, VoteResponse,
    };
}

/// Largest RPC frame (a snapshot travels in one frame for now).
const MAX_RPC: usize = frame::MAX_FRAME_LEN;
/// Deadline of a vote or append.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of a snapshot transfer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The first (and only) frame a peer sends on a Raft stream.
#[derive(Debug, Serialize, Deserialize)]
enum RaftRequest {
    Append(AppendEntriesRequest),
    Vote(VoteRequest),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum RaftReply {
    Append(AppendEntriesResponse),
    Vote(VoteResponse),
    Snapshot(SnapshotResponse),
    /// The receiving Raft refused or failed; the text says why.
    Error(String),
}

/// Raft messages to peers over QUIC.
#[derive(Debug, Clone)]
pub struct QuicTransport {
    endpoint: PeerEndpoint,
    addresses: Arc<RwLock<HashMap<u64, SocketAddr>>>,
    connections: Arc<Mutex<HashMap<u64, quinn::Connection>>>,
}

impl QuicTransport {
    pub fn new(endpoint: PeerEndpoint) -> Self {
        Self {
            endpoint,
            addresses: Arc::default(),
            connections: Arc::default(),
        }
    }

    /// Where host `id` listens.
    pub fn set_address(&self, id: u64, addr: SocketAddr) {
        self.addresses
            .write()
            .expect("address book lock")
            .insert(id, addr);
    }

    async fn connection(&self, target: u64) -> Result<quinn::Connection, TransportError> {
        let cached = self
            .connections
            .lock()
            .expect("connections lock")
            .get(&target)
            .cloned();
        if let Some(c) = cached.filter(|c| c.close_reason().is_none()) {
            return Ok(c);
        }
        let unreachable = |reason: String| TransportError::Unreachable {
            peer: target,
            reason,
        };
        let addr = self
            .addresses
            .read()
            .expect("address book lock")
            .get(&target)
            .copied()
            .ok_or_else(|| unreachable("no known address".into()))?;
        let conn = tokio::time::timeout(RPC_TIMEOUT, self.endpoint.connect(addr))
            .await
            .map_err(|_| unreachable(format!("connecting to {addr} timed out")))?
            .map_err(|e| unreachable(format!("connecting to {addr}: {e}")))?;
        self.connections
            .lock()
            .expect("connections lock")
            .insert(target, conn.clone());
        Ok(conn)
    }

    async fn call(
        &self,
        target: u64,
        request: RaftRequest,
        deadline: Duration,
    ) -> Result<RaftReply, TransportError> {
        let conn = self.connection(target).await?;
        let failed = |reason: String| TransportError::Failed {
            peer: target,
            reason,
        };
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&frame::encode(&request))
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let bytes = recv.read_to_end(MAX_RPC).await.map_err(|e| e.to_string())?;
            frame::decode::<RaftReply>(&bytes, MAX_RPC)
                .map(|(r, _)| r)
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.connections
                    .lock()
                    .expect("connections lock")
                    .remove(&target);
                Err(failed(e))
            }
            Err(_) => Err(failed(format!("no answer within {deadline:?}"))),
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
        };
        match self.call(target, request, SNAPSHOT_TIMEOUT).await? {
            RaftReply::Snapshot(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }
}

/// Serves Raft RPCs arriving on `endpoint` to `raft` until the endpoint
/// closes. Connections from unpinned keys fail their handshake and are
/// never read.
pub async fn serve_raft(endpoint: PeerEndpoint, raft: Raft) {
    while let Some(incoming) = endpoint.accept().await {
        let raft = raft.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("peer handshake failed: {e}");
                    return;
                }
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(answer(raft.clone(), send, recv));
            }
        });
    }
}

async fn answer(raft: Raft, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let reply = match recv.read_to_end(MAX_RPC).await {
        Ok(bytes) => match frame::decode::<RaftRequest>(&bytes, MAX_RPC) {
            Ok((request, _)) => handle(&raft, request).await,
            Err(e) => RaftReply::Error(format!("bad request frame: {e}")),
        },
        Err(e) => RaftReply::Error(format!("reading the request: {e}")),
    };
    if send.write_all(&frame::encode(&reply)).await.is_ok() {
        let _ = send.finish();
    }
}

async fn handle(raft: &Raft, request: RaftRequest) -> RaftReply {
    match request {
        RaftRequest::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => RaftReply::Append(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => RaftReply::Vote(r),
            Err(e) => RaftReply::Error(e.to_string()),
        },
        RaftRequest::Snapshot { vote, meta, data } => {
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(data),
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => RaftReply::Snapshot(r),
                Err(e) => RaftReply::Error(e.to_string()),
            }
        }
    }
}
