//! GPU benchmarks, beside their peers in the same run. Skips (saying so)
//! without a CUDA driver or GPU.
//!
//! - gemm 4096×4096×4096 in f32 and in bf16 through a guest
//!   (`benches/guests/gemm_bench.wat` calling `gpu.gemm` on buffers of that
//!   type) vs `torch.matmul` on the same GPU with the same types (TF32 off
//!   on both sides for f32; bf16 in and out, f32 accumulation, torch's
//!   defaults otherwise). The guest's time per product is the difference
//!   between jobs of `2` and `2 + extra` products divided by `extra`, so
//!   upload and setup cancel out; `extra` is large enough that the products
//!   outweigh the jitter of the setup (random fill in wasm, uploads) by far.
//!   torch runs the same number of products back to back between two CUDA
//!   events. Target: at least 0.9× torch's throughput.
//!
//! - `vector_add` and `saxpy` on 2^25 elements launched by a guest
//!   (`benches/guests/elementwise_bench.wat` calling `gpu.launch`), their
//!   achieved bandwidth (12 bytes moved per element) vs a device-to-device
//!   copy of the same size with cudarc in this process (8 bytes per element).
//!   Same differencing as for gemm. Target: at least 80% of the copy.
//!
//! - a no-op GPU job (`benches/guests/gpu_noop.wat`: one-element buffer,
//!   `vector_add` on it, read back) through the executor (instantiate, host
//!   calls, stream lease, launch, synchronize) vs the same work done directly
//!   with cudarc (alloc, launch, copy back). The full HTTP path is measured
//!   by `spillway bench http --guest gpu-noop`.
//!
//! Run: `cargo bench -p spillway-node --bench gpu [-- gemm|elementwise|noop]`
//! (only the parts named; torch is looked up as `python3 -c 'import torch'`).

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, JobId, JobSpec, TenantId};
use std::time::{Duration, Instant};

const N: u32 = 4096;
/// Extra products per job: (dtype code, name, torch dtype, extra).
const GEMMS: [(u32, &str, &str, u32); 2] =
    [(0, "f32", "float32", 200), (1, "bf16", "bfloat16", 3000)];
const REPEATS: usize = 5;
const GEMM_BENCH: &[u8] = include_bytes!("guests/gemm_bench.wat");
const ELEMENTWISE_BENCH: &[u8] = include_bytes!("guests/elementwise_bench.wat");
const GPU_NOOP: &[u8] = include_bytes!("guests/gpu_noop.wat");
const NOOP_RUNS: usize = 2000;
const ELEMENTS: u32 = 1 << 25;
const LAUNCHES: u32 = 2000;

const TORCH: &str = r#"
import statistics, sys, torch
torch.backends.cuda.matmul.allow_tf32 = False
dtype = getattr(torch, sys.argv[1])
n = 4096
a = (torch.rand(n, n, device="cuda") * 2 - 1).to(dtype)
b = (torch.rand(n, n, device="cuda") * 2 - 1).to(dtype)
reps = int(sys.argv[2])
c = torch.matmul(a, b)
for _ in range(10):
    torch.matmul(a, b, out=c)
torch.cuda.synchronize()
times = []
for _ in range(5):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        torch.matmul(a, b, out=c)
    e.record(); torch.cuda.synchronize()
    times.append(s.elapsed_time(e) / reps)
print(statistics.median(times))
"#;

