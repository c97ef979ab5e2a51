//! The host side of the `gpu` interface.
//!
//! A job's buffers live in its resource table, on the backend chosen for the
//! job: device memory on its leased CUDA stream, or host vectors for the CPU
//! reference backend. A buffer holds `f32`, `bf16` or `f16` elements (the
//! 16-bit ones as their bits); `write` and `read` convert, `write-bits` and
//! `read-bits` move the patterns as they are. Every call is validated the same way for both (buffer
//! bounds, kernel signatures, shape requirements, aliasing) before anything
//! runs, and buffer bytes count against the job's allowance, so a guest cannot
//! allocate around its memory limit through `gpu`.
//!
//! A tensor of the job's weights (`gpu.weights`) is a buffer too, but a
//! resident, read-only one: on the CPU backend its elements are read where
//! the weights file is mapped, shared by every job that opens it and
//! charged to none; writing it, or passing it where a kernel writes, is
//! refused before anything runs.
//!
//! A device error that poisons the CUDA context is recorded in the job's
//! state; the executor ends the job with `device_fault` and the node exits so
//! its sidecar restarts it.

use crate::bindings::gpu::{self, Device, ErrorCode, GpuError, KernelArg};
use crate::cpu_speed;
use crate::cuda::{DeviceError, DeviceTensor, LaunchArg, StreamLease};
use crate::resident::{OpenError, ResidentKey};
use crate::state::{GuestState, Interrupted, JobWeights};
use crate::weights::{Weights, elements};
use cudarc::driver::CudaSlice;
use spillway_kernels::{DType, Kernel, KernelError, Meter, Param};
use spillway_proto::Backend;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use wasmtime::component::Resource;

pub(crate) mod pack;

/// A `gpu.buffer`: elements of one [`DType`] on the job's backend.
#[allow(unreachable_pub)] // named by the generated bindings
#[derive(Debug)]
pub struct Buffer {
    dtype: DType,
    data: Data,
}

/// Where a buffer's elements live; 16-bit types are kept as their bits.
#[derive(Debug)]
enum Data {
    Host(Vec<f32>),
    HostBits(Vec<u16>),
    Device(CudaSlice<f32>),
    DeviceBits(CudaSlice<u16>),
    /// A tensor of the job's weights, read in place (CPU backend).
    Resident(Resident),
    /// A tensor of the job's weights resident on its GPU (shared).
    ResidentDevice {
        tensor: Arc<DeviceTensor>,
        shape: Vec<u32>,
    },
}

/// A tensor of weights, as a read-only buffer: its little-endian elements
/// where the weights file is mapped.
#[derive(Debug)]
struct Resident {
    weights: Arc<Weights>,
    /// The tensor's bytes, as a range of the weights file.
    bytes: std::ops::Range<usize>,
    shape: Vec<u32>,
}

impl Resident {
    /// Elements `r` as `T` (`f32` for an `f32` tensor, `u16` for the
    /// 16-bit types' patterns).
    fn elements<T: bytemuck::Pod>(&self, r: std::ops::Range<usize>) -> Vec<T> {
        let size = std::mem::size_of::<T>();
        let tensor = &self.weights.bytes()[self.bytes.clone()];
        elements(&tensor[r.start * size..r.end * size]).into_owned()
    }
}

impl Buffer {
    fn len(&self) -> usize {
        match &self.data {
            Data::Host(v) => v.len(),
            Data::HostBits(v) => v.len(),
            Data::Device(s) => s.len(),
            Data::DeviceBits(s) => s.len(),
            Data::Resident(r) => r.shape.iter().map(|d| *d as usize).product(),
            Data::ResidentDevice { tensor, .. } => tensor.len(),
        }
    }

    /// Bytes charged to the job and its tenant (none for a resident
    /// tensor: it is shared, and loaded whether or not this job runs).
    fn bytes(&self) -> u64 {
        match &self.data {
            Data::Resident(_) | Data::ResidentDevice { .. } => 0,
            _ => self.len() as u64 * self.dtype.size(),
        }
    }

    fn shape(&self) -> Vec<u32> {
        match &self.data {
            Data::Resident(r) => r.shape.clone(),
            Data::ResidentDevice { shape, .. } => shape.clone(),
            _ => vec![self.len() as u32],
        }
    }

    fn writable(&self) -> bool {
        !matches!(self.data, Data::Resident(_) | Data::ResidentDevice { .. })
    }
}

/// The answer to a write into a read-only buffer.
fn read_only(what: &str) -> GpuError {
    error(
        ErrorCode::InvalidArgument,
        format!("{what}: the buffer is a tensor of weights, which is read-only"),
    )
}

