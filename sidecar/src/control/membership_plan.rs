//! What the leader does to bring Raft's membership in line with the log's:
//! [`plan`] reads the members and tickets the log records and Raft's view
//! of itself and returns the [`Action`]s, in order; the `reconcile` task
//! (`control/tasks.rs`) only carries them out. Pure, and table-tested.
//!
//! - Tickets an hour past their expiry are pruned.
//! - A removed member leaves Raft (as a voter or a learner); a member not
//!   yet in Raft is added as a learner; a joining one is marked active.
//! - A draining leader hands leadership to an active voter (and does
//!   nothing else this round); a draining voter hands its vote to a
//!   caught-up learner.
//! - Otherwise, while there are fewer voters than `max_voters`, caught-up
//!   active learners are promoted (which also replaces a removed voter).
//!
//! What it is not: the state machine's rules for membership (who may join,
//! `spillway-consensus`), or a member's own upkeep (its addresses, its
//! residency).

use spillway_consensus::{
    Member, MemberEntry, MemberState, RaftStatus, TICKET_GRACE_MS, TicketEntry,
};
use std::collections::BTreeSet;

/// A learner this close to the leader's log may be promoted.
pub(crate) const CAUGHT_UP: u64 = 50;

/// One step towards the log's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Forget tickets that expired an hour or more before `now_unix_ms`.
    PruneTickets { now_unix_ms: u64 },
    /// Take a removed voter out of Raft.
    RemoveVoter(u64),
    /// Take a removed learner out of Raft.
    RemoveLearner(u64),
    /// Add a member to Raft as a learner.
    AddLearner { id: u64, node: Member },
    /// Record a joining member (now in Raft) as active.
    MarkActive(u64),
    /// This leader is draining: hand leadership to `to`.
    TransferLeadership { to: u64 },
    /// A draining voter's vote goes to a caught-up learner.
    SwapVoter { out: u64, replacement: u64 },
    /// Caught-up learners become voters.
    Promote(BTreeSet<u64>),
}

