//! `spillway host`, `spillway node`, `spillway sidecar`: the long-running
//! processes.

use crate::executors::{ExecutorsSpec, Planned};
use anyhow::Context;
use spillway_consensus::ControlConfig;
use spillway_node::NodeConfig;
use spillway_sidecar::{
    ClusterStart, ExecutorLaunch, IngressLimits, NodeLaunch, SidecarConfig, TlsFiles,
};
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
    /// The most memory (MiB) any one job may use: its linear memory (at
    /// most 4 GiB, all a 32-bit memory addresses) and its `gpu` buffers
    /// together.
    #[arg(long, default_value_t = 256)]
    max_memory_mib: u64,
    /// The most output (MiB) one job may emit and return. A buffered
    /// answer holds it all in memory; a streamed one holds a 256 KiB window
    /// of it.
    #[arg(long, default_value_t = 16)]
    max_output_mib: u64,
    /// How often deadlines and cancellation are checked (ms).
    #[arg(long, default_value_t = 10)]
    epoch_tick_ms: u64,
    /// GPUs to use: `all`, `none`, or ordinals such as `0,1`.
    #[arg(long, default_value = "all", value_parser = parse_gpus)]
    gpus: GpuChoice,
    /// MiB of tensors of weights each GPU keeps resident for the jobs that
    /// open them (default: half the GPU's memory); past it the least
    /// recently used ones no job is using are evicted.
    #[arg(long)]
    weights_budget_mib: Option<u64>,
    /// Load the fault-test GPU kernels (tests only: lets a guest fault the GPU).
    #[arg(long, hide = true)]
    test_kernels: bool,
    /// Benchmarks only: serve every job by waiting this many ms instead of
    /// running its guest (holds a slot, not a core).
    #[arg(long, hide = true)]
    synthetic_service_ms: Option<u64>,
    /// Record every job's start (time, job id, tenant, function, input
    /// digest) in DIR/node/executions.log: which jobs ran here, and how often.
    #[arg(long)]
    execution_journal: bool,
    /// Instances made ahead of their jobs, across functions (0: off): a job
    /// of a recently used function starts in one instead of instantiating.
    #[arg(long, default_value_t = 4)]
    warm_instances: u32,
    /// Core module instances one component may hold (componentize-py
    /// makes 14).
    #[arg(long, default_value_t = 32)]
    max_core_instances_per_component: u32,
    /// Linear memories one component may hold.
    #[arg(long, default_value_t = 8)]
    max_memories_per_component: u32,
    /// Tables one component may hold.
    #[arg(long, default_value_t = 8)]
    max_tables_per_component: u32,
    /// Lines one job may write to the host log (job.log, stdout, stderr
    /// together); then one "truncated" line, and the rest is dropped.
    #[arg(long, default_value_t = 1000)]
    guest_log_lines: u32,
    /// Bytes one job may write to the host log.
    #[arg(long, default_value_t = 256 << 10)]
    guest_log_bytes: u64,
    /// Compile every component on every node start instead of keeping its
    /// compiled code in DIR/node/compiled (benchmarks compare the two).
    #[arg(long)]
    no_compiled_cache: bool,
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
    /// HTTP ingress address (port 0: any free port, printed at start). Off
    /// loopback it needs --tls-cert and --tls-key, or --insecure-http.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Jobs that may wait for a slot before 503 queue_full.
    #[arg(long, default_value_t = 64)]
    queue: u32,
    /// Largest component or kernel pack this host takes, uploaded or
    /// fetched from a peer, in MiB (spooled to disk, never held in memory).
    #[arg(long, default_value_t = 256)]
    max_artifact_mib: usize,
    /// Largest weights (safetensors) file this host takes, uploaded or
    /// fetched from a peer, in MiB (spooled to disk, then mapped; never
    /// held in memory).
    #[arg(long, default_value_t = 8192)]
    max_weights_mib: u64,
    /// HTTP connections open at once; past it a connection is answered
    /// 503 too_many_connections and closed unread. The open-file limit is
    /// raised to its hard limit at start, and the cap lowered (with a
    /// warning) to leave 256 descriptors for the rest.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// How long a request's headers may take, and a keep-alive connection
    /// may sit idle, in ms.
    #[arg(long, default_value_t = 30_000)]
    header_timeout_ms: u64,
    /// The longest a request body may pause between bytes, in ms (408
    /// body_timeout past it).
    #[arg(long, default_value_t = 10_000)]
    body_timeout_ms: u64,
    /// Request bodies being read into memory at once, over all requests,
    /// in MiB, each counted at its announced length (8 MiB if it announces
    /// none) until read: 503 overloaded past it. Uploads are spooled to
    /// disk and not counted.
    #[arg(long, default_value_t = 256)]
    max_body_mib_in_flight: usize,
    /// Serve the per-tenant series of /metrics (which name tenants) without
    /// a token; by default they need an admin-tenant token.
    #[arg(long)]
    public_tenant_metrics: bool,
    /// Uploads a tenant may make a second on this host (a burst of as
    /// many; 429 rate_limited past it).
    #[arg(long, default_value_t = 10.0)]
    publish_rate: f64,
    /// Serve the API over TLS with this certificate chain (PEM, leaf
    /// first; with --tls-key). Reloaded when the file changes or at SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: only clients with a certificate this CA (PEM) signed may
    /// connect; others are refused in the handshake.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on an address off loopback (refused without it):
    /// only behind a TLS-terminating proxy that is the only way in.
    #[arg(long)]
    insecure_http: bool,
}

