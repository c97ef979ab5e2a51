//! Brings an artifact this host's node lacks from a host that holds it:
//! over QUIC, digest-checked before the node ever sees it, one fetch per
//! digest however many jobs wait for it. The residency loop then records
//! the new holder in the log.

use super::Control;
use crate::peer::{PeerReply, PeerRequest};
use spillway_proto::{Digest, Failure};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Deadline of one transfer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

impl Control {
    /// Makes sure this host's node holds `digest`, fetching it from a
    /// holder if needed.
    pub(crate) async fn ensure_artifact(&self, digest: Digest) -> Result<(), Failure> {
        if self.link.status().held.contains(&digest) {
            return Ok(());
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
        outcome.map_err(|reason| {
            tracing::warn!(%digest, "artifact fetch failed: {reason}");
            Failure::UnknownArtifact { digest }
        })
    }

    async fn fetch(&self, digest: Digest) -> Result<(), String> {
        if self.state().holders(&digest).is_empty() {
            self.catch_up().await;
        }
        let state = self.state();
        let holders: Vec<u64> = state
            .holders(&digest)
            .into_iter()
            .map(|h| h.0)
            .filter(|h| *h != self.id)
            .collect();
        if holders.is_empty() {
            return Err("no host holds it".into());
        }
        let mut errors = Vec::new();
        for holder in holders {
            let started = std::time::Instant::now();
            let reply = self
                .client
                .call(
                    holder,
                    &PeerRequest::FetchArtifact { digest },
                    FETCH_TIMEOUT,
                )
                .await;
            let bytes = match reply {
                Ok(PeerReply::Artifact(Ok(bytes))) => bytes,
                Ok(PeerReply::Artifact(Err(e))) => {
                    errors.push(format!("host {holder}: {e}"));
                    continue;
                }
                Ok(other) => {
                    errors.push(format!("host {holder}: unexpected reply {other:?}"));
                    continue;
                }
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let got = Digest::of(&bytes);
            if got != digest {
                tracing::warn!(host = holder, %digest, %got, "fetched artifact failed its digest check; discarded");
                errors.push(format!("host {holder} sent bytes hashing to {got}"));
                continue;
            }
            let size = bytes.len();
            self.burst.record_fetch(size as u64, started.elapsed());
            match self.link.put_artifact(bytes).await {
                Ok((stored, _)) if stored == digest => {
                    tracing::info!(host = holder, %digest, size, "fetched artifact");
                    return Ok(());
                }
                Ok((stored, _)) => return Err(format!("the node stored {stored}, not {digest}")),
                Err(f) => return Err(format!("the node refused the fetched artifact: {f}")),
            }
        }
        Err(errors.join("; "))
    }
}
