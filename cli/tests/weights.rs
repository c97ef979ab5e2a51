//! Weights artifacts through the whole path (issue 17, first step): a
//! safetensors file uploaded streamed and checked, a function that names
//! it, a Python guest that opens a tensor as a read-only resident buffer
//! and multiplies by it, here and on a peer that fetched the weights; what
//! is malformed, another tenant's, or a write is refused.

use crate::common;

use common::hosts::{self, Api, Host};
use common::{built, f32_bytes, safetensors};
use safetensors::Dtype;
use serde_json::{Value, json};
use std::time::Duration;

/// `file` with `from` replaced by `to` (as long) in its header.
fn patched(file: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut file = file.to_vec();
    let at = file
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("in the header");
    file[at..at + to.len()].copy_from_slice(to.as_bytes());
    file
}

/// `x · W` for a row vector `x` and a row-major `W` of `k` rows.
fn row_times(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let n = w.len() / k;
    (0..n)
        .map(|j| (0..k).map(|i| x[i] * w[i * n + j]).sum())
        .collect()
}

async fn invoke(
    api: &Api,
    host: &Host,
    token: &str,
    name: &str,
    input: Value,
) -> (u16, String, Value) {
    let r = api
        .http
        .post(format!("{}/v1/functions/{name}/invoke", host.endpoint))
        .bearer_auth(token)
        .header("spillway-placement", "local")
        .body(input.to_string())
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let node = header("spillway-node");
    if status == 200 {
        assert_eq!(header("spillway-weights-loaded-bytes"), "0");
    }
    let text = r.text().await.unwrap();
    (
        status,
        node,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_checked_named_by_functions_read_in_place_and_fetched_by_a_peer() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&["--slots", "1"], &["--slots", "1"]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);

    // A tiny model's weights: a 3×2 f32 projection and a bf16 norm.
    let w: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let norm_bits: Vec<u8> = [0x3f80u16, 0x4000, 0xc040]
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
    let file = safetensors(&[
        ("proj", Dtype::F32, &[3, 2], f32_bytes(&w)),
        ("norm", Dtype::BF16, &[3], norm_bits),
    ]);
    let r = api.upload(h1, "tiny", file.clone()).await;
    let text = r.text().await.unwrap();
    let stored: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(stored["kind"], "weights", "{stored}");
    assert_eq!(stored["size"], file.len(), "{stored}");

    // Malformed weights are refused with what is wrong, and never stored.
    for (bad, says) in [
        (file[..file.len() - 3].to_vec(), "not fully covered"),
        (
            safetensors(&[("ids", Dtype::I64, &[1], vec![0; 8])]),
            "tensor `ids` is I64",
        ),
        // A shape the bytes do not hold (a writer would not make it).
        (
            patched(&file, "[3,2]", "[4,2]"),
            "not a valid safetensors file",
        ),
    ] {
        let r = api.upload(h1, "bad", bad).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 422, "{v}");
        assert_eq!(v["error"]["code"], "invalid_artifact", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }

    // A function names its weights; only weights may be named so.
    let r = api.upload(h1, "tensor-py", built("tensor-py")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let wrong = json!({"name": "f", "artifact": "tensor-py", "weights": ["tensor-py"]});
    let (status, v) = api.post(h1, &api.token, "/v1/functions", &wrong).await;
    assert_eq!(status, 422);
    assert_eq!(v["error"]["code"], "wrong_artifact_kind", "{v}");
    api.create_function(
        h1,
        &api.token,
        &json!({"name": "tensor", "artifact": "tensor-py", "weights": ["tiny"], "deadline_ms": 60_000}),
    )
    .await;

    // Here (h1 received the upload), then on h2, which fetches the weights
    // from h1 before its first job: the same answers, computed from the
    // tensor where it lies.
    let x = [0.5f32, -1.0, 2.0];
    let expected = row_times(&x, &w, 3);
    for (host, node) in [(h1, "n1"), (h2, "n2"), (h2, "n2")] {
        let input = json!({"weights": "tiny", "tensor": "proj", "x": x, "write": true});
        let (status, ran_on, v) = invoke(&api, host, &api.token, "tensor", input).await;
        assert_eq!((status, ran_on.as_str()), (200, node), "{v}");
        assert_eq!(v["shape"], json!([3, 2]), "{v}");
        assert_eq!(v["dtype"], "f32");
        assert_eq!(v["writable"], false);
        assert_eq!(v["values"], json!(w), "{v}");
        assert_eq!(v["xw"], json!(expected), "{v}");
        // A write into the tensor is refused, and changes nothing.
        assert_eq!(v["write"]["refused"], true, "{v}");
        assert_eq!(v["write"]["code"], "invalid_argument", "{v}");
        assert!(
            v["write"]["message"]
                .as_str()
                .unwrap()
                .contains("read-only"),
            "{v}"
        );
        let input = json!({"weights": "tiny", "tensor": "norm"});
        let (status, _, v) = invoke(&api, host, &api.token, "tensor", input).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (&v["dtype"], &v["values"]),
            (&json!("bf16"), &json!([1.0, 2.0, -3.0]))
        );
    }
    let fetched = api
        .wait(h1, "h2 recorded as a holder of the weights", |v| {
            v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["id"] == "n2" && m["resident_artifacts"].as_u64() >= Some(2))
        })
        .await;
    assert!(fetched["members"].is_array());

    // The same through the CLI: `artifact push` streams the file (a
    // progress bar only on a terminal), `fn create --weights` names it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny2.safetensors");
    let w2: Vec<f32> = (0..64).map(|i| i as f32 / 8.0).collect();
    std::fs::write(
        &path,
        safetensors(&[("proj", Dtype::F32, &[8, 8], f32_bytes(&w2))]),
    )
    .unwrap();
    let cli = |args: &[&str]| api.cli(h1, args);
    let pushed: Value =
        serde_json::from_str(&cli(&["artifact", "push", "tiny2", path.to_str().unwrap()])).unwrap();
    assert_eq!(
        (&pushed["kind"], &pushed["size"]),
        (
            &json!("weights"),
            &json!(std::fs::metadata(&path).unwrap().len())
        )
    );
    cli(&[
        "fn",
        "create",
        "tensor2",
        "--artifact",
        "tensor-py",
        "--weights",
        "tiny2",
        "--deadline-ms",
        "60000",
    ]);
    let input = json!({"weights": "tiny2", "tensor": "proj", "x": [1, 0, 0, 0, 0, 0, 0, 1]});
    let (status, _, v) = invoke(&api, h1, &api.token, "tensor2", input).await;
    assert_eq!(status, 200, "{v}");
    let expected: Vec<f32> = (0..8).map(|j| w2[j] + w2[56 + j]).collect();
    assert_eq!(v["xw"], json!(expected), "{v}");

    // Names the function does not give are refused inside the guest.
    let input = json!({"weights": "other", "tensor": "proj"});
    let (status, _, v) = invoke(&api, h1, &api.token, "tensor", input).await;
    assert_eq!(status, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names no weights"),
        "{v}"
    );

    // Another tenant cannot name them: to it they do not exist.
    let globex = api
        .tenant_token(h1, "globex", &["invoke", "publish", "read"])
        .await;
    let r = api
        .upload_as(h1, &globex, "tensor-py", built("tensor-py"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for weights in ["tiny", stored["digest"].as_str().unwrap()] {
        let steal = json!({"name": "steal", "artifact": "tensor-py", "weights": [weights]});
        let (status, _) = api.post(h1, &globex, "/v1/functions", &steal).await;
        assert_eq!(status, 404, "{weights}");
    }
}

/// A safetensors file of one f32 tensor `w` of `rows`×1024 at `path`,
/// written a row at a time; its size.
fn write_weights(path: &std::path::Path, rows: usize) -> u64 {
    use std::io::Write;
    let bytes = rows * 1024 * 4;
    let mut header = format!(
        "{{\"w\":{{\"dtype\":\"F32\",\"shape\":[{rows},1024],\"data_offsets\":[0,{bytes}]}}}}"
    );
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    let row: Vec<u8> = (0..1024).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for _ in 0..rows {
        file.write_all(&row).unwrap();
    }
    file.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// The bytes of the largest file in `dir` (a spool's `.part` file).
fn largest_file(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// A counter from a `/metrics` page.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} not in {metrics}")) as u64
}

/// A weights transfer cut in the middle resumes from the byte it reached:
/// host 2 fetches 128 MiB of weights from host 1, which is killed part-way;
/// host 2 takes the rest from host 3 and runs its job, having received
/// every byte once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weights_transfer_cut_in_the_middle_resumes_from_another_holder() {
    let root = tempfile::tempdir().unwrap();
    let flags: &[&str] = &["--slots", "1"];
    let (api, mut hosts) = hosts::form(root.path(), &[flags, flags, flags]).await;
    let file = root.path().join("w.safetensors");
    let rows = 32 * 1024;
    let size = write_weights(&file, rows);
    api.cli(
        &hosts[0],
        &["artifact", "push", "w", file.to_str().unwrap()],
    );
    let guest = common::guest("weights_gemm");
    let guest_size = guest.len() as u64;
    let r = api.upload(&hosts[0], "g", guest).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let spec = json!({"name": "g", "artifact": "g", "weights": ["w"], "accelerator": "none", "deadline_ms": 120_000});
    api.create_function(&hosts[0], &api.token, &spec).await;
    // x (64 values) times the first 64 rows.
    let mut input = Vec::new();
    for s in ["w", "w"] {
        input.extend((s.len() as u32).to_le_bytes());
        input.extend(s.as_bytes());
    }
    input.extend(1024u32.to_le_bytes());
    input.extend(64u32.to_le_bytes());
    input.extend((0..64).flat_map(|_| 1f32.to_le_bytes()));
    let invoke = |host: &Host| {
        api.http
            .post(format!("{}/v1/functions/g/invoke", host.endpoint))
            .bearer_auth(&api.token)
            .header("spillway-placement", "local")
            .body(input.clone())
            .timeout(Duration::from_secs(120))
            .send()
    };
    // Host 3 fetches a copy first, so there are two holders.
    let r = invoke(&hosts[2]).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Host 2 must know of both holders before it starts.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = api.get(&hosts[1], "/v1/artifacts").await.unwrap();
        let w = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "w")
            .cloned();
        if w.as_ref()
            .is_some_and(|w| w["holders"] == json!(["n1", "n3"]))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "host 3 not recorded as a holder: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Host 2 fetches from host 1 (holders are asked in order); host 1 dies
    // when a quarter has come.
    let job = tokio::spawn(invoke(&hosts[1]));
    let spool = hosts[1].dir.join("sidecar/spool");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < size / 4 {
        assert!(
            std::time::Instant::now() < until && !job.is_finished(),
            "the transfer to host 2 did not pass a quarter ({seen} of {size} bytes seen)"
        );
        seen = largest_file(&spool);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    hosts.remove(0).kill9();
    assert!(
        largest_file(&spool) < size,
        "host 1 was killed only after the transfer ended"
    );
    eprintln!("killed host 1 with {seen} of {size} bytes at host 2");

    let r = job.await.unwrap().unwrap();
    let status = r.status();
    let fetched = r.headers().get("spillway-fetched-bytes").cloned();
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let fetched: u64 = fetched.unwrap().to_str().unwrap().parse().unwrap();
    // Each of the 1024 outputs sums 64 rows of the same value.
    let got: Vec<f32> = body
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), 1024);
    assert!(got.iter().enumerate().all(|(i, v)| *v == 64.0 * i as f32));
    assert_eq!(fetched, size + guest_size, "the job's receipt");
    let metrics = api.metrics(&hosts[0]).await;
    assert!(
        counter(&metrics, "spillway_artifact_fetch_resumes_total") >= 1,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "spillway_artifact_fetch_received_bytes_total"),
        size + guest_size,
        "every byte received once: the transfer resumed, not restarted"
    );
}
