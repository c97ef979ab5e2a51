//! The sidecar's peer side: QUIC between hosts, authenticated by pinned
//! ed25519 identities, carrying Raft RPCs, forwarded proposals, joins,
//! artifact fetches, status queries, burst jobs and load gossip.
//!
//! ```text
//!  HostIdentity (ed25519 key, self-signed cert) ─┐
//!  PinnedPeers (member keys, ticket keys) ───────┼─▶ endpoint (quinn, TLS 1.3, ALPN spillway/1)
//!  std UdpSocket (the one seam for chaos tests) ─┘        │
//!                PeerClient (calls, dispatch, datagrams) ◀┴▶ serve (PeerHandler)
//! ```
//!
//! Both sides present a certificate and both verify that the other's key is
//! pinned; a peer whose key is neither a member's nor a live ticket's never
//! completes the handshake, so none of its frames is read. A ticket holder
//! may only ask to join. What it is not: the meaning of the requests (the
//! sidecar's `control` and `burst` modules answer them).

mod admission;
pub mod artifact;
pub(crate) mod client;
mod endpoint;
mod faults;
mod identity;
mod pinning;
pub(crate) mod raft_rpc;
pub(crate) mod raft_serve;
mod service;
mod ticket;
mod wire;

pub use artifact::ArtifactRefusal;
pub use client::{ExchangeError, PeerClient};
pub use endpoint::{ALPN, ConnectError, PeerEndpoint};
pub(crate) use endpoint::{TlsRefusal, tls_refusal};
pub use faults::{FaultStats, Faults, FaultsError};
pub use identity::{HostIdentity, IdentityError};
pub use pinning::PinnedPeers;
pub use raft_rpc::QuicTransport;
pub use raft_serve::{RaftOnly, serve_raft};
pub use service::{PeerHandler, PeerKind, read_dispatch_reply, serve, write_dispatch_reply};
pub use ticket::{JoinTicket, TicketError, TicketMember};
pub use wire::{
    Dispatch, DispatchReply, ExecutorStatus, HostStatus, JobMiss, JoinAccepted, JoinRequest,
    PeerReply, PeerRequest, ProposeError, QuotaUsage, RaftReply, RaftRequest,
};
