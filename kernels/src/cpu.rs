//! CPU reference implementations. Straightforward loops, accumulating in
//! `f64` where a sum is long, so they are a trustworthy oracle rather than a
//! fast path.
//!
//! Every kernel takes a [`Meter`]: it counts the work done (multiply-adds
//! for `gemm`, elements for the rest) and, every [`CHECK_EVERY`] units, asks
//! its caller whether to go on, so a job's deadline or cancel stops a long
//! product within a bounded piece of work. The oracle uses
//! [`Meter::unbounded`].

use crate::KernelError;

/// Units of work (multiply-adds or elements) between two looks at a
/// [`Meter`]'s question: about a millisecond of `gemm` in a release build.
pub const CHECK_EVERY: u64 = 1 << 20;

/// Counts a kernel's work and asks, every [`CHECK_EVERY`] units, whether to
/// go on; a `false` ends the kernel with [`KernelError::Interrupted`] and
/// its output partly written.
pub struct Meter<'a> {
    since_check: u64,
    /// `None`: never stops.
    go_on: Option<&'a mut dyn FnMut() -> bool>,
}

impl std::fmt::Debug for Meter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("since_check", &self.since_check)
            .finish_non_exhaustive()
    }
}

impl<'a> Meter<'a> {
    /// A meter that asks `go_on`.
    pub fn new(go_on: &'a mut dyn FnMut() -> bool) -> Self {
        Self {
            since_check: 0,
            go_on: Some(go_on),
        }
    }

    /// A meter that never stops the work (the oracle, and tests).
    pub fn unbounded() -> Meter<'static> {
        Meter {
            since_check: 0,
            go_on: None,
        }
    }

    /// Counts `units` of work done; past [`CHECK_EVERY`] since the last
    /// look, asks whether to go on.
    #[inline]
    pub fn spend(&mut self, units: u64) -> Result<(), KernelError> {
        self.since_check += units;
        if self.since_check < CHECK_EVERY {
            return Ok(());
        }
        self.since_check = 0;
        let go_on = self.go_on.as_mut().is_none_or(|go_on| go_on());
        if go_on {
            Ok(())
        } else {
            Err(KernelError::Interrupted)
        }
    }
}

fn expect_len(arg: &'static str, got: usize, expected: usize) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Length { arg, expected, got })
    }
}

fn area(rows: usize, cols: usize, what: &str) -> Result<usize, KernelError> {
    if rows == 0 || cols == 0 {
        return Err(KernelError::Shape(format!(
            "{what} has a zero dimension ({rows}×{cols})"
        )));
    }
    rows.checked_mul(cols)
        .ok_or_else(|| KernelError::Shape(format!("{what} of {rows}×{cols} overflows")))
}

/// `out[i] = a[i] + b[i]`.
pub fn vector_add(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    expect_len("b", b.len(), a.len())?;
    expect_len("out", out.len(), a.len())?;
    let chunk = CHECK_EVERY as usize;
    for ((o, x), y) in out
        .chunks_mut(chunk)
        .zip(a.chunks(chunk))
        .zip(b.chunks(chunk))
    {
        for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
            *o = x + y;
        }
        meter.spend(o.len() as u64)?;
    }
    Ok(())
}

/// `y[i] = alpha * x[i] + y[i]`.
pub fn saxpy(
    alpha: f32,
    x: &[f32],
    y: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    expect_len("y", y.len(), x.len())?;
    let chunk = CHECK_EVERY as usize;
    for (y, x) in y.chunks_mut(chunk).zip(x.chunks(chunk)) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
        meter.spend(y.len() as u64)?;
    }
    Ok(())
}

/// `C = alpha * A · B + beta * C` with `A` m×k, `B` k×n and `C` m×n.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    expect_len("a", a.len(), area(m, k, "A")?)?;
    expect_len("b", b.len(), area(k, n, "B")?)?;
    expect_len("c", c.len(), area(m, n, "C")?)?;
    let chunk = CHECK_EVERY as usize;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            // A long dot product is metered in pieces too.
            for start in (0..k).step_by(chunk) {
                let end = (start + chunk).min(k);
                for p in start..end {
                    acc += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                }
                meter.spend((end - start) as u64)?;
            }
            let prior = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * n + j]
            };
            c[i * n + j] = alpha * acc as f32 + prior;
        }
    }
    Ok(())
}

/// Softmax of each of `rows` rows of `cols` values, stabilised by the row max.
pub fn softmax(
    x: &[f32],
    rows: usize,
    cols: usize,
    out: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    let len = area(rows, cols, "x")?;
    expect_len("x", x.len(), len)?;
    expect_len("out", out.len(), len)?;
    for (row, out_row) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for (o, v) in out_row.iter_mut().zip(row) {
            *o = (v - max).exp();
            sum += f64::from(*o);
        }
        for o in out_row.iter_mut() {
            *o = (f64::from(*o) / sum) as f32;
        }
        meter.spend(cols as u64)?;
    }
    Ok(())
}

/// `out[r][c] = x[r][c] / sqrt(mean(x[r]²) + eps) * weight[c]`.
pub fn rmsnorm(
    x: &[f32],
    weight: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    out: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    let len = area(rows, cols, "x")?;
    expect_len("x", x.len(), len)?;
    expect_len("weight", weight.len(), cols)?;
    expect_len("out", out.len(), len)?;
    if eps.is_nan() || eps < 0.0 {
        return Err(KernelError::Shape(format!(
            "eps must be non-negative, got {eps}"
        )));
    }
    for (row, out_row) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mean_sq = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            / cols as f64;
        let scale = 1.0 / (mean_sq + f64::from(eps)).sqrt();
        for ((o, v), w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = (f64::from(*v) * scale) as f32 * w;
        }
        meter.spend(cols as u64)?;
    }
    Ok(())
}

