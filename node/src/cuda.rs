//! The CUDA backend behind the `gpu` interface.
//!
//! ```text
//!  CudaBackend ── one CudaGpu per device ── context, built-in kernels (NVRTC PTX),
//!                                            a pool of slot streams (stream + cuBLAS handle)
//!  a job ── StreamLease (one slot stream on the least busy GPU,
//!            its tenant's memory pool there) ── its buffers, launches, gemm
//! ```
//!
//! Every buffer and resident tensor a job allocates comes from its
//! tenant's own memory pool on the GPU ([`TenantPools`]), whose maximum is
//! the tenant's GPU memory cap: the driver refuses what would pass it.
//!
//! Tensors of weights a job opens are the one thing jobs share on a GPU:
//! each GPU keeps a [`ResidentSet`] of them (loaded once, evicted LRU under
//! its weights budget). A resident tensor is loaded on the opening job's
//! stream, which is synchronized before any other job can see it, and
//! freed only after the whole device is synchronized, so no stream still
//! reads it.
//!
//! Discovery loads the driver dynamically: a host without one (or without
//! GPUs) is a CPU-only host, never a panic. A job leases one stream for its
//! whole run and returns it when its store is dropped; its buffers are
//! `CudaSlice`s freed with it, whatever way the job ended.
//!
//! Errors: [`DeviceError`] says whether the context is *poisoned* (a sticky
//! error such as an illegal address: every later call on this process fails),
//! in which case the node must exit and be restarted by its sidecar.

#![allow(unsafe_code)] // kernel launches and cuBLAS calls are unsafe in cudarc

use crate::resident::{OpenError, Opened, ResidentKey, ResidentSet};
use crate::tenant_gpu::TenantGpuAccount;
use crate::tenant_pool::{Refusal, TenantPool, TenantPools, is_out_of_memory};
use crate::weights::elements;
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError,
    LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use spillway_kernels::{DType, Kernel, KernelPack, PackKernel, PackSource, nvrtc};
use spillway_proto::{Digest, TenantId};
use spillway_proto::{GpuDevice, GpuSharing};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A failed device call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct DeviceError {
    pub(crate) message: String,
    /// The device ran out of memory (the job may retry smaller).
    pub(crate) out_of_memory: bool,
    /// It was the tenant's cap that refused (its memory pool is full), not
    /// the device: demand its share of the GPU memory quota lacked.
    pub(crate) over_cap: bool,
    /// The context is poisoned: the node must exit.
    pub(crate) poisoned: bool,
}

impl From<DriverError> for DeviceError {
    fn from(e: DriverError) -> Self {
        use CUresult::*;
        let poisoned = matches!(
            e.0,
            CUDA_ERROR_ILLEGAL_ADDRESS
                | CUDA_ERROR_HARDWARE_STACK_ERROR
                | CUDA_ERROR_ILLEGAL_INSTRUCTION
                | CUDA_ERROR_MISALIGNED_ADDRESS
                | CUDA_ERROR_INVALID_ADDRESS_SPACE
                | CUDA_ERROR_INVALID_PC
                | CUDA_ERROR_LAUNCH_FAILED
                | CUDA_ERROR_ECC_UNCORRECTABLE
                | CUDA_ERROR_CONTEXT_IS_DESTROYED
        );
        Self {
            message: format!("CUDA: {e}"),
            out_of_memory: e.0 == CUDA_ERROR_OUT_OF_MEMORY,
            over_cap: false,
            poisoned,
        }
    }
}

impl From<cudarc::cublas::result::CublasError> for DeviceError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        // A cuBLAS failure after a kernel fault reports the fault's state;
        // the next driver call tells whether the context is poisoned.
        Self {
            message: format!("cuBLAS: {e:?}"),
            out_of_memory: false,
            over_cap: false,
            poisoned: false,
        }
    }
}

/// One argument of a kernel launch, in the kernel's parameter order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LaunchArg {
    /// A device pointer (from [`StreamLease::ptr`]).
    Ptr(u64),
    F32(f32),
    U32(u32),
}

struct SlotStream {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
}

/// cuBLAS workspace of a job that calls `gemm`. Without one set, cuBLAS
/// falls back to a small default pool and picks slower kernels for large
/// 16-bit products (measured on an H100: a 4096³ bf16 gemm took 0.211 ms
/// against torch's 0.188 ms, which sets a 32 MiB workspace on Hopper).
pub(crate) const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A job's cuBLAS workspace: set at its first `gemm`, from its tenant's
/// pool (so the tenant is charged for it), or none where the tenant's cap
/// has no room for one (its products then run without: slower kernels for
/// large ones, the same results).
enum Workspace {
    Unset,
    /// Kept until the lease drops (the handle points into it).
    Held {
        _buffer: CudaSlice<u8>,
    },
    Without,
}