fn dtype_of(t: gpu::Dtype) -> DType {
    match t {
        gpu::Dtype::F32 => DType::F32,
        gpu::Dtype::Bf16 => DType::Bf16,
        gpu::Dtype::F16 => DType::F16,
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> GpuError {
    GpuError {
        code,
        message: message.into(),
    }
}

impl From<KernelError> for GpuError {
    fn from(e: KernelError) -> Self {
        let code = match e {
            KernelError::UnknownKernel(_) => ErrorCode::UnknownKernel,
            _ => ErrorCode::InvalidArgument,
        };
        error(code, e.to_string())
    }
}

fn lost() -> GpuError {
    error(
        ErrorCode::InvalidArgument,
        "the handle is not a live buffer",
    )
}

fn not_16_bit(what: &str) -> GpuError {
    error(
        ErrorCode::InvalidArgument,
        format!("{what} needs a bf16 or f16 buffer; this one is f32 (use write/read)"),
    )
}

fn range(offset: u32, len: usize, buffer_len: usize) -> Result<std::ops::Range<usize>, GpuError> {
    let start = offset as usize;
    match start.checked_add(len) {
        Some(end) if end <= buffer_len => Ok(start..end),
        _ => Err(error(
            ErrorCode::InvalidArgument,
            format!("range {start}..{start}+{len} is outside a buffer of {buffer_len} elements"),
        )),
    }
}

impl GuestState {
    fn buffer(&self, handle: &Resource<Buffer>) -> Result<&Buffer, GpuError> {
        self.table.get(handle).map_err(|_| lost())
    }

    fn buffer_mut(&mut self, handle: &Resource<Buffer>) -> Result<&mut Buffer, GpuError> {
        self.table.get_mut(handle).map_err(|_| lost())
    }

    /// Settles the job's backend at its first `gpu` call: a job that
    /// prefers a GPU leases a stream now if one is free, else stays on the
    /// CPU for good.
    fn settle_backend(&mut self) {
        if let Some(pool) = self.gpu_pool.take() {
            self.cuda = pool.lease_for(&self.tenant_gpu);
            if let (Some(_), Some(watch)) = (&self.cuda, &self.gpu_watch) {
                watch.on_gpu();
            }
        }
    }

    /// Maps a device error to the guest's error, remembering a poisoned
    /// context for the executor.
    fn device_error(&mut self, e: DeviceError) -> GpuError {
        if e.poisoned {
            tracing::error!(job = %self.job, "CUDA context poisoned: {e}");
            self.device_fault.get_or_insert_with(|| e.message.clone());
        }
        let code = if e.out_of_memory {
            ErrorCode::OutOfMemory
        } else {
            ErrorCode::Device
        };
        error(code, e.message)
    }

    /// Allocates `len` zeroed elements of `dtype`, charged to the job's
    /// allowance and its tenant's GPU memory on this host.
    fn create_buffer(&mut self, dtype: DType, len: u32) -> Result<Resource<Buffer>, GpuError> {
        self.settle_backend();
        let bytes = u64::from(len) * dtype.size();
        if !self.limits.buffer_fits(bytes) {
            return Err(error(
                ErrorCode::OutOfMemory,
                format!(
                    "a buffer of {bytes} bytes exceeds the job's memory limit of {} bytes ({} bytes of linear memory and {} of buffers in use)",
                    self.limits.memory_bytes, self.limits.linear_bytes, self.limits.gpu_bytes
                ),
            ));
        }
        if let Err(over) = self.tenant_gpu.charge(bytes) {
            return Err(error(
                ErrorCode::OutOfMemory,
                format!(
                    "a buffer of {bytes} bytes exceeds tenant {}'s GPU memory on this host ({} of {} bytes held by its jobs)",
                    self.tenant_gpu.tenant(),
                    over.held,
                    over.cap
                ),
            ));
        }
        let len = len as usize;
        let data = match (&self.cuda, dtype.is_16_bit()) {
            (Some(lease), false) => lease.alloc::<f32>(len).map(Data::Device),
            (Some(lease), true) => lease.alloc::<u16>(len).map(Data::DeviceBits),
            (None, false) => Ok(Data::Host(vec![0.0; len])),
            (None, true) => Ok(Data::HostBits(vec![0; len])),
        };
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                self.tenant_gpu.release(bytes);
                if e.over_cap {
                    self.tenant_gpu.refused_by_the_driver(bytes);
                }
                return Err(self.device_error(e));
            }
        };
        let handle = match self.table.push(Buffer { dtype, data }) {
            Ok(handle) => handle,
            Err(e) => {
                self.tenant_gpu.release(bytes);
                return Err(error(ErrorCode::OutOfMemory, e.to_string()));
            }
        };
        self.limits.gpu_bytes += bytes;
        Ok(handle)
    }

    /// Copies 16-bit patterns into a 16-bit buffer at element `offset`.
    fn write_bits_at(
        &mut self,
        this: &Resource<Buffer>,
        offset: u32,
        bits: &[u16],
    ) -> Result<(), GpuError> {
        let outcome = {
            let GuestState { table, cuda, .. } = self;
            let buffer = table.get_mut(this).map_err(|_| lost())?;
            let r = range(offset, bits.len(), buffer.len())?;
            match (&mut buffer.data, cuda) {
                (Data::HostBits(v), _) => {
                    v[r].copy_from_slice(bits);
                    Ok(())
                }
                (Data::DeviceBits(s), Some(lease)) => lease.write(s, r.start, bits),
                (Data::Resident(_) | Data::ResidentDevice { .. }, _) => {
                    return Err(read_only("write-bits"));
                }
                (Data::Host(_) | Data::Device(_), _) => return Err(not_16_bit("write-bits")),
                (Data::DeviceBits(_), None) => {
                    unreachable!("device buffers exist only with a lease")
                }
            }
        };
        outcome.map_err(|e| self.device_error(e))
    }

    /// Copies `len` 16-bit patterns out of a 16-bit buffer.
    fn read_bits_at(
        &mut self,
        this: &Resource<Buffer>,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u16>, GpuError> {
        let buffer = self.buffer(this)?;
        let r = range(offset, len as usize, buffer.len())?;
        let outcome = match (&buffer.data, &self.cuda) {
            (Data::HostBits(v), _) => Ok(v[r].to_vec()),
            (Data::DeviceBits(s), Some(lease)) => lease.read(s, r),
            (Data::Resident(t), _) if buffer.dtype.is_16_bit() => Ok(t.elements(r)),
            (Data::ResidentDevice { tensor, .. }, Some(lease)) => match &**tensor {
                DeviceTensor::Bits(s) => lease.read(s, r),
                DeviceTensor::F32(_) => return Err(not_16_bit("read-bits")),
            },
            (Data::Host(_) | Data::Device(_) | Data::Resident(_), _) => {
                return Err(not_16_bit("read-bits"));
            }
            (Data::ResidentDevice { .. }, None) => {
                unreachable!("device buffers exist only with a lease")
            }
            (Data::DeviceBits(_), None) => unreachable!("device buffers exist only with a lease"),
        };
        outcome.map_err(|e| self.device_error(e))
    }
}

impl gpu::HostBuffer for GuestState {
    fn create(&mut self, len: u32) -> Result<Resource<Buffer>, GpuError> {
        self.create_buffer(DType::F32, len)
    }

    fn create_typed(&mut self, dtype: gpu::Dtype, len: u32) -> Result<Resource<Buffer>, GpuError> {
        self.create_buffer(dtype_of(dtype), len)
    }

    fn write(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        data: Vec<f32>,
    ) -> Result<(), GpuError> {
        let buffer = self.buffer(&this)?;
        if !buffer.writable() {
            return Err(read_only("write"));
        }
        let dtype = buffer.dtype;
        if dtype.is_16_bit() {
            return self.write_bits_at(&this, offset, &dtype.narrow(&data));
        }
        let outcome = {
            let GuestState { table, cuda, .. } = self;
            let buffer = table.get_mut(&this).map_err(|_| lost())?;
            let r = range(offset, data.len(), buffer.len())?;
            match (&mut buffer.data, cuda) {
                (Data::Host(v), _) => {
                    v[r].copy_from_slice(&data);
                    Ok(())
                }
                (Data::Device(s), Some(lease)) => lease.write(s, r.start, &data),
                _ => unreachable!("an f32 buffer on its job's backend"),
            }
        };
        outcome.map_err(|e| self.device_error(e))
    }

    fn read(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        len: u32,
    ) -> Result<Vec<f32>, GpuError> {
        let dtype = self.buffer(&this)?.dtype;
        if dtype.is_16_bit() {
            return Ok(dtype.widen(&self.read_bits_at(&this, offset, len)?));
        }
        let buffer = self.buffer(&this)?;
        let r = range(offset, len as usize, buffer.len())?;
        let outcome = match (&buffer.data, &self.cuda) {
            (Data::Host(v), _) => Ok(v[r].to_vec()),
            (Data::Device(s), Some(lease)) => lease.read(s, r),
            (Data::Resident(t), _) => Ok(t.elements(r)),
            (Data::ResidentDevice { tensor, .. }, Some(lease)) => match &**tensor {
                DeviceTensor::F32(s) => lease.read(s, r),
                DeviceTensor::Bits(_) => unreachable!("an f32 buffer holds f32 elements"),
            },
            _ => unreachable!("an f32 buffer on its job's backend"),
        };
        outcome.map_err(|e| self.device_error(e))
    }

    fn write_bits(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        data: Vec<u16>,
    ) -> Result<(), GpuError> {
        self.write_bits_at(&this, offset, &data)
    }

    fn read_bits(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u16>, GpuError> {
        self.read_bits_at(&this, offset, len)
    }

    fn len(&mut self, this: Resource<Buffer>) -> u32 {
        self.buffer(&this).map(|b| b.len() as u32).unwrap_or(0)
    }

    fn dtype(&mut self, this: Resource<Buffer>) -> gpu::Dtype {
        match self.buffer(&this).map(|b| b.dtype) {
            Ok(DType::Bf16) => gpu::Dtype::Bf16,
            Ok(DType::F16) => gpu::Dtype::F16,
            _ => gpu::Dtype::F32,
        }
    }

    fn shape(&mut self, this: Resource<Buffer>) -> Vec<u32> {
        self.buffer(&this).map(Buffer::shape).unwrap_or_default()
    }

    fn writable(&mut self, this: Resource<Buffer>) -> bool {
        self.buffer(&this).is_ok_and(Buffer::writable)
    }

    fn drop(&mut self, this: Resource<Buffer>) -> wasmtime::Result<()> {
        let buffer = self.table.delete(this)?;
        let bytes = buffer.bytes();
        self.limits.gpu_bytes -= bytes;
        self.tenant_gpu.release(bytes);
        Ok(())
    }
}

/// Whether `arg` is of the kind `param` declares.
fn kind_matches(arg: &KernelArg, param: Param) -> bool {
    matches!(
        (arg, param),
        (KernelArg::Buf(_), Param::Buffer)
            | (KernelArg::F32(_), Param::F32)
            | (KernelArg::U32(_), Param::U32)
    )
}

/// A launch whose arguments match the kernel's signature and whose buffers
/// hold what the shape arguments require.
struct Launch<'a> {
    kernel: Kernel,
    args: &'a [KernelArg],
}

impl<'a> Launch<'a> {
    fn validate(
        state: &GuestState,
        kernel: Kernel,
        args: &'a [KernelArg],
    ) -> Result<Self, GpuError> {
        let params = kernel.params();
        let name = kernel.name();
        if args.len() != params.len() {
            return Err(KernelError::Argument {
                kernel: name,
                index: args.len().min(params.len()),
                expected: format!("{} arguments, got {}", params.len(), args.len()),
            }
            .into());
        }
        for (index, (arg, param)) in args.iter().zip(params).enumerate() {
            if !kind_matches(arg, *param) {
                let expected = format!("{param:?}");
                return Err(KernelError::Argument {
                    kernel: name,
                    index,
                    expected,
                }
                .into());
            }
        }
        let types = args
            .iter()
            .map(|a| match a {
                KernelArg::Buf(h) => state.buffer(h).map(|b| Some(b.dtype)),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        kernel.check_types(&types)?;
        for &out in kernel.writes() {
            if let KernelArg::Buf(h) = &args[out]
                && !state.buffer(h)?.writable()
            {
                return Err(read_only(&format!("{name}: argument {out} is written")));
            }
        }
        let launch = Self { kernel, args };
        for need in kernel.requirements(&launch.shape())? {
            let got = state.buffer(launch.buf(need.arg))?.len();
            if got < need.elements {
                let e = KernelError::Length {
                    arg: need.name,
                    expected: need.elements,
                    got,
                };
                return Err(e.into());
            }
        }
        for &(out, input) in kernel.must_not_alias() {
            if launch.buf(out).rep() == launch.buf(input).rep() {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{name}: argument {out} must not be the same buffer as argument {input}"
                    ),
                ));
            }
        }
        Ok(launch)
    }

    /// The `u32` arguments, in order.
    fn shape(&self) -> Vec<u32> {
        self.args
            .iter()
            .filter_map(|a| match a {
                KernelArg::U32(v) => Some(*v),
                _ => None,
            })
            .collect()
    }

    fn buf(&self, i: usize) -> &Resource<Buffer> {
        match &self.args[i] {
            KernelArg::Buf(b) => b,
            _ => unreachable!("checked by Launch::validate"),
        }
    }

    fn f32(&self, i: usize) -> f32 {
        match self.args[i] {
            KernelArg::F32(v) => v,
            _ => unreachable!("checked by Launch::validate"),
        }
    }

    fn usize(&self, i: usize) -> usize {
        self.u32(i) as usize
    }

    fn u32(&self, i: usize) -> u32 {
        match self.args[i] {
            KernelArg::U32(v) => v,
            _ => unreachable!("checked by Launch::validate"),
        }
    }
}

