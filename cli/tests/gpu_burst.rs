//! Two hosts on a machine with two GPUs, each node pinned to its own GPU:
//! GPU jobs sent to host 1 (one slot) burst to host 2 and run on host 2's
//! GPU, with results matching the CPU reference. Skips, saying so, on a
//! machine with fewer than two GPUs (CI has none; run it on the device's
//! `nvidia-h200-x2`).

use crate::common;

use common::hosts::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The gemm guest's input for an n×n×n product, and the CPU reference.
fn gemm_case(n: usize) -> (Vec<u8>, Vec<f32>) {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let a: Vec<f32> = (0..n * n).map(|_| next()).collect();
    let b: Vec<f32> = (0..n * n).map(|_| next()).collect();
    let mut c = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
        }
    }
    let dims = [n as u32; 3];
    let input = dims
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(a.iter().chain(&b).flat_map(|v| v.to_le_bytes()))
        .collect();
    (input, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_jobs_burst_to_the_second_hosts_gpu() {
    let root = tempfile::tempdir().unwrap();
    let flags = |gpu: &'static str| ["--slots", "1", "--gpus", gpu, "--gossip-ms", "100"];
    let h1 = Host::start(
        &root.path().join("h1"),
        &[&["--init"][..], &flags("0")].concat(),
        None,
    )
    .unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: h1.token.clone().unwrap(),
    };
    if !api.has_cuda(&h1, "n1").await {
        eprintln!("skipped: no CUDA driver or GPU on this host");
        return;
    }
    let ticket = api.ticket(&h1, 600).await;
    let h2 = Host::start(&root.path().join("h2"), &flags("1"), Some(&ticket)).unwrap();
    api.wait(&h1, "two active members", |v| {
        members(v).iter().filter(|m| m["state"] == "active").count() == 2
    })
    .await;
    if !api.has_cuda(&h1, "n2").await {
        eprintln!("skipped: this machine has one GPU; the two-host GPU burst needs two");
        return;
    }

    let spec = serde_json::json!({"name": "gemm", "artifact": "gemm", "accelerator": "required",
                                  "deadline_ms": 60_000, "memory_limit_bytes": 64 << 20});
    api.publish(&h1, &api.token, "gemm", spec).await;

    let (input, expected) = gemm_case(128);
    let jobs = (0..32).map(|_| {
        let (http, token, endpoint, input) = (
            api.http.clone(),
            api.token.clone(),
            h1.endpoint.clone(),
            input.clone(),
        );
        async move {
            let r = http
                .post(format!("{endpoint}/v1/functions/gemm/invoke"))
                .bearer_auth(token)
                .body(input)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let receipt = (
                r.status().as_u16(),
                h("spillway-node"),
                h("spillway-burst"),
                h("spillway-backend"),
                h("spillway-gpu"),
            );
            (receipt, r.bytes().await.unwrap())
        }
    });
    let answers = futures::future::join_all(jobs).await;
    let mut per_host: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((status, node, burst, backend, gpu), body) in &answers {
        assert_eq!(*status, 200, "{node} {body:?}");
        assert_eq!(backend, "cuda");
        assert_eq!(burst == "true", node == "n2");
        let got: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-3 * (1.0 + e.abs()), "{g} vs {e}");
        }
        *per_host.entry((node.clone(), gpu.clone())).or_default() += 1;
    }
    eprintln!("GPU jobs per (host, gpu): {per_host:?}");
    assert!(
        per_host.keys().any(|(n, _)| n == "n2"),
        "some jobs burst to host 2: {per_host:?}"
    );
    // Each host ran on its own GPU.
    for (node, gpu) in per_host.keys() {
        let want = if node == "n1" { "0" } else { "1" };
        assert_eq!(gpu, want, "{per_host:?}");
    }
    // Each node's own count agrees with the receipts.
    let ran = |n: &str| {
        per_host
            .iter()
            .filter(|((h, _), _)| h == n)
            .map(|(_, k)| *k)
            .sum::<u64>()
    };
    let (n1, n2) = (ran("n1"), ran("n2"));
    api.wait(&h1, "the nodes' completed counts", |v: &Value| {
        member(v, "n1")["completed"].as_u64() == Some(n1)
            && member(v, "n2")["completed"].as_u64() == Some(n2)
    })
    .await;
    drop(h2);
}