/// The leader's actions this round, in order.
pub(crate) fn plan(
    members: &[MemberEntry],
    tickets: &[TicketEntry],
    raft: &RaftStatus,
    me: u64,
    max_voters: usize,
    now_unix_ms: u64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if tickets
        .iter()
        .any(|t| t.expires_unix_ms.saturating_add(TICKET_GRACE_MS) <= now_unix_ms)
    {
        actions.push(Action::PruneTickets { now_unix_ms });
    }
    let member = |id: u64| members.iter().find(|m| m.id == id);
    for m in members {
        let in_raft = raft.nodes.contains_key(&m.id);
        match m.state {
            MemberState::Removed if in_raft && raft.voters.contains(&m.id) => {
                actions.push(Action::RemoveVoter(m.id));
            }
            MemberState::Removed if in_raft => actions.push(Action::RemoveLearner(m.id)),
            MemberState::Removed => {}
            _ if !in_raft => actions.push(Action::AddLearner {
                id: m.id,
                node: Member {
                    quic_addr: m.quic_addr.clone(),
                    http_addr: m.http_addr.clone(),
                },
            }),
            MemberState::Joining => actions.push(Action::MarkActive(m.id)),
            _ => {}
        }
    }
    let active = |id: &u64| member(*id).is_some_and(|m| m.state == MemberState::Active);
    let last = raft.last_log_index.unwrap_or(0);
    // Learners that may vote: active, and caught up with the log.
    let ready = || {
        raft.learners
            .iter()
            .filter(|id| active(id))
            .filter(|id| {
                raft.matched
                    .get(id)
                    .copied()
                    .flatten()
                    .is_some_and(|i| i + CAUGHT_UP >= last)
            })
            .copied()
    };
    // A draining voter hands its vote to a ready learner, one at a time;
    // without one it keeps voting (demoting it would not make the cluster
    // any safer while it is still up).
    let draining = raft
        .voters
        .iter()
        .copied()
        .find(|id| member(*id).is_some_and(|m| m.state == MemberState::Draining));
    // A draining leader first hands leadership to an active voter; the new
    // leader then swaps its vote.
    if draining == Some(me)
        && let Some(&to) = raft.voters.iter().find(|id| **id != me && active(id))
    {
        actions.push(Action::TransferLeadership { to });
        return actions;
    }
    if let Some(out) = draining
        && let Some(replacement) = ready().next()
    {
        actions.push(Action::SwapVoter { out, replacement });
        return actions;
    }
    let voters = raft.voters.len();
    if voters < max_voters {
        let promote: BTreeSet<u64> = ready().take(max_voters - voters).collect();
        if !promote.is_empty() {
            actions.push(Action::Promote(promote));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn member(id: u64, state: MemberState) -> MemberEntry {
        MemberEntry {
            id,
            key: [id as u8; 32],
            quic_addr: format!("10.0.0.{id}:7000"),
            http_addr: format!("10.0.0.{id}:7070"),
            labels: BTreeMap::new(),
            gpus: Vec::new(),
            state,
        }
    }

    /// Raft as leader 1 sees it: `voters`, `learners` (each matched at
    /// `matched`, `None` for unknown), the log at 100.
    fn raft(voters: &[u64], learners: &[(u64, Option<u64>)]) -> RaftStatus {
        let node = |id: u64| {
            (
                id,
                Member {
                    quic_addr: format!("10.0.0.{id}:7000"),
                    http_addr: format!("10.0.0.{id}:7070"),
                },
            )
        };
        RaftStatus {
            id: 1,
            role: "leader",
            term: 3,
            leader: Some(1),
            last_log_index: Some(100),
            committed_index: Some(100),
            applied_index: Some(100),
            snapshot_index: None,
            purged_index: None,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().map(|(id, _)| *id).collect(),
            nodes: voters
                .iter()
                .copied()
                .chain(learners.iter().map(|(id, _)| *id))
                .map(node)
                .collect(),
            matched: voters
                .iter()
                .map(|id| (*id, Some(100)))
                .chain(learners.iter().copied())
                .collect(),
        }
    }

    fn ids(list: &[u64]) -> BTreeSet<u64> {
        list.iter().copied().collect()
    }

    #[test]
    fn the_plan_follows_the_log() {
        use MemberState::{Active, Draining, Joining, Removed};
        let now = 10 * TICKET_GRACE_MS;
        let ticket = |expires_unix_ms| TicketEntry {
            key: [9; 32],
            issuer: 1,
            expires_unix_ms,
            used_by: None,
        };
        let add = |id: u64| Action::AddLearner {
            id,
            node: Member {
                quic_addr: format!("10.0.0.{id}:7000"),
                http_addr: format!("10.0.0.{id}:7070"),
            },
        };
        // (case, members, tickets, raft, max voters, actions)
        type Case = (
            &'static str,
            Vec<MemberEntry>,
            Vec<TicketEntry>,
            RaftStatus,
            usize,
            Vec<Action>,
        );
        let three = || vec![member(1, Active), member(2, Active), member(3, Active)];
        let table: Vec<Case> = vec![
            (
                "in step: nothing",
                three(),
                vec![],
                raft(&[1, 2, 3], &[]),
                3,
                vec![],
            ),
            (
                "a ticket an hour past expiry is pruned; a fresher one is not",
                three(),
                vec![ticket(now - TICKET_GRACE_MS), ticket(now - 1)],
                raft(&[1, 2, 3], &[]),
                3,
                vec![Action::PruneTickets { now_unix_ms: now }],
            ),
            (
                "an admitted host joins Raft as a learner, then is marked active",
                vec![member(1, Active), member(4, Joining)],
                vec![],
                raft(&[1], &[]),
                3,
                vec![add(4)],
            ),
            (
                "a joining learner in Raft is marked active",
                vec![member(1, Active), member(4, Joining)],
                vec![],
                raft(&[1], &[(4, Some(100))]),
                3,
                vec![Action::MarkActive(4)],
            ),
            (
                "removed members leave Raft, voter or learner",
                vec![member(1, Active), member(2, Removed), member(3, Removed)],
                vec![],
                raft(&[1, 2], &[(3, Some(100))]),
                1,
                vec![Action::RemoveVoter(2), Action::RemoveLearner(3)],
            ),
            (
                "caught-up active learners fill the voters up to the maximum",
                vec![
                    member(1, Active),
                    member(2, Active),
                    member(3, Active),
                    member(4, Active),
                ],
                vec![],
                raft(&[1], &[(2, Some(100)), (3, Some(60)), (4, Some(10))]),
                3,
                vec![Action::Promote(ids(&[2, 3]))],
            ),
            (
                "no promotion past the maximum",
                vec![member(1, Active), member(2, Active), member(4, Active)],
                vec![],
                raft(&[1, 2], &[(4, Some(100))]),
                2,
                vec![],
            ),
            (
                "a draining voter's vote goes to a caught-up learner, one swap a round",
                vec![
                    member(1, Active),
                    member(2, Draining),
                    member(4, Active),
                    member(5, Active),
                ],
                vec![],
                raft(&[1, 2], &[(4, Some(100)), (5, Some(100))]),
                3,
                vec![Action::SwapVoter {
                    out: 2,
                    replacement: 4,
                }],
            ),
            (
                "a draining voter with no learner ready keeps voting",
                vec![member(1, Active), member(2, Draining), member(4, Active)],
                vec![],
                raft(&[1, 2], &[(4, None)]),
                3,
                vec![],
            ),
            (
                "a draining leader hands leadership over first, and nothing else",
                vec![member(1, Draining), member(2, Active), member(4, Active)],
                vec![],
                raft(&[1, 2], &[(4, Some(100))]),
                3,
                vec![Action::TransferLeadership { to: 2 }],
            ),
        ];
        for (name, members, tickets, raft, max_voters, want) in table {
            let got = plan(&members, &tickets, &raft, 1, max_voters, now);
            assert_eq!(got, want, "{name}");
        }
    }
}
