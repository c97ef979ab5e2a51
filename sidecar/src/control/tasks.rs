//! The loops that keep the log and this host in step.
//!
//! - `sync`: on every applied entry, refreshes the cached state, the pinned
//!   keys (members and tickets), the peers' addresses and the saved peer
//!   list (`membership.json`, so a restart can reach its peers before the
//!   log catches it up).
//! - `reconcile`: on the leader, adds admitted hosts as Raft learners,
//!   marks them active, promotes learners while there are fewer voters than
//!   `max_voters` (which also replaces a removed voter), swaps a draining
//!   voter for a caught-up learner (a draining leader first hands
//!   leadership to another voter), takes removed members out of Raft, and
//!   prunes tickets an hour past their expiry. On every host, proposes its own new addresses or
//!   GPUs.
//! - `residency`: compares what the node holds with what the log says this
//!   host holds and proposes the difference in one batch.

use super::local::LocalMembership;
use super::{Control, member_list};
use spillway_consensus::{
    ControlCommand, MemberState, RaftStatus, ResidencyChange, ResidencyStatus, TICKET_GRACE_MS,
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
/// A learner this close to the leader's log may be promoted.
const CAUGHT_UP: u64 = 50;

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
    async fn reconcile_membership(&self, raft: &RaftStatus) {
        let state = self.state();
        let now = crate::now_unix_ms();
        if state
            .tickets()
            .any(|t| t.expires_unix_ms.saturating_add(TICKET_GRACE_MS) <= now)
        {
            let prune = ControlCommand::PruneTickets { now_unix_ms: now };
            match self.propose(prune).await {
                Ok(_) => tracing::info!("pruned tickets expired over an hour ago"),
                Err(e) => tracing::warn!("pruning tickets: {e}"),
            }
        }
        let last = raft.last_log_index.unwrap_or(0);
        for m in state.members() {
            let in_raft = raft.nodes.contains_key(&m.id);
            match m.state {
                MemberState::Removed if in_raft => {
                    let ids = BTreeSet::from([m.id]);
                    let change = if raft.voters.contains(&m.id) {
                        self.plane.change_voters(BTreeSet::new(), ids, false).await
                    } else {
                        self.plane.remove_learners(ids).await
                    };
                    log_change("remove from raft", m.id, change);
                }
                MemberState::Removed => {}
                _ if !in_raft => {
                    let node = spillway_consensus::Member {
                        quic_addr: m.quic_addr.clone(),
                        http_addr: m.http_addr.clone(),
                    };
                    log_change(
                        "add learner",
                        m.id,
                        self.plane.add_learner(m.id, node).await,
                    );
                }
                MemberState::Joining => {
                    let cmd = ControlCommand::SetMemberState {
                        id: m.id,
                        state: MemberState::Active,
                    };
                    if let Err(e) = self.propose(cmd).await {
                        tracing::warn!(host = m.id, "marking active: {e}");
                    }
                }
                _ => {}
            }
        }
        // Learners that may vote: active, and caught up with the log.
        let ready = || {
            raft.learners
                .iter()
                .filter(|id| {
                    state
                        .member(**id)
                        .is_some_and(|m| m.state == MemberState::Active)
                })
                .filter(|id| {
                    raft.matched
                        .get(id)
                        .copied()
                        .flatten()
                        .is_some_and(|i| i + CAUGHT_UP >= last)
                })
                .copied()
        };
        let voters = raft.voters.len();
        // A draining voter hands its vote to a ready learner, one at a
        // time; without one it keeps voting (demoting it would not make
        // the cluster any safer while it is still up).
        let draining = raft.voters.iter().copied().find(|id| {
            state
                .member(*id)
                .is_some_and(|m| m.state == MemberState::Draining)
        });
        // A draining leader first hands leadership to an active voter; the
        // new leader then swaps its vote.
        if draining == Some(self.id)
            && let Some(&next) = raft.voters.iter().find(|id| {
                **id != self.id
                    && state
                        .member(**id)
                        .is_some_and(|m| m.state == MemberState::Active)
            })
        {
            tracing::info!(to = next, "this host is draining: handing over leadership");
            log_change(
                "transfer leadership",
                next,
                self.plane.transfer_leader(next).await,
            );
            return;
        }
        if let Some(out) = draining
            && let Some(replacement) = ready().next()
        {
            let change = tokio::time::timeout(
                CHANGE_TIMEOUT,
                self.plane.change_voters(
                    BTreeSet::from([replacement]),
                    BTreeSet::from([out]),
                    true,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(spillway_consensus::ControlError::Raft("timed out".into())));
            tracing::info!(
                draining = out,
                replacement,
                ok = change.is_ok(),
                "handing a draining voter's vote to a learner"
            );
            log_change("demote draining voter", out, change);
            return;
        }
        if voters < self.max_voters {
            let promote: BTreeSet<u64> = ready().take(self.max_voters - voters).collect();
            if !promote.is_empty() {
                let change = tokio::time::timeout(
                    CHANGE_TIMEOUT,
                    self.plane
                        .change_voters(promote.clone(), BTreeSet::new(), true),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(spillway_consensus::ControlError::Raft("timed out".into()))
                });
                tracing::info!(
                    ?promote,
                    ok = change.is_ok(),
                    "promoting learners to voters"
                );
                log_change("promote", 0, change);
            }
        }
    }

    /// Proposes this host's current addresses and GPUs when the log has
    /// other ones (after a restart on new ports, or a node's first hello).
    async fn update_self(&self) {
        let state = self.state();
        let Some(me) = state.member(self.id) else {
            return;
        };
        let quic_addr = self.quic_addr().map(|a| a.to_string()).unwrap_or_default();
        let http_addr = self.http_addr.to_string();
        let node = self.link.status();
        let gpus = match &node.capabilities {
            Some(c) if node.up => c.gpus.clone(),
            _ => me.gpus.clone(),
        };
        if me.quic_addr == quic_addr && me.http_addr == http_addr && me.gpus == gpus {
            return;
        }
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
}

fn log_change(what: &str, host: u64, result: Result<(), spillway_consensus::ControlError>) {
    match result {
        Ok(()) => tracing::info!(host, "{what}"),
        Err(e) => tracing::warn!(host, "{what}: {e}"),
    }
}

pub(super) async fn residency(control: Arc<Control>) {
    loop {
        tokio::time::sleep(RESIDENCY_EVERY).await;
        if control.plane.status().role == "shutdown" {
            break;
        }
        let node = control.link.status();
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
