//! The leader's lease loop: rebalances tenants' quotas among the hosts as
//! load shifts, concurrency (`max_concurrent`, in jobs) and GPU memory
//! (`max_gpu_memory_bytes`, in MiB) alike (see `crate::leases` for the
//! policy, which is pure; this is only its I/O).
//!
//! Every [`LEASE_EVERY`], on the leader only: ask every active host for
//! its use of each tenant's leases (the `Status` call, one per host for all
//! tenants), and write the next leases of each tenant that needs them to
//! the log. A host that does not answer in time holds the tenant's
//! leases where they are until it does.

use super::{active_members, gpu::quota_units};
use crate::control::Control;
use crate::leases::next_leases;
use crate::peer::{HostStatus, PeerClient, QuotaUsage};
use spillway_consensus::{ControlCommand, QuotaLeases};
use spillway_proto::TenantId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks at the leases.
const LEASE_EVERY: Duration = Duration::from_millis(500);
/// How long a host may take to report.
const REPORT_TIMEOUT: Duration = Duration::from_millis(300);

/// Which quota a lease splits.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Concurrency,
    GpuMemory,
}

/// This host's own status (its use of the leases among it).
pub(crate) type OwnStatus = Arc<dyn Fn() -> HostStatus + Send + Sync>;

/// Runs the loop for as long as the control plane does; `here` gives this
/// host's own use, `client` asks the others for theirs.
pub(crate) async fn rebalance(control: Arc<Control>, here: OwnStatus, client: PeerClient) {
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
        let quotas: Vec<(Kind, TenantId, u32)> = state
            .tenants()
            .flat_map(|t| {
                let jobs = t
                    .max_concurrent
                    .map(|q| (Kind::Concurrency, t.id.clone(), q));
                let memory = (t.max_gpu_memory_bytes)
                    .map(|q| (Kind::GpuMemory, t.id.clone(), quota_units(q)));
                jobs.into_iter().chain(memory)
            })
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
        let mut reports: BTreeMap<u64, HostStatus> = BTreeMap::from([(control.id, here())]);
        while let Some(Ok((host, status))) = asks.join_next().await {
            if let Some(s) = status {
                reports.insert(host, s);
            }
        }
        for (kind, tenant, quota) in quotas {
            let usage: BTreeMap<u64, QuotaUsage> = reports
                .iter()
                .filter_map(|(h, report)| {
                    let by_tenant = match kind {
                        Kind::Concurrency => &report.quota_usage,
                        Kind::GpuMemory => &report.gpu_usage,
                    };
                    by_tenant.get(&tenant).map(|u| (*h, *u))
                })
                .collect();
            let current = match kind {
                Kind::Concurrency => state.quota_leases(&tenant),
                Kind::GpuMemory => state.gpu_leases(&tenant),
            };
            let Some(next) = next_leases(quota, &active, current, &usage) else {
                continue;
            };
            write(&control, kind, tenant, next).await;
        }
    }
}

async fn write(control: &Control, kind: Kind, tenant: TenantId, next: QuotaLeases) {
    let QuotaLeases { epoch, shares } = next;
    let command = match kind {
        Kind::Concurrency => ControlCommand::SetQuotaLeases {
            tenant: tenant.clone(),
            epoch,
            shares: shares.clone(),
        },
        Kind::GpuMemory => ControlCommand::SetGpuLeases {
            tenant: tenant.clone(),
            epoch,
            shares: shares.clone(),
        },
    };
    match control.propose(command).await {
        Ok(_) => tracing::info!(%tenant, ?kind, epoch, ?shares, "quota leases rebalanced"),
        Err(e) => tracing::warn!(%tenant, ?kind, "writing quota leases: {e}"),
    }
}