fn main() {
    // `cargo bench --bench gpu -- noop` runs only the parts named (gemm,
    // elementwise, noop); no name runs them all.
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |part: &str| names.is_empty() || names.iter().any(|n| n == part);
    let dir = tempfile::tempdir().expect("temp dir");
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 1,
        max_memory_bytes: 3 << 30,
        ..NodeConfig::default()
    })
    .expect("executor");
    let caps = exec.capabilities();
    let Some(gpu) = caps.gpus.first() else {
        println!("gpu bench skipped: no CUDA driver or GPU on this machine");
        return;
    };
    let spec = |wasm: &[u8], name: &str| JobSpec {
        tenant: TenantId::admin(),
        function: name.into(),
        digest: exec.put_artifact(wasm).expect("bench guest"),
        accelerator: Accelerator::Required,
        deadline_ms: 120_000,
        memory_limit_bytes: 2 << 30,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    };
    let mut id = 0u128;
    // Wall time of one job of `spec` on `input`: to its answer, and to the
    // end of its teardown (instance, buffers and stream freed).
    let mut timed_job = |spec: &JobSpec, input: Vec<u8>| -> (Duration, Duration) {
        id += 1;
        let t = Instant::now();
        let mut answered = None;
        exec.run_then(
            JobId(id),
            spec,
            input,
            120_000,
            JobControl::detached(),
            |outcome| {
                answered = Some(t.elapsed());
                let done = outcome.expect("bench job");
                assert!(f32::from_le_bytes(done.output[..4].try_into().unwrap()).is_finite());
            },
        );
        (answered.expect("every job is answered"), t.elapsed())
    };
    let mut job = |spec: &JobSpec, input: Vec<u8>| timed_job(spec, input).0;
    // Median over REPEATS of (job(base + extra) - job(base)) / extra.
    let mut per_op = |spec: &JobSpec, input: &dyn Fn(u32) -> Vec<u8>, extra: u32| -> f64 {
        job(spec, input(1));
        let mut per: Vec<f64> = (0..REPEATS)
            .map(|_| {
                let base = job(spec, input(2));
                let more = job(spec, input(2 + extra));
                more.saturating_sub(base).as_secs_f64() / f64::from(extra)
            })
            .collect();
        per.sort_by(f64::total_cmp);
        per[REPEATS / 2]
    };

    println!(
        "GPU {}: {} ({} GiB, cc {:?})",
        gpu.index,
        gpu.model,
        gpu.memory_bytes >> 30,
        gpu.compute_capability
    );
    if wanted("gemm") {
        let gemm = spec(GEMM_BENCH, "gemm_bench");
        let flop = 2.0 * f64::from(N).powi(3);
        for (dtype, name, torch_dtype, extra) in GEMMS {
            let input = |iters: u32| {
                [N, iters, dtype]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            };
            let ours = per_op(&gemm, &input, extra);
            println!(
                "{name} gemm {N}x{N}x{N} (A, B, C {name}; f32 accumulation), median of {REPEATS}"
            );
            println!(
                "  spillway guest (gpu.gemm)  {:>8.3} ms  {:>6.1} TFLOP/s",
                ours * 1e3,
                flop / ours / 1e12
            );
            match torch_ms(torch_dtype, extra) {
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
    }

    if wanted("elementwise") {
        let copy = copy_seconds(gpu.index as usize, ELEMENTS as usize);
        let copy_gbs = 8.0 * f64::from(ELEMENTS) / copy / 1e9;
        println!("elementwise, {ELEMENTS} f32 elements, median of {REPEATS}");
        println!(
            "  device-to-device copy (cudarc)  {:>8.1} us  {:>7.0} GB/s",
            copy * 1e6,
            copy_gbs
        );
        let elementwise = spec(ELEMENTWISE_BENCH, "elementwise_bench");
        for (kernel, name) in [(0u32, "vector_add"), (1, "saxpy")] {
            let input = |iters: u32| {
                [kernel, ELEMENTS, iters]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            };
            let t = per_op(&elementwise, &input, LAUNCHES);
            let gbs = 12.0 * f64::from(ELEMENTS) / t / 1e9;
            println!(
                "  {name:<10} through the guest   {:>8.1} us  {:>7.0} GB/s  {:.0}% of the copy (target >= 80%)",
                t * 1e6,
                gbs,
                100.0 * gbs / copy_gbs
            );
        }
    }

    if !wanted("noop") {
        return;
    }
    let noop = spec(GPU_NOOP, "gpu_noop");
    // The same job on the CPU backend: the guest's side of the cost
    // (instantiate, call, host calls) without a device.
    let noop_cpu = JobSpec {
        accelerator: Accelerator::None,
        ..noop.clone()
    };
    let before = exec.instance_starts();
    let [raw, pooled, ours, whole, cpu] = noop_seconds(gpu.index as usize, &mut || {
        let (answer, whole) = timed_job(&noop, Vec::new());
        let (on_cpu, _) = timed_job(&noop_cpu, Vec::new());
        [answer, whole, on_cpu].map(|d| d.as_secs_f64())
    });
    let after = exec.instance_starts();
    println!(
        "no-op GPU job (alloc 1 element, vector_add, read back), median of {NOOP_RUNS}, interleaved"
    );
    println!(
        "  raw cudarc (to the value read back) {:>8.1} us",
        raw * 1e6
    );
    println!(
        "  raw cudarc, from a pool of its own   {:>8.1} us  ({:.2}x raw: what the driver's pool costs)",
        pooled * 1e6,
        pooled / raw
    );
    println!(
        "  through the executor, to its answer {:>8.1} us  ({:.2}x raw, +{:.1} us; target <= 1.5x)",
        ours * 1e6,
        ours / raw,
        (ours - raw) * 1e6
    );
    println!(
        "    ... to the end of its teardown    {:>8.1} us  ({:.2}x raw)",
        whole * 1e6,
        whole / raw
    );
    println!(
        "  the same job on the CPU backend     {:>8.1} us  (the guest's side of the cost)",
        cpu * 1e6
    );
    println!(
        "  instances: {} jobs started warm, {} cold",
        after.warm - before.warm,
        after.cold - before.cold
    );
}

/// Median times of the no-op GPU job's work done directly with cudarc
/// (its buffer from the device's default memory pool, then from a pool of
/// its own, as a tenant's job allocates) and of the three times `ours`
/// measures (the job through the executor), run alternately so all see
/// the same machine: medians taken minutes apart differed by half.
#[allow(unsafe_code)] // a raw kernel launch and pool, as the baseline
fn noop_seconds(ordinal: usize, ours: &mut dyn FnMut() -> [f64; 3]) -> [f64; 5] {
    use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    let ctx = cudarc::driver::CudaContext::new(ordinal).expect("context");
    // SAFETY: one stream only, as in the node, which runs without tracking too.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().expect("stream");
    let dir = tempfile::tempdir().expect("temp dir");
    let (major, minor) = ctx.compute_capability().expect("compute capability");
    let arch = spillway_kernels::nvrtc::arch_for((major as u32, minor as u32));
    let ptx =
        spillway_kernels::nvrtc::ptx(spillway_kernels::nvrtc::BUILTIN_SOURCE, &arch, dir.path())
            .expect("compile the kernels");
    let module = ctx
        .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
        .expect("load");
    let f = module.load_function("vector_add").expect("vector_add");
    let pool = own_pool(&ctx, ordinal);
    let once = |pool: Option<cudarc::driver::sys::CUmemoryPool>| {
        let t = Instant::now();
        let buf = match pool {
            None => stream.alloc_zeros::<f32>(1).expect("alloc"),
            Some(pool) => {
                ctx.bind_to_thread().expect("bind");
                // SAFETY: a live pool and stream of this context; the
                // slice takes the 4 bytes and frees them on drop.
                let mut buf = unsafe {
                    let ptr =
                        cudarc::driver::result::mem_pool::alloc_async(pool, 4, stream.cu_stream())
                            .expect("alloc from the pool");
                    stream.upgrade_device_ptr::<f32>(ptr, 1)
                };
                stream.memset_zeros(&mut buf).expect("zero");
                buf
            }
        };
        let (ptr, _sync) = buf.device_ptr(&stream);
        let n = 1u32;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&ptr).arg(&ptr).arg(&ptr).arg(&n);
        let config = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: vector_add(a, b, out, n) with n = 1 on a one-element buffer.
        unsafe { launch.launch(config) }.expect("launch");
        drop(_sync);
        let out = stream.clone_dtoh(&buf).expect("read back");
        assert!(out[0].is_finite());
        t.elapsed().as_secs_f64()
    };
    for _ in 0..100 {
        once(None);
        once(Some(pool));
        ours();
    }
    let mut times: [Vec<f64>; 5] = Default::default();
    for _ in 0..NOOP_RUNS {
        times[0].push(once(None));
        times[1].push(once(Some(pool)));
        for (all, t) in times[2..].iter_mut().zip(ours()) {
            all.push(t);
        }
    }
    times.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[NOOP_RUNS / 2]
    })
}

