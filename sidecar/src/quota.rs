//! Tenant concurrency quotas, enforced on each host with no consensus
//! round per job.
//!
//! A tenant's `max_concurrent` is split into per-host shares derived from
//! the log's membership: the active members in id order each get
//! `q / n`, the first `q % n` of them one more, so the shares add up to the
//! quota. A job of the tenant holds a permit of this host's share while it
//! waits here and runs here (a burst job takes one on the peer that runs
//! it); with none left here, the job must find a peer with room in its
//! share, or the request gets 429 `quota_exceeded`.
//!
//! What it is not: rebalanced. The shares follow membership, not load, so
//! a tenant whose jobs all arrive at one host bursts for the rest of its
//! quota. While hosts disagree on membership (a change being applied) the
//! shares they compute may briefly add up to more than the quota.

use spillway_consensus::{ControlState, MemberState};
use spillway_proto::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// This host's share of `quota`, among the active members of `state`.
pub(crate) fn share(quota: u32, state: &ControlState, host: u64) -> u32 {
    let active: Vec<u64> = state
        .members()
        .filter(|m| m.state == MemberState::Active)
        .map(|m| m.id)
        .collect();
    share_among(quota, active, host)
}

/// This host's share of a tenant's cluster-wide request rate: an equal
/// part for each active member.
pub(crate) fn rate_share(rate_per_s: u32, state: &ControlState) -> f64 {
    let active = state
        .members()
        .filter(|m| m.state == MemberState::Active)
        .count()
        .max(1);
    f64::from(rate_per_s) / active as f64
}

/// `host`'s share of `quota` among the hosts `active`.
fn share_among(quota: u32, mut active: Vec<u64>, host: u64) -> u32 {
    active.sort_unstable();
    let Some(position) = active.iter().position(|id| *id == host) else {
        return 0;
    };
    let n = active.len() as u32;
    quota / n + u32::from((position as u32) < quota % n)
}

/// Jobs of each tenant holding a permit on this host.
#[derive(Debug, Default)]
pub(crate) struct TenantQuotas {
    running: Mutex<HashMap<TenantId, u32>>,
}

/// One job's place in its tenant's share here; given back on drop.
#[derive(Debug)]
pub(crate) struct QuotaPermit {
    quotas: Arc<TenantQuotas>,
    tenant: TenantId,
}

impl TenantQuotas {
    /// A permit if `tenant` has fewer than `share` jobs here.
    pub(crate) fn acquire(self: &Arc<Self>, tenant: &TenantId, share: u32) -> Option<QuotaPermit> {
        let mut running = self.running.lock().expect("quota lock");
        let n = running.entry(tenant.clone()).or_default();
        if *n >= share {
            return None;
        }
        *n += 1;
        Some(QuotaPermit {
            quotas: Arc::clone(self),
            tenant: tenant.clone(),
        })
    }

    /// Jobs of `tenant` holding a permit here.
    #[cfg(test)]
    pub(crate) fn held(&self, tenant: &TenantId) -> u32 {
        self.running
            .lock()
            .expect("quota lock")
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        let mut running = self.quotas.running.lock().expect("quota lock");
        if let Some(n) = running.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_quota() {
        for (quota, hosts) in [(5u32, 3u64), (3, 3), (2, 3), (7, 1), (0, 2)] {
            let active: Vec<u64> = (1..=hosts).rev().collect();
            let shares: Vec<u32> = (1..=hosts)
                .map(|h| share_among(quota, active.clone(), h))
                .collect();
            assert_eq!(
                shares.iter().sum::<u32>(),
                quota,
                "{quota} over {hosts}: {shares:?}"
            );
            assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
        }
        assert_eq!(share_among(5, vec![1, 2], 9), 0, "not an active member");
    }

    #[test]
    fn permits_stop_at_the_share_and_come_back_on_drop() {
        let q = Arc::new(TenantQuotas::default());
        let (a, b) = (TenantId("a".into()), TenantId("b".into()));
        let first = q.acquire(&a, 2).unwrap();
        let _second = q.acquire(&a, 2).unwrap();
        assert!(q.acquire(&a, 2).is_none());
        assert!(q.acquire(&b, 2).is_some(), "another tenant is unaffected");
        drop(first);
        assert_eq!(q.held(&a), 1);
        assert!(q.acquire(&a, 2).is_some());
    }
}
