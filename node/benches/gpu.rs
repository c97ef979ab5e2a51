//! GPU benchmarks, beside their peers in the same run. Skips (saying so)
//! without a CUDA driver or GPU.
//!
//! - f32 gemm 4096×4096×4096 through a guest (`benches/guests/gemm_bench.wat`
//!   calling `gpu.gemm`) vs `torch.matmul` on the same GPU (TF32 off on both
//!   sides). The guest's time per product is the difference between jobs of
//!   `2` and `2 + EXTRA` products divided by `EXTRA`, so upload and setup
//!   cancel out. Target: at least 0.9× torch's throughput.
//!
//! Run: `cargo bench -p spillway-node --bench gpu` (torch is looked up as
//! `python3 -c 'import torch'`).

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, JobId, JobSpec, TenantId};
use std::time::{Duration, Instant};

const N: u32 = 4096;
const EXTRA: u32 = 20;
const REPEATS: usize = 5;
const GEMM_BENCH: &[u8] = include_bytes!("guests/gemm_bench.wat");

const TORCH: &str = r#"
import statistics, torch
torch.backends.cuda.matmul.allow_tf32 = False
n = 4096
a = torch.rand(n, n, device="cuda") * 2 - 1
b = torch.rand(n, n, device="cuda") * 2 - 1
for _ in range(3):
    torch.matmul(a, b)
torch.cuda.synchronize()
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); torch.matmul(a, b); e.record(); torch.cuda.synchronize()
    times.append(s.elapsed_time(e))
print(statistics.median(times))
"#;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 1,
        max_memory_bytes: 1 << 30,
        ..NodeConfig::default()
    })
    .expect("executor");
    let caps = exec.capabilities();
    let Some(gpu) = caps.gpus.first() else {
        println!("gpu bench skipped: no CUDA driver or GPU on this machine");
        return;
    };
    let spec = JobSpec {
        tenant: TenantId::admin(),
        function: "gemm_bench".into(),
        digest: exec.put_artifact(GEMM_BENCH).expect("bench guest"),
        accelerator: Accelerator::Required,
        deadline_ms: 120_000,
        memory_limit_bytes: 1 << 30,
        idempotent: false,
    };
    let mut id = 0u128;
    let mut job = |iters: u32| -> Duration {
        id += 1;
        let input = [N.to_le_bytes(), iters.to_le_bytes()].concat();
        let t = Instant::now();
        let done = exec
            .run(JobId(id), &spec, input, 120_000, JobControl::detached())
            .expect("gemm bench job");
        assert!(f32::from_le_bytes(done.output[..4].try_into().unwrap()).is_finite());
        t.elapsed()
    };
    job(1);
    job(1);
    let mut per: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let base = job(2);
            let more = job(2 + EXTRA);
            (more.saturating_sub(base)).as_secs_f64() / f64::from(EXTRA)
        })
        .collect();
    per.sort_by(f64::total_cmp);
    let ours = per[REPEATS / 2];
    let flop = 2.0 * f64::from(N).powi(3);

    println!(
        "GPU {}: {} ({} GiB, cc {:?})",
        gpu.index,
        gpu.model,
        gpu.memory_bytes >> 30,
        gpu.compute_capability
    );
    println!("f32 gemm {N}x{N}x{N}, TF32 off, median of {REPEATS}");
    println!(
        "  spillway guest (gpu.gemm)  {:>8.3} ms  {:>6.1} TFLOP/s",
        ours * 1e3,
        flop / ours / 1e12
    );
    match torch_ms() {
        Some(ms) => {
            let torch = ms / 1e3;
            println!(
                "  torch.matmul               {:>8.3} ms  {:>6.1} TFLOP/s",
                ms,
                flop / torch / 1e12
            );
            println!(
                "  ratio (spillway / torch throughput): {:.3} (target >= 0.9)",
                torch / ours
            );
        }
        None => println!("  torch.matmul: unavailable (python3 with torch not found)"),
    }
}

fn torch_ms() -> Option<f64> {
    let out = std::process::Command::new("python3")
        .args(["-c", TORCH])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("torch: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
