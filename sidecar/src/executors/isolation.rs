//! How the host's GPUs are shared, from its executors: which node
//! processes have a context on each GPU, which tenants' jobs share one,
//! and what the driver offers (MPS, MIG). The host records it in the
//! control log (`GpuIsolation`, in membership) so the cluster view shows
//! it for every member, up or not. Pure, and table-tested.
//!
//! What it is not: a placement rule. Keeping a tenant on executors of its
//! own is `choice`'s; this only says what that amounts to per GPU.

use crate::peer::ExecutorStatus;
use spillway_consensus::GpuIsolation;
use std::collections::BTreeMap;

/// Each GPU's isolation, in GPU order, or `None` while an executor has not
/// said which GPUs it uses (it has not come up yet): a partial picture
/// would be recorded only to be replaced.
pub(crate) fn gpu_isolation(executors: &[ExecutorStatus]) -> Option<Vec<GpuIsolation>> {
    let mut by_gpu: BTreeMap<u32, GpuIsolation> = BTreeMap::new();
    for e in executors {
        if e.slots == 0 {
            return None;
        }
        for &gpu in &e.gpus {
            let g = by_gpu.entry(gpu).or_insert_with(|| GpuIsolation {
                gpu,
                contexts: 0,
                shared: false,
                kept_for: Vec::new(),
                mps: false,
                mig: false,
            });
            g.contexts += 1;
            if e.confined_to.is_empty() {
                g.shared = true;
            } else if !g.kept_for.contains(&e.confined_to) {
                g.kept_for.push(e.confined_to.clone());
                g.kept_for.sort();
            }
            if let Some(s) = e.sharing.iter().find(|s| s.gpu == gpu) {
                g.mps |= s.mps;
                g.mig |= s.mig;
            }
        }
    }
    Some(by_gpu.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{GpuSharing, TenantId};

    fn executor(gpus: &[u32], kept_for: &[&str], mps: bool) -> ExecutorStatus {
        ExecutorStatus {
            name: String::new(),
            up: true,
            pid: Some(1),
            restarts: 0,
            slots: 2,
            running: 0,
            gpus: gpus.to_vec(),
            confined_to: kept_for.iter().map(|t| TenantId((*t).into())).collect(),
            sharing: gpus
                .iter()
                .map(|&gpu| GpuSharing {
                    gpu,
                    mps,
                    mig: false,
                })
                .collect(),
        }
    }

    fn iso(gpu: u32, contexts: u32, shared: bool, kept_for: &[&[&str]], mps: bool) -> GpuIsolation {
        GpuIsolation {
            gpu,
            contexts,
            shared,
            kept_for: kept_for
                .iter()
                .map(|k| k.iter().map(|t| TenantId((*t).into())).collect())
                .collect(),
            mps,
            mig: false,
        }
    }

    #[test]
    fn each_gpu_says_who_shares_a_context_there() {
        let not_up = ExecutorStatus {
            slots: 0,
            ..executor(&[], &[], false)
        };
        type Case = (&'static str, Vec<ExecutorStatus>, Option<Vec<GpuIsolation>>);
        let cases: Vec<Case> = vec![
            ("a CPU host", vec![executor(&[], &[], false)], Some(vec![])),
            (
                "one executor, two GPUs: every tenant in one context on each",
                vec![executor(&[0, 1], &[], false)],
                Some(vec![
                    iso(0, 1, true, &[], false),
                    iso(1, 1, true, &[], false),
                ]),
            ),
            (
                "one per GPU",
                vec![executor(&[0], &[], false), executor(&[1], &[], false)],
                Some(vec![
                    iso(0, 1, true, &[], false),
                    iso(1, 1, true, &[], false),
                ]),
            ),
            (
                "a context kept for acme beside the shared one",
                vec![executor(&[0], &[], false), executor(&[0], &["acme"], false)],
                Some(vec![iso(0, 2, true, &[&["acme"]], false)]),
            ),
            (
                "every context on GPU 1 kept: tenants apart, under MPS",
                vec![
                    executor(&[0], &[], false),
                    executor(&[1], &["b", "c"], true),
                    executor(&[1], &["a"], true),
                ],
                Some(vec![
                    iso(0, 1, true, &[], false),
                    iso(1, 2, false, &[&["a"], &["b", "c"]], true),
                ]),
            ),
            (
                "an executor not up yet: nothing to record",
                vec![executor(&[0], &[], false), not_up],
                None,
            ),
        ];
        for (case, executors, want) in cases {
            assert_eq!(gpu_isolation(&executors), want, "{case}");
        }
        assert!(iso(1, 2, false, &[&["a"]], false).tenants_apart());
        assert!(!iso(0, 2, true, &[&["a"]], false).tenants_apart());
    }
}
