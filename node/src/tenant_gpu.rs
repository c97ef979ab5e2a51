//! GPU memory per tenant on this node: the `gpu` buffer bytes each
//! tenant's running jobs hold, and its resident weights, added up across
//! its jobs and the node's GPUs, and the tenant's cap on them
//! (`JobSpec::tenant_gpu_bytes`: its host's share of its
//! `max_gpu_memory_bytes`, or the executor's part of that share).
//!
//! Each job's state holds a [`TenantGpuAccount`]: a buffer is charged to
//! the job's allowance and then to its tenant here; freeing it, or the job
//! ending however it ends (its state is dropped), gives the bytes back.
//! Buffers count the same on the CPU backend as on a GPU. On the CPU
//! backend this ledger enforces the cap, across the tenant's jobs on the
//! node. On a GPU the tenant's memory pool there enforces it first
//! (`tenant_pool`: the driver refuses past it, its workspaces included),
//! and the ledger enforces only what one pool cannot see: the bytes the
//! tenant holds in its other pools (on the node's other GPUs, or a pool
//! made for an earlier cap) added to the pool's
//! ([`TenantGpuAccount::leave_the_cap_to_the_driver`]).

use spillway_proto::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes held by each tenant's running jobs on this node.
#[derive(Debug, Default)]
pub(crate) struct TenantGpuLedger {
    held: Mutex<HashMap<TenantId, Held>>,
    /// Bytes each tenant's jobs asked for and its cap refused (here, or
    /// its pool on a GPU), since the node started: the demand its host's
    /// share of the GPU memory quota lacked.
    refused: Mutex<HashMap<TenantId, u64>>,
    /// Woken when a charge is taken, so the node reports it without
    /// waiting for its next periodic report.
    changed: tokio::sync::Notify,
}

/// What one tenant holds: in all, and in each of its GPU memory pools.
#[derive(Debug, Default)]
struct Held {
    total: u64,
    /// Pool id → bytes allocated from that pool.
    pooled: HashMap<u64, u64>,
}

impl TenantGpuLedger {
    /// Resolves after the next charge (or at once if one came since the
    /// last wait).
    pub(crate) async fn charged(&self) {
        self.changed.notified().await;
    }

    /// Every tenant holding bytes here, in tenant order.
    pub(crate) fn snapshot(&self) -> Vec<(TenantId, u64)> {
        let held = self.held.lock().expect("ledger lock");
        let mut all: Vec<(TenantId, u64)> =
            held.iter().map(|(t, h)| (t.clone(), h.total)).collect();
        all.sort();
        all
    }

    /// Every tenant its cap refused, with the bytes refused since the node
    /// started, in tenant order.
    pub(crate) fn refused(&self) -> Vec<(TenantId, u64)> {
        let refused = self.refused.lock().expect("ledger lock");
        let mut all: Vec<(TenantId, u64)> = refused.iter().map(|(t, b)| (t.clone(), *b)).collect();
        all.sort();
        all
    }

    fn note_refused(&self, tenant: &TenantId, bytes: u64) {
        let mut refused = self.refused.lock().expect("ledger lock");
        let sum = refused.entry(tenant.clone()).or_default();
        *sum = sum.saturating_add(bytes);
        drop(refused);
        // Reported soon, like a charge: the sidecar reads demand from it.
        self.changed.notify_one();
    }

    /// Bytes `tenant`'s jobs hold here now.
    #[cfg(test)]
    pub(crate) fn held(&self, tenant: &TenantId) -> u64 {
        self.held
            .lock()
            .expect("ledger lock")
            .get(tenant)
            .map_or(0, |h| h.total)
    }
}

/// One job's part of its tenant's bytes; given back on drop.
#[derive(Debug)]
pub(crate) struct TenantGpuAccount {
    ledger: Arc<TenantGpuLedger>,
    tenant: TenantId,
    cap: Option<u64>,
    /// The tenant's pool on the job's GPU (its id) enforces the cap there:
    /// the ledger checks only the bytes held outside it.
    pool: Option<u64>,
    mine: u64,
}

/// A charge the tenant's cap refuses: what its jobs hold here, and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverCap {
    pub(crate) held: u64,
    pub(crate) cap: u64,
}

/// Whether a charge of `bytes` passes `cap` where the tenant holds `total`
/// bytes, `in_pool` of them in the pool the charge comes from (`None`: no
/// pool enforces the cap). With a pool, only bytes held outside it make
/// the ledger refuse: the pool refuses its own part itself.
pub(crate) fn over_cap(cap: u64, total: u64, bytes: u64, in_pool: Option<u64>) -> bool {
    let past = total.saturating_add(bytes) > cap;
    match in_pool {
        None => past,
        Some(in_pool) => total > in_pool && past,
    }
}

impl TenantGpuAccount {
    pub(crate) fn open(ledger: Arc<TenantGpuLedger>, tenant: TenantId, cap: Option<u64>) -> Self {
        Self {
            ledger,
            tenant,
            cap,
            pool: None,
            mine: 0,
        }
    }

    /// From now on the bytes come from the tenant's pool `pool` (its id),
    /// which enforces the cap on its GPU: the ledger checks only what the
    /// tenant holds outside it (and a resident tensor's account made from
    /// this one does the same).
    pub(crate) fn leave_the_cap_to_the_driver(&mut self, pool: u64) {
        self.pool = Some(pool);
    }

