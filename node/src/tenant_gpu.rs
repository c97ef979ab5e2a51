//! GPU memory per tenant on this node: the `gpu` buffer bytes each
//! tenant's running jobs hold, and its resident weights, added up across
//! its jobs and the node's GPUs, and the tenant's cap on them
//! (`JobSpec::tenant_gpu_bytes`: its host's share of its
//! `max_gpu_memory_bytes`, or the executor's part of that share).
//!
//! Each job's state holds a [`TenantGpuAccount`]: a buffer is charged to
//! the job's allowance and then to its tenant here; freeing it, or the job
//! ending however it ends (its state is dropped), gives the bytes back.
//! Buffers, resident tensors and cuBLAS workspaces count the same on the
//! CPU backend as on a GPU, and this ledger enforces the cap to the byte,
//! across the tenant's jobs, pools and GPUs on the node. On a GPU the
//! tenant's memory pool there (`tenant_pool`) bounds it a second time, in
//! the driver: its maximum is the cap, but the driver reserves memory in
//! chunks (32 MiB on an H100 with driver 580) and lets a pool fill the
//! last one, so the driver's own refusal comes at the cap rounded up to a
//! chunk, and the ledger's at the cap.

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
        let mut all: Vec<(TenantId, u64)> = held.iter().map(|(t, h)| (t.clone(), *h)).collect();
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
            mine: 0,
        }
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
        if let Some(cap) = self.cap
            && held.saturating_add(bytes) > cap
        {
            let over = OverCap { held: *held, cap };
            drop(ledger);
            self.ledger.note_refused(&self.tenant, bytes);
            return Err(over);
        }
        *held += bytes;
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
        *held = held.saturating_sub(bytes);
        if *held == 0 {
            ledger.remove(&self.tenant);
        }
    }

    /// A new, empty account of the same tenant, ledger and cap: for what
    /// outlives the job but is the tenant's (a resident tensor).
    pub(crate) fn sibling(&self) -> Self {
        Self::open(self.ledger.clone(), self.tenant.clone(), self.cap)
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
    fn the_cap_holds_to_the_byte_across_a_tenants_jobs_gpus_and_resident_tensors() {
        let ledger = Arc::new(TenantGpuLedger::default());
        let acme = TenantId("acme".into());
        let mut on_gpu0 = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        let mut resident = on_gpu0.sibling();
        let mut on_gpu1 = TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        on_gpu0.charge(50).unwrap();
        resident.charge(30).unwrap();
        // A pool on GPU 1 would take 21 bytes more (its driver rounds up
        // to its chunk); the ledger does not.
        assert_eq!(on_gpu1.charge(21), Err(OverCap { held: 80, cap: 100 }));
        on_gpu1.charge(20).unwrap();
        drop(resident);
        on_gpu1.charge(30).unwrap();
        assert_eq!(ledger.held(&acme), 100);
        drop(on_gpu0);
        drop(on_gpu1);
        assert_eq!(ledger.held(&acme), 0);
        assert_eq!(ledger.refused(), vec![(acme, 21)]);
    }
}