impl GuestState {
    /// The first `n` elements of a CPU buffer as `f32` (16-bit ones widen
    /// exactly).
    fn host(&self, handle: &Resource<Buffer>, n: usize) -> Result<Vec<f32>, GpuError> {
        let buffer = self.buffer(handle)?;
        match &buffer.data {
            Data::Host(v) => Ok(v[..n].to_vec()),
            Data::HostBits(v) => Ok(buffer.dtype.widen(&v[..n])),
            Data::Resident(t) if buffer.dtype.is_16_bit() => {
                Ok(buffer.dtype.widen(&t.elements(0..n)))
            }
            Data::Resident(t) => Ok(t.elements(0..n)),
            _ => unreachable!("a job's buffers all live on its backend"),
        }
    }

    /// The first `n` elements of an `f32` CPU buffer, to write in place.
    fn host_mut(&mut self, handle: &Resource<Buffer>, n: usize) -> Result<&mut [f32], GpuError> {
        match &mut self.buffer_mut(handle)?.data {
            Data::Host(v) => Ok(&mut v[..n]),
            _ => unreachable!("validated: an f32 buffer on the CPU"),
        }
    }

    /// Stores `values` at the start of a CPU buffer, rounded to its type.
    fn host_store(&mut self, handle: &Resource<Buffer>, values: &[f32]) -> Result<(), GpuError> {
        let buffer = self.buffer_mut(handle)?;
        let n = values.len();
        match &mut buffer.data {
            Data::Host(v) => v[..n].copy_from_slice(values),
            Data::HostBits(v) => v[..n].copy_from_slice(&buffer.dtype.narrow(values)),
            _ => unreachable!("a job's buffers all live on its backend"),
        }
        Ok(())
    }