impl Ingress {
    /// Fills the HTTP part of a sidecar's configuration.
    fn apply(&self, config: SidecarConfig) -> SidecarConfig {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        SidecarConfig {
            ingress: self.limits(),
            http_addr: self.listen,
            queue_capacity: self.queue,
            max_artifact_bytes: self.max_artifact_mib.saturating_mul(1 << 20),
            max_weights_bytes: self.max_weights_mib.saturating_mul(1 << 20),
            public_tenant_metrics: self.public_tenant_metrics,
            publish_rate_per_s: self.publish_rate,
            tls,
            insecure_http: self.insecure_http,
            ..config
        }
    }

    fn limits(&self) -> IngressLimits {
        IngressLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            max_body_bytes_in_flight: self.max_body_mib_in_flight.saturating_mul(1 << 20),
        }
    }
}

/// How a host takes part in its cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Membership {
    /// QUIC address for peers (port 0: any free port; a restart reuses the
    /// last one).
    #[arg(long, default_value = "127.0.0.1:7071")]
    peer_listen: SocketAddr,
    /// Voters the cluster keeps when this host leads (others are learners).
    #[arg(long, default_value_t = 3)]
    max_voters: usize,
    /// A label for placement rules, `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Take a control-log snapshot every this many entries.
    #[arg(long, default_value_t = 1000)]
    snapshot_every: u64,
    /// Never send jobs to peers: when full, queue here (burst off).
    #[arg(long)]
    no_burst: bool,
    /// How often to gossip this host's load to its peers, in ms.
    #[arg(long, default_value_t = 250)]
    gossip_ms: u64,
    /// Peers tried for one job before it falls back to the local queue.
    #[arg(long, default_value_t = 3)]
    burst_attempts: usize,
    /// How long a job's outcome is remembered under its idempotency key,
    /// in seconds (0: not remembered).
    #[arg(long, default_value_t = 600)]
    idempotency_ttl_s: u64,
    /// How long an async job's result is kept after it ends, in seconds.
    #[arg(long, default_value_t = 3600)]
    async_ttl_s: u64,
    /// The most MiB of async jobs' results kept on this host (oldest first
    /// out).
    #[arg(long, default_value_t = 256)]
    async_results_mib: usize,
    /// Chaos tests only: faults applied to the datagrams this host sends
    /// its peers, e.g. `loss=0.1,dup=0.05,delay=2ms,jitter=5ms,seed=7`.
    #[arg(long, hide = true)]
    chaos_faults: Option<spillway_sidecar::peer::Faults>,
    /// Found a new cluster if this directory belongs to none (= `spillway init`).
    #[arg(long, conflicts_with = "join")]
    pub(crate) init: bool,
    /// Join with this ticket if this directory belongs to no cluster
    /// (= `spillway join`).
    #[arg(long, env = "SPILLWAY_JOIN_TICKET", hide_env_values = true)]
    pub(crate) join: Option<String>,
    /// When founding: write the admin token to this file (created 0600)
    /// instead of printing it (a service's output goes to a journal).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

