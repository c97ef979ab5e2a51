//! The kernels a guest may launch by name, and the parameters each takes.

use crate::transformer::{AttentionShape, MAX_HEAD_DIM};
use crate::{DType, KernelError};

/// A launchable kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `(a, b, out: buffer, n: u32)`: `out[i] = a[i] + b[i]`.
    VectorAdd,
    /// `(alpha: f32, x, y: buffer, n: u32)`: `y[i] = alpha * x[i] + y[i]`.
    Saxpy,
    /// `(a, b, c: buffer, m, n, k: u32, alpha, beta: f32)`:
    /// `C = alpha * A(m×k) · B(k×n) + beta * C(m×n)`.
    Gemm,
    /// `(x, out: buffer, rows, cols: u32)`: softmax of each row.
    Softmax,
    /// `(x, weight, out: buffer, rows, cols: u32, eps: f32)`: RMS norm of
    /// each row, scaled by `weight`.
    Rmsnorm,
    /// `(x, out: buffer, n: u32)`: `out[0] = Σ x[i]`.
    ReduceSum,
    /// `(table, ids, out: buffer, rows, vocab, dim: u32)`: row `ids[r]` of
    /// the `vocab × dim` table for each of `rows` token ids (whole numbers
    /// held as `f32`; any other id gives a row of NaN).
    Embedding,
    /// `(x: buffer, rows, heads, head_dim, pos0: u32, theta: f32)`: rotary
    /// positions, in place; row `r` is at position `pos0 + r`.
    Rope,
    /// `(gate, up, out: buffer, n: u32)`: `out[i] = silu(gate[i]) · up[i]`.
    Swiglu,
    /// `(q, k, v, out: buffer, rows, kv_len, heads, kv_heads, head_dim,
    /// pos0: u32, scale: f32)`: causal attention of `rows` queries (the
    /// first at position `pos0`) over a key/value cache of `kv_len` rows.
    Attention,
    /// `(src, dst: buffer, n, src_offset, dst_offset: u32)`: copies `n`
    /// elements (to append to a key/value cache).
    Copy,
}

/// The kind of one launch parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Buffer,
    F32,
    U32,
}

impl Kernel {
    /// Every kernel, in a stable order.
    pub const ALL: [Kernel; 11] = [
        Kernel::VectorAdd,
        Kernel::Saxpy,
        Kernel::Gemm,
        Kernel::Softmax,
        Kernel::Rmsnorm,
        Kernel::ReduceSum,
        Kernel::Embedding,
        Kernel::Rope,
        Kernel::Swiglu,
        Kernel::Attention,
        Kernel::Copy,
    ];

    /// The name guests launch it by.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::VectorAdd => "vector_add",
            Kernel::Saxpy => "saxpy",
            Kernel::Gemm => "gemm",
            Kernel::Softmax => "softmax",
            Kernel::Rmsnorm => "rmsnorm",
            Kernel::ReduceSum => "reduce_sum",
            Kernel::Embedding => "embedding",
            Kernel::Rope => "rope",
            Kernel::Swiglu => "swiglu",
            Kernel::Attention => "attention",
            Kernel::Copy => "copy",
        }
    }

    /// Every kernel's name, comma-separated (for messages).
    pub fn known_names() -> String {
        Kernel::ALL.map(Kernel::name).join(", ")
    }

    /// Looks a kernel up by name.
    pub fn from_name(name: &str) -> Result<Kernel, KernelError> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| KernelError::UnknownKernel(name.to_owned()))
    }

    /// The parameters, in launch order.
    pub fn params(self) -> &'static [Param] {
        use Param::*;
        match self {
            Kernel::VectorAdd => &[Buffer, Buffer, Buffer, U32],
            Kernel::Saxpy => &[F32, Buffer, Buffer, U32],
            Kernel::Gemm => &[Buffer, Buffer, Buffer, U32, U32, U32, F32, F32],
            Kernel::Softmax => &[Buffer, Buffer, U32, U32],
            Kernel::Rmsnorm => &[Buffer, Buffer, Buffer, U32, U32, F32],
            Kernel::ReduceSum => &[Buffer, Buffer, U32],
            Kernel::Embedding => &[Buffer, Buffer, Buffer, U32, U32, U32],
            Kernel::Rope => &[Buffer, U32, U32, U32, U32, F32],
            Kernel::Swiglu => &[Buffer, Buffer, Buffer, U32],
            Kernel::Attention => &[
                Buffer, Buffer, Buffer, Buffer, U32, U32, U32, U32, U32, U32, F32,
            ],
            Kernel::Copy => &[Buffer, Buffer, U32, U32, U32],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::from_name(k.name()).unwrap(), k);
        }
        assert!(matches!(
            Kernel::from_name("nope"),
            Err(KernelError::UnknownKernel(_))
        ));
    }
}

/// A buffer argument's required length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Position of the argument in the launch.
    pub arg: usize,
    /// Its name, for error messages.
    pub name: &'static str,
    /// Elements it must hold at least.
    pub elements: usize,
}

