//! Spillway's built-in kernel library.
//!
//! Every kernel has a CPU reference implementation here, with full argument
//! validation. They are the oracle the CUDA versions are checked against and,
//! on hosts without a GPU, the `gpu` interface's CPU backend. All matrices
//! are row-major `f32`.
//!
//! [`Kernel`] names the kernels a guest may launch and the typed parameters
//! each takes, so every backend binds launch arguments the same way.
//!
//! What it is not: the CUDA sources and NVRTC/cuBLAS glue (they come with the
//! GPU executor).

mod cpu;
mod error;
mod kernel;

pub use cpu::{gemm, reduce_sum, rmsnorm, saxpy, softmax, vector_add};
pub use error::KernelError;
pub use kernel::{Kernel, Param};