    /// Runs a validated launch on the CPU: inputs are copied out first, so
    /// an output may alias an input. The kernel looks at the job's cancel
    /// flag and deadline once per metered piece of work and ends the job
    /// there; a product that surely cannot finish in the time left is
    /// refused before it starts.
    fn launch_cpu(&mut self, l: &Launch<'_>) -> Result<(), Stop> {
        let (cancel, deadline) = (self.control.cancel.clone(), self.deadline);
        let mut go_on = || !cancel.load(Ordering::Relaxed) && Instant::now() < deadline;
        let meter = &mut Meter::new(&mut go_on);
        match l.kernel {
            Kernel::VectorAdd => {
                let n = l.usize(3);
                let (a, b) = (self.host(l.buf(0), n)?, self.host(l.buf(1), n)?);
                spillway_kernels::vector_add(&a, &b, self.host_mut(l.buf(2), n)?, meter)
            }
            Kernel::Saxpy => {
                let n = l.usize(3);
                let x = self.host(l.buf(1), n)?;
                spillway_kernels::saxpy(l.f32(0), &x, self.host_mut(l.buf(2), n)?, meter)
            }
            Kernel::Gemm => {
                let (m, n, k) = (l.usize(3), l.usize(4), l.usize(5));
                let shape = (m as u64, n as u64, k as u64);
                let remaining_ms = self.remaining_ms();
                if let Err(c) = cpu_speed::may_start_gemm(shape, self.cpu_speed, remaining_ms) {
                    return Err(Stop::Guest(error(
                        ErrorCode::InvalidArgument,
                        format!(
                            "gemm {m}×{n}×{k} would take about {} ms on the CPU backend and the job has {} ms left: ask for a GPU, a smaller product or a longer deadline",
                            c.estimate_ms, c.remaining_ms
                        ),
                    )));
                }
                // 16-bit operands widen exactly, the product accumulates in
                // f64 and C is rounded to its type once, at the end.
                let (a, b) = (self.host(l.buf(0), m * k)?, self.host(l.buf(1), k * n)?);
                let mut c = self.host(l.buf(2), m * n)?;
                let (alpha, beta) = (l.f32(6), l.f32(7));
                spillway_kernels::gemm(m, n, k, alpha, &a, &b, beta, &mut c, meter)
                    .map_err(|e| self.kernel_stop(e))?;
                self.host_store(l.buf(2), &c)?;
                Ok(())
            }
            Kernel::Softmax => {
                let (rows, cols) = (l.usize(2), l.usize(3));
                let x = self.host(l.buf(0), rows * cols)?;
                let out = self.host_mut(l.buf(1), rows * cols)?;
                spillway_kernels::softmax(&x, rows, cols, out, meter)
            }
            Kernel::Rmsnorm => {
                let (rows, cols) = (l.usize(3), l.usize(4));
                let (x, w) = (
                    self.host(l.buf(0), rows * cols)?,
                    self.host(l.buf(1), cols)?,
                );
                let out = self.host_mut(l.buf(2), rows * cols)?;
                spillway_kernels::rmsnorm(&x, &w, rows, cols, l.f32(5), out, meter)
            }
            Kernel::ReduceSum => {
                let x = self.host(l.buf(0), l.usize(2))?;
                let sum = spillway_kernels::reduce_sum(&x, meter)
                    .map_err(|e| self.kernel_stop(e))?;
                self.host_mut(l.buf(1), 1)?[0] = sum;
                Ok(())
            }
            Kernel::Embedding => {
                let (rows, vocab, dim) = (l.usize(3), l.usize(4), l.usize(5));
                let table = self.host(l.buf(0), vocab * dim)?;
                let ids = self.host(l.buf(1), rows)?;
                let out = self.host_mut(l.buf(2), rows * dim)?;
                spillway_kernels::embedding(&table, &ids, vocab, dim, out, meter)
            }
            Kernel::Rope => {
                let (rows, heads, head_dim) = (l.usize(1), l.usize(2), l.usize(3));
                let x = self.host_mut(l.buf(0), rows * heads * head_dim)?;
                spillway_kernels::rope(x, rows, heads, head_dim, l.u32(4), l.f32(5), meter)
            }
            Kernel::Swiglu => {
                let n = l.usize(3);
                let (gate, up) = (self.host(l.buf(0), n)?, self.host(l.buf(1), n)?);
                spillway_kernels::swiglu(&gate, &up, self.host_mut(l.buf(2), n)?, meter)
            }
            Kernel::Attention => {
                let shape = spillway_kernels::AttentionShape {
                    rows: l.usize(4),
                    kv_len: l.usize(5),
                    heads: l.usize(6),
                    kv_heads: l.usize(7),
                    head_dim: l.usize(8),
                    pos0: l.usize(9),
                };
                let q_len = shape.rows * shape.heads * shape.head_dim;
                let kv_len = shape.kv_len * shape.kv_heads * shape.head_dim;
                let q = self.host(l.buf(0), q_len)?;
                let (k, v) = (self.host(l.buf(1), kv_len)?, self.host(l.buf(2), kv_len)?);
                let out = self.host_mut(l.buf(3), q_len)?;
                spillway_kernels::attention(&q, &k, &v, shape, l.f32(10), out, meter)
            }
            Kernel::Copy => {
                let (n, from, to) = (l.usize(2), l.usize(3), l.usize(4));
                let src = self.host(l.buf(0), from + n)?;
                let dst = self.host_mut(l.buf(1), to + n)?;
                spillway_kernels::copy(&src, from, dst, to, n, meter)
            }
        }
        .map_err(|e| self.kernel_stop(e))
    }

    /// A CPU kernel's error as the launch ends in: a stop ends the job.
    fn kernel_stop(&self, e: KernelError) -> Stop {
        match e {
            KernelError::Interrupted => {
                Stop::Interrupted(self.interruption().unwrap_or(Interrupted::Deadline))
            }
            e => Stop::Guest(e.into()),
        }
    }

    /// Runs a validated launch on the job's CUDA stream.
    fn launch_cuda(&mut self, l: &Launch<'_>) -> Result<(), DeviceError> {
        let lease = self
            .cuda
            .as_ref()
            .expect("launch_cuda is called with a lease");
        let ptr = |h: &Resource<Buffer>| self.device_ptr(lease, h);
        let dtype = |h: &Resource<Buffer>| self.table.get(h).map_or(DType::F32, |b| b.dtype);
        if l.kernel == Kernel::Gemm {
            let (a, b, c) = (ptr(l.buf(0)), ptr(l.buf(1)), ptr(l.buf(2)));
            let (m, n, k) = (l.usize(3), l.usize(4), l.usize(5));
            let (alpha, beta) = (l.f32(6), l.f32(7));
            let (ab, c_type) = (dtype(l.buf(0)), dtype(l.buf(2)));
            let GuestState {
                cuda, tenant_gpu, ..
            } = self;
            let lease = cuda.as_ref().expect("a lease");
            return lease.gemm((m, n, k), alpha, a, b, ab, beta, c, c_type, tenant_gpu);
        }
        if l.kernel == Kernel::ReduceSum {
            // The kernel accumulates into out[0].
            let out = match self.table.get_mut(l.buf(1)).map(|b| &mut b.data) {
                Ok(Data::Device(s)) => s,
                _ => unreachable!("validated: a live f32 device buffer"),
            };
            let lease = self.cuda.as_ref().expect("a lease");
            lease.write(out, 0, &[0.0])?;
        }
        let lease = self.cuda.as_ref().expect("a lease");
        lease.launch(l.kernel, &self.launch_args(lease, l.args))
    }

