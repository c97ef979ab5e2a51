//! The Spillway sidecar: a host's network face.
//!
//! ```text
//!  HTTP client ──▶ http (auth, limits) ──▶ queue (admission) ──▶ executors ──▶ link ──Unix socket──▶ node
//!                                                                               ▲      (one per executor)
//!                                                  supervisor (spawn, restart) ─┘
//! ```
//!
//! - [`http`] is the ingress: the JSON API of DESIGN §8 and `/metrics`.
//! - `queue` admits jobs through the pure scheduler and holds them in a
//!   bounded queue until a slot of the host's executors is free.
//! - `executors` picks the executor (node process: one, or one per GPU)
//!   a job runs on.
//! - `link` speaks `proto` frames to one executor and matches answers to
//!   jobs; when it dies, every job in flight there ends with
//!   `executor_lost` (an idempotent one is placed again).
//! - `supervisor` spawns each executor, restarts it with backoff and
//!   reports the host degraded meanwhile.
//!
//! - `job` is a job's lifecycle, fed by `http` and by peers alike: where
//!   it runs (through the pure scheduler, the tenant's quota share here
//!   included), the local queue, burst to peers and what peers' load is.
//! - `control` is this host's member of the Raft control plane: joins,
//!   forwarded proposals, membership and residency upkeep.
//! - `artifacts` fetches an artifact the node lacks from a holder, and
//!   sends this node's copies to peers that ask.
//! - `peer_routes` hands each request arriving over QUIC ([`peer`]) to the
//!   one of these that owns it.
//!
//! What it is not: an executor. No tenant code and no CUDA ever run in this
//! process.

pub mod api;
mod artifacts;
mod auth;
mod config;
mod control;
mod error;
mod executors;
pub mod http;
mod idempotency;
mod job;
mod leases;
mod link;
mod metrics;
mod openai;
pub mod owner_only;
pub mod peer;
mod peer_routes;
mod prometheus_text;
mod queue;
mod quota;
mod rate;
mod records;
mod signing;
mod spool;
mod supervisor;
mod tls;

pub use auth::{AdminToken, Denial, ScopedToken, TokenError};
pub use config::{
    ClusterStart, ConfigError, ExecutorLaunch, IngressLimits, NodeLaunch, SidecarConfig,
};
pub use error::SidecarError;
pub use peer::QuotaUsage;
pub use records::{AcceleratorName, ArtifactRecord, FunctionRecord, valid_name};
pub use tls::{TlsError, TlsFiles};

use std::future::Future;

/// This host's wall clock, in Unix milliseconds (ticket and token expiry,
/// audit times: the proposer stamps them, every replica applies the same).
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
use std::sync::Arc;