impl Membership {
    /// Fills the cluster part of a sidecar's configuration.
    fn apply(&self, config: SidecarConfig) -> SidecarConfig {
        let cluster = match (&self.join, self.init) {
            (Some(ticket), _) => ClusterStart::Join(ticket.clone()),
            (None, true) => ClusterStart::Init,
            (None, false) => ClusterStart::Rejoin,
        };
        SidecarConfig {
            peer_addr: self.peer_listen,
            cluster,
            control: ControlConfig {
                snapshot_every: self.snapshot_every,
                keep_behind_snapshot: (self.snapshot_every / 10).max(1),
                ..ControlConfig::default()
            },
            max_voters: self.max_voters,
            labels: self.labels.iter().cloned().collect(),
            burst: !self.no_burst,
            gossip_every: std::time::Duration::from_millis(self.gossip_ms),
            burst_attempts: self.burst_attempts,
            idempotency_ttl: std::time::Duration::from_secs(self.idempotency_ttl_s),
            async_ttl: std::time::Duration::from_secs(self.async_ttl_s),
            async_max_bytes: self.async_results_mib << 20,
            chaos_faults: self.chaos_faults,
            admin_token_file: self.admin_token_file.clone(),
            ..config
        }
    }
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("a label is key=value, got {s:?}"))
}

#[derive(Debug, clap::Args)]
pub(crate) struct HostArgs {
    /// Read settings from this TOML file (`spillway config example` prints
    /// one); a flag given on the command line wins over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten, next_help_heading = "State and the HTTP API")]
    ingress: Ingress,
    #[command(flatten, next_help_heading = "Jobs and the node")]
    limits: NodeLimits,
    /// The node processes (executors) this host runs: `one` (with every
    /// GPU of --gpus), `per-gpu` (one per GPU of --gpus: a GPU fault ends
    /// only that GPU's jobs), or a list of GPU ordinals or `cpu`, one
    /// executor each, such as `0,1`; `0:acme+beta` keeps an executor for
    /// those tenants (their kernel packs share a CUDA context with no other
    /// tenant's memory). --slots is per executor.
    #[arg(long, default_value = "one", value_parser = crate::executors::parse, help_heading = "Jobs and the node")]
    executors: ExecutorsSpec,
    #[command(flatten, next_help_heading = "The cluster")]
    pub(crate) membership: Membership,
    #[command(flatten, next_help_heading = "Traces")]
    pub(crate) trace: crate::telemetry::TraceArgs,
    /// Exit when standard input closes (used by `spillway up`).
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,
    /// `spillway restore`: found the cluster from this backup.
    #[arg(skip)]
    pub(crate) restore: Option<Box<spillway_consensus::Backup>>,
}

impl HostArgs {
    /// The host's name in its spans.
    pub(crate) fn trace_instance(&self) -> String {
        self.trace.instance(self.ingress.listen.port())
    }