/// A kernel pack loaded on one GPU: its declared kernels, by name.
struct PackModule {
    functions: HashMap<String, CudaFunction>,
}

/// One GPU: its context, kernels and free slot streams.
pub(crate) struct CudaGpu {
    info: GpuDevice,
    /// Whether its contexts go through MPS, and whether it is a MIG
    /// instance.
    sharing: GpuSharing,
    ctx: Arc<CudaContext>,
    functions: HashMap<Kernel, CudaFunction>,
    /// Where compiled PTX is cached (kernel packs compile here too).
    ptx_dir: PathBuf,
    /// What compiles a pack's CUDA source, in a child process.
    compiler: Option<nvrtc::Compiler>,
    /// Kernel packs loaded on this GPU, by digest.
    packs: Mutex<HashMap<Digest, Arc<PackModule>>>,
    /// `test_oob_write` and `test_spin`, when the node runs with test
    /// kernels.
    tests: Option<TestKernels>,
    free: Mutex<Vec<SlotStream>>,
    /// Tensors of weights resident here.
    resident: ResidentSet<DeviceTensor>,
    /// Each tenant's memory pool here.
    pools: TenantPools,
}

/// A tensor of weights in device memory (16-bit types as their bits).
#[derive(Debug)]
pub(crate) enum DeviceTensor {
    F32(CudaSlice<f32>),
    Bits(CudaSlice<u16>),
}

impl DeviceTensor {
    pub(crate) fn len(&self) -> usize {
        match self {
            DeviceTensor::F32(s) => s.len(),
            DeviceTensor::Bits(s) => s.len(),
        }
    }
}

/// A start mark on a job's stream, for [`StreamLease::device_time`].
pub(crate) struct DeviceTimer(cudarc::driver::CudaEvent);

impl std::fmt::Debug for DeviceTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTimer")
    }
}

/// How the GPUs of a node are opened.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuOptions {
    /// Slot streams per GPU.
    pub(crate) slots: u32,
    /// Only these ordinals (`None`: every GPU).
    pub(crate) only: Option<Vec<usize>>,
    /// Load the fault-test kernels.
    pub(crate) test_kernels: bool,
    pub(crate) compiler: Option<nvrtc::Compiler>,
    /// Bytes of resident weights per GPU (`None`: half its memory).
    pub(crate) weights_budget: Option<u64>,
}

/// The fault-test kernels (`kernels/cuda/testing.cu`).
struct TestKernels {
    oob_write: CudaFunction,
    spin: CudaFunction,
}

/// Every GPU of the host.
pub(crate) struct CudaBackend {
    gpus: Vec<Arc<CudaGpu>>,
    /// The last answer of [`CudaBackend::memory`], and when it was taken.
    memory: Mutex<Option<(std::time::Instant, Vec<spillway_proto::GpuMemory>)>>,
}

/// How old a memory report may be when asked again: the node reports at
/// each job's start and end, on the job's path, and asking the driver
/// costs a call per GPU and two per tenant's pool there.
const MEMORY_REPORT_AGE: std::time::Duration = std::time::Duration::from_millis(200);

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("gpus", &self.devices())
            .finish()
    }
}

/// Whether the CUDA driver library can be loaded at all.
pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether a device the driver names `name` is a MIG instance: the driver
/// calls those `<GPU> MIG <profile>` (`NVIDIA H100 80GB HBM3 MIG 1g.10gb`).
fn is_mig_instance(name: &str) -> bool {
    name.split_whitespace().any(|word| word == "MIG")
}

