//! A guest that faults the GPU (an out-of-bounds write through the test-only
//! `test_oob_write` kernel) ends with `device_fault`. Its own test binary:
//! the fault poisons the CUDA context of the whole process.

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, Failure, JobId, JobSpec, TenantId};

const FAULT: &[u8] = include_bytes!("../../examples/guests/gpu_fault.wat");

fn spec(exec: &Executor, accelerator: Accelerator) -> JobSpec {
    JobSpec {
        tenant: TenantId::admin(),
        function: "fault".into(),
        digest: exec.put_artifact(FAULT).unwrap(),
        accelerator,
        deadline_ms: 30_000,
        memory_limit_bytes: 16 << 20,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    }
}

#[test]
fn an_out_of_bounds_kernel_ends_the_job_with_device_fault() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 1,
        test_kernels: true,
        ..NodeConfig::default()
    })
    .unwrap();
    // On the CPU backend the test kernel does not exist: a plain guest error.
    let err = exec
        .run(
            JobId(1),
            &spec(&exec, Accelerator::None),
            vec![],
            30_000,
            JobControl::detached(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Failure::GuestError { message } if message.contains("unknown kernel")),
        "{err:?}"
    );
    if exec.capabilities().gpus.is_empty() {
        eprintln!("skipped the GPU fault: no CUDA driver or GPU on this machine");
        return;
    }
    let err = exec
        .run(
            JobId(2),
            &spec(&exec, Accelerator::Required),
            vec![],
            30_000,
            JobControl::detached(),
        )
        .unwrap_err();
    eprintln!("fault reported as: {err:?}");
    assert!(matches!(err, Failure::DeviceFault { .. }), "{err:?}");
    assert!(err.may_have_run());
}
