//! The node's in-process tests that share a process safely, one module per
//! file, in one test binary (each file links Wasmtime and the kernels:
//! one link instead of five saves CI minutes and disk). The GPU tests that
//! fault or spin a device (`gpu`, `gpu_fault`, `gpu_pack_fault`,
//! `gpu_watchdog`) stay binaries of their own, so that a poisoned CUDA
//! context or a busy GPU cannot touch another test.

mod common;

mod executor;
mod sandbox;
mod toolchains;
mod warm;
mod weights;
