//! A tenant's GPU memory share on this host, split among the host's
//! executors. The host's share (its lease of the tenant's quota,
//! `quota::gpu`) is one number, but each executor is a node process of its
//! own that enforces only the cap its jobs are given (the tenant's memory
//! pool on each GPU, and its ledger across its GPUs) and knows nothing of
//! the others. So the sidecar splits the host's share among the executors
//! the tenant may use, in whole MiB, the way the leader splits the quota
//! among hosts (DESIGN §3, the `leases` policy): evenly at first, then
//! following demand (the bytes each executor's cap refused lately),
//! shrinking before growing, and an executor's smaller share counts as
//! applied only once no job given a larger one still runs there. The
//! executors' caps together stay within the host's share, across GPUs and
//! processes, while a tenant's work on one GPU can still grow to most of
//! it.
//!
//! The sidecar is the only one deciding, so the split lives here, in
//! memory, and moves as jobs are assigned: no log, no messages.
//!
//! What it is not: the host's share itself (`quota::gpu`), or which
//! executor runs a job (`choice`, which prefers one with a share).

use crate::leases::next_leases;
use crate::peer::QuotaUsage;
use spillway_consensus::{GPU_LEASE_UNIT, QuotaLeases};
use spillway_proto::TenantId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a refusal counts as demand.
const PRESSURE_WINDOW: Duration = Duration::from_secs(2);

/// The most rebalancing steps one assignment takes (a shrink, then a
/// grow, when nothing runs under the shrunk shares).
const STEPS: usize = 3;

/// The next split of a host's share of `units` MiB among `executors`, or
/// `None` to leave it: the `leases` policy, after trimming a split
/// that adds up to more than the share (the host's lease shrank).
pub(crate) fn next_split(
    units: u32,
    executors: &[u64],
    current: Option<&QuotaLeases>,
    usage: &BTreeMap<u64, QuotaUsage>,
) -> Option<QuotaLeases> {
    if let Some(current) = current
        && current.shares.values().sum::<u32>() > units
    {
        return Some(trimmed(current, units));
    }
    next_leases(units, executors, current, usage)
}

/// `split` cut down to `units` MiB in all, a MiB at a time from the
/// largest share (the highest executor first on ties), so the shares stay
/// as even as they were.
fn trimmed(split: &QuotaLeases, units: u32) -> QuotaLeases {
    let mut shares = split.shares.clone();
    let over = shares.values().sum::<u32>().saturating_sub(units);
    for _ in 0..over {
        let (_, largest) = (shares.iter_mut())
            .max_by_key(|(e, s)| (**s, **e))
            .expect("a share while over");
        *largest -= 1;
    }
    QuotaLeases {
        epoch: split.epoch + 1,
        shares: shares.into_iter().filter(|(_, s)| *s > 0).collect(),
    }
}

/// What the sidecar sees of one executor the tenant may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its index among the host's executors.
    pub(crate) executor: u64,
    /// Bytes the tenant holds there (buffers and resident weights).
    pub(crate) held: u64,
    /// Bytes the tenant's cap refused there since the sidecar started.
    pub(crate) refused: u64,
}

/// Each tenant's split of its host share among the executors.
#[derive(Debug, Default)]
pub(crate) struct ExecutorShares {
    tenants: Mutex<HashMap<TenantId, Split>>,
}

#[derive(Debug, Default)]
struct Split {
    /// The executors it is among (indexes), as last assigned.
    executors: Vec<u64>,
    leases: Option<QuotaLeases>,
    /// Executor → cap (MiB) → jobs given it, running now.
    running: BTreeMap<u64, BTreeMap<u32, u32>>,
    /// Executor → its refused-bytes counter as sampled.
    samples: BTreeMap<u64, VecDeque<(Instant, u64)>>,
}

impl Split {
    fn share_of(&self, executor: u64) -> Option<u32> {
        let leases = self.leases.as_ref()?;
        Some(leases.shares.get(&executor).copied().unwrap_or(0))
    }

