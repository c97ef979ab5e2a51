//! Tensors of weights resident on one GPU: copied from the mapped weights
//! file at a job's first `gpu.weights` of them, then shared by every job
//! of the same tenant that opens them, until evicted least-recently-used
//! to make room under the GPU's weights budget. A tensor in use by a job
//! is never evicted. Each tensor is charged once, while it is resident, to
//! its tenant's GPU memory on this node (the tenant's cap holds), never to
//! the jobs that read it.
//!
//! The choice of what to evict is [`evictions`], pure. Loading and freeing
//! are the caller's: the set only keeps the entries, their order of use
//! and the budget.
//!
//! What it is not: the mapping of weights files (`weights`) or who may
//! open which weights (a job opens only what its function names).

use crate::tenant_gpu::TenantGpuAccount;
use spillway_proto::{Digest, TenantId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// One resident tensor: whose, which weights, which tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ResidentKey {
    pub(crate) tenant: TenantId,
    pub(crate) digest: Digest,
    pub(crate) tensor: String,
}

/// Why a tensor could not be made resident.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NoRoom {
    /// Larger than the whole budget: it can never be resident here.
    #[error("a tensor of {need} bytes is larger than this GPU's weights budget of {budget} bytes")]
    OverBudget { need: u64, budget: u64 },
    /// The budget is held by tensors jobs are using now: retry later.
    #[error(
        "this GPU's weights budget of {budget} bytes is held by tensors in use ({in_use} bytes); {need} more do not fit"
    )]
    InUse { need: u64, budget: u64, in_use: u64 },
}

/// A resident entry as [`evictions`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<K> {
    pub(crate) key: K,
    pub(crate) bytes: u64,
    /// When a job last opened it (a counter: larger is more recent).
    pub(crate) last_used: u64,
    /// A job holds it now.
    pub(crate) in_use: bool,
}

/// Which entries to evict so that `need` more bytes fit under `budget`:
/// the least recently used of those not in use, as few as it takes.
pub(crate) fn evictions<K: Copy>(
    entries: &[Candidate<K>],
    budget: u64,
    need: u64,
) -> Result<Vec<K>, NoRoom> {
    if need > budget {
        return Err(NoRoom::OverBudget { need, budget });
    }
    let used: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut free = budget.saturating_sub(used);
    let mut idle: Vec<&Candidate<K>> = entries.iter().filter(|e| !e.in_use).collect();
    idle.sort_by_key(|e| e.last_used);
    let mut out = Vec::new();
    for e in idle {
        if free >= need {
            break;
        }
        free += e.bytes;
        out.push(e.key);
    }
    if free < need {
        let in_use = entries.iter().filter(|e| e.in_use).map(|e| e.bytes).sum();
        return Err(NoRoom::InUse {
            need,
            budget,
            in_use,
        });
    }
    Ok(out)
}

/// One entry: the loaded tensor (`T`, shared with the jobs using it), its
/// size, when it was last opened, and its tenant's charge for it.
#[derive(Debug)]
struct Entry<T> {
    tensor: Arc<T>,
    bytes: u64,
    last_used: u64,
    _charge: TenantGpuAccount,
}

/// The tensors resident on one GPU.
#[derive(Debug)]
pub(crate) struct ResidentSet<T> {
    budget: u64,
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    clock: u64,
    entries: HashMap<ResidentKey, Entry<T>>,
    /// Tensors loaded so far (a load per first open or reopen after an
    /// eviction).
    loads: u64,
}

/// How a tensor was had.
#[derive(Debug)]
pub(crate) struct Opened<T> {
    pub(crate) tensor: Arc<T>,
    /// It was loaded for this open (not resident before).
    pub(crate) loaded: bool,
}

/// Why [`ResidentSet::open`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError<E> {
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    /// The tenant's GPU memory on this node is used up.
    #[error("tenant {tenant}'s GPU memory on this node is used up ({held} of {cap} bytes)")]
    TenantCap {
        tenant: TenantId,
        held: u64,
        cap: u64,
    },
    /// The load itself failed.
    #[error(transparent)]
    Load(E),
}

