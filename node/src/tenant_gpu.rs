//! GPU memory per tenant on this node: the `gpu` buffer bytes each
//! tenant's running jobs hold, added up across its jobs, and the tenant's
//! cap on them (`JobSpec::tenant_gpu_bytes`, from the tenant's
//! `max_gpu_memory_bytes`).
//!
//! Each job's state holds a [`TenantGpuAccount`]: a buffer is charged to
//! the job's allowance and then to its tenant here; freeing it, or the job
//! ending however it ends (its state is dropped), gives the bytes back.
//! Buffers count the same on the CPU backend as on a GPU. On the CPU
//! backend this ledger enforces the cap, across the tenant's jobs on the
//! node; on a GPU the tenant's memory pool there enforces it
//! (`tenant_pool`: the driver refuses past it, per GPU), and the job's
//! account only counts ([`TenantGpuAccount::leave_the_cap_to_the_driver`]).

use spillway_proto::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes held by each tenant's running jobs on this node.
#[derive(Debug, Default)]
pub(crate) struct TenantGpuLedger {
    held: Mutex<HashMap<TenantId, u64>>,
    /// Bytes each tenant's jobs asked for and its cap refused (here, or
    /// its pool on a GPU), since the node started: the demand its host's
    /// share of the GPU memory quota lacked.
    refused: Mutex<HashMap<TenantId, u64>>,
    /// Woken when a charge is taken, so the node reports it without
    /// waiting for its next periodic report.
    changed: tokio::sync::Notify,
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
        let mut all: Vec<(TenantId, u64)> = held.iter().map(|(t, b)| (t.clone(), *b)).collect();
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
            .copied()
            .unwrap_or(0)
    }
}

/// One job's part of its tenant's bytes; given back on drop.
#[derive(Debug)]
pub(crate) struct TenantGpuAccount {
    ledger: Arc<TenantGpuLedger>,
    tenant: TenantId,
    cap: Option<u64>,
    /// The tenant's pool on the job's GPU enforces the cap: only count.
    driver_enforces: bool,
    mine: u64,
}

/// A charge the tenant's cap refuses: what its jobs hold here, and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverCap {
    pub(crate) held: u64,
    pub(crate) cap: u64,
}

impl TenantGpuAccount {
    pub(crate) fn open(ledger: Arc<TenantGpuLedger>, tenant: TenantId, cap: Option<u64>) -> Self {
        Self {
            ledger,
            tenant,
            cap,
            driver_enforces: false,
            mine: 0,
        }
    }

    /// Counts from now on without checking the cap: the job's GPU pool
    /// enforces it (and a resident tensor's account made from this one
    /// does the same).
    pub(crate) fn leave_the_cap_to_the_driver(&mut self) {
        self.driver_enforces = true;
    }

    /// The tenant's cap on this node.
    pub(crate) fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// Charges `bytes` to the tenant unless that takes it past its cap.
    pub(crate) fn charge(&mut self, bytes: u64) -> Result<(), OverCap> {
        let mut held = self.ledger.held.lock().expect("ledger lock");
        let tenant = held.entry(self.tenant.clone()).or_default();
        if let Some(cap) = self.cap
            && !self.driver_enforces
            && *tenant + bytes > cap
        {
            let over = OverCap { held: *tenant, cap };
            drop(held);
            self.ledger.note_refused(&self.tenant, bytes);
            return Err(over);
        }
        *tenant += bytes;
        self.mine += bytes;
        drop(held);
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
        let mut held = self.ledger.held.lock().expect("ledger lock");
        if let Some(tenant) = held.get_mut(&self.tenant) {
            *tenant = tenant.saturating_sub(bytes);
            if *tenant == 0 {
                held.remove(&self.tenant);
            }
        }
    }

    /// A new, empty account of the same tenant, ledger and cap: for what
    /// outlives the job but is the tenant's (a resident tensor).
    pub(crate) fn sibling(&self) -> Self {
        let mut sibling = Self::open(self.ledger.clone(), self.tenant.clone(), self.cap);
        sibling.driver_enforces = self.driver_enforces;
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
    fn an_account_whose_gpu_pool_enforces_the_cap_only_counts() {
        let ledger = Arc::new(TenantGpuLedger::default());
        let acme = TenantId("acme".into());
        let mut on_cpu = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        let mut on_gpu = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        on_gpu.leave_the_cap_to_the_driver();
        let mut resident = on_gpu.sibling();
        on_gpu.charge(80).unwrap();
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
        drop(on_gpu);
        drop(resident);
        on_cpu.charge(100).unwrap();
    }
}
