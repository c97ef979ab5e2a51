//! The host side of the `gpu` interface, on the CPU reference backend.
//!
//! Buffers are `Vec<f32>` in the job's resource table; every kernel runs the
//! reference implementation from `spillway-kernels`. Buffer bytes count
//! against the job's allowance, so a guest cannot allocate around its memory
//! limit through `gpu`. The CUDA backend will implement the same calls.

use crate::bindings::gpu::{self, Device, ErrorCode, GpuError, KernelArg};
use crate::state::GuestState;
use spillway_kernels::{Kernel, KernelError, Param};
use wasmtime::component::Resource;

/// A `gpu.buffer`: `f32` elements.
#[derive(Debug)]
#[allow(unreachable_pub)] // named by the generated bindings
pub struct Buffer {
    data: Vec<f32>,
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

fn lost(what: &str) -> GpuError {
    error(
        ErrorCode::InvalidArgument,
        format!("{what} is not a live buffer"),
    )
}

impl GuestState {
    fn buffer(&self, handle: &Resource<Buffer>) -> Result<&Buffer, GpuError> {
        self.table.get(handle).map_err(|_| lost("handle"))
    }

    fn buffer_data(&self, handle: &Resource<Buffer>) -> Result<Vec<f32>, GpuError> {
        Ok(self.buffer(handle)?.data.clone())
    }

    fn buffer_mut(&mut self, handle: &Resource<Buffer>) -> Result<&mut Buffer, GpuError> {
        self.table.get_mut(handle).map_err(|_| lost("handle"))
    }
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

impl gpu::HostBuffer for GuestState {
    fn create(&mut self, len: u32) -> Result<Resource<Buffer>, GpuError> {
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
        let handle = self
            .table
            .push(Buffer {
                data: vec![0.0; len as usize],
            })
            .map_err(|e| error(ErrorCode::OutOfMemory, e.to_string()))?;
        self.gpu_bytes += bytes;
        Ok(handle)
    }

    fn write(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        data: Vec<f32>,
    ) -> Result<(), GpuError> {
        let buffer = self.buffer_mut(&this)?;
        let r = range(offset, data.len(), buffer.data.len())?;
        buffer.data[r].copy_from_slice(&data);
        Ok(())
    }

    fn read(
        &mut self,
        this: Resource<Buffer>,
        offset: u32,
        len: u32,
    ) -> Result<Vec<f32>, GpuError> {
        let buffer = self.buffer(&this)?;
        let r = range(offset, len as usize, buffer.data.len())?;
        Ok(buffer.data[r].to_vec())
    }

    fn len(&mut self, this: Resource<Buffer>) -> u32 {
        self.buffer(&this).map(|b| b.data.len() as u32).unwrap_or(0)
    }

    fn drop(&mut self, this: Resource<Buffer>) -> wasmtime::Result<()> {
        let buffer = self.table.delete(this)?;
        self.gpu_bytes -= buffer.data.len() as u64 * 4;
        Ok(())
    }
}

/// Launch arguments checked against a kernel's parameter list.
struct Args<'a> {
    kernel: Kernel,
    args: &'a [KernelArg],
}

impl Args<'_> {
    fn check(&self) -> Result<(), KernelError> {
        let params = self.kernel.params();
        let kernel = self.kernel.name();
        if self.args.len() != params.len() {
            return Err(KernelError::Argument {
                kernel,
                index: self.args.len().min(params.len()),
                expected: format!("{} arguments, got {}", params.len(), self.args.len()),
            });
        }
        for (index, (arg, param)) in self.args.iter().zip(params).enumerate() {
            let ok = matches!(
                (arg, param),
                (KernelArg::Buf(_), Param::Buffer)
                    | (KernelArg::F32(_), Param::F32)
                    | (KernelArg::U32(_), Param::U32)
            );
            if !ok {
                return Err(KernelError::Argument {
                    kernel,
                    index,
                    expected: format!("{param:?}"),
                });
            }
        }
        Ok(())
    }

    fn buf(&self, i: usize) -> &Resource<Buffer> {
        match &self.args[i] {
            KernelArg::Buf(b) => b,
            _ => unreachable!("checked by Args::check"),
        }
    }

    fn f32(&self, i: usize) -> f32 {
        match self.args[i] {
            KernelArg::F32(v) => v,
            _ => unreachable!("checked by Args::check"),
        }
    }

    fn usize(&self, i: usize) -> usize {
        match self.args[i] {
            KernelArg::U32(v) => v as usize,
            _ => unreachable!("checked by Args::check"),
        }
    }
}

