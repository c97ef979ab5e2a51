//! Warm instances: a job of a recently used component starts in an
//! instance made for it ahead of time, under its own input, limits,
//! deadline and cancel flag; components that run code at instantiation are
//! never warmed; `warm_instances: 0` turns it off.

use spillway_node::{Executor, InstanceStarts, JobControl};
use spillway_proto::{Failure, JobId, JobSpec};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use common::{executor, guest, spec};

fn run(exec: &Executor, spec: &JobSpec, input: &[u8]) -> Result<Vec<u8>, Failure> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let job = JobId(u128::from(NEXT.fetch_add(1, Ordering::Relaxed)));
    exec.run(
        job,
        spec,
        input.to_vec(),
        spec.deadline_ms,
        JobControl::detached(),
    )
    .map(|c| c.output)
}

/// Waits (up to 10 s) until the warmer has `n` instances ready.
fn until_ready(exec: &Executor, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while exec.instance_starts().ready < n {
        assert!(
            Instant::now() < deadline,
            "no warm instance within 10 s: {:?}",
            exec.instance_starts()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_job_starts_in_a_warm_instance_with_its_own_input() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir, 4);
    let echo = spec(exec.put_artifact(&guest("echo")).unwrap(), 5_000);
    // The first job instantiates its own and asks for the next one.
    assert_eq!(run(&exec, &echo, b"first").unwrap(), b"first");
    let starts = exec.instance_starts();
    assert_eq!((starts.warm, starts.cold), (0, 1));
    for (i, input) in [&b"second"[..], b"third", b""].into_iter().enumerate() {
        until_ready(&exec, 1);
        assert_eq!(run(&exec, &echo, input).unwrap(), input);
        let starts = exec.instance_starts();
        assert_eq!((starts.warm, starts.cold), (i as u64 + 1, 1), "{starts:?}");
    }
}

#[test]
fn deadline_and_cancel_reach_a_job_in_a_warm_instance() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(executor(&dir, 4));
    let forever = spec(exec.put_artifact(&guest("infinite_loop")).unwrap(), 100);
    assert_eq!(
        run(&exec, &forever, b"").unwrap_err(),
        Failure::DeadlineExceeded { deadline_ms: 100 }
    );
    until_ready(&exec, 1);
    // Its deadline counts from its own start, not the instance's.
    assert_eq!(
        run(&exec, &forever, b"").unwrap_err(),
        Failure::DeadlineExceeded { deadline_ms: 100 }
    );
    assert_eq!(exec.instance_starts().warm, 1);

    until_ready(&exec, 1);
    let cancel = Arc::new(AtomicBool::new(false));
    let control = JobControl {
        cancel: cancel.clone(),
        emit: Box::new(|_, _| {}),
        output: Default::default(),
    };
    let long = spec(forever.digest, 60_000);
    let runner = {
        let exec = exec.clone();
        std::thread::spawn(move || exec.run(JobId(99), &long, vec![], 60_000, control))
    };
    cancel.store(true, Ordering::Relaxed);
    assert_eq!(runner.join().unwrap().unwrap_err(), Failure::Cancelled);
    assert_eq!(exec.instance_starts().warm, 2);
}

#[test]
fn a_warm_instance_larger_than_a_jobs_memory_limit_is_not_used() {
    // Four pages (256 KiB) of memory from the start.
    const BIG: &str = r#"(component
      (core module $m
        (memory (export "memory") 4)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32) (result i32)
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.const 0))
          (i32.store (i32.const 24) (i32.const 0))
          (i32.const 16)))
      (core instance $i (instantiate $m))
      (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
        (canon lift (core func $i "run") (memory $i "memory") (realloc (func $i "cabi_realloc")))))"#;
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir, 4);
    let roomy = spec(exec.put_artifact(BIG.as_bytes()).unwrap(), 5_000);
    run(&exec, &roomy, b"").unwrap();
    until_ready(&exec, 1);
    let tight = JobSpec {
        memory_limit_bytes: 128 << 10,
        ..roomy.clone()
    };
    assert_eq!(
        run(&exec, &tight, b"").unwrap_err(),
        Failure::MemoryLimit {
            limit_bytes: 128 << 10
        }
    );
    let starts = exec.instance_starts();
    assert_eq!((starts.warm, starts.cold), (0, 2));
    // A job that fits still gets the next warm one.
    until_ready(&exec, 1);
    run(&exec, &roomy, b"").unwrap();
    assert_eq!(exec.instance_starts().warm, 1);
}

