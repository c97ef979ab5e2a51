//! The example language model (`examples/models/tiny_lm`) on a pool of two
//! hosts, CPU backend (and, where a GPU is, on it: the second test, which
//! skips saying so elsewhere), as a user would run it: weights made by its seeded
//! script and pushed once with the CLI, the Python guest built from source.
//! The same prompts through the guest and through the numpy reference give
//! the same tokens, on the host that took the upload and on a peer that
//! fetched the weights; the peer's second job fetches nothing; a job cannot
//! write into a tensor of the weights; another tenant cannot name them.

use crate::common;

use common::built;
use common::hosts::{self, Api, Host};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The reference's answer for `prompt` on `weights`, checked to be clear
/// of ties at every step by far more than f32 rounding.
fn reference(weights: &Path, prompt: &str, max_tokens: usize) -> Value {
    let reference: Value = serde_json::from_str(&common::tiny_lm(
        "reference.py",
        &[
            weights.to_str().unwrap(),
            "--prompt",
            prompt,
            "--max-tokens",
            &max_tokens.to_string(),
        ],
    ))
    .unwrap();
    let margin = reference["min_margin"].as_f64().unwrap();
    assert!(
        margin > 1e-3,
        "{prompt:?}: a step of the reference is {margin} from a tie; pick another prompt"
    );
    assert_eq!(reference["tokens"].as_array().unwrap().len(), max_tokens);
    reference
}

/// What one job answered, with the receipt's numbers.
struct Answer {
    status: u16,
    node: String,
    backend: String,
    fetched: u64,
    loaded: u64,
    body: Value,
}

