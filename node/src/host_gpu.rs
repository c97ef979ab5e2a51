//! The host side of the `gpu` interface.
//!
//! A job's buffers live in its resource table, on the backend chosen for the
//! job: device memory on its leased CUDA stream, or `Vec<f32>` for the CPU
//! reference backend. Every call is validated the same way for both (buffer
//! bounds, kernel signatures, shape requirements, aliasing) before anything
//! runs, and buffer bytes count against the job's allowance, so a guest cannot
//! allocate around its memory limit through `gpu`.
//!
//! A device error that poisons the CUDA context is recorded in the job's
//! state; the executor ends the job with `device_fault` and the node exits so
//! its sidecar restarts it.

use crate::bindings::gpu::{self, Device, ErrorCode, GpuError, KernelArg};
use crate::cuda::{DeviceError, LaunchArg};
use crate::state::GuestState;
use cudarc::driver::CudaSlice;
use spillway_kernels::{Kernel, KernelError, Param};
use spillway_proto::Backend;
use wasmtime::component::Resource;

/// A `gpu.buffer`: `f32` elements on the job's backend.
#[allow(unreachable_pub)] // named by the generated bindings
#[derive(Debug)]
pub enum Buffer {
    Host(Vec<f32>),
    Device(CudaSlice<f32>),
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::Host(v) => v.len(),
            Buffer::Device(s) => s.len(),
        }
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
            self.cuda = pool.lease();
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
}

