//! The messages a sidecar and its node exchange over the Unix socket.
//!
//! One connection carries every job, told apart by [`JobId`]. The node opens
//! with [`FromNode::Hello`]; after that either side may send at any time.

use crate::failure::Failure;
use crate::ids::{Digest, JobId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a job's `gpu` calls may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Accelerator {
    /// Only on a GPU; refused where none is present.
    Required,
    /// On a GPU when one is present, else on the CPU reference backend.
    #[default]
    Preferred,
    /// On the CPU reference backend.
    None,
}

/// What executes a job's `gpu` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// The CPU reference implementations in `spillway-kernels`.
    Cpu,
    /// CUDA through cudarc.
    Cuda,
}

impl Backend {
    /// The lowercase name used in headers and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

/// One GPU as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
    pub compute_capability: (u32, u32),
}

/// What a node can do, sent once in [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Jobs the node runs at once.
    pub slots: u32,
    /// Backends for `gpu` calls, best first.
    pub backends: Vec<Backend>,
    /// GPUs present (empty on a CPU-only host).
    pub gpus: Vec<GpuDevice>,
    /// The largest memory limit a job may ask for.
    pub max_memory_bytes: u64,
    /// The epoch tick: deadlines are enforced to within one tick.
    pub epoch_tick_ms: u32,
    /// How each of its GPUs is shared with other processes.
    pub sharing: Vec<GpuSharing>,
}

/// How one GPU is shared with other processes, as its driver shows it:
/// through an MPS server (contexts of several processes run at once), or
/// as a MIG instance (a hardware partition of a larger GPU). Neither: the
/// process's context is time-sliced with any other on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSharing {
    pub gpu: u32,
    pub mps: bool,
    pub mig: bool,
}

/// The node's greeting, first frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u8,
    pub node_version: String,
    pub pid: u32,
    pub capabilities: Capabilities,
    /// Artifacts already in the node's cache.
    pub resident: Vec<Digest>,
}

/// Weights resident on one of a node's GPUs (all its tensors there
/// together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuWeights {
    pub gpu: u32,
    pub digest: Digest,
    pub bytes: u64,
}

/// One GPU's memory as its driver reports it, the part of it that
/// resident weights take, and each tenant's memory pool on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemory {
    pub gpu: u32,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub weights_bytes: u64,
    /// Each tenant with a memory pool on this GPU, in tenant order.
    pub tenants: Vec<TenantGpuPool>,
}

/// One tenant's memory pool on one GPU: the cap the driver enforces on
/// it, what it holds from the driver (freed memory it keeps for reuse
/// included) and what the tenant's live allocations take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantGpuPool {
    pub tenant: TenantId,
    /// `None`: the tenant has no GPU memory cap.
    pub cap_bytes: Option<u64>,
    pub reserved_bytes: u64,
    pub used_bytes: u64,
}

/// The node's load, sent whenever it changes and at least every second.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub slots: u32,
    pub running: u32,
    pub completed: u64,
    pub failed: u64,
    /// Jobs that started in an instance made ahead of them, and jobs that
    /// instantiated their own, since the node started.
    pub warm_starts: u64,
    pub cold_starts: u64,
    /// Instances made ahead of their jobs, ready now.
    pub warm_ready: u32,
    /// Weights resident on its GPUs, most recently used first.
    pub weights: Vec<GpuWeights>,
    /// Each GPU's memory (empty without GPUs).
    pub gpu_memory: Vec<GpuMemory>,
}

/// What a job asks of the cluster; the scheduler's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub tenant: TenantId,
    pub function: String,
    pub digest: Digest,
    pub accelerator: Accelerator,
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub idempotent: bool,
    /// Labels a host must carry to run the job (`zone=a`); empty: any host.
    pub placement: BTreeMap<String, String>,
    /// The most `gpu` buffer bytes the tenant's jobs may hold at once on
    /// the host that runs this one (the tenant's `max_gpu_memory_bytes`).
    pub tenant_gpu_bytes: Option<u64>,
    /// The kernel packs the guest may launch from; the host that runs the
    /// job holds them all (fetched and verified like the component).
    pub kernel_packs: Vec<crate::NamedArtifact>,
    /// The weights the guest may open; the host that runs the job holds
    /// them all (fetched and verified like the component).
    pub weights: Vec<crate::NamedArtifact>,
}

impl JobSpec {
    /// Every artifact the job needs on the host that runs it: its
    /// component, then its kernel packs, then its weights.
    pub fn artifacts(&self) -> impl Iterator<Item = crate::Digest> + '_ {
        std::iter::once(self.digest)
            .chain(self.kernel_packs.iter().map(|p| p.digest))
            .chain(self.weights.iter().map(|w| w.digest))
    }
}

/// Run `spec` on `input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execute {
    pub job: JobId,
    pub spec: JobSpec,
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// What is left of the deadline when the node receives the job.
    pub remaining_ms: u64,
    /// Bytes of emitted output the guest may have outstanding (not yet
    /// taken by the job's consumer) before its `emit` waits for an
    /// [`ToNode::OutputCredit`]; 0: no window, chunks go as emitted.
    pub output_window: u64,
    /// The sender's span, for the receiver's spans to join its trace.
    pub trace: Option<crate::TraceCarrier>,
}

