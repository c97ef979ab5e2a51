//! `spillway bench stream`: what streaming buys a client, on two loopback
//! hosts of one slot each. The guest (`countdown.wat`) emits `--chunks`
//! chunks `--gap-ms` apart, then returns. For each path (on the host
//! asked; across a burst hop, while that host's one slot is held by a
//! spinning job) the medians of `--runs` jobs: a streamed job's time to
//! its first chunk and to its end, and a buffered job's time to its whole
//! answer. Times are the client's, request to byte.

use super::{build, cores};
use crate::client::{Client, InvokeOptions};
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::{median, ms};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub(crate) async fn run(chunks: u8, gap_ms: u16, runs: usize) -> anyhow::Result<ExitCode> {
    if !(1..=9).contains(&chunks) || !gap_ms.is_multiple_of(10) || gap_ms > 2550 || runs == 0 {
        bail!("--chunks is 1 to 9, --gap-ms a multiple of 10 up to 2550, --runs at least 1");
    }
    let options = HostOptions {
        slots: 1,
        queue: 8,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 2, options).await?;
    let result = measure(&cluster, [chunks, (gap_ms / 10) as u8], runs).await;
    cluster.stop().await;
    result
}

/// One streamed job: its first chunk's time and its end's.
async fn streamed(
    client: &Client,
    input: &[u8],
    here_only: bool,
) -> anyhow::Result<(Duration, Duration)> {
    let options = InvokeOptions {
        here_only,
        ..Default::default()
    };
    let started = Instant::now();
    let mut first = None;
    let answer = client
        .invoke_streaming("countdown", input.to_vec(), &options, |_| {
            first.get_or_insert_with(|| started.elapsed());
            Ok(())
        })
        .await?;
    let end = started.elapsed();
    if !answer.status.is_success() || answer.failure().is_some() {
        bail!(
            "a streamed job failed: {} {:?}",
            answer.status,
            answer.failure()
        );
    }
    Ok((first.context("no chunk came")?, end))
}

/// One buffered job: the time to its whole answer.
async fn buffered(client: &Client, input: &[u8], here_only: bool) -> anyhow::Result<Duration> {
    let options = InvokeOptions {
        here_only,
        ..Default::default()
    };
    let started = Instant::now();
    let answer = client.invoke("countdown", input.to_vec(), &options).await?;
    let took = started.elapsed();
    if !answer.status.is_success() {
        bail!("a buffered job failed: {}", answer.status);
    }
    Ok(took)
}

/// Waits until host 1 sees itself busy and host 2 free.
async fn wait_busy(client: &Client) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let view = client.cluster().await?;
        let running = |id: &str| -> Option<u64> {
            let members = view["members"].as_array()?;
            members.iter().find(|m| m["id"] == id)?["running"].as_u64()
        };
        if running("n1") == Some(1) && running("n2") == Some(0) {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("host 1 did not get busy: {view}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure(cluster: &LocalCluster, input: [u8; 2], runs: usize) -> anyhow::Result<ExitCode> {
    let (h1, h2) = (cluster.client(0), cluster.client(1));
    for (name, wat) in [
        (
            "countdown",
            include_str!("../../../examples/guests/countdown.wat"),
        ),
        ("spin", include_str!("../../../examples/guests/spin.wat")),
    ] {
        h1.put_artifact(name, wat.as_bytes().to_vec(), None).await?;
        h1.create_function(&json!({"name": name, "artifact": name, "deadline_ms": 120_000}))
            .await?;
    }
    // Both hosts hold the guest and have run it once.
    streamed(&h1, &input, true).await?;
    streamed(&h2, &input, true).await?;

    println!(
        "streamed vs buffered answers: countdown, {} chunks {} ms apart, {} runs, two loopback hosts of one slot, {} cores, {} build",
        input[0],
        u16::from(input[1]) * 10,
        runs,
        cores(),
        build()
    );
    println!(
        "{:<26} {:>22} {:>20} {:>22}",
        "path", "streamed: first chunk", "streamed: whole", "buffered: whole"
    );
    let mut rows = Vec::new();
    for burst in [false, true] {
        let busy = if burst {
            let spin = h1.clone();
            let forever = 4_000_000_000u32.to_le_bytes().to_vec();
            let job = tokio::spawn(async move {
                let options = InvokeOptions {
                    here_only: true,
                    deadline_ms: Some(110_000),
                    ..Default::default()
                };
                spin.invoke("spin", forever, &options).await
            });
            wait_busy(&h1).await?;
            Some(job)
        } else {
            None
        };
        let (mut first, mut whole, mut whole_buffered) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (f, w) = streamed(&h1, &input, !burst).await?;
            first.push(f);
            whole.push(w);
            whole_buffered.push(buffered(&h1, &input, !burst).await?);
        }
        if let Some(job) = busy {
            job.abort();
        }
        let path = if burst {
            "across a burst (h1 → h2)"
        } else {
            "on the host asked (h1)"
        };
        println!(
            "{path:<26} {:>19.2} ms {:>17.2} ms {:>19.2} ms",
            ms(median(first.clone())),
            ms(median(whole.clone())),
            ms(median(whole_buffered.clone()))
        );
        rows.push(json!({
            "path": path,
            "first_chunk_ms": ms(median(first)),
            "streamed_whole_ms": ms(median(whole)),
            "buffered_whole_ms": ms(median(whole_buffered)),
        }));
    }
    println!("{}", Value::Array(rows));
    Ok(ExitCode::SUCCESS)
}
