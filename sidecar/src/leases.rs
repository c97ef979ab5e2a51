//! The rebalancing of a tenant's quota leases. Pure: the quota, the
//! active holders, the leases in force and each holder's reported use in;
//! the next leases (if any) out. The leader uses it for each tenant's
//! concurrency and GPU memory quotas among hosts (`quota`), and a
//! sidecar for a host's GPU memory share among its executors
//! (`executors::gpu_share`), so "host" below is any holder.
//!
//! The first leases record the even split the hosts start from. A
//! rebalance starts only under pressure (a host refused a permit in the
//! last two seconds, or a host that left still holds a share). The target
//! keeps every host's jobs in hand (its `held`), gives the rest first to
//! the hosts that lacked permits and then evenly, so an idle host can
//! still admit a newcomer. It is reached in two steps so the running jobs
//! never add up to more than the quota, even for a moment:
//!
//! 1. **shrink**: hosts losing share get their new (smaller) lease; no
//!    host gains;
//! 2. **grow**: once every active host reports that it applied those
//!    leases and holds no more permits than its lease, the hosts gaining
//!    share get it.
//!
//! A host never admits past the lease it has applied, and a lease never
//! grows while another host may still hold more than its own, so the sum
//! of permits held stays within the sum of the leases, which the log
//! keeps within the quota.

use crate::peer::QuotaUsage;
use spillway_consensus::QuotaLeases;
use std::collections::{BTreeMap, BTreeSet};

/// The leases to write next, or `None` to leave them.
pub(crate) fn next_leases(
    quota: u32,
    active: &[u64],
    current: Option<&QuotaLeases>,
    usage: &BTreeMap<u64, QuotaUsage>,
) -> Option<QuotaLeases> {
    let epoch = current.map_or(0, |l| l.epoch);
    let in_force: BTreeMap<u64, u32> = match current {
        Some(l) => l.shares.clone(),
        None => active
            .iter()
            .map(|h| (*h, share_among(quota, active.to_vec(), *h)))
            .collect(),
    };
    let now = |h: &u64| in_force.get(h).copied().unwrap_or(0);
    // Every active host must have reported, under the leases in force.
    let reports: Option<Vec<(u64, QuotaUsage)>> = active
        .iter()
        .map(|h| usage.get(h).filter(|u| u.epoch == epoch).map(|u| (*h, *u)))
        .collect();
    let reports = reports?;
    let departed = in_force.iter().any(|(h, s)| *s > 0 && !active.contains(h));
    let pressure = reports.iter().any(|(_, u)| u.refused > 0);
    if current.is_none() && !pressure {
        // Record the even split the hosts use until a first lease exists.
        // From then on a host that joins has no share until a rebalance
        // gives it one: with the split implicit, it would take part of it
        // at once, before the others had applied their smaller parts.
        return Some(QuotaLeases {
            epoch: 1,
            shares: in_force.into_iter().filter(|(_, s)| *s > 0).collect(),
        });
    }
    if !pressure && !departed {
        return None;
    }
    let target = target(quota, &reports)?;
    let hosts: BTreeSet<u64> = in_force.keys().chain(target.keys()).copied().collect();
    let goal = |h: &u64| target.get(h).copied().unwrap_or(0);
    if hosts.iter().all(|h| now(h) == goal(h)) {
        return None;
    }
    let shrink: BTreeMap<u64, u32> = hosts
        .iter()
        .map(|h| (*h, now(h).min(goal(h))))
        .filter(|(_, s)| *s > 0)
        .collect();
    if hosts.iter().any(|h| goal(h) < now(h)) {
        return Some(QuotaLeases {
            epoch: epoch + 1,
            shares: shrink,
        });
    }
    // Only growth is left: safe once no host holds more than its lease.
    let settled = reports.iter().all(|(h, u)| u.held <= now(h));
    settled.then(|| QuotaLeases {
        epoch: epoch + 1,
        shares: target.into_iter().filter(|(_, s)| *s > 0).collect(),
    })
}

/// `host`'s share of `quota` among the hosts `active`.
pub(crate) fn share_among(quota: u32, mut active: Vec<u64>, host: u64) -> u32 {
    active.sort_unstable();
    let Some(position) = active.iter().position(|id| *id == host) else {
        return 0;
    };
    let n = active.len() as u32;
    quota / n + u32::from((position as u32) < quota % n)
}

