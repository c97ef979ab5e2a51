//! Placement follows the weights (issue 17): three hosts on one GPU
//! machine (each node with its own weights budget on the same GPU). Host 3
//! has the weights loaded on its GPU, host 2 only on its disk; with host
//! 1's one slot busy, its jobs burst to host 3, whose GPU holds them, and
//! host 2's GPU never loads them. Skips, saying so, without a GPU (CI);
//! runs on the device.

use crate::common;

use common::hosts::*;
use serde_json::{Value, json};
use std::time::Duration;

/// A safetensors file of one f32 tensor `proj` of `k`×`n`, and its values.
fn weights(k: usize, n: usize) -> (Vec<u8>, Vec<f32>) {
    let values: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 64.0).collect();
    let file = common::safetensors(&[(
        "proj",
        safetensors::Dtype::F32,
        &[k, n],
        common::f32_bytes(&values),
    )]);
    (file, values)
}

/// `weights_gemm`'s input for weights `lm`, tensor `proj`, and x.
fn input(n: usize, x: &[f32]) -> Vec<u8> {
    let mut b = Vec::new();
    for s in ["lm", "proj"] {
        b.extend((s.len() as u32).to_le_bytes());
        b.extend(s.as_bytes());
    }
    b.extend((n as u32).to_le_bytes());
    b.extend((x.len() as u32).to_le_bytes());
    b.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    b
}

/// Status, the host that ran it, the receipt's weights loaded, the body.
async fn invoke(
    api: &Api,
    host: &Host,
    name: &str,
    body: Vec<u8>,
    local: bool,
) -> (u16, String, u64, Vec<u8>) {
    let mut r = api
        .http
        .post(format!("{}/v1/functions/{name}/invoke", host.endpoint))
        .bearer_auth(&api.token)
        .body(body)
        .timeout(Duration::from_secs(120));
    if local {
        r = r.header("spillway-placement", "local");
    }
    let r = r.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (node, loaded) = (
        header("spillway-node"),
        header("spillway-weights-loaded-bytes"),
    );
    let loaded = loaded.parse().unwrap_or(u64::MAX);
    (
        r.status().as_u16(),
        node,
        loaded,
        r.bytes().await.unwrap().to_vec(),
    )
}

fn gpu_weights(v: &Value, id: &str) -> usize {
    member(v, id)["node"]["weights_on_gpus"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_goes_to_the_peer_whose_gpu_holds_the_weights() {
    let root = tempfile::tempdir().unwrap();
    let flags = [
        "--slots",
        "1",
        "--gossip-ms",
        "100",
        "--weights-budget-mib",
        "512",
    ];
    let h1 = Host::start(
        &root.path().join("h1"),
        &[&["--init"][..], &flags].concat(),
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
    let mut hosts = vec![h1];
    for i in 2..=3 {
        let ticket = api.ticket(&hosts[0], 600).await;
        let dir = root.path().join(format!("h{i}"));
        hosts.push(Host::start(&dir, &flags, Some(&ticket)).unwrap());
    }
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    api.wait(h1, "three active, healthy members", |v| {
        members(v)
            .iter()
            .filter(|m| m["state"] == "active" && m["healthy"] == true)
            .count()
            == 3
    })
    .await;

    // 64 MiB of weights: 16 ms to load at the scheduler's assumed rate.
    let (k, n) = (4096, 4096);
    let (file, w) = weights(k, n);
    let r = api.upload(h1, "lm", file).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    api.put_artifact(h1, &api.token, "weights_gemm").await;
    api.put_artifact(h1, &api.token, "infinite_loop").await;
    for (name, accelerator) in [("g", "required"), ("g-cpu", "none")] {
        let spec = json!({"name": name, "artifact": "weights_gemm", "weights": ["lm"],
                          "accelerator": accelerator, "deadline_ms": 60_000,
                          "memory_limit_bytes": 64 << 20});
        api.create_function(h1, &api.token, &spec).await;
    }
    let busy = json!({"name": "busy", "artifact": "infinite_loop", "deadline_ms": 30_000});
    api.create_function(h1, &api.token, &busy).await;

    let x: Vec<f32> = (0..k).map(|i| (i % 5) as f32 - 2.0).collect();
    let expected: Vec<f32> = (0..n)
        .map(|j| (0..k).map(|i| x[i] * w[i * n + j]).sum())
        .collect();
    let check = |body: &[u8]| {
        let got: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), n);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-3 * (1.0 + e.abs()), "{g} vs {e}");
        }
    };
    // Host 3 loads the weights onto its GPU; host 2 only fetches them to
    // its disk (a CPU job reads them where they lie).
    let (status, node, loaded, body) = invoke(&api, h3, "g", input(n, &x), true).await;
    assert_eq!((status, node.as_str()), (200, "n3"));
    assert_eq!(loaded, (k * n * 4) as u64, "the first job there loads them");
    check(&body);
    let (status, node, loaded, body) = invoke(&api, h2, "g-cpu", input(n, &x), true).await;
    assert_eq!((status, node.as_str(), loaded), (200, "n2", 0));
    check(&body);
    api.wait(h1, "the weights on host 3's GPU, not host 2's", |v| {
        gpu_weights(v, "n3") == 1 && gpu_weights(v, "n2") == 0
    })
    .await;
    // Host 1 has heard it too, in host 3's load gossip.
    api.wait(h1, "host 1 hearing host 3's weights", |v| {
        member(v, "n3")["heard"]["weights_loaded"] == 1
    })
    .await;

    // Host 1's one slot busy for the rest of the test.
    let hog = {
        let (http, token, endpoint) = (api.http.clone(), api.token.clone(), h1.endpoint.clone());
        tokio::spawn(async move {
            let _ = http
                .post(format!("{endpoint}/v1/functions/busy/invoke"))
                .bearer_auth(token)
                .header("spillway-placement", "local")
                .timeout(Duration::from_secs(60))
                .send()
                .await;
        })
    };
    api.wait(h1, "host 1's slot taken", |v| {
        member(v, "n1")["running"] == 1
    })
    .await;

    // Every job sent to host 1 bursts to host 3, where the GPU holds the
    // weights, rather than to host 2, which would have to load them.
    for _ in 0..8 {
        let (status, node, loaded, body) = invoke(&api, h1, "g", input(n, &x), false).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            node, "n3",
            "the burst went to the peer without the weights loaded"
        );
        assert_eq!(loaded, 0, "resident there: nothing loaded");
        check(&body);
    }
    let v = api.cluster(h1).await;
    assert_eq!(gpu_weights(&v, "n2"), 0, "host 2 never loaded them: {v:#}");
    hog.abort();
}
