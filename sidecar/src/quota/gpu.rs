//! Tenant GPU memory quotas, cluster-wide, enforced on each host with no
//! consensus round per allocation (DESIGN §3, as for concurrency).
//!
//! A tenant's `max_gpu_memory_bytes` is split into per-host shares in
//! whole MiB: the leases the leader writes to the log (`SetGpuLeases`,
//! rebalanced by the `leases` policy as demand shifts, never adding up
//! to more than the quota), or, until it has written any, an even split
//! among the active members. A job runs under its host's share, whichever
//! host it arrived at: the share is its tenant's cap on that host's nodes
//! (split again among the host's executors, `executors::gpu_share`), which
//! the driver enforces per GPU with the tenant's memory pool, and the node's
//! ledger across the node's GPUs and on the CPU backend. A host with no lease of a tenant's quota
//! runs none of its jobs: one arriving there is offered only to peers (429
//! `quota_exceeded` if none takes it), a peer's is turned away (its origin
//! tries another), and each counts as a MiB of demand.
//!
//! What a host reports to the leader for each tenant ([`GpuQuotas::usage_of`]):
//! the MiB its jobs hold (buffers, and resident weights in its pools), the
//! MiB its cap refused in the last two seconds (the demand its share
//! lacked; a job not run here for want of any lease counts one), and
//! the lease it has applied: a lease that shrank is applied
//! only once no job started under a larger cap still runs here, so the
//! leader grows another host's share only when none can pass its own.
//!
//! What it is not: exact while the even split is in force and hosts
//! disagree on membership, or for the cuBLAS workspaces of a tenant's jobs
//! on several GPUs (each charged only to its own GPU's pool).

use super::even_share;
use crate::link::NodeStatus;
use crate::peer::QuotaUsage;
use spillway_consensus::{ControlState, GPU_LEASE_UNIT};
use spillway_proto::{JobSpec, TenantId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a refusal counts as demand for the rebalancer.
const PRESSURE_WINDOW: Duration = Duration::from_secs(2);

/// `host`'s share of a tenant's GPU memory quota of `quota` bytes, in
/// bytes: its lease, or its part of the even split among the active
/// members, in whole MiB.
pub(crate) fn gpu_share(quota: u64, tenant: &TenantId, state: &ControlState, host: u64) -> u64 {
    let units = match state.gpu_leases(tenant) {
        Some(leases) => leases.shares.get(&host).copied().unwrap_or(0),
        None => even_share(quota_units(quota), state, host),
    };
    u64::from(units) * GPU_LEASE_UNIT
}

/// A quota in lease units (whole MiB).
pub(crate) fn quota_units(quota: u64) -> u32 {
    u32::try_from(quota / GPU_LEASE_UNIT).unwrap_or(u32::MAX)
}

/// Bytes in lease units, rounded up.
fn units_of(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(GPU_LEASE_UNIT)).unwrap_or(u32::MAX)
}

/// What this host knows of its tenants' GPU memory shares.
#[derive(Debug, Default)]
pub(crate) struct GpuQuotas {
    /// The caps the jobs running here were given, per tenant: cap → jobs.
    running: Mutex<HashMap<TenantId, BTreeMap<u64, u32>>>,
    /// The lease epoch of each tenant this host has applied.
    applied: Mutex<HashMap<TenantId, u64>>,
    /// The executors' refused-bytes counters as sampled, per tenant.
    samples: Mutex<HashMap<TenantId, VecDeque<(Instant, u64)>>>,
    /// Jobs this host did not run for want of a lease, per tenant.
    turned_away: Mutex<HashMap<TenantId, VecDeque<Instant>>>,
}

/// A running job's cap, held until it ends.
#[derive(Debug)]
pub(crate) struct CapHeld {
    quotas: Arc<GpuQuotas>,
    tenant: TenantId,
    cap: u64,
}

impl Drop for CapHeld {
    fn drop(&mut self) {
        let mut running = self.quotas.running.lock().expect("gpu quota lock");
        if let Some(caps) = running.get_mut(&self.tenant)
            && let Some(n) = caps.get_mut(&self.cap)
        {
            *n -= 1;
            if *n == 0 {
                caps.remove(&self.cap);
            }
        }
    }
}

