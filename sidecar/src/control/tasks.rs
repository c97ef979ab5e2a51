//! The loops that keep the log and this host in step.
//!
//! - `sync`: on every applied entry, refreshes the cached state, the pinned
//!   keys (members and tickets), the peers' addresses and the saved peer
//!   list (`membership.json`, so a restart can reach its peers before the
//!   log catches it up).
//! - `reconcile`: on the leader, carries out `membership_plan::plan`
//!   (learners added and marked active, removed members out of Raft,
//!   draining voters swapped for caught-up learners, promotions up to
//!   `max_voters`, old tickets pruned). On every host, proposes its own new
//!   addresses or GPUs.
//! - `residency`: compares what the node holds with what the log says this
//!   host holds and proposes the difference in one batch.

use super::local::LocalMembership;
use super::membership_plan::{Action, plan};
use super::{Control, member_list};
use spillway_consensus::{
    ControlCommand, ControlError, ControlState, MemberEntry, MemberState, RaftStatus,
    ResidencyChange, ResidencyStatus, TicketEntry,
};
use spillway_proto::NodeId;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader reconciles membership and hosts check themselves.
const RECONCILE_EVERY: Duration = Duration::from_millis(300);
/// The residency batch window.
const RESIDENCY_EVERY: Duration = Duration::from_millis(250);
/// Longest a membership change may take before the loop moves on.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a host asks its peers again whether they all run this build
/// (`Control::every_member_runs_this_build`), while some do not.
const BUILD_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a peer has to answer that question.
const BUILD_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn sync(control: Arc<Control>, dir: PathBuf) {
    let mut changes = control.plane.changes();
    let mut seen = None;
    loop {
        let applied = control.plane.applied_index();
        if applied != seen {
            seen = applied;
            control.refresh(&dir).await;
        }
        if !changes.next().await {
            break;
        }
    }
}

impl Control {
    pub(super) async fn refresh(&self, dir: &std::path::Path) {
        let state = self.plane.state().await;
        if !state.cluster_id().is_empty() {
            let live = || state.members().filter(|m| m.state != MemberState::Removed);
            // A used ticket's key is unpinned at once: its holder's
            // handshakes fail from then on. An expired one stays until
            // pruned, so a late joiner hears `ticket_expired` (refused from
            // the state, with no log entry).
            let unused = state.tickets().filter(|t| t.used_by.is_none());
            self.pinned
                .replace(live().map(|m| m.key), unused.map(|t| t.key));
            for m in state.members() {
                if let Ok(addr) = m.quic_addr.parse() {
                    self.client.set_address(m.id, addr);
                }
            }
            let peers = member_list(&state, Some(self.id));
            let mut saved = self.saved_peers.lock().expect("saved peers lock");
            if *saved != peers
                && let Ok(Some(mut local)) = LocalMembership::load(dir)
            {
                local.peers.clone_from(&peers);
                match local.save(dir) {
                    Ok(()) => *saved = peers,
                    Err(e) => tracing::warn!("saving membership.json: {e}"),
                }
            }
        }
        self.state.send_replace(Arc::new(state));
    }
}

pub(super) async fn reconcile(control: Arc<Control>) {
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        let raft = control.plane.status();
        if raft.role == "shutdown" {
            break;
        }
        if raft.role == "leader" {
            control.reconcile_membership(&raft).await;
        }
        control.update_self().await;
    }
}

impl Control {
    /// Carries out the leader's membership plan (`membership_plan`).
    async fn reconcile_membership(&self, raft: &RaftStatus) {
        let state = self.state();
        let members: Vec<MemberEntry> = state.members().cloned().collect();
        let tickets: Vec<TicketEntry> = state.tickets().cloned().collect();
        let now = crate::now_unix_ms();
        for action in plan(&members, &tickets, raft, self.id, self.max_voters, now) {
            self.carry_out(action).await;
        }
    }

    async fn carry_out(&self, action: Action) {
        let timed = |change| async move {
            tokio::time::timeout(CHANGE_TIMEOUT, change)
                .await
                .unwrap_or_else(|_| Err(ControlError::Raft("timed out".into())))
        };
        match action {
            Action::PruneTickets { now_unix_ms } => {
                let prune = ControlCommand::PruneTickets { now_unix_ms };
                match self.propose(prune).await {
                    Ok(_) => tracing::info!("pruned tickets expired over an hour ago"),
                    Err(e) => tracing::warn!("pruning tickets: {e}"),
                }
            }
            Action::RemoveVoter(id) => {
                let change = self
                    .plane
                    .change_voters(BTreeSet::new(), BTreeSet::from([id]), false)
                    .await;
                log_change("remove from raft", id, change);
            }
            Action::RemoveLearner(id) => {
                let change = self.plane.remove_learners(BTreeSet::from([id])).await;
                log_change("remove from raft", id, change);
            }
            Action::AddLearner { id, node } => {
                log_change("add learner", id, self.plane.add_learner(id, node).await);
            }
            Action::MarkActive(id) => {
                let cmd = ControlCommand::SetMemberState {
                    id,
                    state: MemberState::Active,
                };
                if let Err(e) = self.propose(cmd).await {
                    tracing::warn!(host = id, "marking active: {e}");
                }
            }
            Action::TransferLeadership { to } => {
                tracing::info!(to, "this host is draining: handing over leadership");
                log_change(
                    "transfer leadership",
                    to,
                    self.plane.transfer_leader(to).await,
                );
            }
            Action::SwapVoter { out, replacement } => {
                let change = timed(self.plane.change_voters(
                    BTreeSet::from([replacement]),
                    BTreeSet::from([out]),
                    true,
                ))
                .await;
                tracing::info!(
                    draining = out,
                    replacement,
                    ok = change.is_ok(),
                    "handing a draining voter's vote to a learner"
                );
                log_change("demote draining voter", out, change);
            }
            Action::Promote(promote) => {
                let change = timed(self.plane.change_voters(
                    promote.clone(),
                    BTreeSet::new(),
                    true,
                ))
                .await;
                tracing::info!(
                    ?promote,
                    ok = change.is_ok(),
                    "promoting learners to voters"
                );
                log_change("promote", 0, change);
            }
        }
    }

