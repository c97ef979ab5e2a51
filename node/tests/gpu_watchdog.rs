//! A job whose GPU kernel outlives its deadline (the test-only
//! `test_spin`) is reported by the node's GPU watchdog within its grace of
//! the deadline, while the job is still blocked on the GPU: what the server
//! answers and then ends the node on. Its own test binary: the kernel keeps
//! the GPU busy.

use spillway_node::{Executor, JobControl, NodeConfig, Overrun};
use spillway_proto::{Accelerator, Failure, JobId, JobSpec};

mod common;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SPIN: &[u8] = include_bytes!("../../examples/guests/gpu_spin.wat");

fn spec(exec: &Executor, accelerator: Accelerator, deadline_ms: u64) -> JobSpec {
    let digest = exec.put_artifact(SPIN).unwrap();
    JobSpec {
        accelerator,
        ..common::spec(digest, deadline_ms)
    }
}

#[test]
fn a_kernel_past_its_deadline_is_reported_while_the_job_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 1,
        test_kernels: true,
        ..NodeConfig::default()
    })
    .unwrap();
    let spin_ms = 3000u32.to_le_bytes().to_vec();
    // On the CPU backend the kernel does not exist: a plain guest error.
    let spec_cpu = spec(&exec, Accelerator::None, 300);
    let err = exec
        .run(
            JobId(1),
            &spec_cpu,
            spin_ms.clone(),
            300,
            JobControl::detached(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Failure::GuestError { message } if message.contains("unknown kernel")),
        "{err:?}"
    );
    if exec.capabilities().gpus.is_empty() {
        eprintln!("skipped the GPU watchdog: no CUDA driver or GPU on this machine");
        return;
    }
    let (tx, rx) = mpsc::channel::<(Overrun, Instant)>();
    let tx = std::sync::Mutex::new(tx);
    // Instead of ending this test process, record the report.
    exec.on_gpu_overrun(move |o| tx.lock().unwrap().send((o, Instant::now())).unwrap());
    let began = Instant::now();
    let spec_gpu = spec(&exec, Accelerator::Required, 300);
    std::thread::scope(|s| {
        let job = s.spawn(|| exec.run(JobId(2), &spec_gpu, spin_ms, 300, JobControl::detached()));
        let (overrun, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        eprintln!("reported after {:?}: {overrun:?}", at - began);
        assert_eq!(overrun.job, JobId(2));
        assert_eq!(overrun.deadline_ms, 300);
        assert!(!overrun.answered, "the job's answer was still owed");
        assert!(overrun.ran >= Duration::from_millis(500), "{overrun:?}");
        assert!(
            !job.is_finished(),
            "reported while the job waits on the GPU"
        );
        // Left alone (no process exit here), the kernel ends by itself.
        let outcome = job.join().unwrap();
        eprintln!(
            "the job itself ended after {:?}: {outcome:?}",
            began.elapsed()
        );
    });
    assert!(rx.try_recv().is_err(), "reported once");
}