    /// The device pointer of a buffer checked to be live on the job's GPU.
    fn device_ptr(&self, lease: &StreamLease, handle: &Resource<Buffer>) -> u64 {
        match self.table.get(handle).map(|b| &b.data) {
            Ok(Data::Device(s)) => lease.ptr(s),
            Ok(Data::DeviceBits(s)) => lease.ptr(s),
            Ok(Data::ResidentDevice { tensor, .. }) => match &**tensor {
                DeviceTensor::F32(s) => lease.ptr(s),
                DeviceTensor::Bits(s) => lease.ptr(s),
            },
            _ => unreachable!("validated: a live device buffer"),
        }
    }

    /// `args` as a launch takes them, buffers as device pointers.
    fn launch_args(&self, lease: &StreamLease, args: &[KernelArg]) -> Vec<LaunchArg> {
        args.iter()
            .map(|a| match a {
                KernelArg::Buf(h) => LaunchArg::Ptr(self.device_ptr(lease, h)),
                KernelArg::F32(v) => LaunchArg::F32(*v),
                KernelArg::U32(v) => LaunchArg::U32(*v),
            })
            .collect()
    }

    /// The span of one `gpu` call: the kernel, the backend, the sizes of
    /// its buffers and its scalar arguments. Its duration is the call's
    /// time in the host: the whole kernel on the CPU backend, the launch
    /// (queued on the job's stream) on CUDA, whose device time the job's
    /// next read or its end waits for.
    fn call_span(&self, name: &'static str, kernel: &str, args: &[KernelArg]) -> tracing::Span {
        let span = tracing::info_span!(
            "gpu",
            otel.name = name,
            kernel,
            backend = if self.cuda.is_some() { "cuda" } else { "cpu" },
            // Numbers as i64: tracing-opentelemetry exports unsigned
            // fields as text.
            gpu = self.cuda.as_ref().map(|l| i64::from(l.device().index)),
            buffers = tracing::field::Empty,
            scalars = tracing::field::Empty,
            device_us = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let (mut buffers, mut scalars) = (Vec::new(), Vec::new());
            for a in args {
                match a {
                    KernelArg::Buf(h) => buffers.push(self.table.get(h).map_or(0, |b| b.len())),
                    KernelArg::F32(v) => scalars.push(v.to_string()),
                    KernelArg::U32(v) => scalars.push(v.to_string()),
                }
            }
            span.record("buffers", format!("{buffers:?}"));
            span.record("scalars", scalars.join(","));
        }
        span
    }

    /// A start mark for a traced call's device time (CUDA only).
    fn timed(&self, span: &tracing::Span) -> Option<crate::cuda::DeviceTimer> {
        if span.is_disabled() {
            return None;
        }
        self.cuda.as_ref()?.start_timing()
    }

    /// Records on `span` the device time since `timer`: waits for the
    /// call's work (traced calls only).
    fn record_device_time(&self, span: &tracing::Span, timer: Option<crate::cuda::DeviceTimer>) {
        let (Some(timer), Some(lease)) = (timer, self.cuda.as_ref()) else {
            return;
        };
        if let Some(t) = lease.device_time(timer) {
            span.record("device_us", t.as_micros() as i64);
        }
    }

    fn run_launch(&mut self, kernel: Kernel, args: &[KernelArg]) -> Result<(), Stop> {
        let launch = Launch::validate(self, kernel, args)?;
        if self.cuda.is_some() {
            Ok(self
                .launch_cuda(&launch)
                .map_err(|e| self.device_error(e))?)
        } else {
            self.launch_cpu(&launch)
        }
    }
}

/// How a kernel call ends other than in success: an error the guest sees,
/// or the end of the job (a trap the executor classifies).
#[derive(Debug)]
enum Stop {
    Guest(GpuError),
    Interrupted(Interrupted),
}

impl From<GpuError> for Stop {
    fn from(e: GpuError) -> Self {
        Stop::Guest(e)
    }
}

/// The result a trappable `gpu` import returns.
fn trap_or_result(outcome: Result<(), Stop>) -> wasmtime::Result<Result<(), GpuError>> {
    match outcome {
        Ok(()) => Ok(Ok(())),
        Err(Stop::Guest(e)) => Ok(Err(e)),
        Err(Stop::Interrupted(why)) => Err(wasmtime::Error::new(why)),
    }
}

impl gpu::Host for GuestState {
    fn launch(
        &mut self,
        kernel: String,
        args: Vec<KernelArg>,
    ) -> wasmtime::Result<Result<(), GpuError>> {
        self.settle_backend();
        let span = self.call_span("gpu.launch", &kernel, &args);
        let _in = span.enter();
        if self.cuda.as_ref().is_some_and(|l| l.has_test_kernels()) {
            if kernel == spillway_kernels::nvrtc::TEST_OOB_WRITE {
                return Ok(self.launch_oob_write(&args));
            }
            if kernel == spillway_kernels::nvrtc::TEST_SPIN {
                return Ok(self.launch_spin(&args));
            }
        }
        let timed = self.timed(&span);
        let outcome = if let Some((pack, name)) = kernel.split_once('/') {
            Ok(self.launch_from_pack(pack, name, &args))
        } else {
            trap_or_result(match Kernel::from_name(&kernel) {
                Ok(kernel) => self.run_launch(kernel, &args),
                Err(e) => Err(Stop::Guest(e.into())),
            })
        };
        self.record_device_time(&span, timed);
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        m: u32,
        n: u32,
        k: u32,
        alpha: f32,
        a: Resource<Buffer>,
        b: Resource<Buffer>,
        beta: f32,
        c: Resource<Buffer>,
    ) -> wasmtime::Result<Result<(), GpuError>> {
        self.settle_backend();
        let args = [
            KernelArg::Buf(a),
            KernelArg::Buf(b),
            KernelArg::Buf(c),
            KernelArg::U32(m),
            KernelArg::U32(n),
            KernelArg::U32(k),
            KernelArg::F32(alpha),
            KernelArg::F32(beta),
        ];
        let span = self.call_span("gpu.gemm", "gemm", &args);
        let _in = span.enter();
        let timed = self.timed(&span);
        let outcome = trap_or_result(self.run_launch(Kernel::Gemm, &args));
        self.record_device_time(&span, timed);
        outcome
    }