    /// Proposes this host's current addresses and GPUs, and how its GPUs
    /// are shared, when the log has other ones (after a restart on new
    /// ports, a node's first hello, executors on other GPUs).
    async fn update_self(&self) {
        let state = self.state();
        let Some(me) = state.member(self.id) else {
            return;
        };
        let quic_addr = self.quic_addr().map(|a| a.to_string()).unwrap_or_default();
        let http_addr = self.http_addr.to_string();
        let node = self.executors.status();
        let gpus = match &node.capabilities {
            Some(c) if node.up => c.gpus.clone(),
            _ => me.gpus.clone(),
        };
        if me.quic_addr != quic_addr || me.http_addr != http_addr || me.gpus != gpus {
            let cmd = ControlCommand::UpdateMember {
                id: self.id,
                quic_addr,
                http_addr,
                gpus,
            };
            if let Err(e) = self.propose(cmd).await {
                tracing::warn!("updating this host's membership entry: {e}");
            }
        }
        // How its GPUs are shared, once every executor has said which
        // GPUs it uses, and every member can apply the entry.
        if let Some(gpus) = crate::executors::gpu_isolation(&self.executors.each())
            && state.gpu_isolation(self.id) != gpus.as_slice()
            && self.every_member_runs_this_build(&state).await
        {
            let cmd = ControlCommand::SetGpuIsolation { id: self.id, gpus };
            if let Err(e) = self.propose(cmd).await {
                tracing::warn!("recording this host's GPU isolation: {e}");
            }
        }
    }

    /// Whether every other member of `state` answers a status request with
    /// this build's status (an earlier build's does not decode): only then
    /// may this host write a log entry that an earlier build cannot apply
    /// (one would stop following the log). A member that does not answer
    /// holds it back too, until it answers or is removed. Asked at most
    /// every [`BUILD_CHECK_EVERY`] while the answer is no.
    async fn every_member_runs_this_build(&self, state: &ControlState) -> bool {
        {
            let mut next = self.next_build_check.lock().expect("build check lock");
            let now = tokio::time::Instant::now();
            if next.is_some_and(|at| now < at) {
                return false;
            }
            *next = Some(now + BUILD_CHECK_EVERY);
        }
        let mut asks = tokio::task::JoinSet::new();
        for id in state.members().map(|m| m.id).filter(|id| *id != self.id) {
            let client = self.client.clone();
            asks.spawn(async move { (id, client.status(id, BUILD_CHECK_TIMEOUT).await.is_some()) });
        }
        let mut behind = Vec::new();
        while let Some(answer) = asks.join_next().await {
            match answer {
                Ok((_, true)) => {}
                Ok((id, false)) => behind.push(id),
                Err(_) => behind.push(0),
            }
        }
        if behind.is_empty() {
            *self.next_build_check.lock().expect("build check lock") = None;
            return true;
        }
        tracing::info!(
            ?behind,
            "waiting for every member to run this build before recording this host's GPU isolation"
        );
        false
    }
}

fn log_change(what: &str, host: u64, result: Result<(), spillway_consensus::ControlError>) {
    match result {
        Ok(()) => tracing::info!(host, "{what}"),
        Err(e) => tracing::warn!(host, "{what}: {e}"),
    }
}

/// Counts the leaders this host sees take over (the first it learns of at
/// start included), until Raft stops.
pub(super) async fn count_leader_changes(
    control: Arc<Control>,
    counter: prometheus_client::metrics::counter::Counter,
) {
    let mut changes = control.plane.changes();
    let mut leader = None;
    loop {
        let now = control.plane.status().leader;
        if now.is_some() && now != leader {
            counter.inc();
        }
        leader = now;
        if !changes.next().await {
            break;
        }
    }
}

pub(super) async fn residency(control: Arc<Control>) {
    loop {
        tokio::time::sleep(RESIDENCY_EVERY).await;
        if control.plane.status().role == "shutdown" {
            break;
        }
        let node = control.executors.status();
        let state = control.state();
        if !node.up || state.member(control.id).is_none() {
            continue;
        }
        let host = NodeId(control.id);
        let recorded = state.resident_on(host);
        let change = |digest, status| ResidencyChange {
            host,
            digest,
            status,
        };
        let changes: Vec<ResidencyChange> = node
            .held
            .difference(&recorded)
            .map(|d| change(*d, ResidencyStatus::Resident))
            .chain(
                recorded
                    .difference(&node.held)
                    .map(|d| change(*d, ResidencyStatus::Evicted)),
            )
            .collect();
        if changes.is_empty() {
            continue;
        }
        let n = changes.len();
        match control.propose(ControlCommand::SetResidency(changes)).await {
            Ok(_) => tracing::debug!(changes = n, "residency reported"),
            Err(e) => tracing::warn!("reporting residency: {e}"),
        }
    }
}
