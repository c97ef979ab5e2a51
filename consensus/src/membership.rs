//! Who is in the cluster: members (identity key, addresses, labels, GPUs,
//! lifecycle state), the join tickets that admit new ones, and the typed
//! reasons a join is refused.
//!
//! Raft's own membership config says who votes; this says who a host *is*.
//! A member's role (voter or learner) is read from Raft, its lifecycle state
//! from here.

use serde::{Deserialize, Serialize};
use spillway_proto::{GpuDevice, TenantId};
use std::collections::BTreeMap;

/// The join protocol version this build speaks. A ticket or join request
/// of another version is refused with [`JoinRefusal::VersionIncompatible`].
pub const JOIN_VERSION: u16 = 1;

/// An ed25519 public key (raw, 32 bytes): a host's or a ticket's identity.
pub type PublicKey = [u8; 32];

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Admitted; Raft is adding it (as a learner first).
    Joining,
    /// Serving.
    Active,
    /// Finishing its work; takes no new jobs and is not promoted.
    Draining,
    /// Out of the cluster; its key is no longer accepted.
    Removed,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Draining => "draining",
            MemberState::Removed => "removed",
        }
    }
}

/// One host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub id: u64,
    /// Its ed25519 identity key: the key its QUIC certificate carries.
    pub key: PublicKey,
    pub quic_addr: String,
    pub http_addr: String,
    pub labels: BTreeMap<String, String>,
    pub gpus: Vec<GpuDevice>,
    pub state: MemberState,
}

/// How one of a member's GPUs is shared, as its host runs it: the node
/// processes (executors) with a CUDA context on it, which tenants' jobs
/// share a context there, and what its driver offers. Jobs in one context
/// can read each other's device memory; contexts of separate processes
/// cannot (`docs/security.md`). The host records it when it starts and
/// whenever its executors' GPUs change (`ControlCommand::SetGpuIsolation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuIsolation {
    /// The GPU's index on its host (as in [`MemberEntry::gpus`]).
    pub gpu: u32,
    /// Node processes with a context on it.
    pub contexts: u32,
    /// Whether one of those contexts runs the jobs of every tenant that
    /// has none kept for it: those tenants share a context there.
    pub shared: bool,
    /// The contexts kept for some tenants: each, the tenants whose jobs
    /// run in it (and only there).
    pub kept_for: Vec<Vec<TenantId>>,
    /// Its driver runs an MPS server: the processes' contexts run at once.
    pub mps: bool,
    /// It is a MIG instance: a hardware partition of a larger GPU.
    pub mig: bool,
}

impl GpuIsolation {
    /// Whether every tenant's jobs on this GPU run in a context of their
    /// own group: no context is open to all tenants.
    pub fn tenants_apart(&self) -> bool {
        !self.shared
    }
}

/// Whether `tenant`'s GPU jobs on a host whose GPUs are shared as `gpus`
/// run in a CUDA context with other tenants' jobs (whose kernel packs can
/// then read its buffers, and it theirs): where a context is kept for a
/// group it belongs to, it runs only in such contexts, shared if the group
/// has others; otherwise in the contexts open to every tenant not kept
/// apart. A host with GPUs that has recorded nothing runs one context per
/// GPU for every tenant (earlier builds did): shared.
pub fn shares_a_context(tenant: &TenantId, has_gpus: bool, gpus: &[GpuIsolation]) -> bool {
    if gpus.is_empty() {
        return has_gpus;
    }
    let mut groups = gpus
        .iter()
        .flat_map(|g| &g.kept_for)
        .filter(|k| k.contains(tenant))
        .peekable();
    if groups.peek().is_none() {
        return gpus.iter().any(|g| g.shared);
    }
    groups.any(|k| k.len() > 1)
}

/// A join ticket as the log records it: its one-time key (the joining
/// host proves possession in the QUIC handshake), who issued it, until when
/// it is valid, and who used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketEntry {
    pub key: PublicKey,
    pub issuer: u64,
    pub expires_unix_ms: u64,
    pub used_by: Option<u64>,
}

