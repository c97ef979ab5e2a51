//! How Raft messages reach peers: the [`RaftTransport`] trait, its adapter
//! to openraft's network traits, and [`MemoryTransport`] for in-process
//! clusters in tests.
//!
//! The sidecar will implement `RaftTransport` over QUIC streams. The trait
//! is deliberately small (four calls, one error type whose variant says
//! whether to back off) so the QUIC side never sees openraft's generics.

use crate::state_machine::StateMachine;
use crate::types::TypeConfig;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

type C = TypeConfig;

/// The snapshot a transport carries.
pub type Snapshot = SnapshotOf<C, Cursor<Vec<u8>>>;

/// The Raft handle of one host.
pub type Raft = openraft::Raft<C, StateMachine>;

/// Why a Raft message did not get an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached now (down, partitioned, not yet known):
    /// back off before the next try.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable { peer: u64, reason: String },
    /// The peer answered with an error, or the exchange broke midway: retry.
    #[error("peer {peer} failed the request: {reason}")]
    Failed { peer: u64, reason: String },
}

/// Delivers Raft messages to peers.
pub trait RaftTransport: Clone + Send + Sync + 'static {
    fn append_entries(
        &self,
        target: u64,
        rpc: AppendEntriesRequest<C>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<C>, TransportError>> + Send;

    fn vote(
        &self,
        target: u64,
        rpc: VoteRequest<C>,
    ) -> impl Future<Output = Result<VoteResponse<C>, TransportError>> + Send;

    fn full_snapshot(
        &self,
        target: u64,
        vote: VoteOf<C>,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<SnapshotResponse<C>, TransportError>> + Send;

    /// Asks `target` to take over as leader (a leader handing over before
    /// it stops voting).
    fn transfer_leader(
        &self,
        target: u64,
        rpc: TransferLeaderRequest<C>,
    ) -> impl Future<Output = Result<TransferLeaderResponse<C>, TransportError>> + Send;
}

/// openraft's network factory over any [`RaftTransport`].
#[derive(Debug, Clone)]
pub(crate) struct Network<T>(pub(crate) T);

/// One peer, as openraft sees it.
#[derive(Debug)]
pub(crate) struct Peer<T> {
    target: u64,
    transport: T,
}

impl<T: RaftTransport> RaftNetworkFactory<C> for Network<T> {
    type Network = Peer<T>;

    async fn new_client(&mut self, target: u64, _node: &crate::Member) -> Self::Network {
        Peer {
            target,
            transport: self.0.clone(),
        }
    }
}

fn rpc_error(e: TransportError) -> RPCError<C> {
    match e {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        TransportError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl<T: RaftTransport> RaftNetworkV2<C> for Peer<T> {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.transport
            .append_entries(self.target, rpc)
            .await
            .map_err(rpc_error)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.transport
            .vote(self.target, rpc)
            .await
            .map_err(rpc_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        self.transport
            .full_snapshot(self.target, vote, snapshot)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => {
                    StreamingError::Unreachable(Unreachable::new(&e))
                }
                TransportError::Failed { .. } => StreamingError::Network(NetworkError::new(&e)),
            })
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<C>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.transport
            .transfer_leader(self.target, rpc)
            .await
            .map_err(rpc_error)
    }
}

/// An in-process transport: every host's Raft in one map, with links that
/// tests can cut.
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    inner: Arc<Mutex<Routes>>,
}

#[derive(Debug, Default)]
struct Routes {
    hosts: HashMap<u64, Raft>,
    /// Hosts cut off from everyone.
    isolated: HashSet<u64>,
}

impl MemoryTransport {
    /// Makes `raft` reachable as host `id` (replacing an earlier one).
    pub fn register(&self, id: u64, raft: Raft) {
        self.inner
            .lock()
            .expect("routes lock")
            .hosts
            .insert(id, raft);
    }

    /// Makes host `id` unreachable, as if it had crashed.
    pub fn unregister(&self, id: u64) {
        self.inner.lock().expect("routes lock").hosts.remove(&id);
    }

    /// Cuts (or heals) every link of host `id`.
    pub fn isolate(&self, id: u64, isolated: bool) {
        let mut r = self.inner.lock().expect("routes lock");
        if isolated {
            r.isolated.insert(id);
        } else {
            r.isolated.remove(&id);
        }
    }

    fn route(&self, target: u64) -> Result<Raft, TransportError> {
        let r = self.inner.lock().expect("routes lock");
        if r.isolated.contains(&target) {
            return Err(TransportError::Unreachable {
                peer: target,
                reason: "isolated".into(),
            });
        }
        r.hosts
            .get(&target)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable {
                peer: target,
                reason: "not registered".into(),
            })
    }
}

fn failed(peer: u64, e: impl std::fmt::Display) -> TransportError {
    TransportError::Failed {
        peer,
        reason: e.to_string(),
    }
}

impl RaftTransport for MemoryTransport {
    async fn append_entries(
        &self,
        target: u64,
        rpc: AppendEntriesRequest<C>,
    ) -> Result<AppendEntriesResponse<C>, TransportError> {
        self.route(target)?
            .append_entries(rpc)
            .await
            .map_err(|e| failed(target, e))
    }

    async fn vote(
        &self,
        target: u64,
        rpc: VoteRequest<C>,
    ) -> Result<VoteResponse<C>, TransportError> {
        self.route(target)?
            .vote(rpc)
            .await
            .map_err(|e| failed(target, e))
    }

    async fn full_snapshot(
        &self,
        target: u64,
        vote: VoteOf<C>,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse<C>, TransportError> {
        self.route(target)?
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| failed(target, e))
    }

    async fn transfer_leader(
        &self,
        target: u64,
        rpc: TransferLeaderRequest<C>,
    ) -> Result<TransferLeaderResponse<C>, TransportError> {
        self.route(target)?
            .handle_transfer_leader(rpc)
            .await
            .map_err(|e| failed(target, e))
    }
}
