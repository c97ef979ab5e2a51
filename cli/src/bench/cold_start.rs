//! `spillway bench cold-start`: what a component's first jobs cost through
//! the whole path, on two loopback hosts (`spillway host` processes, as
//! `spillway up` starts them). For each guest: its upload to host 1
//! (spooled, handed to the node in chunks, validated, compiled, committed),
//! the first job there, the first job on host 2, which has never seen it
//! (fetched over QUIC from host 1 into its spool, handed to its node,
//! compiled, run), and host 2's warm jobs (median). Times are the client's,
//! request to answer. The node-level numbers (a node restart, the
//! compiled-code cache off and on) are `cargo bench -p spillway-node
//! --bench cold_start`.

use super::cores;
use crate::client::{Client, InvokeOptions};
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::{ms, percentile};
use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub(crate) async fn run(guests: Vec<PathBuf>, warm: usize) -> anyhow::Result<ExitCode> {
    let mut named: Vec<(String, Vec<u8>)> = vec![(
        "noop.wat".into(),
        include_str!("../../../examples/guests/noop.wat").into(),
    )];
    for path in guests {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        named.push((name, bytes));
    }
    let options = HostOptions {
        slots: 2,
        queue: 64,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 2, options).await?;
    let result = measure(&cluster, &named, warm.max(1)).await;
    cluster.stop().await;
    result
}

/// One guest's numbers.
struct Row {
    name: String,
    size: usize,
    upload: Duration,
    first_here: Duration,
    first_on_peer: Duration,
    warm_on_peer: Duration,
}

async fn measure(
    cluster: &LocalCluster,
    guests: &[(String, Vec<u8>)],
    warm: usize,
) -> anyhow::Result<ExitCode> {
    let h1 = cluster.client(0);
    let h2 = cluster.client(1);
    let mut rows = Vec::new();
    for (i, (name, bytes)) in guests.iter().enumerate() {
        let artifact = format!("cold-{i}");
        let t = Instant::now();
        let stored = h1.put_artifact(&artifact, bytes.clone(), None).await?;
        let upload = t.elapsed();
        h1.create_function(&json!({
            "name": artifact, "artifact": stored.digest, "deadline_ms": 300_000,
        }))
        .await?;
        let first_here = job(&h1, &artifact).await?;
        let first_on_peer = job(&h2, &artifact).await?;
        let mut warm_jobs = Vec::with_capacity(warm);
        for _ in 0..warm {
            warm_jobs.push(job(&h2, &artifact).await?);
        }
        warm_jobs.sort();
        rows.push(Row {
            name: name.clone(),
            size: bytes.len(),
            upload,
            first_here,
            first_on_peer,
            warm_on_peer: percentile(&warm_jobs, 0.5),
        });
    }
    println!(
        "cold start through HTTP: 2 hosts on loopback, {} cores shared, ms (client wall time)",
        cores()
    );
    println!(
        "{:<16} {:>10} {:>10} {:>12} {:>16} {:>14}",
        "guest", "bytes", "upload", "first here", "first on peer", "warm on peer"
    );
    for r in &rows {
        println!(
            "{:<16} {:>10} {:>10.1} {:>12.1} {:>16.1} {:>14.3}",
            r.name,
            r.size,
            ms(r.upload),
            ms(r.first_here),
            ms(r.first_on_peer),
            ms(r.warm_on_peer)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One job with no input, kept on the host asked; its wall time.
async fn job(host: &Client, function: &str) -> anyhow::Result<Duration> {
    let options = InvokeOptions {
        here_only: true,
        ..InvokeOptions::default()
    };
    let t = Instant::now();
    let answer = host.invoke(function, Vec::new(), &options).await?;
    let took = t.elapsed();
    if !answer.status.is_success() {
        bail!(
            "{function}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(took)
}
