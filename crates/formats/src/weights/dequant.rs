//! Dequantisation of GGML tensor types to f32, block by block, following llama.cpp's
//! reference formulas (`ggml-quants.c`: `dequantize_row_*`).

use half::bf16;

/// GGML tensor types this reader supports, with their GGUF type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32.
    F32,
    /// 1: f16.
    F16,
    /// 2: 32 values, f16 scale, 4-bit offsets from 8.
    Q4_0,
    /// 6: 32 values, f16 scale, 5-bit offsets from 16.
    Q5_0,
    /// 8: 32 values, f16 scale, i8 values.
    Q8_0,
    /// 12: 256 values in 8 sub-blocks with 6-bit scales and mins, 4-bit values.
    Q4K,
    /// 14: 256 values in 16 sub-blocks with i8 scales, 6-bit values.
    Q6K,
    /// 30: bfloat16.
    BF16,
}

impl GgmlType {
    /// The type for a GGUF type id, or `None` if unsupported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            6 => GgmlType::Q5_0,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// Whether values are stored in scaled blocks (every type but F32, F16 and BF16).
    pub fn is_quantised(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q6K => (256, 210),
        }
    }
}

/// The little-endian f16 at `at`, widened exactly. Written out rather than calling `half`, whose
/// conversion checks the CPU at run time on every call: this inlines into the block decoders.
#[inline(always)]
fn half_at(bytes: &[u8], at: usize) -> f32 {
    let h = u32::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1F;
    let mantissa = h & 0x3FF;
    let magnitude = match (exponent, mantissa) {
        // ±0 and subnormals: mantissa · 2⁻²⁴, exact in f32.
        (0, _) => {
            let v = mantissa as f32 * f32::from_bits(0x3380_0000);
            return if sign == 0 { v } else { -v };
        }
        (0x1F, 0) => 0x7F80_0000,
        // NaNs come out quiet with their payload, as F16C's conversion gives them.
        (0x1F, _) => 0x7FC0_0000 | (mantissa << 13),
        _ => ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// Dequantises `bytes` (a whole number of blocks) of type `kind` into f32 values.
pub fn dequantize(bytes: &[u8], kind: GgmlType) -> Vec<f32> {
    let (values, size) = kind.block();
    let mut out = vec![0.0; bytes.len() / size * values];
    decode_row(kind, bytes, &mut out);
    out
}

/// Decodes whole blocks of `kind` from `bytes` into `out` (`values per block` values each).
///
/// The one definition of every block layout: [`dequantize`] and the CPU kernels that multiply
/// straight from the blocks both call it. It is inlined into its callers so that a caller
/// compiled for a wider instruction set (AVX2, AVX-512) gets these loops vectorised for it; the
/// values are the same in every build (no fused multiply-add, each value computed alone).
///
/// # Panics
/// If `out.len()` is not `bytes.len() / bytes per block · values per block`.
#[inline(always)]
pub fn decode_row(kind: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (values, size) = kind.block();
    let count = bytes.len() / size;
    assert_eq!(count * values, out.len(), "{kind:?} row size");
    // `for` loops over exact chunks rather than closures handed to iterator adapters: they
    // inline into the caller for certain (so a caller compiled for AVX-512 vectorises the block
    // decoders for it) and need no bounds checks per block.
    macro_rules! each_block {
        ($decode:expr) => {
            for (b, o) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(values)) {
                $decode(b, o);
            }
        };
    }
    match kind {
        GgmlType::F32 => each_block!(
            |b: &[u8], o: &mut [f32]| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        ),
        GgmlType::F16 => each_block!(|b: &[u8], o: &mut [f32]| o[0] = half_at(b, 0)),
        GgmlType::BF16 => {
            each_block!(|b: &[u8], o: &mut [f32]| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32())
        }
        GgmlType::Q4_0 => each_block!(q4_0),
        GgmlType::Q5_0 => each_block!(q5_0),
        GgmlType::Q8_0 => each_block!(q8_0),
        GgmlType::Q4K => each_block!(q4_k),
        GgmlType::Q6K => each_block!(q6_k),
    }
}

#[inline(always)]
fn q8_0(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let (qs, out) = (&block[2..34], &mut out[..32]);
    for j in 0..32 {
        out[j] = d * f32::from(qs[j] as i8);
    }
}

#[inline(always)]
fn q4_0(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let qs = &block[2..18];
    let (low, high) = out[..32].split_at_mut(16);
    for j in 0..16 {
        low[j] = d * (f32::from(qs[j] & 0x0F) - 8.0);
        high[j] = d * (f32::from(qs[j] >> 4) - 8.0);
    }
}

#[inline(always)]
fn q5_0(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..22];
    let (low, high) = out[..32].split_at_mut(16);
    for j in 0..16 {
        let bit_low = ((qh >> j) << 4) & 0x10;
        let bit_high = (qh >> (j + 12)) & 0x10;
        // Small integers: converting from i32 (one instruction) gives the same floats as u32.
        low[j] = d * ((i32::from(qs[j] & 0x0F) | bit_low as i32) as f32 - 16.0);
        high[j] = d * ((i32::from(qs[j] >> 4) | bit_high as i32) as f32 - 16.0);
    }
}

/// The 6-bit scale and min of sub-block `j` packed in Q4_K's 12 scale bytes.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[inline(always)]
fn q4_k(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let dmin = half_at(block, 2);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (chunk, (q, o)) in qs
        .chunks_exact(32)
        .zip(out[..256].chunks_exact_mut(64))
        .enumerate()
    {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (low, high) = o.split_at_mut(32);
        for j in 0..32 {
            low[j] = d1 * f32::from(q[j] & 0x0F) - min1;
            high[j] = d2 * f32::from(q[j] >> 4) - min2;
        }
    }
}

#[inline(always)]
fn q6_k(block: &[u8], out: &mut [f32]) {
    let ql_all = &block[0..128];
    let qh_all = &block[128..192];
    let sc_all = &block[192..208];
    let d = half_at(block, 208);
    for half in 0..2 {
        let y = &mut out[128 * half..128 * half + 128];
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        // Sixteen values share a scale: sub-block `is` of each quarter.
        for is in 0..2 {
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            let (s0, s2, s4, s6) = (scale(0), scale(2), scale(4), scale(6));
            for l in 16 * is..16 * is + 16 {
                let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = s0 * q1 as f32;
                y[l + 32] = s2 * q2 as f32;
                y[l + 64] = s4 * q3 as f32;
                y[l + 96] = s6 * q4 as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::half_at;

    #[test]
    fn half_conversion_matches_the_half_crate_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let ours = half_at(&bits.to_le_bytes(), 0);
            let theirs = half::f16::from_bits(bits).to_f32();
            assert_eq!(ours.to_bits(), theirs.to_bits(), "f16 bits {bits:#06x}");
        }
    }
}
