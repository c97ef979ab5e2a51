//! A streamed job's output window: how many bytes the guest may have
//! emitted that its consumer (the HTTP client, through the sidecar, or the
//! origin of a burst) has not taken yet. `job.emit` waits while the window
//! is full; the sidecar reopens it with `OutputCredit` as the consumer
//! takes chunks. So a client that stops reading stops the guest's `emit`,
//! and no buffer between them grows past the window.
//!
//! One chunk may always go when nothing is outstanding, however large
//! (the job's output limit bounds it), so a chunk larger than the window
//! cannot wait forever.
//!
//! What it is not: the output limit (`max_output`, in `host_job`), or the
//! transport of chunks (the server's `Output` frames).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often a waiting `emit` looks whether it should stop waiting.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Whether a chunk may go now, with `outstanding` bytes not yet taken in a
/// window of `window` bytes (0: no window). Pure.
pub(crate) fn may_send(outstanding: u64, window: u64) -> bool {
    window == 0 || outstanding == 0 || outstanding < window
}

/// One job's output window.
#[derive(Debug, Default)]
pub struct OutputWindow {
    window: u64,
    outstanding: Mutex<u64>,
    opened: Condvar,
}

impl OutputWindow {
    /// No window: chunks go as the guest emits them.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// A window of `bytes` (0: none).
    pub fn new(bytes: u64) -> Self {
        Self {
            window: bytes,
            ..Self::default()
        }
    }

    /// Waits until a chunk of `len` bytes may go and counts it as
    /// outstanding; `false`, without counting it, once `give_up` says so
    /// (asked every 10 ms while waiting: the job was cancelled, or its
    /// deadline passed).
    pub(crate) fn reserve(&self, len: u64, give_up: impl Fn() -> bool) -> bool {
        let mut outstanding = self.outstanding.lock().expect("window lock");
        while !may_send(*outstanding, self.window) {
            if give_up() {
                return false;
            }
            outstanding = self
                .opened
                .wait_timeout(outstanding, LOOK_EVERY)
                .expect("window lock")
                .0;
        }
        *outstanding += len;
        true
    }

    /// The consumer took `bytes`: the window opens by as much.
    pub fn grant(&self, bytes: u64) {
        let mut outstanding = self.outstanding.lock().expect("window lock");
        *outstanding = outstanding.saturating_sub(bytes);
        self.opened.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn a_chunk_goes_while_the_window_has_room_or_nothing_is_outstanding() {
        for (outstanding, window, may) in [
            (0, 0, true),
            (u64::MAX, 0, true),
            (0, 10, true),
            (9, 10, true),
            (10, 10, false),
            (11, 10, false),
        ] {
            assert_eq!(
                may_send(outstanding, window),
                may,
                "{outstanding} of {window}"
            );
        }
    }

    #[test]
    fn emit_waits_for_credit_and_gives_up_when_told() {
        let w = Arc::new(OutputWindow::new(100));
        assert!(
            w.reserve(150, || false),
            "the first chunk goes whatever its size"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (w, stop, asked) = (w.clone(), stop.clone(), asked.clone());
            std::thread::spawn(move || {
                w.reserve(10, || {
                    asked.fetch_add(1, Ordering::Relaxed);
                    stop.load(Ordering::Relaxed)
                })
            })
        };
        // Asked twice whether to give up: it found no room, waited, and
        // found none again.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while asked.load(Ordering::Relaxed) < 2 {
            assert!(std::time::Instant::now() < until, "emit never waited");
            std::thread::yield_now();
        }
        assert!(!waiter.is_finished(), "the window is full: emit waits");
        w.grant(100);
        assert!(waiter.join().unwrap(), "50 outstanding of 100: it goes");
        w.grant(1000);
        assert!(w.reserve(100, || false));
        let waiter = {
            let (w, stop) = (w.clone(), stop.clone());
            std::thread::spawn(move || w.reserve(10, || stop.load(Ordering::Relaxed)))
        };
        stop.store(true, Ordering::Relaxed);
        assert!(!waiter.join().unwrap(), "a cancelled job stops waiting");
    }
}
