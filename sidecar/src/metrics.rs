//! The sidecar's Prometheus metrics, served at `GET /metrics`.

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

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) jobs: Family<Outcome, Counter>,
    pub(crate) latency: Histogram,
    pub(crate) queue_depth: Gauge,
    pub(crate) running: Gauge,
    pub(crate) idempotency_keys: Gauge,
    pub(crate) idempotent_replays: Counter,
    pub(crate) node_restarts: Counter,
    pub(crate) node_up: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("spillway");
        let jobs = Family::<Outcome, Counter>::default();
        // 1 ms to about 65 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let (queue_depth, running, node_up) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let node_restarts = Counter::default();
        let (idempotency_keys, idempotent_replays) = (Gauge::default(), Counter::default());
        registry.register("jobs", "Invocations by outcome", jobs.clone());
        registry.register(
            "job_latency_seconds",
            "Invocation latency from acceptance to answer",
            latency.clone(),
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
            "Times the node was restarted",
            node_restarts.clone(),
        );
        registry.register("node_up", "1 while the node is connected", node_up.clone());
        Self {
            registry,
            jobs,
            latency,
            queue_depth,
            running,
            idempotency_keys,
            idempotent_replays,
            node_restarts,
            node_up,
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

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
