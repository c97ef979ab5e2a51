//! The sidecar's Prometheus metrics, served at `GET /metrics`: the host's
//! own series to anyone, and the per-tenant series (which name tenants)
//! only to an admin-tenant token or where the operator made them public
//! (`--public-tenant-metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    /// `ok`, or the error code the job ended with.
    pub(crate) outcome: String,
}

/// A placement decision and why it was taken.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    /// `local`, `queue`, `peer` or `refuse`.
    pub(crate) decision: &'static str,
    /// See [`decision_labels`].
    pub(crate) reason: &'static str,
}

/// How a placement is counted: the decision, and why.
///
/// - `local`: `slot_free`; `queue`: `waits_here` (the wait here is within
///   bound, or no peer would be sooner).
/// - `peer`: `quota` (the tenant's share here is used up), `local_wait`
///   (it would queue here longer than a peer takes), or the code of the
///   refusal it would get here (`queue_full`, `no_accelerator`,
///   `no_matching_host`, ...); a queued job that later leaves for a peer
///   counts once more as `left_queue`.
/// - `refuse`: the refusal's code.
pub(crate) fn decision_labels(
    decision: &spillway_scheduler::Decision,
    room: &spillway_scheduler::TenantRoom,
) -> (&'static str, &'static str) {
    use spillway_scheduler::{Decision, Fallback, TenantRoom};
    match (decision, room) {
        (Decision::Local, _) => ("local", "slot_free"),
        (Decision::Queue { .. }, _) => ("queue", "waits_here"),
        (Decision::Peer { .. }, TenantRoom::Exhausted(_)) => ("peer", "quota"),
        (Decision::Peer { fallback, .. }, TenantRoom::Here) => match fallback {
            Fallback::Queue => ("peer", "local_wait"),
            Fallback::Refuse(r) => ("peer", r.code()),
        },
        (Decision::Refuse(r), _) => ("refuse", r.code()),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabel {
    /// Why the node went down (`supervisor::Cause`).
    pub(crate) cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabel {
    pub(crate) tenant: String,
}

/// One tenant's part of the host's GPU memory share on one executor.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantExecutorLabel {
    pub(crate) tenant: String,
    pub(crate) executor: String,
}

/// One tenant's memory pool on one GPU, and which of its figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantPoolLabel {
    pub(crate) tenant: String,
    pub(crate) gpu: u32,
    /// `cap` (the pool's maximum), `reserved` (held from the driver) or
    /// `used` (live allocations).
    pub(crate) kind: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Series labelled by tenant, rendered only when asked for.
    tenant_registry: Registry,
    pub(crate) jobs: Family<Outcome, Counter>,
    pub(crate) latency: Histogram,
    /// Jobs answered ok: their receipt's queue time.
    pub(crate) queue_wait: Histogram,
    pub(crate) queue_depth: Gauge,
    pub(crate) running: Gauge,
    pub(crate) idempotency_keys: Gauge,
    pub(crate) idempotent_replays: Counter,
    /// Node restarts by cause (the supervisor makes every cause's series
    /// at start, so each reads 0 until it happens).
    node_restarts: Family<CauseLabel, Counter>,
    pub(crate) node_up: Gauge,
    /// Executors connected now, and configured.
    pub(crate) executors_up: Gauge,
    pub(crate) executors: Gauge,
    /// `gpu` buffer bytes each tenant's running jobs hold on the node.
    tenant_gpu_bytes: Family<TenantLabel, Gauge>,
    /// Each tenant's memory pool on each GPU (the driver enforces its cap).
    tenant_gpu_pool: Family<TenantPoolLabel, Gauge>,
    /// Each capped tenant's part of the host's share on each executor.
    tenant_gpu_share: Family<TenantExecutorLabel, Gauge>,
    /// Tenants that have had a value, so one whose jobs ended reads 0.
    tenants_seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Jobs by how they got their instance (`warm` or `cold`).
    instance_starts: Family<StartLabel, Counter>,
    /// The node's counts at the last scrape, to add only what is new.
    starts_seen: std::sync::Mutex<(u64, u64)>,
    warm_ready: Gauge,
    /// What this host's artifact fetches did.
    pub(crate) fetch: crate::artifacts::FetchCounters,
    /// Streamed answers (invoke and the OpenAI API).
    pub(crate) streams: StreamMetrics,
    /// The HTTP API's requests.
    pub(crate) http: HttpMetrics,
    /// The control log.
    pub(crate) raft: RaftMetrics,
    /// Burst work, both ways.
    pub(crate) burst: BurstMetrics,
    /// GPUs and peers, as seen at the scrape.
    pub(crate) host: HostGauges,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GpuLabel {
    /// The GPU's index on the host.
    pub(crate) gpu: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    /// The peer's member id (as `/v1/cluster` shows it).
    pub(crate) peer: String,
}

type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

/// What the host sees of its GPUs and its peers, set at each scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostGauges {
    gpu_used: Family<GpuLabel, Gauge>,
    gpu_total: Family<GpuLabel, Gauge>,
    gpu_weights: Family<GpuLabel, Gauge>,
    peer_rtt: Family<PeerLabel, Seconds>,
    peer_gossip_age: Family<PeerLabel, Seconds>,
}

/// One peer as the burst state knows it at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerSeen {
    pub(crate) peer: u64,
    /// The last gossip datagram's round trip.
    pub(crate) rtt: Option<std::time::Duration>,
    /// Since its last load report arrived.
    pub(crate) gossip_age: Option<std::time::Duration>,
}

