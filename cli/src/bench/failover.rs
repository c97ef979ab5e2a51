//! `spillway bench failover`: how long the cluster cannot take writes when
//! its leader dies.
//!
//! Each run forms a fresh three-host cluster on loopback (real `spillway
//! host` processes, as `spillway up` starts them), warms a write through
//! each host, then sends SIGKILL to the leader's process. From that
//! instant a probe starts a write (`POST /v1/tickets`, one committed log
//! entry) through a survivor every 20 ms; the figure is the time from the
//! kill to the first of them answered as committed. Every run is bounded:
//! no committed write within 20 s fails the benchmark.

use super::cores;
use crate::client::Client;
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::{ms, percentile};
use anyhow::{Context, bail};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the probe starts a write while there is no leader.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// A run without a committed write for this long fails.
const GIVE_UP: Duration = Duration::from_secs(20);

pub(crate) async fn run(runs: usize) -> anyhow::Result<ExitCode> {
    if runs == 0 {
        bail!("--runs must be positive");
    }
    println!(
        "leader failover, 3 hosts on loopback, {} host cores; kill -9 of the leader to the first committed write",
        cores()
    );
    println!("{:>4} {:>8} {:>14}", "run", "leader", "first_write_ms");
    let options = HostOptions {
        slots: 1,
        queue: 8,
        ..HostOptions::default()
    };
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let mut cluster = LocalCluster::start(None, 3, options.clone()).await?;
        let outcome = one_run(&mut cluster).await;
        let dir = cluster.dir.clone();
        cluster.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        let (leader, took) = outcome.with_context(|| format!("run {run}"))?;
        println!("{run:>4} {leader:>8} {:>14.1}", ms(took));
        times.push(took);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "runs {}  min {:.1} ms  p50 {:.1} ms  p90 {:.1} ms  max {:.1} ms  mean {:.1} ms",
        times.len(),
        ms(times[0]),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(*times.last().expect("runs > 0")),
        ms(mean),
    );
    Ok(ExitCode::SUCCESS)
}

/// Kills the leader of `cluster` and times the first committed write.
async fn one_run(cluster: &mut LocalCluster) -> anyhow::Result<(String, Duration)> {
    let clients: Vec<Client> = cluster
        .hosts
        .iter()
        .map(|h| Client::new(h.endpoint(), Some(cluster.token.clone())))
        .collect();
    // Warm every host's path to the leader, as a running cluster has it.
    for c in &clients {
        c.create_ticket(60).await?;
    }
    let view = clients[0].cluster().await?;
    let leader = view["leader"]
        .as_str()
        .context("the cluster has no leader")?
        .to_owned();
    let leader_http = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"] == leader.as_str())
        .and_then(|m| m["http_addr"].as_str())
        .context("the leader is not among the members")?
        .to_owned();
    let index = cluster
        .hosts
        .iter()
        .position(|h| h.endpoint().ends_with(&leader_http))
        .context("the leader is none of this cluster's hosts")?;
    let survivors: Vec<Client> = clients
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, c)| c)
        .collect();

    let killed = Instant::now();
    cluster.kill(index);
    let mut probes = JoinSet::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let mut sent = 0usize;
    let deadline = tokio::time::sleep(GIVE_UP);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let client = survivors[sent % survivors.len()].clone();
                sent += 1;
                probes.spawn(async move { client.create_ticket(60).await.is_ok() });
            }
            Some(done) = probes.join_next() => {
                if done.unwrap_or(false) {
                    let took = killed.elapsed();
                    probes.abort_all();
                    return Ok((leader, took));
                }
            }
            _ = &mut deadline => bail!("no write committed within {GIVE_UP:?} of the kill"),
        }
    }
}
