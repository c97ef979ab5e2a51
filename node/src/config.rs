//! The node's configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How a node runs. `Default` assumes a developer machine: 4 slots, 256 MiB
/// per job, deadlines enforced to within 10 ms, components as large as an
/// interpreter (32 core instances), 1000 log lines a job.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Unix socket the node listens on for its sidecar.
    pub socket: PathBuf,
    /// State directory: the artifact cache lives in `dir/artifacts`.
    pub dir: PathBuf,
    /// This process's own files: uploads while they arrive (`incoming`)
    /// and the execution journal. `None`: `dir`. Executors that share one
    /// `dir` (its artifacts and compiled code) each have their own.
    pub own_dir: Option<PathBuf>,
    /// Jobs run at once. Each slot is a pooled instance; a job that finds
    /// none free within a second is refused with `slots_exhausted` (the
    /// sidecar queues in front of the node, so that happens only while a
    /// finished job is still being freed).
    pub slots: u32,
    /// The largest linear memory (and `gpu` buffer total) any job may use.
    pub max_memory_bytes: u64,
    /// Table elements a guest may grow to.
    pub max_table_elements: u32,
    /// Native stack a guest may use; deeper recursion traps.
    pub max_wasm_stack_bytes: usize,
    /// The epoch tick: how often deadlines and cancellation are checked.
    pub epoch_tick: Duration,
    /// Bytes a job may emit as chunks plus return.
    pub max_output_bytes: u64,
    /// Which GPUs the node uses: `None` every GPU the driver shows,
    /// `Some(ordinals)` only those (empty: none, CPU backend only).
    pub gpus: Option<Vec<usize>>,
    /// Load the fault-test kernels (`test_oob_write`). Never in production:
    /// a guest could poison the node's CUDA context on purpose.
    pub test_kernels: bool,
    /// Benchmarks only: serve every job by waiting this long instead of
    /// running its guest (see the `synthetic` module).
    pub synthetic_service: Option<Duration>,
    /// Record every job's start in `dir/executions.log` (see the
    /// `journal` module).
    pub execution_journal: bool,
    /// Instances made ahead of their jobs, across components (see the
    /// `warm` module); 0 turns warming off.
    pub warm_instances: u32,
    /// Core module instances one component may hold. Toolchains make
    /// several: componentize-py 14 (the interpreter, its libraries, the
    /// WASI adapter and shims), componentize-js a few.
    pub max_core_instances_per_component: u32,
    /// Linear memories one component may hold (each counts against the
    /// job's one memory limit).
    pub max_memories_per_component: u32,
    /// Tables one component may hold.
    pub max_tables_per_component: u32,
    /// Lines one job may write to the host's log (`job.log`, stdout and
    /// stderr together); later lines are dropped after one marker.
    pub guest_log_lines: u32,
    /// Bytes one job may write to the host's log.
    pub guest_log_bytes: u64,
    /// Keep compiled components on disk (`dir/compiled`) so a component is
    /// compiled once per host, not once per node start (see `compiled`).
    pub compiled_cache: bool,
    /// Multiply-adds a millisecond the CPU backend's `gemm` does here; a
    /// product that surely cannot finish before its job's deadline is
    /// refused before it starts (see `cpu_speed`). `None`: measured when
    /// the node starts.
    pub cpu_macs_per_ms: Option<u64>,
    /// The program that compiles a kernel pack's CUDA source in a child
    /// process (`spillway compile-kernel`); `None`: packs with CUDA source
    /// are refused on GPU hosts (PTX packs still load). A tenant's source
    /// is never compiled in the node's own process.
    pub kernel_compiler: Option<spillway_kernels::nvrtc::Compiler>,
    /// Bytes of tensors of weights each GPU keeps resident for the jobs
    /// that open them; past it the least recently used idle ones are
    /// evicted. `None`: half the GPU's memory.
    pub weights_budget_bytes: Option<u64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("spillway-node.sock"),
            dir: PathBuf::from("."),
            own_dir: None,
            slots: 4,
            max_memory_bytes: 256 * 1024 * 1024,
            max_table_elements: 100_000,
            max_wasm_stack_bytes: 512 * 1024,
            epoch_tick: Duration::from_millis(10),
            max_output_bytes: 16 * 1024 * 1024,
            gpus: None,
            test_kernels: false,
            synthetic_service: None,
            execution_journal: false,
            warm_instances: 4,
            max_core_instances_per_component: 32,
            max_memories_per_component: 8,
            max_tables_per_component: 8,
            guest_log_lines: 1000,
            guest_log_bytes: 256 << 10,
            compiled_cache: true,
            cpu_macs_per_ms: None,
            kernel_compiler: None,
            weights_budget_bytes: None,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("slots must be between 1 and 1024, got {0}")]
    Slots(u32),
    #[error("max_memory_bytes must be between 64 KiB and 64 GiB, got {0}")]
    Memory(u64),
    #[error("epoch tick must be between 1 ms and 1 s, got {0:?}")]
    EpochTick(Duration),
    #[error("max_wasm_stack_bytes must be between 64 KiB and 64 MiB, got {0}")]
    Stack(usize),
    #[error("warm_instances must be at most 1024, got {0}")]
    WarmInstances(u32),
    #[error("{what} must be between 1 and {max}, got {got}")]
    PerComponent {
        what: &'static str,
        got: u32,
        max: u32,
    },
    #[error(
        "the instance pool would reserve {reserve_gib} GiB of address space (at most {max_gib} GiB): lower slots, warm_instances, max_memories_per_component or max_memory_bytes"
    )]
    PoolReservation { reserve_gib: u64, max_gib: u64 },
    #[error("guest_log_lines and guest_log_bytes must be at least 1")]
    GuestLog,
}