    /// The state directory it names.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.ingress.dir
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct JoinArgs {
    /// The ticket from `spillway ticket create`.
    ticket: String,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

pub(crate) async fn join(mut args: JoinArgs) -> anyhow::Result<ExitCode> {
    args.host.membership.join = Some(args.ticket);
    host(args.host).await
}

#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// Read settings from this TOML file (its keys: these flags); a flag
    /// given on the command line wins over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The Unix socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// State directory (artifact cache).
    #[arg(long, default_value_os_t = crate::default_dir())]
    dir: PathBuf,
    /// This node's own files (uploads while they arrive, the execution
    /// journal), for nodes that share one --dir (default: --dir).
    #[arg(long)]
    own_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: NodeLimits,
    #[command(flatten)]
    pub(crate) trace: crate::telemetry::TraceArgs,
    /// Exit when standard input closes (how a sidecar keeps its node from
    /// outliving it).
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SidecarArgs {
    /// Read settings from this TOML file (its keys: these flags); a flag
    /// given on the command line wins over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's Unix socket; repeated, one per executor (node process)
    /// the sidecar runs jobs on.
    #[arg(long, required = true)]
    node_socket: Vec<PathBuf>,
    /// Keep the executor of the Nth --node-socket (from 0) for these
    /// tenants: their jobs run only there, no other tenant's do (their
    /// kernel packs share a CUDA context with no one else's memory).
    /// Repeated, one per kept executor. At least one socket stays shared.
    #[arg(long, value_name = "N=TENANT+TENANT", value_parser = crate::executors::parse_kept)]
    keep_executor: Vec<(usize, Vec<spillway_proto::TenantId>)>,
    #[command(flatten)]
    ingress: Ingress,
    /// Each node's slots (corrected by the node's hello).
    #[arg(long, default_value_t = 4)]
    slots: u32,
    #[command(flatten)]
    membership: Membership,
    #[command(flatten)]
    pub(crate) trace: crate::telemetry::TraceArgs,
}

/// Resolves on Ctrl-C, SIGTERM or, if asked, when stdin closes.
pub(crate) async fn shutdown_signal(stdin_close: bool) {
    let stdin = async {
        if stdin_close {
            // Read on a thread of its own, not the runtime's blocking pool:
            // the runtime waits for its blocking tasks when it shuts down,
            // and a read of a stdin that stays open never ends, so a
            // SIGTERM would never let the process exit.
            let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut stdin = std::io::stdin();
                let mut buf = [0u8; 64];
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = closed.send(());
            });
            let _ = on_close.await;
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
        max_output_bytes: limits.max_output_mib << 20,
        epoch_tick: Duration::from_millis(limits.epoch_tick_ms),
        gpus: limits.gpus.0.clone(),
        test_kernels: limits.test_kernels,
        synthetic_service: limits.synthetic_service_ms.map(Duration::from_millis),
        execution_journal: limits.execution_journal,
        warm_instances: limits.warm_instances,
        max_core_instances_per_component: limits.max_core_instances_per_component,
        max_memories_per_component: limits.max_memories_per_component,
        max_tables_per_component: limits.max_tables_per_component,
        guest_log_lines: limits.guest_log_lines,
        guest_log_bytes: limits.guest_log_bytes,
        compiled_cache: !limits.no_compiled_cache,
        kernel_compiler: kernel_compiler(),
        weights_budget_bytes: limits.weights_budget_mib.map(|mib| mib << 20),
        ..NodeConfig::default()
    }
}

/// This binary's `compile-kernel`: how the node compiles a tenant's CUDA
/// source in a child process.
fn kernel_compiler() -> Option<spillway_kernels::nvrtc::Compiler> {
    match std::env::current_exe() {
        Ok(program) => Some(spillway_kernels::nvrtc::Compiler::spillway(program)),
        Err(e) => {
            tracing::warn!(
                "cannot locate this binary ({e}): kernel packs with CUDA source will be refused"
            );
            None
        }
    }
}

pub(crate) async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    spillway_sidecar::owner_only::create_dir(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    if let Some(own) = &args.own_dir {
        spillway_sidecar::owner_only::create_dir(own)
            .with_context(|| format!("creating {}", own.display()))?;
    }
    let config = NodeConfig {
        own_dir: args.own_dir,
        ..node_config(args.socket, args.dir, &args.limits)
    };
    spillway_node::run(config, shutdown_signal(args.stop_on_stdin_close)).await?;
    Ok(ExitCode::SUCCESS)
}

impl SidecarArgs {
    /// The host's name in its spans.
    pub(crate) fn trace_instance(&self) -> String {
        self.trace.instance(self.ingress.listen.port())
    }
}

pub(crate) async fn sidecar(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    let mut executors: Vec<ExecutorLaunch> = (args.node_socket.into_iter().enumerate())
        .map(|(i, socket)| ExecutorLaunch::shared(i.to_string(), socket, NodeLaunch::Connect))
        .collect();
    for (n, tenants) in args.keep_executor {
        let Some(executor) = executors.get_mut(n) else {
            anyhow::bail!(
                "--keep-executor {n}=…: there are {} --node-socket (counted from 0)",
                executors.len()
            );
        };
        executor.confined_to = tenants;
    }
    let config = SidecarConfig {
        dir: args.ingress.dir.clone(),
        executors,
        slots: args.slots,
        ..SidecarConfig::default()
    };
    let config = args.membership.apply(args.ingress.apply(config));
    spillway_sidecar::run(config, shutdown_signal(false)).await?;
    Ok(ExitCode::SUCCESS)
}

/// The `spillway node` command line that gives a spawned node `l`: every
/// field of [`NodeLimits`] as its flag (`node_args_carry_every_limit`
/// checks that none is left out).
fn node_args(
    socket: &std::path::Path,
    node_dir: PathBuf,
    own_dir: Option<&std::path::Path>,
    gpus: &GpuChoice,
    l: &NodeLimits,
) -> Vec<OsString> {
    let mut node_args: Vec<OsString> = vec![
        "node".into(),
        "--socket".into(),
        socket.into(),
        "--dir".into(),
        node_dir.into(),
        "--slots".into(),
        l.slots.to_string().into(),
        "--max-memory-mib".into(),
        l.max_memory_mib.to_string().into(),
        "--max-output-mib".into(),
        l.max_output_mib.to_string().into(),
        "--epoch-tick-ms".into(),
        l.epoch_tick_ms.to_string().into(),
        "--gpus".into(),
        gpus.to_string().into(),
        "--warm-instances".into(),
        l.warm_instances.to_string().into(),
        "--max-core-instances-per-component".into(),
        l.max_core_instances_per_component.to_string().into(),
        "--max-memories-per-component".into(),
        l.max_memories_per_component.to_string().into(),
        "--max-tables-per-component".into(),
        l.max_tables_per_component.to_string().into(),
        "--guest-log-lines".into(),
        l.guest_log_lines.to_string().into(),
        "--guest-log-bytes".into(),
        l.guest_log_bytes.to_string().into(),
        "--stop-on-stdin-close".into(),
    ];
    for (set, flag) in [
        (l.no_compiled_cache, "--no-compiled-cache"),
        (l.test_kernels, "--test-kernels"),
        (l.execution_journal, "--execution-journal"),
    ] {
        if set {
            node_args.push(flag.into());
        }
    }
    for (value, flag) in [
        (l.synthetic_service_ms, "--synthetic-service-ms"),
        (l.weights_budget_mib, "--weights-budget-mib"),
    ] {
        if let Some(v) = value {
            node_args.push(flag.into());
            node_args.push(v.to_string().into());
        }
    }
    if let Some(own) = own_dir {
        node_args.push("--own-dir".into());
        node_args.push(own.into());
    }
    node_args
}

/// How many GPUs this machine's driver shows, asked of a child (`spillway
/// gpu-count`) so the host's own process never loads the driver.
fn gpu_count(program: &std::path::Path) -> usize {
    let out = std::process::Command::new(program)
        .arg("gpu-count")
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        Ok(out) => {
            tracing::warn!(status = %out.status, "counting GPUs failed: one executor on the CPU backend");
            0
        }
        Err(e) => {
            tracing::warn!("cannot count GPUs ({e}): one executor on the CPU backend");
            0
        }
    }
}