/// `Σ x[i]`, accumulated in `f64`.
pub fn reduce_sum(x: &[f32], meter: &mut Meter<'_>) -> Result<f32, KernelError> {
    let mut sum = 0f64;
    for piece in x.chunks(CHECK_EVERY as usize) {
        sum += piece.iter().map(|v| f64::from(*v)).sum::<f64>();
        meter.spend(piece.len() as u64)?;
    }
    Ok(sum as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free() -> &'static mut Meter<'static> {
        Box::leak(Box::new(Meter::unbounded()))
    }

    #[test]
    fn a_meter_asks_once_per_bounded_piece_and_stops_the_work() {
        // A 256×256×256 product is 16 pieces of CHECK_EVERY multiply-adds.
        let n = 256;
        let (a, b) = (vec![1.0; n * n], vec![1.0; n * n]);
        let mut asked = 0;
        let mut count = || {
            asked += 1;
            true
        };
        let mut c = vec![0.0; n * n];
        gemm(
            n,
            n,
            n,
            1.0,
            &a,
            &b,
            0.0,
            &mut c,
            &mut Meter::new(&mut count),
        )
        .unwrap();
        assert_eq!(asked, 16);
        assert!(c.iter().all(|&v| v == n as f32));

        // Stopped at the third look: no more work after it.
        let mut asked = 0;
        let mut stop_at_3 = || {
            asked += 1;
            asked < 3
        };
        let mut c = vec![0.0; n * n];
        let e = gemm(
            n,
            n,
            n,
            1.0,
            &a,
            &b,
            0.0,
            &mut c,
            &mut Meter::new(&mut stop_at_3),
        );
        assert_eq!(e, Err(KernelError::Interrupted));
        // Stored: every element before the one whose piece ended at the stop.
        let done = c.iter().filter(|&&v| v != 0.0).count();
        assert_eq!(done, 3 * CHECK_EVERY as usize / n - 1);

        // One dot product longer than a piece is metered inside.
        let k = 3 * CHECK_EVERY as usize;
        let (a, b) = (vec![1.0; k], vec![1.0; k]);
        let mut asked = 0;
        let mut never = || {
            asked += 1;
            false
        };
        let e = gemm(
            1,
            1,
            k,
            1.0,
            &a,
            &b,
            0.0,
            &mut [0.0],
            &mut Meter::new(&mut never),
        );
        assert_eq!((e, asked), (Err(KernelError::Interrupted), 1));

        // The element-wise kernels stop too.
        let x = vec![1.0; 2 * CHECK_EVERY as usize];
        let mut no = || false;
        assert_eq!(
            reduce_sum(&x, &mut Meter::new(&mut no)),
            Err(KernelError::Interrupted)
        );
        let mut out = vec![0.0; x.len()];
        let mut no = || false;
        let e = vector_add(&x, &x, &mut out, &mut Meter::new(&mut no));
        assert_eq!(e, Err(KernelError::Interrupted));
    }

    #[test]
    fn vector_add_and_saxpy() {
        let mut out = [0.0; 3];
        vector_add(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0], &mut out, free()).unwrap();
        assert_eq!(out, [11.0, 22.0, 33.0]);
        let mut y = [1.0, 1.0];
        saxpy(2.0, &[3.0, 4.0], &mut y, free()).unwrap();
        assert_eq!(y, [7.0, 9.0]);
        assert_eq!(
            vector_add(&[1.0], &[1.0, 2.0], &mut out, free()),
            Err(KernelError::Length {
                arg: "b",
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn gemm_small_known_product() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
        let mut c = [1.0; 4];
        gemm(
            2,
            2,
            2,
            1.0,
            &[1.0, 2.0, 3.0, 4.0],
            &[5.0, 6.0, 7.0, 8.0],
            0.0,
            &mut c,
            free(),
        )
        .unwrap();
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        let mut c = [1.0; 4];
        gemm(
            2,
            2,
            2,
            2.0,
            &[1.0, 2.0, 3.0, 4.0],
            &[5.0, 6.0, 7.0, 8.0],
            1.0,
            &mut c,
            free(),
        )
        .unwrap();
        assert_eq!(c, [39.0, 45.0, 87.0, 101.0]);
    }

    #[test]
    fn gemm_rejects_bad_shapes() {
        let mut c = [0.0; 4];
        assert!(matches!(
            gemm(2, 2, 3, 1.0, &[0.0; 4], &[0.0; 6], 0.0, &mut c, free()),
            Err(KernelError::Length {
                arg: "a",
                expected: 6,
                got: 4
            })
        ));
        assert!(matches!(
            gemm(0, 2, 2, 1.0, &[], &[0.0; 4], 0.0, &mut [], free()),
            Err(KernelError::Shape(_))
        ));
    }

    #[test]
    fn softmax_rows_sum_to_one_and_survive_large_values() {
        let x = [1000.0, 1001.0, 1002.0, -5.0, 0.0, 5.0];
        let mut out = [0.0; 6];
        softmax(&x, 2, 3, &mut out, free()).unwrap();
        for row in out.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
        assert!(out[2] > out[1] && out[1] > out[0]);
    }

    #[test]
    fn rmsnorm_normalises_rows() {
        let mut out = [0.0; 2];
        rmsnorm(&[3.0, 4.0], &[1.0, 2.0], 1, 2, 0.0, &mut out, free()).unwrap();
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6);
        assert!((out[1] - 8.0 / rms).abs() < 1e-6);
        assert!(rmsnorm(&[1.0], &[1.0], 1, 1, -1.0, &mut out[..1], free()).is_err());
    }

    #[test]
    fn reduce_sum_is_exact_on_small_integers() {
        let x: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(reduce_sum(&x, free()), Ok(5050.0));
    }
}
