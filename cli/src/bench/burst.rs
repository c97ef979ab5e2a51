//! `spillway bench burst`: burst efficiency on three loopback hosts.
//!
//! Each host's node serves jobs synthetically (a fixed service time per
//! job, holding a slot but not a core: see the node's `synthetic` module),
//! so capacity is slots / service time per host even on a machine whose
//! few cores all hosts share. An open-loop load of three times one host's
//! capacity (= the summed capacity of all three) is sent to host 1 alone;
//! burst efficiency is the throughput reached over the summed capacity.
//! The same load with `spillway-placement: local` (burst off) runs beside
//! it as the anchor.

use super::cores;
use super::dispatch::RawPair;
use crate::burst_load::{self, Load, Summary};
use crate::client::Client;
use crate::local_cluster::{HostOptions, LocalCluster};
use crate::stats::{ms, percentile};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

pub(crate) async fn run(slots: u32, service_ms: u64, seconds: u64) -> anyhow::Result<ExitCode> {
    let options = HostOptions {
        slots,
        queue: 100_000,
        synthetic_service_ms: Some(service_ms),
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 3, options).await?;
    let result = measure(&cluster, slots, service_ms, seconds).await;
    cluster.stop().await;
    result
}

async fn measure(
    cluster: &LocalCluster,
    slots: u32,
    service_ms: u64,
    seconds: u64,
) -> anyhow::Result<ExitCode> {
    let endpoint = cluster.hosts[0].endpoint();
    let client = Client::new(endpoint, Some(cluster.token.clone()));
    let noop = include_str!("../../../examples/guests/noop.wat");
    let stored = client
        .put_artifact("noop", noop.as_bytes().to_vec(), None)
        .await?;
    client
        .create_function(&json!({
            "name": "synthetic", "artifact": stored.digest, "deadline_ms": 120_000,
            "idempotent": true,
        }))
        .await?;
    let per_host = f64::from(slots) * 1000.0 / service_ms as f64;
    let summed = 3.0 * per_host;
    let rate = 3.0 * per_host;
    let load = Load {
        endpoint: endpoint.to_owned(),
        token: cluster.token.clone(),
        function: "synthetic".into(),
        input: Vec::new(),
        jobs: (rate * seconds as f64) as usize,
        rate_per_s: rate,
        here_only: false,
    };
    // Warm up: every peer fetches the artifact once.
    let _ = burst_load::fire(&Load {
        jobs: (per_host * 2.0) as usize,
        ..load.clone()
    })
    .await;
    let on = burst_load::fire(&load).await;
    let off = burst_load::fire(&Load {
        here_only: true,
        ..load.clone()
    })
    .await;
    println!(
        "burst efficiency: 3 hosts on loopback, {} cores shared by all, synthetic service {service_ms} ms, {slots} slots per host",
        cores()
    );
    println!(
        "capacity {per_host:.0} jobs/s per host, {summed:.0} summed; open-loop load of {rate:.0} jobs/s (3x one host) at host 1 for {seconds} s"
    );
    let hosts: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
    burst_load::print_table(&hosts, &[("burst on", &on), ("burst off", &off)]);
    let efficiency = |s: &Summary| s.throughput() / summed * 100.0;
    println!(
        "efficiency (throughput / summed capacity): burst on {:.1}%, burst off {:.1}% (target for burst on: at least 85%)",
        efficiency(&on),
        efficiency(&off)
    );

    // Closed loop: 64 clients at host 1, each sending its next job when the
    // last is answered.
    let closed = burst_load::fire_closed(
        &Load {
            jobs: 64 * 20,
            ..load.clone()
        },
        64,
    )
    .await;
    println!();
    println!(
        "closed loop: 64 concurrent clients at host 1, {} jobs",
        closed.jobs
    );
    burst_load::print_table(&hosts, &[("conc 64", &closed)]);
    println!(
        "throughput {:.1} jobs/s = {:.1}% of the summed capacity",
        closed.throughput(),
        efficiency(&closed)
    );

    let latency = burst_latency(&load, slots).await?;
    println!();
    println!(
        "end-to-end latency, one job at a time ({} samples each): local on idle host 1 p50 {:.3} ms; raw quinn echo p50 {:.3} ms; burst (host 1's slots all busy, job ran on a peer) p50 {:.3} ms, p99 {:.3} ms",
        latency.samples,
        ms(latency.local),
        ms(latency.rtt),
        ms(latency.burst),
        ms(latency.burst_p99),
    );
    println!(
        "burst / (local + raw RTT) = {:.2}x (target: at most 1.25x); burst adds {:.3} ms to a local job, {:.1}x the raw RTT (the {service_ms} ms service time dominates the ratio)",
        latency.burst.as_secs_f64() / (latency.local + latency.rtt).as_secs_f64(),
        ms(latency.burst.saturating_sub(latency.local)),
        latency.burst.saturating_sub(latency.local).as_secs_f64() / latency.rtt.as_secs_f64(),
    );
    Ok(if on.ok == on.jobs && closed.ok == closed.jobs {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// p50s of one job's latency: local, raw quinn RTT, and burst.
struct Latency {
    samples: usize,
    local: Duration,
    rtt: Duration,
    burst: Duration,
    burst_p99: Duration,
}

/// One job at a time: on idle host 1 (local), and right after host 1's
/// `slots` are filled with jobs kept there (`spillway-placement: local`),
/// so it runs on a peer (burst); beside them, a raw quinn echo of a small
/// frame on loopback.
async fn burst_latency(load: &Load, slots: u32) -> anyhow::Result<Latency> {
    const SAMPLES: usize = 200;
    let one = Load {
        jobs: 1,
        ..load.clone()
    };
    let mut local = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let s = burst_load::fire(&one).await;
        anyhow::ensure!(
            s.ok == 1 && s.burst == 0,
            "a local sample did not run locally"
        );
        local.extend(s.latencies);
    }
    let raw = RawPair::start().await?;
    let frame = vec![7u8; 256];
    let mut rtt = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        rtt.push(raw.round_trip(&frame).await?);
    }
    raw.close();
    let fill = Load {
        jobs: slots as usize,
        rate_per_s: 1e6,
        here_only: true,
        ..load.clone()
    };
    let mut burst = Vec::with_capacity(SAMPLES);
    let mut attempts = 0;
    while burst.len() < SAMPLES && attempts < SAMPLES * 3 {
        attempts += 1;
        let fillers = tokio::spawn({
            let fill = fill.clone();
            async move { burst_load::fire(&fill).await }
        });
        // Let the fillers take host 1's slots (they hold them for the
        // service time), then send the measured job.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = burst_load::fire(&one).await;
        let _ = fillers.await;
        if s.ok == 1 && s.burst == 1 {
            burst.extend(s.latencies);
        }
    }
    anyhow::ensure!(!burst.is_empty(), "no sample burst to a peer");
    for v in [&mut local, &mut rtt, &mut burst] {
        v.sort();
    }
    Ok(Latency {
        samples: burst.len(),
        local: percentile(&local, 0.5),
        rtt: percentile(&rtt, 0.5),
        burst: percentile(&burst, 0.5),
        burst_p99: percentile(&burst, 0.99),
    })
}
