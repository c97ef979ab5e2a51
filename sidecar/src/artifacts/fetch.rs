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

use super::Artifacts;
use crate::peer::PeerRequest;
use crate::peer::artifact::{self, FetchError};
use crate::spool::Spooled;
use spillway_proto::{Digest, Failure};
use std::time::{Duration, Instant};

/// How long opening a stream to one holder may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one transfer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

impl Artifacts {
    /// Fetches `digest` from a holder into the node: its size.
    pub(super) async fn fetch(&self, digest: Digest) -> Result<u64, Failure> {
        if self.control.state().holders(&digest).is_empty() {
            self.control.catch_up().await;
        }
        let state = self.control.state();
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
            .filter(|h| *h != self.control.id)
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
            self.record_rate(size, started.elapsed());
            return match self.link.put_artifact(&spooled).await {
                Ok((stored, _)) if stored == digest => {
                    tracing::info!(host = holder, %digest, size, "fetched artifact");
                    Ok(size)
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
        let max = self.limits.largest();
        let into = self
            .spool
            .create(self.limits)
            .map_err(|e| FetchError::Io(format!("spooling: {e}")))?;
        let receive = artifact::receive(&mut recv, into, digest, expected, max);
        tokio::time::timeout(FETCH_TIMEOUT, receive)
            .await
            .map_err(|_| FetchError::Io(format!("no whole copy within {FETCH_TIMEOUT:?}")))?
    }
}
