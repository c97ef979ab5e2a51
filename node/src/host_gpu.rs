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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::JobControl;
    use crate::limits::GuestLimits;
    use gpu::{Host as _, HostBuffer as _};
    use spillway_proto::{Backend, JobId};
    use std::time::{Duration, Instant};
    use wasmtime::component::ResourceTable;

    fn state(gpu_limit: u64) -> GuestState {
        let now = Instant::now();
        GuestState {
            job: JobId(1),
            input: Vec::new(),
            limits: GuestLimits {
                memory_bytes: 1 << 20,
                table_elements: 100,
            },
            control: JobControl::detached(),
            started: now,
            deadline: now + Duration::from_secs(10),
            emitted: 0,
            max_output: 1 << 20,
            chunks: 0,
            table: ResourceTable::new(),
            gpu_bytes: 0,
            gpu_limit,
            backend: Backend::Cpu,
        }
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

        // Output aliasing an input is fine: inputs are read before writing.
        let args = vec![
            KernelArg::Buf(borrow(&bx)),
            KernelArg::Buf(borrow(&by)),
            KernelArg::Buf(borrow(&bx)),
            KernelArg::U32(2),
            KernelArg::U32(2),
            KernelArg::U32(2),
            KernelArg::F32(1.0),
            KernelArg::F32(0.0),
        ];
        s.launch("gemm".into(), args).unwrap();
        let mut c = [0.0; 4];
        spillway_kernels::gemm(2, 2, 2, 1.0, &x, &y, 0.0, &mut c).unwrap();
        assert_eq!(read_all(&mut s, &bx), c);
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