    fn weights(&mut self, weights: String, tensor: String) -> Result<Resource<Buffer>, GpuError> {
        self.settle_backend();
        self.open_tensor(&weights, &tensor)
    }

    fn weights_metadata(&mut self, weights: String) -> Result<Vec<(String, String)>, GpuError> {
        let job_weights = self.job_weights(&weights)?;
        Ok(job_weights
            .weights
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn device_info(&mut self) -> Device {
        self.settle_backend();
        match &self.cuda {
            Some(lease) => {
                let d = lease.device();
                Device {
                    backend: gpu::Backend::Cuda,
                    name: d.model.clone(),
                    memory_bytes: d.memory_bytes,
                    compute_capability: Some(d.compute_capability),
                }
            }
            None => Device {
                backend: gpu::Backend::Cpu,
                name: "cpu-reference".to_owned(),
                memory_bytes: self.limits.memory_bytes as u64,
                compute_capability: None,
            },
        }
    }
}

impl GuestState {
    /// The weights the job's function names `name`.
    fn job_weights(&self, name: &str) -> Result<&JobWeights, GpuError> {
        self.weights.iter().find(|w| w.name == name).ok_or_else(|| {
            let named: Vec<&str> = self.weights.iter().map(|w| w.name.as_str()).collect();
            error(
                ErrorCode::InvalidArgument,
                format!("the function names no weights {name:?} (it names {named:?})"),
            )
        })
    }

    /// The tensor `tensor` of the job's weights `name`, as a read-only
    /// buffer.
    fn open_tensor(&mut self, name: &str, tensor: &str) -> Result<Resource<Buffer>, GpuError> {
        let job_weights = self.job_weights(name)?;
        let weights = job_weights.weights.clone();
        let Some((info, bytes)) = weights.tensor(tensor) else {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("weights {name:?} have no tensor {tensor:?}"),
            ));
        };
        let shape: Vec<u32> = info.shape.iter().map(|d| *d as u32).collect();
        let data = match &self.cuda {
            None => Data::Resident(Resident {
                shape,
                bytes: info.bytes.clone(),
                weights: weights.clone(),
            }),
            Some(lease) => {
                let key = ResidentKey {
                    tenant: self.tenant_gpu.tenant().clone(),
                    digest: job_weights.digest,
                    tensor: tensor.to_owned(),
                };
                let opened =
                    lease.open_resident(&key, (info.dtype, bytes), self.tenant_gpu.sibling());
                match opened {
                    Ok(opened) => {
                        if opened.loaded {
                            tracing::info!(job = %self.job, weights = name, tensor, bytes = bytes.len(), "tensor loaded onto the GPU");
                            self.weights_loaded += bytes.len() as u64;
                        }
                        Data::ResidentDevice {
                            tensor: opened.tensor,
                            shape,
                        }
                    }
                    Err(OpenError::Load(e)) => {
                        if e.over_cap {
                            self.tenant_gpu.refused_by_the_driver(bytes.len() as u64);
                        }
                        return Err(self.device_error(e));
                    }
                    Err(e) => return Err(error(ErrorCode::OutOfMemory, e.to_string())),
                }
            }
        };
        let buffer = Buffer {
            dtype: info.dtype,
            data,
        };
        self.table
            .push(buffer)
            .map_err(|e| error(ErrorCode::OutOfMemory, e.to_string()))
    }

    /// `test_oob_write(buf, n)`: the fault test (only with test kernels).
    fn launch_oob_write(&mut self, args: &[KernelArg]) -> Result<(), GpuError> {
        let (Some(KernelArg::Buf(b)), Some(KernelArg::U32(n))) = (args.first(), args.get(1)) else {
            return Err(error(
                ErrorCode::InvalidArgument,
                "test_oob_write takes (buffer, u32)",
            ));
        };
        let lease = self.cuda.as_ref().expect("checked by the caller");
        let ptr = match self.table.get(b).map(|b| &b.data) {
            Ok(Data::Device(s)) => lease.ptr(s),
            _ => return Err(lost()),
        };
        let outcome = lease.launch_oob_write(ptr, *n);
        outcome.map_err(|e| self.device_error(e))
    }

    /// `test_spin(ms)`: the watchdog test (only with test kernels).
    fn launch_spin(&mut self, args: &[KernelArg]) -> Result<(), GpuError> {
        let [KernelArg::U32(ms)] = args else {
            return Err(error(
                ErrorCode::InvalidArgument,
                "test_spin takes (u32 milliseconds)",
            ));
        };
        let lease = self.cuda.as_ref().expect("checked by the caller");
        let outcome = lease.launch_spin(*ms);
        outcome.map_err(|e| self.device_error(e))
    }

