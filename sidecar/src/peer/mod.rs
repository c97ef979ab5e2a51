//! The sidecar's peer side: QUIC between hosts, authenticated by pinned
//! ed25519 identities, carrying Raft RPCs (and, later, dispatch and artifact
//! fetch).
//!
//! ```text
//!  HostIdentity (ed25519 key, self-signed cert) ─┐
//!  PinnedPeers (keys of committed members)  ─────┼─▶ endpoint (quinn, TLS 1.3, ALPN spillway/1)
//!  std UdpSocket (the one seam for chaos tests) ─┘        │
//!                          QuicTransport (client) ◀──────┴──▶ serve_raft (server)
//! ```
//!
//! Both sides present a certificate and both verify that the other's key is
//! pinned; a peer whose key is not a member never completes the handshake,
//! so none of its frames is read. What it is not yet: join tickets (a
//! joining host's key is pinned by hand here) or the wiring of the
//! sidecar's HTTP side to the control plane.

pub(crate) mod client;
mod endpoint;
mod identity;
mod pinning;
pub(crate) mod raft_rpc;
mod service;
mod ticket;
mod wire;

pub use client::PeerClient;
pub use endpoint::{ALPN, PeerEndpoint};
pub use identity::{HostIdentity, IdentityError};
pub use pinning::PinnedPeers;
pub use raft_rpc::{QuicTransport, RaftReply, RaftRequest, serve_raft};
pub use service::{PeerHandler, PeerKind, RaftOnly, serve};
pub use ticket::{JoinTicket, TicketError, TicketMember};
pub use wire::{HostStatus, JoinAccepted, JoinRequest, PeerReply, PeerRequest, ProposeError};