async fn invoke(api: &Api, host: &Host, token: &str, function: &str, input: Value) -> Answer {
    let r = api
        .http
        .post(format!("{}/v1/functions/{function}/invoke", host.endpoint))
        .bearer_auth(token)
        .header("spillway-placement", "local")
        .body(input.to_string())
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let number = |name: &str| header(name).parse().unwrap_or(u64::MAX);
    let (status, node, backend) = (
        r.status().as_u16(),
        header("spillway-node"),
        header("spillway-backend"),
    );
    let (fetched, loaded) = (
        number("spillway-fetched-bytes"),
        number("spillway-weights-loaded-bytes"),
    );
    let text = r.text().await.unwrap();
    Answer {
        status,
        node,
        backend,
        fetched,
        loaded,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_model_answers_as_its_reference_here_and_on_a_peer() {
    let root = tempfile::tempdir().unwrap();
    let weights = root.path().join("tiny-lm.safetensors");
    common::tiny_lm("make_weights.py", &[weights.to_str().unwrap()]);
    let weights_size = std::fs::metadata(&weights).unwrap().len();

    let (api, hosts) = hosts::form(root.path(), &[&["--slots", "1"], &["--slots", "1"]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let pushed: Value = serde_json::from_str(&api.cli(
        h1,
        &["artifact", "push", "tiny-lm", weights.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(pushed["kind"], "weights", "{pushed}");
    let r = api.upload(h1, "tiny-lm-py", built("tiny-lm-py")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    api.cli(
        h1,
        &[
            "fn",
            "create",
            "tiny-lm",
            "--artifact",
            "tiny-lm-py",
            "--weights",
            "tiny-lm",
            "--accelerator",
            "none",
            "--deadline-ms",
            "120000",
        ],
    );

    // Greedy decoding agrees with the reference only where no step is
    // close to a tie; the reference says how close each came.
    let prompts = ["Spillway ", "Hello, pool"];
    let max_tokens = 24;
    let expected: Vec<Value> = prompts
        .iter()
        .map(|p| reference(&weights, p, max_tokens))
        .collect();

    // h1 took the upload; h2 fetches the weights and the guest before its
    // first job, and nothing before its second. On the CPU nothing is
    // copied onto a device: the tensors are read where they are mapped.
    let mut fetched_by_h2 = Vec::new();
    for (host, node) in [(h1, "n1"), (h1, "n1"), (h2, "n2"), (h2, "n2")] {
        for (prompt, reference) in prompts.iter().zip(&expected) {
            let input = json!({"prompt": prompt, "max_tokens": max_tokens});
            let a = invoke(&api, host, &api.token, "tiny-lm", input).await;
            assert_eq!((a.status, a.node.as_str()), (200, node), "{}", a.body);
            assert_eq!(a.backend, "cpu");
            assert_eq!(
                a.body["tokens"], reference["tokens"],
                "{prompt:?} on {node}: the guest's tokens differ from the reference's"
            );
            assert_eq!(a.body["prompt_tokens"], prompt.len());
            assert_eq!(a.loaded, 0, "nothing is copied onto a device on the CPU");
            match node {
                "n1" => assert_eq!(a.fetched, 0, "h1 holds what it was sent"),
                _ => fetched_by_h2.push(a.fetched),
            }
        }
    }
    let guest_size = built("tiny-lm-py").len() as u64;
    assert_eq!(
        fetched_by_h2,
        [weights_size + guest_size, 0, 0, 0],
        "h2 fetched the weights ({weights_size} bytes) and the guest ({guest_size}) once"
    );

    // A job cannot write into a tensor of the weights, and the tensor
    // stays as it was.
    let r = api.upload(h1, "tensor-py", built("tensor-py")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let spec = json!({"name": "tensor", "artifact": "tensor-py", "weights": ["tiny-lm"], "deadline_ms": 60_000});
    api.create_function(h1, &api.token, &spec).await;
    let input = json!({"weights": "tiny-lm", "tensor": "norm", "write": true});
    let a = invoke(&api, h2, &api.token, "tensor", input).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["writable"], false, "{}", a.body);
    assert_eq!(a.body["write"]["refused"], true, "{}", a.body);
    assert_eq!(a.body["write"]["code"], "invalid_argument", "{}", a.body);
    let again = invoke(
        &api,
        h2,
        &api.token,
        "tiny-lm",
        json!({"prompt": prompts[0], "max_tokens": max_tokens}),
    )
    .await;
    assert_eq!(again.body["tokens"], expected[0]["tokens"]);

    // Another tenant cannot name the weights, by name or by digest: to it
    // they do not exist.
    let globex = api
        .tenant_token(h1, "globex", &["invoke", "publish", "read"])
        .await;
    let r = api
        .upload_as(h1, &globex, "tiny-lm-py", built("tiny-lm-py"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for name in ["tiny-lm", pushed["digest"].as_str().unwrap()] {
        let steal = json!({"name": "steal", "artifact": "tiny-lm-py", "weights": [name]});
        let (status, v) = api.post(h1, &globex, "/v1/functions", &steal).await;
        assert_eq!(status, 404, "{name}: {v}");
    }
}

/// The same model on a GPU: the tiny weights and the benchmark's (95 M
/// parameters, 380 MB), each through the guest with its tensors loaded
/// onto the GPU by the first job and resident for the next, the tokens the
/// reference's. Skips, saying so, without a GPU (CI); runs on the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_model_on_a_gpu_answers_as_its_reference() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&["--slots", "1"]]).await;
    let h1 = &hosts[0];
    if !api.has_cuda(h1, "n1").await {
        eprintln!("skipped: no CUDA driver or GPU on this host");
        return;
    }
    let r = api.upload(h1, "tiny-lm-py", built("tiny-lm-py")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for preset in ["tiny", "bench"] {
        let weights = root.path().join(format!("{preset}.safetensors"));
        common::tiny_lm(
            "make_weights.py",
            &["--preset", preset, weights.to_str().unwrap()],
        );
        api.cli(h1, &["artifact", "push", preset, weights.to_str().unwrap()]);
        api.cli(
            h1,
            &[
                "fn",
                "create",
                preset,
                "--artifact",
                "tiny-lm-py",
                "--weights",
                preset,
                "--accelerator",
                "required",
                "--memory-limit-bytes",
                "268435456",
                "--deadline-ms",
                "120000",
            ],
        );
        // Every tensor's bytes: the file less its header.
        let file = std::fs::read(&weights).unwrap();
        let header = u64::from_le_bytes(file[..8].try_into().unwrap());
        let tensor_bytes = file.len() as u64 - 8 - header;
        for (i, prompt) in ["Spillway ", "Hello, pool"].into_iter().enumerate() {
            let expected = reference(&weights, prompt, 24);
            let input = json!({"prompt": prompt, "max_tokens": 24, "weights": preset});
            let a = invoke(&api, h1, &api.token, preset, input).await;
            assert_eq!(a.status, 200, "{}", a.body);
            assert_eq!(a.backend, "cuda");
            assert_eq!(
                a.body["tokens"], expected["tokens"],
                "{preset}, {prompt:?}: the guest's tokens on the GPU differ from the reference's"
            );
            let loaded = if i == 0 { tensor_bytes } else { 0 };
            assert_eq!(
                a.loaded, loaded,
                "{preset}, job {i}: bytes loaded onto the GPU"
            );
            eprintln!(
                "{preset}, {prompt:?}: the reference's tokens on the GPU, {} bytes loaded",
                a.loaded
            );
        }
    }
}