    /// The backend this job's `gpu` calls run on.
    pub(crate) fn gpu_backend(&self) -> Backend {
        if self.cuda.is_some() {
            Backend::Cuda
        } else {
            Backend::Cpu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu::{Host as _, HostBuffer as _};

    fn state(gpu_limit: u64) -> GuestState {
        GuestState::for_test(gpu_limit, None)
    }

    fn buffer(s: &mut GuestState, data: &[f32]) -> Resource<Buffer> {
        let b = s.create(data.len() as u32).unwrap();
        s.write(borrow(&b), 0, data.to_vec()).unwrap();
        b
    }

    fn borrow(b: &Resource<Buffer>) -> Resource<Buffer> {
        Resource::new_borrow(b.rep())
    }

    fn read_all(s: &mut GuestState, b: &Resource<Buffer>) -> Vec<f32> {
        let len = s.len(borrow(b));
        s.read(borrow(b), 0, len).unwrap()
    }

    /// A job state whose function names weights `lm` holding an `f32`
    /// tensor `w` (2×2) and a `bf16` tensor `n` (3).
    fn with_weights(gpu_limit: u64) -> GuestState {
        let f32s: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = DType::Bf16
            .narrow(&[1.0, -2.0, 0.5])
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let file = crate::weights::tests::safetensors_file(&[
            ("w", "F32", &[2, 2], f32s),
            ("n", "BF16", &[3], bf16s),
        ]);
        let mut s = state(gpu_limit);
        s.weights = vec![crate::state::JobWeights {
            name: "lm".into(),
            digest: spillway_proto::Digest::of(b"lm"),
            weights: Arc::new(Weights::from_bytes(file).unwrap()),
        }];
        s
    }

    #[test]
    fn a_tensor_of_weights_is_a_read_only_buffer_kernels_read() {
        let mut s = with_weights(64);
        let w = s.weights("lm".into(), "w".into()).unwrap();
        assert_eq!(s.shape(borrow(&w)), [2, 2]);
        assert_eq!(s.len(borrow(&w)), 4);
        assert!(!s.writable(borrow(&w)));
        assert_eq!(read_all(&mut s, &w), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.read(borrow(&w), 1, 2).unwrap(), [2.0, 3.0]);
        let n = s.weights("lm".into(), "n".into()).unwrap();
        assert_eq!(s.dtype(borrow(&n)), gpu::Dtype::Bf16);
        assert_eq!(read_all(&mut s, &n), [1.0, -2.0, 0.5]);
        assert_eq!(
            s.read_bits(borrow(&n), 0, 3).unwrap(),
            DType::Bf16.narrow(&[1.0, -2.0, 0.5])
        );
        // Not charged to the job: its 64 bytes of buffers are all free.
        assert_eq!(s.limits.gpu_bytes, 0);
        let out = s.create(4).unwrap();
        // An input of a kernel, and of gemm.
        let args = vec![
            KernelArg::Buf(borrow(&w)),
            KernelArg::Buf(borrow(&w)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(4),
        ];
        s.launch("vector_add".into(), args).unwrap().unwrap();
        assert_eq!(read_all(&mut s, &out), [2.0, 4.0, 6.0, 8.0]);
        s.gemm(2, 2, 2, 1.0, borrow(&w), borrow(&w), 0.0, borrow(&out))
            .unwrap()
            .unwrap();
        assert_eq!(read_all(&mut s, &out), [7.0, 10.0, 15.0, 22.0]);
        // Never written: not by write, not as an output.
        let refused = |e: GpuError| {
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
            assert!(e.message.contains("read-only"), "{}", e.message);
        };
        refused(s.write(borrow(&w), 0, vec![9.0]).unwrap_err());
        refused(s.write_bits(borrow(&n), 0, vec![0]).unwrap_err());
        let args = vec![
            KernelArg::Buf(borrow(&out)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::Buf(borrow(&w)),
            KernelArg::U32(4),
        ];
        refused(s.launch("vector_add".into(), args).unwrap().unwrap_err());
        refused(
            s.gemm(2, 2, 2, 1.0, borrow(&out), borrow(&out), 0.0, borrow(&w))
                .unwrap()
                .unwrap_err(),
        );
        assert_eq!(read_all(&mut s, &w), [1.0, 2.0, 3.0, 4.0], "unchanged");
        // Only what the function names.
        for (weights, tensor, says) in [
            ("other", "w", "names no weights \"other\""),
            ("lm", "missing", "no tensor \"missing\""),
        ] {
            let e = s.weights(weights.into(), tensor.into()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(e.message.contains(says), "{}", e.message);
        }
        s.drop(w).unwrap();
        s.drop(n).unwrap();
        assert_eq!(s.limits.gpu_bytes, 16, "only `out` is charged");
    }

    #[test]
    fn launch_runs_each_kernel_like_the_reference() {
        let mut s = state(1 << 20);
        let x = [1.0, -2.0, 3.0, 0.5];
        let y = [4.0, 5.0, -6.0, 2.0];
        let (bx, by, out) = (
            buffer(&mut s, &x),
            buffer(&mut s, &y),
            buffer(&mut s, &[0.0; 4]),
        );

        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&by)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(4),
        ];
        s.launch("vector_add".into(), args).unwrap().unwrap();
        assert_eq!(read_all(&mut s, &out), [5.0, 3.0, -3.0, 2.5]);

        let args = vec![
            KernelArg::F32(2.0),
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(4),
        ];
        s.launch("saxpy".into(), args).unwrap().unwrap();
        assert_eq!(read_all(&mut s, &out), [7.0, -1.0, 3.0, 3.5]);

        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(2),
            KernelArg::U32(2),
        ];
        s.launch("softmax".into(), args).unwrap().unwrap();
        let mut want = [0.0; 4];
        spillway_kernels::softmax(
            &x,
            2,
            2,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_eq!(read_all(&mut s, &out), want);

        let w = buffer(&mut s, &[1.0, 2.0]);
        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&w)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(2),
            KernelArg::U32(2),
            KernelArg::F32(1e-5),
        ];
        s.launch("rmsnorm".into(), args).unwrap().unwrap();
        spillway_kernels::rmsnorm(
            &x,
            &[1.0, 2.0],
            2,
            2,
            1e-5,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_eq!(read_all(&mut s, &out), want);

        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(4),
        ];
        s.launch("reduce_sum".into(), args).unwrap().unwrap();
        assert_eq!(read_all(&mut s, &out)[0], 2.5);

        let c = buffer(&mut s, &[0.0; 4]);
        let gemm_args = |out: &Resource<Buffer>| {
            vec![
                KernelArg::Buf(borrow(&bx)),
                KernelArg::Buf(borrow(&by)),
                KernelArg::Buf(borrow(out)),
                KernelArg::U32(2),
                KernelArg::U32(2),
                KernelArg::U32(2),
                KernelArg::F32(1.0),
                KernelArg::F32(0.0),
            ]
        };
        s.launch("gemm".into(), gemm_args(&c)).unwrap().unwrap();
        let mut want = [0.0; 4];
        spillway_kernels::gemm(
            2,
            2,
            2,
            1.0,
            &x,
            &y,
            0.0,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_eq!(read_all(&mut s, &c), want);
        // gemm's output may not alias an input (cuBLAS cannot do it).
        let e = s
            .launch("gemm".into(), gemm_args(&bx))
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::InvalidArgument),
            "{}",
            e.message
        );
    }

    fn typed(s: &mut GuestState, dtype: gpu::Dtype, data: &[f32]) -> Resource<Buffer> {
        let b = s.create_typed(dtype, data.len() as u32).unwrap();
        s.write(borrow(&b), 0, data.to_vec()).unwrap();
        b
    }