impl HostGauges {
    fn register(registry: &mut Registry) -> Self {
        let s = Self::default();
        registry.register(
            "gpu_memory_used_bytes",
            "Device memory in use on each GPU of this host's node, as its driver reports it",
            s.gpu_used.clone(),
        );
        registry.register(
            "gpu_memory_total_bytes",
            "Device memory of each GPU of this host's node",
            s.gpu_total.clone(),
        );
        registry.register(
            "gpu_weights_resident_bytes",
            "Bytes of weights resident on each GPU of this host's node",
            s.gpu_weights.clone(),
        );
        registry.register(
            "peer_rtt_seconds",
            "Round trip of the last load-gossip datagram to each peer",
            s.peer_rtt.clone(),
        );
        registry.register(
            "peer_gossip_age_seconds",
            "Time since each peer's last load report arrived (placement ignores a stale one)",
            s.peer_gossip_age.clone(),
        );
        s
    }

    /// The node's last report of its GPUs.
    pub(crate) fn set_gpus(&self, gpus: &[spillway_proto::GpuMemory]) {
        for g in gpus {
            let label = GpuLabel { gpu: g.gpu };
            let bytes = |b: u64| b.min(i64::MAX as u64) as i64;
            self.gpu_used.get_or_create(&label).set(bytes(g.used_bytes));
            self.gpu_total
                .get_or_create(&label)
                .set(bytes(g.total_bytes));
            self.gpu_weights
                .get_or_create(&label)
                .set(bytes(g.weights_bytes));
        }
    }

    /// The peers as the burst state sees them; a peer no longer a member
    /// leaves the page.
    pub(crate) fn set_peers(&self, peers: &[PeerSeen]) {
        self.peer_rtt.clear();
        self.peer_gossip_age.clear();
        for p in peers {
            let label = PeerLabel {
                peer: spillway_proto::NodeId(p.peer).to_string(),
            };
            if let Some(rtt) = p.rtt {
                self.peer_rtt.get_or_create(&label).set(rtt.as_secs_f64());
            }
            if let Some(age) = p.gossip_age {
                self.peer_gossip_age
                    .get_or_create(&label)
                    .set(age.as_secs_f64());
            }
        }
    }
}

/// Streamed answers' series.
#[derive(Debug, Clone)]
pub(crate) struct StreamMetrics {
    /// Acceptance to the first chunk sent on.
    pub(crate) first_chunk: Histogram,
    /// Chunks and their bytes sent on to clients.
    pub(crate) chunks: Counter,
    pub(crate) bytes: Counter,
    /// Streamed answers being sent now.
    pub(crate) open: Gauge,
    /// Completion tokens the OpenAI API's guests reported.
    pub(crate) completion_tokens: Counter,
}

