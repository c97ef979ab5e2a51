//! The Spillway node: the process where untrusted tenant code runs.
//!
//! ```text
//!  sidecar ──Unix socket (proto frames)──▶ server ──▶ executor ──▶ guest (Wasmtime)
//!                                            │           │            │ imports
//!                                            │           ▼            ▼
//!                                            │     artifact cache   job / gpu host
//!                                            └──── load reports        (CPU kernels)
//! ```
//!
//! - [`Executor`] is the synchronous core: it stores artifacts, keeps their
//!   pre-instantiated components, and runs one job on the calling thread
//!   under an epoch deadline and memory, table and stack limits.
//! - [`server`] drives it from the Unix socket: slots, cancellation, output
//!   chunks, load reports.
//!
//! What it is not: a network service. The node never opens a network socket;
//! its sidecar fetches artifacts and talks to peers. It holds no identity key
//! and no control-plane state, so a sandbox escape gets little.

mod artifacts;
mod bindings;
mod compiled;
mod config;
mod cpu_speed;
mod cuda;
#[cfg(test)]
mod cuda_tests;
mod engine;
mod error;
mod executor;
mod guest_log;
mod host_gpu;
mod host_job;
mod imports;
mod incoming;
mod journal;
mod limits;
mod output_window;
mod resident;
mod sandbox;
pub mod server;
mod start_code;
mod state;
mod state_format;
mod synthetic;
mod tenant_gpu;
mod tenant_pool;
mod warm;
mod watchdog;
mod weights;

pub use config::{ConfigError, NodeConfig};
pub use cuda::gpu_count;
pub use error::NodeError;
pub use executor::{Executor, InstanceStarts};
pub use journal::JOURNAL_FILE;
pub use output_window::OutputWindow;
pub use server::run;
pub use state::JobControl;
pub use state_format::{NODE_FORMAT, open_state_dir};
pub use watchdog::Overrun;

/// Creates `dir` and its missing parents readable by their owner only
/// (0700): state never opens to other users.
pub(crate) fn owner_only_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Ends the process now with `code`, running no exit handlers: the CUDA
/// driver's wait for every kernel still running, so `std::process::exit`
/// would not return while a runaway kernel spins (seen on an H100: the node
/// stayed up for as long as the kernel ran). The kernel dies with the
/// process.
#[allow(unsafe_code)]
pub(crate) fn end_process_now(code: i32) -> ! {
    // SAFETY: `_exit` takes any int and never returns; skipping the exit
    // handlers is the point, and the node holds nothing that needs them
    // (its answers are written and its files are renamed into place).
    unsafe { libc::_exit(code) }
}