fn expect_n(what: &'static str, n: usize, data: &[f32]) -> Result<(), KernelError> {
    if data.len() < n {
        return Err(KernelError::Length {
            arg: what,
            expected: n,
            got: data.len(),
        });
    }
    Ok(())
}

impl GuestState {
    /// Runs `kernel` on the CPU: inputs are copied out of the table, the
    /// output buffer is written back only when the kernel succeeds.
    fn launch_cpu(&mut self, a: &Args<'_>) -> Result<(), GpuError> {
        a.check()?;
        match a.kernel {
            Kernel::VectorAdd => {
                let n = a.usize(3);
                let (x, y) = (self.buffer_data(a.buf(0))?, self.buffer_data(a.buf(1))?);
                expect_n("a", n, &x)?;
                expect_n("b", n, &y)?;
                let out = self.buffer_mut(a.buf(2))?;
                expect_n("out", n, &out.data)?;
                spillway_kernels::vector_add(&x[..n], &y[..n], &mut out.data[..n])?;
            }
            Kernel::Saxpy => {
                let (alpha, n) = (a.f32(0), a.usize(3));
                let x = self.buffer_data(a.buf(1))?;
                expect_n("x", n, &x)?;
                let y = self.buffer_mut(a.buf(2))?;
                expect_n("y", n, &y.data)?;
                spillway_kernels::saxpy(alpha, &x[..n], &mut y.data[..n])?;
            }
            Kernel::Gemm => {
                let (m, n, k) = (a.usize(3), a.usize(4), a.usize(5));
                self.gemm_cpu(m, n, k, a.f32(6), a.buf(0), a.buf(1), a.f32(7), a.buf(2))?;
            }
            Kernel::Softmax => {
                let (rows, cols) = (a.usize(2), a.usize(3));
                let x = self.buffer_data(a.buf(0))?;
                let out = self.buffer_mut(a.buf(1))?;
                let n = rows.saturating_mul(cols);
                expect_n("x", n, &x)?;
                expect_n("out", n, &out.data)?;
                spillway_kernels::softmax(&x[..n], rows, cols, &mut out.data[..n])?;
            }
            Kernel::Rmsnorm => {
                let (rows, cols, eps) = (a.usize(3), a.usize(4), a.f32(5));
                let (x, w) = (self.buffer_data(a.buf(0))?, self.buffer_data(a.buf(1))?);
                let out = self.buffer_mut(a.buf(2))?;
                let n = rows.saturating_mul(cols);
                expect_n("x", n, &x)?;
                expect_n("weight", cols, &w)?;
                expect_n("out", n, &out.data)?;
                spillway_kernels::rmsnorm(
                    &x[..n],
                    &w[..cols],
                    rows,
                    cols,
                    eps,
                    &mut out.data[..n],
                )?;
            }
            Kernel::ReduceSum => {
                let n = a.usize(2);
                let x = self.buffer_data(a.buf(0))?;
                expect_n("x", n, &x)?;
                let out = self.buffer_mut(a.buf(1))?;
                expect_n("out", 1, &out.data)?;
                out.data[0] = spillway_kernels::reduce_sum(&x[..n]);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_cpu(
        &mut self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Resource<Buffer>,
        b: &Resource<Buffer>,
        beta: f32,
        c: &Resource<Buffer>,
    ) -> Result<(), GpuError> {
        let (a, b) = (self.buffer_data(a)?, self.buffer_data(b)?);
        let (mk, kn, mn) = (
            m.saturating_mul(k),
            k.saturating_mul(n),
            m.saturating_mul(n),
        );
        expect_n("a", mk, &a)?;
        expect_n("b", kn, &b)?;
        let c = self.buffer_mut(c)?;
        expect_n("c", mn, &c.data)?;
        spillway_kernels::gemm(m, n, k, alpha, &a[..mk], &b[..kn], beta, &mut c.data[..mn])?;
        Ok(())
    }
}

impl gpu::Host for GuestState {
    fn launch(&mut self, kernel: String, args: Vec<KernelArg>) -> Result<(), GpuError> {
        let kernel = Kernel::from_name(&kernel)?;
        self.launch_cpu(&Args {
            kernel,
            args: &args,
        })
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
        self.gemm_cpu(m as usize, n as usize, k as usize, alpha, &a, &b, beta, &c)
    }

    fn device_info(&mut self) -> Device {
        Device {
            backend: gpu::Backend::Cpu,
            name: "cpu-reference".to_owned(),
            memory_bytes: self.gpu_limit,
            compute_capability: None,
        }
    }
}