/// A finished job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub job: JobId,
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    pub exec_us: u64,
    /// The backend that served the job's `gpu` calls (`Cpu` if it made none).
    pub backend: Backend,
    /// The GPU (its index on the host) when the backend is `Cuda`.
    pub gpu: Option<u32>,
    /// Bytes of weights this job loaded onto the GPU (0 when every tensor
    /// it opened was resident already, or it ran on the CPU, where weights
    /// are read where they lie).
    pub weights_loaded_bytes: u64,
    /// Bytes of artifacts (component, kernel packs, weights) the host that
    /// ran the job fetched from peers before it could start: 0 when it
    /// held them all. Set by that host's sidecar (the node leaves it 0).
    pub fetched_bytes: u64,
}

/// Sidecar to node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToNode {
    Execute(Box<Execute>),
    /// Interrupt the job; it ends with [`Failure::Cancelled`].
    Cancel {
        job: JobId,
    },
    /// The job's consumer took `bytes` of its output: its output window
    /// opens by as much.
    OutputCredit {
        job: JobId,
        bytes: u64,
    },
    /// Begins handing over an artifact of `size` bytes that hash to
    /// `digest`; its bytes follow in [`ToNode::ArtifactChunk`]s of at most
    /// [`ARTIFACT_CHUNK`] bytes, each sent only after the node answered the
    /// one before (so neither side ever holds more than one chunk of it).
    /// Answered by [`FromNode::ArtifactProgress`] while bytes are missing,
    /// then [`FromNode::ArtifactStored`] or [`FromNode::ArtifactRejected`].
    PutArtifact {
        request: u64,
        digest: Digest,
        size: u64,
    },
    /// The next bytes of the artifact `request` began.
    ArtifactChunk {
        request: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The sidecar gave up on handing over `request`: the node drops what
    /// it received. Not answered.
    AbandonArtifact {
        request: u64,
    },
    /// Read at most [`ARTIFACT_CHUNK`] bytes of a stored artifact from
    /// `offset` (for a peer that fetches it). At offset 0 the node first
    /// checks the whole stored copy against its digest. Answered by
    /// [`FromNode::ArtifactChunk`] or [`FromNode::ArtifactRejected`]
    /// (`unknown_artifact`, or `invalid_artifact` for a damaged copy).
    ReadArtifact {
        request: u64,
        digest: Digest,
        offset: u64,
    },
}

/// The most artifact bytes one frame carries, either way.
pub const ARTIFACT_CHUNK: usize = 1 << 20;

/// Node to sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromNode {
    Hello(Hello),
    Load(LoadReport),
    /// A chunk the guest emitted; `seq` counts from 0 per job.
    Output {
        job: JobId,
        seq: u32,
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    Completed(Completion),
    /// `exec_us`: how long the job ran on the node (0 if it never started).
    Failed {
        job: JobId,
        failure: Failure,
        exec_us: u64,
    },
    ArtifactStored {
        request: u64,
        digest: Digest,
        size: u64,
    },
    ArtifactRejected {
        request: u64,
        failure: Failure,
    },
    /// `received` bytes of the artifact `request` have arrived: send the
    /// next chunk.
    ArtifactProgress {
        request: u64,
        received: u64,
    },
    /// Bytes of a stored artifact (answering [`ToNode::ReadArtifact`]),
    /// and its whole size.
    ArtifactChunk {
        request: u64,
        size: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// `gpu` buffer bytes each tenant's running jobs hold on the node (a
    /// tenant holding none is left out), and the bytes each tenant's cap
    /// refused since the node started (its demand); sent with the load
    /// reports, whenever a job ends, and soon after a charge or refusal.
    TenantGpu {
        held: Vec<(TenantId, u64)>,
        refused: Vec<(TenantId, u64)>,
    },
    /// Finished spans of the node's jobs, for the sidecar to export (sent
    /// only when the host exports spans).
    Spans(Vec<crate::SpanRecord>),
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    /// Byte fields are serialised as bytes (one copy, not one call per
    /// element); postcard lays them out exactly as it lays out a sequence of
    /// `u8`, so frames from before the change decode the same.
    #[test]
    fn byte_fields_keep_the_sequence_layout() {
        #[derive(Serialize)]
        struct AsSeq {
            a: u32,
            b: Vec<u8>,
        }
        #[derive(Serialize)]
        struct AsBytes {
            a: u32,
            #[serde(with = "serde_bytes")]
            b: Vec<u8>,
        }
        let b: Vec<u8> = (0..=255).cycle().take(300).collect();
        assert_eq!(
            postcard::to_allocvec(&AsSeq { a: 7, b: b.clone() }).unwrap(),
            postcard::to_allocvec(&AsBytes { a: 7, b }).unwrap()
        );
    }
}
