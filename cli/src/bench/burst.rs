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
use crate::burst_load::{self, Load, Summary};
use crate::client::Client;
use crate::up::{HostOptions, LocalCluster};
use serde_json::json;
use std::process::ExitCode;

pub(crate) async fn run(slots: u32, service_ms: u64, seconds: u64) -> anyhow::Result<ExitCode> {
    let options = HostOptions {
        slots,
        queue: 100_000,
        test_kernels: false,
        synthetic_service_ms: Some(service_ms),
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
    let endpoint = &cluster.hosts[0].endpoint;
    let client = Client::new(endpoint, Some(cluster.token.clone()));
    let noop = include_str!("../../../examples/guests/noop.wat");
    let stored = client
        .put_artifact("noop", noop.as_bytes().to_vec())
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
        endpoint: endpoint.clone(),
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
    Ok(if on.ok == on.jobs {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
