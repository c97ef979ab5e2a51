//! What the node's CPU-backend test files share: example guests, a small
//! executor, and a job spec for the CPU reference backend.
#![allow(dead_code)]

use spillway_node::{Executor, NodeConfig};
use spillway_proto::{Accelerator, Digest, JobSpec, TenantId};

/// `examples/guests/<name>.wat`.
pub(crate) fn guest(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../examples/guests/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An executor of 2 slots and 64 MiB per job in `dir`.
pub(crate) fn executor(dir: &tempfile::TempDir, warm_instances: u32) -> Executor {
    Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 2,
        max_memory_bytes: 64 << 20,
        warm_instances,
        kernel_compiler: kernel_compiler(),
        ..NodeConfig::default()
    })
    .unwrap()
}

/// A job of `digest` with 16 MiB of memory on the CPU reference backend
/// (so results compare exactly).
pub(crate) fn spec(digest: Digest, deadline_ms: u64) -> JobSpec {
    JobSpec {
        tenant: TenantId::admin(),
        function: "test".into(),
        digest,
        accelerator: Accelerator::None,
        deadline_ms,
        memory_limit_bytes: 16 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    }
}

/// The `spillway` binary's `compile-kernel`, found beside the test
/// executable or one folder up: how a node compiles a kernel pack's CUDA
/// source. Only GPU hosts compile; elsewhere `None` changes nothing.
pub(crate) fn kernel_compiler() -> Option<spillway_kernels::nvrtc::Compiler> {
    spillway_kernels::nvrtc::Compiler::spillway_near(&std::env::current_exe().ok()?)
}