/// The executors `spillway host` spawns from `planned`: one keeps the
/// node's socket and folder as they always were (`DIR/node.sock`, its own
/// files in `DIR/node`); several each have `DIR/node-NAME.sock` and their
/// own files in `DIR/node/executors/NAME`, sharing `DIR/node`'s artifacts
/// and compiled code.
fn executor_launches(
    planned: Vec<Planned>,
    dir: &std::path::Path,
    node_dir: &std::path::Path,
    program: &std::path::Path,
    extra: &[OsString],
    l: &NodeLimits,
) -> anyhow::Result<Vec<ExecutorLaunch>> {
    let several = planned.len() > 1;
    planned
        .into_iter()
        .map(|p| {
            let (socket, own_dir) = match several {
                false => (dir.join("node.sock"), None),
                true => (
                    dir.join(format!("node-{}.sock", p.name)),
                    Some(node_dir.join("executors").join(&p.name)),
                ),
            };
            if let Some(own) = &own_dir {
                spillway_sidecar::owner_only::create_dir(own)
                    .with_context(|| format!("creating {}", own.display()))?;
            }
            let gpus = GpuChoice(p.gpus);
            let mut args = node_args(
                &socket,
                node_dir.to_path_buf(),
                own_dir.as_deref(),
                &gpus,
                l,
            );
            args.extend(extra.iter().cloned());
            Ok(ExecutorLaunch {
                confined_to: p.confined_to,
                ..ExecutorLaunch::shared(
                    p.name,
                    socket,
                    NodeLaunch::Spawn {
                        program: program.to_path_buf(),
                        args,
                    },
                )
            })
        })
        .collect()
}

