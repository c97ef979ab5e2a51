//! CPU references of the kernels a transformer language model needs beyond
//! the linear algebra in `cpu.rs`: embedding lookup, rotary positions,
//! the SwiGLU gate, causal attention over a key/value cache, and a copy
//! between buffers (to append to that cache). Same rules as `cpu.rs`:
//! arguments checked first, sums in `f64`, every kernel metered.
//!
//! Conventions shared with `cuda/builtin.cu` (and the example model's numpy
//! reference, `examples/models/tiny_lm/reference.py`):
//!
//! - activations are rows of `heads · head_dim` values, head `h` at
//!   `h · head_dim`;
//! - rotary positions rotate the two halves of each head (`x[i]` with
//!   `x[i + head_dim/2]`, as Llama's and GPT-NeoX's checkpoints do), by
//!   `pos · theta^(-2i/head_dim)`, the angle in `f64`;
//! - attention is causal: query row `r` is at position `pos0 + r` and sees
//!   the keys at positions `0..=pos0 + r`; with fewer key heads than query
//!   heads (grouped-query attention), query head `h` reads key head
//!   `h / (heads / kv_heads)`.

use crate::{KernelError, Meter};

/// The most keys one attention row may see (the CUDA kernel keeps a row's
/// scores in shared memory).
pub const MAX_ATTENTION_KEYS: u32 = 8192;

/// The longest head `attention` and `rope` take.
pub const MAX_HEAD_DIM: u32 = 256;

fn expect_len(arg: &'static str, got: usize, expected: usize) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Length { arg, expected, got })
    }
}

/// `out[r] = table[ids[r]]`: row `ids[r]` of a `vocab × dim` table for each
/// of the `ids`. An id that is not a whole number below `vocab` gives a row
/// of NaN (the device cannot stop a launch part-way, so neither does this).
pub fn embedding(
    table: &[f32],
    ids: &[f32],
    vocab: usize,
    dim: usize,
    out: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    expect_len("table", table.len(), vocab * dim)?;
    expect_len("out", out.len(), ids.len() * dim)?;
    for (id, row) in ids.iter().zip(out.chunks_exact_mut(dim.max(1))) {
        match token_row(*id, vocab) {
            Some(t) => row.copy_from_slice(&table[t * dim..(t + 1) * dim]),
            None => row.fill(f32::NAN),
        }
        meter.spend(dim as u64)?;
    }
    Ok(())
}

/// The table row of token id `id`, if it is a whole number below `vocab`.
fn token_row(id: f32, vocab: usize) -> Option<usize> {
    (id >= 0.0 && id.fract() == 0.0 && (id as f64) < vocab as f64).then_some(id as usize)
}

/// Rotates each head of each of `rows` rows in place by its position
/// (`pos0 + row`): the rotary position embedding.
pub fn rope(
    x: &mut [f32],
    rows: usize,
    heads: usize,
    head_dim: usize,
    pos0: u32,
    theta: f32,
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    expect_len("x", x.len(), rows * heads * head_dim)?;
    let half = head_dim / 2;
    for (r, row) in x.chunks_exact_mut((heads * head_dim).max(1)).enumerate() {
        let pos = f64::from(pos0) + r as f64;
        for head in row.chunks_exact_mut(head_dim.max(1)) {
            for i in 0..half {
                let (sin, cos) = rope_angle(pos, i, head_dim, theta).sin_cos();
                let (a, b) = (f64::from(head[i]), f64::from(head[i + half]));
                head[i] = (a * cos - b * sin) as f32;
                head[i + half] = (a * sin + b * cos) as f32;
            }
        }
        meter.spend((heads * head_dim) as u64)?;
    }
    Ok(())
}

/// The angle of pair `i` of a head at position `pos`.
fn rope_angle(pos: f64, i: usize, head_dim: usize, theta: f32) -> f64 {
    pos * f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64)
}

/// `out[i] = silu(gate[i]) · up[i]`, `silu(x) = x / (1 + e^-x)`: the
/// gated unit of a SwiGLU feed-forward block.
pub fn swiglu(
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    expect_len("up", up.len(), gate.len())?;
    expect_len("out", out.len(), gate.len())?;
    let chunk = crate::CHECK_EVERY as usize;
    for ((o, g), u) in out
        .chunks_mut(chunk)
        .zip(gate.chunks(chunk))
        .zip(up.chunks(chunk))
    {
        for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
            let g = f64::from(*g);
            *o = (g / (1.0 + (-g).exp()) * f64::from(*u)) as f32;
        }
        meter.spend(o.len() as u64)?;
    }
    Ok(())
}

