//! The synthetic service: a benchmark-only stand-in for running the guest.
//!
//! With `NodeConfig::synthetic_service` set, a job still takes a slot, still
//! needs its artifact held here, and can still be cancelled or run out its
//! deadline, but instead of calling the guest it waits a fixed service
//! time and returns its input. It holds a slot but not a core, so a
//! benchmark on a small machine can measure how well burst fills the
//! cluster's slots (capacity = slots / service time per host) without every
//! host competing for the same cores.
//!
//! What it is not: a way to run tenant code. `spillway host` sets it only
//! from a hidden flag documented as benchmark-only, and the receipt of a
//! synthetic job names the `cpu` backend like any other.

use spillway_proto::{Backend, Completion, Failure, JobId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Serves one job synthetically: waits `service` (checking `cancel` every
/// `tick`), bounded by `remaining` of its deadline, and returns `input`.
pub(crate) fn serve(
    job: JobId,
    input: Vec<u8>,
    service: Duration,
    remaining: Duration,
    deadline_ms: u64,
    cancel: &AtomicBool,
    tick: Duration,
) -> Result<Completion, Failure> {
    let started = Instant::now();
    let done = started + service;
    let deadline = started + remaining;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Failure::Cancelled);
        }
        let now = Instant::now();
        if now >= done {
            break;
        }
        if now >= deadline {
            return Err(Failure::DeadlineExceeded { deadline_ms });
        }
        std::thread::sleep(tick.min(done - now).min(deadline - now));
    }
    Ok(Completion {
        job,
        output: input,
        exec_us: started.elapsed().as_micros() as u64,
        backend: Backend::Cpu,
        gpu: None,
        weights_loaded_bytes: 0,
        fetched_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(1);

    #[test]
    fn it_waits_its_service_time_and_returns_the_input() {
        let cancel = AtomicBool::new(false);
        let service = Duration::from_millis(20);
        let c = serve(
            JobId(1),
            b"in".to_vec(),
            service,
            Duration::from_secs(5),
            5000,
            &cancel,
            TICK,
        )
        .unwrap();
        assert_eq!(c.output, b"in");
        assert!(c.exec_us >= 20_000, "{}", c.exec_us);
    }

    #[test]
    fn the_deadline_and_cancellation_still_end_it() {
        let cancel = AtomicBool::new(false);
        let long = Duration::from_secs(60);
        let e = serve(
            JobId(1),
            vec![],
            long,
            Duration::from_millis(10),
            10,
            &cancel,
            TICK,
        )
        .unwrap_err();
        assert_eq!(e, Failure::DeadlineExceeded { deadline_ms: 10 });
        cancel.store(true, Ordering::Relaxed);
        let e = serve(JobId(1), vec![], long, long, 60_000, &cancel, TICK).unwrap_err();
        assert_eq!(e, Failure::Cancelled);
    }
}
