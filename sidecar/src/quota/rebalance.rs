//! The leader's lease loop: rebalances tenants' concurrency quotas among
//! the hosts as load shifts (see `quota::leases` for the policy, which is
//! pure; this is only its I/O).
//!
//! Every [`LEASE_EVERY`], on the leader only: ask every active host for
//! its use of each tenant's lease (the `Status` call, one per host for all
//! tenants), and write the next leases of each tenant that needs them to
//! the log. A host that does not answer in time holds the tenant's
//! leases where they are until it does.

use super::{TenantQuotas, active_members, leases::next_leases};
use crate::control::Control;
use crate::peer::PeerClient;
use spillway_consensus::ControlCommand;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks at the leases.
const LEASE_EVERY: Duration = Duration::from_millis(500);
/// How long a host may take to report.
const REPORT_TIMEOUT: Duration = Duration::from_millis(300);

/// Runs the loop for as long as the control plane does; `here` is this
/// host's own use, `client` asks the others for theirs.
pub(crate) async fn rebalance(control: Arc<Control>, here: Arc<TenantQuotas>, client: PeerClient) {
    loop {
        tokio::time::sleep(LEASE_EVERY).await;
        let raft = control.raft_status();
        if raft.role == "shutdown" {
            break;
        }
        if raft.leader != Some(control.id) {
            continue;
        }
        let state = control.state();
        let quotas: Vec<_> = state
            .tenants()
            .filter_map(|t| t.max_concurrent.map(|q| (t.id.clone(), q)))
            .collect();
        if quotas.is_empty() {
            continue;
        }
        let active = active_members(&state);
        let mut asks = tokio::task::JoinSet::new();
        for host in active.iter().copied().filter(|h| *h != control.id) {
            let client = client.clone();
            asks.spawn(async move { (host, client.status(host, REPORT_TIMEOUT).await) });
        }
        let mut reports = BTreeMap::from([(control.id, here.usage_of(&state))]);
        while let Some(Ok((host, status))) = asks.join_next().await {
            if let Some(s) = status {
                reports.insert(host, s.quota_usage);
            }
        }
        for (tenant, quota) in quotas {
            let usage = reports
                .iter()
                .filter_map(|(h, by_tenant)| by_tenant.get(&tenant).map(|u| (*h, *u)))
                .collect();
            let Some(next) = next_leases(quota, &active, state.quota_leases(&tenant), &usage)
            else {
                continue;
            };
            let command = ControlCommand::SetQuotaLeases {
                tenant: tenant.clone(),
                epoch: next.epoch,
                shares: next.shares.clone(),
            };
            match control.propose(command).await {
                Ok(_) => {
                    tracing::info!(%tenant, epoch = next.epoch, shares = ?next.shares, "quota leases rebalanced")
                }
                Err(e) => tracing::warn!(%tenant, "writing quota leases: {e}"),
            }
        }
    }
}
