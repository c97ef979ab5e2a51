//! The GPU watchdog: stops a job whose GPU work runs past its deadline.
//!
//! The epoch callback ends a guest's WebAssembly at its deadline and CPU
//! kernels are metered, but a thread blocked on the GPU (a read back, the
//! job's final synchronize, a stream waiting for a kernel that never ends)
//! is out of their reach, and CUDA cannot abort one kernel of a context
//! that other jobs share. So a job on a GPU is watched from its start to
//! the end of its teardown; if it is still there [`GRACE`] past its
//! deadline, the watchdog reports an [`Overrun`], and what it is told to do
//! then (the server: answer the job `deadline_exceeded` with
//! `node_restarted`, then exit, so the sidecar starts a fresh node) is the
//! one thing that ends the kernel: the process going away.
//!
//! [`overdue`] is the decision, pure and table-tested; the rest is one
//! thread sleeping until the next job is due. A job is watched without
//! waking that thread unless it is due before the thread's next look (one
//! wake costs a few µs of the job's own time on a virtual machine, as much
//! as a no-op GPU job's whole overhead). What it is not: a scheduler's
//! timer. It never touches a job that holds no GPU stream.

use spillway_proto::JobId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long past its deadline a job may still hold the GPU before the node
/// is ended. Shorter than the sidecar's own grace (500 ms), so the answer
/// that says what happened reaches the caller first.
pub(crate) const GRACE: Duration = Duration::from_millis(200);

/// The longest the watchdog sleeps with nothing due.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// A job found on a GPU past its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrun {
    pub job: JobId,
    /// The deadline the job was given.
    pub deadline_ms: u64,
    /// How long it had run when found.
    pub ran: Duration,
    /// Its outcome was already delivered (only its teardown is stuck): no
    /// answer is owed.
    pub answered: bool,
}

/// What the watchdog does on an overrun.
pub(crate) type OnOverrun = Arc<dyn Fn(Overrun) + Send + Sync>;

/// One watched job, as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watched {
    pub(crate) started: Instant,
    /// The deadline plus [`GRACE`].
    pub(crate) due: Instant,
    pub(crate) deadline_ms: u64,
    /// It holds a GPU stream (a job that may use one is watched from its
    /// start, but only one that took one can be stuck on it).
    pub(crate) on_gpu: bool,
    pub(crate) answered: bool,
}

/// The first job on a GPU past its due time at `now`, and when to look
/// again: the next due time still ahead (or [`IDLE_LOOK`] from now).
pub(crate) fn overdue(
    watched: impl IntoIterator<Item = (JobId, Watched)>,
    now: Instant,
) -> (Option<Overrun>, Instant) {
    let mut next = now + IDLE_LOOK;
    let mut found: Option<(Instant, Overrun)> = None;
    for (job, w) in watched {
        if w.due > now {
            next = next.min(w.due);
            continue;
        }
        if !w.on_gpu || found.as_ref().is_some_and(|(due, _)| *due <= w.due) {
            continue;
        }
        let overrun = Overrun {
            job,
            deadline_ms: w.deadline_ms,
            ran: now.saturating_duration_since(w.started),
            answered: w.answered,
        };
        found = Some((w.due, overrun));
    }
    (found.map(|(_, o)| o), next)
}

/// The flags a watched job's state sets.
#[derive(Debug, Default)]
pub(crate) struct WatchFlags {
    on_gpu: AtomicBool,
    answered: AtomicBool,
}

impl WatchFlags {
    /// The job took a GPU stream.
    pub(crate) fn on_gpu(&self) {
        self.on_gpu.store(true, Ordering::Relaxed);
    }
}

struct Entry {
    started: Instant,
    due: Instant,
    deadline_ms: u64,
    flags: Arc<WatchFlags>,
}

/// The jobs under watch, and when the thread looks at them next.
struct Watching {
    jobs: HashMap<JobId, Entry>,
    /// The thread's next look; a job due before it wakes the thread.
    next_look: Instant,
}

struct Shared {
    watching: Mutex<Watching>,
    wake: Condvar,
    on_overrun: Mutex<OnOverrun>,
}

/// The watchdog of one node's GPU jobs.
pub(crate) struct GpuWatchdog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GpuWatchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuWatchdog").finish_non_exhaustive()
    }
}

impl GpuWatchdog {
    /// Starts the watchdog's thread; `on_overrun` runs on it.
    pub(crate) fn start(on_overrun: OnOverrun) -> Self {
        let shared = Arc::new(Shared {
            watching: Mutex::new(Watching {
                jobs: HashMap::new(),
                next_look: Instant::now(),
            }),
            wake: Condvar::new(),
            on_overrun: Mutex::new(on_overrun),
        });
        let watching = shared.clone();
        std::thread::Builder::new()
            .name("gpu-watchdog".into())
            .spawn(move || watch(&watching))
            .expect("spawn the GPU watchdog thread");
        Self { shared }
    }

    /// Replaces what an overrun does.
    pub(crate) fn on_overrun(&self, f: OnOverrun) {
        *self.shared.on_overrun.lock().expect("watchdog lock") = f;
    }

