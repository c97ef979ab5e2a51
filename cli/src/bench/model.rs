//! `spillway bench model`: the example language model
//! (`examples/models/tiny_lm`) on two loopback hosts, its weights and guest
//! pushed to host 1 only. On each host: the first job (on host 2 it must
//! fetch the weights and the guest, compile the guest and load the weights
//! onto its GPU), then the first-token latency (the median of one-token
//! jobs) and the decode rate (tokens after the first per second: a
//! `--tokens` job less a one-token job, medians). Times are the client's,
//! from request to answer; the receipt's execution time beside them.

use super::{build, cores};
use crate::client::{Client, InvokeOptions};
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::median;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use spillway_sidecar::api::Receipt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What the bench is asked to run.
pub(crate) struct ModelBench<'a> {
    pub(crate) weights: &'a Path,
    pub(crate) guest: &'a Path,
    pub(crate) prompt: &'a str,
    pub(crate) tokens: u32,
    pub(crate) runs: usize,
}

pub(crate) async fn run(bench: ModelBench<'_>) -> anyhow::Result<ExitCode> {
    let options = HostOptions {
        slots: 1,
        queue: 8,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 2, options).await?;
    let result = measure(&cluster, &bench).await;
    cluster.stop().await;
    result
}

/// One job: its answer's tokens, the client's time and the receipt.
struct Job {
    tokens: Vec<u64>,
    wall: Duration,
    receipt: Receipt,
}

async fn generate(client: &Client, prompt: &str, tokens: u32) -> anyhow::Result<Job> {
    let input = json!({"prompt": prompt, "max_tokens": tokens, "weights": "lm"});
    let options = InvokeOptions {
        here_only: true,
        ..Default::default()
    };
    let started = Instant::now();
    let answer = client
        .invoke("lm", input.to_string().into_bytes(), &options)
        .await?;
    let wall = started.elapsed();
    if !answer.status.is_success() {
        bail!(
            "the job failed: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let body: Value = serde_json::from_slice(&answer.body).context("the guest's answer")?;
    let tokens = body["tokens"]
        .as_array()
        .context("no tokens in the answer")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    Ok(Job {
        tokens,
        wall,
        receipt: Receipt::read_from(&answer.headers)?,
    })
}

/// First-token latency and decode rate on a host whose weights are
/// resident: medians of `runs` one-token and `tokens`-token jobs.
async fn warm(
    client: &Client,
    bench: &ModelBench<'_>,
) -> anyhow::Result<(Duration, f64, f64, String)> {
    let (mut first, mut long, mut long_exec) = (Vec::new(), Vec::new(), Vec::new());
    let mut backend = String::new();
    for _ in 0..bench.runs {
        let one = generate(client, bench.prompt, 1).await?;
        first.push(one.wall);
        let all = generate(client, bench.prompt, bench.tokens).await?;
        long.push(all.wall);
        long_exec.push(Duration::from_secs_f64(all.receipt.exec_ms / 1000.0));
        backend = all.receipt.backend;
    }
    let (first, long) = (median(first), median(long));
    let decode = long.saturating_sub(first).as_secs_f64();
    let rate = f64::from(bench.tokens - 1) / decode.max(f64::EPSILON);
    let exec_rate = f64::from(bench.tokens) / median(long_exec).as_secs_f64();
    Ok((first, rate, exec_rate, backend))
}

async fn measure(cluster: &LocalCluster, bench: &ModelBench<'_>) -> anyhow::Result<ExitCode> {
    if bench.tokens < 2 || bench.runs == 0 {
        bail!("--tokens must be at least 2 and --runs at least 1");
    }
    let (h1, h2) = (cluster.client(0), cluster.client(1));
    let size = std::fs::metadata(bench.weights)
        .with_context(|| format!("{}", bench.weights.display()))?
        .len();
    let stored = h1
        .put_artifact_file("lm", bench.weights, None, |_| {})
        .await?;
    if stored.kind != spillway_proto::ArtifactKind::Weights {
        bail!(
            "{} was stored as {:?}, not weights",
            bench.weights.display(),
            stored.kind
        );
    }
    let guest = std::fs::read(bench.guest).with_context(|| {
        format!(
            "{} (examples/guests/build.sh builds it)",
            bench.guest.display()
        )
    })?;
    h1.put_artifact("lm-guest", guest, None).await?;
    h1.create_function(&json!({
        "name": "lm", "artifact": "lm-guest", "weights": ["lm"],
        "deadline_ms": 300_000, "memory_limit_bytes": 256u64 << 20,
    }))
    .await?;

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "example model: {:.1} MiB of weights, prompt {:?}, {} tokens, {} runs, two loopback hosts, {} cores, {} build",
        mib(size),
        bench.prompt,
        bench.tokens,
        bench.runs,
        cores(),
        build()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>12}",
        "first job (one token)", "wall_ms", "exec_ms", "fetched_MiB", "loaded_MiB"
    );
    let mut answers = Vec::new();
    let mut rows = Vec::new();
    for (client, what) in [
        (&h1, "host 1 (took the upload)"),
        (&h2, "host 2 (fetches, compiles, loads)"),
    ] {
        let job = generate(client, bench.prompt, 1).await?;
        println!(
            "{what:<44} {:>10.1} {:>10.1} {:>12.1} {:>12.1}",
            job.wall.as_secs_f64() * 1000.0,
            job.receipt.exec_ms,
            mib(job.receipt.fetched_bytes),
            mib(job.receipt.weights_loaded_bytes)
        );
        let (first, rate, exec_rate, backend) = warm(client, bench).await?;
        rows.push((what, first, rate, exec_rate, backend));
        answers.push(generate(client, bench.prompt, bench.tokens).await?.tokens);
    }
    println!(
        "{:<44} {:>16} {:>14} {:>18} {:>8}",
        "resident, medians", "first_token_ms", "decode_tok/s", "job_tok/s (exec)", "backend"
    );
    for (what, first, rate, exec_rate, backend) in rows {
        println!(
            "{what:<44} {:>16.1} {:>14.1} {:>18.1} {:>8}",
            first.as_secs_f64() * 1000.0,
            rate,
            exec_rate,
            backend
        );
    }
    if answers[0] != answers[1] {
        bail!(
            "the hosts decoded different tokens: {:?} and {:?}",
            answers[0],
            answers[1]
        );
    }
    println!("both hosts decoded the same {} tokens", answers[0].len());
    Ok(ExitCode::SUCCESS)
}
