//! GPU faults over HTTP: a faulting job ends with 502 `device_fault`, a
//! kernel past its deadline with 504 `deadline_exceeded` and
//! `node_restarted`; either way the node exits and is restarted by its
//! sidecar, and the next GPU job succeeds. Skips (saying so) on a host
//! without a GPU.

use crate::common;

use common::{Cluster, expect_error};

/// A one-host cluster with the fault-test kernels, its node's pid and the
/// gemm guest deployed; `None` (saying so) without a GPU.
async fn gpu_cluster() -> Option<(Cluster, u64)> {
    let c = Cluster::start_with(1, 4, &["--test-kernels"]);
    let (member, cuda) = c.wait_node_backends().await;
    if !cuda {
        eprintln!("skipped: no CUDA driver or GPU on this host");
        return None;
    }
    let pid = member["node"]["pid"].as_u64().unwrap();
    c.deploy("gemm", "gemm", 30_000).await;
    Some((c, pid))
}

/// After its node restarted (it had pid `old_pid`), a GPU job runs on CUDA.
async fn next_gpu_job_succeeds(c: &Cluster, old_pid: u64) {
    c.wait_for_restarted_node(old_pid).await;
    let r = c.invoke("gemm", common::gemm_1x1(2.0, 3.0)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["spillway-backend"], "cuda");
    assert_eq!(r.bytes().await.unwrap().as_ref(), 6f32.to_le_bytes());
}

#[tokio::test]
async fn a_gpu_fault_restarts_the_node_and_the_next_gpu_job_succeeds() {
    let Some((c, pid)) = gpu_cluster().await else {
        return;
    };
    c.deploy("fault", "gpu_fault", 30_000).await;
    let e = expect_error(c.invoke("fault", vec![]).await, 502, "device_fault").await;
    eprintln!("fault: {e}");
    next_gpu_job_succeeds(&c, pid).await;
}

/// A kernel that runs past its job's deadline (the test-only `test_spin`)
/// cannot be stopped inside the node: its GPU watchdog answers the job 504
/// `deadline_exceeded` with `node_restarted`, the node exits and is
/// restarted, and the next GPU job succeeds.
#[tokio::test]
async fn a_kernel_past_its_deadline_restarts_the_node_and_says_so() {
    let Some((c, pid)) = gpu_cluster().await else {
        return;
    };
    c.deploy("spin", "gpu_spin", 300).await;
    let began = std::time::Instant::now();
    let r = c.invoke("spin", 60_000u32.to_le_bytes().to_vec()).await;
    let e = expect_error(r, 504, "deadline_exceeded").await;
    eprintln!("answered after {:?}: {e}", began.elapsed());
    assert_eq!(e["node_restarted"], true, "{e}");
    next_gpu_job_succeeds(&c, pid).await;
}