pub(crate) async fn host(args: HostArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.ingress.dir).context("resolving --dir")?;
    spillway_sidecar::owner_only::create_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let node_dir = dir.join("node");
    spillway_sidecar::owner_only::create_dir(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let program = std::env::current_exe().context("locating the spillway binary")?;
    let l = &args.limits;
    if let Some(ms) = l.synthetic_service_ms {
        tracing::warn!(
            ms,
            "benchmark mode: the node serves every job synthetically"
        );
    }
    // The node's directory first: one of a later format stops the host
    // here, rather than a node it would restart again and again.
    if let Some(from) = spillway_node::open_state_dir(&node_dir)? {
        tracing::info!(
            dir = %node_dir.display(),
            from,
            to = spillway_node::NODE_FORMAT,
            "node state migrated to this build's format"
        );
    }
    // Validate the node's half here too, so a bad flag fails before spawning.
    node_config(dir.join("node.sock"), dir.clone(), l).validate()?;
    let planned = crate::executors::plan(&args.executors, &l.gpus.0, || gpu_count(&program))
        .map_err(anyhow::Error::msg)
        .context("--executors")?;
    let extra = args.trace.node_args(&args.trace_instance());
    let executors = executor_launches(planned, &dir, &node_dir, &program, &extra, l)?;
    tracing::info!(
        executors = executors.len(),
        "starting the host's executors (node processes)"
    );
    let config = SidecarConfig {
        dir: dir.join("sidecar"),
        executors,
        slots: l.slots,
        ..SidecarConfig::default()
    };
    let mut config = args.membership.apply(args.ingress.apply(config));
    if let Some(backup) = args.restore {
        config.cluster = ClusterStart::Restore(backup);
    }
    spillway_sidecar::run(config, shutdown_signal(args.stop_on_stdin_close)).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, Parser};

    #[derive(Parser)]
    struct Limits {
        #[command(flatten)]
        limits: NodeLimits,
    }

    /// Every limit `spillway host` takes reaches the node it spawns: each
    /// flag set to a value not its default comes back whole.
    #[test]
    fn node_args_carry_every_limit() {
        let set = [
            "x",
            "--slots=3",
            "--max-memory-mib=100",
            "--max-output-mib=64",
            "--epoch-tick-ms=7",
            "--gpus=0,1",
            "--weights-budget-mib=512",
            "--test-kernels",
            "--synthetic-service-ms=5",
            "--execution-journal",
            "--warm-instances=2",
            "--max-core-instances-per-component=9",
            "--max-memories-per-component=3",
            "--max-tables-per-component=4",
            "--guest-log-lines=10",
            "--guest-log-bytes=1000",
            "--no-compiled-cache",
        ];
        let limits = Limits::parse_from(set).limits;
        let args = node_args(
            std::path::Path::new("/s"),
            "/d".into(),
            None,
            &limits.gpus,
            &limits,
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        for arg in NodeLimits::augment_args(clap::Command::new("x")).get_arguments() {
            let long = format!("--{}", arg.get_long().unwrap());
            assert!(
                args.contains(&long),
                "{long} is not passed to the node: {args:?}"
            );
        }
        let mut again = vec!["x".to_owned()];
        again.extend(
            args.iter()
                .skip(5) // node --socket /s --dir /d
                .filter(|a| *a != "--stop-on-stdin-close")
                .cloned(),
        );
        let back = Limits::parse_from(again).limits;
        assert_eq!(format!("{back:?}"), format!("{limits:?}"));
    }
}
