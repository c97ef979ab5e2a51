//! How a job ends when it does not end in a result.
//!
//! A [`Refusal`] means the job never ran; a [`Failure`] says what went wrong
//! and whether the job may have run ([`Failure::may_have_run`]). Both travel
//! on the wire as data and become the `code` of a JSON error at the HTTP edge:
//! callers match on codes, never on messages.

use crate::ids::Digest;
use serde::{Deserialize, Serialize};

/// Why a job was not accepted. The job never ran; retrying may help where a
/// `retry_after_ms` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Every slot is busy and the bounded queue is full.
    #[error("the host's queue is full; retry after {retry_after_ms} ms")]
    QueueFull { retry_after_ms: u64 },
    /// The node is down (restarting) and the queue cannot hold the job.
    #[error("the host's node is unavailable; retry after {retry_after_ms} ms")]
    NodeUnavailable { retry_after_ms: u64 },
    /// The job requires an accelerator and this host has none.
    #[error("the function requires an accelerator and none is available")]
    NoAccelerator,
    /// The node has no free slot (the sidecar's view of the load was stale).
    #[error("the node has no free slot; retry after {retry_after_ms} ms")]
    SlotsExhausted { retry_after_ms: u64 },
    /// No member carries every placement label the job requires.
    #[error("no host carries the placement labels the job requires")]
    NoMatchingHost,
    /// This host cannot run the job (accelerator or labels) and no host
    /// that can has a free slot now.
    #[error("no host that can run the job has a free slot; retry after {retry_after_ms} ms")]
    NoHostFree { retry_after_ms: u64 },
    /// A peer takes a burst job only when a slot is free at once (one hop:
    /// it never queues or forwards a peer's job).
    #[error("the peer has no free slot for a burst job")]
    PeerFull,
    /// The tenant has as many jobs running as its quota allows.
    #[error("the tenant is at its concurrent-jobs quota; retry after {retry_after_ms} ms")]
    QuotaExceeded { retry_after_ms: u64 },
}

impl Refusal {
    /// The snake_case code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::NodeUnavailable { .. } => "node_unavailable",
            Refusal::NoAccelerator => "no_accelerator",
            Refusal::SlotsExhausted { .. } => "slots_exhausted",
            Refusal::NoMatchingHost => "no_matching_host",
            Refusal::NoHostFree { .. } => "no_host_free",
            Refusal::PeerFull => "peer_full",
            Refusal::QuotaExceeded { .. } => "quota_exceeded",
        }
    }

    /// How long to wait before retrying, where retrying can help.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Refusal::QueueFull { retry_after_ms }
            | Refusal::NodeUnavailable { retry_after_ms }
            | Refusal::SlotsExhausted { retry_after_ms }
            | Refusal::NoHostFree { retry_after_ms }
            | Refusal::QuotaExceeded { retry_after_ms } => Some(*retry_after_ms),
            Refusal::NoAccelerator | Refusal::NoMatchingHost | Refusal::PeerFull => None,
        }
    }
}

