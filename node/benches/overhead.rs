//! The node's per-job overhead: the no-op guest run through
//! [`Executor::run`] (pooled instance, limits, epoch deadline, host state)
//! beside bare Wasmtime instantiate + call of the same component, in the
//! same process and run. Prints both medians and their ratio, and the time
//! of the GPU benchmark's no-op job (`guests/gpu_noop.wat`: three `gpu`
//! calls) on the CPU backend.
//!
//! The executor is timed with its warm instances on (the default: the next
//! job's instance is made on another thread while this one runs) and off
//! (every job instantiates its own, as bare Wasmtime does), and per job to
//! its answer (what a caller waits for) and to the end of its teardown.
//!
//! Run: `cargo bench -p spillway-node --bench overhead`. The target is a
//! ratio of at most 1.5.

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, JobId, JobSpec, TenantId};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

const SAMPLES: usize = 21;
const PER_SAMPLE: u32 = 500;

/// Bare Wasmtime instantiate + call + drop of `wasm` on `engine`.
fn bare_median(engine: &Engine, wasm: &[u8]) -> Duration {
    let component = Component::new(engine, wasm).expect("noop compiles");
    let pre = Linker::<()>::new(engine)
        .instantiate_pre(&component)
        .expect("noop links");
    median(|| {
        let mut store = Store::new(engine, ());
        let instance = pre.instantiate(&mut store).expect("instantiate");
        let run = instance
            .get_typed_func::<(&[u8],), (Result<Vec<u8>, String>,)>(&mut store, "run")
            .expect("run export");
        let (out,) = run.call(&mut store, (&[],)).expect("call");
        assert!(out.is_ok());
    })
}

/// One job of `spec`: the time to its answer and to the end of its
/// teardown.
fn answer_and_whole(exec: &Executor, spec: &JobSpec) -> (Duration, Duration) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let job = JobId(u128::from(
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    ));
    let t = Instant::now();
    let mut answered = None;
    exec.run_then(
        job,
        spec,
        Vec::new(),
        10_000,
        JobControl::detached(),
        |outcome| {
            answered = Some(t.elapsed());
            outcome.expect("the job runs");
        },
    );
    (answered.expect("every job is answered"), t.elapsed())
}

/// Medians of [`answer_and_whole`] over `SAMPLES * PER_SAMPLE` jobs.
fn answer_medians(exec: &Executor, spec: &JobSpec) -> (Duration, Duration) {
    let count = SAMPLES * PER_SAMPLE as usize;
    for _ in 0..PER_SAMPLE {
        answer_and_whole(exec, spec);
    }
    let (mut answers, mut wholes): (Vec<Duration>, Vec<Duration>) =
        (0..count).map(|_| answer_and_whole(exec, spec)).unzip();
    answers.sort();
    wholes.sort();
    (answers[count / 2], wholes[count / 2])
}

/// Median time of one call of `f`, over `SAMPLES` batches.
fn median(mut f: impl FnMut()) -> Duration {
    for _ in 0..PER_SAMPLE {
        f();
    }
    let mut samples: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..PER_SAMPLE {
                f();
            }
            t.elapsed() / PER_SAMPLE
        })
        .collect();
    samples.sort();
    samples[SAMPLES / 2]
}

fn main() {
    let noop = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/guests/noop.wat"
    ))
    .expect("examples/guests/noop.wat");

    // Bare Wasmtime, twice: the default engine (on-demand allocation), and
    // an engine with the pooling allocator as the node configures it. Both
    // pre-instantiate once, then make a fresh store + instantiate + call.
    let default_engine = Engine::default();
    let bare = bare_median(&default_engine, &noop);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(12)
        .total_core_instances(96)
        .total_memories(96)
        .total_tables(96)
        .max_memory_size(256 << 20);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let pooled_engine = Engine::new(&config).expect("pooling engine");
    let bare_pooled = bare_median(&pooled_engine, &noop);

    // Spillway's node executor.
    let dir = tempfile::tempdir().expect("temp dir");
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        ..NodeConfig::default()
    })
    .expect("executor");
    let digest = exec.put_artifact(&noop).expect("store noop");
    let spec = JobSpec {
        tenant: TenantId::admin(),
        function: "noop".into(),
        digest,
        accelerator: Accelerator::None,
        deadline_ms: 10_000,
        memory_limit_bytes: 16 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    };
    let node = median(|| {
        answer_and_whole(&exec, &spec);
    });
    let (noop_answer, noop_whole) = answer_medians(&exec, &spec);
    let cold_dir = tempfile::tempdir().expect("temp dir");
    let cold_exec = Executor::new(NodeConfig {
        dir: cold_dir.path().to_owned(),
        warm_instances: 0,
        ..NodeConfig::default()
    })
    .expect("executor without warm instances");
    let cold_spec = JobSpec {
        digest: cold_exec.put_artifact(&noop).expect("store noop"),
        ..spec.clone()
    };
    let cold = median(|| {
        answer_and_whole(&cold_exec, &cold_spec);
    });

    // The GPU benchmark's no-op job (a buffer, a launch, a read back) on
    // the CPU backend: the host calls' share of a small GPU job.
    let gpu_noop = include_bytes!("guests/gpu_noop.wat");
    let gpu_spec = JobSpec {
        digest: exec.put_artifact(gpu_noop).expect("store gpu_noop"),
        ..spec.clone()
    };
    let (host_calls, host_calls_whole) = answer_medians(&exec, &gpu_spec);
    let starts = exec.instance_starts();

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "no-op guest, instantiate + call + drop, median of {SAMPLES}x{PER_SAMPLE} ({cores} cores)"
    );
    println!("  bare wasmtime, default allocator  {:>8.2} us", us(bare));
    println!(
        "  bare wasmtime, pooling allocator  {:>8.2} us",
        us(bare_pooled)
    );
    println!("  spillway executor                 {:>8.2} us", us(node));
    println!("  spillway executor, warming off    {:>8.2} us", us(cold));
    println!(
        "spillway executor, per job to its answer / to the end of its teardown (median of {})",
        SAMPLES * PER_SAMPLE as usize
    );
    println!(
        "  no-op                             {:>8.2} / {:.2} us",
        us(noop_answer),
        us(noop_whole)
    );
    println!(
        "  gpu_noop (3 gpu calls), CPU backend {:>6.2} / {:.2} us",
        us(host_calls),
        us(host_calls_whole)
    );
    println!(
        "  instances: {} jobs started warm, {} cold (NodeConfig::warm_instances {})",
        starts.warm,
        starts.cold,
        exec.config().warm_instances
    );
    println!(
        "  ratio executor / bare: {:.2}x (default), {:.2}x (pooling); warming off {:.2}x (pooling); target <= 1.5x",
        node.as_secs_f64() / bare.as_secs_f64(),
        node.as_secs_f64() / bare_pooled.as_secs_f64(),
        cold.as_secs_f64() / bare_pooled.as_secs_f64()
    );
}