/// The GPUs the driver shows this process (0 without a driver). Creates
/// no context: `spillway gpu-count` answers it for a host planning one
/// executor per GPU, so its sidecar never loads the driver.
pub fn gpu_count() -> usize {
    if !driver_present() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

impl CudaBackend {
    /// Opens every GPU (or those `options` name), compiles or loads the
    /// built-in kernels for each and creates its slot streams. `Ok(None)`
    /// when the host has no driver or no GPU.
    pub(crate) fn open(ptx_dir: &Path, options: &GpuOptions) -> Result<Option<Self>, DeviceError> {
        if !driver_present() {
            tracing::info!("no CUDA driver found: CPU backend only");
            return Ok(None);
        }
        let count = match CudaContext::device_count() {
            Ok(n) => n.max(0) as usize,
            Err(e) => {
                tracing::warn!("CUDA driver present but unusable ({e}): CPU backend only");
                return Ok(None);
            }
        };
        let mut gpus = Vec::new();
        for ordinal in 0..count {
            if options.only.as_ref().is_some_and(|o| !o.contains(&ordinal)) {
                continue;
            }
            let gpu = open_gpu(ordinal, ptx_dir, options)?;
            gpus.push(Arc::new(gpu));
        }
        if gpus.is_empty() {
            return Ok(None);
        }
        for g in &gpus {
            tracing::info!(index = g.info.index, model = %g.info.model,
                memory_gib = g.info.memory_bytes >> 30, cc = ?g.info.compute_capability, "GPU ready");
        }
        Ok(Some(Self {
            gpus,
            memory: Mutex::new(None),
        }))
    }

    /// The inventory, for the node's capabilities.
    pub(crate) fn devices(&self) -> Vec<GpuDevice> {
        self.gpus.iter().map(|g| g.info.clone()).collect()
    }

    /// How each GPU is shared with other processes.
    pub(crate) fn sharing(&self) -> Vec<GpuSharing> {
        self.gpus.iter().map(|g| g.sharing).collect()
    }

    /// Compiles (or finds in the PTX cache) and loads a kernel pack on every
    /// GPU, and finds each declared kernel in it: run when a pack is
    /// stored, so a pack that does not build is refused at upload.
    pub(crate) fn load_pack(&self, digest: &Digest, pack: &KernelPack) -> Result<(), DeviceError> {
        for gpu in &self.gpus {
            gpu.pack(digest, pack)?;
        }
        Ok(())
    }

    /// Tensors of weights loaded so far, on every GPU.
    pub(crate) fn resident_loads(&self) -> u64 {
        self.gpus.iter().map(|g| g.resident.loads()).sum()
    }

    /// The weights resident on each GPU, most recently used first there.
    pub(crate) fn resident_weights(&self) -> Vec<spillway_proto::GpuWeights> {
        self.gpus
            .iter()
            .flat_map(|g| {
                g.resident
                    .weights()
                    .into_iter()
                    .map(|(digest, bytes)| spillway_proto::GpuWeights {
                        gpu: g.info.index,
                        digest,
                        bytes,
                    })
            })
            .collect()
    }

    /// Each GPU's memory (a GPU whose driver does not answer is left
    /// out), as the driver said at most [`MEMORY_REPORT_AGE`] ago: for the
    /// node's load reports.
    pub(crate) fn recent_memory(&self) -> Vec<spillway_proto::GpuMemory> {
        let now = std::time::Instant::now();
        let mut last = self.memory.lock().expect("memory report lock");
        if let Some((taken, report)) = &*last
            && now.duration_since(*taken) < MEMORY_REPORT_AGE
        {
            return report.clone();
        }
        let report = self.memory();
        *last = Some((now, report.clone()));
        report
    }

    /// Each GPU's memory, asked of the driver now.
    pub(crate) fn memory(&self) -> Vec<spillway_proto::GpuMemory> {
        self.gpus
            .iter()
            .filter_map(|g| {
                let (free, total) = g.ctx.mem_get_info().ok()?;
                Some(spillway_proto::GpuMemory {
                    gpu: g.info.index,
                    used_bytes: (total - free) as u64,
                    total_bytes: total as u64,
                    weights_bytes: g.resident.used(),
                    tenants: g
                        .pools
                        .uses()
                        .into_iter()
                        .map(|u| spillway_proto::TenantGpuPool {
                            tenant: u.tenant,
                            cap_bytes: u.cap,
                            reserved_bytes: u.reserved,
                            used_bytes: u.used,
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Bytes of weights resident now, on every GPU.
    pub(crate) fn resident_bytes(&self) -> u64 {
        self.gpus.iter().map(|g| g.resident.used()).sum()
    }

    /// A slot stream for the job whose tenant's account is `account`,
    /// allocating from the tenant's pool with its cap (the account's cap
    /// is enforced to the byte by the ledger; the pool bounds it in the
    /// driver as well, to the driver's chunk).
    pub(crate) fn lease_for(&self, account: &TenantGpuAccount) -> Option<StreamLease> {
        self.lease(account.tenant(), account.cap())
    }

    /// A slot stream on the GPU with the most free streams, allocating
    /// from `tenant`'s memory pool there (capped at `cap`). A pool the
    /// driver will not make leaves the lease allocating from the device's
    /// default pool, and the cap to the node's ledger alone.
    pub(crate) fn lease(&self, tenant: &TenantId, cap: Option<u64>) -> Option<StreamLease> {
        let gpu = self
            .gpus
            .iter()
            .max_by_key(|g| g.free.lock().expect("stream pool lock").len())?
            .clone();
        let slot = gpu.free.lock().expect("stream pool lock").pop()?;
        let pool = match gpu.pools.pool(tenant, cap) {
            Ok(pool) => Some(pool),
            Err(e) => {
                tracing::warn!(gpu = gpu.info.index, %tenant,
                    "the driver made no memory pool for the tenant ({e}): its cap is counted, not enforced by the driver");
                None
            }
        };
        Some(StreamLease {
            gpu,
            slot: Some(slot),
            settled: AtomicBool::new(true),
            pool,
            workspace: Mutex::new(Workspace::Unset),
        })
    }
}

impl CudaGpu {
    /// `pack` loaded on this GPU, compiled and loaded at first use.
    fn pack(&self, digest: &Digest, pack: &KernelPack) -> Result<Arc<PackModule>, DeviceError> {
        if let Some(m) = self.packs.lock().expect("pack lock").get(digest) {
            return Ok(m.clone());
        }
        let ptx = match &pack.source {
            PackSource::Cuda(source) => {
                let Some(compiler) = &self.compiler else {
                    return Err(DeviceError {
                        message:
                            "this node has no kernel compiler configured: publish the pack as PTX"
                                .into(),
                        out_of_memory: false,
                        over_cap: false,
                        poisoned: false,
                    });
                };
                let arch = nvrtc::arch_for(self.info.compute_capability);
                nvrtc::tenant_ptx(source, &arch, &self.ptx_dir, compiler, nvrtc::CHILD_LIMITS)
                    .map_err(compile_error)?
            }
            PackSource::Ptx(ptx) => ptx.clone(),
        };
        let module = self
            .ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| DeviceError {
                message: format!("kernel pack {digest}: the module does not load: {e}"),
                ..DeviceError::from(e)
            })?;
        let mut functions = HashMap::new();
        for k in &pack.kernels {
            let f = module.load_function(&k.name).map_err(|e| DeviceError {
                message: format!(
                    "kernel pack {digest}: kernel `{}` is declared but not in the module ({e}); is it extern \"C\"?",
                    k.name
                ),
                ..DeviceError::from(e)
            })?;
            functions.insert(k.name.clone(), f);
        }
        let loaded = Arc::new(PackModule { functions });
        self.packs
            .lock()
            .expect("pack lock")
            .insert(*digest, loaded.clone());
        Ok(loaded)
    }
}

fn compile_error(e: nvrtc::CompileError) -> DeviceError {
    DeviceError {
        message: e.to_string(),
        out_of_memory: false,
        over_cap: false,
        poisoned: false,
    }
}

fn open_gpu(ordinal: usize, ptx_dir: &Path, options: &GpuOptions) -> Result<CudaGpu, DeviceError> {
    let GpuOptions {
        slots,
        test_kernels,
        compiler,
        weights_budget,
        ..
    } = options.clone();
    let ctx = CudaContext::new(ordinal)?;
    let (major, minor) = ctx.compute_capability()?;
    let info = GpuDevice {
        index: ordinal as u32,
        model: ctx.name()?,
        memory_bytes: ctx.total_mem()? as u64,
        compute_capability: (major as u32, minor as u32),
    };
    let sharing = GpuSharing {
        gpu: info.index,
        // Drivers before CUDA 12 lack the attribute: no MPS is what they
        // would say of a GPU they do not share through one.
        mps: ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MPS_ENABLED)
            .is_ok_and(|on| on == 1),
        mig: is_mig_instance(&info.model),
    };
    if sharing.mps || sharing.mig {
        tracing::info!(
            gpu = ordinal,
            mps = sharing.mps,
            mig = sharing.mig,
            "GPU shared"
        );
    }
    keep_freed_memory(&ctx, info.memory_bytes / 4)?;
    // SAFETY: every buffer is allocated, used and freed on the one stream of
    // the job that owns it, and a stream is synchronized before it goes back
    // to the pool; the one thing that crosses streams, a resident tensor, is
    // synchronized by hand (its loading stream before anyone else sees it,
    // the whole device before it is freed), so cudarc's cross-stream event
    // tracking (an event record per buffer use) buys nothing.
    unsafe { ctx.disable_event_tracking() };
    let arch = nvrtc::arch_for(info.compute_capability);
    let ptx = nvrtc::ptx(nvrtc::BUILTIN_SOURCE, &arch, ptx_dir).map_err(compile_error)?;
    let module = ctx.load_module(Ptx::from_src(ptx))?;
    let mut functions = HashMap::new();
    for k in Kernel::ALL {
        if k != Kernel::Gemm {
            functions.insert(k, module.load_function(k.name())?);
        }
    }
    let tests = if test_kernels {
        let ptx = nvrtc::ptx(nvrtc::TESTING_SOURCE, &arch, ptx_dir).map_err(compile_error)?;
        let module = ctx.load_module(Ptx::from_src(ptx))?;
        tracing::warn!(
            gpu = ordinal,
            "fault-test kernels loaded: guests can fault this GPU"
        );
        Some(TestKernels {
            oob_write: module.load_function(nvrtc::TEST_OOB_WRITE)?,
            spin: module.load_function(nvrtc::TEST_SPIN)?,
        })
    } else {
        None
    };
    let mut free = Vec::new();
    for _ in 0..slots {
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        free.push(SlotStream { stream, blas });
    }
    Ok(CudaGpu {
        pools: TenantPools::new(ctx.clone(), info.memory_bytes),
        ctx,
        functions,
        ptx_dir: ptx_dir.to_owned(),
        compiler,
        packs: Mutex::new(HashMap::new()),
        tests,
        free: Mutex::new(free),
        resident: ResidentSet::new(weights_budget.unwrap_or(info.memory_bytes / 2)),
        info,
        sharing,
    })
}

/// Lets the device's memory pool keep up to `bytes` of freed memory for
/// reuse. The default threshold (0) hands freed memory back to the driver
/// at every synchronization, so each job's first allocation would map fresh
/// memory: that costs more than the rest of a small job.
fn keep_freed_memory(ctx: &Arc<CudaContext>, bytes: u64) -> Result<(), DriverError> {
    use cudarc::driver::result::{device, mem_pool};
    use cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
    ctx.bind_to_thread()?;
    let mut threshold = bytes;
    // SAFETY: the device handle comes from a live context; the release
    // threshold attribute takes a pointer to a u64, which `threshold` is.
    unsafe {
        let pool = device::get_default_mem_pool(ctx.cu_device())?;
        mem_pool::set_attribute(
            pool,
            CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&raw mut threshold).cast::<std::ffi::c_void>(),
        )
    }
}

/// A matrix dimension as cuBLAS takes it.
fn dim(v: usize) -> Result<i32, DeviceError> {
    i32::try_from(v).map_err(|_| DeviceError {
        message: format!("dimension {v} is too large for cuBLAS"),
        out_of_memory: false,
        over_cap: false,
        poisoned: false,
    })
}

/// One job's stream (and cuBLAS handle) on one GPU, returned to the pool
/// when dropped. The stream is synchronized first, so nothing the job
/// enqueued outlives it (unless the job's last call was a successful
/// [`StreamLease::synchronize`]: then only the frees of its buffers follow,
/// which the stream orders before the next job's work).
pub(crate) struct StreamLease {
    gpu: Arc<CudaGpu>,
    slot: Option<SlotStream>,
    /// Nothing was enqueued since the last successful synchronize.
    settled: AtomicBool,
    /// The job's tenant's memory pool on this GPU (`None`: the driver made
    /// none; the device's default pool serves the job).
    pool: Option<Arc<TenantPool>>,
    /// The job's cuBLAS workspace.
    workspace: Mutex<Workspace>,
}

impl std::fmt::Debug for StreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLease")
            .field("gpu", &self.gpu.info.index)
            .finish()
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        let workspace = std::mem::replace(
            self.workspace.get_mut().expect("workspace lock"),
            Workspace::Unset,
        );
        if let (Some(slot), Workspace::Held { .. }) = (self.slot.as_ref(), &workspace) {
            // The handle lets go of the job's workspace, which is freed
            // on this stream after the job's products, before the stream
            // serves another job.
            // SAFETY: a live handle; no workspace is a valid setting.
            let reset = unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *slot.blas.handle(),
                    std::ptr::null_mut(),
                    0,
                )
            };
            if let Err(e) = reset.result() {
                tracing::warn!("resetting a cuBLAS workspace: {e:?}");
            }
        }
        drop(workspace);
        if let Some(slot) = self.slot.take() {
            // A stream whose work failed is not handed to the next job.
            // The executor synchronizes at every job's end, so this is
            // usually settled already and saves a second synchronize.
            if self.settled.load(Ordering::Relaxed) || slot.stream.synchronize().is_ok() {
                self.gpu.free.lock().expect("stream pool lock").push(slot);
            }
        }
    }
}

impl StreamLease {
    fn slot(&self) -> &SlotStream {
        self.slot
            .as_ref()
            .expect("a lease holds its slot until dropped")
    }

    /// The job's stream, for work about to be enqueued on it.
    fn stream(&self) -> &Arc<CudaStream> {
        self.settled.store(false, Ordering::Relaxed);
        &self.slot().stream
    }

    /// Starts timing the work enqueued next on the job's stream (a traced
    /// `gpu` call); `None` if the driver will not record an event.
    pub(crate) fn start_timing(&self) -> Option<DeviceTimer> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        self.slot().stream.record_event(flags).ok().map(DeviceTimer)
    }

    /// The device time of the work enqueued since `timer` started: waits
    /// for that work to finish (so only a traced call pays it). `None` if
    /// the driver cannot say; a fault in the work surfaces at the job's
    /// next synchronize as it would have.
    pub(crate) fn device_time(&self, timer: DeviceTimer) -> Option<std::time::Duration> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let end = self.slot().stream.record_event(flags).ok()?;
        let ms = timer.0.elapsed_ms(&end).ok()?;
        Some(std::time::Duration::from_secs_f64(
            f64::from(ms.max(0.0)) / 1e3,
        ))
    }

    /// The GPU this lease runs on.
    pub(crate) fn device(&self) -> &GpuDevice {
        &self.gpu.info
    }

    /// Whether the job allocates from a pool of its tenant's with a
    /// maximum (its cap).
    #[cfg(test)]
    pub(crate) fn capped_pool(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.cap().is_some())
    }

    /// `len` zeroed elements (`f32`, or `u16` for the 16-bit types), from
    /// the tenant's pool.
    pub(crate) fn alloc<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, DeviceError> {
        let mut slice = self.alloc_uninit::<T>(len)?;
        self.stream().memset_zeros(&mut slice)?;
        Ok(slice)
    }

    /// A copy of `data` on the device, from the tenant's pool.
    fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>, DeviceError> {
        let mut slice = self.alloc_uninit::<T>(data.len())?;
        self.stream().memcpy_htod(data, &mut slice)?;
        Ok(slice)
    }

    /// `len` elements, uninitialized, from the tenant's pool. A refusal at
    /// the tenant's cap is the tenant's `out-of-memory`; a refusal of the
    /// full device is tried once more after every other pool handed back
    /// the memory it keeps idle.
    fn alloc_uninit<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>, DeviceError> {
        let stream = self.stream();
        let Some(pool) = &self.pool else {
            // SAFETY: every caller sets the contents before use.
            return Ok(unsafe { stream.alloc::<T>(len) }?);
        };
        let request = (len * std::mem::size_of::<T>()) as u64;
        let granularity = self.gpu.pools.granularity();
        let mut tried_again = false;
        loop {
            let e = match pool.alloc::<T>(stream, len) {
                Ok(slice) => return Ok(slice),
                Err(e) if is_out_of_memory(&e) => e,
                Err(e) => return Err(e.into()),
            };
            match pool.refusal(request, granularity) {
                Refusal::CapReached => return Err(self.over_cap(pool, request)),
                Refusal::DeviceFull if !tried_again => {
                    self.gpu.pools.trim_idle();
                    tried_again = true;
                }
                Refusal::DeviceFull => {
                    return Err(DeviceError {
                        message: format!(
                            "GPU {} has no room for {request} more bytes (CUDA: {e})",
                            self.gpu.info.index
                        ),
                        ..DeviceError::from(e)
                    });
                }
            }
        }
    }

    /// Gives the job's cuBLAS handle a workspace from the tenant's pool,
    /// once: at its first product, charged to the tenant's `account` too
    /// (so the cap holds across a node's GPUs, where the pool sees only
    /// its own). A tenant whose cap has no room for one multiplies
    /// without.
    fn set_workspace(&self, account: &mut TenantGpuAccount) -> Result<(), DeviceError> {
        let mut workspace = self.workspace.lock().expect("workspace lock");
        if !matches!(*workspace, Workspace::Unset) {
            return Ok(());
        }
        let bytes = CUBLAS_WORKSPACE_BYTES as u64;
        // `None`: the tenant's cap has no room for one.
        let allocated = match account.charge(bytes) {
            Ok(()) => (self.alloc_uninit::<u8>(CUBLAS_WORKSPACE_BYTES))
                .inspect_err(|_| account.release(bytes))
                .map(Some),
            Err(over) => {
                tracing::debug!(
                    gpu = self.gpu.info.index,
                    "no room for a cuBLAS workspace under the tenant's cap ({} of {} bytes held)",
                    over.held,
                    over.cap
                );
                Ok(None)
            }
        };
        let (ptr, size, held) = match allocated {
            Ok(Some(slice)) => {
                let ptr = slice.device_ptr(self.stream()).0;
                (
                    ptr,
                    CUBLAS_WORKSPACE_BYTES,
                    Workspace::Held { _buffer: slice },
                )
            }
            Ok(None) => (0, 0, Workspace::Without),
            Err(e) if e.out_of_memory => {
                tracing::debug!(
                    gpu = self.gpu.info.index,
                    "no room for a cuBLAS workspace: {e}"
                );
                (0, 0, Workspace::Without)
            }
            Err(e) => return Err(e),
        };
        // SAFETY: the workspace (or none) is the job's, lives until the
        // lease drops, where the handle is reset before the stream goes
        // back, and is used only by this handle on this stream.
        unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *self.slot().blas.handle(),
                ptr as *mut std::ffi::c_void,
                size,
            )
        }
        .result()?;
        *workspace = held;
        Ok(())
    }

    /// The error of an allocation the tenant's pool refused at its cap.
    fn over_cap(&self, pool: &TenantPool, request: u64) -> DeviceError {
        let (reserved, used) = pool.use_now().unwrap_or_default();
        DeviceError {
            message: format!(
                "{request} bytes more exceed tenant {}'s GPU memory cap of {} bytes on GPU {} ({used} bytes in use, {reserved} held by its pool; the driver refused)",
                pool.tenant(),
                pool.cap().unwrap_or_default(),
                self.gpu.info.index
            ),
            out_of_memory: true,
            over_cap: true,
            poisoned: false,
        }
    }

    /// Copies `data` into `dst` at element `offset` (bounds checked by the
    /// caller).
    pub(crate) fn write<T: DeviceRepr>(
        &self,
        dst: &mut CudaSlice<T>,
        offset: usize,
        data: &[T],
    ) -> Result<(), DeviceError> {
        let mut view = dst.slice_mut(offset..offset + data.len());
        self.stream().memcpy_htod(data, &mut view)?;
        Ok(())
    }

    /// Copies elements `range` of `src` out (waits for the stream).
    pub(crate) fn read<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<T>, DeviceError> {
        let out = self.stream().clone_dtoh(&src.slice(range))?;
        // A copy into pageable host memory returns once it is done, and it
        // is stream-ordered: everything enqueued before it has finished
        // too, without error (or the copy would have failed).
        self.settled.store(true, Ordering::Relaxed);
        Ok(out)
    }

    /// The raw device pointer of a buffer, for launch arguments.
    pub(crate) fn ptr<T>(&self, buffer: &CudaSlice<T>) -> u64 {
        let (ptr, _sync) = buffer.device_ptr(self.stream());
        ptr
    }

    /// Launches a built-in kernel. Every pointer argument must come from a
    /// buffer whose length the caller checked against the shape arguments.
    pub(crate) fn launch(&self, kernel: Kernel, args: &[LaunchArg]) -> Result<(), DeviceError> {
        let func = self.gpu.functions.get(&kernel).ok_or_else(|| DeviceError {
            message: format!("{} is not a launchable CUDA kernel", kernel.name()),
            out_of_memory: false,
            over_cap: false,
            poisoned: false,
        })?;
        let shape: Vec<u32> = args
            .iter()
            .filter_map(|a| match a {
                LaunchArg::U32(v) => Some(*v),
                _ => None,
            })
            .collect();
        let geometry = kernel.geometry(&shape);
        // SAFETY: the arguments match the kernel's parameter list (checked
        // against `Kernel::params` by the caller), every buffer is at least as
        // long as the shape arguments require, and the kernels guard their
        // own bounds.
        unsafe { self.launch_1d(func, args, geometry.grid, geometry.block) }
    }

    /// Launches `func` on the job's stream with `args` in order, `grid`
    /// blocks of `block` threads.
    ///
    /// # Safety
    ///
    /// `args` must be the kernel's parameters, in order and kind, and every
    /// pointer a buffer the kernel may use to the extent it does.
    unsafe fn launch_1d(
        &self,
        func: &CudaFunction,
        args: &[LaunchArg],
        grid: u32,
        block: u32,
    ) -> Result<(), DeviceError> {
        let mut builder = self.stream().launch_builder(func);
        for a in args {
            match a {
                LaunchArg::Ptr(p) => builder.arg(p),
                LaunchArg::F32(v) => builder.arg(v),
                LaunchArg::U32(v) => builder.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as the caller promised.
        unsafe { builder.launch(config) }?;
        Ok(())
    }

    /// `C = alpha·A(m×k)·B(k×n) + beta·C`, row-major, through cuBLAS
    /// (`cublasGemmEx`, compute type 32F: f32 accumulation, no TF32). A
    /// and B are of type `ab` (f32, or bf16/f16 on the tensor cores) and C
    /// of type `c_type` (f32, or `ab`). The pointers come from buffers of
    /// those types checked to hold m·k, k·n and m·n elements; `c` aliases
    /// neither `a` nor `b`. The job's first product charges its workspace
    /// to `account`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        a: u64,
        b: u64,
        ab: DType,
        beta: f32,
        c: u64,
        c_type: DType,
        account: &mut TenantGpuAccount,
    ) -> Result<(), DeviceError> {
        use cudarc::cublas::sys::cublasComputeType_t::CUBLAS_COMPUTE_32F;
        use cudarc::cublas::sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT;
        use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
        use cudarc::cublas::sys::cudaDataType::{CUDA_R_16BF, CUDA_R_16F, CUDA_R_32F};
        let data_type = |t: DType| match t {
            DType::F32 => CUDA_R_32F,
            DType::Bf16 => CUDA_R_16BF,
            DType::F16 => CUDA_R_16F,
        };
        let (m, n, k) = (dim(m)?, dim(n)?, dim(k)?);
        self.set_workspace(account)?;
        self.gpu.ctx.bind_to_thread()?;
        self.settled.store(false, Ordering::Relaxed);
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: swap the operands
        // and the m/n dimensions; leading dimensions are the row lengths.
        // SAFETY: see the doc comment; alpha and beta are f32 as compute
        // type 32F requires, and the handle is bound to this lease's stream.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.slot().blas.handle(),
                CUBLAS_OP_N,
                CUBLAS_OP_N,
                n,
                m,
                k,
                (&raw const alpha).cast(),
                b as *const std::ffi::c_void,
                data_type(ab),
                n,
                a as *const std::ffi::c_void,
                data_type(ab),
                k,
                (&raw const beta).cast(),
                c as *mut std::ffi::c_void,
                data_type(c_type),
                n,
                CUBLAS_COMPUTE_32F,
                CUBLAS_GEMM_DFALT,
            )
        }?;
        Ok(())
    }

    /// Launches kernel `kernel` of `pack` with `grid` blocks of its
    /// declared block size. The arguments must match its declared
    /// parameters and every buffer hold its declared elements (checked by
    /// the caller); the kernel guards its own index.
    pub(crate) fn launch_pack(
        &self,
        digest: &Digest,
        pack: &KernelPack,
        kernel: &PackKernel,
        args: &[LaunchArg],
        grid: u32,
    ) -> Result<(), DeviceError> {
        let module = self.gpu.pack(digest, pack)?;
        let func = module
            .functions
            .get(&kernel.name)
            .ok_or_else(|| DeviceError {
                message: format!("kernel `{}` is not loaded", kernel.name),
                out_of_memory: false,
                over_cap: false,
                poisoned: false,
            })?;
        // SAFETY: the arguments match the parameters the pack declares for
        // this kernel, in order and kind, and every buffer holds what the
        // manifest says the kernel reads or writes. Whether the kernel keeps
        // to its manifest is the signed publisher's promise; if it does not,
        // the context is poisoned and the node restarts (device_fault).
        unsafe { self.launch_1d(func, args, grid, kernel.block) }
    }

    /// Whether this GPU has the fault-test kernels.
    pub(crate) fn has_test_kernels(&self) -> bool {
        self.gpu.tests.is_some()
    }

    fn test_kernels(&self) -> Result<&TestKernels, DeviceError> {
        self.gpu.tests.as_ref().ok_or_else(|| DeviceError {
            message: "fault-test kernels are not loaded".into(),
            out_of_memory: false,
            over_cap: false,
            poisoned: false,
        })
    }

    /// Launches `test_oob_write` on `buffer` (a fault test).
    pub(crate) fn launch_oob_write(&self, buffer: u64, n: u32) -> Result<(), DeviceError> {
        let func = &self.test_kernels()?.oob_write;
        // SAFETY: deliberately unsound on the device (that is the test); the
        // host side passes a valid pointer and scalar.
        unsafe { self.launch_1d(func, &[LaunchArg::Ptr(buffer), LaunchArg::U32(n)], 1, 32) }
    }

    /// Launches `test_spin` for `ms` milliseconds (a watchdog test).
    pub(crate) fn launch_spin(&self, ms: u32) -> Result<(), DeviceError> {
        let func = &self.test_kernels()?.spin;
        // SAFETY: one scalar parameter, as the kernel declares; it touches
        // no memory.
        unsafe { self.launch_1d(func, &[LaunchArg::U32(ms)], 1, 1) }
    }

    /// The tensor `key` resident on this lease's GPU: resident already, or
    /// loaded now from `bytes` (its little-endian elements of `dtype`) on
    /// this stream, charged to the tenant through `charge`.
    pub(crate) fn open_resident(
        &self,
        key: &ResidentKey,
        (dtype, bytes): (DType, &[u8]),
        charge: TenantGpuAccount,
    ) -> Result<Opened<DeviceTensor>, OpenError<DeviceError>> {
        let gpu = &self.gpu;
        let evict = || {
            // Nothing may still read what is about to be freed.
            if let Err(e) = gpu.ctx.synchronize() {
                tracing::error!("synchronizing before an eviction: {e}");
            }
        };
        let load = || {
            // Copied straight from the mapped file when it aligns the
            // elements, else through a host copy; into the tenant's pool.
            let tensor = if dtype.is_16_bit() {
                DeviceTensor::Bits(self.upload(elements::<u16>(bytes).as_ref())?)
            } else {
                DeviceTensor::F32(self.upload(elements::<f32>(bytes).as_ref())?)
            };
            let stream = self.stream();
            // Other jobs' streams read it without waiting on this one.
            stream.synchronize()?;
            self.settled.store(true, Ordering::Relaxed);
            Ok(tensor)
        };
        gpu.resident
            .open(key, bytes.len() as u64, charge, evict, load)
    }

    /// Waits for everything the job enqueued. Nothing to wait for when nothing was enqueued since the stream was
    /// last known idle (a synchronize, or a read back, which waits).
    pub(crate) fn synchronize(&self) -> Result<(), DeviceError> {
        if self.settled.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.stream().synchronize()?;
        self.settled.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_mig_instance;

    #[test]
    fn a_mig_instance_is_told_by_its_name() {
        for (name, mig) in [
            ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", true),
            ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", true),
            ("NVIDIA H100 80GB HBM3", false),
            ("NVIDIA H200", false),
            ("NVIDIA MIGHTY 1", false),
        ] {
            assert_eq!(is_mig_instance(name), mig, "{name}");
        }
    }
}