/// Why an accepted job ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Failure {
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow...).
    #[error("the guest trapped: {reason}")]
    Trap { reason: String },
    /// The guest returned `err(message)` from `run`.
    #[error("the guest returned an error: {message}")]
    GuestError { message: String },
    /// The job ran past its deadline and was interrupted.
    #[error("the job ran past its deadline of {deadline_ms} ms")]
    DeadlineExceeded { deadline_ms: u64 },
    /// The guest tried to grow memory (or a table) past its limit.
    #[error("the guest exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: u64 },
    /// The artifact is not a valid component for the `spillway:runtime` world.
    #[error("invalid artifact: {reason}")]
    InvalidArtifact { reason: String },
    /// The node does not hold the artifact the job names.
    #[error("the node does not hold artifact {digest}")]
    UnknownArtifact { digest: Digest },
    /// Every copy of the artifact this host could fetch was damaged (its
    /// bytes did not hash to the digest); the bytes were discarded and the
    /// job never ran.
    #[error("every fetched copy of artifact {digest} failed its digest check")]
    ArtifactCorrupt { digest: Digest },
    /// No holder of the artifact could send it (unreachable, or none
    /// holds it); the job never ran.
    #[error("no holder could send artifact {digest}: {reason}")]
    ArtifactUnavailable { digest: Digest, reason: String },
    /// The artifact's registrations no longer carry a signature its
    /// tenant trusts: a fetched copy is not used, and the job never ran.
    #[error("artifact {digest} is not signed by a key its tenant trusts")]
    UntrustedArtifact { digest: Digest },
    /// The client went away or cancelled; the guest was interrupted.
    #[error("the job was cancelled")]
    Cancelled,
    /// The process running the job died before it answered.
    #[error("the executor was lost (may have run: {may_have_run})")]
    ExecutorLost { may_have_run: bool },
    /// The GPU failed in a way that poisons its context (illegal address and
    /// the like). The node restarts; the job may have run partly.
    #[error("the GPU faulted: {message}")]
    DeviceFault { message: String },
    /// The job's GPU work was still running past its deadline, where
    /// nothing but ending the process stops a kernel: its node was
    /// restarted (and jobs running beside it there were lost with it).
    /// Clients see `deadline_exceeded`, with `node_restarted`.
    #[error(
        "the job's GPU work ran past its deadline of {deadline_ms} ms; its node was restarted to stop it"
    )]
    GpuOverran { deadline_ms: u64 },
    /// The job was refused before it ran.
    #[error(transparent)]
    Refused(Refusal),
    /// A fault inside Spillway itself; the message says what.
    #[error("internal error: {message}")]
    Internal { message: String },
    /// The guest called `wasi:cli/exit` with a non-zero code (an error
    /// exit, such as a toolchain's `exit(1)` after an uncaught exception).
    #[error("the guest exited with code {code}")]
    GuestExit { code: i32 },
    /// The component imports an interface the node does not provide; it
    /// was not stored. Build it against `spillway:runtime/job-guest` and
    /// WASI 0.2 only (`docs/guests.md` lists what is linked).
    #[error("the component imports {import}, which Spillway does not provide")]
    UnsupportedImport { import: String },
}

impl Failure {
    /// The snake_case code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Trap { .. } => "guest_trap",
            Failure::GuestError { .. } => "guest_error",
            Failure::DeadlineExceeded { .. } | Failure::GpuOverran { .. } => "deadline_exceeded",
            Failure::MemoryLimit { .. } => "memory_limit_exceeded",
            Failure::InvalidArtifact { .. } => "invalid_artifact",
            Failure::UnknownArtifact { .. } => "unknown_artifact",
            Failure::ArtifactCorrupt { .. } => "artifact_corrupt",
            Failure::ArtifactUnavailable { .. } => "artifact_unavailable",
            Failure::UntrustedArtifact { .. } => "untrusted_artifact",
            Failure::Cancelled => "cancelled",
            Failure::ExecutorLost { .. } => "executor_lost",
            Failure::DeviceFault { .. } => "device_fault",
            Failure::Refused(r) => r.code(),
            Failure::Internal { .. } => "internal",
            Failure::GuestExit { .. } => "guest_exit",
            Failure::UnsupportedImport { .. } => "unsupported_import",
        }
    }

    /// Whether the guest may have started running. `false` means it is safe
    /// to run the job again even if it is not idempotent.
    pub fn may_have_run(&self) -> bool {
        match self {
            Failure::Refused(_)
            | Failure::InvalidArtifact { .. }
            | Failure::UnknownArtifact { .. }
            | Failure::ArtifactCorrupt { .. }
            | Failure::ArtifactUnavailable { .. }
            | Failure::UntrustedArtifact { .. }
            | Failure::UnsupportedImport { .. } => false,
            Failure::ExecutorLost { may_have_run } => *may_have_run,
            _ => true,
        }
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}
