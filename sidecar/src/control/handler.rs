//! Answers peers: Raft RPCs, proposals forwarded to this host as leader,
//! joins, artifact fetches and status queries.

use super::{Control, member_list};
use crate::peer::artifact::ArtifactRefusal;
use crate::peer::raft_serve::answer_raft;
use crate::peer::{
    Dispatch, JoinAccepted, JoinRequest, PeerHandler, PeerKind, PeerReply, PeerRequest,
    ProposeError,
};
use spillway_consensus::{
    ControlCommand, ControlError, ControlResponse, JOIN_VERSION, JoinRefusal, PublicKey,
};
use spillway_proto::Digest;
use std::sync::Arc;

/// The peer handler of `spillway host`.
#[derive(Debug, Clone)]
pub(crate) struct ControlHandler(pub(crate) Arc<Control>);

impl PeerHandler for ControlHandler {
    async fn handle(&self, from: PeerKind, request: PeerRequest) -> PeerReply {
        let control = &self.0;
        match request {
            PeerRequest::Raft(r) => PeerReply::Raft(answer_raft(control.plane.raft(), r).await),
            PeerRequest::Propose(command) => {
                let Some(proposer) = control.member_id(&from) else {
                    return PeerReply::Proposed(Err(ProposeError::Refused(
                        "only a member may propose".into(),
                    )));
                };
                if let Err(why) = super::origin::host_may_propose(
                    proposer,
                    &command,
                    &control.state(),
                    crate::now_unix_ms(),
                ) {
                    tracing::warn!(host = proposer, "refused a member's proposal: {why}");
                    return PeerReply::Proposed(Err(ProposeError::Refused(why)));
                }
                tracing::debug!(host = proposer, %command, "appending a member's proposal");
                let attributed = ControlCommand::FromHost {
                    host: proposer,
                    command: Box::new(command),
                };
                PeerReply::Proposed(control.plane.propose(attributed).await.map_err(forwarded))
            }
            PeerRequest::ProposeAudited { token, command } => {
                let Some(via) = control.member_id(&from) else {
                    return PeerReply::Proposed(Err(ProposeError::Refused(
                        "only a member may propose".into(),
                    )));
                };
                let audited = match control.audited(via, &token, &command) {
                    Ok(audited) => audited,
                    Err(super::ProposeFailure::Denied(denial)) => {
                        return PeerReply::Proposed(Err(ProposeError::Denied(denial)));
                    }
                    Err(other) => {
                        return PeerReply::Proposed(Err(ProposeError::Refused(other.to_string())));
                    }
                };
                PeerReply::Proposed(control.plane.propose(audited).await.map_err(forwarded))
            }
            PeerRequest::Join(join) => {
                let PeerKind::Joiner(ticket_key) = from else {
                    return PeerReply::Joined(Err(JoinRefusal::AlreadyMember {
                        id: control
                            .state()
                            .member_by_key(&join.member.key)
                            .map_or(0, |m| m.id),
                    }));
                };
                PeerReply::Joined(control.admit(ticket_key, join).await)
            }
            PeerRequest::Status => PeerReply::Status(control.local_status()),
            // The service hands these to `dispatch` and `artifact` below.
            PeerRequest::Dispatch(_) | PeerRequest::FetchArtifact { .. } => {
                PeerReply::Error("this request needs a stream of its own".into())
            }
        }
    }

    async fn dispatch(&self, from: PublicKey, job: Dispatch, send: quinn::SendStream) {
        let control = &*self.0;
        let host = crate::job::JobHost {
            control,
            link: control.link(),
            queue: control.queue(),
        };
        crate::job::for_peer::run_for_peer(host, from, job, send).await;
    }

    fn datagram(&self, from: PublicKey, bytes: &[u8]) {
        self.0.receive_gossip(&from, bytes);
    }

    type Artifact = super::holder::HeldArtifact;
    async fn artifact(&self, digest: Digest) -> Result<Self::Artifact, ArtifactRefusal> {
        super::holder::HeldArtifact::open(self.0.link.clone(), digest).await
    }
}

use crate::now_unix_ms;

/// Join attempts a member takes a second, all tickets together.
const JOINS_PER_S: f64 = 5.0;

/// A proposal's failure as the member that forwarded it hears it.
fn forwarded(e: ControlError) -> ProposeError {
    match e {
        ControlError::NotLeader { leader } => ProposeError::NotLeader { leader },
        other => ProposeError::Failed(other.to_string()),
    }
}

impl Control {
    /// Decides a join: checks the ticket against the committed state here,
    /// then lets the log decide (one use, expiry, duplicate identity) so two
    /// members can never admit with one ticket.
    async fn admit(
        &self,
        ticket_key: [u8; 32],
        join: JoinRequest,
    ) -> Result<JoinAccepted, JoinRefusal> {
        let body = &join.ticket.body;
        if join.version != JOIN_VERSION || body.version != JOIN_VERSION {
            return Err(JoinRefusal::VersionIncompatible {
                ours: JOIN_VERSION,
                theirs: join.version.max(body.version),
            });
        }
        let state = self.state();
        if body.cluster_id != state.cluster_id() {
            return Err(JoinRefusal::WrongCluster {
                ticket: body.cluster_id.clone(),
                cluster: state.cluster_id().to_owned(),
            });
        }
        let issuer = state
            .member(body.issuer)
            .ok_or(JoinRefusal::UnknownTicket)?;
        if !join.ticket.signed_by(&issuer.key) {
            return Err(JoinRefusal::BadSignature);
        }
        // The handshake proved the one-time key; it must be this ticket's.
        let presented = join
            .ticket
            .identity()
            .map_err(|_| JoinRefusal::BadSignature)?;
        if presented.public_key() != ticket_key {
            return Err(JoinRefusal::BadSignature);
        }
        // Joins are few: a flood of them (replayed tickets) is refused
        // before it costs anything more.
        if let Err(wait) = self
            .joins
            .take("join", JOINS_PER_S, std::time::Instant::now())
        {
            return Err(JoinRefusal::Unavailable(format!(
                "too many join attempts; retry in {} ms",
                wait.as_millis().max(1)
            )));
        }
        // A used, expired or unknown ticket is refused from the committed
        // state here, so replaying one never writes to the log.
        let now = now_unix_ms();
        state.admission(
            &ticket_key,
            &body.cluster_id,
            join.version,
            now,
            &join.member,
        )?;
        let command = ControlCommand::Admit {
            ticket: ticket_key,
            cluster_id: body.cluster_id.clone(),
            version: join.version,
            now_unix_ms: now,
            member: join.member,
        };
        match self.propose(command).await {
            Ok(ControlResponse::Admitted { id }) => {
                tracing::info!(host = id, "admitted a host");
                let state = self.state();
                Ok(JoinAccepted {
                    id,
                    cluster_id: state.cluster_id().to_owned(),
                    members: member_list(&state, Some(id)),
                })
            }
            Ok(ControlResponse::Refused(refusal)) => Err(refusal),
            Ok(other) => Err(JoinRefusal::Unavailable(format!("{other:?}"))),
            Err(e) => Err(JoinRefusal::Unavailable(e.to_string())),
        }
    }
}
