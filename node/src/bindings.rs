//! Host bindings generated from `wit/runtime.wit` (world `job-guest`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "job-guest",
    with: {
        "spillway:runtime/gpu.buffer": crate::host_gpu::Buffer,
    },
});

pub(crate) use spillway::runtime::{gpu, job};
