//! The commands the control log carries, and what applying one answers.

use crate::entries::{
    ArtifactSignature, FunctionEntry, ResidencyStatus, StorageQuotaExceeded, TenantEntry,
    TenantPatch,
};
use crate::membership::{JoinRefusal, MemberEntry, MemberState, PublicKey, TicketEntry};
use crate::tokens::TokenEntry;
use serde::{Deserialize, Serialize};
use spillway_proto::{ArtifactKind, Digest, GpuDevice, NodeId, TenantId};
use std::fmt;

/// One host's change in what it holds of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidencyChange {
    pub host: NodeId,
    pub digest: Digest,
    pub status: ResidencyStatus,
}

/// A change to the control state. Every one is a log entry, so the log is
/// also the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Founds the cluster: its id, the admin token's hash and the first
    /// member. Only the first entry may be one.
    Bootstrap {
        cluster_id: String,
        admin_token_hash: [u8; 32],
        first: MemberEntry,
    },
    /// Names an artifact (a new name, or a new version under the name).
    PutArtifact {
        name: String,
        digest: Digest,
        size: u64,
        tenant: TenantId,
        /// The publisher's signature (checked by the host that took the
        /// upload).
        signature: Option<ArtifactSignature>,
        /// A component or a kernel pack.
        kind: ArtifactKind,
    },
    /// Registers or replaces a function.
    PutFunction(FunctionEntry),
    /// Reports what hosts hold, in one batch.
    SetResidency(Vec<ResidencyChange>),
    /// Records a join ticket, so any member can check it.
    IssueTicket(TicketEntry),
    /// Admits a host with a ticket: answers [`ControlResponse::Admitted`]
    /// with its new id, or [`ControlResponse::Refused`]. The proposer
    /// stamps its clock (`now_unix_ms`) so every replica decides expiry
    /// alike.
    Admit {
        ticket: PublicKey,
        cluster_id: String,
        version: u16,
        now_unix_ms: u64,
        member: MemberEntry,
    },
    /// Moves a member to another lifecycle state.
    SetMemberState { id: u64, state: MemberState },
    /// A member's addresses or GPUs changed (it restarted elsewhere).
    UpdateMember {
        id: u64,
        quic_addr: String,
        http_addr: String,
        gpus: Vec<GpuDevice>,
    },
    /// Forgets tickets that expired [`TICKET_GRACE_MS`] or more before
    /// `now_unix_ms` (the proposer's clock, as for `Admit`), used or not;
    /// their keys stop being accepted at the handshake.
    PruneTickets { now_unix_ms: u64 },
    /// Records an API token (refused if its id is taken).
    CreateToken(TokenEntry),
    /// Revokes a token: every host refuses it once it applies this.
    RevokeToken { id: String },
    /// Creates a tenant (refused if it exists).
    CreateTenant(TenantEntry),
    /// Changes a tenant's settings (refused if it does not exist).
    UpdateTenant { id: TenantId, patch: TenantPatch },
    /// The leader's new placement leases for a tenant's concurrency quota
    /// (refused unless `epoch` is the next one and the shares fit the
    /// quota).
    SetQuotaLeases {
        tenant: TenantId,
        epoch: u64,
        shares: std::collections::BTreeMap<u64, u32>,
    },
    /// A change made through the API, with who made it, through which
    /// host and when (the leader's clock): applied as `command`, and
    /// recorded in the audit trail when it takes effect. Only the leader
    /// makes one, after checking the client's token itself.
    Audited {
        /// The token that made it (its id), or `admin-token`.
        by: String,
        /// The tenant it acted for.
        tenant: TenantId,
        unix_ms: u64,
        /// The member whose API took the request.
        via: u64,
        command: Box<ControlCommand>,
    },
    /// A change a member asked the leader to append on its own authority
    /// (its residency, addresses, a join it checked), as the leader
    /// appended it after checking that the member may: the log names the
    /// host it came from. Applied as `command`.
    FromHost {
        host: u64,
        command: Box<ControlCommand>,
    },
    /// Takes over a backup's tenants, tokens, functions and artifact
    /// records (`backup.rs`): only a cluster just founded, with nothing of
    /// its own yet, applies it. (Last, so earlier entries keep their
    /// encoding.)
    Restore(Box<crate::backup::BackupContents>),
    /// How a member's GPUs are shared now (its executors' contexts, MPS,
    /// MIG): replaces what the log had for it. (After `Restore`, so earlier
    /// entries keep their encoding.)
    SetGpuIsolation {
        id: u64,
        gpus: Vec<crate::membership::GpuIsolation>,
    },
    /// The leader's new leases of a tenant's GPU memory quota, in
    /// `GPU_LEASE_UNIT`s (MiB) per host: as `SetQuotaLeases`, for
    /// `max_gpu_memory_bytes`.
    SetGpuLeases {
        tenant: TenantId,
        epoch: u64,
        shares: std::collections::BTreeMap<u64, u32>,
    },
}

