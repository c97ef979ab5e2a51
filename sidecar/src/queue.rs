//! The local queue: admission through the pure scheduler, then a fair
//! (FIFO) wait for one of the node's slots.

use crate::link::NodeStatus;
use spillway_proto::{JobSpec, Refusal};
use spillway_scheduler::{Admission, AdmissionPolicy, LocalLoad, admit};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
struct Counts {
    slots: u32,
    queued: u32,
    /// Exponentially weighted mean execution time, for retry hints.
    mean_exec_ms: f64,
}

#[derive(Debug)]
pub(crate) struct LocalQueue {
    policy: AdmissionPolicy,
    permits: Arc<Semaphore>,
    counts: Mutex<Counts>,
}

/// A job admitted and waiting for a slot. Dropping it leaves the queue.
#[derive(Debug)]
pub(crate) struct Waiting<'a> {
    queue: &'a LocalQueue,
}

impl LocalQueue {
    pub(crate) fn new(slots: u32, queue_capacity: u32) -> Self {
        Self {
            policy: AdmissionPolicy {
                queue_capacity,
                ..AdmissionPolicy::default()
            },
            permits: Arc::new(Semaphore::new(slots as usize)),
            counts: Mutex::new(Counts {
                slots,
                queued: 0,
                mean_exec_ms: 0.0,
            }),
        }
    }

    /// Matches the slot count to what the node reports.
    pub(crate) fn resize(&self, slots: u32) {
        let mut c = self.counts.lock().expect("queue lock");
        if slots > c.slots {
            self.permits.add_permits((slots - c.slots) as usize);
        } else if slots < c.slots {
            self.permits.forget_permits((c.slots - slots) as usize);
        }
        c.slots = slots;
    }

    pub(crate) fn depth(&self) -> u32 {
        self.counts.lock().expect("queue lock").queued
    }

    pub(crate) fn running(&self) -> u32 {
        let c = self.counts.lock().expect("queue lock");
        c.slots
            .saturating_sub(self.permits.available_permits() as u32)
    }

    /// The load the scheduler sees.
    pub(crate) fn load(&self, node: &NodeStatus) -> LocalLoad {
        Self::load_of(
            &self.counts.lock().expect("queue lock"),
            &self.permits,
            node,
        )
    }

    fn load_of(c: &Counts, permits: &Semaphore, node: &NodeStatus) -> LocalLoad {
        LocalLoad {
            slots: c.slots,
            running: c.slots.saturating_sub(permits.available_permits() as u32),
            queued: c.queued,
            node_up: node.up,
            has_gpu: node
                .capabilities
                .as_ref()
                .is_some_and(|cap| !cap.gpus.is_empty()),
            mean_exec_ms: c.mean_exec_ms as u64,
        }
    }

    /// A slot now for a peer's burst job, or a refusal: it is only taken
    /// when the job could run at once and no local job is waiting (a burst
    /// job never queues here, and never overtakes this host's own queue).
    pub(crate) fn try_slot(
        &self,
        job: &JobSpec,
        node: &NodeStatus,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        let c = self.counts.lock().expect("queue lock");
        let load = Self::load_of(&c, &self.permits, node);
        match admit(job, &load, &self.policy) {
            Admission::RunNow => self
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refusal::PeerFull),
            Admission::Refuse(Refusal::NoAccelerator) => Err(Refusal::NoAccelerator),
            Admission::Queue { .. } | Admission::Refuse(_) => Err(Refusal::PeerFull),
        }
    }

    /// Decides whether `job` may wait for a slot.
    pub(crate) fn admit(&self, job: &JobSpec, node: &NodeStatus) -> Result<Waiting<'_>, Refusal> {
        let mut c = self.counts.lock().expect("queue lock");
        let load = Self::load_of(&c, &self.permits, node);
        match admit(job, &load, &self.policy) {
            Admission::RunNow | Admission::Queue { .. } => {
                c.queued += 1;
                Ok(Waiting { queue: self })
            }
            Admission::Refuse(refusal) => Err(refusal),
        }
    }

    /// Feeds the retry-hint estimate.
    pub(crate) fn record_exec(&self, ms: f64) {
        let mut c = self.counts.lock().expect("queue lock");
        c.mean_exec_ms = if c.mean_exec_ms == 0.0 {
            ms
        } else {
            0.8 * c.mean_exec_ms + 0.2 * ms
        };
    }
}

impl Waiting<'_> {
    /// Waits for a slot until `deadline`; `None` if the deadline came first.
    pub(crate) async fn slot(self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let acquire = self.queue.permits.clone().acquire_owned();
        tokio::time::timeout_at(deadline.into(), acquire)
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queue.counts.lock().expect("queue lock").queued -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{Accelerator, Digest, TenantId};
    use std::time::Duration;

    fn job() -> JobSpec {
        JobSpec {
            tenant: TenantId::admin(),
            function: "f".into(),
            digest: Digest::of(b"f"),
            accelerator: Accelerator::None,
            deadline_ms: 1_000,
            memory_limit_bytes: 0,
            idempotent: false,
            placement: Default::default(),
            tenant_gpu_bytes: None,
            kernel_packs: Vec::new(),
            weights: Vec::new(),
        }
    }

    #[tokio::test]
    async fn slots_waiters_and_burst_jobs_keep_their_order_and_bounds() {
        let node = NodeStatus {
            up: true,
            ..NodeStatus::default()
        };
        let queue = LocalQueue::new(1, 1);
        let soon = || Instant::now() + Duration::from_millis(50);
        // The first job runs at once.
        let first = queue.admit(&job(), &node).unwrap().slot(soon()).await;
        let first = first.expect("a free slot");
        assert_eq!((queue.running(), queue.depth()), (1, 0));
        // A peer's job never waits: no slot free, so the peer is full.
        assert_eq!(
            queue.try_slot(&job(), &node).unwrap_err(),
            Refusal::PeerFull
        );
        // One may wait; the next is refused with a retry hint.
        let waiting = queue.admit(&job(), &node).unwrap();
        assert_eq!(queue.depth(), 1);
        assert!(matches!(
            queue.admit(&job(), &node),
            Err(Refusal::QueueFull { .. })
        ));
        // A waiter whose deadline comes first leaves the queue empty-handed.
        assert!(waiting.slot(soon()).await.is_none());
        assert_eq!(queue.depth(), 0);
        // A freed slot goes to the next job; a second slot to a peer's job,
        // but not while a local job waits.
        drop(first);
        queue.resize(2);
        let waiter = queue.admit(&job(), &node).unwrap();
        assert_eq!(
            queue.try_slot(&job(), &node).unwrap_err(),
            Refusal::PeerFull,
            "a burst job never overtakes this host's queue"
        );
        let local = waiter.slot(soon()).await.expect("a free slot");
        let peer = queue.try_slot(&job(), &node).expect("the second slot");
        assert_eq!(queue.running(), 2);
        drop((local, peer));
        assert_eq!(queue.running(), 0);
    }
}
