//! Brings an artifact this host's node lacks from a host that holds it:
//! streamed over QUIC, its size checked against the control log and its
//! digest checked as it arrives, before the node ever sees it; one fetch
//! per digest however many jobs wait for it. The residency loop then
//! records the new holder in the log.
//!
//! Holders are tried in turn. Bytes that fail their check are discarded
//! and the next holder tried; when none could send a good copy the job
//! fails `artifact_corrupt` (some copy was bad) or `artifact_unavailable`
//! (none could be had), and never runs.

use super::Control;
use crate::peer::PeerRequest;
use crate::peer::artifact::{self, FetchError};
use crate::spool::Spooled;
use spillway_proto::{Digest, Failure, JobSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long opening a stream to one holder may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
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
        outcome
    }

    /// Makes sure this host's node holds everything `spec` runs: its
    /// component and each of its kernel packs, fetched as needed, each
    /// checked the same way.
    pub(crate) async fn ensure_job_artifacts(&self, spec: &JobSpec) -> Result<(), Failure> {
        self.ensure_artifact(spec.digest).await?;
        for pack in &spec.kernel_packs {
            self.ensure_artifact(pack.digest).await?;
        }
        Ok(())
    }

    async fn fetch(&self, digest: Digest) -> Result<(), Failure> {
        if self.state().holders(&digest).is_empty() {
            self.catch_up().await;
        }
        let state = self.state();
        // Signatures are checked again before any copy is used.
        if !crate::signing::registrations_trusted(&state, &digest) {
            tracing::error!(%digest, "artifact fetch refused: not signed by a key its tenant trusts");
            return Err(Failure::UntrustedArtifact { digest });
        }
        let expected = state.artifact_size(&digest);
        let holders: Vec<u64> = state
            .holders(&digest)
            .into_iter()
            .map(|h| h.0)
            .filter(|h| *h != self.id)
            .collect();
        drop(state);
        if holders.is_empty() {
            tracing::warn!(%digest, "artifact fetch: no other host holds it");
            return Err(Failure::ArtifactUnavailable {
                digest,
                reason: "no other host holds it".into(),
            });
        }
        let mut errors = Vec::new();
        let mut corrupt = false;
        for holder in holders {
            let started = Instant::now();
            let spooled = match self.fetch_from(holder, digest, expected).await {
                Ok(spooled) => spooled,
                Err(e) => {
                    if e.is_corruption() {
                        corrupt = true;
                        tracing::error!(host = holder, %digest, "artifact copy rejected as corrupt: {e}");
                    } else {
                        tracing::warn!(host = holder, %digest, "artifact fetch failed: {e}");
                    }
                    errors.push(format!("host {holder}: {e}"));
                    continue;
                }
            };
            let size = spooled.size;
            self.burst.record_fetch(size, started.elapsed());
            return match self.link.put_artifact(&spooled).await {
                Ok((stored, _)) if stored == digest => {
                    tracing::info!(host = holder, %digest, size, "fetched artifact");
                    Ok(())
                }
                Ok((stored, _)) => Err(Failure::Internal {
                    message: format!("the node stored {stored}, not {digest}"),
                }),
                Err(f) => Err(f),
            };
        }
        let reason = errors.join("; ");
        Err(if corrupt {
            Failure::ArtifactCorrupt { digest }
        } else {
            Failure::ArtifactUnavailable { digest, reason }
        })
    }

    /// One holder's copy, verified, in the spool.
    async fn fetch_from(
        &self,
        holder: u64,
        digest: Digest,
        expected: Option<u64>,
    ) -> Result<Spooled, FetchError> {
        let request = PeerRequest::FetchArtifact { digest };
        let mut recv = self
            .client
            .open(holder, &request, OPEN_TIMEOUT)
            .await
            .map_err(|e| FetchError::Io(e.to_string()))?;
        let max = self.max_artifact_bytes;
        let into = self
            .spool
            .create(max)
            .map_err(|e| FetchError::Io(format!("spooling: {e}")))?;
        let receive = artifact::receive(&mut recv, into, digest, expected, max);
        tokio::time::timeout(FETCH_TIMEOUT, receive)
            .await
            .map_err(|_| FetchError::Io(format!("no whole copy within {FETCH_TIMEOUT:?}")))?
    }
}
