//! The Spillway wire protocol: identifiers, every message the node and the
//! sidecar exchange, the framing that carries them, and the typed refusal and
//! failure codes that end up as JSON error codes at the HTTP edge.
//!
//! This crate is pure by default: no I/O, no async runtime. Its `io`
//! feature adds `frame_io`, the one copy of frame reading and writing on
//! tokio streams that the node and the sidecar use.
//!
//! ```text
//!  sidecar ──ToNode (Execute, Cancel, PutArtifact, Artifact*)──▶ node
//!  sidecar ◀─FromNode (Hello, Load, Output, Completed, Failed, Artifact*)── node
//! ```
//!
//! What it is not: a transport. Peer (QUIC) streams carry these frames too.

pub mod artifact;
pub mod failure;
pub mod frame;
#[cfg(feature = "io")]
pub mod frame_io;
pub mod ids;
pub mod message;
pub mod signing;
pub mod trace;

pub use artifact::{ArtifactKind, KIND_PREFIX, KindProbe, MAX_WEIGHTS_HEADER, NamedArtifact};
pub use failure::{Failure, Refusal};

/// The node's exit code after a GPU fault poisoned its CUDA context: the
/// process cannot use the GPU again, so it exits for its sidecar to restart.
pub const EXIT_DEVICE_FAULT: i32 = 75;
/// The node's exit code after its GPU watchdog found a job's kernels
/// running past the job's deadline: ending the process is what stops them.
pub const EXIT_GPU_OVERRUN: i32 = 76;
pub use frame::{FrameError, MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use ids::{Digest, DigestParseError, JobId, NodeId, TenantId};
pub use message::{
    ARTIFACT_CHUNK, Accelerator, Backend, Capabilities, Completion, Execute, FromNode, GpuDevice,
    GpuMemory, GpuSharing, GpuWeights, Hello, JobSpec, LoadReport, TenantGpuPool, ToNode,
};
pub use trace::{SpanRecord, SpanValue, TraceCarrier};
