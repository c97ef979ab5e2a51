//! CPU reference implementations. Straightforward loops, accumulating in
//! `f64` where a sum is long, so they are a trustworthy oracle rather than a
//! fast path.

use crate::KernelError;

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
pub fn vector_add(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    expect_len("b", b.len(), a.len())?;
    expect_len("out", out.len(), a.len())?;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
    Ok(())
}

/// `y[i] = alpha * x[i] + y[i]`.
pub fn saxpy(alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len("y", y.len(), x.len())?;
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
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
) -> Result<(), KernelError> {
    expect_len("a", a.len(), area(m, k, "A")?)?;
    expect_len("b", b.len(), area(k, n, "B")?)?;
    expect_len("c", c.len(), area(m, n, "C")?)?;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
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
pub fn softmax(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) -> Result<(), KernelError> {
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
    }
    Ok(())
}

/// `Σ x[i]`, accumulated in `f64`.
pub fn reduce_sum(x: &[f32]) -> f32 {
    x.iter().map(|v| f64::from(*v)).sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_add_and_saxpy() {
        let mut out = [0.0; 3];
        vector_add(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0], &mut out).unwrap();
        assert_eq!(out, [11.0, 22.0, 33.0]);
        let mut y = [1.0, 1.0];
        saxpy(2.0, &[3.0, 4.0], &mut y).unwrap();
        assert_eq!(y, [7.0, 9.0]);
        assert_eq!(
            vector_add(&[1.0], &[1.0, 2.0], &mut out),
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
        )
        .unwrap();
        assert_eq!(c, [39.0, 45.0, 87.0, 101.0]);
    }

    #[test]
    fn gemm_rejects_bad_shapes() {
        let mut c = [0.0; 4];
        assert!(matches!(
            gemm(2, 2, 3, 1.0, &[0.0; 4], &[0.0; 6], 0.0, &mut c),
            Err(KernelError::Length {
                arg: "a",
                expected: 6,
                got: 4
            })
        ));
        assert!(matches!(
            gemm(0, 2, 2, 1.0, &[], &[0.0; 4], 0.0, &mut []),
            Err(KernelError::Shape(_))
        ));
    }

    #[test]
    fn softmax_rows_sum_to_one_and_survive_large_values() {
        let x = [1000.0, 1001.0, 1002.0, -5.0, 0.0, 5.0];
        let mut out = [0.0; 6];
        softmax(&x, 2, 3, &mut out).unwrap();
        for row in out.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
        assert!(out[2] > out[1] && out[1] > out[0]);
    }

    #[test]
    fn rmsnorm_normalises_rows() {
        let mut out = [0.0; 2];
        rmsnorm(&[3.0, 4.0], &[1.0, 2.0], 1, 2, 0.0, &mut out).unwrap();
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6);
        assert!((out[1] - 8.0 / rms).abs() < 1e-6);
        assert!(rmsnorm(&[1.0], &[1.0], 1, 1, -1.0, &mut out[..1]).is_err());
    }

    #[test]
    fn reduce_sum_is_exact_on_small_integers() {
        let x: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(reduce_sum(&x), 5050.0);
    }
}
