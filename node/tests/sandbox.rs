//! The closed sandbox and the one memory limit, with WAT guests that do
//! exactly one thing each (`examples/guests/*.wat`).

use crate::common;

use common::{guest, spec};
use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Failure, JobId};

fn executor(dir: &tempfile::TempDir) -> Executor {
    Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 2,
        max_memory_bytes: 64 << 20,
        ..NodeConfig::default()
    })
    .unwrap()
}

fn run(ex: &Executor, name: &str, input: &[u8], memory: u64) -> Result<Vec<u8>, Failure> {
    let digest = ex.put_artifact(&guest(name)).unwrap();
    let mut spec = spec(digest, 5_000);
    spec.memory_limit_bytes = memory;
    ex.run(
        JobId(3),
        &spec,
        input.to_vec(),
        5_000,
        JobControl::detached(),
    )
    .map(|c| c.output)
}

#[test]
fn exit_with_code_ends_the_job_with_that_code_and_zero_is_a_plain_end() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(&dir);
    assert_eq!(
        run(&ex, "exit_code", b"", 16 << 20),
        Err(Failure::GuestExit { code: 3 })
    );
    assert_eq!(
        run(&ex, "exit_code", &[42], 16 << 20),
        Err(Failure::GuestExit { code: 42 })
    );
    assert_eq!(run(&ex, "exit_code", &[0], 16 << 20), Ok(Vec::new()));
    let failure = Failure::GuestExit { code: 3 };
    assert_eq!(failure.code(), "guest_exit");
    assert!(failure.may_have_run());
}

#[test]
fn a_component_importing_what_the_node_lacks_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(&dir);
    let refused = ex.put_artifact(&guest("foreign_import")).unwrap_err();
    assert_eq!(
        refused,
        Failure::UnsupportedImport {
            import: "wasi:keyvalue/store@0.2.0-draft".into()
        }
    );
    assert_eq!(refused.code(), "unsupported_import");
    assert!(!refused.may_have_run());
    assert!(ex.resident().is_empty(), "nothing was stored");
    assert!(
        std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .next()
            .is_none(),
        "no compiled code kept for it"
    );
}

#[test]
fn one_memory_limit_covers_every_linear_memory_and_the_gpu_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(&dir);
    // 16 MiB: two memories of 4 MiB leave room for eight 1 MiB buffers,
    // then `create` answers out-of-memory (code 0).
    assert_eq!(run(&ex, "two_memories", &[0], 16 << 20), Ok(vec![8, 0]));
    assert_eq!(run(&ex, "two_memories", &[0], 12 << 20), Ok(vec![4, 0]));
    // Buffers held, a memory growth past the limit ends the job.
    assert_eq!(
        run(&ex, "two_memories", &[1], 16 << 20),
        Err(Failure::MemoryLimit {
            limit_bytes: 16 << 20
        })
    );
    // Less than the two memories' 8 MiB: not even instantiated.
    assert_eq!(
        run(&ex, "two_memories", &[0], 6 << 20),
        Err(Failure::MemoryLimit {
            limit_bytes: 6 << 20
        })
    );
}
