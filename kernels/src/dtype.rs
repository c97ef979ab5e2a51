//! Element types of `gpu` buffers and the conversions between them.
//!
//! A buffer holds `f32`, `bf16` or `f16` elements. The 16-bit types are kept
//! as their raw bits (`u16`), in device memory exactly as the tensor cores
//! read them. Narrowing rounds to nearest even, as the device does; widening
//! is exact. What it is not: arithmetic in 16 bits: every kernel computes in
//! `f32` (or `f64` in the CPU reference).

use half::{bf16, f16};

/// The element type of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// bfloat16: `f32`'s exponent range with 8 bits of precision.
    Bf16,
    /// IEEE binary16: 11 bits of precision, range ±65504.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }

    /// The name in messages and the WIT interface.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
        }
    }

    /// Whether elements are stored as 16-bit patterns.
    pub fn is_16_bit(self) -> bool {
        self != DType::F32
    }

    /// Rounds `values` to this 16-bit type (nearest even). `F32` has no
    /// 16-bit form; callers keep `f32` data as it is.
    pub fn narrow(self, values: &[f32]) -> Vec<u16> {
        match self {
            DType::Bf16 => values
                .iter()
                .map(|v| bf16::from_f32(*v).to_bits())
                .collect(),
            DType::F16 => values.iter().map(|v| f16::from_f32(*v).to_bits()).collect(),
            DType::F32 => unreachable!("f32 values are stored as they are"),
        }
    }

    /// The `f32` value of each 16-bit pattern (exact).
    pub fn widen(self, bits: &[u16]) -> Vec<f32> {
        match self {
            DType::Bf16 => bits.iter().map(|b| bf16::from_bits(*b).to_f32()).collect(),
            DType::F16 => bits.iter().map(|b| f16::from_bits(*b).to_f32()).collect(),
            DType::F32 => unreachable!("f32 buffers hold f32 values"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_rounds_to_nearest_even_and_widening_is_exact() {
        // 1 + 2^-8 lies halfway between two bf16 values: it rounds to the
        // even one (1.0); 1 + 3·2^-9 rounds up to 1 + 2^-7.
        let v = [1.0, 1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-9), -2.5];
        let bits = DType::Bf16.narrow(&v);
        assert_eq!(bits, [0x3f80, 0x3f80, 0x3f81, 0xc020]);
        assert_eq!(
            DType::Bf16.widen(&bits),
            [1.0, 1.0, 1.0 + 2f32.powi(-7), -2.5]
        );
        let bits = DType::F16.narrow(&[1.0, 65504.0, 1e6, 0.1]);
        assert_eq!(bits[..3], [0x3c00, 0x7bff, 0x7c00]); // 1e6 overflows to +inf
        assert!((DType::F16.widen(&bits)[3] - 0.1).abs() < 1e-4);
        for t in [DType::Bf16, DType::F16] {
            let all: Vec<u16> = (0..=u16::MAX).collect();
            let back = t.narrow(&t.widen(&all));
            for (b, r) in all.iter().zip(&back) {
                // Every pattern survives a round trip, NaNs as some NaN.
                let nan = t.widen(&[*b])[0].is_nan();
                assert!(nan || b == r, "{} {b:#06x} -> {r:#06x}", t.name());
            }
        }
        assert_eq!(DType::F32.size() + DType::Bf16.size(), 6);
    }
}