impl<T> ResidentSet<T> {
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                clock: 0,
                entries: HashMap::new(),
                loads: 0,
            }),
        }
    }

    /// Tensors loaded so far.
    pub(crate) fn loads(&self) -> u64 {
        self.inner.lock().expect("resident lock").loads
    }

    /// The weights resident now and the bytes of each (all its tensors
    /// here together), most recently used first.
    pub(crate) fn weights(&self) -> Vec<(Digest, u64)> {
        let inner = self.inner.lock().expect("resident lock");
        let mut by_digest: HashMap<Digest, (u64, u64)> = HashMap::new();
        for (key, e) in &inner.entries {
            let (bytes, last) = by_digest.entry(key.digest).or_default();
            *bytes += e.bytes;
            *last = (*last).max(e.last_used);
        }
        let mut all: Vec<(Digest, u64, u64)> = by_digest
            .into_iter()
            .map(|(d, (bytes, last))| (d, bytes, last))
            .collect();
        all.sort_by_key(|(_, _, last)| std::cmp::Reverse(*last));
        all.into_iter().map(|(d, bytes, _)| (d, bytes)).collect()
    }

    /// Bytes resident now.
    pub(crate) fn used(&self) -> u64 {
        let inner = self.inner.lock().expect("resident lock");
        inner.entries.values().map(|e| e.bytes).sum()
    }

    /// The tensor `key` of `bytes` bytes: the resident one, or loaded by
    /// `load` after evicting what [`evictions`] says (`evict` runs once
    /// before anything is freed, so the caller can make sure no device
    /// work still reads them) and charged to the tenant through `charge`.
    /// Loads are serialized per GPU: two first opens of one tensor load it
    /// once.
    pub(crate) fn open<E>(
        &self,
        key: &ResidentKey,
        bytes: u64,
        mut charge: TenantGpuAccount,
        evict: impl FnOnce(),
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Opened<T>, OpenError<E>> {
        let mut inner = self.inner.lock().expect("resident lock");
        inner.clock += 1;
        let now = inner.clock;
        if let Some(e) = inner.entries.get_mut(key) {
            e.last_used = now;
            return Ok(Opened {
                tensor: e.tensor.clone(),
                loaded: false,
            });
        }
        // Charged first: a refusal (here, or no room below) gives it back
        // when `charge` drops, and evicts nothing.
        if let Err(over) = charge.charge(bytes) {
            return Err(OpenError::TenantCap {
                tenant: key.tenant.clone(),
                held: over.held,
                cap: over.cap,
            });
        }
        let candidates: Vec<Candidate<&ResidentKey>> = inner
            .entries
            .iter()
            .map(|(key, e)| Candidate {
                key,
                bytes: e.bytes,
                last_used: e.last_used,
                in_use: Arc::strong_count(&e.tensor) > 1,
            })
            .collect();
        let out: Vec<ResidentKey> = evictions(&candidates, self.budget, bytes)?
            .into_iter()
            .cloned()
            .collect();
        if !out.is_empty() {
            evict();
            for k in out {
                inner.entries.remove(&k);
                tracing::info!(tenant = %k.tenant, digest = %k.digest, tensor = %k.tensor, "resident tensor evicted");
            }
        }
        let tensor = Arc::new(load().map_err(OpenError::Load)?);
        inner.loads += 1;
        inner.entries.insert(
            key.clone(),
            Entry {
                tensor: tensor.clone(),
                bytes,
                last_used: now,
                _charge: charge,
            },
        );
        Ok(Opened {
            tensor,
            loaded: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant_gpu::TenantGpuLedger;

    fn c(key: u8, bytes: u64, last_used: u64, in_use: bool) -> Candidate<u8> {
        Candidate {
            key,
            bytes,
            last_used,
            in_use,
        }
    }

    #[test]
    fn the_least_recently_used_idle_tensors_make_room() {
        let three = [c(1, 40, 5, false), c(2, 30, 1, false), c(3, 20, 9, false)];
        for (entries, budget, need, expected) in [
            // Room already: nothing goes.
            (&three[..], 100, 10, Ok(vec![])),
            // 10 free; 30 needed: the oldest (2, 30 bytes) goes.
            (&three[..], 100, 30, Ok(vec![2])),
            // 50 needed: 2 then 1 (oldest first).
            (&three[..], 100, 50, Ok(vec![2, 1])),
            // Everything.
            (&three[..], 100, 100, Ok(vec![2, 1, 3])),
            // Never larger than the budget.
            (
                &three[..],
                100,
                101,
                Err(NoRoom::OverBudget {
                    need: 101,
                    budget: 100,
                }),
            ),
            // A tensor in use stays, even if it is the oldest.
            (
                &[c(1, 40, 5, false), c(2, 30, 1, true), c(3, 20, 9, false)][..],
                100,
                50,
                Ok(vec![1]),
            ),
            (
                &[c(1, 40, 5, false), c(2, 30, 1, true), c(3, 20, 9, false)][..],
                100,
                60,
                Ok(vec![1, 3]),
            ),
            // Not enough idle bytes: refused, nothing evicted.
            (
                &[c(1, 40, 5, true), c(2, 30, 1, true), c(3, 20, 9, false)][..],
                100,
                40,
                Err(NoRoom::InUse {
                    need: 40,
                    budget: 100,
                    in_use: 70,
                }),
            ),
        ] {
            assert_eq!(
                evictions(entries, budget, need),
                expected,
                "{entries:?} {budget} {need}"
            );
        }
    }

    fn key(tensor: &str) -> ResidentKey {
        ResidentKey {
            tenant: TenantId("acme".into()),
            digest: Digest::of(b"weights"),
            tensor: tensor.into(),
        }
    }

    #[test]
    fn a_tensor_loads_once_is_charged_once_and_the_lru_one_makes_room() {
        let ledger = Arc::new(TenantGpuLedger::default());
        let acme = TenantId("acme".into());
        let account = || TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(1000));
        let set: ResidentSet<&'static str> = ResidentSet::new(100);
        let open = |name: &'static str, bytes: u64| {
            set.open::<()>(&key(name), bytes, account(), || {}, || Ok(name))
                .unwrap()
        };
        let a = open("a", 60);
        assert!(a.loaded);
        assert_eq!(ledger.held(&acme), 60);
        // Shared: opened again, not loaded, not charged again.
        let again = open("a", 60);
        assert!(!again.loaded);
        assert!(Arc::ptr_eq(&a.tensor, &again.tensor));
        assert_eq!((set.loads(), ledger.held(&acme)), (1, 60));
        drop((a, again));
        let b = open("b", 30);
        assert!(b.loaded);
        drop(b);
        // `a` was used longer ago than `b`: it makes room for `c`.
        let mut evicted = false;
        let c = set
            .open::<()>(&key("c"), 50, account(), || evicted = true, || Ok("c"))
            .unwrap();
        assert!(evicted && c.loaded);
        assert_eq!((set.used(), ledger.held(&acme)), (80, 80));
        // One digest in this test: its tensors together, `c` the newest.
        assert_eq!(set.weights(), [(Digest::of(b"weights"), 80)]);
        // In use, `c` cannot make room; `b` alone is not enough.
        let refused = set.open::<()>(&key("d"), 80, account(), || {}, || Ok("d"));
        assert!(
            matches!(refused, Err(OpenError::NoRoom(NoRoom::InUse { .. }))),
            "{refused:?}"
        );
        assert_eq!(set.loads(), 3);
        // The tenant's cap holds for resident tensors too.
        let small = || TenantGpuAccount::open(ledger.clone(), acme.clone(), Some(100));
        drop(c);
        let refused = set.open::<()>(&key("e"), 30, small(), || {}, || Ok("e"));
        assert!(
            matches!(refused, Err(OpenError::TenantCap { .. })),
            "{refused:?}"
        );
        // A failed load charges nothing and keeps nothing.
        let failed = set.open(&key("f"), 10, account(), || {}, || Err("device"));
        assert!(matches!(failed, Err(OpenError::Load("device"))));
        assert_eq!(ledger.held(&acme), 80);
    }
}
