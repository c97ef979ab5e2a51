//! Tenants' memory pools on a full GPU: the memory other tenants' pools
//! keep idle goes back to the driver when a tenant's allocation finds the
//! device full, and the allocation succeeds. Its own binary: it fills the
//! GPU, which would starve tests running beside it. Skips, saying so,
//! without a GPU.

use spillway_node::{Executor, JobControl, NodeConfig};
use spillway_proto::{Accelerator, Failure, JobId, JobSpec, TenantId};

const GPU_HOG: &[u8] = include_bytes!("../../examples/guests/gpu_hog.wat");
const GIB: u64 = 1 << 30;

/// `gpu_hog` for `tenant`, holding `count` buffers of 1 GiB: the count
/// made, or the failure.
fn hog(exec: &Executor, tenant: &str, count: u32) -> Result<u32, Failure> {
    let digest = exec.put_artifact(GPU_HOG).unwrap();
    let spec = JobSpec {
        tenant: TenantId(tenant.into()),
        function: "gpu_hog".into(),
        digest,
        accelerator: Accelerator::Required,
        deadline_ms: 60_000,
        memory_limit_bytes: 4 * GIB,
        idempotent: false,
        placement: Default::default(),
        tenant_gpu_bytes: None,
        kernel_packs: Vec::new(),
        weights: Vec::new(),
    };
    let input = [count, (GIB / 4) as u32]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let done = exec.run(JobId(1), &spec, input, 60_000, JobControl::detached())?;
    Ok(u32::from_le_bytes(done.output[..4].try_into().unwrap()))
}

#[test]
fn a_full_gpu_takes_back_what_other_tenants_pools_keep_idle() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(NodeConfig {
        dir: dir.path().to_owned(),
        slots: 1,
        // A job holds at most its linear memory's 4 GiB reservation.
        max_memory_bytes: 4 * GIB,
        ..NodeConfig::default()
    })
    .unwrap();
    let Some(gpu) = exec.gpu_memory().into_iter().next() else {
        eprintln!("skipped a_full_gpu_takes_back_what_other_tenants_pools_keep_idle: no GPU");
        return;
    };
    // Everything but 10 GiB of the GPU taken by another user of it.
    let ctx = cudarc::driver::CudaContext::new(gpu.gpu as usize).unwrap();
    let (free, _) = ctx.mem_get_info().unwrap();
    let stream = ctx.default_stream();
    let filler = stream.alloc_zeros::<u8>(free - 10 * GIB as usize).unwrap();
    stream.synchronize().unwrap();
    // Three tenants' jobs take 3 GiB each and end: their pools keep it,
    // idle, for their next jobs.
    for tenant in ["keeper-a", "keeper-b", "keeper-c"] {
        assert_eq!(hog(&exec, tenant, 3).unwrap(), 3);
    }
    let now = exec.gpu_memory().into_iter().next().unwrap();
    let idle: u64 = now
        .tenants
        .iter()
        .map(|t| t.reserved_bytes - t.used_bytes)
        .sum();
    let free = now.total_bytes - now.used_bytes;
    eprintln!(
        "GPU {}: {} MiB free, {} MiB idle in three pools",
        now.gpu,
        free >> 20,
        idle >> 20
    );
    assert!(idle >= 9 * GIB && free < 3 * GIB, "{now:?}");
    // Another tenant asks for more than the device has free: it is served
    // from what the idle pools hand back.
    assert_eq!(hog(&exec, "asker", 3).unwrap(), 3);
    let after = exec.gpu_memory().into_iter().next().unwrap();
    let kept: u64 = after
        .tenants
        .iter()
        .filter(|t| t.tenant.0.starts_with("keeper"))
        .map(|t| t.reserved_bytes)
        .sum();
    assert!(
        kept < 9 * GIB,
        "the keepers' pools were not trimmed: {after:?}"
    );
    drop(filler);
}
