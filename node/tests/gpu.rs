//! The executor on a GPU host: discovery, backend choice per job, and the
//! gemm guest on cuBLAS. Without a CUDA driver the GPU parts skip (saying
//! so) and the CPU-only behaviour is checked instead.

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, Backend, Failure, JobId, JobSpec, Refusal, TenantId};

const GEMM: &[u8] = include_bytes!("../../examples/guests/gemm.wat");
const ECHO: &[u8] = include_bytes!("../../examples/guests/echo.wat");

fn executor(dir: &tempfile::TempDir) -> Executor {
    Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 2,
        ..NodeConfig::default()
    })
    .unwrap()
}

fn gemm_input(m: usize, n: usize, k: usize, seed: &mut u64) -> (Vec<u8>, Vec<f32>) {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
    let mut input: Vec<u8> = [m, n, k]
        .iter()
        .flat_map(|v| (*v as u32).to_le_bytes())
        .collect();
    input.extend(a.iter().chain(&b).flat_map(|v| v.to_le_bytes()));
    let mut want = vec![0.0; m * n];
    spillway_kernels::gemm(
        m,
        n,
        k,
        1.0,
        &a,
        &b,
        0.0,
        &mut want,
        &mut spillway_kernels::Meter::unbounded(),
    )
    .unwrap();
    (input, want)
}

fn run(
    exec: &Executor,
    accelerator: Accelerator,
    input: Vec<u8>,
) -> Result<(Vec<f32>, Backend), Failure> {
    let digest = exec.put_artifact(GEMM).unwrap();
    let spec = JobSpec {
        tenant: TenantId::admin(),
        function: "gemm".into(),
        digest,
        accelerator,
        deadline_ms: 30_000,
        memory_limit_bytes: 256 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    };
    let done = exec.run(JobId(1), &spec, input, 30_000, JobControl::detached())?;
    let out = done
        .output
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok((out, done.backend))
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert!(got.iter().all(|v| v.is_finite()));
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - f64::from(*w)).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| f64::from(*w).powi(2)).sum();
    (err / norm).sqrt()
}

#[test]
fn jobs_run_on_the_backend_their_accelerator_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir);
    let caps = exec.capabilities();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let (input, want) = gemm_input(33, 17, 65, &mut seed);

    // A job that never calls `gpu` holds no GPU and says `cpu`, whatever
    // it prefers.
    let digest = exec.put_artifact(ECHO).unwrap();
    let echo = JobSpec {
        tenant: TenantId::admin(),
        function: "echo".into(),
        digest,
        accelerator: Accelerator::Preferred,
        deadline_ms: 5_000,
        memory_limit_bytes: 16 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    };
    let done = exec
        .run(
            JobId(9),
            &echo,
            b"hi".to_vec(),
            5_000,
            JobControl::detached(),
        )
        .unwrap();
    assert_eq!(done.backend, Backend::Cpu);

    // `none` always runs on the CPU reference, exactly.
    let (got, backend) = run(&exec, Accelerator::None, input.clone()).unwrap();
    assert_eq!(backend, Backend::Cpu);
    assert_eq!(got, want);

    if caps.gpus.is_empty() {
        eprintln!("skipped the GPU half of this test: no CUDA driver or GPU on this machine");
        assert_eq!(caps.backends, vec![Backend::Cpu]);
        assert_eq!(
            run(&exec, Accelerator::Required, input.clone()).unwrap_err(),
            Failure::Refused(Refusal::NoAccelerator)
        );
        let (_, backend) = run(&exec, Accelerator::Preferred, input).unwrap();
        assert_eq!(
            backend,
            Backend::Cpu,
            "preferred falls back to the CPU and says so"
        );
        return;
    }
    for gpu in &caps.gpus {
        eprintln!(
            "GPU {}: {} ({} GiB, cc {:?})",
            gpu.index,
            gpu.model,
            gpu.memory_bytes >> 30,
            gpu.compute_capability
        );
        assert!(gpu.memory_bytes > 0 && gpu.compute_capability.0 >= 7);
    }
    assert_eq!(caps.backends, vec![Backend::Cuda, Backend::Cpu]);
    for accelerator in [Accelerator::Required, Accelerator::Preferred] {
        let (got, backend) = run(&exec, accelerator, input.clone()).unwrap();
        assert_eq!(backend, Backend::Cuda, "{accelerator:?}");
        let rel = relative_error(&got, &want);
        assert!(rel <= 1e-5, "{accelerator:?}: relative error {rel:e}");
    }
}

#[test]
fn large_gemm_through_the_guest_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir);
    if exec.capabilities().gpus.is_empty() {
        eprintln!(
            "skipped large_gemm_through_the_guest_on_the_gpu: no CUDA driver or GPU on this machine"
        );
        return;
    }
    let mut seed = 0x9e3779b97f4a7c15;
    let (input, want) = gemm_input(512, 384, 256, &mut seed);
    let (got, backend) = run(&exec, Accelerator::Required, input).unwrap();
    assert_eq!(backend, Backend::Cuda);
    let rel = relative_error(&got, &want);
    assert!(rel <= 1e-5, "relative error {rel:e}");
}

#[test]
fn a_node_with_several_gpus_uses_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let exec = std::sync::Arc::new(
        Executor::new(NodeConfig {
            dir: dir.path().to_owned(),
            slots: 4,
            max_memory_bytes: 1 << 30,
            ..NodeConfig::default()
        })
        .unwrap(),
    );
    let gpus = exec.capabilities().gpus.len();
    if gpus < 2 {
        eprintln!("skipped a_node_with_several_gpus_uses_all_of_them: {gpus} GPU(s) here, needs 2");
        return;
    }
    let digest = exec
        .put_artifact(include_bytes!("../benches/guests/gemm_bench.wat"))
        .unwrap();
    let spec = JobSpec {
        tenant: TenantId::admin(),
        function: "gemm_bench".into(),
        digest,
        accelerator: Accelerator::Required,
        deadline_ms: 60_000,
        memory_limit_bytes: 512 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    };
    // Jobs that hold their GPU stream for a while, started together.
    let workers: Vec<_> = (0..2 * gpus as u64)
        .map(|i| {
            let (exec, spec) = (exec.clone(), spec.clone());
            std::thread::spawn(move || {
                let input = [1024u32.to_le_bytes(), 20u32.to_le_bytes()].concat();
                let done = exec.run(
                    JobId(100 + u128::from(i)),
                    &spec,
                    input,
                    60_000,
                    JobControl::detached(),
                );
                done.unwrap().gpu.expect("a GPU job names its GPU")
            })
        })
        .collect();
    let used: std::collections::BTreeSet<u32> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    eprintln!("jobs ran on GPUs {used:?}");
    assert_eq!(used.len(), gpus, "every GPU took jobs");
}
