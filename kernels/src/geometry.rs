//! Launch geometry for the CUDA kernels: grid and block sizes from the
//! shape arguments. Pure, so it is tested here without a GPU.

use crate::Kernel;

/// Threads per block for every built-in kernel (a multiple of 32, as the
/// block reductions in `cuda/builtin.cu` require).
pub const BLOCK: u32 = 256;

/// Blocks at most for the grid-stride kernels: enough to fill a large GPU
/// several times over.
pub const MAX_GRID: u32 = 8192;

/// A launch's grid and block (x dimension only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub grid: u32,
    pub block: u32,
}

fn stride_grid(n: u32, cap: u32) -> u32 {
    n.div_ceil(BLOCK).clamp(1, cap)
}

/// The grid of a grid-stride kernel over `a · b` elements.
fn stride_grid_of(a: u32, b: u32) -> u32 {
    let n = u64::from(a) * u64::from(b);
    stride_grid(u32::try_from(n).unwrap_or(u32::MAX), MAX_GRID)
}

impl Kernel {
    /// The geometry for a launch whose shape arguments (the `u32`
    /// parameters, in order) are `shape`.
    pub fn geometry(self, shape: &[u32]) -> Geometry {
        let first = shape.first().copied().unwrap_or(0);
        let s = |i: usize| shape.get(i).copied().unwrap_or(0);
        let grid = match self {
            Kernel::VectorAdd | Kernel::Saxpy | Kernel::Swiglu | Kernel::Copy => {
                stride_grid(first, MAX_GRID)
            }
            Kernel::Embedding => stride_grid_of(s(0), s(2)),
            // One thread per rotated pair.
            Kernel::Rope => stride_grid_of(s(0), s(1).saturating_mul(s(2) / 2)),
            // One block per query row and head (checked small enough by
            // the kernel's requirements).
            Kernel::Attention => s(0).saturating_mul(s(2)).max(1),
            Kernel::ReduceSum => stride_grid(first, 1024),
            // One block per row.
            Kernel::Softmax | Kernel::Rmsnorm => first.max(1),
            // cuBLAS chooses its own.
            Kernel::Gemm => 1,
        };
        Geometry { grid, block: BLOCK }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_the_work_and_stay_bounded() {
        assert_eq!(
            Kernel::VectorAdd.geometry(&[1]),
            Geometry {
                grid: 1,
                block: 256
            }
        );
        assert_eq!(Kernel::VectorAdd.geometry(&[257]).grid, 2);
        assert_eq!(Kernel::Saxpy.geometry(&[u32::MAX]).grid, MAX_GRID);
        assert_eq!(Kernel::ReduceSum.geometry(&[1 << 30]).grid, 1024);
        assert_eq!(Kernel::Softmax.geometry(&[300, 7]).grid, 300);
        assert_eq!(Kernel::Rmsnorm.geometry(&[0, 7]).grid, 1);
        assert_eq!(Kernel::Embedding.geometry(&[3, 256, 100]).grid, 2);
        assert_eq!(Kernel::Rope.geometry(&[4, 8, 64, 0]).grid, 4);
        assert_eq!(Kernel::Attention.geometry(&[5, 16, 4, 2, 16, 0]).grid, 20);
        assert_eq!(Kernel::Copy.geometry(&[u32::MAX, 0, 0]).grid, MAX_GRID);
    }
}
