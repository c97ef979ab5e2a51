//! What one job's `Store` holds: its limits, its control block, its log,
//! its WASI sandbox and the resources its guest created.

use crate::cuda::StreamLease;
use crate::guest_log::{LogBudget, SharedLog};
use crate::limits::GuestLimits;
use crate::sandbox::Sandbox;
use spillway_proto::JobId;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use wasmtime::component::ResourceTable;

/// How the outside world steers a running job.
pub struct JobControl {
    /// Set to interrupt the job; it ends with `cancelled` within one tick.
    pub cancel: Arc<AtomicBool>,
    /// Receives each chunk the guest emits, with its sequence number.
    pub emit: Box<dyn FnMut(u32, Vec<u8>) + Send>,
    /// How many emitted bytes may wait for the consumer: `emit` waits
    /// while the window is full.
    pub output: Arc<crate::OutputWindow>,
}

impl std::fmt::Debug for JobControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobControl")
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

impl JobControl {
    /// A control that is never cancelled and drops emitted chunks.
    pub fn detached() -> Self {
        Self {
            cancel: Arc::new(AtomicBool::new(false)),
            emit: Box::new(|_, _| {}),
            output: Arc::default(),
        }
    }
}

/// Why a job was stopped from outside its guest: by the epoch callback, a
/// bounded wait or a metered CPU kernel (the executor classifies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Interrupted {
    #[error("job cancelled")]
    Cancelled,
    #[error("job deadline reached")]
    Deadline,
}

/// A kernel pack as one job sees it.
#[derive(Debug, Clone)]
pub(crate) struct JobPack {
    /// The name the function gave it; the guest launches `<name>/<kernel>`.
    pub(crate) name: String,
    pub(crate) digest: spillway_proto::Digest,
    pub(crate) pack: std::sync::Arc<spillway_kernels::KernelPack>,
}

/// Weights as one job sees them.
#[derive(Debug, Clone)]
pub(crate) struct JobWeights {
    /// The name the function gave them; the guest opens `(name, tensor)`.
    pub(crate) name: String,
    pub(crate) digest: spillway_proto::Digest,
    pub(crate) weights: std::sync::Arc<crate::weights::Weights>,
}

#[cfg(test)]
impl JobWeights {
    /// Weights `name` holding one f32 tensor `w` of `values`, as a job
    /// whose function names them sees them.
    pub(crate) fn for_test(name: &str, values: &[f32]) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file =
            crate::weights::tests::safetensors_file(&[("w", "F32", &[values.len() as u64], bytes)]);
        Self {
            name: name.into(),
            digest: spillway_proto::Digest::of(&file),
            weights: std::sync::Arc::new(crate::weights::Weights::from_bytes(file).unwrap()),
        }
    }
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
    /// Buffers (`gpu.buffer`) and WASI resources live here.
    pub(crate) table: ResourceTable,
    /// What `job.log`, stdout and stderr write to (bounded, escaped).
    pub(crate) log: SharedLog,
    /// WASI 0.2, closed (see `sandbox`).
    pub(crate) sandbox: Sandbox,
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
    /// The weights the job may open (`gpu.weights`).
    pub(crate) weights: Vec<JobWeights>,
    /// Bytes of weights this job loaded onto its GPU.
    pub(crate) weights_loaded: u64,
    /// Set when a device call poisoned the CUDA context.
    pub(crate) device_fault: Option<String>,
    /// Where the job tells the GPU watchdog it took a stream (a job that
    /// may use a GPU on a GPU host).
    pub(crate) gpu_watch: Option<std::sync::Arc<crate::watchdog::WatchFlags>>,
    /// How fast the CPU backend multiplies here.
    pub(crate) cpu_speed: crate::cpu_speed::CpuSpeed,
}

impl std::fmt::Debug for GuestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestState")
            .field("job", &self.job)
            .field("emitted", &self.emitted)
            .field("limits", &self.limits)
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
            log: SharedLog::new(JobId(0), LogBudget { lines: 0, bytes: 0 }),
            sandbox: Sandbox::new(),
            tenant_gpu: crate::tenant_gpu::TenantGpuAccount::open(
                std::sync::Arc::default(),
                spillway_proto::TenantId::admin(),
                Some(0),
            ),
            gpu_pool: None,
            cuda: None,
            packs: Vec::new(),
            weights: Vec::new(),
            weights_loaded: 0,
            device_fault: None,
            gpu_watch: None,
            cpu_speed: crate::cpu_speed::CpuSpeed::fixed(u64::MAX),
        }
    }

    /// Whether the job must stop now: cancelled, or past its deadline.
    pub(crate) fn interruption(&self) -> Option<Interrupted> {
        if self
            .control
            .cancel
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Some(Interrupted::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Interrupted::Deadline)
        } else {
            None
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
    /// A job state for host-function tests: a memory limit of
    /// `memory_limit` bytes (no linear memory held), a minute of deadline,
    /// on `cuda` or the CPU.
    pub(crate) fn for_test(memory_limit: u64, cuda: Option<StreamLease>) -> Self {
        let limits = GuestLimits::new(memory_limit as usize, 100);
        Self {
            job: JobId(1),
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            max_output: 1 << 20,
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

impl wasmtime_wasi::WasiView for GuestState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.sandbox.wasi(&mut self.table, &self.log)
    }
}

impl wasmtime_wasi_http::WasiHttpView for GuestState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        self.sandbox.http(&mut self.table)
    }
}

impl crate::sandbox::WaitBounds for GuestState {
    fn wait_bounds(&self) -> (Arc<AtomicBool>, Instant) {
        (self.control.cancel.clone(), self.deadline)
    }
}