fn checked(a: usize, b: usize, what: &str) -> Result<usize, KernelError> {
    a.checked_mul(b)
        .ok_or_else(|| KernelError::Shape(format!("{what} of {a}×{b} overflows")))
}

fn product(a: u32, b: u32, what: &str) -> Result<usize, KernelError> {
    if a == 0 || b == 0 {
        return Err(KernelError::Shape(format!(
            "{what} has a zero dimension ({a}×{b})"
        )));
    }
    (a as usize)
        .checked_mul(b as usize)
        .ok_or_else(|| KernelError::Shape(format!("{what} of {a}×{b} overflows")))
}

impl Kernel {
    /// What each buffer argument must hold for the shape arguments `shape`
    /// (the `u32` parameters in launch order), checked before any backend
    /// runs the kernel. Also rejects shapes the kernel cannot take.
    pub fn requirements(self, shape: &[u32]) -> Result<Vec<Needs>, KernelError> {
        let s = |i: usize| shape.get(i).copied().unwrap_or(0);
        let need = |arg, name, elements| Needs {
            arg,
            name,
            elements,
        };
        Ok(match self {
            Kernel::VectorAdd => {
                let n = s(0) as usize;
                vec![need(0, "a", n), need(1, "b", n), need(2, "out", n)]
            }
            Kernel::Saxpy => {
                let n = s(0) as usize;
                vec![need(1, "x", n), need(2, "y", n)]
            }
            Kernel::Gemm => {
                let (m, n, k) = (s(0), s(1), s(2));
                vec![
                    need(0, "a", product(m, k, "A")?),
                    need(1, "b", product(k, n, "B")?),
                    need(2, "c", product(m, n, "C")?),
                ]
            }
            Kernel::Softmax => {
                let len = product(s(0), s(1), "x")?;
                vec![need(0, "x", len), need(1, "out", len)]
            }
            Kernel::Rmsnorm => {
                let len = product(s(0), s(1), "x")?;
                vec![
                    need(0, "x", len),
                    need(1, "weight", s(1) as usize),
                    need(2, "out", len),
                ]
            }
            Kernel::ReduceSum => vec![need(0, "x", s(0) as usize), need(1, "out", 1)],
            Kernel::Embedding => {
                let (rows, vocab, dim) = (s(0), s(1), s(2));
                vec![
                    need(0, "table", product(vocab, dim, "table")?),
                    need(1, "ids", rows as usize),
                    need(2, "out", product(rows, dim, "out")?),
                ]
            }
            Kernel::Rope => {
                let (rows, heads, head_dim) = (s(0), s(1), s(2));
                if head_dim % 2 != 0 || head_dim > MAX_HEAD_DIM {
                    return Err(KernelError::Shape(format!(
                        "rope needs an even head_dim of at most {MAX_HEAD_DIM}, got {head_dim}"
                    )));
                }
                let width = product(heads, head_dim, "a row")?;
                vec![need(0, "x", checked(rows as usize, width, "x")?)]
            }
            Kernel::Swiglu => {
                let n = s(0) as usize;
                vec![need(0, "gate", n), need(1, "up", n), need(2, "out", n)]
            }
            Kernel::Attention => {
                let shape = AttentionShape {
                    rows: s(0) as usize,
                    kv_len: s(1) as usize,
                    heads: s(2) as usize,
                    kv_heads: s(3) as usize,
                    head_dim: s(4) as usize,
                    pos0: s(5) as usize,
                };
                shape.check()?;
                let q = checked(shape.rows, shape.heads * shape.head_dim, "q")?;
                let kv = checked(shape.kv_len, shape.kv_heads * shape.head_dim, "k")?;
                vec![
                    need(0, "q", q),
                    need(1, "k", kv),
                    need(2, "v", kv),
                    need(3, "out", q),
                ]
            }
            Kernel::Copy => {
                let (n, from, to) = (s(0) as usize, s(1) as usize, s(2) as usize);
                vec![need(0, "src", from + n), need(1, "dst", to + n)]
            }
        })
    }

    /// Checks the element type of each buffer argument (`types[i]` is
    /// argument `i`'s, `None` for a scalar). Every kernel takes `f32`
    /// buffers, except `gemm`: A and B alike (`f32`, `bf16` or `f16`), and C
    /// either `f32` or A's type; 16-bit operands multiply with `f32`
    /// accumulation.
    pub fn check_types(self, types: &[Option<DType>]) -> Result<(), KernelError> {
        let kernel = self.name();
        let names = self.buffer_names();
        let at = |i: usize| types.get(i).copied().flatten().unwrap_or(DType::F32);
        if self == Kernel::Gemm {
            let (a, b, c) = (at(0), at(1), at(2));
            if b != a {
                let expected = "B must have A's element type";
                return Err(KernelError::Type {
                    kernel,
                    arg: "b",
                    got: b.name(),
                    expected,
                });
            }
            if c != DType::F32 && c != a {
                let expected = "C must be f32 or A's element type";
                return Err(KernelError::Type {
                    kernel,
                    arg: "c",
                    got: c.name(),
                    expected,
                });
            }
            return Ok(());
        }
        for (i, t) in types.iter().enumerate() {
            if let Some(t @ (DType::Bf16 | DType::F16)) = t {
                let arg = names.get(i).copied().unwrap_or("?");
                let expected = "this kernel takes f32 buffers";
                return Err(KernelError::Type {
                    kernel,
                    arg,
                    got: t.name(),
                    expected,
                });
            }
        }
        Ok(())
    }

