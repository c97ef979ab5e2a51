//! What a component's first job costs, before and after the compiled-code
//! cache (`compiled`), for the no-op WAT guest and the Python example
//! guest (`target/guests/matmul-py.wasm`, built by
//! `examples/guests/build.sh`), in one run:
//!
//! - (a) the first job on a node that holds the bytes but never compiled
//!   them (read, compile, link, instantiate, run);
//! - (b) the first job after a node restart (with the cache: the compiled
//!   code is loaded from disk; without it: compiled again);
//! - (c) a node that never saw the component: store it (validate and
//!   compile, as a burst peer does after its fetch) and run its first job;
//!   the QUIC transfer itself is not part of this number;
//! - (d) a warm job (median of the next ones).
//!
//! Run: `cargo bench -p spillway-node --bench cold_start`.

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, Digest, JobId, JobSpec, TenantId};
use std::path::Path;
use std::time::{Duration, Instant};

fn executor(dir: &Path, compiled_cache: bool) -> Executor {
    Executor::new(NodeConfig {
        dir: dir.to_owned(),
        slots: 2,
        compiled_cache,
        ..NodeConfig::default()
    })
    .expect("executor")
}

fn spec(digest: Digest) -> JobSpec {
    JobSpec {
        tenant: TenantId::admin(),
        function: "bench".into(),
        digest,
        accelerator: Accelerator::None,
        deadline_ms: 60_000,
        memory_limit_bytes: 0,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    }
}

fn job(ex: &Executor, digest: Digest, input: &[u8]) -> Duration {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = JobId(u128::from(
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    ));
    let t = Instant::now();
    ex.run(
        id,
        &spec(digest),
        input.to_vec(),
        60_000,
        JobControl::detached(),
    )
    .expect("the job runs");
    t.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn measure(name: &str, wasm: &[u8], input: &[u8], cache: bool) {
    let dir = tempfile::tempdir().unwrap();
    // (c): a node that never saw it.
    let ex = executor(dir.path(), cache);
    let t = Instant::now();
    let digest = ex.put_artifact(wasm).expect("stored");
    job(&ex, digest, input);
    let never_seen = t.elapsed();
    // (d): warm jobs.
    let mut warm: Vec<Duration> = (0..21).map(|_| job(&ex, digest, input)).collect();
    warm.sort();
    drop(ex);
    // (b): a restarted node.
    let ex = executor(dir.path(), cache);
    let restart = job(&ex, digest, input);
    drop(ex);
    // (a): the bytes held, never compiled (no compiled code on disk).
    let _ = std::fs::remove_dir_all(dir.path().join("compiled"));
    let ex = executor(dir.path(), cache);
    let uncompiled = job(&ex, digest, input);
    println!(
        "{name:<12} {:<6} {:>12} {:>12} {:>12} {:>10}",
        if cache { "on" } else { "off" },
        ms(uncompiled),
        ms(restart),
        ms(never_seen),
        ms(warm[warm.len() / 2]),
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let noop = std::fs::read(root.join("examples/guests/noop.wat")).expect("noop.wat");
    let python_path = root.join("target/guests/matmul-py.wasm");
    let python = std::fs::read(&python_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the example guests first (examples/guests/build.sh)",
            python_path.display()
        )
    });
    println!(
        "first job of a component, ms ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<12} {:<6} {:>12} {:>12} {:>12} {:>10}",
        "guest", "cache", "(a) bytes", "(b) restart", "(c) new node", "(d) warm"
    );
    for cache in [false, true] {
        measure("noop.wat", &noop, b"", cache);
        measure("matmul-py", &python, b"", cache);
    }
}
