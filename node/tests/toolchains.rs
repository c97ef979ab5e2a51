//! Components from real toolchains (componentize-py, componentize-js),
//! built from `examples/guests/{python,javascript}` by
//! `examples/guests/build.sh` (the test command runs it first): they load,
//! run on the CPU backend, and meet the closed sandbox.

use crate::common;

use common::spec;
use serde_json::Value;
use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Failure, JobId};
use std::time::{Duration, Instant};

/// A component `examples/guests/build.sh` built into `target/guests`.
fn built(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../target/guests/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}: build the example guests first (examples/guests/build.sh; ./scripts/test runs it)")
    })
}

fn executor(dir: &tempfile::TempDir) -> Executor {
    Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 2,
        max_memory_bytes: 256 << 20,
        ..NodeConfig::default()
    })
    .unwrap()
}

fn run(ex: &Executor, wasm: &[u8], input: &str, deadline_ms: u64) -> Result<Value, Failure> {
    let digest = ex.put_artifact(wasm).unwrap();
    let mut spec = spec(digest, deadline_ms);
    spec.memory_limit_bytes = 256 << 20;
    let done = ex.run(
        JobId(7),
        &spec,
        input.as_bytes().to_vec(),
        deadline_ms,
        JobControl::detached(),
    )?;
    Ok(serde_json::from_slice(&done.output).expect("the guest answers JSON"))
}

#[test]
fn python_and_javascript_guests_multiply_on_the_cpu_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(&dir);
    for guest in ["matmul-py", "matmul-js"] {
        let started = Instant::now();
        let out = run(&ex, &built(guest), "", 30_000).unwrap();
        eprintln!(
            "{guest}: {out} in {:?} (compile included)",
            started.elapsed()
        );
        assert_eq!(numbers(&out["c"]), [58.0, 64.0, 139.0, 154.0], "{guest}");
        assert_eq!(out["backend"], "cpu");
        let input = r#"{"m":1,"n":1,"k":2,"a":[2,3],"b":[4,5]}"#;
        let out = run(&ex, &built(guest), input, 30_000).unwrap();
        assert_eq!(numbers(&out["c"]), [23.0], "{guest}");
        match run(&ex, &built(guest), "{not json", 30_000) {
            Err(Failure::GuestError { message }) => assert!(message.contains("JSON"), "{message}"),
            other => panic!("{guest}: {other:?}"),
        }
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn probe(ex: &Executor, word: &str) -> Vec<Value> {
    let out = run(ex, &built("probe-py"), word, 30_000).unwrap();
    out.as_array().unwrap().clone()
}

#[test]
fn the_sandbox_gives_no_files_no_network_and_no_environment() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(&dir);
    for report in probe(&ex, "file").into_iter().chain(probe(&ex, "socket")) {
        assert_eq!(report["ok"], false, "{report}");
        eprintln!("{report}");
    }
    let env = probe(&ex, "env");
    assert_eq!(env[0]["result"], serde_json::json!({}), "{env:?}");
    assert_eq!(env[2]["result"], Value::Null, "no PATH: {env:?}");
}

#[test]
fn exit_and_a_long_sleep_end_the_job_typed() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(&dir);
    let wasm = built("probe-py");
    match run(&ex, &wasm, "exit 3", 30_000) {
        Err(Failure::GuestExit { code }) => eprintln!("sys.exit(3) from Python: code {code}"),
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    match run(&ex, &wasm, "sleep 60", 2_000) {
        Err(Failure::DeadlineExceeded { deadline_ms: 2_000 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
