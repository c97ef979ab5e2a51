//! Which of the host's executors runs a job. Pure: [`choose`] maps the
//! job and what the sidecar knows of each executor right now to a
//! [`Choice`]; `executors` carries it out.
//!
//! The rules, in order:
//! - only an executor that is up;
//! - a tenant confined by the operator (its kernel packs untrusted) runs
//!   only on the executors confined to it, and no other tenant runs there;
//! - a job that requires a GPU only where the executor has one; one that
//!   prefers a GPU goes to one with a GPU first;
//! - among those with a free slot: one other than an executor that was
//!   lost with this job before, then one with a part of the tenant's GPU
//!   memory share on the host, then the one whose GPUs hold more of the
//!   job's weights, then the one with the smaller share of its slots
//!   busy, then the first.
//!
//! What it is not: the host's admission (`queue`), which bounds the jobs
//! running on all executors together, or placement between hosts
//! (`spillway-scheduler`).

use spillway_proto::{Accelerator, TenantId};
use std::cmp::Ordering;

/// What the sidecar knows of one executor when a job is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub(crate) up: bool,
    /// Jobs it runs at once (from its hello).
    pub(crate) slots: u32,
    /// Jobs the sidecar has on it now.
    pub(crate) running: u32,
    pub(crate) has_gpu: bool,
    /// The tenants it is kept for; empty: shared by every tenant not
    /// confined elsewhere.
    pub(crate) confined_to: &'a [TenantId],
    /// How many of the job's weights are loaded on its GPUs.
    pub(crate) weights_loaded: usize,
    /// It was lost with this job before (a crash, a GPU fault): the job,
    /// placed again, goes elsewhere when it can.
    pub(crate) lost_the_job: bool,
    /// The job's tenant has a GPU memory quota and no part of the host's
    /// share of it here now (`gpu_share`): the job goes where it has one
    /// when it can.
    pub(crate) no_gpu_share: bool,
}

/// The job's side of the choice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asking<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) accelerator: Accelerator,
}

/// What the job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Runs on the executor at this index.
    Run(usize),
    /// Waits: every executor it may use is down or busy.
    Wait,
}

/// Whether `job` may ever run on `executor` (it may still be down or
/// busy). `confined` says whether some executor is kept for the tenant.
fn allowed(job: &Asking<'_>, executor: &Candidate<'_>, confined: bool) -> bool {
    let hardware = job.accelerator != Accelerator::Required || executor.has_gpu;
    tenancy_allows(job.tenant, executor.confined_to, confined) && hardware
}

/// Whether `tenant`'s jobs may run on an executor kept for `confined_to`
/// (empty: shared): only on its own where some executor is kept for it
/// (`confined`), else only on shared ones.
pub(crate) fn tenancy_allows(tenant: &TenantId, confined_to: &[TenantId], confined: bool) -> bool {
    if confined {
        confined_to.contains(tenant)
    } else {
        confined_to.is_empty()
    }
}

/// The better of two executors for `job`: more of its weights, a GPU when
/// it prefers one, a smaller share of slots busy.
fn rank(job: &Asking<'_>, a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    let prefers_gpu = job.accelerator == Accelerator::Preferred;
    a.lost_the_job
        .cmp(&b.lost_the_job)
        .then_with(|| a.no_gpu_share.cmp(&b.no_gpu_share))
        .then_with(|| b.weights_loaded.cmp(&a.weights_loaded))
        .then_with(|| match prefers_gpu {
            true => b.has_gpu.cmp(&a.has_gpu),
            false => Ordering::Equal,
        })
        // a.running / a.slots against b.running / b.slots, without division.
        .then_with(|| {
            (u64::from(a.running) * u64::from(b.slots))
                .cmp(&(u64::from(b.running) * u64::from(a.slots)))
        })
}

/// Where `job` runs among `executors`.
pub(crate) fn choose(job: &Asking<'_>, executors: &[Candidate<'_>]) -> Choice {
    let confined = executors.iter().any(|e| e.confined_to.contains(job.tenant));
    executors
        .iter()
        .enumerate()
        .filter(|(_, e)| e.up && e.running < e.slots && allowed(job, e, confined))
        // `min_by` keeps the first of equals.
        .min_by(|(_, a), (_, b)| rank(job, a, b))
        .map_or(Choice::Wait, |(i, _)| Choice::Run(i))
}