    /// The epoch `executor` has applied of a split at `epoch`: that one
    /// once nothing runs there under a larger share than it now has,
    /// else none (`u64::MAX`).
    fn applied(&self, executor: u64, epoch: u64) -> u64 {
        let biggest = (self.running.get(&executor))
            .and_then(|caps| caps.keys().next_back().copied())
            .unwrap_or(0);
        let applied = self.share_of(executor).is_none_or(|share| biggest <= share);
        if applied { epoch } else { u64::MAX }
    }

    /// Bytes `executor`'s counter rose by in the window, sampling it
    /// (`total`) now. An executor first seen starts from nothing, so what
    /// it refused before counts once.
    fn refused_lately(&mut self, executor: u64, total: u64, now: Instant) -> u64 {
        let seen = self.samples.entry(executor).or_default();
        if seen.is_empty() {
            seen.push_back((now, 0));
        }
        seen.push_back((now, total));
        // Keep one sample from before the window: the count at its start.
        while seen
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= PRESSURE_WINDOW)
        {
            seen.pop_front();
        }
        while seen.len() > 64 {
            seen.pop_front();
        }
        let start = seen.front().map_or(0, |(_, c)| *c);
        total.saturating_sub(start)
    }

    /// How each executor uses its share now, as the policy reads it.
    fn usage(&mut self, seen: &[Seen], now: Instant) -> BTreeMap<u64, QuotaUsage> {
        let epoch = self.leases.as_ref().map_or(0, |l| l.epoch);
        (seen.iter())
            .map(|s| {
                let usage = QuotaUsage {
                    held: units_of(s.held),
                    refused: units_of(self.refused_lately(s.executor, s.refused, now)),
                    epoch: self.applied(s.executor, epoch),
                };
                (s.executor, usage)
            })
            .collect()
    }
}

/// Bytes in MiB, rounded up.
fn units_of(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(GPU_LEASE_UNIT)).unwrap_or(u32::MAX)
}

/// A running job's part of its tenant's split, held until it ends.
#[derive(Debug)]
pub(crate) struct ShareHeld {
    shares: Arc<ExecutorShares>,
    tenant: TenantId,
    executor: u64,
    units: u32,
}

impl Drop for ShareHeld {
    fn drop(&mut self) {
        let mut tenants = self.shares.tenants.lock().expect("shares lock");
        let Some(split) = tenants.get_mut(&self.tenant) else {
            return;
        };
        if let Some(caps) = split.running.get_mut(&self.executor)
            && let Some(n) = caps.get_mut(&self.units)
        {
            *n -= 1;
            if *n == 0 {
                caps.remove(&self.units);
            }
        }
    }
}

impl ExecutorShares {
    /// The cap, in bytes, of a job of `tenant` on executor `at`: its part
    /// of the host's share of `host_share` bytes, split among the
    /// executors `seen` (every one the tenant may use, `at` among them)
    /// and rebalanced first if their use says so. Held while the guard
    /// lives.
    pub(crate) fn take(
        self: &Arc<Self>,
        tenant: &TenantId,
        host_share: u64,
        at: u64,
        seen: &[Seen],
        now: Instant,
    ) -> (u64, ShareHeld) {
        let units = u32::try_from(host_share / GPU_LEASE_UNIT).unwrap_or(u32::MAX);
        let executors: Vec<u64> = seen.iter().map(|s| s.executor).collect();
        let mut tenants = self.tenants.lock().expect("shares lock");
        let split = tenants.entry(tenant.clone()).or_default();
        split.executors.clone_from(&executors);
        let idle = split.running.values().all(BTreeMap::is_empty);
        if idle && split.leases.as_ref().is_some_and(|l| l.shares.is_empty()) {
            // A share back from nothing, nothing running: even again.
            split.leases = None;
        }
        let mut usage = split.usage(seen, now);
        for _ in 0..STEPS {
            let Some(next) = next_split(units, &executors, split.leases.as_ref(), &usage) else {
                break;
            };
            tracing::debug!(%tenant, epoch = next.epoch, shares = ?next.shares, "GPU memory split among executors");
            split.leases = Some(next);
            let epoch = split.leases.as_ref().map_or(0, |l| l.epoch);
            for (executor, u) in &mut usage {
                u.epoch = split.applied(*executor, epoch);
            }
        }
        let share = (split.share_of(at)).unwrap_or(units / seen.len().max(1) as u32);
        *split
            .running
            .entry(at)
            .or_default()
            .entry(share)
            .or_default() += 1;
        let held = ShareHeld {
            shares: Arc::clone(self),
            tenant: tenant.clone(),
            executor: at,
            units: share,
        };
        (u64::from(share) * GPU_LEASE_UNIT, held)
    }