impl GpuQuotas {
    /// Runs `spec` under this host's share of its tenant's GPU memory
    /// quota: the share (host `me`'s, in `state`) becomes the job's cap,
    /// held while the returned guard lives. `None`, leaving `spec` as it
    /// came: no quota, or a tenant this host does not know yet.
    pub(crate) fn cap_here(
        self: &Arc<Self>,
        spec: &mut JobSpec,
        state: &ControlState,
        me: u64,
    ) -> Option<CapHeld> {
        let tenant = &spec.tenant;
        let quota = state.tenant(tenant)?.max_gpu_memory_bytes?;
        let cap = gpu_share(quota, tenant, state, me);
        let mut running = self.running.lock().expect("gpu quota lock");
        *running
            .entry(tenant.clone())
            .or_default()
            .entry(cap)
            .or_default() += 1;
        spec.tenant_gpu_bytes = Some(cap);
        Some(CapHeld {
            quotas: Arc::clone(self),
            tenant: tenant.clone(),
            cap,
        })
    }

    /// Whether a job of `tenant` may run on host `me`: always without a
    /// quota; with one, only under a lease of at least a MiB. A refusal is
    /// noted as a MiB of demand.
    pub(crate) fn has_room(&self, tenant: &TenantId, state: &ControlState, me: u64) -> bool {
        let Some(quota) = state.tenant(tenant).and_then(|t| t.max_gpu_memory_bytes) else {
            return true;
        };
        if gpu_share(quota, tenant, state, me) > 0 {
            return true;
        }
        let mut away = self.turned_away.lock().expect("gpu quota lock");
        let times = away.entry(tenant.clone()).or_default();
        times.push_back(Instant::now());
        while times.len() > 1024 {
            times.pop_front();
        }
        false
    }

    /// This host's use of each tenant's GPU memory lease (tenants of
    /// `state` with a GPU memory quota), from its node's report `node`.
    pub(crate) fn usage_of(
        &self,
        state: &ControlState,
        me: u64,
        node: &NodeStatus,
    ) -> BTreeMap<TenantId, QuotaUsage> {
        let now = Instant::now();
        let pools = node.load.as_ref().map(|(l, _)| &l.gpu_memory);
        state
            .tenants()
            .filter_map(|t| Some((t.id.clone(), t.max_gpu_memory_bytes?)))
            .map(|(tenant, quota)| {
                let share = gpu_share(quota, &tenant, state, me);
                let epoch = state.gpu_leases(&tenant).map_or(0, |l| l.epoch);
                let biggest = (self.running.lock().expect("gpu quota lock"))
                    .get(&tenant)
                    .and_then(|caps| caps.keys().next_back().copied())
                    .unwrap_or(0);
                let mut applied = self.applied.lock().expect("gpu quota lock");
                let applied = applied.entry(tenant.clone()).or_default();
                if biggest <= share {
                    *applied = epoch;
                }
                let ledger = find(&node.tenant_gpu, &tenant);
                let in_pools: u64 = (pools.into_iter().flatten())
                    .flat_map(|g| &g.tenants)
                    .filter(|p| p.tenant == tenant)
                    .map(|p| p.used_bytes)
                    .sum();
                let refused =
                    self.refused_lately(&tenant, find(&node.tenant_gpu_refused, &tenant), now)
                        + self.turned_away_lately(&tenant, now) * GPU_LEASE_UNIT;
                let usage = QuotaUsage {
                    held: units_of(ledger.max(in_pools)),
                    refused: units_of(refused),
                    epoch: *applied,
                };
                (tenant, usage)
            })
            .collect()
    }

    /// Bytes `tenant`'s cap refused here in the last [`PRESSURE_WINDOW`],
    /// from the counter's value now (`total`) and its earlier samples.
    fn refused_lately(&self, tenant: &TenantId, total: u64, now: Instant) -> u64 {
        let mut samples = self.samples.lock().expect("gpu quota lock");
        let seen = samples.entry(tenant.clone()).or_default();
        seen.push_back((now, total));
        // Keep one sample from before the window: the count at its start.
        while seen
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= PRESSURE_WINDOW)
        {
            seen.pop_front();
        }
        let start = seen.front().map_or(total, |(_, v)| *v);
        // A counter can go down (an executor down drops out of the sum).
        total.saturating_sub(start)
    }

    /// Peers' jobs of `tenant` turned away in the last [`PRESSURE_WINDOW`].
    fn turned_away_lately(&self, tenant: &TenantId, now: Instant) -> u64 {
        let mut away = self.turned_away.lock().expect("gpu quota lock");
        let Some(times) = away.get_mut(tenant) else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > PRESSURE_WINDOW)
        {
            times.pop_front();
        }
        times.len() as u64
    }
}

