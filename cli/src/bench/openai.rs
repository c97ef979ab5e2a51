//! `spillway bench openai`: what the OpenAI framing costs per token. One
//! loopback host serves the example language model under a model name;
//! the same request (`{"model", "prompt", "max_tokens"}`, so the guest
//! runs the same code and emits one token at a time either way) goes
//! `--runs` times through `POST /v1/completions` with `"stream": true`
//! (each token a `text_completion` server-sent event, read and parsed as
//! a client would) and through a streamed invoke (`TE: trailers`: each
//! token a raw chunk). The difference of the medians over the tokens is
//! the framing's cost per token.

use super::{build, cores};
use crate::client::{Client, InvokeOptions};
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::{median, ms};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub(crate) async fn run(
    weights: &Path,
    guest: &Path,
    tokens: u32,
    runs: usize,
) -> anyhow::Result<ExitCode> {
    if tokens == 0 || runs == 0 {
        bail!("--tokens and --runs must be at least 1");
    }
    let options = HostOptions {
        slots: 1,
        queue: 8,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 1, options).await?;
    let result = measure(&cluster.client(0), (weights, guest), tokens, runs).await;
    cluster.stop().await;
    result
}

/// One completion through the OpenAI API, its events parsed: the time and
/// the text.
async fn openai(client: &Client, request: &Value) -> anyhow::Result<(Duration, String)> {
    use futures::StreamExt as _;
    let started = Instant::now();
    let r = client.post_json("/v1/completions", request).await?;
    if !r.status().is_success() {
        bail!("the completion failed: {} {}", r.status(), r.text().await?);
    }
    let (mut text, mut buffer, mut done) = (String::new(), Vec::new(), false);
    let mut body = r.bytes_stream();
    while let Some(bytes) = body.next().await {
        buffer.extend_from_slice(&bytes?);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let data = std::str::from_utf8(&event)?
                .trim_end()
                .trim_start_matches("data: ");
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if let Some(piece) = v["choices"][0]["text"].as_str() {
                text.push_str(piece);
            }
        }
    }
    if !done {
        bail!("the stream ended without [DONE]");
    }
    Ok((started.elapsed(), text))
}

/// The same job as a streamed invoke: the time and the bytes.
async fn invoke(client: &Client, request: &Value) -> anyhow::Result<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut out = Vec::new();
    let answer = client
        .invoke_streaming(
            "lm",
            request.to_string().into_bytes(),
            &InvokeOptions::default(),
            |chunk| {
                out.extend_from_slice(chunk);
                Ok(())
            },
        )
        .await?;
    if !answer.status.is_success() || answer.failure().is_some() {
        bail!(
            "the invoke failed: {} {:?}",
            answer.status,
            answer.failure()
        );
    }
    Ok((started.elapsed(), out))
}

async fn measure(
    client: &Client,
    (weights, guest): (&Path, &Path),
    tokens: u32,
    runs: usize,
) -> anyhow::Result<ExitCode> {
    client
        .put_artifact_file("lm", weights, None, |_| {})
        .await?;
    let guest = std::fs::read(guest)
        .with_context(|| format!("{} (examples/guests/build.sh builds it)", guest.display()))?;
    client.put_artifact("lm-guest", guest, None).await?;
    client
        .create_function(&json!({
            "name": "lm", "artifact": "lm-guest", "weights": ["lm"], "openai_model": "lm",
            "deadline_ms": 300_000,
        }))
        .await?;
    let request = json!({"model": "lm", "prompt": "Spillway ", "max_tokens": tokens});
    let streamed =
        json!({"model": "lm", "prompt": "Spillway ", "max_tokens": tokens, "stream": true});
    // Warm: the guest compiled, the weights mapped or loaded.
    let (_, first_text) = openai(client, &streamed).await?;
    let (_, first_bytes) = invoke(client, &request).await?;
    // The invoke's answer is the text, then the guest's end (its JSON).
    if !first_bytes.starts_with(first_text.as_bytes()) {
        bail!(
            "the two paths answered differently: {first_text:?} and {:?}",
            String::from_utf8_lossy(&first_bytes)
        );
    }
    let (mut through_openai, mut through_invoke) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        through_openai.push(openai(client, &streamed).await?.0);
        through_invoke.push(invoke(client, &request).await?.0);
    }
    let (o, i) = (median(through_openai), median(through_invoke));
    let per_token_us = (o.as_secs_f64() - i.as_secs_f64()) * 1e6 / f64::from(tokens);
    println!(
        "OpenAI framing: the example model, {tokens} tokens a job, {runs} runs, one loopback host, {} cores, {} build",
        cores(),
        build()
    );
    println!(
        "{:<44} {:>12} {:>14}",
        "path (medians)", "job_ms", "us_per_token"
    );
    println!(
        "{:<44} {:>12.2} {:>14.1}",
        "POST /v1/completions, stream (SSE, parsed)",
        ms(o),
        o.as_secs_f64() * 1e6 / f64::from(tokens)
    );
    println!(
        "{:<44} {:>12.2} {:>14.1}",
        "streamed invoke (raw chunks)",
        ms(i),
        i.as_secs_f64() * 1e6 / f64::from(tokens)
    );
    println!("framing cost per token: {per_token_us:.1} us");
    Ok(ExitCode::SUCCESS)
}