impl StreamMetrics {
    fn register(registry: &mut Registry) -> Self {
        let s = Self {
            // 1 ms to about 65 s.
            first_chunk: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            chunks: Counter::default(),
            bytes: Counter::default(),
            open: Gauge::default(),
            completion_tokens: Counter::default(),
        };
        registry.register(
            "stream_first_chunk_seconds",
            "Streamed answers: acceptance to the first chunk sent on",
            s.first_chunk.clone(),
        );
        registry.register(
            "stream_chunks",
            "Chunks sent on to streaming clients",
            s.chunks.clone(),
        );
        registry.register(
            "stream_bytes",
            "Bytes of chunks sent on to streaming clients",
            s.bytes.clone(),
        );
        registry.register(
            "open_streams",
            "Streamed answers being sent now",
            s.open.clone(),
        );
        registry.register(
            "openai_completion_tokens",
            "Completion tokens the OpenAI API's guests reported",
            s.completion_tokens.clone(),
        );
        s
    }

    /// Counts a stream open until the guard is dropped.
    pub(crate) fn opened(&self) -> OpenStream {
        self.open.inc();
        OpenStream(self.open.clone())
    }

    /// Counts one chunk sent on.
    pub(crate) fn chunk(&self, bytes: usize) {
        self.chunks.inc();
        self.bytes.inc_by(bytes as u64);
    }
}

/// One open stream, counted in `spillway_open_streams` while it lives.
#[derive(Debug)]
pub(crate) struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An HTTP request answered: its route (the router's pattern, so ids and
/// names do not multiply series; `unmatched` for none), method and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) method: String,
    pub(crate) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
    pub(crate) method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The HTTP API's series.
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    /// Arrival to the response's head (a streamed answer's body goes on
    /// after it).
    latency: HistogramFamily<RouteLabels>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        // 0.5 ms to about 65 s.
        fn buckets() -> Histogram {
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        }
        let s = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(buckets),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            s.requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP requests: arrival to the response's head, by route and method",
            s.latency.clone(),
        );
        s
    }

    /// Counts one answered request.
    pub(crate) fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let (route, method) = (route.to_owned(), method.to_owned());
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(seconds);
    }
}

/// Burst work, both ways.
#[derive(Debug, Clone, Default)]
pub(crate) struct BurstMetrics {
    /// Jobs accepted here and answered ok that ran on a peer.
    pub(crate) ran_on_peer: Counter,
    /// Jobs accepted here that a peer took, by outcome.
    pub(crate) burst_out: Family<Outcome, Counter>,
    /// Jobs this host ran for peers, by outcome.
    pub(crate) peer_jobs: Family<Outcome, Counter>,
    /// Peers' jobs this host turned away, by the refusal's code.
    pub(crate) peer_jobs_refused: Family<Outcome, Counter>,
    /// Placement decisions for jobs accepted here, by decision and reason.
    pub(crate) decisions: Family<DecisionLabels, Counter>,
}

impl BurstMetrics {
    fn register(registry: &mut Registry) -> Self {
        let s = Self::default();
        registry.register(
            "jobs_ran_on_peer",
            "Invocations accepted here and answered ok that ran on a peer (burst out)",
            s.ran_on_peer.clone(),
        );
        registry.register(
            "burst_out_jobs",
            "Jobs accepted here that a peer took (burst out), by outcome: ok or the error code, a lost peer's included",
            s.burst_out.clone(),
        );
        registry.register(
            "peer_jobs",
            "Jobs this host ran for peers (burst in), by outcome",
            s.peer_jobs.clone(),
        );
        registry.register(
            "peer_jobs_refused",
            "Peers' jobs this host turned away, by the refusal's code (peer_full, quota_exceeded, ...)",
            s.peer_jobs_refused.clone(),
        );
        registry.register(
            "placement_decisions",
            "Placements of jobs accepted here, by decision (local, queue, peer, refuse) and reason (see docs/operations.md)",
            s.decisions.clone(),
        );
        s
    }

    /// A placement of a job accepted here.
    pub(crate) fn decided(&self, decision: &'static str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
    }

