//! A kernel pack whose kernel writes far outside its buffer ends the job
//! with `device_fault`, like the built-in fault test (`gpu_fault.rs`): the
//! manifest's checks cover what the kernel is given, not what its code
//! does. Its own test binary: the fault poisons the CUDA context of the
//! whole process. Without a GPU the job is refused before any device work.

use spillway_node::{Executor, JobControl, NodeConfig};

mod common;
use spillway_proto::{Accelerator, Failure, JobId, JobSpec, NamedArtifact, TenantId};

/// `ops.json`'s `scale`, declared the same, but writing 2^36 elements
/// (256 GiB) past `out`, beyond any GPU's memory.
fn wild_pack() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kernels/ops.json");
    let pack = std::fs::read_to_string(path).unwrap();
    let wild = pack.replace(
        "if (i < n) out[i] = a * x[i];",
        "if (i < n) out[i + 0x1000000000ull] = a * x[i];",
    );
    assert_ne!(wild, pack, "ops.json's scale kernel changed");
    wild.into_bytes()
}

#[test]
fn a_pack_kernel_writing_out_of_bounds_ends_the_job_with_device_fault() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 1,
        kernel_compiler: common::kernel_compiler(),
        ..NodeConfig::default()
    })
    .unwrap();
    // On a GPU host the pack compiles at upload: nothing in it is invalid.
    let pack = exec.put_artifact(&wild_pack()).unwrap();
    let guest = include_bytes!("../../examples/guests/pack_scale.wat");
    let spec = JobSpec {
        tenant: TenantId::admin(),
        function: "wild".into(),
        digest: exec.put_artifact(guest).unwrap(),
        accelerator: Accelerator::Required,
        deadline_ms: 30_000,
        memory_limit_bytes: 16 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        weights: Vec::new(),
        kernel_packs: vec![NamedArtifact {
            name: "ops".into(),
            digest: pack,
        }],
    };
    let input: Vec<u8> = [2.0f32, 1.0, -3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let err = exec
        .run(JobId(1), &spec, input, 30_000, JobControl::detached())
        .unwrap_err();
    if exec.capabilities().gpus.is_empty() {
        assert_eq!(
            err,
            Failure::Refused(spillway_proto::Refusal::NoAccelerator),
            "{err:?}"
        );
        eprintln!("skipped the GPU fault: no CUDA driver or GPU on this machine");
        return;
    }
    eprintln!("fault reported as: {err:?}");
    assert!(matches!(err, Failure::DeviceFault { .. }), "{err:?}");
    assert!(err.may_have_run());
}
