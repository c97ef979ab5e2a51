//! Local admission: run now, queue, or refuse.

use spillway_proto::{Accelerator, JobSpec, Refusal};

/// The local host's load as the sidecar sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalLoad {
    /// Slots the node offers.
    pub slots: u32,
    /// Jobs holding a slot.
    pub running: u32,
    /// Jobs waiting for a slot.
    pub queued: u32,
    /// Whether the node is connected.
    pub node_up: bool,
    /// Whether the node has a GPU.
    pub has_gpu: bool,
    /// Recent mean execution time, for retry hints (0 when unknown).
    pub mean_exec_ms: u64,
}

/// Admission limits. `Default`: a queue of 64 jobs, retry hints between
/// 10 ms and 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Jobs that may wait for a slot; beyond that, `queue_full`.
    pub queue_capacity: u32,
    pub min_retry_ms: u64,
    pub max_retry_ms: u64,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            min_retry_ms: 10,
            max_retry_ms: 30_000,
        }
    }
}

/// What to do with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A slot is free.
    RunNow,
    /// Wait for a slot; `position` jobs are ahead.
    Queue { position: u32 },
    /// Do not accept the job.
    Refuse(Refusal),
}

/// Decides what happens to `job` given the local `load`.
///
/// A job waits while the node is down (it restarts within seconds), but
/// only as long as there is room in the queue. The retry hint is the time
/// the queue ahead needs to drain at the recent mean execution time.
pub fn admit(job: &JobSpec, load: &LocalLoad, policy: &AdmissionPolicy) -> Admission {
    if job.accelerator == Accelerator::Required && !load.has_gpu {
        return Admission::Refuse(Refusal::NoAccelerator);
    }
    let free = if load.node_up {
        load.slots.saturating_sub(load.running)
    } else {
        0
    };
    if free > 0 && load.queued == 0 {
        return Admission::RunNow;
    }
    if load.queued < policy.queue_capacity {
        return Admission::Queue {
            position: load.queued,
        };
    }
    let retry_after_ms = retry_hint(load, policy);
    Admission::Refuse(if load.node_up {
        Refusal::QueueFull { retry_after_ms }
    } else {
        Refusal::NodeUnavailable { retry_after_ms }
    })
}

fn retry_hint(load: &LocalLoad, policy: &AdmissionPolicy) -> u64 {
    let slots = u64::from(load.slots.max(1));
    let ahead = u64::from(load.queued) + 1;
    let mean = load.mean_exec_ms.max(policy.min_retry_ms);
    (ahead * mean / slots).clamp(policy.min_retry_ms, policy.max_retry_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{Digest, TenantId};

    fn job(accelerator: Accelerator) -> JobSpec {
        JobSpec {
            tenant: TenantId::admin(),
            function: "f".into(),
            digest: Digest::of(b"f"),
            accelerator,
            deadline_ms: 1000,
            memory_limit_bytes: 0,
            idempotent: false,
            placement: Default::default(),
            tenant_gpu_bytes: None,
            kernel_packs: Vec::new(),
            weights: Vec::new(),
        }
    }

    fn load(slots: u32, running: u32, queued: u32, node_up: bool) -> LocalLoad {
        LocalLoad {
            slots,
            running,
            queued,
            node_up,
            has_gpu: false,
            mean_exec_ms: 100,
        }
    }

    #[test]
    fn admission_table() {
        let policy = AdmissionPolicy {
            queue_capacity: 2,
            ..Default::default()
        };
        let none = job(Accelerator::None);
        let cases = [
            // (load, expected)
            (load(2, 0, 0, true), Admission::RunNow),
            (load(2, 1, 0, true), Admission::RunNow),
            (load(2, 2, 0, true), Admission::Queue { position: 0 }),
            // A free slot does not let a newcomer overtake the queue.
            (load(2, 1, 1, true), Admission::Queue { position: 1 }),
            (
                load(2, 2, 2, true),
                Admission::Refuse(Refusal::QueueFull {
                    retry_after_ms: 150,
                }),
            ),
            (load(2, 0, 0, false), Admission::Queue { position: 0 }),
            (
                load(2, 0, 2, false),
                Admission::Refuse(Refusal::NodeUnavailable {
                    retry_after_ms: 150,
                }),
            ),
        ];
        for (i, (load, want)) in cases.into_iter().enumerate() {
            assert_eq!(admit(&none, &load, &policy), want, "case {i}: {load:?}");
        }
    }

    #[test]
    fn required_accelerator_without_gpu_is_refused_and_preferred_is_not() {
        let policy = AdmissionPolicy::default();
        let l = load(1, 0, 0, true);
        assert_eq!(
            admit(&job(Accelerator::Required), &l, &policy),
            Admission::Refuse(Refusal::NoAccelerator)
        );
        assert_eq!(
            admit(&job(Accelerator::Preferred), &l, &policy),
            Admission::RunNow
        );
        let gpu = LocalLoad { has_gpu: true, ..l };
        assert_eq!(
            admit(&job(Accelerator::Required), &gpu, &policy),
            Admission::RunNow
        );
    }

    #[test]
    fn retry_hint_is_clamped() {
        let policy = AdmissionPolicy {
            queue_capacity: 0,
            min_retry_ms: 10,
            max_retry_ms: 500,
        };
        let slow = LocalLoad {
            mean_exec_ms: 60_000,
            ..load(1, 1, 0, true)
        };
        assert_eq!(
            admit(&job(Accelerator::None), &slow, &policy),
            Admission::Refuse(Refusal::QueueFull {
                retry_after_ms: 500
            })
        );
    }
}
