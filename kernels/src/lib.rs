//! Spillway's built-in kernel library.
//!
//! Every kernel has a CPU reference implementation here, with full argument
//! validation. They are the oracle the CUDA versions are checked against and,
//! on hosts without a GPU, the `gpu` interface's CPU backend. All matrices
//! are row-major. Every kernel takes `f32` buffers, except `gemm`, which also
//! multiplies `bf16` or `f16` operands ([`DType`], [`Kernel::check_types`]).
//! Beside the linear algebra (`vector_add`, `saxpy`, `gemm`, `softmax`,
//! `rmsnorm`, `reduce_sum`) are the kernels a transformer's decoding needs
//! (`embedding`, `rope`, `swiglu`, `attention`, `copy`).
//!
//! [`Kernel`] names the kernels a guest may launch and the typed parameters
//! each takes, so every backend binds launch arguments the same way.
//!
//! The CUDA versions live in `cuda/builtin.cu`; [`nvrtc`] compiles them for
//! a device's architecture and caches the PTX on disk, and [`Kernel::geometry`]
//! gives each launch's grid. `gemm` runs on cuBLAS. A tenant's own kernels
//! come as a [`KernelPack`]: source or PTX plus a manifest that the same
//! checks read. What it is not: a GPU
//! runtime: contexts, streams, buffers and launches belong to the node.

mod cpu;
mod dtype;
mod error;
mod geometry;
mod includes;
mod kernel;
pub mod nvrtc;
mod pack;
mod transformer;

pub use cpu::{CHECK_EVERY, Meter, gemm, reduce_sum, rmsnorm, saxpy, softmax, vector_add};
pub use dtype::DType;
pub use error::KernelError;
pub use geometry::{BLOCK, Geometry, MAX_GRID};
pub use kernel::{Kernel, Needs, Param};
pub use pack::{Extent, KernelPack, PACK_FORMAT, PackError, PackKernel, PackParam, PackSource};
pub use transformer::{
    AttentionShape, MAX_ATTENTION_KEYS, MAX_HEAD_DIM, attention, copy, embedding, rope, swiglu,
};
