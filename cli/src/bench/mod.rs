//! `spillway bench`: measurements that stop by themselves and print a
//! table naming what they ran on. Targets are checked here and recorded in
//! `docs/benchmarks.md`, never by timed assertions in tests.
//!
//! - `http`: HTTP invoke of a guest on a one-host cluster.
//! - `failover`: leader `kill -9` to the first committed write, on three
//!   hosts, repeated.
//! - `control-log`: commit latency and throughput of the control log on
//!   three voters over loopback QUIC with fsync on.
//! - `dispatch`: the burst dispatch round trip against a raw quinn echo.
//! - `burst`: burst efficiency at 3x overload of one host of three, with
//!   a synthetic service time in the nodes.
//! - `cold-start`: a component's first jobs here and on a peer.
//! - `weights-transfer`: a weights file uploaded and fetched by a peer,
//!   with each sidecar's memory.
//! - `tracing`: HTTP invoke and burst dispatch with span export off and on
//!   (to a live receiver), alternately.

mod burst;
mod cold_start;
mod control_log;
pub(crate) mod dispatch;
mod failover;
mod http;
mod model;
mod openai;
mod stream;
mod tonic_echo;
mod tracing;
mod weights;

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Invoke latency and throughput over HTTP on loopback.
    Http {
        /// Concurrency levels to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        concurrency: Vec<usize>,
        /// Invocations per level (after a warm-up of a tenth as many).
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Slots of the host.
        #[arg(long, default_value_t = 4)]
        slots: u32,
        /// The guest: `noop` (no work at all) or `gpu-noop` (one-element
        /// buffer, one kernel launch, read back; needs a GPU).
        #[arg(long, default_value = "noop")]
        guest: http::BenchGuest,
        /// The node's warm instances (default: the host's default).
        #[arg(long)]
        warm_instances: Option<u32>,
        /// The host's executors (`spillway host --executors`; default
        /// `one`): `0,0` puts two node processes on GPU 0, `--slots` each.
        #[arg(long)]
        executors: Option<String>,
    },
    /// Leader failover on three loopback hosts: `kill -9` of the leader's
    /// `spillway host` process to the first write committed through a
    /// survivor, over fresh clusters.
    Failover {
        /// Clusters to form, fail over and tear down.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Control-log commit latency (one client) and throughput (many
    /// concurrent proposals) on three voters in this process, over
    /// loopback QUIC, with the log fsynced on every append.
    ControlLog {
        /// Proposals per level (after a warm-up of a tenth as many).
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Concurrency levels to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        concurrency: Vec<usize>,
        /// Where the voters keep their logs (default: a fresh temporary
        /// directory, removed afterwards); put it on the disk you mean to
        /// measure.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Burst dispatch round trip (a null executor on the peer) beside a
    /// raw quinn bi-stream echo of the same bytes, in this process.
    Dispatch {
        /// Round trips of each kind (after a warm-up of a tenth as many).
        #[arg(long, default_value_t = 5000)]
        requests: usize,
        /// Job input size in bytes.
        #[arg(long, default_value_t = 1024)]
        payload: usize,
    },
    /// What exporting spans costs: HTTP invoke of the no-op guest on host 1
    /// (run there) and through host 1 to host 2 (a burst dispatch every
    /// job), on two hosts exporting nothing, then on two exporting every
    /// span to a live OTLP receiver in this process; rounds alternate.
    Tracing {
        /// Invocations per measurement (after a warm-up of a tenth as many).
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Off/on rounds.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Burst efficiency: three hosts whose nodes serve each job in a fixed
    /// synthetic time; three times one host's capacity sent to host 1.
    Burst {
        /// Slots per host.
        #[arg(long, default_value_t = 4)]
        slots: u32,
        /// Synthetic service time per job, in ms.
        #[arg(long, default_value_t = 50)]
        service_ms: u64,
        /// How long the load runs, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// A component's first jobs through the whole path on two loopback
    /// hosts: upload, first job there, first job on a host that never saw
    /// it (fetch and compile), warm job. The no-op WAT guest always, and
    /// each component file given.
    ColdStart {
        /// Component files to measure besides the no-op guest (for
        /// example `target/guests/matmul-py.wasm`).
        guests: Vec<PathBuf>,
        /// Warm jobs on the peer after its first (the median is shown).
        #[arg(long, default_value_t = 20)]
        warm: usize,
    },
    /// A weights file uploaded to host 1 of two loopback hosts (streamed)
    /// and fetched by host 2 for its first job that names it, with each
    /// `spillway host` process's memory before and its peak after.
    WeightsTransfer {
        /// The file's size in MiB.
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
    },
    /// Streamed vs buffered answers on two loopback hosts: a streamed
    /// job's time to its first chunk and to its end, a buffered job's to
    /// its whole answer, on the host asked and across a burst hop.
    Stream {
        /// Chunks the guest emits (1 to 9).
        #[arg(long, default_value_t = 5)]
        chunks: u8,
        /// Time between them (ms, a multiple of 10).
        #[arg(long, default_value_t = 100)]
        gap_ms: u16,
        /// Jobs of each kind per path (medians are shown).
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// What the OpenAI framing costs per token: the example model's
    /// completion streamed through `/v1/completions` and as a streamed
    /// invoke, on one loopback host.
    Openai {
        /// The weights (examples/models/tiny_lm/make_weights.py makes them).
        #[arg(long)]
        weights: PathBuf,
        /// The guest (examples/guests/build.sh builds it).
        #[arg(long, default_value = "target/guests/tiny-lm-py.wasm")]
        guest: PathBuf,
        /// Tokens a job.
        #[arg(long, default_value_t = 128)]
        tokens: u32,
        /// Jobs through each path (medians are shown).
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// The example language model on two loopback hosts, its weights and
    /// guest pushed to host 1: each host's first job (host 2 fetches,
    /// compiles and loads), then first-token latency and decode rate with
    /// the weights resident.
    Model {
        /// The weights (examples/models/tiny_lm/make_weights.py makes them).
        #[arg(long)]
        weights: PathBuf,
        /// The guest (examples/guests/build.sh builds it).
        #[arg(long, default_value = "target/guests/tiny-lm-py.wasm")]
        guest: PathBuf,
        #[arg(long, default_value = "Spillway ")]
        prompt: String,
        /// Tokens of the long job (the decode rate's).
        #[arg(long, default_value_t = 64)]
        tokens: u32,
        /// Jobs of each length per host (medians are shown).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Http {
            concurrency,
            requests,
            slots,
            guest,
            warm_instances,
            executors,
        } => {
            http::run(
                concurrency,
                requests,
                slots,
                guest,
                warm_instances,
                executors,
            )
            .await
        }
        BenchCommand::Failover { runs } => failover::run(runs).await,
        BenchCommand::ControlLog {
            requests,
            concurrency,
            dir,
        } => control_log::run(requests, &concurrency, dir).await,
        BenchCommand::Dispatch { requests, payload } => dispatch::run(requests, payload).await,
        BenchCommand::Tracing { requests, rounds } => tracing::run(requests, rounds).await,
        BenchCommand::Burst {
            slots,
            service_ms,
            seconds,
        } => burst::run(slots, service_ms, seconds).await,
        BenchCommand::ColdStart { guests, warm } => cold_start::run(guests, warm).await,
        BenchCommand::WeightsTransfer { size_mib } => weights::run(size_mib).await,
        BenchCommand::Stream {
            chunks,
            gap_ms,
            runs,
        } => stream::run(chunks, gap_ms, runs).await,
        BenchCommand::Openai {
            weights,
            guest,
            tokens,
            runs,
        } => openai::run(&weights, &guest, tokens, runs).await,
        BenchCommand::Model {
            weights,
            guest,
            prompt,
            tokens,
            runs,
        } => {
            let bench = model::ModelBench {
                weights: &weights,
                guest: &guest,
                prompt: &prompt,
                tokens,
                runs,
            };
            model::run(bench).await
        }
    }
}

/// The host's cores, for the table's heading.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The build measured (`debug` or `release`), for the table's heading.
pub(crate) fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
