//! Tenant concurrency quotas, enforced on each host with no consensus
//! round per job.
//!
//! A tenant's `max_concurrent` is split into per-host shares: the
//! placement leases the leader writes to the log (`leases`: rebalanced as
//! load shifts, never adding up to more than the quota), or, until it has
//! written any, an even split among the active members (in id order each
//! gets `q / n`, the first `q % n` of them one more). A job of the tenant
//! holds one permit while it waits and runs: of the host it arrived at,
//! also when it bursts (the peer runs it under the origin's lease, it
//! "borrows"), or, when the origin's share is used up, of the peer that
//! takes it. With none anywhere the request gets 429 `quota_exceeded`.
//!
//! What it is not: exact while the even split is in force and hosts
//! disagree on membership (a change being applied): their shares may then
//! briefly add up to more than the quota. Leases do not have that gap.

pub(crate) mod gpu;
mod rebalance;

pub(crate) use rebalance::rebalance;

use crate::leases::share_among;
use crate::peer::QuotaUsage;
use spillway_consensus::{ControlState, MemberState};
use spillway_proto::{Refusal, TenantId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a refusal counts as pressure for the rebalancer.
const PRESSURE_WINDOW: Duration = Duration::from_secs(2);

/// This host's share of `tenant`'s `quota`: its lease, or its part of the
/// even split among the active members of `state`.
pub(crate) fn share(quota: u32, tenant: &TenantId, state: &ControlState, host: u64) -> u32 {
    if let Some(leases) = state.quota_leases(tenant) {
        return leases.shares.get(&host).copied().unwrap_or(0);
    }
    even_share(quota, state, host)
}

/// Whether a burst job's origin may have lent it a place in the tenant's
/// quota, as it claims (`borrowed_quota`): always when the tenant has no
/// quota (nothing to lend); otherwise only an origin the log knows whose
/// share of the quota is not zero (`origin_share`; `None`: not a member).
/// A claim from any other origin is not believed: the job takes a place in
/// this host's own share, like any job.
pub(crate) fn may_have_lent(quota: Option<u32>, origin_share: Option<u32>) -> bool {
    match (quota, origin_share) {
        (None, _) => true,
        (Some(_), Some(share)) => share > 0,
        (Some(_), None) => false,
    }
}

/// `host`'s part of the even split of `quota` among the active members.
pub(crate) fn even_share(quota: u32, state: &ControlState, host: u64) -> u32 {
    share_among(quota, active_members(state), host)
}

pub(crate) fn active_members(state: &ControlState) -> Vec<u64> {
    state
        .members()
        .filter(|m| m.state == MemberState::Active)
        .map(|m| m.id)
        .collect()
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

/// Jobs of each tenant holding a permit on this host, and when permits
/// were last refused here.
#[derive(Debug, Default)]
pub(crate) struct TenantQuotas {
    running: Mutex<HashMap<TenantId, u32>>,
    refused: Mutex<HashMap<TenantId, VecDeque<Instant>>>,
}

/// One job's place in its tenant's share here; given back on drop.
#[derive(Debug)]
pub(crate) struct QuotaPermit {
    quotas: Arc<TenantQuotas>,
    tenant: TenantId,
}

impl TenantQuotas {
    /// A place in `tenant`'s share of its concurrency quota on host `me`:
    /// `Ok(None)` when it has no quota, `Err` when its share here is used
    /// up (demand this host's lease lacked: the leader rebalances by it).
    pub(crate) fn permit(
        self: &Arc<Self>,
        tenant: &TenantId,
        state: &ControlState,
        me: u64,
    ) -> Result<Option<QuotaPermit>, Refusal> {
        let permit = self.permit_for_peer(tenant, state, me);
        if permit.is_err() {
            self.refused(tenant, Instant::now());
        }
        permit
    }

    /// [`TenantQuotas::permit`] for a job a peer offers: a refusal is not
    /// recorded as demand here (the origin recorded it).
    pub(crate) fn permit_for_peer(
        self: &Arc<Self>,
        tenant: &TenantId,
        state: &ControlState,
        me: u64,
    ) -> Result<Option<QuotaPermit>, Refusal> {
        let Some(quota) = state.tenant(tenant).and_then(|t| t.max_concurrent) else {
            return Ok(None);
        };
        self.acquire(tenant, share(quota, tenant, state, me))
            .map(Some)
            .ok_or(Refusal::QuotaExceeded {
                retry_after_ms: 200,
            })
    }

    /// This host's use of the lease of each tenant of `state` with a
    /// concurrency quota.
    pub(crate) fn usage_of(&self, state: &ControlState) -> BTreeMap<TenantId, QuotaUsage> {
        let tenants = state
            .tenants()
            .filter(|t| t.max_concurrent.is_some())
            .map(|t| {
                let epoch = state.quota_leases(&t.id).map_or(0, |l| l.epoch);
                (t.id.clone(), epoch)
            });
        self.usage(tenants, Instant::now())
    }

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

    /// Notes that `tenant` wanted a permit here and found none.
    pub(crate) fn refused(&self, tenant: &TenantId, now: Instant) {
        let mut refused = self.refused.lock().expect("quota lock");
        let times = refused.entry(tenant.clone()).or_default();
        times.push_back(now);
        while times.len() > 1024 {
            times.pop_front();
        }
    }

    /// This host's use of each tenant's share in `tenants`.
    pub(crate) fn usage(
        &self,
        tenants: impl Iterator<Item = (TenantId, u64)>,
        now: Instant,
    ) -> BTreeMap<TenantId, QuotaUsage> {
        let running = self.running.lock().expect("quota lock");
        let mut refused = self.refused.lock().expect("quota lock");
        tenants
            .map(|(tenant, epoch)| {
                let recent = refused.get_mut(&tenant).map_or(0, |times| {
                    while times
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) > PRESSURE_WINDOW)
                    {
                        times.pop_front();
                    }
                    times.len() as u32
                });
                let usage = QuotaUsage {
                    held: running.get(&tenant).copied().unwrap_or(0),
                    refused: recent,
                    epoch,
                };
                (tenant, usage)
            })
            .collect()
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
    fn only_an_origin_with_a_share_may_lend_one() {
        for (quota, origin_share, believed) in [
            (None, None, true),
            (None, Some(0), true),
            (Some(4), Some(2), true),
            (Some(4), Some(0), false),
            (Some(4), None, false),
        ] {
            assert_eq!(
                may_have_lent(quota, origin_share),
                believed,
                "{quota:?} {origin_share:?}"
            );
        }
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