/// Address space the instance pool may reserve: half of x86-64's 128 TiB
/// user space, leaving the rest to the process.
const MAX_POOL_RESERVATION: u64 = 64 << 40;

/// All a 32-bit linear memory can address.
const WASM32_MEMORY_BYTES: u64 = 4 << 30;

/// Instances the pool holds beyond the slots and the warm instances:
/// pre-validation of uploads, and a finished job's instance while it is
/// dropped.
pub(crate) const SPARE_INSTANCES: u32 = 8;

impl NodeConfig {
    /// Where this process's own files go (`own_dir`, else `dir`).
    pub fn own_dir(&self) -> &std::path::Path {
        self.own_dir.as_deref().unwrap_or(&self.dir)
    }

    /// Checks every value, returning the config unchanged when it is usable.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if !(1..=1024).contains(&self.slots) {
            return Err(ConfigError::Slots(self.slots));
        }
        if !(64 * 1024..=64 << 30).contains(&self.max_memory_bytes) {
            return Err(ConfigError::Memory(self.max_memory_bytes));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&self.epoch_tick) {
            return Err(ConfigError::EpochTick(self.epoch_tick));
        }
        if !(64 * 1024..=64 << 20).contains(&self.max_wasm_stack_bytes) {
            return Err(ConfigError::Stack(self.max_wasm_stack_bytes));
        }
        if self.warm_instances > 1024 {
            return Err(ConfigError::WarmInstances(self.warm_instances));
        }
        for (what, got, max) in [
            (
                "max_core_instances_per_component",
                self.max_core_instances_per_component,
                256,
            ),
            (
                "max_memories_per_component",
                self.max_memories_per_component,
                64,
            ),
            (
                "max_tables_per_component",
                self.max_tables_per_component,
                256,
            ),
        ] {
            if !(1..=max).contains(&got) {
                return Err(ConfigError::PerComponent { what, got, max });
            }
        }
        let reserve = self.pool_reservation();
        if reserve > MAX_POOL_RESERVATION {
            return Err(ConfigError::PoolReservation {
                reserve_gib: reserve >> 30,
                max_gib: MAX_POOL_RESERVATION >> 30,
            });
        }
        if self.guest_log_lines == 0 || self.guest_log_bytes == 0 {
            return Err(ConfigError::GuestLog);
        }
        Ok(self)
    }

    /// Component instances the pool holds.
    pub(crate) fn pool_instances(&self) -> u32 {
        self.slots + SPARE_INSTANCES + self.warm_instances
    }

    /// The largest linear memory a guest may have: its memory limit, but
    /// never past 4 GiB, all a 32-bit memory can address (and Wasmtime's
    /// reservation per memory). A limit above it is room for `gpu`
    /// buffers, which count against the same limit.
    pub(crate) fn max_linear_memory_bytes(&self) -> u64 {
        self.max_memory_bytes.min(WASM32_MEMORY_BYTES)
    }

    /// The address space the pool's linear memories reserve, at most: each
    /// memory slot is Wasmtime's 4 GiB reservation plus a guard region.
    pub(crate) fn pool_reservation(&self) -> u64 {
        let memories =
            u64::from(self.pool_instances()) * u64::from(self.max_memories_per_component);
        let slot = WASM32_MEMORY_BYTES + (32 << 20);
        memories * slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        NodeConfig::default().validate().unwrap();
        let bad = NodeConfig {
            slots: 0,
            ..NodeConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err(), ConfigError::Slots(0));
        let bad = NodeConfig {
            max_core_instances_per_component: 0,
            ..NodeConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            ConfigError::PerComponent {
                what: "max_core_instances_per_component",
                got: 0,
                max: 256
            }
        );
    }

    #[test]
    fn the_pool_reservation_is_checked_as_a_whole() {
        // 1024 slots of 64 memories each would reserve about 260 TiB.
        let big = NodeConfig {
            slots: 1024,
            max_memories_per_component: 64,
            ..NodeConfig::default()
        };
        assert!(matches!(
            big.validate().unwrap_err(),
            ConfigError::PoolReservation { .. }
        ));
        // The defaults reserve (4 + 8 + 4) * 8 slots of about 4 GiB.
        let reserve = NodeConfig::default().pool_reservation();
        assert_eq!(reserve, 128 * ((4 << 30) + (32 << 20)));
    }
}
