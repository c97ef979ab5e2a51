//! The sidecar's side of the control plane: this host's Raft member and
//! the loops that keep the log and the host in step.
//!
//! ```text
//!             HTTP handlers ──propose──▶ Control ──(leader? local : forward over QUIC)──▶ Raft log
//!                           ◀──state()── (cached ControlState, refreshed on every apply)
//!  peer_routes ──▶ handler (Raft RPCs, forwarded proposals, joins)
//!  loops: sync (pinned keys, peer addresses, cache) · reconcile (leader: learners, voters)
//!         · residency (node's artifacts → log, in batches) · self-update (addresses, GPUs)
//! ```
//!
//! - `start` founds a cluster (`init`), joins one with a ticket, or
//!   rejoins the one this host's directory belongs to.
//! - `handler` answers the control plane's peer requests; `tasks` runs
//!   the loops; `membership_plan` is the leader's membership decision.
//!
//! What it is not: where a job runs, the queue, quotas or burst (`job`),
//! artifact transfer (`artifacts`), or the routing of peer requests
//! (`peer_routes`).

mod handler;
mod local;
mod membership_plan;
pub(crate) mod origin;
mod start;
mod tasks;

pub(crate) use start::{Observed, start};

use crate::executors::Executors;
use crate::peer::{HostIdentity, PeerClient, PeerEndpoint, PeerReply, PeerRequest, PinnedPeers};
use crate::peer::{ProposeError, TicketMember};
use spillway_consensus::{
    ControlCommand, ControlError, ControlPlane, ControlResponse, ControlState, MemberState,
    RaftStatus,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a proposal may look for a leader before it gives up.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one forwarded proposal.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// The least time between two catch-ups for unknown tokens.
const CATCH_UP_GAP: Duration = Duration::from_millis(50);

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeFailure {
    /// No leader answered in time (an election, a partition): retry.
    #[error("the control plane has no reachable leader: {0}")]
    NoLeader(String),
    #[error("the control plane failed: {0}")]
    Failed(String),
    /// The leader refused the client's token for this change.
    #[error("{0}")]
    Denied(crate::auth::Denial),
    /// Not a change the asker may make: a host's change that is not about
    /// itself, a client's change that is not a client's to make or not for
    /// its tenant.
    #[error("{0}")]
    Refused(String),
}

/// The live members other than `except`, as tickets, join answers and
/// `membership.json` list them.
pub(crate) fn member_list(state: &ControlState, except: Option<u64>) -> Vec<TicketMember> {
    state
        .members()
        .filter(|m| m.state != MemberState::Removed && Some(m.id) != except)
        .map(|m| TicketMember {
            id: m.id,
            key: m.key,
            quic_addr: m.quic_addr.clone(),
        })
        .collect()
}

/// This host's control-plane member and peer side.
pub(crate) struct Control {
    pub(crate) id: u64,
    plane: ControlPlane,
    client: PeerClient,
    endpoint: PeerEndpoint,
    pinned: PinnedPeers,
    identity: HostIdentity,
    state: watch::Sender<Arc<ControlState>>,
    /// The node, for the GPUs this host reports and the artifacts it
    /// holds (residency).
    executors: Arc<Executors>,
    /// Join attempts this member took lately (rate-limited).
    joins: crate::rate::RateLimits,
    max_voters: usize,
    http_addr: std::net::SocketAddr,
    /// When [`Control::catch_up_shared`] last began to ask the leader.
    last_catch_up: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// The peers last saved to `membership.json` (saved again only when
    /// they change).
    saved_peers: Mutex<Vec<TicketMember>>,
    /// When this host may next ask whether every member runs its build
    /// (`None`: now; `Control::every_member_runs_this_build`).
    next_build_check: Mutex<Option<tokio::time::Instant>>,
    /// How long this host's proposals take to be applied here
    /// (`spillway_raft_proposal_seconds`).
    proposals: prometheus_client::metrics::histogram::Histogram,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control state as applied here (cheap: shared).
    pub(crate) fn state(&self) -> Arc<ControlState> {
        self.state.borrow().clone()
    }

    /// Raft's view from this host.
    pub(crate) fn raft_status(&self) -> RaftStatus {
        self.plane.status()
    }

    /// The index of the last log entry applied here.
    pub(crate) fn applied_index(&self) -> Option<u64> {
        self.plane.applied_index()
    }

    /// The client this member reaches its peers with (shared: one
    /// connection per peer for Raft, jobs and artifacts alike).
    pub(crate) fn client(&self) -> &PeerClient {
        &self.client
    }

    /// The QUIC endpoint peers reach this host on, and the keys it lets
    /// in (for `peer::serve`).
    pub(crate) fn endpoint(&self) -> (PeerEndpoint, PinnedPeers) {
        (self.endpoint.clone(), self.pinned.clone())
    }

    pub(crate) fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    pub(crate) fn quic_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Appends `command` through the leader (this host, or forwarded over
    /// QUIC) and waits until it is applied here too, so a caller reads its
    /// own write. The leader takes from a member only what a host
    /// originates about itself (see `origin`).
    pub(crate) async fn propose(
        &self,
        command: ControlCommand,
    ) -> Result<ControlResponse, ProposeFailure> {
        let forward = PeerRequest::Propose(command.clone());
        self.through_leader(|| Ok(command.clone()), &forward).await
    }

    /// Appends what `here` makes when this host leads, else sends
    /// `forward` to the leader, until one answers (or `PROPOSE_TIMEOUT`);
    /// then waits until the entry is applied here too.
    async fn through_leader(
        &self,
        here: impl Fn() -> Result<ControlCommand, ProposeFailure>,
        forward: &PeerRequest,
    ) -> Result<ControlResponse, ProposeFailure> {
        let started = Instant::now();
        let answer = self.through_leader_untimed(here, forward).await;
        if answer.is_ok() {
            self.proposals.observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    async fn through_leader_untimed(
        &self,
        here: impl Fn() -> Result<ControlCommand, ProposeFailure>,
        forward: &PeerRequest,
    ) -> Result<ControlResponse, ProposeFailure> {
        let until = Instant::now() + PROPOSE_TIMEOUT;
        let mut last = String::from("no leader elected yet");
        while Instant::now() < until {
            let leader = match self.plane.propose(here()?).await {
                Ok((response, _)) => {
                    self.reload_state().await;
                    return Ok(response);
                }
                Err(ControlError::NotLeader { leader }) => leader,
                Err(e) => return Err(ProposeFailure::Failed(e.to_string())),
            };
            match leader.filter(|l| *l != self.id) {
                Some(leader) => match self.client.call(leader, forward, FORWARD_TIMEOUT).await {
                    Ok(PeerReply::Proposed(Ok((response, index)))) => {
                        self.wait_applied(Some(index)).await;
                        return Ok(response);
                    }
                    Ok(PeerReply::Proposed(Err(e @ ProposeError::NotLeader { .. }))) => {
                        last = e.to_string();
                    }
                    Ok(PeerReply::Proposed(Err(ProposeError::Failed(e)))) => {
                        return Err(ProposeFailure::Failed(e));
                    }
                    Ok(PeerReply::Proposed(Err(ProposeError::Denied(denial)))) => {
                        return Err(ProposeFailure::Denied(denial));
                    }
                    Ok(PeerReply::Proposed(Err(ProposeError::Refused(why)))) => {
                        return Err(ProposeFailure::Refused(why));
                    }
                    Ok(other) => last = format!("unexpected reply {other:?}"),
                    Err(e) => last = e.to_string(),
                },
                None => last = "no leader elected yet".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ProposeFailure::NoLeader(last))
    }

    /// The member id of the peer `from`, if it is a member now.
    pub(crate) fn member_id(&self, from: &crate::peer::PeerKind) -> Option<u64> {
        match from {
            crate::peer::PeerKind::Member(key) => self
                .state()
                .member_by_key(key)
                .filter(|m| m.state != spillway_consensus::MemberState::Removed)
                .map(|m| m.id),
            crate::peer::PeerKind::Joiner(_) => None,
        }
    }

    /// Appends a client's change, audited: the leader checks `token`, the
    /// change's scope and tenant against its own state and writes the
    /// audit record (see `origin`). Here when this host leads, else
    /// forwarded to the leader with the token.
    pub(crate) async fn propose_audited(
        &self,
        token: &str,
        command: ControlCommand,
    ) -> Result<ControlResponse, ProposeFailure> {
        let forward = PeerRequest::ProposeAudited {
            token: token.to_owned(),
            command: command.clone(),
        };
        self.through_leader(|| self.audited(self.id, token, &command), &forward)
            .await
    }

    /// `command` as an audited change made with `token` through member
    /// `via`, if this host's state lets the token make it.
    pub(crate) fn audited(
        &self,
        via: u64,
        token: &str,
        command: &ControlCommand,
    ) -> Result<ControlCommand, ProposeFailure> {
        let scope = origin::client_change_scope(command).ok_or_else(|| {
            ProposeFailure::Refused(format!("\"{command}\" is not a client's change"))
        })?;
        let now = crate::now_unix_ms();
        let state = self.state();
        let principal =
            crate::auth::authenticate(&state, token, scope, now).map_err(ProposeFailure::Denied)?;
        origin::acts_within(&principal, command).map_err(ProposeFailure::Refused)?;
        Ok(ControlCommand::Audited {
            by: principal.token.unwrap_or_else(|| "admin-token".into()),
            tenant: principal.tenant,
            unix_ms: now,
            via,
            command: Box::new(command.clone()),
        })
    }

    /// Reloads the cached state from the state machine (the sync loop does
    /// too, a moment later; a writer must read its own write at once).
    async fn reload_state(&self) {
        self.state.send_replace(Arc::new(self.plane.state().await));
    }

    /// Waits (briefly) until this host has applied the entry at `target`
    /// (after a forwarded write, so the caller reads its own write).
    async fn wait_applied(&self, target: Option<u64>) {
        self.wait_applied_until(target, Instant::now() + FORWARD_TIMEOUT)
            .await;
    }

    async fn wait_applied_until(&self, target: Option<u64>, until: Instant) {
        let mut changes = self.plane.changes();
        while self.plane.applied_index() < target && Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.next()).await;
        }
        self.reload_state().await;
    }

    /// Waits (briefly) until this host has applied everything the cluster
    /// had committed when it was called: called before answering "not
    /// found" or "unknown token", so what was made through another host a
    /// moment ago is found here too.
    ///
    /// The leader names its read index (it confirms that it still leads
    /// first, so a deposed leader cannot name a stale one). While no leader
    /// is known, or the one asked no longer leads or cannot be reached, it
    /// waits for Raft to move and asks again, for at most
    /// `FORWARD_TIMEOUT`; then it answers from what this host has.
    /// Whether it caught up: `false` when it answers from what it has.
    pub(crate) async fn catch_up(&self) -> bool {
        let until = Instant::now() + FORWARD_TIMEOUT;
        let mut changes = self.plane.changes();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let read_index = match self.plane.status().leader {
                Some(leader) if leader == self.id => {
                    tokio::time::timeout(left, self.plane.read_index())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                Some(leader) => match self
                    .client
                    .call(leader, &PeerRequest::ReadIndex, left)
                    .await
                {
                    Ok(PeerReply::ReadIndex(Ok(index))) => Some(index),
                    _ => None,
                },
                None => None,
            };
            if let Some(index) = read_index {
                self.wait_applied_until(Some(index), until).await;
                return self.plane.applied_index() >= Some(index);
            }
            if Instant::now() >= until {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.next()).await;
        }
        tracing::debug!(
            "could not learn the cluster's read index; answering from this host's state"
        );
        self.reload_state().await;
        false
    }

    /// A backup of the control state holding every change the cluster had
    /// committed when it was asked for (`None` when no leader could name
    /// its read index: no quorum, so take one offline instead).
    pub(crate) async fn backup(&self) -> Option<Result<spillway_consensus::Backup, ControlError>> {
        if !self.catch_up().await {
            return None;
        }
        Some(self.plane.backup(self.id, crate::now_unix_ms()).await)
    }

    /// [`Control::catch_up`] for requests anyone can send (an unknown
    /// token): one at a time and at most one every 50 ms, so a flood of
    /// made-up tokens costs the leader at most 20 status calls a second
    /// from this host. A request is answered by a catch-up that began
    /// after it arrived (its own, or one it waited for), never by an older
    /// one: a token made through another host just before works here.
    /// (Returning early within the 50 ms instead made a token used here
    /// right after its creation `invalid_token` now and then.)
    pub(crate) async fn catch_up_shared(&self) {
        let arrived = tokio::time::Instant::now();
        let mut last = self.last_catch_up.lock().await;
        if let Some(started) = *last {
            if started >= arrived {
                return;
            }
            tokio::time::sleep_until(started + CATCH_UP_GAP).await;
        }
        let started = tokio::time::Instant::now();
        self.catch_up().await;
        *last = Some(started);
    }

    /// Stops Raft and closes the QUIC endpoint.
    pub(crate) async fn shutdown(&self) {
        if let Err(e) = self.plane.shutdown().await {
            tracing::warn!("stopping raft: {e}");
        }
        self.endpoint.close();
    }
}