    fn count(family: &Family<Outcome, Counter>, outcome: &str) {
        family
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A job of ours that a peer took ended with `outcome`.
    pub(crate) fn burst_out(&self, outcome: &str) {
        Self::count(&self.burst_out, outcome);
    }

    /// A peer's job ended here with `outcome` (`ok` or a failure's code).
    pub(crate) fn peer_job(&self, outcome: &str) {
        Self::count(&self.peer_jobs, outcome);
    }

    /// A peer's job was refused here with `code`.
    pub(crate) fn peer_job_refused(&self, code: &str) {
        Self::count(&self.peer_jobs_refused, code);
    }
}

/// The host's Raft member, as the control log's series.
#[derive(Debug, Clone)]
pub(crate) struct RaftMetrics {
    term: Gauge,
    leader: Gauge,
    committed: Gauge,
    applied: Gauge,
    /// Times this host saw the leader change (counted by `raft_watch`).
    pub(crate) leader_changes: Counter,
    /// A change proposed to the log until it is applied here.
    pub(crate) proposal: Histogram,
}

impl RaftMetrics {
    fn register(registry: &mut Registry) -> Self {
        let s = Self {
            term: Gauge::default(),
            leader: Gauge::default(),
            committed: Gauge::default(),
            applied: Gauge::default(),
            leader_changes: Counter::default(),
            // 0.5 ms to about 16 s.
            proposal: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        registry.register("raft_term", "The Raft term this host is in", s.term.clone());
        registry.register(
            "raft_leader",
            "1 while this host leads the control log",
            s.leader.clone(),
        );
        registry.register(
            "raft_committed_index",
            "The last control-log index this host knows committed",
            s.committed.clone(),
        );
        registry.register(
            "raft_applied_index",
            "The last control-log index applied on this host",
            s.applied.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Leaders this host saw take over the control log (the first it learned of included)",
            s.leader_changes.clone(),
        );
        registry.register(
            "raft_proposal_seconds",
            "Changes this host proposed to the control log: proposal to applied here",
            s.proposal.clone(),
        );
        s
    }

    /// Sets the gauges from Raft's view at a scrape.
    pub(crate) fn set(&self, status: &spillway_consensus::RaftStatus) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(gauge(status.term));
        self.leader.set(i64::from(status.leader == Some(status.id)));
        self.committed
            .set(gauge(status.committed_index.unwrap_or(0)));
        self.applied.set(gauge(status.applied_index.unwrap_or(0)));
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StartLabel {
    /// `warm`: an instance made ahead of the job; `cold`: made by the job.
    pub(crate) start: &'static str,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("spillway");
        let jobs = Family::<Outcome, Counter>::default();
        // 1 ms to about 65 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let (queue_depth, running, node_up) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let node_restarts = Family::<CauseLabel, Counter>::default();
        let (idempotency_keys, idempotent_replays) = (Gauge::default(), Counter::default());
        registry.register("jobs", "Invocations by outcome", jobs.clone());
        registry.register(
            "job_latency_seconds",
            "Invocation latency from acceptance to answer",
            latency.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "queue_wait_seconds",
            "Jobs answered ok: their receipt's queue time (acceptance until the guest started; for a burst, all but the peer's execution)",
            queue_wait.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting for a node slot",
            queue_depth.clone(),
        );
        registry.register("running_jobs", "Jobs holding a node slot", running.clone());
        registry.register(
            "idempotency_keys",
            "Idempotency keys remembered (running or finished)",
            idempotency_keys.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Requests answered with the first outcome of their idempotency key",
            idempotent_replays.clone(),
        );
        registry.register(
            "node_restarts",
            "Times the node was restarted, by why it went down (device_fault, gpu_overrun, exited, not_started, connection_lost)",
            node_restarts.clone(),
        );
        registry.register(
            "node_up",
            "1 while every executor (node process) is connected",
            node_up.clone(),
        );
        let (executors_up, executors) = (Gauge::default(), Gauge::default());
        registry.register(
            "executors_up",
            "Executors (node processes) connected now",
            executors_up.clone(),
        );
        registry.register(
            "executors",
            "Executors (node processes) this host runs",
            executors.clone(),
        );
        let tenant_gpu_bytes = Family::<TenantLabel, Gauge>::default();
        let mut tenant_registry = Registry::with_prefix("spillway");
        tenant_registry.register(
            "tenant_gpu_memory_bytes",
            "GPU buffer bytes each tenant's running jobs hold on this host's node",
            tenant_gpu_bytes.clone(),
        );
        let tenant_gpu_pool = Family::<TenantPoolLabel, Gauge>::default();
        tenant_registry.register(
            "tenant_gpu_pool_bytes",
            "Each tenant's device memory pool on each GPU of this host's node: cap (the maximum the driver enforces), reserved (held from the driver, freed memory kept for reuse included) and used (live allocations)",
            tenant_gpu_pool.clone(),
        );
        let tenant_gpu_share = Family::<TenantExecutorLabel, Gauge>::default();
        tenant_registry.register(
            "tenant_gpu_share_bytes",
            "Each tenant's part of this host's share of its GPU memory quota on each executor (the cap its jobs there get), where the host has several executors",
            tenant_gpu_share.clone(),
        );
        let instance_starts = Family::<StartLabel, Counter>::default();
        registry.register(
            "instance_starts",
            "Jobs by how they got their instance: warm (made ahead of the job) or cold",
            instance_starts.clone(),
        );
        let warm_ready = Gauge::default();
        registry.register(
            "warm_instances",
            "Instances made ahead of their jobs, ready on this host's node",
            warm_ready.clone(),
        );
        let streams = StreamMetrics::register(&mut registry);
        let http = HttpMetrics::register(&mut registry);
        let raft = RaftMetrics::register(&mut registry);
        let burst = BurstMetrics::register(&mut registry);
        let host = HostGauges::register(&mut registry);
        let fetch = crate::artifacts::FetchCounters::default();
        registry.register(
            "artifact_fetch_received_bytes",
            "Bytes of artifacts received from holders (a resumed transfer counts only what it received again)",
            fetch.received_bytes.clone(),
        );
        registry.register(
            "artifact_fetch_seconds",
            "Artifact fetches from a holder: start until the node stored the whole copy",
            fetch.seconds.clone(),
        );
        registry.register(
            "artifact_fetch_resumes",
            "Artifact transfers that broke and were taken up again from the byte reached",
            fetch.resumed.clone(),
        );
        Self {
            streams,
            http,
            raft,
            burst,
            host,
            fetch,
            tenant_gpu_bytes,
            tenant_gpu_pool,
            tenant_gpu_share,
            tenants_seen: std::sync::Mutex::default(),
            instance_starts,
            starts_seen: std::sync::Mutex::default(),
            warm_ready,
            registry,
            tenant_registry,
            jobs,
            latency,
            queue_wait,
            queue_depth,
            running,
            idempotency_keys,
            idempotent_replays,
            node_restarts,
            node_up,
            executors_up,
            executors,
        }
    }

    /// Counts one node restart, by `cause` (`supervisor::Cause::label`).
    pub(crate) fn node_restarted(&self, cause: &'static str) {
        self.node_restarts
            .get_or_create(&CauseLabel { cause })
            .inc();
    }

    /// Makes the node-restart series of every cause in `causes`, at 0.
    pub(crate) fn node_restart_causes(&self, causes: impl IntoIterator<Item = &'static str>) {
        for cause in causes {
            let _ = self.node_restarts.get_or_create(&CauseLabel { cause });
        }
    }

    /// Records the end of one invocation.
    pub(crate) fn job_ended(&self, outcome: &str, seconds: f64) {
        self.jobs
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// Sets the per-tenant GPU memory from the node's last report.
    pub(crate) fn set_tenant_gpu(&self, held: &[(spillway_proto::TenantId, u64)]) {
        let mut seen = self.tenants_seen.lock().expect("metrics lock");
        for tenant in seen.iter() {
            if !held.iter().any(|(t, _)| t.0 == *tenant) {
                self.tenant_gpu_bytes
                    .get_or_create(&TenantLabel {
                        tenant: tenant.clone(),
                    })
                    .set(0);
            }
        }
        for (tenant, bytes) in held {
            seen.insert(tenant.0.clone());
            self.tenant_gpu_bytes
                .get_or_create(&TenantLabel {
                    tenant: tenant.0.clone(),
                })
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
    }

    /// Sets each tenant's pool on each GPU from the node's last report (a
    /// pool the node no longer has leaves the page).
    pub(crate) fn set_tenant_pools(&self, gpus: &[spillway_proto::GpuMemory]) {
        self.tenant_gpu_pool.clear();
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        for g in gpus {
            for t in &g.tenants {
                let label = |kind| TenantPoolLabel {
                    tenant: t.tenant.0.clone(),
                    gpu: g.gpu,
                    kind,
                };
                if let Some(cap) = t.cap_bytes {
                    self.tenant_gpu_pool
                        .get_or_create(&label("cap"))
                        .set(bytes(cap));
                }
                self.tenant_gpu_pool
                    .get_or_create(&label("reserved"))
                    .set(bytes(t.reserved_bytes));
                self.tenant_gpu_pool
                    .get_or_create(&label("used"))
                    .set(bytes(t.used_bytes));
            }
        }
    }

    /// Sets each tenant's part of the host's GPU memory share on each
    /// executor, as (tenant, executor, bytes) (a part no longer held leaves
    /// the page).
    pub(crate) fn set_tenant_shares(&self, parts: &[(spillway_proto::TenantId, String, u64)]) {
        self.tenant_gpu_share.clear();
        for (tenant, executor, bytes) in parts {
            let label = TenantExecutorLabel {
                tenant: tenant.0.clone(),
                executor: executor.clone(),
            };
            (self.tenant_gpu_share.get_or_create(&label))
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
    }

    /// Adds the node's instance starts since the last call (its counts
    /// start again from 0 when it restarts) and sets the ready gauge.
    pub(crate) fn set_instance_starts(&self, load: &spillway_proto::LoadReport) {
        let mut seen = self.starts_seen.lock().expect("metrics lock");
        let (warm, cold) = (load.warm_starts, load.cold_starts);
        let new = |now: u64, before: u64| if now >= before { now - before } else { now };
        for (start, n) in [("warm", new(warm, seen.0)), ("cold", new(cold, seen.1))] {
            self.instance_starts
                .get_or_create(&StartLabel { start })
                .inc_by(n);
        }
        *seen = (warm, cold);
        self.warm_ready.set(i64::from(load.warm_ready));
    }

    /// The Prometheus text exposition.
    /// The OpenMetrics text: the host's series, and the per-tenant ones
    /// when `tenants`.
    pub(crate) fn render(&self, tenants: bool) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let fail = "writing to a String cannot fail";
        encode_registry(&mut out, &self.registry).expect(fail);
        if tenants {
            encode_registry(&mut out, &self.tenant_registry).expect(fail);
        }
        encode_eof(&mut out).expect(fail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::TenantId;

    #[test]
    fn gpus_and_peers_are_set_at_each_scrape_and_a_gone_peer_leaves() {
        use std::time::Duration;
        let m = Metrics::new();
        m.host.set_gpus(&[spillway_proto::GpuMemory {
            gpu: 1,
            used_bytes: 3 << 30,
            total_bytes: 80 << 30,
            weights_bytes: 1 << 30,
            tenants: Vec::new(),
        }]);
        let seen = |peer, rtt_ms| PeerSeen {
            peer,
            rtt: Some(Duration::from_millis(rtt_ms)),
            gossip_age: Some(Duration::from_millis(250)),
        };
        m.host.set_peers(&[seen(7, 2), seen(9, 4)]);
        m.host.set_peers(&[seen(9, 5)]);
        let page = m.render(false);
        for line in [
            "spillway_gpu_memory_used_bytes{gpu=\"1\"} 3221225472",
            "spillway_gpu_memory_total_bytes{gpu=\"1\"} 85899345920",
            "spillway_gpu_weights_resident_bytes{gpu=\"1\"} 1073741824",
            "spillway_peer_rtt_seconds{peer=\"n9\"} 0.005",
            "spillway_peer_gossip_age_seconds{peer=\"n9\"} 0.25",
        ] {
            assert!(page.contains(line), "no {line}: {page}");
        }
        assert!(!page.contains("peer=\"n7\""), "{page}");
    }

    #[test]
    fn each_placement_is_counted_with_its_reason() {
        use spillway_proto::{NodeId, Refusal};
        use spillway_scheduler::{Decision, Fallback, TenantRoom};
        let peer = |fallback| Decision::Peer {
            candidates: vec![NodeId(2)],
            fallback,
        };
        let quota = Refusal::QuotaExceeded {
            retry_after_ms: 100,
        };
        let rows = [
            (Decision::Local, TenantRoom::Here, ("local", "slot_free")),
            (
                Decision::Queue { position: 3 },
                TenantRoom::Here,
                ("queue", "waits_here"),
            ),
            (
                peer(Fallback::Queue),
                TenantRoom::Here,
                ("peer", "local_wait"),
            ),
            (
                peer(Fallback::Refuse(Refusal::QueueFull { retry_after_ms: 5 })),
                TenantRoom::Here,
                ("peer", "queue_full"),
            ),
            (
                peer(Fallback::Refuse(Refusal::NoAccelerator)),
                TenantRoom::Here,
                ("peer", "no_accelerator"),
            ),
            (
                peer(Fallback::Refuse(quota.clone())),
                TenantRoom::Exhausted(quota.clone()),
                ("peer", "quota"),
            ),
            (
                Decision::Refuse(quota.clone()),
                TenantRoom::Exhausted(quota.clone()),
                ("refuse", "quota_exceeded"),
            ),
        ];
        for (decision, room, want) in rows {
            assert_eq!(
                decision_labels(&decision, &room),
                want,
                "{decision:?} {room:?}"
            );
        }
    }

    #[test]
    fn tenant_gpu_memory_follows_the_nodes_reports_back_to_zero() {
        let m = Metrics::new();
        let acme = TenantId("acme".into());
        m.set_tenant_gpu(&[(acme.clone(), 4096)]);
        assert!(
            m.render(true)
                .contains("spillway_tenant_gpu_memory_bytes{tenant=\"acme\"} 4096")
        );
        // Without asking for tenants, no tenant is named.
        let host_only = m.render(false);
        assert!(!host_only.contains("acme"), "{host_only}");
        assert!(host_only.ends_with("# EOF\n"), "{host_only}");
        m.set_tenant_gpu(&[]);
        assert!(
            m.render(true)
                .contains("spillway_tenant_gpu_memory_bytes{tenant=\"acme\"} 0")
        );
    }

    #[test]
    fn each_tenants_pool_is_shown_per_gpu_only_with_tenants_and_leaves_with_it() {
        let m = Metrics::new();
        let pool = |tenant: &str, cap| spillway_proto::TenantGpuPool {
            tenant: TenantId(tenant.into()),
            cap_bytes: cap,
            reserved_bytes: 96 << 20,
            used_bytes: 64 << 20,
        };
        let gpu = |tenants| spillway_proto::GpuMemory {
            gpu: 0,
            used_bytes: 0,
            total_bytes: 80 << 30,
            weights_bytes: 0,
            tenants,
        };
        m.set_tenant_pools(&[gpu(vec![
            pool("acme", Some(128 << 20)),
            pool("globex", None),
        ])]);
        let page = m.render(true);
        for line in [
            "spillway_tenant_gpu_pool_bytes{tenant=\"acme\",gpu=\"0\",kind=\"cap\"} 134217728",
            "spillway_tenant_gpu_pool_bytes{tenant=\"acme\",gpu=\"0\",kind=\"reserved\"} 100663296",
            "spillway_tenant_gpu_pool_bytes{tenant=\"acme\",gpu=\"0\",kind=\"used\"} 67108864",
            "spillway_tenant_gpu_pool_bytes{tenant=\"globex\",gpu=\"0\",kind=\"used\"} 67108864",
        ] {
            assert!(page.contains(line), "no {line}: {page}");
        }
        assert!(
            !page.contains("tenant=\"globex\",gpu=\"0\",kind=\"cap\""),
            "{page}"
        );
        assert!(!m.render(false).contains("acme"));
        m.set_tenant_pools(&[gpu(vec![pool("globex", None)])]);
        assert!(!m.render(true).contains("acme"));
    }

    #[test]
    fn each_tenants_part_on_each_executor_is_a_tenant_series() {
        let m = Metrics::new();
        let acme = TenantId("acme".into());
        m.set_tenant_shares(&[(acme.clone(), "0".into(), 48 << 20), (acme, "1".into(), 0)]);
        let page = m.render(true);
        for line in [
            "spillway_tenant_gpu_share_bytes{tenant=\"acme\",executor=\"0\"} 50331648",
            "spillway_tenant_gpu_share_bytes{tenant=\"acme\",executor=\"1\"} 0",
        ] {
            assert!(page.contains(line), "no {line}: {page}");
        }
        assert!(!m.render(false).contains("acme"));
        m.set_tenant_shares(&[]);
        assert!(!m.render(true).contains("acme"));
    }

    #[test]
    fn instance_starts_add_up_across_reports_and_a_node_restart() {
        let m = Metrics::new();
        let load = |warm, cold, ready| spillway_proto::LoadReport {
            warm_starts: warm,
            cold_starts: cold,
            warm_ready: ready,
            ..Default::default()
        };
        m.set_instance_starts(&load(5, 2, 1));
        m.set_instance_starts(&load(9, 3, 2));
        // The node restarted: its counts began again.
        m.set_instance_starts(&load(1, 1, 0));
        let text = m.render(false);
        assert!(
            text.contains("spillway_instance_starts_total{start=\"warm\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("spillway_instance_starts_total{start=\"cold\"} 4"),
            "{text}"
        );
        assert!(text.contains("spillway_warm_instances 0"), "{text}");
    }
}
