//! Where each peer request goes: the one place that hands what arrives
//! over QUIC to the part of this host that owns it.
//!
//! | request                                  | answered by                      |
//! |------------------------------------------|----------------------------------|
//! | Raft RPCs, forwarded proposals, joins,   | `control` (this host's member)   |
//! | read indexes                             |                                  |
//! | status                                   | `job::JobHost::status`           |
//! | an async job's record                    | `job::results` (its origin's)    |
//! | a burst job (its own stream)             | `job::for_peer`                  |
//! | load gossip (datagrams)                  | `job::burst` (`Burst::receive`)  |
//! | an artifact fetch (its own stream)       | `artifacts` (this node's copy)   |
//!
//! What it is not: the transport (`peer`: handshakes, pinning, framing,
//! admission under load) or any of the answers themselves.

use crate::artifacts::HeldArtifact;
use crate::control::Control;
use crate::job::JobHost;
use crate::peer::{ArtifactRefusal, Dispatch, PeerHandler, PeerKind, PeerReply, PeerRequest};
use spillway_consensus::PublicKey;
use spillway_proto::Digest;
use std::sync::Arc;

/// The peer handler of `spillway host`.
#[derive(Debug, Clone)]
pub(crate) struct PeerRoutes {
    pub(crate) control: Arc<Control>,
    pub(crate) jobs: Arc<JobHost>,
}

impl PeerHandler for PeerRoutes {
    async fn handle(&self, from: PeerKind, request: PeerRequest) -> PeerReply {
        let control = &self.control;
        match request {
            PeerRequest::Raft(r) => PeerReply::Raft(control.answer_raft(r).await),
            PeerRequest::Propose(command) => {
                PeerReply::Proposed(control.answer_proposal(&from, command).await)
            }
            PeerRequest::ProposeAudited { token, command } => {
                PeerReply::Proposed(control.answer_audited(&from, &token, &command).await)
            }
            PeerRequest::Join(join) => PeerReply::Joined(control.answer_join(from, join).await),
            PeerRequest::Status => PeerReply::Status(self.jobs.status()),
            PeerRequest::ReadIndex => PeerReply::ReadIndex(control.answer_read_index().await),
            PeerRequest::AsyncJob {
                job,
                tenant,
                cancel,
            } => PeerReply::AsyncJob(
                self.jobs
                    .results
                    .answer(job, &tenant, cancel)
                    .map(|view| view.to_string()),
            ),
            // The service hands these to `dispatch` and `artifact` below.
            PeerRequest::Dispatch(_) | PeerRequest::FetchArtifact { .. } => {
                PeerReply::Error("this request needs a stream of its own".into())
            }
        }
    }

    async fn dispatch(&self, from: PublicKey, job: Dispatch, send: quinn::SendStream) {
        crate::job::for_peer::run_for_peer(&self.jobs, from, job, send).await;
    }

    fn datagram(&self, from: PublicKey, bytes: &[u8]) {
        let state = self.control.state();
        self.jobs.burst.receive(&state, &from, bytes);
    }

    type Artifact = HeldArtifact;
    async fn artifact(&self, digest: Digest, from: u64) -> Result<Self::Artifact, ArtifactRefusal> {
        self.jobs.artifacts.open_held(digest, from).await
    }
}