fn find(list: &[(TenantId, u64)], tenant: &TenantId) -> u64 {
    list.iter()
        .find(|(t, _)| t == tenant)
        .map_or(0, |(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = GPU_LEASE_UNIT;

    #[test]
    fn refusals_count_as_demand_for_two_seconds() {
        let q = GpuQuotas::default();
        let acme = TenantId("acme".into());
        let t0 = Instant::now();
        assert_eq!(q.refused_lately(&acme, 0, t0), 0);
        assert_eq!(
            q.refused_lately(&acme, 5 * MIB, t0 + Duration::from_millis(500)),
            5 * MIB
        );
        assert_eq!(
            q.refused_lately(&acme, 7 * MIB, t0 + Duration::from_secs(1)),
            7 * MIB
        );
        // The refusals before the window no longer count.
        assert_eq!(
            q.refused_lately(&acme, 7 * MIB, t0 + Duration::from_millis(2_600)),
            2 * MIB
        );
        assert_eq!(
            q.refused_lately(&acme, 7 * MIB, t0 + Duration::from_secs(4)),
            0
        );
        // A counter that went down counts nothing.
        assert_eq!(q.refused_lately(&acme, MIB, t0 + Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_host_without_a_lease_turns_peers_jobs_away_as_demand() {
        use spillway_consensus::{ControlCommand, MemberEntry, MemberState, TenantEntry};
        let acme = TenantId("acme".into());
        let mut state = ControlState::default();
        let member = |id| MemberEntry {
            id,
            key: [id as u8; 32],
            quic_addr: String::new(),
            http_addr: String::new(),
            labels: Default::default(),
            gpus: Vec::new(),
            state: MemberState::Active,
        };
        state.apply(&ControlCommand::Bootstrap {
            cluster_id: "c".into(),
            admin_token_hash: [0; 32],
            first: member(1),
        });
        let q = GpuQuotas::default();
        // No quota: always room.
        assert!(q.has_room(&acme, &state, 1));
        state.apply(&ControlCommand::CreateTenant(TenantEntry {
            id: acme.clone(),
            created_unix_ms: 0,
            placement: Default::default(),
            trusted_keys: Vec::new(),
            require_signed: false,
            max_concurrent: None,
            max_job_memory_bytes: None,
            rate_per_s: None,
            max_gpu_memory_bytes: Some(32 * MIB),
            max_artifacts: None,
            max_artifact_bytes: None,
        }));
        // The even split of one host: all of it.
        assert_eq!(gpu_share(32 * MIB, &acme, &state, 1), 32 * MIB);
        assert!(q.has_room(&acme, &state, 1));
        // Leased elsewhere entirely: host 1 turns the job away, as demand.
        state.apply(&ControlCommand::SetGpuLeases {
            tenant: acme.clone(),
            epoch: 1,
            shares: [(2, 32)].into(),
        });
        assert!(!q.has_room(&acme, &state, 1));
        assert!(!q.has_room(&acme, &state, 1));
        assert_eq!(q.turned_away_lately(&acme, Instant::now()), 2);
        assert_eq!(
            q.turned_away_lately(&acme, Instant::now() + Duration::from_secs(3)),
            0
        );
    }

    #[test]
    fn a_shrunk_lease_is_applied_once_no_job_under_a_bigger_cap_runs() {
        let q = Arc::new(GpuQuotas::default());
        let acme = TenantId("acme".into());
        let under = |cap| {
            let mut running = q.running.lock().unwrap();
            *running
                .entry(acme.clone())
                .or_default()
                .entry(cap)
                .or_default() += 1;
            CapHeld {
                quotas: q.clone(),
                tenant: acme.clone(),
                cap,
            }
        };
        let big = under(32 * MIB);
        let small = under(16 * MIB);
        let biggest = || q.running.lock().unwrap()[&acme].keys().next_back().copied();
        assert_eq!(biggest(), Some(32 * MIB));
        drop(big);
        assert_eq!(biggest(), Some(16 * MIB));
        drop(small);
        assert_eq!(biggest(), None);
        assert_eq!(units_of(0), 0);
        assert_eq!(units_of(1), 1);
        assert_eq!(units_of(MIB), 1);
        assert_eq!(quota_units(32 * MIB + MIB / 2), 32);
    }
}