/// Where the leases should be: each host keeps what it holds; what is
/// left goes to the hosts that lacked permits, then evenly. `None` when
/// the hosts hold more than the quota (a lowered quota: wait).
///
/// As if given a unit at a time: first to the host lacking most (lowest
/// id first on ties) until none lacks, then to the host with the least
/// (lowest id first on ties); computed by level, not by unit, so a quota
/// of many units (GPU memory in MiB) costs no more than one of a few.
fn target(quota: u32, reports: &[(u64, QuotaUsage)]) -> Option<BTreeMap<u64, u32>> {
    let mut target: BTreeMap<u64, u32> = reports.iter().map(|(h, u)| (*h, u.held)).collect();
    let held: u64 = target.values().map(|t| u64::from(*t)).sum();
    let left = u64::from(quota).checked_sub(held)?;
    let gaps: BTreeMap<u64, u32> = reports.iter().map(|(h, u)| (*h, u.refused)).collect();
    let given = fill_gaps(&gaps, left);
    for (h, g) in &given {
        *target.get_mut(h).expect("a reporting host") += g;
    }
    let left = left - given.values().map(|g| u64::from(*g)).sum::<u64>();
    spread(&mut target, left);
    Some(target)
}

/// What each host gets of `left` units given one at a time to the host
/// with the largest gap left (lowest id first on ties), never past its
/// gap.
fn fill_gaps(gaps: &BTreeMap<u64, u32>, left: u64) -> BTreeMap<u64, u32> {
    let need = |level: u64| -> u64 {
        gaps.values()
            .map(|g| u64::from(*g).saturating_sub(level))
            .sum()
    };
    if need(0) <= left {
        return gaps.clone();
    }
    // The lowest level every gap can be brought down to: need(hi) fits,
    // need(lo) does not.
    let (mut lo, mut hi) = (0, u64::from(gaps.values().copied().max().unwrap_or(0)));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if need(mid) <= left {
            hi = mid
        } else {
            lo = mid
        }
    }
    // What is left after that goes a unit each to the hosts at that level,
    // lowest id first (fewer than there are).
    let mut extra = left - need(hi);
    gaps.iter()
        .map(|(h, g)| {
            let mut give = u64::from(*g).saturating_sub(hi);
            if u64::from(*g) >= hi && extra > 0 {
                give += 1;
                extra -= 1;
            }
            (*h, u32::try_from(give).expect("within the gap"))
        })
        .collect()
}

