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
