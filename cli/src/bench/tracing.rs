//! `spillway bench tracing`: what exporting spans costs a job. Two
//! loopback hosts; the no-op guest invoked at host 1 by a tenant placed
//! anywhere (it runs on host 1: HTTP, placement, node) and by a tenant
//! placed on host 2 (every job a burst dispatch: host 1's HTTP and
//! placement, the QUIC dispatch, host 2's node; one job at a time). Measured on a pair of
//! hosts exporting nothing, then on a pair exporting every span over
//! OTLP/HTTP to a receiver in this process that takes each batch and
//! answers as a collector does; the rounds alternate, so both see the same
//! machine.

use super::cores;
use super::http::load;
use crate::client::Client;
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::percentile;
use anyhow::{Context, bail};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the receiver took.
#[derive(Debug, Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// An OTLP/HTTP trace receiver on loopback: takes each export request
/// whole and answers 200 with an empty `ExportTraceServiceResponse`.
async fn receiver() -> anyhow::Result<(String, Arc<Received>)> {
    let got = Arc::new(Received::default());
    let counted = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let got = counted.clone();
            async move {
                got.requests.fetch_add(1, Ordering::Relaxed);
                got.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

/// The two clients: the tenant that runs here, and the one placed on
/// host 2, each with the no-op function.
async fn prepare(cluster: &LocalCluster) -> anyhow::Result<(Client, Client)> {
    let admin = cluster.client(0);
    let mut clients = Vec::new();
    for (tenant, placement) in [("here", json!({})), ("there", json!({"host": "2"}))] {
        let r = admin
            .post_json(
                "/v1/tenants",
                &json!({"name": tenant, "placement": placement}),
            )
            .await?;
        if !r.status().is_success() {
            bail!("creating tenant {tenant}: {}", r.text().await?);
        }
        let r = admin
            .post_json(
                "/v1/tokens",
                &json!({"tenant": tenant, "scopes": ["publish", "invoke"]}),
            )
            .await?;
        let v: serde_json::Value = r.json().await?;
        let token = v["token"].as_str().context("a token")?.to_owned();
        let client = Client::new(admin.endpoint(), Some(token));
        let noop = include_str!("../../../examples/guests/noop.wat");
        let stored = client
            .put_artifact("noop", noop.as_bytes().to_vec(), None)
            .await?;
        client
            .create_function(
                &json!({"name": "noop", "artifact": stored.digest, "deadline_ms": 10_000}),
            )
            .await?;
        clients.push(client);
    }
    let there = clients.pop().expect("two");
    let here = clients.pop().expect("two");
    Ok((here, there))
}

/// p50 and p99 (ms) at concurrency 1.
async fn latency(client: &Client, requests: usize) -> anyhow::Result<(f64, f64)> {
    load(client, 1, requests / 10).await?;
    let (mut latencies, _) = load(client, 1, requests).await?;
    latencies.sort();
    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
    Ok((ms(0.5), ms(0.99)))
}

/// Jobs/s at concurrency 32 (the jobs wait in host 1's queue for its
/// slots; a job placed on host 2 alone would be refused when host 2 is
/// full, so the burst path is measured one job at a time).
async fn rate(client: &Client, requests: usize) -> anyhow::Result<f64> {
    load(client, 32, requests / 10).await?;
    let (done, elapsed) = load(client, 32, requests).await?;
    Ok(done.len() as f64 / elapsed.as_secs_f64())
}

/// Waits until host 1 has heard host 2's load (a job placed there is
/// refused until then).
async fn heard_from_peer(admin: &Client) -> anyhow::Result<()> {
    for _ in 0..600 {
        let view = admin.cluster().await?;
        let members = view["members"].as_array().cloned().unwrap_or_default();
        if members.len() == 2 && members.iter().all(|m| m["slots"].is_number()) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!("host 1 never heard host 2's load")
}

pub(crate) async fn run(requests: usize, rounds: usize) -> anyhow::Result<ExitCode> {
    let (url, received) = receiver().await?;
    println!(
        "Span export off and on (OTLP/HTTP to a receiver in this process), two loopback hosts, {} host cores; {requests} requests per figure",
        cores()
    );
    println!(
        "{:>5} {:>6} {:>10} {:>10} {:>11} {:>10} {:>10} {:>8}",
        "round",
        "export",
        "here_p50",
        "here_p99",
        "here_c32/s",
        "burst_p50",
        "burst_p99",
        "batches"
    );
    let mut sums: [[f64; 5]; 2] = [[0.0; 5]; 2];
    for round in 1..=rounds {
        for (i, on) in [false, true].into_iter().enumerate() {
            let options = HostOptions {
                slots: 4,
                queue: 1024,
                label_hosts: true,
                otlp_endpoint: on.then(|| url.clone()),
                ..HostOptions::default()
            };
            let before = received.requests.load(Ordering::Relaxed);
            let cluster = LocalCluster::start(None, 2, options).await?;
            let figures = async {
                let (here, there) = prepare(&cluster).await?;
                heard_from_peer(&cluster.client(0)).await?;
                let (hp50, hp99) = latency(&here, requests).await?;
                let hrate = rate(&here, requests).await?;
                let (bp50, bp99) = latency(&there, requests).await?;
                anyhow::Ok(((hp50, hp99, hrate), (bp50, bp99)))
            }
            .await;
            cluster.stop().await;
            let ((hp50, hp99, hrate), (bp50, bp99)) = figures?;
            let batches = received.requests.load(Ordering::Relaxed) - before;
            if on && batches == 0 {
                bail!("no span reached the receiver");
            }
            println!(
                "{round:>5} {:>6} {hp50:>10.3} {hp99:>10.3} {hrate:>11.0} {bp50:>10.3} {bp99:>10.3} {batches:>8}",
                if on { "on" } else { "off" },
            );
            for (s, v) in sums[i].iter_mut().zip([hp50, hp99, hrate, bp50, bp99]) {
                *s += v / rounds as f64;
            }
        }
    }
    let [off, on] = sums;
    println!(
        "on/off (means): here p50 {:.2}x, p99 {:.2}x, c32 rate {:.2}x; burst p50 {:.2}x, p99 {:.2}x; {} export requests, {} KiB received",
        on[0] / off[0],
        on[1] / off[1],
        on[2] / off[2],
        on[3] / off[3],
        on[4] / off[4],
        received.requests.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed) / 1024,
    );
    Ok(ExitCode::SUCCESS)
}
