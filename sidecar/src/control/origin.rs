//! Who may put what in the control log. A member may ask the leader to
//! append only what a host originates about itself ([`host_may_propose`]):
//! its own residency, addresses and GPUs' isolation, a join it checked,
//! the activation of a joining member and ticket pruning (which the state
//! machine checks in turn); the leader appends it as `FromHost`, naming
//! the member. Quota leases are the leader's alone. Every other change is a client's: it reaches
//! the leader with the client's token, and the leader checks the token,
//! the scope the change needs ([`client_change_scope`]) and the tenant it
//! acts for ([`acts_within`]) against its own state before it writes the
//! change, audited, naming the member whose API took it. Pure, and
//! table-tested.
//!
//! What it is not: validation of a change's content (the state machine's
//! `apply`), or membership of the connection (the peer service).

use crate::auth::Principal;
use spillway_consensus::{ControlCommand, ControlState, MemberState, Scope};

/// How far ahead of the leader's clock a member's clock may be when it
/// prunes tickets by it.
const CLOCK_SKEW_MS: u64 = 60_000;

/// Whether member `proposer` may append `command` on its own authority,
/// and if not, why.
pub(crate) fn host_may_propose(
    proposer: u64,
    command: &ControlCommand,
    state: &ControlState,
    now_unix_ms: u64,
) -> Result<(), String> {
    match command {
        ControlCommand::SetResidency(changes) => {
            match changes.iter().find(|c| c.host.0 != proposer) {
                None => Ok(()),
                Some(c) => Err(format!(
                    "host {proposer} may report only its own residency, not host {}'s",
                    c.host.0
                )),
            }
        }
        ControlCommand::UpdateMember { id, .. } | ControlCommand::SetGpuIsolation { id, .. }
            if *id == proposer =>
        {
            Ok(())
        }
        ControlCommand::UpdateMember { id, .. } | ControlCommand::SetGpuIsolation { id, .. } => {
            Err(format!(
                "host {proposer} may update only its own entry, not host {id}'s"
            ))
        }
        // The state machine checks the ticket (one use, expiry, identity).
        ControlCommand::Admit { .. } => Ok(()),
        ControlCommand::SetMemberState {
            id,
            state: MemberState::Active,
        } if state
            .member(*id)
            .is_some_and(|m| m.state == MemberState::Joining) =>
        {
            Ok(())
        }
        ControlCommand::PruneTickets { now_unix_ms: at } if *at <= now_unix_ms + CLOCK_SKEW_MS => {
            Ok(())
        }
        ControlCommand::PruneTickets { .. } => {
            Err("ticket pruning by a clock ahead of the leader's".into())
        }
        // Only the leader writes leases (its rebalancer proposes them
        // directly); a former leader's forwarded rebalance is dropped and
        // the current leader computes its own.
        ControlCommand::SetQuotaLeases { .. } | ControlCommand::SetGpuLeases { .. } => Err(
            format!("quota leases are the leader's to write, not host {proposer}'s"),
        ),
        ControlCommand::FromHost { .. } | ControlCommand::Audited { .. } => {
            Err("a member may not send a change already attributed".into())
        }
        other => Err(format!(
            "\"{other}\" is a client's change: it must come as an API request with the client's token"
        )),
    }
}

/// The scope a client change needs, or `None` for what no client may ask
/// (a host's bookkeeping, a founding entry, an audited change itself).
pub(crate) fn client_change_scope(command: &ControlCommand) -> Option<Scope> {
    match command {
        ControlCommand::PutArtifact { .. } | ControlCommand::PutFunction(_) => Some(Scope::Publish),
        ControlCommand::IssueTicket(_)
        | ControlCommand::SetMemberState { .. }
        | ControlCommand::CreateToken(_)
        | ControlCommand::RevokeToken { .. }
        | ControlCommand::CreateTenant(_)
        | ControlCommand::UpdateTenant { .. } => Some(Scope::Admin),
        ControlCommand::Bootstrap { .. }
        | ControlCommand::Restore(_)
        | ControlCommand::SetResidency(_)
        | ControlCommand::Admit { .. }
        | ControlCommand::UpdateMember { .. }
        | ControlCommand::SetGpuIsolation { .. }
        | ControlCommand::PruneTickets { .. }
        | ControlCommand::SetQuotaLeases { .. }
        | ControlCommand::SetGpuLeases { .. }
        | ControlCommand::Audited { .. }
        | ControlCommand::FromHost { .. } => None,
    }
}

