//! What a job uses of its host, owned in one place: its executors (node processes), the
//! local queue, each tenant's share of its quota here, what this host
//! knows of its peers' load and the client that reaches them, and the
//! artifacts it may have to fetch first. The HTTP handler and the peer
//! routes share one `JobHost`; the gossip loop reads it too.
//!
//! What it is not: the control plane. `control` is read for the log's
//! state and this host's id, and asked to catch up; a job never proposes.

use super::burst::Burst;
use crate::artifacts::Artifacts;
use crate::control::Control;
use crate::executors::Executors;
use crate::peer::{HostStatus, PeerClient};
use crate::queue::LocalQueue;
use crate::quota::TenantQuotas;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// This host's side of every job.
#[derive(Debug)]
pub(crate) struct JobHost {
    pub(crate) control: Arc<Control>,
    pub(crate) executors: Arc<Executors>,
    pub(crate) queue: Arc<LocalQueue>,
    /// This host's share of each tenant's concurrency quota.
    pub(crate) quotas: Arc<TenantQuotas>,
    /// This host's share of each tenant's GPU memory quota.
    pub(crate) gpu_quotas: Arc<crate::quota::gpu::GpuQuotas>,
    /// Peers' load and the burst settings.
    pub(crate) burst: Arc<Burst>,
    pub(crate) client: PeerClient,
    pub(crate) artifacts: Arc<Artifacts>,
    /// The longest any job may run here (a peer's job included).
    pub(crate) max_deadline: Duration,
    /// The async jobs this host accepted.
    pub(crate) results: super::results::Results,
    /// Burst work's series, both ways.
    pub(crate) burst_metrics: crate::metrics::BurstMetrics,
    /// Set when the host stops: peers' jobs are refused from then on, so
    /// the ones running can finish before the node is stopped.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
}

impl JobHost {
    /// This host's member id.
    pub(crate) fn id(&self) -> u64 {
        self.control.id
    }

    /// This host's own status, as peers and the cluster view ask for it.
    pub(crate) fn status(&self) -> HostStatus {
        let node = self.executors.status();
        let state = self.control.state();
        HostStatus {
            node_up: node.up,
            node_pid: node.pid,
            node_restarts: node.restarts,
            slots: node.capabilities.as_ref().map_or(0, |c| c.slots),
            running: self.queue.running(),
            queued: self.queue.depth(),
            resident_artifacts: node.held.len(),
            backends: node
                .capabilities
                .iter()
                .flat_map(|c| &c.backends)
                .map(|b| b.as_str().to_owned())
                .collect(),
            applied_index: self.control.applied_index(),
            completed: node.load.as_ref().map_or(0, |(l, _)| l.completed),
            failed: node.load.as_ref().map_or(0, |(l, _)| l.failed),
            weights: node
                .load
                .as_ref()
                .map_or_else(Vec::new, |(l, _)| l.weights.clone()),
            gpu_memory: node
                .load
                .as_ref()
                .map_or_else(Vec::new, |(l, _)| l.gpu_memory.clone()),
            burst_to: self.burst.sent_to(),
            burst_out: self.burst.sent.load(Ordering::Relaxed),
            burst_in: self.burst.received.load(Ordering::Relaxed),
            quota_usage: self.quotas.usage_of(&state),
            gpu_usage: self.gpu_quotas.usage_of(&state, self.control.id, &node),
            executors: self.executors.each(),
        }
    }
}
