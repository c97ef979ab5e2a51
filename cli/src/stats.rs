//! Latency summaries the benchmarks and the demo's burst table print:
//! nearest-rank percentiles and milliseconds.

use std::time::Duration;

/// The `p` quantile (0..=1) of `sorted`, nearest rank; zero when empty.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Milliseconds with three decimals.
/// The median of `v` (zero when empty).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        for (p, ms) in [(0.0, 1), (0.5, 6), (0.99, 10), (1.0, 10)] {
            assert_eq!(percentile(&sorted, p), Duration::from_millis(ms), "{p}");
        }
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
