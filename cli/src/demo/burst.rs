//! The burst part of `spillway up --hosts N --demo` (N ≥ 2): the same
//! open-loop burst of CPU-bound `spin` jobs is fired at host 1 twice, at
//! N times what host 1 alone can serve (what the N hosts together can):
//! once as usual (full host 1
//! sends work to its peers) and once with `spillway-placement: local` on
//! every job (burst off: host 1 queues, then refuses). One table row each.
//!
//! Host 1's capacity is measured first: one slot serves a spin job of
//! about 100 ms, so it clears `slots` / 0.1 s jobs a second. On a machine
//! with fewer cores than the cluster has slots, peers share the cores host
//! 1 uses, and the table shows that too.

use crate::burst_load::{self, Load, Summary};
use crate::client::Client;
use crate::local_cluster::LocalCluster;
use anyhow::Context;
use serde_json::json;

/// The rounds `spin` runs in about `target_ms` on this machine.
async fn calibrate(client: &Client, target_ms: f64) -> anyhow::Result<u32> {
    const PROBE: u32 = 20_000_000;
    let mut times = Vec::new();
    for _ in 0..3 {
        let answer = client
            .invoke(
                "burst-spin",
                PROBE.to_le_bytes().to_vec(),
                &Default::default(),
            )
            .await?;
        anyhow::ensure!(
            answer.status.is_success(),
            "calibrating spin failed: {:?}",
            answer.error_code()
        );
        let exec = answer.parsed_receipt().map_or(0.0, |r| r.exec_ms);
        times.push(exec.max(0.1));
    }
    times.sort_by(f64::total_cmp);
    let rounds = f64::from(PROBE) * target_ms / times[1];
    Ok(rounds.clamp(1e5, 2e9) as u32)
}

/// Runs the burst demo; `Ok(false)` if burst did not help (nothing ran on
/// a peer, or no more jobs completed than on host 1 alone).
pub(crate) async fn run(cluster: &LocalCluster, slots: u32) -> anyhow::Result<bool> {
    let endpoint = cluster.hosts[0].endpoint();
    let client = Client::new(endpoint, Some(cluster.token.clone()));
    client
        .create_function(&json!({
            "name": "burst-spin", "artifact": "spin", "deadline_ms": 60_000,
            "idempotent": true,
        }))
        .await
        .context("registering burst-spin")?;
    let service_ms = 100.0;
    let rounds = calibrate(&client, service_ms).await?;
    let capacity = f64::from(slots) * 1000.0 / service_ms;
    // What the whole cluster can serve: more would be refused with burst
    // on too.
    let times = cluster.hosts.len();
    let load = Load {
        endpoint: endpoint.to_owned(),
        token: cluster.token.clone(),
        function: "burst-spin".into(),
        input: rounds.to_le_bytes().to_vec(),
        jobs: (slots as usize * times * 15).max(60),
        rate_per_s: times as f64 * capacity,
        here_only: false,
    };
    println!();
    println!(
        "burst: {} spin jobs of ~{service_ms:.0} ms fired at host 1 ({slots} slot(s), ~{capacity:.0} jobs/s) at {:.0} jobs/s, {times}x its capacity (the cluster's)",
        load.jobs, load.rate_per_s
    );
    let on = burst_load::fire(&load).await;
    let off = burst_load::fire(&Load {
        here_only: true,
        ..load.clone()
    })
    .await;
    let hosts: Vec<String> = (1..=cluster.hosts.len()).map(|i| format!("n{i}")).collect();
    burst_load::print_table(&hosts, &[("burst on", &on), ("burst off", &off)]);
    println!(
        "burst off: the same jobs with `spillway-placement: local` (host 1 queues up to --queue, then refuses)"
    );
    if std::thread::available_parallelism().map_or(0, |n| n.get())
        < cluster.hosts.len() * slots as usize
    {
        println!(
            "note: this machine has fewer cores than the cluster has slots, so peers share host 1's cores"
        );
    }
    Ok(burst_helped(&on, &off))
}

/// Whether the burst helped: jobs ran on peers, and more completed than
/// with host 1 alone, or as many completed sooner (host 1's queue can hold
/// the whole load, and then only the time tells). Not necessarily all
/// completed: on a machine whose cores are hyperthreads, a busy cluster
/// serves less than the idle calibration promised, and the queue refuses
/// the rest.
fn burst_helped(on: &Summary, off: &Summary) -> bool {
    let ran_on_peers = on.per_host.keys().any(|h| h != "n1");
    let sooner = on.ok == off.ok && on.throughput() > off.throughput();
    ran_on_peers && (on.ok > off.ok || sooner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn summary(ok: usize, hosts: &[&str], secs: u64) -> Summary {
        Summary {
            jobs: 60,
            ok,
            per_host: hosts.iter().map(|h| ((*h).to_owned(), 1)).collect(),
            burst: 0,
            errors: Default::default(),
            latencies: Vec::new(),
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_burst_helps_by_completing_more_or_as_many_sooner_on_peers() {
        let off = summary(40, &["n1"], 6);
        for (on, helped) in [
            (summary(60, &["n1", "n2"], 6), true),
            (summary(40, &["n1", "n2"], 3), true),
            (summary(40, &["n1", "n2"], 6), false),
            (summary(60, &["n1"], 6), false),
            (summary(30, &["n1", "n2"], 1), false),
        ] {
            assert_eq!(burst_helped(&on, &off), helped, "{on:?}");
        }
    }
}
