//! The node's configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How a node runs. `Default` assumes a developer machine: 4 slots, 256 MiB
/// per job, deadlines enforced to within 10 ms.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Unix socket the node listens on for its sidecar.
    pub socket: PathBuf,
    /// State directory: the artifact cache lives in `dir/artifacts`.
    pub dir: PathBuf,
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
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("spillway-node.sock"),
            dir: PathBuf::from("."),
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
}

impl NodeConfig {
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
        Ok(self)
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
    }
}