#[test]
fn components_that_run_code_at_instantiation_are_never_warmed() {
    // A start function counts to 3 in a global; `run` returns the count as
    // one byte: 3 whenever the instance was made for this job alone.
    const STARTS: &str = r#"(component
      (core module $m
        (memory (export "memory") 1)
        (global $n (mut i32) (i32.const 0))
        (func $start
          (global.set $n (i32.add (global.get $n) (i32.const 3))))
        (start $start)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32) (result i32)
          (i32.store8 (i32.const 32) (global.get $n))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.const 32))
          (i32.store (i32.const 24) (i32.const 1))
          (i32.const 16)))
      (core instance $i (instantiate $m))
      (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
        (canon lift (core func $i "run") (memory $i "memory") (realloc (func $i "cabi_realloc")))))"#;
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir, 4);
    let starts = spec(exec.put_artifact(STARTS.as_bytes()).unwrap(), 5_000);
    for _ in 0..5 {
        assert_eq!(run(&exec, &starts, b"").unwrap(), [3]);
        let s = exec.instance_starts();
        assert_eq!((s.warm, s.ready), (0, 0));
    }
    assert_eq!(exec.instance_starts().cold, 5);
}

#[test]
fn warm_instances_zero_turns_warming_off() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir, 0);
    let echo = spec(exec.put_artifact(&guest("echo")).unwrap(), 5_000);
    for _ in 0..5 {
        assert_eq!(run(&exec, &echo, b"x").unwrap(), b"x");
    }
    assert_eq!(
        exec.instance_starts(),
        InstanceStarts {
            warm: 0,
            cold: 5,
            ready: 0
        }
    );
}

/// Every job, warm or cold, finds its memory as the component declares it:
/// nothing an earlier job wrote, inside the pool's resident 64 KiB or past
/// them.
#[test]
fn a_warm_instance_is_one_no_job_ran_in() {
    const SNOOP: &str = r#"(component
      (core module $m
        (memory (export "memory") 4)
        (global $calls (mut i32) (i32.const 0))
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32) (result i32)
          ;; Return what is at 60000 and 200000 and how often `run` ran in
          ;; this instance before, then leave marks for a later job.
          (i32.store (i32.const 32) (i32.load (i32.const 60000)))
          (i32.store (i32.const 36) (i32.load (i32.const 200000)))
          (i32.store (i32.const 40) (global.get $calls))
          (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
          (i32.store (i32.const 60000) (i32.const 0x5eed))
          (i32.store (i32.const 200000) (i32.const 0x5eed))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.const 32))
          (i32.store (i32.const 24) (i32.const 12))
          (i32.const 16)))
      (core instance $i (instantiate $m))
      (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
        (canon lift (core func $i "run") (memory $i "memory") (realloc (func $i "cabi_realloc")))))"#;
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir, 4);
    let snoop = spec(exec.put_artifact(SNOOP.as_bytes()).unwrap(), 5_000);
    for i in 0..20 {
        if i > 0 {
            until_ready(&exec, 1);
        }
        let out = run(&exec, &snoop, b"").unwrap();
        assert_eq!(out, [0; 12], "job {i} saw an earlier job's instance");
    }
    assert_eq!(exec.instance_starts().warm, 19);
}

/// Jobs of three components from four threads at once, with room for two
/// warm instances: the components take turns evicting each other's, and
/// every job still gets its own answer.
#[test]
fn concurrent_jobs_of_several_components_share_a_small_budget() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(common::executor(&dir, 2));
    let specs: Arc<Vec<(JobSpec, &'static str)>> = Arc::new(
        [("echo", "echo"), ("uppercase", "upper"), ("noop", "noop")]
            .into_iter()
            .map(|(name, kind)| (spec(exec.put_artifact(&guest(name)).unwrap(), 5_000), kind))
            .collect(),
    );
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (exec, specs) = (exec.clone(), specs.clone());
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    let (spec, kind) = &specs[((t + i) % 3) as usize];
                    let input = format!("thread {t} job {i}");
                    let out = run(&exec, spec, input.as_bytes()).unwrap();
                    let want = match *kind {
                        "echo" => input.clone().into_bytes(),
                        "upper" => input.to_uppercase().into_bytes(),
                        _ => Vec::new(),
                    };
                    assert_eq!(out, want, "{kind} for {input}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let starts = exec.instance_starts();
    assert_eq!(starts.warm + starts.cold, 400);
    assert!(starts.ready <= 2, "{starts:?}");
}