/// A memory pool on the device, made as the node makes a tenant's (64 MiB
/// cap, freed memory kept); left for the process's end to free.
#[allow(unsafe_code)]
fn own_pool(
    ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
    ordinal: usize,
) -> cudarc::driver::sys::CUmemoryPool {
    use cudarc::driver::sys;
    ctx.bind_to_thread().expect("bind");
    // SAFETY: plain data, zero where unset, as the driver requires.
    let mut props: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
    props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location = sys::CUmemLocation {
        type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
        id: ordinal as i32,
    };
    props.maxSize = 64 << 20;
    let mut keep: u64 = 64 << 20;
    // SAFETY: valid properties; the threshold attribute is a u64.
    unsafe {
        let pool = cudarc::driver::result::mem_pool::create(&raw const props).expect("pool");
        cudarc::driver::result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&raw mut keep).cast::<std::ffi::c_void>(),
        )
        .expect("threshold");
        pool
    }
}

/// Median time of one device-to-device copy of `n` f32s (random data).
fn copy_seconds(ordinal: usize, n: usize) -> f64 {
    let ctx = cudarc::driver::CudaContext::new(ordinal).expect("context");
    let stream = ctx.new_stream().expect("stream");
    let host: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 8) as f32)
        .collect();
    let src = stream.clone_htod(&host).expect("upload");
    let mut dst = stream.alloc_zeros::<f32>(n).expect("alloc");
    let mut time = |copies: u32| {
        stream.synchronize().expect("sync");
        let t = Instant::now();
        for _ in 0..copies {
            stream.memcpy_dtod(&src, &mut dst).expect("copy");
        }
        stream.synchronize().expect("sync");
        t.elapsed()
    };
    time(3);
    let mut per: Vec<f64> = (0..REPEATS)
        .map(|_| (time(2 + LAUNCHES).saturating_sub(time(2))).as_secs_f64() / f64::from(LAUNCHES))
        .collect();
    per.sort_by(f64::total_cmp);
    per[REPEATS / 2]
}

/// Milliseconds per `torch.matmul` of `dtype` (a torch dtype name): the
/// median over 5 runs of `reps` products back to back, as the guest runs
/// them, timed with CUDA events.
fn torch_ms(dtype: &str, reps: u32) -> Option<f64> {
    let out = std::process::Command::new("python3")
        .args(["-c", TORCH, dtype, &reps.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("torch: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
