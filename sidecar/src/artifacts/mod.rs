//! Artifacts between hosts: bringing one this host's node lacks from a
//! host that holds it (`fetch`), and sending this node's copy to a member
//! that asks (`holder`). Both check what they move: a fetched copy against
//! the log's size and its digest, a sent copy by the node before its first
//! chunk.
//!
//! ```text
//!  job ──ensure_job_artifacts──▶ Artifacts ──FetchArtifact (QUIC stream)──▶ holder ──▶ its node
//!                                    └──spool (verified)──▶ executors ──▶ this node
//! ```
//!
//! What it is not: the artifact store (the node keeps artifacts), the
//! record of who holds what (the control log, kept by `control`'s
//! residency loop), or an upload's HTTP side (`http::artifacts`, which
//! spools through [`Artifacts::spool`] too).

mod fetch;
mod holder;

pub(crate) use holder::HeldArtifact;

use crate::control::Control;
use crate::executors::Executors;
use crate::peer::PeerClient;
use crate::spool::{SizeLimits, Spool};
use spillway_proto::{Digest, Failure, JobSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// One fetch of an artifact (its size once fetched): set once, by the
/// first caller, for all.
type Fetch = OnceCell<Result<u64, Failure>>;

/// This host's artifact traffic: fetches in flight and what they measured.
#[derive(Debug)]
pub(crate) struct Artifacts {
    control: Arc<Control>,
    executors: Arc<Executors>,
    client: PeerClient,
    /// Where uploads and fetched artifacts wait for the node.
    spool: Spool,
    /// The largest artifact of each kind this host takes (upload or fetch).
    limits: SizeLimits,
    /// Fetches in flight, one per digest (concurrent callers share it).
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    /// Measured transfer rate, bytes per second (0: none yet).
    rate: AtomicU64,
    counters: FetchCounters,
}

/// What this host's fetches did, for `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct FetchCounters {
    /// Bytes received from holders (a resumed transfer counts only what
    /// it received again).
    pub(crate) received_bytes: prometheus_client::metrics::counter::Counter,
    /// Transfers that broke and were taken up again from the byte reached.
    pub(crate) resumed: prometheus_client::metrics::counter::Counter,
    /// A fetch from its start until the node stored the whole copy.
    pub(crate) seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for FetchCounters {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Self {
            received_bytes: Default::default(),
            resumed: Default::default(),
            // 1 ms to about 9 minutes.
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
        }
    }
}

impl Artifacts {
    pub(crate) fn new(
        control: Arc<Control>,
        executors: Arc<Executors>,
        client: PeerClient,
        spool: Spool,
        limits: SizeLimits,
        counters: FetchCounters,
    ) -> Self {
        Self {
            control,
            executors,
            client,
            spool,
            limits,
            fetches: Mutex::default(),
            rate: AtomicU64::new(0),
            counters,
        }
    }

    pub(crate) fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The largest artifact of each kind this host takes (upload or
    /// fetch).
    pub(crate) fn limits(&self) -> SizeLimits {
        self.limits
    }

    /// The measured transfer rate between hosts, bytes per second (0 until
    /// a fetch large enough to say has finished).
    pub(crate) fn bytes_per_s(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Feeds the transfer-rate estimate with one finished fetch.
    fn record_rate(&self, bytes: u64, took: Duration) {
        if let Some(new) = next_rate(self.rate.load(Ordering::Relaxed), bytes, took) {
            self.rate.store(new, Ordering::Relaxed);
        }
    }

    /// Opens this node's copy of `digest` for a member that asked, to be
    /// sent from byte `from` on.
    pub(crate) async fn open_held(
        &self,
        digest: Digest,
        from: u64,
    ) -> Result<HeldArtifact, crate::peer::artifact::ArtifactRefusal> {
        HeldArtifact::open(self.executors.clone(), digest, from).await
    }

    /// Makes sure this host's node holds `digest`, fetching it from a
    /// holder if needed: the bytes the caller waited to have fetched (0
    /// when the node held it).
    pub(crate) async fn ensure(&self, digest: Digest) -> Result<u64, Failure> {
        if self.executors.status().held.contains(&digest) {
            return Ok(0);
        }
        let cell = {
            let mut fetches = self.fetches.lock().expect("fetches lock");
            fetches
                .entry(digest)
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let outcome = cell
            .get_or_init(|| async { self.fetch(digest).await })
            .await
            .clone();
        self.fetches.lock().expect("fetches lock").remove(&digest);
        outcome
    }

    /// Makes sure this host's node holds everything `spec` runs: its
    /// component, kernel packs and weights, fetched as needed, each
    /// checked the same way. Returns the bytes fetched for it.
    pub(crate) async fn ensure_job_artifacts(&self, spec: &JobSpec) -> Result<u64, Failure> {
        let mut fetched = 0;
        for digest in spec.artifacts() {
            fetched += self.ensure(digest).await?;
        }
        Ok(fetched)
    }
}

/// The transfer-rate estimate after a fetch of `bytes` that took `took`,
/// from the estimate `old` (0: none yet); `None` when the fetch was too
/// small or too quick to say anything about bandwidth.
fn next_rate(old: u64, bytes: u64, took: Duration) -> Option<u64> {
    if bytes < 64 << 10 || took.is_zero() {
        return None;
    }
    let rate = (bytes as f64 / took.as_secs_f64()) as u64;
    Some(if old == 0 { rate } else { (old * 4 + rate) / 5 })
}

#[cfg(test)]
mod tests {
    use super::next_rate;
    use std::time::Duration;

    #[test]
    fn the_rate_follows_large_fetches_only() {
        let s = Duration::from_secs(1);
        for (old, bytes, took, new) in [
            (0, 1 << 20, s, Some(1 << 20)),
            (1_000_000, 2_000_000, s, Some(1_200_000)),
            (5, 1000, s, None),
            (5, 1 << 20, Duration::ZERO, None),
        ] {
            assert_eq!(next_rate(old, bytes, took), new, "{old} {bytes} {took:?}");
        }
    }
}
