//! What the control log records about artifacts, functions, tenants,
//! residency and the audit trail: plain entries, and why an artifact does
//! not fit its tenant's storage. Both the commands (`command`) and the
//! state (`state`) use them; they use neither.

use serde::{Deserialize, Serialize};
use spillway_proto::{Accelerator, ArtifactKind, Digest, NamedArtifact, TenantId};
use std::collections::BTreeMap;

/// A named artifact, in its tenant's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
    pub tenant: TenantId,
    /// The publisher's signature, when it was signed: its ed25519 public
    /// key and the signature over `spillway_proto::signing::artifact_message`.
    pub signature: Option<ArtifactSignature>,
    pub kind: ArtifactKind,
}

/// An ed25519 signature over an artifact's digest and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSignature {
    pub key: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// One change in the audit trail: when, by whom, for which tenant, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub unix_ms: u64,
    pub by: String,
    /// The member whose API took the request.
    pub via: u64,
    pub tenant: TenantId,
    pub what: String,
}

/// Why an artifact does not fit its tenant's storage quota: delete or
/// replace one of its artifacts, or raise its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StorageQuotaExceeded {
    #[error("tenant {tenant} may hold at most {max} artifacts")]
    Artifacts { tenant: TenantId, max: u32 },
    #[error(
        "tenant {tenant}'s artifacts may add up to {max} bytes; this one would make {would_be}"
    )]
    Bytes {
        tenant: TenantId,
        max: u64,
        would_be: u64,
    },
}

/// Audit records kept (oldest dropped first).
pub const AUDIT_KEEP: usize = 10_000;

/// A tenant: a namespace of artifacts, functions and tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEntry {
    pub id: TenantId,
    pub created_unix_ms: u64,
    /// Labels a host must carry to run this tenant's jobs (empty: any).
    pub placement: BTreeMap<String, String>,
    /// Publisher keys (ed25519) whose signatures this tenant accepts.
    pub trusted_keys: Vec<[u8; 32]>,
    /// Whether every artifact must be signed by one of them.
    pub require_signed: bool,
    /// Jobs it may have running (or waiting) at once, cluster-wide.
    pub max_concurrent: Option<u32>,
    /// The most memory one of its jobs may use: linear memory and `gpu`
    /// buffers (host or device) together.
    pub max_job_memory_bytes: Option<u64>,
    /// Invoke requests a second, cluster-wide (each host enforces its
    /// share).
    pub rate_per_s: Option<u32>,
    /// GPU memory its jobs may hold at once, cluster-wide: `gpu` buffers
    /// and resident weights, from its memory pool on each GPU (counted the
    /// same on the CPU backend). Each host enforces its share, a lease in
    /// whole MiB ([`GPU_LEASE_UNIT`]) the leader rebalances as load shifts.
    pub max_gpu_memory_bytes: Option<u64>,
    /// Artifact names it may hold.
    pub max_artifacts: Option<u32>,
    /// Bytes its artifacts may add up to (each name's current version).
    pub max_artifact_bytes: Option<u64>,
}

/// The unit of GPU memory leases: a tenant's `max_gpu_memory_bytes` is
/// split among hosts in whole MiB (what is left below one MiB is not
/// leased).
pub const GPU_LEASE_UNIT: u64 = 1 << 20;

/// A tenant's concurrency quota (in jobs), or its GPU memory quota (in
/// [`GPU_LEASE_UNIT`]s), split into per-host placement leases:
/// each host admits up to its share with no consensus round per job. The
/// shares never add up to more than the quota; the leader rebalances
/// them as load shifts, raising the epoch each time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLeases {
    pub epoch: u64,
    /// Host id → jobs it may hold at once.
    pub shares: BTreeMap<u64, u32>,
}

/// A change to a tenant's settings: each field given replaces the
/// tenant's (`Some(None)` clears a limit); the rest stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPatch {
    pub placement: Option<BTreeMap<String, String>>,
    pub trusted_keys: Option<Vec<[u8; 32]>>,
    pub require_signed: Option<bool>,
    pub max_concurrent: Option<Option<u32>>,
    pub max_job_memory_bytes: Option<Option<u64>>,
    pub rate_per_s: Option<Option<u32>>,
    pub max_gpu_memory_bytes: Option<Option<u64>>,
    pub max_artifacts: Option<Option<u32>>,
    pub max_artifact_bytes: Option<Option<u64>>,
}

impl TenantPatch {
    /// `tenant` with this patch applied.
    pub fn apply_to(&self, tenant: &TenantEntry) -> TenantEntry {
        let mut t = tenant.clone();
        if let Some(p) = &self.placement {
            t.placement = p.clone();
        }
        if let Some(k) = &self.trusted_keys {
            t.trusted_keys = k.clone();
        }
        if let Some(r) = self.require_signed {
            t.require_signed = r;
        }
        if let Some(m) = self.max_concurrent {
            t.max_concurrent = m;
        }
        if let Some(m) = self.max_job_memory_bytes {
            t.max_job_memory_bytes = m;
        }
        if let Some(r) = self.rate_per_s {
            t.rate_per_s = r;
        }
        if let Some(g) = self.max_gpu_memory_bytes {
            t.max_gpu_memory_bytes = g;
        }
        if let Some(m) = self.max_artifacts {
            t.max_artifacts = m;
        }
        if let Some(m) = self.max_artifact_bytes {
            t.max_artifact_bytes = m;
        }
        t
    }
}

/// A registered function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEntry {
    pub name: String,
    /// The artifact as given at registration (a name or a digest).
    pub artifact: String,
    pub digest: Digest,
    pub accelerator: Accelerator,
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub idempotent: bool,
    pub tenant: TenantId,
    /// Kernel packs of the same tenant its guest may launch from.
    pub kernel_packs: Vec<NamedArtifact>,
    /// Weights of the same tenant its guest may open.
    pub weights: Vec<NamedArtifact>,
    /// The model name it serves under the OpenAI-compatible API (one
    /// function per name within a tenant).
    pub openai_model: Option<String>,
}

/// What a host holds of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidencyStatus {
    Fetching,
    Resident,
    Evicted,
}
