//! Host bindings generated from `wit/runtime.wit` (world `job-guest`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "job-guest",
    with: {
        "spillway:runtime/gpu.buffer": crate::host_gpu::Buffer,
    },
    // The calls that run kernels may end the job: a CPU kernel that reaches
    // its job's deadline, or a cancel, traps (see `host_gpu`).
    imports: {
        "spillway:runtime/gpu.launch": trappable,
        "spillway:runtime/gpu.gemm": trappable,
    },
});

pub(crate) use spillway::runtime::{gpu, job};