impl gpu::HostBuffer for GuestState {
    fn create(&mut self, len: u32) -> Result<Resource<Buffer>, GpuError> {
        self.settle_backend();
        let bytes = u64::from(len) * 4;
        if self.gpu_bytes + bytes > self.gpu_limit {
            return Err(error(
                ErrorCode::OutOfMemory,
                format!(
                    "a buffer of {bytes} bytes exceeds the job's allowance ({} of {} bytes in use)",
                    self.gpu_bytes, self.gpu_limit
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
        let buffer = match &self.cuda {
            Some(lease) => match lease.alloc(len as usize) {
                Ok(slice) => Buffer::Device(slice),
                Err(e) => {
                    self.tenant_gpu.release(bytes);
                    return Err(self.device_error(e));
                }
            },
            None => Buffer::Host(vec![0.0; len as usize]),
        };
        let handle = match self.table.push(buffer) {
            Ok(handle) => handle,
            Err(e) => {
                self.tenant_gpu.release(bytes);
                return Err(error(ErrorCode::OutOfMemory, e.to_string()));
            }
        };
        self.gpu_bytes += bytes;
        Ok(handle)
    }

    fn write(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        data: Vec<f32>,
    ) -> Result<(), GpuError> {
        let outcome = {
            let GuestState { table, cuda, .. } = self;
            let buffer = table.get_mut(&this).map_err(|_| lost())?;
            let r = range(offset, data.len(), buffer.len())?;
            match (buffer, cuda) {
                (Buffer::Host(v), _) => {
                    v[r].copy_from_slice(&data);
                    Ok(())
                }
                (Buffer::Device(s), Some(lease)) => lease.write(s, r.start, &data),
                (Buffer::Device(_), None) => unreachable!("device buffers exist only with a lease"),
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
        let buffer = self.buffer(&this)?;
        let r = range(offset, len as usize, buffer.len())?;
        let outcome = match (buffer, &self.cuda) {
            (Buffer::Host(v), _) => Ok(v[r].to_vec()),
            (Buffer::Device(s), Some(lease)) => lease.read(s, r),
            (Buffer::Device(_), None) => unreachable!("device buffers exist only with a lease"),
        };
        outcome.map_err(|e| self.device_error(e))
    }

    fn len(&mut self, this: Resource<Buffer>) -> u32 {
        self.buffer(&this).map(|b| b.len() as u32).unwrap_or(0)
    }

    fn drop(&mut self, this: Resource<Buffer>) -> wasmtime::Result<()> {
        let buffer = self.table.delete(this)?;
        let bytes = buffer.len() as u64 * 4;
        self.gpu_bytes -= bytes;
        self.tenant_gpu.release(bytes);
        Ok(())
    }
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
            let ok = matches!(
                (arg, param),
                (KernelArg::Buf(_), Param::Buffer)
                    | (KernelArg::F32(_), Param::F32)
                    | (KernelArg::U32(_), Param::U32)
            );
            if !ok {
                let expected = format!("{param:?}");
                return Err(KernelError::Argument {
                    kernel: name,
                    index,
                    expected,
                }
                .into());
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
        match self.args[i] {
            KernelArg::U32(v) => v as usize,
            _ => unreachable!("checked by Launch::validate"),
        }
    }
}

impl GuestState {
    fn host(&self, handle: &Resource<Buffer>, n: usize) -> Result<Vec<f32>, GpuError> {
        match self.buffer(handle)? {
            Buffer::Host(v) => Ok(v[..n].to_vec()),
            Buffer::Device(_) => unreachable!("a job's buffers all live on its backend"),
        }
    }

    fn host_mut(&mut self, handle: &Resource<Buffer>, n: usize) -> Result<&mut [f32], GpuError> {
        match self.buffer_mut(handle)? {
            Buffer::Host(v) => Ok(&mut v[..n]),
            Buffer::Device(_) => unreachable!("a job's buffers all live on its backend"),
        }
    }

    /// Runs a validated launch on the CPU: inputs are copied out first, so
    /// an output may alias an input.
    fn launch_cpu(&mut self, l: &Launch<'_>) -> Result<(), GpuError> {
        match l.kernel {
            Kernel::VectorAdd => {
                let n = l.usize(3);
                let (a, b) = (self.host(l.buf(0), n)?, self.host(l.buf(1), n)?);
                spillway_kernels::vector_add(&a, &b, self.host_mut(l.buf(2), n)?)?;
            }
            Kernel::Saxpy => {
                let n = l.usize(3);
                let x = self.host(l.buf(1), n)?;
                spillway_kernels::saxpy(l.f32(0), &x, self.host_mut(l.buf(2), n)?)?;
            }
            Kernel::Gemm => {
                let (m, n, k) = (l.usize(3), l.usize(4), l.usize(5));
                let (a, b) = (self.host(l.buf(0), m * k)?, self.host(l.buf(1), k * n)?);
                let c = self.host_mut(l.buf(2), m * n)?;
                spillway_kernels::gemm(m, n, k, l.f32(6), &a, &b, l.f32(7), c)?;
            }
            Kernel::Softmax => {
                let (rows, cols) = (l.usize(2), l.usize(3));
                let x = self.host(l.buf(0), rows * cols)?;
                spillway_kernels::softmax(&x, rows, cols, self.host_mut(l.buf(1), rows * cols)?)?;
            }
            Kernel::Rmsnorm => {
                let (rows, cols) = (l.usize(3), l.usize(4));
                let (x, w) = (
                    self.host(l.buf(0), rows * cols)?,
                    self.host(l.buf(1), cols)?,
                );
                let out = self.host_mut(l.buf(2), rows * cols)?;
                spillway_kernels::rmsnorm(&x, &w, rows, cols, l.f32(5), out)?;
            }
            Kernel::ReduceSum => {
                let x = self.host(l.buf(0), l.usize(2))?;
                self.host_mut(l.buf(1), 1)?[0] = spillway_kernels::reduce_sum(&x);
            }
        }
        Ok(())
    }

    /// Runs a validated launch on the job's CUDA stream.
    fn launch_cuda(&mut self, l: &Launch<'_>) -> Result<(), DeviceError> {
        let lease = self
            .cuda
            .as_ref()
            .expect("launch_cuda is called with a lease");
        let ptr = |h: &Resource<Buffer>| match self.table.get(h) {
            Ok(Buffer::Device(s)) => lease.ptr(s),
            _ => unreachable!("validated: a live device buffer"),
        };
        if l.kernel == Kernel::Gemm {
            let (a, b, c) = (ptr(l.buf(0)), ptr(l.buf(1)), ptr(l.buf(2)));
            let (m, n, k) = (l.usize(3), l.usize(4), l.usize(5));
            return lease.gemm(m, n, k, l.f32(6), a, b, l.f32(7), c);
        }
        if l.kernel == Kernel::ReduceSum {
            // The kernel accumulates into out[0].
            let out = match self.table.get_mut(l.buf(1)) {
                Ok(Buffer::Device(s)) => s,
                _ => unreachable!("validated: a live device buffer"),
            };
            let lease = self.cuda.as_ref().expect("a lease");
            lease.write(out, 0, &[0.0])?;
        }
        let lease = self.cuda.as_ref().expect("a lease");
        let args: Vec<LaunchArg> = l
            .args
            .iter()
            .map(|a| match a {
                KernelArg::Buf(h) => match self.table.get(h) {
                    Ok(Buffer::Device(s)) => LaunchArg::Ptr(lease.ptr(s)),
                    _ => unreachable!("validated: a live device buffer"),
                },
                KernelArg::F32(v) => LaunchArg::F32(*v),
                KernelArg::U32(v) => LaunchArg::U32(*v),
            })
            .collect();
        lease.launch(l.kernel, &args)
    }

    fn run_launch(&mut self, kernel: Kernel, args: &[KernelArg]) -> Result<(), GpuError> {
        let launch = Launch::validate(self, kernel, args)?;
        if self.cuda.is_some() {
            self.launch_cuda(&launch).map_err(|e| self.device_error(e))
        } else {
            self.launch_cpu(&launch)
        }
    }
}

impl gpu::Host for GuestState {
    fn launch(&mut self, kernel: String, args: Vec<KernelArg>) -> Result<(), GpuError> {
        self.settle_backend();
        if kernel == spillway_kernels::nvrtc::TEST_OOB_WRITE
            && self.cuda.as_ref().is_some_and(|l| l.has_test_kernels())
        {
            return self.launch_oob_write(&args);
        }
        let kernel = Kernel::from_name(&kernel)?;
        self.run_launch(kernel, &args)
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
    ) -> Result<(), GpuError> {
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
        self.run_launch(Kernel::Gemm, &args)
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
                memory_bytes: self.gpu_limit,
                compute_capability: None,
            },
        }
    }
}

impl GuestState {
    /// `test_oob_write(buf, n)`: the fault test (only with test kernels).
    fn launch_oob_write(&mut self, args: &[KernelArg]) -> Result<(), GpuError> {
        let (Some(KernelArg::Buf(b)), Some(KernelArg::U32(n))) = (args.first(), args.get(1)) else {
            return Err(error(
                ErrorCode::InvalidArgument,
                "test_oob_write takes (buffer, u32)",
            ));
        };
        let lease = self.cuda.as_ref().expect("checked by the caller");
        let ptr = match self.table.get(b) {
            Ok(Buffer::Device(s)) => lease.ptr(s),
            _ => return Err(lost()),
        };
        let outcome = lease.launch_oob_write(ptr, *n);
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
        s.launch("vector_add".into(), args).unwrap();
        assert_eq!(read_all(&mut s, &out), [5.0, 3.0, -3.0, 2.5]);

        let args = vec![
            KernelArg::F32(2.0),
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(4),
        ];
        s.launch("saxpy".into(), args).unwrap();
        assert_eq!(read_all(&mut s, &out), [7.0, -1.0, 3.0, 3.5]);

        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(2),
            KernelArg::U32(2),
        ];
        s.launch("softmax".into(), args).unwrap();
        let mut want = [0.0; 4];
        spillway_kernels::softmax(&x, 2, 2, &mut want).unwrap();
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
        s.launch("rmsnorm".into(), args).unwrap();
        spillway_kernels::rmsnorm(&x, &[1.0, 2.0], 2, 2, 1e-5, &mut want).unwrap();
        assert_eq!(read_all(&mut s, &out), want);

        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&out)),
            KernelArg::U32(4),
        ];
        s.launch("reduce_sum".into(), args).unwrap();
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
        s.launch("gemm".into(), gemm_args(&c)).unwrap();
        let mut want = [0.0; 4];
        spillway_kernels::gemm(2, 2, 2, 1.0, &x, &y, 0.0, &mut want).unwrap();
        assert_eq!(read_all(&mut s, &c), want);
        // gemm's output may not alias an input (cuBLAS cannot do it).
        let e = s.launch("gemm".into(), gemm_args(&bx)).unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::InvalidArgument),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_launches_and_allocations_are_typed_errors() {
        let mut s = state(64);
        let b = buffer(&mut s, &[0.0; 8]);
        let e = s.launch("nope".into(), vec![]).unwrap_err();
        assert!(matches!(e.code, ErrorCode::UnknownKernel));
        let e = s
            .launch("reduce_sum".into(), vec![KernelArg::U32(1)])
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
        let e = s.launch("reduce_sum".into(), args).unwrap_err();
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
        assert_eq!(s.gpu_bytes, 0);
        s.create(16).unwrap();
    }
}