/// Runs a sidecar until `shutdown` resolves: binds the HTTP listener,
/// starts (or connects to) the node, and serves.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SidecarError> {
    let config = config.validate()?;
    // TLS and the plain-HTTP rule first: a host that would serve wrongly
    // never starts its node or joins its cluster.
    let tls = match config.tls.clone() {
        Some(files) => Some(Arc::new(tls::ServerTls::load(files)?)),
        None => None,
    };
    let plain_warning =
        http::listener::plain_http(config.http_addr, tls.is_some(), config.insecure_http)?;
    owner_only::create_dir(&config.dir).map_err(|source| SidecarError::Io {
        what: "cannot create the state directory",
        path: config.dir.clone(),
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| SidecarError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| SidecarError::Bind {
        addr: config.http_addr,
        source,
    })?;
    let metrics = Arc::new(metrics::Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut list = Vec::new();
    let mut supervisors = tokio::task::JoinSet::new();
    for launch in &config.executors {
        let link = Arc::new(link::NodeLink::new(launch.name.clone()));
        supervisors.spawn(supervisor::supervise(
            launch.clone(),
            link.clone(),
            metrics.clone(),
            config.restart_backoff,
            stop_rx.clone(),
        ));
        list.push(executors::Executor {
            name: launch.name.clone(),
            confined_to: launch.confined_to.clone(),
            link,
        });
    }
    let executors = Arc::new(executors::Executors::new(list));
    metrics.executors.set(config.executors.len() as i64);
    let slots = config.slots * config.executors.len() as u32;
    let queue = Arc::new(queue::LocalQueue::new(slots, config.queue_capacity));
    let started = async {
        let observed = control::Observed {
            proposals: metrics.raft.proposal.clone(),
            leader_changes: metrics.raft.leader_changes.clone(),
        };
        let control = control::start(&config, local_addr, executors.clone(), observed).await?;
        let spool = spool::Spool::open(&config.dir).map_err(|source| SidecarError::Io {
            what: "cannot open the spool in",
            path: config.dir.clone(),
            source,
        })?;
        Ok::<_, SidecarError>((control, spool))
    };
    let (control, spool) = match started.await {
        Ok(started) => started,
        Err(e) => {
            let _ = stop_tx.send(true);
            supervisors.join_all().await;
            return Err(e);
        }
    };
    let client = control.client().clone();
    let artifacts = Arc::new(artifacts::Artifacts::new(
        control.clone(),
        executors.clone(),
        client.clone(),
        spool,
        spool::SizeLimits {
            code: config.max_artifact_bytes as u64,
            weights: config.max_weights_bytes,
        },
        metrics.fetch.clone(),
    ));
    let jobs = Arc::new(job::JobHost {
        control: control.clone(),
        executors: executors.clone(),
        queue: queue.clone(),
        quotas: Default::default(),
        gpu_quotas: Default::default(),
        burst: Arc::new(job::burst::Burst::new(
            config.burst,
            config.placement_policy(),
            config.gossip_every,
        )),
        client: client.clone(),
        artifacts,
        max_deadline: config.max_deadline,
        results: job::results::Results::new(config.async_ttl, config.async_max_bytes),
        burst_metrics: metrics.burst.clone(),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    let (endpoint, pinned) = control.endpoint();
    let routes = peer_routes::PeerRoutes {
        control: control.clone(),
        jobs: jobs.clone(),
    };
    tokio::spawn(peer::serve(endpoint, pinned, Arc::new(routes)));
    tokio::spawn(job::burst::gossip_loop(jobs.clone()));
    let own_status = {
        let jobs = jobs.clone();
        Arc::new(move || jobs.status())
    };
    tokio::spawn(quota::rebalance(control.clone(), own_status, client));
    let app = Arc::new(http::App {
        outcomes: Arc::new(idempotency::Outcomes::new(
            config.idempotency_ttl,
            config.idempotency_max_bytes,
        )),
        rates: Default::default(),
        bodies: http::body::BodyBudget::new(config.ingress.max_body_bytes_in_flight),
        config: config.clone(),
        metrics,
        control: control.clone(),
        jobs,
    });
    tracing::info!(http = %local_addr, dir = %config.dir.display(), tls = tls.is_some(), "sidecar serving");
    if let Some(warning) = plain_warning {
        tracing::warn!("{warning}");
        eprintln!("WARNING: {warning}");
    }
    tokio::spawn(tls::watch(tls.clone(), config.tls_reload_every));
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{local_addr}");

    let mut ingress = config.ingress;
    let open_files = http::listener::raise_open_file_limit();
    ingress.max_connections = http::listener::connection_cap(ingress.max_connections, open_files);
    if ingress.max_connections < config.ingress.max_connections {
        tracing::warn!(
            open_files,
            max_connections = ingress.max_connections,
            "the open-file limit allows fewer HTTP connections than asked for"
        );
    }
    http::listener::serve(listener, http::router(app.clone()), ingress, tls, shutdown).await;
    // The requests it accepted are answered; peers' jobs running here (sent
    // before this host was drained, or before its peers knew) finish too
    // before the node stops, and no new one is taken.
    app.jobs
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let until = tokio::time::Instant::now() + config.max_deadline;
    while app.jobs.queue.running() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    control.shutdown().await;
    let _ = stop_tx.send(true);
    supervisors.join_all().await;
    Ok(())
}
