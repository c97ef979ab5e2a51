//! The OpenAI-compatible front end (issue 18) through the official
//! `openai` Python client: a host serves the example model under the name
//! `tiny-lm`; `openai_client.py` lists the models, asks for chat and text
//! completions with and without streaming and checks each text against the
//! numpy reference's tokens for the same prompt, and gets the client's own
//! errors for an unknown model and a bad key. The client acts with a
//! scoped token that may only invoke.

use crate::common;

use common::hosts;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_talks_to_the_pool_unmodified() {
    let root = tempfile::tempdir().unwrap();
    let weights = root.path().join("tiny-lm.safetensors");
    common::tiny_lm("make_weights.py", &[weights.to_str().unwrap()]);
    let (api, hosts) = hosts::form(root.path(), &[&["--slots", "2"]]).await;
    let h1 = &hosts[0];
    let r = api
        .upload(h1, "tiny-lm", std::fs::read(&weights).unwrap())
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = api
        .upload(h1, "tiny-lm-py", common::built("tiny-lm-py"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let spec = json!({
        "name": "tiny-lm", "artifact": "tiny-lm-py", "weights": ["tiny-lm"],
        "openai_model": "tiny-lm", "deadline_ms": 120_000,
    });
    api.create_function(h1, &api.token, &spec).await;
    // A second function may not take the model's name.
    let taken = json!({"name": "other", "artifact": "tiny-lm-py", "openai_model": "tiny-lm"});
    let (status, v) = api.post(h1, &api.token, "/v1/functions", &taken).await;
    assert_eq!(status, 409, "{v}");
    let (_, token) = api
        .post(h1, &api.token, "/v1/tokens", &json!({"scopes": ["invoke"]}))
        .await;
    let token = token["token"].as_str().unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&h1.endpoint, token, weights.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "the openai client's checks failed (scripts/test installs openai):\n{stdout}{stderr}"
    );

    // The raw stream ends as OpenAI's does.
    let r = api
        .http
        .post(format!("{}/v1/completions", h1.endpoint))
        .bearer_auth(token)
        .json(&json!({"model": "tiny-lm", "prompt": "Hi", "max_tokens": 3, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );

    // Four answers of 24 tokens and this one of 3, as the guest reported.
    let metrics = api.metrics(h1).await;
    let line = "spillway_openai_completion_tokens_total 99";
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in {metrics}"
    );
}