/// Why a host was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    /// Ask a member for a new ticket (`spillway ticket create`).
    #[error("the join ticket expired")]
    Expired,
    /// Tickets admit one host; ask for a new one.
    #[error("the join ticket was already used (by host {by})")]
    AlreadyUsed { by: u64 },
    /// The ticket belongs to another cluster than the one reached.
    #[error("the join ticket is for cluster {ticket}, but this is cluster {cluster}")]
    WrongCluster { ticket: String, cluster: String },
    /// This identity key already belongs to a member.
    #[error("this host's identity is already member {id} of the cluster")]
    AlreadyMember { id: u64 },
    /// The joining host and the cluster speak different join versions.
    #[error("join protocol version {theirs} is not supported (this cluster speaks {ours})")]
    VersionIncompatible { ours: u16, theirs: u16 },
    /// No member accepts the ticket's key: this cluster never issued it,
    /// or it was used (members stop accepting a used ticket's key at
    /// once). Ask a member for a new ticket.
    #[error("the cluster accepts no join with this ticket (never issued here, or already used)")]
    UnknownTicket,
    /// The ticket's signature does not verify with its issuer's key.
    #[error("the join ticket's signature is not valid")]
    BadSignature,
    /// The cluster could not decide now (no leader); retry.
    #[error("the cluster cannot admit hosts now: {0}")]
    Unavailable(String),
}

impl JoinRefusal {
    /// A stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            JoinRefusal::Expired => "ticket_expired",
            JoinRefusal::AlreadyUsed { .. } => "ticket_already_used",
            JoinRefusal::WrongCluster { .. } => "wrong_cluster",
            JoinRefusal::AlreadyMember { .. } => "already_member",
            JoinRefusal::VersionIncompatible { .. } => "version_incompatible",
            JoinRefusal::UnknownTicket => "unknown_ticket",
            JoinRefusal::BadSignature => "bad_signature",
            JoinRefusal::Unavailable(_) => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId(name.into())
    }

    fn gpu(shared: bool, kept_for: &[&[&str]]) -> GpuIsolation {
        GpuIsolation {
            gpu: 0,
            contexts: 1 + kept_for.len() as u32,
            shared,
            kept_for: kept_for
                .iter()
                .map(|k| k.iter().map(|t| tenant(t)).collect())
                .collect(),
            mps: false,
            mig: false,
        }
    }

    #[test]
    fn a_tenant_shares_a_context_unless_one_is_kept_for_it_alone() {
        // (case, tenant, host has GPUs, its GPUs' isolation, shares)
        let cases: Vec<(&str, &str, bool, Vec<GpuIsolation>, bool)> = vec![
            ("a CPU host", "acme", false, vec![], false),
            (
                "a GPU host that recorded nothing",
                "acme",
                true,
                vec![],
                true,
            ),
            (
                "one context for all",
                "acme",
                true,
                vec![gpu(true, &[])],
                true,
            ),
            (
                "kept for acme alone, beside a shared one",
                "acme",
                true,
                vec![gpu(true, &[&["acme"]])],
                false,
            ),
            (
                "globex in the shared one",
                "globex",
                true,
                vec![gpu(true, &[&["acme"]])],
                true,
            ),
            (
                "kept for acme and beta together",
                "acme",
                true,
                vec![gpu(false, &[&["acme", "beta"]])],
                true,
            ),
            (
                "kept on GPU 0, and GPU 1 has only a shared context it never uses",
                "acme",
                true,
                vec![gpu(false, &[&["acme"]]), gpu(true, &[])],
                false,
            ),
        ];
        for (case, who, has_gpus, gpus, want) in cases {
            assert_eq!(
                shares_a_context(&tenant(who), has_gpus, &gpus),
                want,
                "{case}"
            );
        }
    }
}