/// The shape of one causal attention launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query rows (tokens) in this launch.
    pub rows: usize,
    /// Rows of the key and value caches (positions held).
    pub kv_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The position of the first query row.
    pub pos0: usize,
}

impl AttentionShape {
    /// Checks what no buffer length shows: whole groups of query heads per
    /// key head, a head no longer than [`MAX_HEAD_DIM`], and every query's
    /// keys in the cache, no more than [`MAX_ATTENTION_KEYS`] of them.
    pub fn check(&self) -> Result<(), KernelError> {
        let bad = |why: String| Err(KernelError::Shape(why));
        if self.rows == 0 || self.heads == 0 || self.kv_heads == 0 || self.head_dim == 0 {
            return bad(format!("attention has a zero dimension ({self:?})"));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} query heads do not split evenly over {} key heads",
                self.heads, self.kv_heads
            ));
        }
        if self.head_dim > MAX_HEAD_DIM as usize {
            return bad(format!("head_dim {} is over {MAX_HEAD_DIM}", self.head_dim));
        }
        let seen = self.pos0.saturating_add(self.rows);
        if seen > self.kv_len {
            return bad(format!(
                "the last query (position {}) needs {seen} cached keys; kv_len is {}",
                seen - 1,
                self.kv_len
            ));
        }
        if seen > MAX_ATTENTION_KEYS as usize {
            return bad(format!(
                "the last query sees {seen} keys; at most {MAX_ATTENTION_KEYS} may be seen"
            ));
        }
        Ok(())
    }
}

/// Causal attention: for each query row and head,
/// `out = softmax(scale · q·Kᵀ) · V` over the keys its position sees.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
    scale: f32,
    out: &mut [f32],
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    s.check()?;
    let (q_width, kv_width) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    expect_len("q", q.len(), s.rows * q_width)?;
    expect_len("k", k.len(), s.kv_len * kv_width)?;
    expect_len("v", v.len(), s.kv_len * kv_width)?;
    expect_len("out", out.len(), s.rows * q_width)?;
    let group = s.heads / s.kv_heads;
    let mut scores = Vec::new();
    let mut acc = vec![0f64; s.head_dim];
    for r in 0..s.rows {
        let keys = s.pos0 + r + 1;
        for h in 0..s.heads {
            let at = r * q_width + h * s.head_dim;
            let query = &q[at..at + s.head_dim];
            let kv_at = (h / group) * s.head_dim;
            scores.clear();
            scores.extend((0..keys).map(|j| {
                let key = &k[j * kv_width + kv_at..][..s.head_dim];
                let dot: f64 = query
                    .iter()
                    .zip(key)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                dot * f64::from(scale)
            }));
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0f64;
            for score in scores.iter_mut() {
                *score = (*score - max).exp();
                total += *score;
            }
            acc.fill(0.0);
            for (j, p) in scores.iter().enumerate() {
                let value = &v[j * kv_width + kv_at..][..s.head_dim];
                for (a, x) in acc.iter_mut().zip(value) {
                    *a += p * f64::from(*x);
                }
            }
            for (o, a) in out[at..at + s.head_dim].iter_mut().zip(&acc) {
                *o = (a / total) as f32;
            }
            meter.spend((2 * keys * s.head_dim) as u64)?;
        }
    }
    Ok(())
}

