//! `spillway host`, `spillway node`, `spillway sidecar`: the long-running
//! processes.

use anyhow::Context;
use spillway_node::NodeConfig;
use spillway_sidecar::{NodeLaunch, SidecarConfig};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeLimits {
    /// Jobs that run at once.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// The most memory (MiB) any one job may use.
    #[arg(long, default_value_t = 256)]
    max_memory_mib: u64,
    /// How often deadlines and cancellation are checked (ms).
    #[arg(long, default_value_t = 10)]
    epoch_tick_ms: u64,
    /// GPUs to use: `all`, `none`, or ordinals such as `0,1`.
    #[arg(long, default_value = "all", value_parser = parse_gpus)]
    gpus: GpuChoice,
    /// Load the fault-test GPU kernels (tests only: lets a guest fault the GPU).
    #[arg(long, hide = true)]
    test_kernels: bool,
}

/// `--gpus`: every GPU, or only the listed ordinals (none for an empty list).
#[derive(Debug, Clone)]
pub(crate) struct GpuChoice(Option<Vec<usize>>);

fn parse_gpus(s: &str) -> Result<GpuChoice, String> {
    match s {
        "all" => Ok(GpuChoice(None)),
        "none" => Ok(GpuChoice(Some(Vec::new()))),
        list => list
            .split(',')
            .map(|o| {
                o.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("not a GPU ordinal: {o:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| GpuChoice(Some(v))),
    }
}

impl std::fmt::Display for GpuChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("all"),
            Some(v) if v.is_empty() => f.write_str("none"),
            Some(v) => {
                let list: Vec<String> = v.iter().map(usize::to_string).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// What a sidecar serves from: its state and its HTTP ingress.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Ingress {
    /// State directory (created if missing).
    #[arg(long, default_value_os_t = crate::default_dir())]
    dir: PathBuf,
    /// HTTP ingress address (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Jobs that may wait for a slot before 503 queue_full.
    #[arg(long, default_value_t = 64)]
    queue: u32,
}

#[derive(Debug, clap::Args)]
pub(crate) struct HostArgs {
    #[command(flatten)]
    ingress: Ingress,
    #[command(flatten)]
    limits: NodeLimits,
    /// Exit when standard input closes (used by `spillway up`).
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// The Unix socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// State directory (artifact cache).
    #[arg(long, default_value_os_t = crate::default_dir())]
    dir: PathBuf,
    #[command(flatten)]
    limits: NodeLimits,
    /// Exit when standard input closes (how a sidecar keeps its node from
    /// outliving it).
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SidecarArgs {
    /// The node's Unix socket.
    #[arg(long)]
    node_socket: PathBuf,
    #[command(flatten)]
    ingress: Ingress,
    /// The node's slots (corrected by the node's hello).
    #[arg(long, default_value_t = 4)]
    slots: u32,
}

/// Resolves on Ctrl-C, SIGTERM or, if asked, when stdin closes.
pub(crate) async fn shutdown_signal(stdin_close: bool) {
    use tokio::io::AsyncReadExt;
    let stdin = async {
        if stdin_close {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = stdin => {}
    }
    tracing::info!("shutting down");
}

fn node_config(socket: PathBuf, dir: PathBuf, limits: &NodeLimits) -> NodeConfig {
    NodeConfig {
        socket,
        dir,
        slots: limits.slots,
        max_memory_bytes: limits.max_memory_mib << 20,
        epoch_tick: Duration::from_millis(limits.epoch_tick_ms),
        gpus: limits.gpus.0.clone(),
        test_kernels: limits.test_kernels,
        ..NodeConfig::default()
    }
}

pub(crate) async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = node_config(args.socket, args.dir, &args.limits);
    spillway_node::run(config, shutdown_signal(args.stop_on_stdin_close)).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn sidecar(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    let config = SidecarConfig {
        http_addr: args.ingress.listen,
        dir: args.ingress.dir,
        node_socket: args.node_socket,
        node: NodeLaunch::Connect,
        slots: args.slots,
        queue_capacity: args.ingress.queue,
        ..SidecarConfig::default()
    };
    spillway_sidecar::run(config, shutdown_signal(false)).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn host(args: HostArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.ingress.dir).context("resolving --dir")?;
    let node_dir = dir.join("node");
    let socket = dir.join("node.sock");
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let program = std::env::current_exe().context("locating the spillway binary")?;
    let l = &args.limits;
    let mut node_args: Vec<OsString> = vec![
        "node".into(),
        "--socket".into(),
        socket.clone().into(),
        "--dir".into(),
        node_dir.into(),
        "--slots".into(),
        l.slots.to_string().into(),
        "--max-memory-mib".into(),
        l.max_memory_mib.to_string().into(),
        "--epoch-tick-ms".into(),
        l.epoch_tick_ms.to_string().into(),
        "--gpus".into(),
        l.gpus.to_string().into(),
        "--stop-on-stdin-close".into(),
    ];
    if l.test_kernels {
        node_args.push("--test-kernels".into());
    }
    // Validate the node's half here too, so a bad flag fails before spawning.
    node_config(socket.clone(), dir.clone(), l).validate()?;
    let config = SidecarConfig {
        http_addr: args.ingress.listen,
        dir: dir.join("sidecar"),
        node_socket: socket,
        node: NodeLaunch::Spawn {
            program,
            args: node_args,
        },
        slots: l.slots,
        queue_capacity: args.ingress.queue,
        ..SidecarConfig::default()
    };
    spillway_sidecar::run(config, shutdown_signal(args.stop_on_stdin_close)).await?;
    Ok(ExitCode::SUCCESS)
}