    #[test]
    fn typed_buffers_round_store_and_count_their_bytes() {
        let mut s = state(1 << 20);
        let b = typed(
            &mut s,
            gpu::Dtype::Bf16,
            &[1.0, 1.0 + 2f32.powi(-8), -3.0, 0.1],
        );
        assert!(matches!(s.dtype(borrow(&b)), gpu::Dtype::Bf16));
        assert_eq!(s.limits.gpu_bytes, 8, "two bytes an element");
        let back = read_all(&mut s, &b);
        assert_eq!(back[..3], [1.0, 1.0, -3.0]); // the tie rounds to even
        assert_eq!(back[3], DType::Bf16.widen(&DType::Bf16.narrow(&[0.1]))[0]);
        assert_eq!(s.read_bits(borrow(&b), 0, 2).unwrap(), [0x3f80, 0x3f80]);
        s.write_bits(borrow(&b), 1, vec![0x4040]).unwrap(); // 3.0
        assert_eq!(s.read(borrow(&b), 1, 1).unwrap(), [3.0]);
        let e = s.write_bits(borrow(&b), 3, vec![0, 0]).unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::InvalidArgument),
            "{}",
            e.message
        );

        let h = typed(&mut s, gpu::Dtype::F16, &[65504.0, 1e6]);
        assert_eq!(read_all(&mut s, &h), [65504.0, f32::INFINITY]);
        let f = buffer(&mut s, &[1.0]);
        let e = s.read_bits(borrow(&f), 0, 1).unwrap_err();
        assert!(
            e.message.contains("needs a bf16 or f16 buffer"),
            "{}",
            e.message
        );
        for x in [b, h, f] {
            s.drop(x).unwrap();
        }
        assert_eq!(s.limits.gpu_bytes, 0);
    }

    #[test]
    fn gemm_multiplies_16_bit_operands_and_other_kernels_refuse_them() {
        let mut s = state(1 << 20);
        let (m, n, k) = (3usize, 2usize, 4usize);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.37 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 0.5 - i as f32 * 0.21).collect();
        for t in [gpu::Dtype::Bf16, gpu::Dtype::F16] {
            let d = dtype_of(t);
            let (ba, bb) = (typed(&mut s, t, &a), typed(&mut s, t, &b));
            // The reference multiplies the rounded operands.
            let (ra, rb) = (d.widen(&d.narrow(&a)), d.widen(&d.narrow(&b)));
            let mut want = vec![0.5; m * n];
            spillway_kernels::gemm(
                m,
                n,
                k,
                2.0,
                &ra,
                &rb,
                -1.0,
                &mut want,
                &mut spillway_kernels::Meter::unbounded(),
            )
            .unwrap();
            let c32 = buffer(&mut s, &[0.5; 6]);
            let c16 = typed(&mut s, t, &[0.5; 6]);
            for c in [&c32, &c16] {
                let (a, b, c) = (borrow(&ba), borrow(&bb), borrow(c));
                s.gemm(m as u32, n as u32, k as u32, 2.0, a, b, -1.0, c)
                    .unwrap()
                    .unwrap();
            }
            assert_eq!(read_all(&mut s, &c32), want);
            assert_eq!(read_all(&mut s, &c16), d.widen(&d.narrow(&want)));

            // Mixed operand types, and 16-bit buffers in an f32 kernel.
            let c = borrow(&c32);
            let e = s
                .gemm(2, 2, 2, 1.0, borrow(&ba), borrow(&c32), 0.0, c)
                .unwrap()
                .unwrap_err();
            assert!(
                e.message.contains("B must have A's element type"),
                "{}",
                e.message
            );
            let args = vec![
                KernelArg::Buf(borrow(&c32)),
                KernelArg::Buf(borrow(&ba)),
                KernelArg::Buf(borrow(&c32)),
                KernelArg::U32(2),
            ];
            let e = s.launch("vector_add".into(), args).unwrap().unwrap_err();
            assert!(matches!(e.code, ErrorCode::InvalidArgument));
            assert!(e.message.contains("takes f32 buffers"), "{}", e.message);
            for x in [ba, bb, c32, c16] {
                s.drop(x).unwrap();
            }
        }
    }

    /// A 128³ product: two metered pieces of work.
    fn cube(s: &mut GuestState) -> [Resource<Buffer>; 3] {
        let n = 128 * 128;
        [0; 3].map(|_| buffer(s, &vec![1.0; n]))
    }

    fn gemm_of(
        s: &mut GuestState,
        [a, b, c]: &[Resource<Buffer>; 3],
    ) -> wasmtime::Result<Result<(), GpuError>> {
        s.gemm(128, 128, 128, 1.0, borrow(a), borrow(b), 0.0, borrow(c))
    }

    #[test]
    fn a_cpu_kernel_ends_the_job_at_its_deadline_or_cancel() {
        let mut s = state(1 << 20);
        let abc = cube(&mut s);
        s.deadline = Instant::now();
        let trap = gemm_of(&mut s, &abc).unwrap_err();
        assert_eq!(trap.downcast_ref(), Some(&Interrupted::Deadline));

        let mut s = state(1 << 20);
        let abc = cube(&mut s);
        s.control.cancel.store(true, Ordering::Relaxed);
        let args = vec![
            KernelArg::Buf(borrow(&abc[0])),
            KernelArg::Buf(borrow(&abc[1])),
            KernelArg::Buf(borrow(&abc[2])),
            KernelArg::U32(128 * 128),
        ];
        // vector_add of 16 Ki elements is one piece: it finishes, then the
        // product stops at its first look.
        s.launch("vector_add".into(), args).unwrap().unwrap();
        let trap = gemm_of(&mut s, &abc).unwrap_err();
        assert_eq!(trap.downcast_ref(), Some(&Interrupted::Cancelled));
    }

    #[test]
    fn a_cpu_product_that_cannot_finish_is_refused_before_it_starts() {
        let mut s = state(1 << 20);
        s.cpu_speed = cpu_speed::CpuSpeed::fixed(1); // 2 Mi ms for 128³
        let abc = cube(&mut s);
        let e = gemm_of(&mut s, &abc).unwrap().unwrap_err();
        assert!(matches!(e.code, ErrorCode::InvalidArgument));
        assert!(
            e.message.contains("would take about 2097152 ms"),
            "{}",
            e.message
        );
        assert_eq!(read_all(&mut s, &abc[2])[0], 1.0, "C untouched");
        s.cpu_speed = cpu_speed::CpuSpeed::fixed(u64::MAX);
        gemm_of(&mut s, &abc).unwrap().unwrap();
        assert_eq!(read_all(&mut s, &abc[2])[0], 128.0);
    }

    #[test]
    fn bad_launches_and_allocations_are_typed_errors() {
        let mut s = state(64);
        let b = buffer(&mut s, &[0.0; 8]);
        let e = s.launch("nope".into(), vec![]).unwrap().unwrap_err();
        assert!(matches!(e.code, ErrorCode::UnknownKernel));
        let e = s
            .launch("reduce_sum".into(), vec![KernelArg::U32(1)])
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::InvalidArgument),
            "{}",
            e.message
        );
        let args = vec![
            KernelArg::Buf(borrow(&b)),
            KernelArg::Buf(borrow(&b)),
            KernelArg::U32(9),
        ];
        let e = s.launch("reduce_sum".into(), args).unwrap().unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::InvalidArgument),
            "{}",
            e.message
        );
        let e = s.read(borrow(&b), 6, 4).unwrap_err();
        assert!(matches!(e.code, ErrorCode::InvalidArgument));
        // 32 bytes in use of 64: another 16 elements (64 bytes) do not fit.
        let e = s.create(16).unwrap_err();
        assert!(matches!(e.code, ErrorCode::OutOfMemory), "{}", e.message);
        s.drop(b).unwrap();
        assert_eq!(s.limits.gpu_bytes, 0);
        s.create(16).unwrap();
    }
}