/// `dst[dst_offset..][..n] = src[src_offset..][..n]`.
pub fn copy(
    src: &[f32],
    src_offset: usize,
    dst: &mut [f32],
    dst_offset: usize,
    n: usize,
    meter: &mut Meter<'_>,
) -> Result<(), KernelError> {
    let range = |offset: usize, len: usize, arg| {
        offset
            .checked_add(n)
            .filter(|end| *end <= len)
            .map(|end| offset..end)
            .ok_or(KernelError::Length {
                arg,
                expected: offset.saturating_add(n),
                got: len,
            })
    };
    let from = range(src_offset, src.len(), "src")?;
    let to = range(dst_offset, dst.len(), "dst")?;
    dst[to].copy_from_slice(&src[from]);
    meter.spend(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free() -> &'static mut Meter<'static> {
        Box::leak(Box::new(Meter::unbounded()))
    }

    #[test]
    fn embedding_picks_rows_and_marks_bad_ids() {
        let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let mut out = [0.0; 8];
        embedding(&table, &[2.0, 0.0, 1.5, 3.0], 3, 2, &mut out, free()).unwrap();
        assert_eq!(&out[..4], &[20.0, 21.0, 0.0, 1.0]);
        assert!(out[4..].iter().all(|v| v.is_nan()), "{out:?}");
        assert!(matches!(
            embedding(&table, &[0.0], 3, 2, &mut [0.0; 3], free()),
            Err(KernelError::Length { arg: "out", .. })
        ));
    }

    #[test]
    fn rope_rotates_half_pairs_by_position() {
        // head_dim 4: pairs (0, 2) and (1, 3); at position 1 pair 0 turns
        // by 1 radian and pair 1 by theta^(-1/2) = 0.01 radians.
        let mut x = [1.0, 1.0, 0.0, 0.0];
        rope(&mut x, 1, 1, 4, 1, 10_000.0, free()).unwrap();
        let want = [1f64.cos(), 0.01f64.cos(), 1f64.sin(), 0.01f64.sin()];
        for (g, w) in x.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-7, "{x:?}");
        }
        // Position 0 leaves rows as they are; the second row is position 1.
        let mut two = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        rope(&mut two, 2, 1, 4, 0, 10_000.0, free()).unwrap();
        assert_eq!(&two[..4], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(&two[4..], &x);
    }

    #[test]
    fn swiglu_gates_by_silu() {
        let mut out = [0.0; 3];
        swiglu(&[0.0, 1.0, -20.0], &[5.0, 2.0, 3.0], &mut out, free()).unwrap();
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 2.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert!(out[2].abs() < 1e-6);
    }

    #[test]
    fn attention_is_causal_and_groups_heads() {
        // Two positions, one key head shared by two query heads, head_dim 1.
        // Row 0 sees only key 0; row 1 sees both, weighted by softmax.
        let shape = AttentionShape {
            rows: 2,
            kv_len: 2,
            heads: 2,
            kv_heads: 1,
            head_dim: 1,
            pos0: 0,
        };
        let (k, v) = ([1.0, 2.0], [10.0, 20.0]);
        let q = [1.0, -1.0, 1.0, -1.0];
        let mut out = [0.0; 4];
        attention(&q, &k, &v, shape, 1.0, &mut out, free()).unwrap();
        assert_eq!(&out[..2], &[10.0, 10.0]);
        let p = |s0: f64, s1: f64| (10.0 * s0.exp() + 20.0 * s1.exp()) / (s0.exp() + s1.exp());
        assert!((f64::from(out[2]) - p(1.0, 2.0)).abs() < 1e-5);
        assert!((f64::from(out[3]) - p(-1.0, -2.0)).abs() < 1e-5);

        // A later launch of one row at position 1 gives that row again.
        let one = AttentionShape {
            rows: 1,
            pos0: 1,
            ..shape
        };
        let mut last = [0.0; 2];
        attention(&q[2..], &k, &v, one, 1.0, &mut last, free()).unwrap();
        assert_eq!(last, out[2..]);
    }

    #[test]
    fn attention_shapes_are_checked() {
        let ok = AttentionShape {
            rows: 2,
            kv_len: 4,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            pos0: 2,
        };
        assert!(ok.check().is_ok());
        for bad in [
            AttentionShape { kv_heads: 3, ..ok },
            AttentionShape { pos0: 3, ..ok },
            AttentionShape {
                head_dim: 512,
                ..ok
            },
            AttentionShape { rows: 0, ..ok },
            AttentionShape {
                kv_len: 9000,
                pos0: 8191,
                ..ok
            },
        ] {
            assert!(matches!(bad.check(), Err(KernelError::Shape(_))), "{bad:?}");
        }
    }

    #[test]
    fn copy_moves_a_range_and_checks_both_ends() {
        let mut dst = [0.0; 5];
        copy(&[1.0, 2.0, 3.0], 1, &mut dst, 3, 2, free()).unwrap();
        assert_eq!(dst, [0.0, 0.0, 0.0, 2.0, 3.0]);
        assert!(matches!(
            copy(&[1.0], 0, &mut dst, 4, 2, free()),
            Err(KernelError::Length { arg: "src", .. })
        ));
        assert!(matches!(
            copy(&[1.0, 2.0], 0, &mut dst, 4, 2, free()),
            Err(KernelError::Length { arg: "dst", .. })
        ));
    }
}
