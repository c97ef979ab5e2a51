//! Tensors of weights through the executor: a guest multiplies by a tensor
//! it opens with `gpu.weights` (`examples/guests/weights_gemm.wat`). On
//! the CPU backend (every machine) it is read where the weights are kept;
//! on a GPU (where one is present; otherwise the GPU half says it skipped)
//! it is loaded once and shared across jobs, and evicted least recently
//! used when another does not fit the GPU's weights budget.

use crate::common;

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, Backend, Digest, JobId, JobSpec, NamedArtifact};

/// A safetensors file holding one f32 tensor `name` of `rows`×`cols`,
/// written by the format's own crate.
fn safetensors(name: &str, rows: usize, cols: usize, values: &[f32]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, cols], &bytes)
            .unwrap();
    safetensors::serialize([(name, view)], None).unwrap()
}

/// `weights_gemm`'s input: the names, n and k, then x.
fn input(weights: &str, tensor: &str, n: usize, x: &[f32]) -> Vec<u8> {
    let mut b = Vec::new();
    for s in [weights, tensor] {
        b.extend((s.len() as u32).to_le_bytes());
        b.extend(s.as_bytes());
    }
    b.extend((n as u32).to_le_bytes());
    b.extend((x.len() as u32).to_le_bytes());
    b.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    b
}

/// x·W in f64, for comparison.
fn reference(x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| {
            x.iter()
                .enumerate()
                .map(|(i, xi)| f64::from(*xi) * f64::from(w[i * n + j]))
                .sum()
        })
        .collect()
}

/// A k×n tensor of small values that differ per `seed`.
fn tensor(k: usize, n: usize, seed: u32) -> Vec<f32> {
    (0..k * n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 97) as f32 / 97.0 - 0.5)
        .collect()
}

struct Setup {
    exec: Executor,
    component: Digest,
}

impl Setup {
    fn new(dir: &tempfile::TempDir, weights_budget_bytes: Option<u64>) -> Self {
        let exec = Executor::new(NodeConfig {
            dir: dir.path().to_owned(),
            slots: 2,
            max_memory_bytes: 64 << 20,
            weights_budget_bytes,
            kernel_compiler: common::kernel_compiler(),
            ..NodeConfig::default()
        })
        .unwrap();
        let component = exec.put_artifact(&common::guest("weights_gemm")).unwrap();
        Self { exec, component }
    }

    /// Runs `x · (weights tensor "proj")` with the function naming
    /// `weights` as `lm`; the product and the backend.
    fn run(
        &self,
        job: u64,
        accelerator: Accelerator,
        weights: Digest,
        (n, x): (usize, &[f32]),
    ) -> Result<(Vec<f32>, Backend, u64), String> {
        let spec = JobSpec {
            accelerator,
            weights: vec![NamedArtifact {
                name: "lm".into(),
                digest: weights,
            }],
            ..common::spec(self.component, 30_000)
        };
        let done = self
            .exec
            .run(
                JobId(u128::from(job)),
                &spec,
                input("lm", "proj", n, x),
                30_000,
                JobControl::detached(),
            )
            .map_err(|f| f.to_string())?;
        let out = done
            .output
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok((out, done.backend, done.weights_loaded_bytes))
    }
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-3 * w.abs().max(1.0),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn a_guest_multiplies_by_a_tensor_of_its_weights_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::new(&dir, None);
    let (k, n) = (16, 8);
    let w = tensor(k, n, 1);
    let weights = s.exec.put_artifact(&safetensors("proj", k, n, &w)).unwrap();
    let x: Vec<f32> = (0..k).map(|i| i as f32 / 4.0).collect();
    let (got, backend, loaded) = s.run(1, Accelerator::None, weights, (n, &x)).unwrap();
    assert_eq!((backend, loaded), (Backend::Cpu, 0));
    assert_close(&got, &reference(&x, &w, n), "cpu");
    // Read in place: nothing is loaded onto a device.
    assert_eq!(s.exec.resident_weights(), (0, 0));
    // A tensor the weights do not hold is the guest's error.
    let other = s
        .exec
        .put_artifact(&safetensors("other", k, n, &w))
        .unwrap();
    let e = s.run(3, Accelerator::None, other, (n, &x)).unwrap_err();
    assert!(e.contains("no tensor \"proj\""), "{e}");
}

#[test]
fn a_tensor_is_loaded_once_per_gpu_and_the_lru_one_evicted_past_the_budget() {
    let (k, n) = (256, 256);
    let bytes = (k * n * 4) as u64;
    let dir = tempfile::tempdir().unwrap();
    // Room for one such tensor, not two.
    let s = Setup::new(&dir, Some(bytes * 3 / 2));
    if s.exec.capabilities().gpus.is_empty() {
        eprintln!("skipped: no CUDA driver or GPU on this machine (the CPU half runs above)");
        return;
    }
    let (wa, wb) = (tensor(k, n, 1), tensor(k, n, 2));
    let a = s
        .exec
        .put_artifact(&safetensors("proj", k, n, &wa))
        .unwrap();
    let b = s
        .exec
        .put_artifact(&safetensors("proj", k, n, &wb))
        .unwrap();
    let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 - 3.0).collect();
    let (ra, rb) = (reference(&x, &wa, n), reference(&x, &wb, n));

    // 100 jobs: one load, by the first (its receipt says so).
    for job in 0..100 {
        let (got, backend, loaded) = s.run(job, Accelerator::Required, a, (n, &x)).unwrap();
        assert_eq!(backend, Backend::Cuda);
        assert_eq!(loaded, if job == 0 { bytes } else { 0 }, "job {job}");
        assert_close(&got, &ra, "a");
    }
    assert_eq!(
        s.exec.resident_weights(),
        (1, bytes),
        "loaded once across 100 jobs"
    );

    // b does not fit beside a: a (idle, least recently used) is evicted;
    // then a comes back on demand, evicting b; a again loads nothing.
    for (job, weights, want, loads) in [
        (100, b, &rb, 2),
        (101, a, &ra, 3),
        (102, a, &ra, 3),
        (103, b, &rb, 4),
    ] {
        let (got, _, loaded) = s.run(job, Accelerator::Required, weights, (n, &x)).unwrap();
        assert_close(&got, want, "after an eviction");
        assert_eq!(loaded, if job == 102 { 0 } else { bytes }, "job {job}");
        assert_eq!(s.exec.resident_weights(), (loads, bytes), "job {job}");
    }

    // A tensor larger than the whole budget is refused, typed.
    let big = s
        .exec
        .put_artifact(&safetensors("proj", 2 * k, n, &tensor(2 * k, n, 3)))
        .unwrap();
    let x2: Vec<f32> = vec![1.0; 2 * k];
    let e = s
        .run(104, Accelerator::Required, big, (n, &x2))
        .unwrap_err();
    assert!(e.contains("larger than this GPU's weights budget"), "{e}");
}
