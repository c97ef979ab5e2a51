//! Answers the control plane's peer requests (as `peer_routes` hands
//! them over): Raft RPCs, proposals forwarded to this host as leader,
//! read indexes, and joins.

use super::{Control, member_list};
use crate::peer::raft_serve::answer_raft;
use crate::peer::{JoinAccepted, JoinRequest, PeerKind, ProposeError, RaftReply, RaftRequest};
use spillway_consensus::{
    ControlCommand, ControlError, ControlResponse, JOIN_VERSION, JoinRefusal,
};

impl Control {
    /// A Raft RPC from another member, for this host's Raft.
    pub(crate) async fn answer_raft(&self, request: RaftRequest) -> RaftReply {
        answer_raft(self.plane.raft(), request).await
    }

    /// A change a member forwards to this host as leader: only what a
    /// host originates about itself (see `origin`), attributed to it.
    pub(crate) async fn answer_proposal(
        &self,
        from: &PeerKind,
        command: ControlCommand,
    ) -> Result<(ControlResponse, u64), ProposeError> {
        let Some(proposer) = self.member_id(from) else {
            return Err(ProposeError::Refused("only a member may propose".into()));
        };
        if let Err(why) =
            super::origin::host_may_propose(proposer, &command, &self.state(), now_unix_ms())
        {
            tracing::warn!(host = proposer, "refused a member's proposal: {why}");
            return Err(ProposeError::Refused(why));
        }
        tracing::debug!(host = proposer, %command, "appending a member's proposal");
        let attributed = ControlCommand::FromHost {
            host: proposer,
            command: Box::new(command),
        };
        self.plane.propose(attributed).await.map_err(forwarded)
    }

    /// A client's change a member forwards with the client's token: checked
    /// and audited here, as leader (see `origin`).
    pub(crate) async fn answer_audited(
        &self,
        from: &PeerKind,
        token: &str,
        command: &ControlCommand,
    ) -> Result<(ControlResponse, u64), ProposeError> {
        let Some(via) = self.member_id(from) else {
            return Err(ProposeError::Refused("only a member may propose".into()));
        };
        let audited = match self.audited(via, token, command) {
            Ok(audited) => audited,
            Err(super::ProposeFailure::Denied(denial)) => return Err(ProposeError::Denied(denial)),
            Err(other) => return Err(ProposeError::Refused(other.to_string())),
        };
        self.plane.propose(audited).await.map_err(forwarded)
    }

    /// A member's question before it answers "not found": this host's
    /// read index, as leader.
    pub(crate) async fn answer_read_index(&self) -> Result<u64, ProposeError> {
        tokio::time::timeout(super::FORWARD_TIMEOUT, self.plane.read_index())
            .await
            .map_err(|_| ProposeError::Failed("no quorum answered in time".into()))?
            .map_err(forwarded)
    }

    /// A join: only from a connection that proved a ticket's one-time key.
    pub(crate) async fn answer_join(
        &self,
        from: PeerKind,
        join: JoinRequest,
    ) -> Result<JoinAccepted, JoinRefusal> {
        let PeerKind::Joiner(ticket_key) = from else {
            return Err(JoinRefusal::AlreadyMember {
                id: self
                    .state()
                    .member_by_key(&join.member.key)
                    .map_or(0, |m| m.id),
            });
        };
        self.admit(ticket_key, join).await
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
