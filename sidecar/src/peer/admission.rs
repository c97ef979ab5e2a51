//! Handshakes under load: how many a host lets run at once before it asks
//! unvalidated addresses to prove they are reachable first (QUIC's retry,
//! which costs an attacker spoofing addresses a round trip it cannot
//! complete), and how often a refused handshake is logged (one warning a
//! window, with the count of those folded into it, so a flood of refused
//! handshakes cannot flood the log). Pure: the peer service feeds it.
//!
//! What it is not: who may connect (`pinning`) or what a peer may ask
//! (`service`, `control::origin`).

use std::time::{Duration, Instant};

/// Handshakes in progress past which an unvalidated address is retried.
pub(crate) const RETRY_ABOVE: usize = 32;

/// Whether an incoming attempt should be answered with a retry: under load
/// (more than [`RETRY_ABOVE`] handshakes in progress) and from an address
/// not validated yet, when the endpoint may still retry it.
pub(crate) fn should_retry(in_progress: usize, validated: bool, may_retry: bool) -> bool {
    in_progress > RETRY_ABOVE && !validated && may_retry
}

/// At most one log line a window for a kind of event.
#[derive(Debug)]
pub(crate) struct Throttle {
    window: Duration,
    last: Option<Instant>,
    /// Events since the last line.
    folded: u64,
}

impl Throttle {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            last: None,
            folded: 0,
        }
    }

    /// One event at `now`: `Some(n)` when a line should be written now,
    /// `n` being the events folded into it since the last line (this one
    /// included); `None` to stay quiet.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        self.folded += 1;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.window);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.folded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_window_with_the_rest_counted_in() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Throttle::new(Duration::from_secs(10));
        let lines: Vec<Option<u64>> = [0, 1, 2, 9_999, 10_000, 10_001, 25_000]
            .into_iter()
            .map(|at| t.hit(ms(at)))
            .collect();
        assert_eq!(lines, [Some(1), None, None, None, Some(4), None, Some(2)]);
    }

    #[test]
    fn only_unvalidated_addresses_under_load_are_retried() {
        for (in_progress, validated, may_retry, retried) in [
            (0, false, true, false),
            (RETRY_ABOVE, false, true, false),
            (RETRY_ABOVE + 1, false, true, true),
            (RETRY_ABOVE + 1, true, true, false),
            (RETRY_ABOVE + 1, false, false, false),
        ] {
            assert_eq!(
                should_retry(in_progress, validated, may_retry),
                retried,
                "{in_progress} {validated} {may_retry}"
            );
        }
    }
}
