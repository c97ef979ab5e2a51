//! What a CUDA context of its own keeps out (issue 21, item 3): a kernel
//! pack can read any address of the context it runs in, so a tenant whose
//! jobs share a node process (one context per GPU) with another tenant's
//! can read that tenant's buffers, given their address; a tenant whose
//! jobs run in another process (an executor kept for it: `spillway host
//! --executors 0,0:TENANT`) cannot.
//!
//! Tenant `owner` holds a buffer of four known values in a job of this
//! process; `pack_peek` gives away its device address. Then:
//! - tenant `prober`, in this process (the same context), reads the four
//!   values: the risk `docs/security.md` states;
//! - `prober`, in a child process (this test binary again, its own
//!   executor and context on the same GPU), does not: the address is not
//!   mapped in its context, and its kernel faults (`device_fault`). (The
//!   owner pads 2 GiB before its buffer: CUDA hands every process the same
//!   first addresses, so without it the child would read its own fresh
//!   memory there, zeros, which is no more the owner's.)
//! - the owner's context, which the child's fault never touched, still
//!   holds the values: the prober in this process reads them again.
//!
//! Its own test binary (the child's fault poisons the child's context
//! only, but a test of this binary may be the child). Skips, saying so,
//! without a GPU.

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, Failure, JobId, JobSpec, NamedArtifact, TenantId};
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

/// The environment variable that makes this binary the child prober.
const CHILD: &str = "SPILLWAY_PEEK_CHILD_ADDRESS";

/// The owner's values (distinct from zeros and from what a fresh buffer
/// holds).
const SECRET: [f32; 4] = [1234.5, -6.25, 7.0e7, 0.015625];

/// The `peek` pack: `address` writes a buffer's device address into
/// another; `peek` copies 4 f32 from a raw address.
const PEEK_PACK: &str = r#"{
  "format": "spillway-kernel-pack/1",
  "cuda": "extern \"C\" __global__ void address(const float* x, float* out, unsigned n) {\n  if (blockIdx.x * blockDim.x + threadIdx.x == 0) {\n    unsigned long long p = (unsigned long long)x;\n    ((unsigned*)out)[0] = (unsigned)p;\n    ((unsigned*)out)[1] = (unsigned)(p >> 32);\n  }\n}\nextern \"C\" __global__ void peek(float* out, unsigned lo, unsigned hi, unsigned n) {\n  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n  const float* p = (const float*)(((unsigned long long)hi << 32) | lo);\n  if (i < n) out[i] = p[i];\n}\n",
  "kernels": [
    {"name": "address", "params": [
      {"name": "x", "type": "buffer", "elements": "n", "access": "read"},
      {"name": "out", "type": "buffer", "elements": "n"},
      {"name": "n", "type": "u32"}], "threads": "n", "block": 32},
    {"name": "peek", "params": [
      {"name": "out", "type": "buffer", "elements": "n"},
      {"name": "lo", "type": "u32"},
      {"name": "hi", "type": "u32"},
      {"name": "n", "type": "u32"}], "threads": "n", "block": 32}
  ]
}"#;

/// The owner's padding: 2 GiB of f32 made before its buffer, so the
/// buffer's address lies past what a fresh process's few small
/// allocations take (CUDA hands each process the same addresses first).
const PADDING: u32 = 1 << 29;

fn executor(dir: &tempfile::TempDir) -> Executor {
    Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 2,
        max_memory_bytes: 3 << 30,
        kernel_compiler: common::kernel_compiler(),
        ..NodeConfig::default()
    })
    .unwrap()
}

/// `tenant`'s job of `pack_peek` with the `peek` pack.
fn spec(exec: &Executor, tenant: &str, deadline_ms: u64) -> JobSpec {
    JobSpec {
        tenant: TenantId(tenant.to_owned()),
        function: "peek".into(),
        digest: exec.put_artifact(&common::guest("pack_peek")).unwrap(),
        accelerator: Accelerator::Required,
        deadline_ms,
        memory_limit_bytes: 3 << 30,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        weights: Vec::new(),
        kernel_packs: vec![NamedArtifact {
            name: "peek".into(),
            digest: exec.put_artifact(PEEK_PACK.as_bytes()).unwrap(),
        }],
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `prober` reads 4 f32 at `address` with a job of `exec`.
fn peek(exec: &Executor, address: u64) -> Result<Vec<u8>, Failure> {
    let mut input = vec![1, 0, 0, 0];
    input.extend_from_slice(&address.to_le_bytes());
    let spec = spec(exec, "prober", 30_000);
    exec.run(JobId(2), &spec, input, 30_000, JobControl::detached())
        .map(|done| done.output)
}

/// The child: probes the address it was given from a process of its own,
/// and prints what came of it for its parent.
#[test]
fn child_prober() {
    let Ok(address) = std::env::var(CHILD) else {
        return; // only as the child
    };
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir);
    let address: u64 = address.parse().unwrap();
    match peek(&exec, address) {
        Ok(bytes) => println!("PEEK read {:?}", floats(&bytes)),
        Err(failure) => println!("PEEK failed {}", failure.code()),
    }
}

#[test]
fn a_pack_reads_another_tenants_buffer_in_its_context_and_not_from_another_process() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exec = std::sync::Arc::new(executor(&dir));
    if exec.capabilities().gpus.is_empty() {
        eprintln!("skipped: no CUDA driver or GPU on this machine");
        return;
    }
    // The owner's job: holds SECRET on the GPU and says where.
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control = JobControl {
        cancel: cancel.clone(),
        emit: Box::new(move |_, chunk: Vec<u8>| {
            let _ = address_tx.send(u64::from_le_bytes(chunk[..8].try_into().unwrap()));
        }),
        output: std::sync::Arc::default(),
    };
    let mut input = vec![0, 0, 0, 0];
    input.extend(SECRET.iter().flat_map(|v| v.to_le_bytes()));
    input.extend(PADDING.to_le_bytes());
    let owner = {
        let exec = exec.clone();
        let spec = spec(&exec, "owner", 60_000);
        std::thread::spawn(move || exec.run(JobId(1), &spec, input, 60_000, control))
    };
    let address = address_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the owner's job gave its buffer's address");
    eprintln!("the owner's buffer is at {address:#x}");

    // Same process, same context: the prober reads the owner's values.
    let read = peek(&exec, address).expect("a read in the same context");
    assert_eq!(
        floats(&read),
        SECRET,
        "a shared context is one address space"
    );

    // Another process, its own context on the same GPU: it does not.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_prober", "--nocapture", "--test-threads=1"])
        .env(CHILD, address.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let said = stdout
        .lines()
        .find_map(|l| l.find("PEEK ").map(|at| &l[at..]))
        .unwrap_or_else(|| {
            panic!(
                "the child said nothing: {stdout}\n{}",
                String::from_utf8_lossy(&child.stderr)
            )
        });
    eprintln!("the child prober: {said}");
    let secret_text = format!("{:?}", SECRET.to_vec());
    assert!(
        !said.contains(&secret_text),
        "another process read the owner's values: {said}"
    );
    assert_eq!(said, "PEEK failed device_fault");

    // The owner's context is untouched by the child's fault: the values
    // read again here, and the owner's job ends with them.
    let again = peek(&exec, address).expect("a read in the same context, after");
    assert_eq!(floats(&again), SECRET);
    cancel.store(true, Ordering::Relaxed);
    let ended = owner.join().unwrap();
    assert_eq!(
        ended.unwrap_err(),
        Failure::Cancelled,
        "cancelled while holding"
    );
}
