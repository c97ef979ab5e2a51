//! What one job's `Store` holds: its limits, its control block and the
//! resources its guest created.

use crate::cuda::StreamLease;
use crate::executor::JobControl;
use crate::limits::GuestLimits;
use spillway_proto::JobId;
use std::time::Instant;
use wasmtime::component::ResourceTable;

/// A kernel pack as one job sees it.
#[derive(Debug, Clone)]
pub(crate) struct JobPack {
    /// The name the function gave it; the guest launches `<name>/<kernel>`.
    pub(crate) name: String,
    pub(crate) digest: spillway_proto::Digest,
    pub(crate) pack: std::sync::Arc<spillway_kernels::KernelPack>,
}

/// The data of one job's store.
pub(crate) struct GuestState {
    pub(crate) job: JobId,
    /// Shared with the call of `run`, so the input is never copied.
    pub(crate) input: std::sync::Arc<Vec<u8>>,
    pub(crate) limits: GuestLimits,
    pub(crate) control: JobControl,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    /// Output bytes emitted so far, and the most allowed.
    pub(crate) emitted: u64,
    pub(crate) max_output: u64,
    pub(crate) chunks: u32,
    /// Buffers live here (`gpu.buffer` resources).
    pub(crate) table: ResourceTable,
    /// Bytes held by live `gpu` buffers, and the most allowed.
    pub(crate) gpu_bytes: u64,
    pub(crate) gpu_limit: u64,
    /// The same bytes in the job's tenant's account on this node.
    pub(crate) tenant_gpu: crate::tenant_gpu::TenantGpuAccount,
    /// For a job that prefers a GPU: where to lease a stream at its first
    /// `gpu` call (taken then, whatever the outcome).
    pub(crate) gpu_pool: Option<std::sync::Arc<crate::cuda::CudaBackend>>,
    /// The job's CUDA stream, when its `gpu` calls run on a GPU. Declared
    /// after `table` so the buffers are freed before the stream goes back.
    pub(crate) cuda: Option<StreamLease>,
    /// The kernel packs the job may launch from (`<name>/<kernel>`).
    pub(crate) packs: Vec<JobPack>,
    /// Set when a device call poisoned the CUDA context.
    pub(crate) device_fault: Option<String>,
}

impl std::fmt::Debug for GuestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestState")
            .field("job", &self.job)
            .field("emitted", &self.emitted)
            .field("gpu_bytes", &self.gpu_bytes)
            .finish_non_exhaustive()
    }
}

impl GuestState {
    /// The state a warm instance waits in until its job arrives (see
    /// `warm`): no input, no GPU, the node's limits, a deadline far off.
    /// No guest code runs in it; the job's own state replaces it first.
    pub(crate) fn waiting(limits: GuestLimits) -> Self {
        let now = Instant::now();
        Self {
            job: JobId(0),
            input: std::sync::Arc::default(),
            limits,
            control: JobControl::detached(),
            started: now,
            deadline: now + std::time::Duration::from_secs(24 * 3600),
            emitted: 0,
            max_output: 0,
            chunks: 0,
            table: ResourceTable::new(),
            gpu_bytes: 0,
            gpu_limit: 0,
            tenant_gpu: crate::tenant_gpu::TenantGpuAccount::open(
                std::sync::Arc::default(),
                spillway_proto::TenantId::admin(),
                Some(0),
            ),
            gpu_pool: None,
            cuda: None,
            packs: Vec::new(),
            device_fault: None,
        }
    }

    /// Milliseconds until the deadline (0 once passed).
    pub(crate) fn remaining_ms(&self) -> u64 {
        self.deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    }
}

#[cfg(test)]
impl GuestState {
    /// A job state for host-function tests: 1 MiB of memory, a minute of
    /// deadline, `gpu_limit` bytes of buffers, on `cuda` or the CPU.
    pub(crate) fn for_test(gpu_limit: u64, cuda: Option<StreamLease>) -> Self {
        let limits = GuestLimits {
            memory_bytes: 1 << 20,
            table_elements: 100,
            largest_memory: 0,
        };
        Self {
            job: JobId(1),
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            max_output: 1 << 20,
            gpu_limit,
            tenant_gpu: crate::tenant_gpu::TenantGpuAccount::open(
                std::sync::Arc::default(),
                spillway_proto::TenantId::admin(),
                None,
            ),
            cuda,
            ..Self::waiting(limits)
        }
    }
}
