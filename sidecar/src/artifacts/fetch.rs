//! Brings an artifact this host's node lacks from a host that holds it:
//! streamed over QUIC, its size checked against the control log and its
//! digest checked as it arrives, before the node ever sees it; one fetch
//! per digest however many jobs wait for it. The residency loop then
//! records the new holder in the log.
//!
//! Holders are tried in turn. A transfer that breaks (the holder died,
//! the connection dropped, no byte came for `artifact::READ_IDLE`) keeps what
//! arrived, and the fetch asks for the rest, from the byte it reached: of
//! the same holder while each try brings more, then of the next holder.
//! Bytes that fail their check are discarded and the next holder tried
//! from the start; when none could send a good copy the job fails
//! `artifact_corrupt` (some copy was bad) or `artifact_unavailable` (none
//! could be had), and never runs.

use super::Artifacts;
use crate::peer::PeerRequest;
use crate::peer::artifact::{self, FetchError};
use crate::spool::SpoolWriter;
use spillway_proto::{Digest, Failure};
use std::time::{Duration, Instant};

/// How long opening a stream to one holder may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before asking a holder again for the rest of a broken transfer.
const RESUME_PAUSE: Duration = Duration::from_millis(100);

/// What to do after one try at a holder failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Ask the same holder for the rest (this try brought bytes).
    ResumeHere,
    /// Ask the next holder for the rest (this one brought nothing more).
    ResumeElsewhere,
    /// Drop what arrived and ask the next holder from the start (the
    /// bytes, or the spool file holding them, cannot be trusted).
    StartOver,
}

/// The decision after a failed try that began at byte `from` and left
/// `have` bytes: pure, so the table test below covers it.
pub(crate) fn after_failure(error: &FetchError, from: u64, have: u64) -> AfterFailure {
    if error.is_corruption() || matches!(error, FetchError::Spool(_)) {
        AfterFailure::StartOver
    } else if have > from {
        AfterFailure::ResumeHere
    } else {
        AfterFailure::ResumeElsewhere
    }
}

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
        let spool_failure = |e: crate::spool::SpoolError| Failure::Internal {
            message: format!("cannot spool a fetched artifact: {e}"),
        };
        let mut into = self.spool.create(self.limits).map_err(spool_failure)?;
        let started = Instant::now();
        for holder in holders {
            loop {
                let from = into.size();
                if from > 0 {
                    self.counters.resumed.inc();
                    tracing::info!(host = holder, %digest, from, "resuming a broken artifact transfer");
                }
                let Err(e) = self.fetch_from(holder, digest, expected, &mut into).await else {
                    return self.hand_to_node(holder, digest, into, started).await;
                };
                errors.push(format!("host {holder}: {e}"));
                match after_failure(&e, from, into.size()) {
                    AfterFailure::ResumeHere => {
                        tracing::warn!(host = holder, %digest, have = into.size(), "artifact transfer broke: {e}");
                        tokio::time::sleep(RESUME_PAUSE).await;
                    }
                    AfterFailure::ResumeElsewhere => {
                        tracing::warn!(host = holder, %digest, "artifact fetch failed: {e}");
                        break;
                    }
                    AfterFailure::StartOver => {
                        if e.is_corruption() {
                            corrupt = true;
                            tracing::error!(host = holder, %digest, "artifact copy rejected as corrupt: {e}");
                        } else {
                            tracing::error!(host = holder, %digest, "artifact fetch failed: {e}");
                        }
                        into = self.spool.create(self.limits).map_err(spool_failure)?;
                        break;
                    }
                }
            }
        }
        let reason = errors.join("; ");
        Err(if corrupt {
            Failure::ArtifactCorrupt { digest }
        } else {
            Failure::ArtifactUnavailable { digest, reason }
        })
    }

    /// Gives the node a whole, checked copy fetched from `holder`.
    async fn hand_to_node(
        &self,
        holder: u64,
        digest: Digest,
        into: SpoolWriter,
        started: Instant,
    ) -> Result<u64, Failure> {
        let spooled = into.finish().await.map_err(|e| Failure::Internal {
            message: format!("cannot spool a fetched artifact: {e}"),
        })?;
        let size = spooled.size;
        self.record_rate(size, started.elapsed());
        match self.executors.put_artifact(&spooled).await {
            Ok((stored, _)) if stored == digest => {
                tracing::info!(host = holder, %digest, size, "fetched artifact");
                self.counters
                    .seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(size)
            }
            Ok((stored, _)) => Err(Failure::Internal {
                message: format!("the node stored {stored}, not {digest}"),
            }),
            Err(f) => Err(f),
        }
    }

    /// Asks `holder` for the bytes of `digest` from `into.size()` on and
    /// appends them to `into`; `Ok` once the copy is whole and checked.
    async fn fetch_from(
        &self,
        holder: u64,
        digest: Digest,
        expected: Option<u64>,
        into: &mut SpoolWriter,
    ) -> Result<(), FetchError> {
        let request = PeerRequest::FetchArtifact {
            digest,
            from: into.size(),
        };
        let mut recv = self
            .client
            .open(holder, &request, OPEN_TIMEOUT)
            .await
            .map_err(|e| FetchError::Io(e.to_string()))?;
        let before = into.size();
        let outcome =
            artifact::receive(&mut recv, into, digest, expected, self.limits.largest()).await;
        self.counters
            .received_bytes
            .inc_by(into.size().saturating_sub(before));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::artifact::ArtifactRefusal;

    #[test]
    fn a_broken_transfer_resumes_and_a_bad_one_starts_over() {
        use AfterFailure::*;
        let truncated = FetchError::Truncated { got: 10, size: 20 };
        let gone = FetchError::Io("connection lost".into());
        let bad = FetchError::DigestMismatch {
            got: Digest::of(b"x"),
        };
        for (error, from, have, then) in [
            (&truncated, 0, 10, ResumeHere),
            (&gone, 10, 15, ResumeHere),
            (&gone, 10, 10, ResumeElsewhere),
            (
                &FetchError::Refused(ArtifactRefusal::NotHeld),
                5,
                5,
                ResumeElsewhere,
            ),
            (&bad, 0, 20, StartOver),
            (
                &FetchError::Refused(ArtifactRefusal::Damaged),
                5,
                5,
                StartOver,
            ),
            (
                &FetchError::WrongOffset { from: 0, asked: 5 },
                5,
                5,
                StartOver,
            ),
            (&FetchError::Spool("disk full".into()), 0, 7, StartOver),
        ] {
            assert_eq!(
                after_failure(error, from, have),
                then,
                "{error:?} {from} {have}"
            );
        }
    }
}
