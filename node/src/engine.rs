//! The Wasmtime engine every job shares, and the thread that ticks its epoch.

use crate::{NodeConfig, NodeError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Bytes of each memory and table kept resident (zeroed) between jobs.
const KEEP_RESIDENT: usize = 64 << 10;

/// Builds the engine: component model, pooling allocator sized from the
/// slots and the per-component limits (the configuration checked their
/// total), epoch interruption and the native stack limit.
pub(crate) fn build(config: &NodeConfig) -> Result<Engine, NodeError> {
    let instances = config.pool_instances();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * config.max_core_instances_per_component)
        .total_memories(instances * config.max_memories_per_component)
        .total_tables(instances * config.max_tables_per_component)
        .max_core_instances_per_component(config.max_core_instances_per_component)
        .max_memories_per_component(config.max_memories_per_component)
        .max_tables_per_component(config.max_tables_per_component)
        .max_memory_size(config.max_linear_memory_bytes() as usize)
        .table_elements(config.max_table_elements as usize)
        // A finished job's first pages of memory and table are zeroed with
        // memset and kept, rather than handed back with madvise and faulted
        // in again by the next job: small guests instantiate faster.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack_bytes)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| NodeError::Engine(format!("{e:?}")))
}

/// Increments the engine's epoch every tick until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: std::time::Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch ticker thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