/// Gives `left` units one at a time to the host with the least (lowest id
/// first on ties).
fn spread(target: &mut BTreeMap<u64, u32>, left: u64) {
    let Some(least) = target.values().copied().min() else {
        return;
    };
    let cost = |level: u64| -> u64 {
        target
            .values()
            .map(|t| level.saturating_sub(u64::from(*t)))
            .sum()
    };
    // The highest level every host can be raised to: cost(lo) fits,
    // cost(hi) does not.
    let (mut lo, mut hi) = (u64::from(least), u64::from(least) + left + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if cost(mid) <= left {
            lo = mid
        } else {
            hi = mid
        }
    }
    let mut extra = left - cost(lo);
    for t in target.values_mut() {
        let mut now = u64::from(*t).max(lo);
        if now == lo && extra > 0 {
            now += 1;
            extra -= 1;
        }
        *t = u32::try_from(now).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(rows: &[(u64, u32, u32)], epoch: u64) -> BTreeMap<u64, QuotaUsage> {
        rows.iter()
            .map(|(h, held, refused)| {
                (
                    *h,
                    QuotaUsage {
                        held: *held,
                        refused: *refused,
                        epoch,
                    },
                )
            })
            .collect()
    }

    fn leases(epoch: u64, shares: &[(u64, u32)]) -> QuotaLeases {
        QuotaLeases {
            epoch,
            shares: shares.iter().copied().collect(),
        }
    }

    #[test]
    fn the_first_leases_record_the_even_split_and_a_newcomer_waits_for_a_share() {
        let quiet = usage(&[(1, 0, 0), (2, 1, 0), (3, 0, 0)], 0);
        // Quota 4 over three hosts: 2/1/1 (the lowest id takes the rest).
        let first = next_leases(4, &[1, 2, 3], None, &quiet).unwrap();
        assert_eq!(first, leases(1, &[(1, 2), (2, 1), (3, 1)]));
        // Not before every host has reported.
        assert!(next_leases(4, &[1, 2, 3], None, &usage(&[(1, 0, 0)], 0)).is_none());
        // Host 4 joins: it has no share, and the others keep theirs.
        let four = usage(&[(1, 0, 0), (2, 1, 0), (3, 0, 0), (4, 0, 0)], 1);
        assert!(next_leases(4, &[1, 2, 3, 4], Some(&first), &four).is_none());
        // Until it is refused a permit: then it gets one, in two steps.
        let pressed = usage(&[(1, 0, 0), (2, 1, 0), (3, 0, 0), (4, 0, 1)], 1);
        let shrink = next_leases(4, &[1, 2, 3, 4], Some(&first), &pressed).unwrap();
        assert_eq!(shrink.epoch, 2);
        assert!(shrink.shares.values().sum::<u32>() < 4 && !shrink.shares.contains_key(&4));
    }

    #[test]
    fn load_at_one_host_moves_the_quota_there_in_two_steps() {
        let active = [1, 2, 3];
        // Even split 1/1/1; host 1 holds its one and refused three more.
        let busy = usage(&[(1, 1, 3), (2, 0, 0), (3, 0, 0)], 0);
        let step1 = next_leases(3, &active, None, &busy).unwrap();
        assert_eq!(
            step1,
            leases(1, &[(1, 1)]),
            "first the idle hosts give theirs up"
        );
        // Applied everywhere; nobody holds more than its lease: grow.
        let busy = usage(&[(1, 1, 3), (2, 0, 0), (3, 0, 0)], 1);
        let step2 = next_leases(3, &active, Some(&step1), &busy).unwrap();
        assert_eq!(step2, leases(2, &[(1, 3)]));
        // Nothing more to do while host 1 uses all three.
        let full = usage(&[(1, 3, 2), (2, 0, 0), (3, 0, 0)], 2);
        assert_eq!(next_leases(3, &active, Some(&step2), &full), None);
    }

    #[test]
    fn when_load_shifts_the_leases_follow() {
        let active = [1, 2, 3];
        let now = leases(2, &[(1, 3)]);
        // Host 1 went idle; host 2 lacks two.
        let shifted = usage(&[(1, 0, 0), (2, 0, 2), (3, 0, 0)], 2);
        let step1 = next_leases(3, &active, Some(&now), &shifted).unwrap();
        assert_eq!(step1, leases(3, &[(1, 1)]));
        let shifted = usage(&[(1, 0, 0), (2, 0, 2), (3, 0, 0)], 3);
        let step2 = next_leases(3, &active, Some(&step1), &shifted).unwrap();
        assert_eq!(
            step2,
            leases(4, &[(1, 1), (2, 2)]),
            "host 2 gets two, the spare one stays spread"
        );
    }

    #[test]
    fn growth_waits_for_every_host_to_apply_and_settle() {
        let active = [1, 2];
        let now = leases(5, &[(1, 1)]);
        // Host 2 has not applied epoch 5 yet.
        let lagging = BTreeMap::from([
            (
                1,
                QuotaUsage {
                    held: 1,
                    refused: 2,
                    epoch: 5,
                },
            ),
            (
                2,
                QuotaUsage {
                    held: 0,
                    refused: 0,
                    epoch: 4,
                },
            ),
        ]);
        assert_eq!(next_leases(3, &active, Some(&now), &lagging), None);
        // Host 2 still holds a permit from before it shrank to none.
        let unsettled = usage(&[(1, 1, 2), (2, 1, 0)], 5);
        assert_eq!(next_leases(3, &active, Some(&now), &unsettled), None);
        // A host that did not report at all: wait too.
        assert_eq!(
            next_leases(3, &active, Some(&now), &usage(&[(1, 1, 2)], 5)),
            None
        );
    }

    #[test]
    fn a_host_that_left_gives_its_share_back() {
        let now = leases(1, &[(1, 1), (2, 1), (3, 1)]);
        let calm = usage(&[(1, 0, 0), (2, 0, 0)], 1);
        let next = next_leases(3, &[1, 2], Some(&now), &calm).unwrap();
        assert_eq!(next, leases(2, &[(1, 1), (2, 1)]));
    }

    #[test]
    fn leases_never_add_up_past_the_quota_and_never_grow_while_shrinking() {
        // Every combination of small reports from a few lease tables.
        let tables = [
            None,
            Some(leases(1, &[(1, 3)])),
            Some(leases(1, &[(1, 1), (2, 1), (3, 1)])),
            Some(leases(1, &[(2, 2), (3, 1)])),
        ];
        for quota in 1..=4u32 {
            for table in &tables {
                let epoch = table.as_ref().map_or(0, |l| l.epoch);
                for code in 0..4u32.pow(6) {
                    let digit = |i: u32| (code / 4u32.pow(i)) % 4;
                    let u = usage(
                        &[
                            (1, digit(0), digit(1)),
                            (2, digit(2), digit(3)),
                            (3, digit(4), digit(5)),
                        ],
                        epoch,
                    );
                    let Some(next) = next_leases(quota, &[1, 2, 3], table.as_ref(), &u) else {
                        continue;
                    };
                    assert_eq!(next.epoch, epoch + 1);
                    let total: u32 = next.shares.values().sum();
                    assert!(
                        total <= quota,
                        "{quota}: {next:?} from {table:?} with {u:?}"
                    );
                    let before = |h: &u64| match table {
                        Some(t) => t.shares.get(h).copied().unwrap_or(0),
                        None => share_among(quota, vec![1, 2, 3], *h),
                    };
                    let after = |h: &u64| next.shares.get(h).copied().unwrap_or(0);
                    let hosts = [1u64, 2, 3];
                    let grows = hosts.iter().any(|h| after(h) > before(h));
                    let shrinks = hosts.iter().any(|h| after(h) < before(h));
                    assert!(
                        !(grows && shrinks),
                        "one step grows and shrinks: {next:?} from {table:?}"
                    );
                    if grows {
                        assert!(
                            hosts.iter().all(|h| u[h].held <= before(h)),
                            "grew while a host held more than its lease: {u:?}"
                        );
                    }
                }
            }
        }
    }

    /// The policy given a unit at a time, as `target` was first written.
    fn target_by_unit(quota: u32, reports: &[(u64, QuotaUsage)]) -> Option<BTreeMap<u64, u32>> {
        let mut target: BTreeMap<u64, u32> = reports.iter().map(|(h, u)| (*h, u.held)).collect();
        let held: u32 = target.values().sum();
        let mut left = quota.checked_sub(held)?;
        let want: BTreeMap<u64, u32> = (reports.iter())
            .map(|(h, u)| (*h, u.held.saturating_add(u.refused)))
            .collect();
        while left > 0 {
            let lacking = (target.iter())
                .map(|(h, t)| (want[h].saturating_sub(*t), *h))
                .filter(|(gap, _)| *gap > 0)
                .max_by_key(|(gap, h)| (*gap, std::cmp::Reverse(*h)));
            let Some((_, h)) = lacking else { break };
            *target.get_mut(&h).unwrap() += 1;
            left -= 1;
        }
        while left > 0 && !target.is_empty() {
            let (&h, _) = target.iter().min_by_key(|(h, t)| (**t, **h)).unwrap();
            *target.get_mut(&h).unwrap() += 1;
            left -= 1;
        }
        Some(target)
    }

    #[test]
    fn the_target_by_level_is_the_target_by_unit() {
        // A small deterministic generator: many shapes of small cases.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for _ in 0..5_000 {
            let hosts = next(5) + 1;
            let reports: Vec<(u64, QuotaUsage)> = (0..hosts)
                .map(|h| {
                    let usage = QuotaUsage {
                        held: next(6) as u32,
                        refused: next(9) as u32,
                        epoch: 0,
                    };
                    (h * 3 + next(3), usage)
                })
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            let quota = next(40) as u32;
            assert_eq!(
                target(quota, &reports),
                target_by_unit(quota, &reports),
                "quota {quota}, {reports:?}"
            );
        }
        // And a quota of many units, at once.
        let big = [
            (
                1,
                QuotaUsage {
                    held: 10,
                    refused: 70_000,
                    epoch: 0,
                },
            ),
            (2, QuotaUsage::default()),
        ];
        let t = target(81_920, &big).unwrap();
        assert_eq!(t, BTreeMap::from([(1, 70_010), (2, 11_910)]));
    }
}