/// Whether `principal` acts within its own tenant: a publisher only for
/// its tenant's artifacts and functions (admin-scope changes are the admin
/// tenant's, the only one whose tokens hold that scope).
pub(crate) fn acts_within(principal: &Principal, command: &ControlCommand) -> Result<(), String> {
    match command {
        ControlCommand::PutArtifact { tenant, .. } if *tenant != principal.tenant => Err(format!(
            "a token of tenant {} may not publish for tenant {tenant}",
            principal.tenant
        )),
        ControlCommand::PutFunction(f) if f.tenant != principal.tenant => Err(format!(
            "a token of tenant {} may not publish for tenant {}",
            principal.tenant, f.tenant
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_consensus::ResidencyChange;
    use spillway_consensus::ResidencyStatus;
    use spillway_proto::{ArtifactKind, Digest, NodeId, TenantId};

    fn residency(host: u64) -> ResidencyChange {
        ResidencyChange {
            host: NodeId(host),
            digest: Digest::of(b"a"),
            status: ResidencyStatus::Resident,
        }
    }

    fn put_artifact(tenant: &str) -> ControlCommand {
        ControlCommand::PutArtifact {
            name: "a".into(),
            digest: Digest::of(b"a"),
            size: 1,
            tenant: TenantId(tenant.into()),
            signature: None,
            kind: ArtifactKind::Component,
        }
    }

    #[test]
    fn a_member_may_append_only_its_own_facts() {
        let state = ControlState::default();
        let now = 1_000_000;
        let cases = [
            (ControlCommand::SetResidency(vec![residency(2)]), true),
            (
                ControlCommand::SetResidency(vec![residency(2), residency(1)]),
                false,
            ),
            (
                ControlCommand::UpdateMember {
                    id: 2,
                    quic_addr: String::new(),
                    http_addr: String::new(),
                    gpus: Vec::new(),
                },
                true,
            ),
            (
                ControlCommand::UpdateMember {
                    id: 1,
                    quic_addr: String::new(),
                    http_addr: String::new(),
                    gpus: Vec::new(),
                },
                false,
            ),
            (
                ControlCommand::SetGpuIsolation {
                    id: 2,
                    gpus: Vec::new(),
                },
                true,
            ),
            (
                ControlCommand::SetGpuIsolation {
                    id: 1,
                    gpus: Vec::new(),
                },
                false,
            ),
            (ControlCommand::PruneTickets { now_unix_ms: now }, true),
            (
                ControlCommand::PruneTickets {
                    now_unix_ms: now + 3_600_000,
                },
                false,
            ),
            // No such joining member in this state.
            (
                ControlCommand::SetMemberState {
                    id: 7,
                    state: MemberState::Active,
                },
                false,
            ),
            (
                ControlCommand::SetMemberState {
                    id: 1,
                    state: MemberState::Removed,
                },
                false,
            ),
            (put_artifact("acme"), false),
            (ControlCommand::RevokeToken { id: "x".into() }, false),
            (
                ControlCommand::Audited {
                    by: "admin-token".into(),
                    tenant: TenantId::admin(),
                    unix_ms: 0,
                    via: 2,
                    command: Box::new(ControlCommand::RevokeToken { id: "x".into() }),
                },
                false,
            ),
            // Already attributed, even to itself: only the leader wraps.
            (
                ControlCommand::FromHost {
                    host: 2,
                    command: Box::new(ControlCommand::SetResidency(vec![residency(2)])),
                },
                false,
            ),
            // The leader's alone.
            (
                ControlCommand::SetQuotaLeases {
                    tenant: TenantId("acme".into()),
                    epoch: 1,
                    shares: [(2, 10)].into(),
                },
                false,
            ),
            (
                ControlCommand::SetGpuLeases {
                    tenant: TenantId("acme".into()),
                    epoch: 1,
                    shares: [(2, 10)].into(),
                },
                false,
            ),
        ];
        for (command, allowed) in cases {
            assert_eq!(
                host_may_propose(2, &command, &state, now).is_ok(),
                allowed,
                "{command}"
            );
        }
    }

    #[test]
    fn client_changes_need_their_scope_and_stay_in_their_tenant() {
        assert_eq!(
            client_change_scope(&put_artifact("acme")),
            Some(Scope::Publish)
        );
        assert_eq!(
            client_change_scope(&ControlCommand::RevokeToken { id: "x".into() }),
            Some(Scope::Admin)
        );
        assert_eq!(
            client_change_scope(&ControlCommand::SetResidency(vec![residency(1)])),
            None
        );
        assert_eq!(
            client_change_scope(&ControlCommand::PruneTickets { now_unix_ms: 0 }),
            None
        );
        let acme = Principal {
            tenant: TenantId("acme".into()),
            token: Some("t".into()),
        };
        assert!(acts_within(&acme, &put_artifact("acme")).is_ok());
        assert!(acts_within(&acme, &put_artifact("other")).is_err());
    }
}
