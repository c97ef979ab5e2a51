//! `spillway bench http`: HTTP invoke of the no-op guest on loopback.
//!
//! Starts its own one-host cluster (as `spillway up` does), uploads the
//! no-op guest, then for each concurrency runs a bounded number of
//! invocations from that many concurrent clients and reports p50, p99 and
//! throughput. The load stops by itself after `--requests` per level.

use super::cores;
use crate::client::Client;
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::percentile;
use anyhow::bail;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The guest `spillway bench http` invokes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum BenchGuest {
    Noop,
    GpuNoop,
}

impl BenchGuest {
    fn wat(self) -> &'static str {
        match self {
            BenchGuest::Noop => include_str!("../../../examples/guests/noop.wat"),
            BenchGuest::GpuNoop => include_str!("../../../node/benches/guests/gpu_noop.wat"),
        }
    }

    fn accelerator(self) -> &'static str {
        match self {
            BenchGuest::Noop => "none",
            BenchGuest::GpuNoop => "required",
        }
    }
}

pub(crate) async fn run(
    concurrency: Vec<usize>,
    requests: usize,
    slots: u32,
    guest: BenchGuest,
    warm_instances: Option<u32>,
    executors: Option<String>,
) -> anyhow::Result<ExitCode> {
    let options = HostOptions {
        slots,
        queue: 1024,
        warm_instances,
        executors,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 1, options).await?;
    let result = measure(&cluster, guest, &concurrency, requests).await;
    cluster.stop().await;
    result
}

async fn measure(
    cluster: &LocalCluster,
    guest: BenchGuest,
    levels: &[usize],
    requests: usize,
) -> anyhow::Result<ExitCode> {
    let client = cluster.client(0);
    let stored = client
        .put_artifact("noop", guest.wat().as_bytes().to_vec(), None)
        .await?;
    client
        .create_function(
            &json!({"name": "noop", "artifact": stored.digest, "deadline_ms": 10_000,
                                 "accelerator": guest.accelerator()}),
        )
        .await?;
    println!(
        "HTTP invoke, {guest:?} guest, loopback, {} host cores; {requests} requests per level",
        cores()
    );
    println!(
        "{:>11} {:>9} {:>9} {:>9} {:>12}",
        "concurrency", "p50_ms", "p99_ms", "max_ms", "req_per_s"
    );
    for &c in levels {
        if c == 0 {
            bail!("concurrency must be positive");
        }
        load(&client, c, requests / 10).await?;
        let (mut latencies, elapsed) = load(&client, c, requests).await?;
        latencies.sort();
        let pct = |p: f64| percentile(&latencies, p);
        println!(
            "{:>11} {:>9.3} {:>9.3} {:>9.3} {:>12.0}",
            c,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            latencies.len() as f64 / elapsed.as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `total` invocations from `concurrency` clients; every one must succeed.
pub(super) async fn load(
    client: &Client,
    concurrency: usize,
    total: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (client, next) = (client.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let answer = client
                    .invoke("noop", Vec::new(), &Default::default())
                    .await?;
                if !answer.status.is_success() {
                    bail!(
                        "invoke failed: {} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    );
                }
                latencies.push(t.elapsed());
            }
            Ok(latencies)
        })
    });
    let mut all = Vec::with_capacity(total);
    for w in futures::future::join_all(workers).await {
        all.extend(w??);
    }
    Ok((all, started.elapsed()))
}
