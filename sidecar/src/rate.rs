//! Per-token request rates: a token bucket per token id, on this host.
//!
//! A token with a rate may make that many requests a second here, in
//! bursts of up to one second's worth; past it a request gets 429
//! `rate_limited` with the wait until the next one fits. Pure arithmetic
//! over the times it is given.
//!
//! What it is not: cluster-wide. Each host keeps its own buckets, so a
//! client that spreads its requests over N hosts gets up to N times the
//! rate (shared quotas come with tenant placement leases).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests that may go now (up to the rate).
    tokens: f64,
    last: Instant,
}

/// The buckets of the tokens seen on this host.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimits {
    /// Takes one request for token `id` allowed `rate_per_s`: `Ok` if it
    /// may go at `now`, else how long until one may.
    pub(crate) fn take(&self, id: &str, rate_per_s: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(rate_per_s.max(1));
        let mut buckets = self.buckets.lock().expect("rate lock");
        let bucket = buckets.entry(id.to_owned()).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_seconds_worth_then_the_rate() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limits.take("a", 5, t0).is_ok());
        }
        let wait = limits.take("a", 5, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        // Another token is unaffected.
        assert!(limits.take("b", 5, t0).is_ok());
        // After 200 ms one more fits, and no more.
        let t1 = t0 + Duration::from_millis(200);
        assert!(limits.take("a", 5, t1).is_ok());
        assert!(limits.take("a", 5, t1).is_err());
        // A long pause refills only up to one second's worth.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(limits.take("a", 5, t2).is_ok());
        }
        assert!(limits.take("a", 5, t2).is_err());
    }
}
