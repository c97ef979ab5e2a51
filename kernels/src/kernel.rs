//! The kernels a guest may launch by name, and the parameters each takes.

use crate::KernelError;

/// A launchable kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `(a, b, out: buffer, n: u32)`: `out[i] = a[i] + b[i]`.
    VectorAdd,
    /// `(alpha: f32, x, y: buffer, n: u32)`: `y[i] = alpha * x[i] + y[i]`.
    Saxpy,
    /// `(a, b, c: buffer, m, n, k: u32, alpha, beta: f32)`:
    /// `C = alpha * A(m×k) · B(k×n) + beta * C(m×n)`.
    Gemm,
    /// `(x, out: buffer, rows, cols: u32)`: softmax of each row.
    Softmax,
    /// `(x, weight, out: buffer, rows, cols: u32, eps: f32)`: RMS norm of
    /// each row, scaled by `weight`.
    Rmsnorm,
    /// `(x, out: buffer, n: u32)`: `out[0] = Σ x[i]`.
    ReduceSum,
}

/// The kind of one launch parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Buffer,
    F32,
    U32,
}

impl Kernel {
    /// Every kernel, in a stable order.
    pub const ALL: [Kernel; 6] = [
        Kernel::VectorAdd,
        Kernel::Saxpy,
        Kernel::Gemm,
        Kernel::Softmax,
        Kernel::Rmsnorm,
        Kernel::ReduceSum,
    ];

    /// The name guests launch it by.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::VectorAdd => "vector_add",
            Kernel::Saxpy => "saxpy",
            Kernel::Gemm => "gemm",
            Kernel::Softmax => "softmax",
            Kernel::Rmsnorm => "rmsnorm",
            Kernel::ReduceSum => "reduce_sum",
        }
    }

    /// Looks a kernel up by name.
    pub fn from_name(name: &str) -> Result<Kernel, KernelError> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| KernelError::UnknownKernel(name.to_owned()))
    }

    /// The parameters, in launch order.
    pub fn params(self) -> &'static [Param] {
        use Param::*;
        match self {
            Kernel::VectorAdd => &[Buffer, Buffer, Buffer, U32],
            Kernel::Saxpy => &[F32, Buffer, Buffer, U32],
            Kernel::Gemm => &[Buffer, Buffer, Buffer, U32, U32, U32, F32, F32],
            Kernel::Softmax => &[Buffer, Buffer, U32, U32],
            Kernel::Rmsnorm => &[Buffer, Buffer, Buffer, U32, U32, F32],
            Kernel::ReduceSum => &[Buffer, Buffer, U32],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::from_name(k.name()).unwrap(), k);
        }
        assert!(matches!(
            Kernel::from_name("nope"),
            Err(KernelError::UnknownKernel(_))
        ));
    }
}
