//! How fast this host's CPU backend multiplies, and whether a product can
//! finish before its job's deadline.
//!
//! The CPU backend's `gemm` is the reference loop: about a billion
//! multiply-adds a second in a release build, so a large product can take
//! seconds. Every CPU kernel stops at its job's deadline within one metered
//! piece of work (`spillway_kernels::Meter`); this module decides the
//! earlier refusal: a product whose estimated time is far beyond what the
//! job has left is refused before it starts, so the guest hears at once
//! that it should ask for less (or for a GPU) instead of losing its whole
//! deadline. What it is not: a scheduler; it never delays work.

use spillway_kernels::Meter;
use std::time::{Duration, Instant};

/// A product is refused when its estimate exceeds the time left by this
/// factor: the estimate comes from one measurement on a possibly busy host,
/// so only work that surely cannot finish is refused; the meter stops the
/// rest at the deadline.
const REFUSE_FACTOR: u64 = 2;

/// Multiply-adds per millisecond of the CPU backend's `gemm` on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuSpeed {
    macs_per_ms: u64,
}

impl CpuSpeed {
    /// A speed given by configuration.
    pub(crate) fn fixed(macs_per_ms: u64) -> Self {
        Self {
            macs_per_ms: macs_per_ms.max(1),
        }
    }

    /// This host's speed, measured once per process (see [`Self::measure`]).
    pub(crate) fn measured() -> Self {
        static SPEED: std::sync::OnceLock<CpuSpeed> = std::sync::OnceLock::new();
        *SPEED.get_or_init(Self::measure)
    }

    /// Times the reference `gemm` on this host: 96×96×96 products for at
    /// least 20 ms (a few milliseconds of start-up), taking the fastest
    /// round, so a momentarily busy core makes the estimate fast rather
    /// than slow (fewer refusals, never more).
    fn measure() -> Self {
        let n = 96;
        let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
        let mut c = vec![0.0; n * n];
        let began = Instant::now();
        let mut fastest = Duration::MAX;
        while began.elapsed() < Duration::from_millis(20) {
            let round = Instant::now();
            spillway_kernels::gemm(n, n, n, 1.0, &a, &a, 0.0, &mut c, &mut Meter::unbounded())
                .expect("a valid shape");
            fastest = fastest.min(round.elapsed());
        }
        std::hint::black_box(&c);
        let macs = (n * n * n) as u128;
        let per_ms = macs * 1_000_000 / fastest.as_nanos().max(1);
        Self::fixed(per_ms.min(u128::from(u64::MAX)) as u64)
    }

    pub(crate) fn macs_per_ms(self) -> u64 {
        self.macs_per_ms
    }
}

/// Why a product was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CannotFinish {
    pub(crate) estimate_ms: u64,
    pub(crate) remaining_ms: u64,
}

/// Whether an `m×k · k×n` product may start with `remaining_ms` left:
/// refused when its estimate exceeds the time left [`REFUSE_FACTOR`] times
/// over. 16-bit operands cost what `f32` ones do (they are widened first).
pub(crate) fn may_start_gemm(
    (m, n, k): (u64, u64, u64),
    speed: CpuSpeed,
    remaining_ms: u64,
) -> Result<(), CannotFinish> {
    let macs = m.saturating_mul(n).saturating_mul(k);
    let estimate_ms = macs / speed.macs_per_ms;
    if estimate_ms > remaining_ms.saturating_mul(REFUSE_FACTOR) {
        Err(CannotFinish {
            estimate_ms,
            remaining_ms,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_products_far_beyond_the_time_left_are_refused() {
        // 1 M multiply-adds a millisecond: a 1000³ product takes ~1 s.
        let speed = CpuSpeed::fixed(1_000_000);
        let cube = (1000, 1000, 1000);
        type Case = ((u64, u64, u64), u64, Option<u64>);
        // (shape, remaining ms, refused with this estimate)
        let table: &[Case] = &[
            (cube, 10_000, None),
            (cube, 1000, None),
            (cube, 500, None), // 2× over: may still finish on a faster core
            (cube, 499, Some(1000)),
            (cube, 0, Some(1000)),
            ((1400, 1400, 1400), 300, Some(2744)), // the review's case
            ((1, 1, 1), 0, None),                  // too small to estimate
            ((u64::MAX, u64::MAX, 2), 1000, Some(u64::MAX / 1_000_000)),
        ];
        for &(shape, remaining_ms, refused) in table {
            let got = may_start_gemm(shape, speed, remaining_ms)
                .err()
                .map(|c| c.estimate_ms);
            assert_eq!(got, refused, "{shape:?} with {remaining_ms} ms left");
        }
    }

    #[test]
    fn measuring_gives_a_plausible_speed() {
        // Debug builds are slower than release ones by 10-50×; either way
        // more than a thousand multiply-adds fit in a millisecond.
        let speed = CpuSpeed::measure();
        assert!(speed.macs_per_ms() > 1000, "{speed:?}");
        assert_eq!(CpuSpeed::fixed(0).macs_per_ms(), 1, "never divides by 0");
    }
}
