//! A tenant's GPU memory cap where several executors share a GPU. Each
//! executor's node enforces the cap it is given with a memory pool per
//! tenant and GPU (the driver refuses past it), and knows nothing of the
//! other processes on the GPU; so the cap is split evenly among the
//! executors the tenant may use there, and together they stay within it.
//! Pure, and table-tested.
//!
//! What it is not: the CPU backend's cap across executors (`Assigned::fit`
//! takes what the tenant holds elsewhere off it), or the cap's source (the
//! tenant's `max_gpu_memory_bytes`).

use super::choice::tenancy_allows;
use spillway_proto::TenantId;

/// What the sidecar knows of one executor for the split.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout<'a> {
    /// The GPUs it uses (empty: none, or not known yet: it never came up).
    pub(crate) gpus: &'a [u32],
    /// The tenants it is kept for; empty: shared.
    pub(crate) confined_to: &'a [TenantId],
}

/// `tenant`'s cap on executor `at`: `cap` split among the executors the
/// tenant may use that have a context on one of `at`'s GPUs (the most of
/// any of them, `at` included). An executor without a GPU, or one the
/// tenant may not use, keeps the whole cap.
pub(crate) fn cap_on(cap: u64, tenant: &TenantId, at: usize, executors: &[Layout<'_>]) -> u64 {
    let confined = executors.iter().any(|e| e.confined_to.contains(tenant));
    let usable = |e: &Layout<'_>| tenancy_allows(tenant, e.confined_to, confined);
    let sharing = executors[at]
        .gpus
        .iter()
        .map(|gpu| {
            (executors.iter())
                .filter(|e| usable(e) && e.gpus.contains(gpu))
                .count()
        })
        .max()
        .unwrap_or(1)
        .max(1);
    cap / sharing as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_cap_is_split_among_the_tenants_contexts_on_a_gpu() {
        let acme = [TenantId("acme".into())];
        let shared = |gpus| Layout {
            gpus,
            confined_to: &[],
        };
        let kept = |gpus| Layout {
            gpus,
            confined_to: &acme,
        };
        let other = TenantId("globex".into());
        // (case, tenant, executor, layout, cap it gets)
        let cases: Vec<(&str, &TenantId, usize, Vec<Layout<'_>>, u64)> = vec![
            ("one executor", &acme[0], 0, vec![shared(&[0, 1])], 64 * MIB),
            (
                "one per GPU: no GPU shared",
                &other,
                1,
                vec![shared(&[0]), shared(&[1])],
                64 * MIB,
            ),
            (
                "two on GPU 0: half each",
                &other,
                0,
                vec![shared(&[0]), shared(&[0])],
                32 * MIB,
            ),
            (
                "three contexts on GPU 1, one also on GPU 0",
                &other,
                0,
                vec![shared(&[0, 1]), shared(&[1]), shared(&[1])],
                64 * MIB / 3,
            ),
            (
                "a kept tenant's own context: the whole cap",
                &acme[0],
                1,
                vec![shared(&[0]), kept(&[0])],
                64 * MIB,
            ),
            (
                "other tenants do not count the kept context",
                &other,
                0,
                vec![shared(&[0]), kept(&[0])],
                64 * MIB,
            ),
            (
                "a CPU executor keeps the whole cap",
                &other,
                1,
                vec![shared(&[0]), shared(&[])],
                64 * MIB,
            ),
        ];
        for (case, tenant, at, layout, want) in cases {
            assert_eq!(cap_on(64 * MIB, tenant, at, &layout), want, "{case}");
        }
    }
}
