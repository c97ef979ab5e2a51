//! Request rates: a token bucket per key (a token id, or a tenant), on
//! this host.
//!
//! A key with a rate may make that many requests a second here, in bursts
//! of up to one second's worth (at least one request); past it a request
//! gets 429 `rate_limited` with the wait until the next one fits. Pure
//! arithmetic over the times it is given.
//!
//! A token's rate is kept per host: a client that spreads its requests
//! over N hosts gets up to N times it. A tenant's rate is cluster-wide:
//! each host enforces its share (`quota::rate_share`), so the shares add
//! up to the tenant's rate.

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
    /// Takes one request for `key` allowed `rate_per_s`: `Ok` if it may go
    /// at `now`, else how long until one may.
    pub(crate) fn take(&self, key: &str, rate_per_s: f64, now: Instant) -> Result<(), Duration> {
        let rate = rate_per_s.max(0.001);
        let burst = rate.max(1.0);
        let mut buckets = self.buckets.lock().expect("rate lock");
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
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
            assert!(limits.take("a", 5.0, t0).is_ok());
        }
        let wait = limits.take("a", 5.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        // Another token is unaffected.
        assert!(limits.take("b", 5.0, t0).is_ok());
        // After 200 ms one more fits, and no more.
        let t1 = t0 + Duration::from_millis(200);
        assert!(limits.take("a", 5.0, t1).is_ok());
        assert!(limits.take("a", 5.0, t1).is_err());
        // A long pause refills only up to one second's worth.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(limits.take("a", 5.0, t2).is_ok());
        }
        assert!(limits.take("a", 5.0, t2).is_err());
    }

    #[test]
    fn a_share_below_one_a_second_still_allows_one_request() {
        // A tenant's 2/s shared by three hosts: 0.67/s here.
        let limits = RateLimits::default();
        let t0 = Instant::now();
        assert!(limits.take("tenant:acme", 2.0 / 3.0, t0).is_ok());
        let wait = limits.take("tenant:acme", 2.0 / 3.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.5).abs() < 1e-9, "{wait:?}");
        assert!(
            limits
                .take("tenant:acme", 2.0 / 3.0, t0 + Duration::from_millis(1500))
                .is_ok()
        );
    }
}
