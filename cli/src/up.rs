//! `spillway up`: a local cluster on loopback, each host a real `spillway
//! host` process (sidecar plus its node), for trying Spillway, the demo, the
//! benchmark and the integration tests.

use crate::local_cluster::{HostOptions, LocalCluster};
use spillway_sidecar::owner_only;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Hosts to start: the first founds the cluster, the others join it
    /// with tickets (up to 3 voters; the rest are learners).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    hosts: u32,
    /// Slots per host (default 4; with `--demo` on several hosts, this
    /// machine's cores shared among the hosts, at least 1).
    #[arg(long)]
    slots: Option<u32>,
    /// Jobs per host that may wait for a slot before 503 queue_full.
    #[arg(long, default_value_t = 64)]
    queue: u32,
    /// State directory (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the demo workload, print its table, stop the cluster and exit.
    #[arg(long)]
    demo: bool,
    /// Give each host's node one GPU of its own: host N uses GPU N-1 (as
    /// separate GPU machines would); a host with no such GPU runs CPU-only.
    #[arg(long)]
    pin_gpus: bool,
    /// Each host's node processes (`spillway host --executors`): `one`,
    /// `per-gpu`, or a list such as `0,1` or `cpu,cpu`.
    #[arg(long)]
    executors: Option<String>,
    /// Start the nodes with the fault-test GPU kernels (tests only).
    #[arg(long, hide = true)]
    test_kernels: bool,
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let slots = args.slots.unwrap_or_else(|| {
        if args.demo && args.hosts > 1 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            (cores / args.hosts).max(1)
        } else {
            4
        }
    });
    let options = HostOptions {
        slots,
        queue: args.queue,
        test_kernels: args.test_kernels,
        pin_gpus: args.pin_gpus,
        executors: args.executors,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(args.dir, args.hosts, options).await?;
    let env = cluster.env_lines();
    // It holds the admin token.
    owner_only::write(&cluster.dir.join("env"), env.as_bytes())?;
    print!("{env}");
    eprintln!(
        "{} host(s) up in {:.1}s; state in {}, logs in host-*/host.log; `eval \"$(head -2 {}/env)\"` in another shell",
        cluster.hosts.len(),
        started.elapsed().as_secs_f64(),
        cluster.dir.display(),
        cluster.dir.display(),
    );
    eprintln!(
        "status page: {}/status#token=<SPILLWAY_TOKEN from {}/env>",
        cluster.client(0).endpoint(),
        cluster.dir.display(),
    );
    if args.demo {
        let outcome = crate::demo::run(&cluster, slots).await;
        cluster.stop().await;
        return outcome;
    }
    crate::serve::shutdown_signal(false).await;
    eprintln!("stopping the cluster");
    cluster.stop().await;
    Ok(ExitCode::SUCCESS)
}