    /// The names of the parameters, in launch order, for messages.
    fn buffer_names(self) -> &'static [&'static str] {
        match self {
            Kernel::VectorAdd => &["a", "b", "out", "n"],
            Kernel::Saxpy => &["alpha", "x", "y", "n"],
            Kernel::Gemm => &["a", "b", "c", "m", "n", "k", "alpha", "beta"],
            Kernel::Softmax => &["x", "out", "rows", "cols"],
            Kernel::Rmsnorm => &["x", "weight", "out", "rows", "cols", "eps"],
            Kernel::ReduceSum => &["x", "out", "n"],
            Kernel::Embedding => &["table", "ids", "out", "rows", "vocab", "dim"],
            Kernel::Rope => &["x", "rows", "heads", "head_dim", "pos0", "theta"],
            Kernel::Swiglu => &["gate", "up", "out", "n"],
            Kernel::Attention => &[
                "q", "k", "v", "out", "rows", "kv_len", "heads", "kv_heads", "head_dim", "pos0",
                "scale",
            ],
            Kernel::Copy => &["src", "dst", "n", "src_offset", "dst_offset"],
        }
    }

    /// The buffer arguments the kernel writes (its outputs; `saxpy`'s `y`
    /// is read and written). A read-only buffer (a resident tensor) may be
    /// any other argument, never one of these.
    pub fn writes(self) -> &'static [usize] {
        match self {
            Kernel::VectorAdd
            | Kernel::Saxpy
            | Kernel::Gemm
            | Kernel::Rmsnorm
            | Kernel::Embedding
            | Kernel::Swiglu => &[2],
            Kernel::Softmax | Kernel::ReduceSum | Kernel::Copy => &[1],
            Kernel::Rope => &[0],
            Kernel::Attention => &[3],
        }
    }

    /// Pairs of buffer arguments that must not be the same buffer (an output
    /// written while another thread still reads its input).
    pub fn must_not_alias(self) -> &'static [(usize, usize)] {
        match self {
            Kernel::Gemm => &[(2, 0), (2, 1)],
            Kernel::ReduceSum | Kernel::Copy => &[(1, 0)],
            Kernel::Embedding => &[(2, 0), (2, 1)],
            Kernel::Attention => &[(3, 0), (3, 1), (3, 2)],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod requirement_tests {
    use super::*;

    #[test]
    fn outputs_are_buffer_arguments() {
        for k in Kernel::ALL {
            for &w in k.writes() {
                assert_eq!(k.params()[w], Param::Buffer, "{}", k.name());
            }
            for &(out, _) in k.must_not_alias() {
                assert!(k.writes().contains(&out), "{}: {out}", k.name());
            }
        }
    }

    #[test]
    fn requirements_follow_the_shapes() {
        let r = Kernel::Gemm.requirements(&[2, 3, 4]).unwrap();
        assert_eq!(r.iter().map(|n| n.elements).collect::<Vec<_>>(), [8, 12, 6]);
        assert!(matches!(
            Kernel::Gemm.requirements(&[0, 3, 4]),
            Err(KernelError::Shape(_))
        ));
        let r = Kernel::Rmsnorm.requirements(&[4, 8]).unwrap();
        assert_eq!(
            r[1],
            Needs {
                arg: 1,
                name: "weight",
                elements: 8
            }
        );
        assert_eq!(Kernel::ReduceSum.requirements(&[5]).unwrap()[1].elements, 1);
        assert_eq!(Kernel::VectorAdd.requirements(&[0]).unwrap()[0].elements, 0);
    }

    #[test]
    fn only_gemm_takes_16_bit_buffers() {
        use DType::*;
        let gemm = |a, b, c| Kernel::Gemm.check_types(&[Some(a), Some(b), Some(c), None]);
        assert!(gemm(F32, F32, F32).is_ok());
        assert!(gemm(Bf16, Bf16, F32).is_ok());
        assert!(gemm(Bf16, Bf16, Bf16).is_ok());
        assert!(gemm(F16, F16, F16).is_ok());
        let e = gemm(Bf16, F16, F32).unwrap_err();
        assert!(
            e.to_string().contains("argument `b` is a f16 buffer"),
            "{e}"
        );
        let e = gemm(F16, F16, Bf16).unwrap_err();
        assert!(e.to_string().contains("argument `c`"), "{e}");
        assert!(matches!(
            gemm(F32, F32, Bf16),
            Err(KernelError::Type { arg: "c", .. })
        ));
        let add = Kernel::VectorAdd.check_types(&[Some(F32), Some(Bf16), Some(F32), None]);
        assert!(
            add.unwrap_err()
                .to_string()
                .contains("argument `b` is a bf16 buffer")
        );
        assert!(
            Kernel::Saxpy
                .check_types(&[None, Some(F32), Some(F32), None])
                .is_ok()
        );
    }
}