/// Whether `job` may run on any of `executors` at all, up or not (false
/// for a job that requires a GPU where only executors without one are
/// for its tenant).
pub(crate) fn has_a_home(job: &Asking<'_>, executors: &[Candidate<'_>]) -> bool {
    let confined = executors.iter().any(|e| e.confined_to.contains(job.tenant));
    executors.iter().any(|e| allowed(job, e, confined))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId(name.to_owned())
    }

    const IDLE: Candidate<'static> = Candidate {
        up: true,
        slots: 4,
        running: 0,
        has_gpu: true,
        confined_to: &[],
        weights_loaded: 0,
        lost_the_job: false,
        no_gpu_share: false,
    };

    #[test]
    fn each_job_goes_where_the_rules_say() {
        let acme = [tenant("acme")];
        let cpu = Candidate {
            has_gpu: false,
            ..IDLE
        };
        let busy = Candidate { running: 2, ..IDLE };
        let full = Candidate { running: 4, ..IDLE };
        let down = Candidate { up: false, ..IDLE };
        let kept = Candidate {
            confined_to: &acme,
            ..IDLE
        };
        let warm = Candidate {
            weights_loaded: 1,
            running: 3,
            ..IDLE
        };
        let small_busy = Candidate {
            slots: 2,
            running: 1,
            ..IDLE
        };
        use Accelerator::{None as Cpu, Preferred, Required};
        let table: Vec<(&str, &str, Accelerator, Vec<Candidate<'_>>, Choice)> = vec![
            (
                "the first of equals",
                "t",
                Preferred,
                vec![IDLE, IDLE],
                Choice::Run(0),
            ),
            (
                "the less busy",
                "t",
                Preferred,
                vec![busy, IDLE],
                Choice::Run(1),
            ),
            (
                "a smaller share of slots busy, not fewer jobs",
                "t",
                Preferred,
                vec![small_busy, busy],
                Choice::Run(0),
            ),
            (
                "never a down one",
                "t",
                Preferred,
                vec![down, busy],
                Choice::Run(1),
            ),
            (
                "never a full one",
                "t",
                Preferred,
                vec![full, busy],
                Choice::Run(1),
            ),
            (
                "all full: wait",
                "t",
                Preferred,
                vec![full, full],
                Choice::Wait,
            ),
            ("all down: wait", "t", Preferred, vec![down], Choice::Wait),
            (
                "the job's weights first",
                "t",
                Preferred,
                vec![IDLE, warm],
                Choice::Run(1),
            ),
            (
                "not where it was lost, where another can",
                "t",
                Preferred,
                vec![
                    Candidate {
                        lost_the_job: true,
                        ..warm
                    },
                    busy,
                ],
                Choice::Run(1),
            ),
            (
                "where it was lost, where no other can",
                "t",
                Preferred,
                vec![
                    Candidate {
                        lost_the_job: true,
                        ..IDLE
                    },
                    full,
                ],
                Choice::Run(0),
            ),
            (
                "where the tenant has a GPU memory share, before its weights",
                "t",
                Preferred,
                vec![
                    Candidate {
                        no_gpu_share: true,
                        ..warm
                    },
                    busy,
                ],
                Choice::Run(1),
            ),
            (
                "where it has none, where no other can",
                "t",
                Preferred,
                vec![
                    Candidate {
                        no_gpu_share: true,
                        ..IDLE
                    },
                    full,
                ],
                Choice::Run(0),
            ),
            (
                "a GPU when preferred",
                "t",
                Preferred,
                vec![cpu, busy],
                Choice::Run(1),
            ),
            (
                "a GPU only when required",
                "t",
                Required,
                vec![cpu],
                Choice::Wait,
            ),
            (
                "no preference on the CPU backend",
                "t",
                Cpu,
                vec![busy, cpu],
                Choice::Run(1),
            ),
            (
                "another tenant never runs where one is kept",
                "t",
                Preferred,
                vec![kept, busy],
                Choice::Run(1),
            ),
            (
                "a confined tenant runs only where it is kept",
                "acme",
                Preferred,
                vec![IDLE, kept],
                Choice::Run(1),
            ),
            (
                "a confined tenant waits for its own executor",
                "acme",
                Preferred,
                vec![IDLE, Candidate { running: 4, ..kept }],
                Choice::Wait,
            ),
        ];
        for (name, who, accelerator, executors, want) in table {
            let who = tenant(who);
            let job = Asking {
                tenant: &who,
                accelerator,
            };
            assert_eq!(choose(&job, &executors), want, "{name}");
        }
    }

    #[test]
    fn a_job_has_a_home_unless_no_executor_for_its_tenant_can_take_it() {
        let acme = [tenant("acme")];
        let kept = Candidate {
            confined_to: &acme,
            up: false,
            ..IDLE
        };
        let cpu = Candidate {
            has_gpu: false,
            ..IDLE
        };
        let (acme, other) = (tenant("acme"), tenant("other"));
        let asking = |tenant, accelerator| Asking {
            tenant,
            accelerator,
        };
        let table = [
            (
                "kept for it, though down",
                &acme,
                Accelerator::Required,
                vec![kept],
                true,
            ),
            (
                "a shared one",
                &other,
                Accelerator::Required,
                vec![kept, IDLE],
                true,
            ),
            (
                "only kept for others",
                &other,
                Accelerator::None,
                vec![kept],
                false,
            ),
            (
                "a GPU required, none for it",
                &other,
                Accelerator::Required,
                vec![kept, cpu],
                false,
            ),
            (
                "a GPU preferred",
                &other,
                Accelerator::Preferred,
                vec![cpu],
                true,
            ),
        ];
        for (name, who, accelerator, executors, want) in table {
            assert_eq!(
                has_a_home(&asking(who, accelerator), &executors),
                want,
                "{name}"
            );
        }
    }
}