    /// Watches `job` until the returned guard drops.
    pub(crate) fn watch(&self, job: JobId, remaining: Duration, deadline_ms: u64) -> Watch {
        let started = Instant::now();
        let flags = Arc::new(WatchFlags::default());
        let entry = Entry {
            started,
            due: started + remaining + GRACE,
            deadline_ms,
            flags: flags.clone(),
        };
        let due = entry.due;
        let mut watching = self.shared.watching.lock().expect("watchdog lock");
        watching.jobs.insert(job, entry);
        // The thread looks again by then anyway and sees this job.
        let sooner = due < watching.next_look;
        drop(watching);
        if sooner {
            self.shared.wake.notify_one();
        }
        Watch {
            shared: self.shared.clone(),
            job,
            flags,
        }
    }
}

/// A job under watch; dropping it ends the watch.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    job: JobId,
    flags: Arc<WatchFlags>,
}

impl Watch {
    /// The flags the job's state sets.
    pub(crate) fn flags(&self) -> Arc<WatchFlags> {
        self.flags.clone()
    }

    /// The job's outcome is out.
    pub(crate) fn answered(&self) {
        self.flags.answered.store(true, Ordering::Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watching = self.shared.watching.lock().expect("watchdog lock");
        watching.jobs.remove(&self.job);
    }
}

fn watch(shared: &Shared) {
    let mut watching = shared.watching.lock().expect("watchdog lock");
    loop {
        let now = Instant::now();
        let view = watching.jobs.iter().map(|(job, e)| {
            let w = Watched {
                started: e.started,
                due: e.due,
                deadline_ms: e.deadline_ms,
                on_gpu: e.flags.on_gpu.load(Ordering::Relaxed),
                answered: e.flags.answered.load(Ordering::Relaxed),
            };
            (*job, w)
        });
        let (found, next) = overdue(view, now);
        if let Some(overrun) = found {
            // Reported once: what it does normally ends the process.
            watching.jobs.remove(&overrun.job);
            drop(watching);
            tracing::error!(job = %overrun.job, deadline_ms = overrun.deadline_ms,
                ran_ms = overrun.ran.as_millis() as u64,
                "a job's GPU work ran past its deadline; only ending the node stops it");
            let act = shared.on_overrun.lock().expect("watchdog lock").clone();
            act(overrun);
            watching = shared.watching.lock().expect("watchdog lock");
            continue;
        }
        watching.next_look = next;
        let wait = next.saturating_duration_since(now);
        watching = shared
            .wake
            .wait_timeout(watching, wait)
            .expect("watchdog lock")
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_job_on_a_gpu_past_its_due_time_is_reported() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let job = |due_ms: u64, on_gpu: bool, answered: bool| Watched {
            started: t0,
            due: t0 + ms(due_ms),
            deadline_ms: due_ms,
            on_gpu,
            answered,
        };
        let now = t0 + ms(1000);
        // (watched jobs, the one reported, the next look in ms from t0)
        type Case = (Vec<(u128, Watched)>, Option<u128>, u64);
        let table: Vec<Case> = vec![
            (vec![], None, 2000),
            (vec![(1, job(1200, true, false))], None, 1200),
            (vec![(1, job(1000, true, false))], Some(1), 2000),
            (vec![(1, job(900, false, false))], None, 2000),
            (
                vec![(1, job(900, false, false)), (2, job(950, true, true))],
                Some(2),
                2000,
            ),
            // The longest overdue first; the next look is the earliest ahead.
            (
                vec![
                    (1, job(800, true, false)),
                    (2, job(500, true, false)),
                    (3, job(1500, true, false)),
                    (4, job(1100, false, false)),
                ],
                Some(2),
                1100,
            ),
        ];
        for (watched, reported, next_ms) in table {
            let jobs = watched.iter().map(|&(id, w)| (JobId(id), w));
            let (found, next) = overdue(jobs, now);
            assert_eq!(found.as_ref().map(|o| o.job.0), reported, "{watched:?}");
            assert_eq!(next, t0 + ms(next_ms), "{watched:?}");
            if let Some(o) = found {
                assert_eq!(o.ran, ms(1000));
                assert_eq!(o.answered, o.job == JobId(2) && o.deadline_ms == 950);
            }
        }
    }

    #[test]
    fn the_thread_reports_a_stuck_job_once_and_forgets_finished_ones() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let dog = GpuWatchdog::start(Arc::new(move |o| {
            tx.lock().unwrap().send(o).unwrap();
        }));
        // Finished in time: never reported.
        drop(dog.watch(JobId(1), Duration::ZERO, 0));
        // On the CPU: never reported.
        let _cpu = dog.watch(JobId(2), Duration::ZERO, 0);
        let stuck = dog.watch(JobId(3), Duration::from_millis(10), 10);
        stuck.flags().on_gpu();
        let o = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((o.job, o.deadline_ms, o.answered), (JobId(3), 10, false));
        assert!(o.ran >= Duration::from_millis(10) + GRACE);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "reported once"
        );
    }
}
