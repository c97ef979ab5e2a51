//! Spillway's control plane: the state every host must agree on, kept in a
//! Raft log (openraft).
//!
//! ```text
//!  ControlCommand ──Raft log (LogStore: redb, fsync on commit)──▶ StateMachine ──▶ ControlState
//!                                                                  └─ snapshots (file, atomic)
//! ```
//!
//! - [`ControlState`] is the pure core: membership and join tickets,
//!   artifacts, functions and residency, changed only by
//!   [`ControlCommand`]s through [`ControlState::apply`].
//! - [`LogStore`] and [`StateMachine`] are openraft's storage traits over
//!   durable files; both pass openraft's storage conformance suite.
//! - [`TypeConfig`] ties the types together for openraft, whose API is
//!   unstable: it stays behind this crate.
//! - [`Backup`]: the control state a new cluster can be founded from,
//!   taken online from any member or offline from a stopped host's
//!   directory, and its file.
//! - `format`: the stores' format versions, and the migrations from earlier
//!   ones that opening them makes.
//!
//! - [`ControlPlane`] is one host's member: start, initialize, propose,
//!   read the state. Peers are reached through a [`RaftTransport`];
//!   [`MemoryTransport`] connects in-process members for tests.
//!
//! What it is not: a network. The QUIC transport, ticket signatures and
//! the join handshake live in the sidecar (`spillway_sidecar::peer`).

mod backup;
mod command;
mod control_plane;
mod entries;
mod error;
mod format;
mod log_store;
mod membership;
mod state;
mod state_machine;
mod tokens;
mod transport;
mod types;

pub use backup::{BACKUP_FORMAT, Backup, BackupContents, BackupError};
pub use command::{ControlCommand, ControlResponse, Rejection, ResidencyChange, TICKET_GRACE_MS};
pub use control_plane::{Changes, ControlConfig, ControlError, ControlPlane, RaftStatus};
pub use entries::{
    AUDIT_KEEP, ArtifactEntry, ArtifactSignature, AuditRecord, FunctionEntry, GPU_LEASE_UNIT,
    QuotaLeases, ResidencyStatus, StorageQuotaExceeded, TenantEntry, TenantPatch,
};
pub use error::OpenError;
pub use format::{FormatError, LOG_FORMAT, Migration, SNAPSHOT_FORMAT};
pub use log_store::LogStore;
pub use membership::{
    GpuIsolation, JOIN_VERSION, JoinRefusal, MemberEntry, MemberState, PublicKey, TicketEntry,
    shares_a_context,
};
pub use state::ControlState;
pub use state_machine::StateMachine;
pub use tokens::{Scope, ScopeError, TokenDenial, TokenEntry};
pub use transport::{MemoryTransport, Raft, RaftTransport, Snapshot, TransportError};
pub use types::{Member, TypeConfig};

/// The Raft messages a transport carries, with Spillway's types filled in,
/// so transports never name openraft's generics.
pub mod raft {
    use crate::TypeConfig;

    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
    pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
    pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
    pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
    pub type Vote = openraft::alias::VoteOf<TypeConfig>;
    pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
    pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
    pub type TransferLeaderResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;
}