impl ControlCommand {
    /// The tenant a change concerns, where it concerns one.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            ControlCommand::PutArtifact { tenant, .. } => Some(tenant),
            ControlCommand::PutFunction(f) => Some(&f.tenant),
            ControlCommand::CreateToken(t) => Some(&t.tenant),
            ControlCommand::CreateTenant(t) => Some(&t.id),
            ControlCommand::UpdateTenant { id, .. } => Some(id),
            ControlCommand::Audited { command, .. } | ControlCommand::FromHost { command, .. } => {
                command.tenant()
            }
            _ => None,
        }
    }
}

/// How long an expired ticket is kept, so a late joiner hears
/// `ticket_expired` (or `ticket_already_used`) rather than `unknown_ticket`.
pub const TICKET_GRACE_MS: u64 = 60 * 60 * 1000;

impl fmt::Display for ControlCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlCommand::Bootstrap { cluster_id, .. } => write!(f, "bootstrap {cluster_id}"),
            ControlCommand::PutArtifact {
                name,
                digest,
                tenant,
                kind: ArtifactKind::KernelPack,
                ..
            } => write!(f, "put kernel pack {tenant}/{name} = {digest}"),
            ControlCommand::PutArtifact {
                name,
                digest,
                tenant,
                ..
            } => {
                write!(f, "put artifact {tenant}/{name} = {digest}")
            }
            ControlCommand::PutFunction(func) => write!(f, "put function {}", func.name),
            ControlCommand::SetResidency(changes) => {
                write!(f, "{} residency change(s)", changes.len())
            }
            ControlCommand::IssueTicket(t) => write!(f, "issue a ticket (by {})", t.issuer),
            ControlCommand::Admit { member, .. } => {
                write!(f, "admit a host at {}", member.quic_addr)
            }
            ControlCommand::SetMemberState { id, state } => {
                write!(f, "member {id} → {}", state.as_str())
            }
            ControlCommand::UpdateMember { id, quic_addr, .. } => {
                write!(f, "member {id} now at {quic_addr}")
            }
            ControlCommand::SetGpuLeases {
                tenant,
                epoch,
                shares,
            } => {
                write!(
                    f,
                    "GPU memory leases of tenant {tenant} (MiB), epoch {epoch}: {shares:?}"
                )
            }
            ControlCommand::SetGpuIsolation { id, gpus } => {
                write!(f, "member {id}'s GPU isolation ({} GPUs)", gpus.len())
            }
            ControlCommand::PruneTickets { .. } => write!(f, "prune expired tickets"),
            ControlCommand::CreateToken(t) => write!(f, "create token {}", t.id),
            ControlCommand::RevokeToken { id } => write!(f, "revoke token {id}"),
            ControlCommand::CreateTenant(t) => write!(f, "create tenant {}", t.id),
            ControlCommand::UpdateTenant { id, .. } => write!(f, "change tenant {id}"),
            ControlCommand::SetQuotaLeases {
                tenant,
                epoch,
                shares,
            } => {
                write!(f, "leases of tenant {tenant}, epoch {epoch}: {shares:?}")
            }
            ControlCommand::Audited { command, .. } => command.fmt(f),
            ControlCommand::FromHost { host, command } => write!(f, "{command} (from host {host})"),
            ControlCommand::Restore(contents) => write!(
                f,
                "restore {} tenants, {} tokens, {} functions from a backup",
                contents.tenants.len(),
                contents.tokens.len(),
                contents.functions.len()
            ),
        }
    }
}

/// The answer to an applied command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Applied.
    #[default]
    Done,
    /// A host was admitted under this id.
    Admitted { id: u64 },
    /// A join was refused; the state is unchanged.
    Refused(JoinRefusal),
    /// Not applied; the state is unchanged.
    Rejected(Rejection),
}

/// Why the state machine did not apply a command (the state is unchanged).
/// The variant says what the caller should do; the text names what was
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// Something the command names does not exist (a member, a tenant, a
    /// token): check the name.
    #[error("{0}")]
    Missing(String),
    /// It clashes with what exists now (a taken id, a tenant that exists,
    /// a removed member, a founded cluster, a lease epoch out of turn):
    /// read the current state before asking again.
    #[error("{0}")]
    Conflict(String),
    /// The tenant's storage quota does not hold it: delete or replace one
    /// of its artifacts, or raise its limits.
    #[error(transparent)]
    StorageQuota(#[from] StorageQuotaExceeded),
    /// It can never apply as written (an unsigned kernel pack, a function
    /// naming no registered component, an admin-scope token outside the
    /// admin tenant, leases over the quota, a change wrapped twice): fix
    /// the request.
    #[error("{0}")]
    Invalid(String),
}