    /// Each executor's share of `tenant`'s host share now, in MiB; `None`
    /// before the tenant's first split.
    pub(crate) fn of(&self, tenant: &TenantId) -> Option<BTreeMap<u64, u32>> {
        let tenants = self.tenants.lock().expect("shares lock");
        Some(tenants.get(tenant)?.leases.as_ref()?.shares.clone())
    }

    /// Every tenant's split: each executor it may use (index) and its part
    /// in bytes, 0 included, in tenant and executor order.
    pub(crate) fn all(&self) -> Vec<(TenantId, Vec<(u64, u64)>)> {
        let tenants = self.tenants.lock().expect("shares lock");
        let mut all: Vec<(TenantId, Vec<(u64, u64)>)> = (tenants.iter())
            .filter_map(|(tenant, split)| {
                let leases = split.leases.as_ref()?;
                let parts = (split.executors.iter())
                    .map(|e| {
                        (
                            *e,
                            u64::from(leases.shares.get(e).copied().unwrap_or(0)) * GPU_LEASE_UNIT,
                        )
                    })
                    .collect();
                Some((tenant.clone(), parts))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Forgets `tenant`'s split (it has no GPU memory quota any more).
    pub(crate) fn forget(&self, tenant: &TenantId) {
        let mut tenants = self.tenants.lock().expect("shares lock");
        if tenants
            .get(tenant)
            .is_some_and(|s| s.running.values().all(|c| c.is_empty()))
        {
            tenants.remove(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = GPU_LEASE_UNIT;

    fn leases(epoch: u64, shares: &[(u64, u32)]) -> QuotaLeases {
        QuotaLeases {
            epoch,
            shares: shares.iter().copied().collect(),
        }
    }

    #[test]
    fn a_split_over_a_shrunk_share_is_trimmed_from_the_largest() {
        // (case, split, host share, trimmed)
        let cases = [
            (
                "even",
                leases(1, &[(0, 8), (1, 8)]),
                10,
                leases(2, &[(0, 5), (1, 5)]),
            ),
            (
                "largest first",
                leases(3, &[(0, 12), (1, 4)]),
                10,
                leases(4, &[(0, 6), (1, 4)]),
            ),
            (
                "down to one",
                leases(1, &[(0, 30), (1, 2)]),
                1,
                leases(2, &[(0, 1)]),
            ),
            (
                "to nothing",
                leases(1, &[(0, 3), (1, 2)]),
                0,
                leases(2, &[]),
            ),
        ];
        for (case, split, units, want) in cases {
            let got = next_split(units, &[0, 1], Some(&split), &BTreeMap::new());
            assert_eq!(got, Some(want), "{case}");
        }
    }

    #[test]
    fn a_split_within_the_share_follows_the_hosts_policy() {
        let quiet: BTreeMap<u64, QuotaUsage> = [0, 1]
            .into_iter()
            .map(|e| (e, QuotaUsage::default()))
            .collect();
        // First: the even split, recorded.
        assert_eq!(
            next_split(64, &[0, 1], None, &quiet),
            Some(leases(1, &[(0, 32), (1, 32)]))
        );
        // A share that grew leaves the split until demand comes.
        let split = leases(1, &[(0, 32), (1, 32)]);
        let mut usage = quiet.clone();
        for u in usage.values_mut() {
            u.epoch = 1;
        }
        assert_eq!(next_split(96, &[0, 1], Some(&split), &usage), None);
    }

    fn seen(rows: &[(u64, u64, u64)]) -> Vec<Seen> {
        rows.iter()
            .map(|&(executor, held, refused)| Seen {
                executor,
                held,
                refused,
            })
            .collect()
    }

    #[test]
    fn the_split_moves_to_the_executor_whose_cap_refused() {
        let shares = Arc::new(ExecutorShares::default());
        let acme = TenantId("acme".into());
        let t0 = Instant::now();
        // Two executors, a 64 MiB host share: 32 each.
        let (cap, first) = shares.take(&acme, 64 * MIB, 0, &seen(&[(0, 0, 0), (1, 0, 0)]), t0);
        assert_eq!(cap, 32 * MIB);
        drop(first);
        assert_eq!(shares.of(&acme), Some([(0, 32), (1, 32)].into()));
        // Executor 0's cap refused 48 MiB lately (a job asking past its 32,
        // tried again: what the policy reads as demand adds up over the
        // window); executor 1 is idle: the next job there gets 48 MiB
        // (shrink, then grow, in one go).
        let busy = seen(&[(0, 0, 48 * MIB), (1, 0, 0)]);
        let (cap, _second) = shares.take(&acme, 64 * MIB, 0, &busy, t0);
        assert_eq!(cap, 48 * MIB);
        assert_eq!(
            shares.all(),
            vec![(acme, vec![(0, 48 * MIB), (1, 16 * MIB)])]
        );
    }

    #[test]
    fn a_share_shrinks_only_once_the_jobs_given_more_have_ended() {
        let shares = Arc::new(ExecutorShares::default());
        let acme = TenantId("acme".into());
        let t0 = Instant::now();
        let idle = seen(&[(0, 0, 0), (1, 0, 0)]);
        // A job on executor 1 runs under its 32 MiB.
        let (cap, on_one) = shares.take(&acme, 64 * MIB, 1, &idle, t0);
        assert_eq!(cap, 32 * MIB);
        // Executor 0 lacks 64: executor 1's share shrinks, but it
        // still runs a job given 32, so executor 0 does not grow yet.
        let busy = seen(&[(0, 0, 64 * MIB), (1, 0, 0)]);
        let (cap, held) = shares.take(&acme, 64 * MIB, 0, &busy, t0);
        assert_eq!(cap, 32 * MIB, "no growth while executor 1 may hold 32");
        drop(held);
        let split = shares.of(&acme).unwrap();
        assert!(split.get(&1).copied().unwrap_or(0) < 32, "{split:?}");
        // Once it ends, executor 0 grows.
        drop(on_one);
        let (cap, _held) = shares.take(&acme, 64 * MIB, 0, &busy, t0);
        assert!(cap > 32 * MIB, "{cap}");
        let split = shares.of(&acme).unwrap();
        assert!(split.values().sum::<u32>() <= 64, "{split:?}");
    }

    #[test]
    fn a_refusal_stops_counting_after_the_window() {
        let mut split = Split::default();
        let t0 = Instant::now();
        assert_eq!(
            split.refused_lately(0, 10, t0),
            10,
            "first seen: counts once"
        );
        assert_eq!(split.refused_lately(0, 10, t0 + Duration::from_secs(1)), 10);
        assert_eq!(split.refused_lately(0, 10, t0 + Duration::from_secs(5)), 0);
        assert_eq!(split.refused_lately(0, 15, t0 + Duration::from_secs(6)), 5);
    }
}