    /// The tenant's cap on this node.
    pub(crate) fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// Charges `bytes` to the tenant unless that takes it past its cap.
    pub(crate) fn charge(&mut self, bytes: u64) -> Result<(), OverCap> {
        let mut ledger = self.ledger.held.lock().expect("ledger lock");
        let held = match ledger.get_mut(&self.tenant) {
            Some(held) => held,
            None => ledger.entry(self.tenant.clone()).or_default(),
        };
        let in_pool = (self.pool).map(|p| held.pooled.get(&p).copied().unwrap_or(0));
        if let Some(cap) = self.cap
            && over_cap(cap, held.total, bytes, in_pool)
        {
            let over = OverCap {
                held: held.total,
                cap,
            };
            drop(ledger);
            self.ledger.note_refused(&self.tenant, bytes);
            return Err(over);
        }
        held.total += bytes;
        if let Some(p) = self.pool {
            *held.pooled.entry(p).or_default() += bytes;
        }
        self.mine += bytes;
        drop(ledger);
        self.ledger.changed.notify_one();
        Ok(())
    }

    /// Notes that the tenant's pool on a GPU refused `bytes` at its cap.
    pub(crate) fn refused_by_the_driver(&self, bytes: u64) {
        self.ledger.note_refused(&self.tenant, bytes);
    }

    /// Gives `bytes` back (a buffer freed).
    pub(crate) fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.mine);
        self.mine -= bytes;
        let mut ledger = self.ledger.held.lock().expect("ledger lock");
        let Some(held) = ledger.get_mut(&self.tenant) else {
            return;
        };
        held.total = held.total.saturating_sub(bytes);
        if let Some(p) = self.pool
            && let Some(sum) = held.pooled.get_mut(&p)
        {
            *sum = sum.saturating_sub(bytes);
            if *sum == 0 {
                held.pooled.remove(&p);
            }
        }
        if held.total == 0 {
            ledger.remove(&self.tenant);
        }
    }

    /// A new, empty account of the same tenant, ledger, cap and pool: for
    /// what outlives the job but is the tenant's (a resident tensor).
    pub(crate) fn sibling(&self) -> Self {
        let mut sibling = Self::open(self.ledger.clone(), self.tenant.clone(), self.cap);
        sibling.pool = self.pool;
        sibling
    }

    pub(crate) fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

impl Drop for TenantGpuAccount {
    fn drop(&mut self) {
        self.release(self.mine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_jobs_share_its_cap_and_give_back_on_drop() {
        let ledger = Arc::new(TenantGpuLedger::default());
        let acme = TenantId("acme".into());
        let mut first = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        let mut second = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        let mut other =
            TenantGpuAccount::open(ledger.clone(), TenantId("globex".into()), Some(100));
        first.charge(60).unwrap();
        assert_eq!(second.charge(50), Err(OverCap { held: 60, cap: 100 }));
        second.refused_by_the_driver(7);
        assert_eq!(ledger.refused(), vec![(acme.clone(), 57)]);
        second.charge(40).unwrap();
        other.charge(100).unwrap();
        assert_eq!(ledger.held(&acme), 100);
        first.release(10);
        assert_eq!(ledger.held(&acme), 90);
        drop(first); // the job ended: the rest of its bytes come back
        assert_eq!(ledger.held(&acme), 40);
        second.charge(60).unwrap();
        drop(second);
        assert_eq!(ledger.held(&acme), 0);
        let mut uncapped = TenantGpuAccount::open(ledger.clone(), acme.clone(), None);
        uncapped.charge(1 << 40).unwrap();
        assert_eq!(ledger.held(&acme), 1 << 40);
    }

    #[test]
    fn a_pool_enforces_its_own_part_and_the_ledger_the_rest() {
        // (case, cap, total held, charge, held in the charge's pool, over)
        let cases = [
            ("no pool: under", 100, 60, 40, None, false),
            ("no pool: past", 100, 60, 41, None, true),
            ("all in the pool: left to it", 100, 60, 41, Some(60), false),
            ("some elsewhere: past", 100, 60, 41, Some(20), true),
            ("some elsewhere: under", 100, 60, 40, Some(20), false),
            ("nothing in the pool yet", 100, 60, 41, Some(0), true),
        ];
        for (case, cap, total, bytes, in_pool, want) in cases {
            assert_eq!(over_cap(cap, total, bytes, in_pool), want, "{case}");
        }
    }

    #[test]
    fn an_account_in_a_gpu_pool_counts_there_and_meets_the_cap_across_pools() {
        let ledger = Arc::new(TenantGpuLedger::default());
        let acme = TenantId("acme".into());
        let mut on_cpu = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        let mut on_gpu0 = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        on_gpu0.leave_the_cap_to_the_driver(1);
        let mut resident = on_gpu0.sibling();
        on_gpu0.charge(80).unwrap();
        // In the same pool: the pool (the driver) decides, not the ledger.
        resident.charge(80).unwrap();
        assert_eq!(ledger.held(&acme), 160, "counted past the cap");
        // A job on the CPU backend still meets the cap, the GPU's bytes
        // included.
        assert_eq!(
            on_cpu.charge(1),
            Err(OverCap {
                held: 160,
                cap: 100
            })
        );
        drop(resident);
        // A job on another GPU (another pool) meets the cap across both.
        let mut on_gpu1 = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        on_gpu1.leave_the_cap_to_the_driver(2);
        assert_eq!(on_gpu1.charge(21), Err(OverCap { held: 80, cap: 100 }));
        on_gpu1.charge(20).unwrap();
        drop(on_gpu0);
        // Its own pool's bytes are left to its pool again.
        on_gpu1.charge(90).unwrap();
        drop(on_gpu1);
        on_cpu.charge(100).unwrap();
        assert_eq!(ledger.refused(), vec![(acme, 22)]);
    }
}
