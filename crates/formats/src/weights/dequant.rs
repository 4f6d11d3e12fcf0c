//! Dequantisation of GGML tensor types to f32, block by block, following llama.cpp's
//! reference formulas (`ggml-quants.c`: `dequantize_row_*`).

use half::bf16;

#[cfg(target_arch = "x86_64")]
pub mod x86;

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

    /// Whether the integer form of a block has offsets besides scales (Q4_K's mins).
    pub fn has_offsets(self) -> bool {
        matches!(self, GgmlType::Q4K)
    }

    /// How many offsets the integer form of `values` values has (0 without offsets).
    pub fn offsets(self, values: usize) -> usize {
        if self.has_offsets() {
            values / OFFSET_GROUP
        } else {
            0
        }
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

/// `values` (a whole number of blocks of 32) as Q8_0 blocks, as llama.cpp's
/// `quantize_row_q8_0_ref` makes them: per block `d = max|x| / 127` stored as f16, values
/// `round(x / d)` (0 for a block of zeros). Each value comes back within `d·(½ + 127·2⁻¹¹)`.
///
/// # Panics
/// If `values.len()` is not a multiple of 32.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    assert!(values.len().is_multiple_of(32), "{} values", values.len());
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(
            block
                .iter()
                .map(|&v| ((v * inverse).round() as i8).cast_unsigned()),
        );
    }
    out
}

/// Values that share one scale in the integer form of a block ([`decode_row_int`]).
pub const SCALE_GROUP: usize = 16;

/// Values that share one offset in the integer form of a block ([`decode_row_int`]).
pub const OFFSET_GROUP: usize = 32;

/// Values per block of the largest block type (Q4_K, Q6_K).
const MAX_BLOCK: usize = 256;

/// Decodes whole blocks of `kind` from `bytes` into `out` (`values per block` values each).
///
/// Quantised kinds go through their integer form ([`decode_row_int`], the one definition of
/// each block layout), a block at a time: `out[i] = scales[i / 16] · q[i] (+ offsets[i / 32])`,
/// the same floats llama.cpp's `dequantize_row_*` computes. It is inlined into its callers so
/// that a caller compiled for a wider instruction set (AVX2, AVX-512) gets these loops
/// vectorised for it; the values are the same in every build (no fused multiply-add, each value
/// computed alone).
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
    let chunks = bytes.chunks_exact(size).zip(out.chunks_exact_mut(values));
    match kind {
        GgmlType::F32 => {
            for (b, o) in chunks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in chunks {
                o[0] = half_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, o) in chunks {
                o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            let mut q = [0i8; MAX_BLOCK];
            let mut scales = [0.0f32; MAX_BLOCK / SCALE_GROUP];
            let mut offsets = [0.0f32; MAX_BLOCK / OFFSET_GROUP];
            let (q, scales) = (&mut q[..values], &mut scales[..values / SCALE_GROUP]);
            let offsets = &mut offsets[..kind.offsets(values)];
            for (b, o) in chunks {
                decode_row_int(kind, b, q, scales, offsets);
                for ((o, q), &s) in o
                    .chunks_exact_mut(SCALE_GROUP)
                    .zip(q.chunks_exact(SCALE_GROUP))
                    .zip(scales.iter())
                {
                    for j in 0..SCALE_GROUP {
                        o[j] = s * f32::from(q[j]);
                    }
                }
                // Q4_K: `d·sc·q − dmin·m`, as `d·sc·q + (−dmin·m)` (the same float).
                for (o, &m) in o.chunks_exact_mut(OFFSET_GROUP).zip(offsets.iter()) {
                    for v in o {
                        *v += m;
                    }
                }
            }
        }
    }
}

/// Decodes whole blocks of a quantised `kind` into their integer form: value `i` of the row is
/// `scales[i / 16] · q[i] + offsets[i / 32]` (exactly, in real arithmetic), with
/// `|q[i]| ≤ 128`. `offsets` is empty for kinds without ([`GgmlType::has_offsets`]). The one
/// definition of every block layout, following llama.cpp's `dequantize_row_*`; the CPU
/// kernels multiply from this form with integer dot products.
///
/// # Panics
/// If `kind` is not quantised or a slice's length does not match `bytes`.
#[inline(always)]
pub fn decode_row_int(
    kind: GgmlType,
    bytes: &[u8],
    q: &mut [i8],
    scales: &mut [f32],
    offsets: &mut [f32],
) {
    let blocks = int_blocks(kind, bytes, q, scales, offsets);
    macro_rules! each_block {
        ($decode:expr) => {
            for ((b, q), s) in blocks {
                $decode(b, q, s);
            }
        };
    }
    match kind {
        GgmlType::Q4_0 => each_block!(q4_0),
        GgmlType::Q5_0 => each_block!(q5_0),
        GgmlType::Q8_0 => each_block!(q8_0),
        GgmlType::Q4K => {
            for (((b, q), s), m) in
                blocks.zip(offsets.chunks_exact_mut(kind.offsets(kind.block().0)))
            {
                q4_k(b, q, s, m);
            }
        }
        GgmlType::Q6K => each_block!(q6_k),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            panic!("{kind:?} has no integer form")
        }
    }
}

/// Each block of `bytes` with the part of `q` and `scales` it decodes into, after checking
/// that the lengths agree (`offsets` has [`GgmlType::offsets`] values).
///
/// # Panics
/// If they do not, naming `kind`.
#[inline(always)]
fn int_blocks<'a>(
    kind: GgmlType,
    bytes: &'a [u8],
    q: &'a mut [i8],
    scales: &'a mut [f32],
    offsets: &[f32],
) -> impl Iterator<Item = ((&'a [u8], &'a mut [i8]), &'a mut [f32])> + use<'a> {
    let (values, size) = kind.block();
    assert_eq!(bytes.len() / size * values, q.len(), "{kind:?} row size");
    assert_eq!(q.len(), scales.len() * SCALE_GROUP, "{kind:?} scales");
    assert_eq!(offsets.len(), kind.offsets(q.len()), "{kind:?} offsets");
    bytes
        .chunks_exact(size)
        .zip(q.chunks_exact_mut(values))
        .zip(scales.chunks_exact_mut(values / SCALE_GROUP))
}

#[inline(always)]
fn q8_0(block: &[u8], q: &mut [i8], scales: &mut [f32]) {
    let d = half_at(block, 0);
    scales[..2].fill(d);
    let values: [u8; 32] = block[2..34].try_into().expect("32 bytes");
    let q: &mut [i8; 32] = (&mut q[..32]).try_into().expect("32 values");
    *q = values.map(u8::cast_signed);
}

#[inline(always)]
fn q4_0(block: &[u8], q: &mut [i8], scales: &mut [f32]) {
    scales[..2].fill(half_at(block, 0));
    let qs = &block[2..18];
    let (low, high) = q[..32].split_at_mut(16);
    for j in 0..16 {
        low[j] = (qs[j] & 0x0F) as i8 - 8;
        high[j] = (qs[j] >> 4) as i8 - 8;
    }
}

#[inline(always)]
fn q5_0(block: &[u8], q: &mut [i8], scales: &mut [f32]) {
    scales[..2].fill(half_at(block, 0));
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..22];
    let (low, high) = q[..32].split_at_mut(16);
    for j in 0..16 {
        let bit_low = (((qh >> j) << 4) & 0x10) as u8;
        let bit_high = ((qh >> (j + 12)) & 0x10) as u8;
        low[j] = ((qs[j] & 0x0F) | bit_low) as i8 - 16;
        high[j] = ((qs[j] >> 4) | bit_high) as i8 - 16;
    }
}

/// A Q4_K block's eight 6-bit sub-block scales and eight mins (the values of sub-block `j`
/// are `d·scales[j]·q − dmin·mins[j]`).
#[inline(always)]
pub fn q4_k_scale_mins(block: &[u8]) -> ([u8; 8], [u8; 8]) {
    let packed = &block[4..16];
    let (mut scales, mut mins) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (scales[j], mins[j]) = scale_min_k4(j, packed);
    }
    (scales, mins)
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
fn q4_k(block: &[u8], q: &mut [i8], scales: &mut [f32], offsets: &mut [f32]) {
    q4_k_scales(block, scales, offsets);
    for (nibbles, q) in block[16..144]
        .chunks_exact(32)
        .zip(q[..256].chunks_exact_mut(64))
    {
        let (low, high) = q.split_at_mut(32);
        for j in 0..32 {
            low[j] = (nibbles[j] & 0x0F) as i8;
            high[j] = (nibbles[j] >> 4) as i8;
        }
    }
}

/// A Q4_K block's 16 scales (each sub-block's `d·sc`, twice) and 8 offsets (`−dmin·m`).
#[inline(always)]
fn q4_k_scales(block: &[u8], scales: &mut [f32], offsets: &mut [f32]) {
    let d = half_at(block, 0);
    let dmin = half_at(block, 2);
    let (sc, m) = q4_k_scale_mins(block);
    for (j, (scales, offset)) in scales[..16]
        .chunks_exact_mut(2)
        .zip(&mut offsets[..8])
        .enumerate()
    {
        scales.fill(d * f32::from(sc[j]));
        *offset = -(dmin * f32::from(m[j]));
    }
}

#[inline(always)]
fn q6_k(block: &[u8], q: &mut [i8], scales: &mut [f32]) {
    q6_k_scales(block, scales);
    let (ql_all, qh_all) = (&block[0..128], &block[128..192]);
    for half in 0..2 {
        let y = &mut q[128 * half..128 * half + 128];
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        for l in 0..32 {
            y[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

/// A Q6_K block's 16 scales: sixteen consecutive values share each `d·sc`.
#[inline(always)]
fn q6_k_scales(block: &[u8], scales: &mut [f32]) {
    let d = half_at(block, 208);
    for (s, &sc) in scales[..16].iter_mut().zip(&block[192..208]) {
        *s = d * f32::from(sc as i8);
    }
}

#[cfg(test)]
mod tests {
    use super::{GgmlType, SCALE_GROUP, decode_row_int, half_at};

    #[test]
    fn q8_0_quantisation_round_trips_within_its_bound() {
        let mut values: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        values[32..64].fill(0.0);
        values[70] = -1e6;
        let bytes = super::quantize_q8_0(&values);
        assert_eq!(bytes.len(), 8 * 34);
        let back = super::dequantize(&bytes, GgmlType::Q8_0);
        for (b, (x, y)) in values
            .chunks_exact(32)
            .zip(back.chunks_exact(32))
            .enumerate()
        {
            let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                let bound = d * (0.5 + 127.0 / 2048.0);
                assert!(
                    (x - y).abs() <= bound,
                    "block {b} value {i}: {x} came back {y}"
                );
            }
        }
        // One hand-computed block: max 127 gives d = 1 and the values themselves.
        let ramp: Vec<f32> = (0..32).map(|i| (127 - 8 * i) as f32).collect();
        let bytes = super::quantize_q8_0(&ramp);
        assert_eq!(&bytes[..2], &half::f16::from_f32(1.0).to_le_bytes());
        assert_eq!(
            bytes[2..]
                .iter()
                .map(|&b| b as i8 as f32)
                .collect::<Vec<_>>(),
            ramp
        );
    }

    /// A decoder of a row into its integer form, writing `(q, scales, offsets)`.
    #[cfg(target_arch = "x86_64")]
    type DecodeInt<'a> = &'a dyn Fn(&mut [i8], &mut [f32], &mut [f32]);

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_decoders_give_the_portable_integers_and_scales() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")) {
            eprintln!("no AVX2 + F16C here: nothing to compare");
            return;
        }
        let kinds = [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for kind in kinds {
            let (values, size) = kind.block();
            // Random bytes, scales included (NaNs and infinities too: compared as bits).
            let bytes: Vec<u8> = (0..7 * size)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            let n = 7 * values;
            let offsets = kind.offsets(n);
            let run = |decode: DecodeInt| {
                let (mut q, mut s, mut o) = (
                    vec![0i8; n],
                    vec![0f32; n / SCALE_GROUP],
                    vec![0f32; offsets],
                );
                decode(&mut q, &mut s, &mut o);
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                (q, bits(s), bits(o))
            };
            let portable = run(&|q, s, o| decode_row_int(kind, &bytes, q, s, o));
            // SAFETY: AVX2 and F16C are available (checked above).
            let avx2 = run(&|q, s, o| unsafe { super::x86::decode_row_int(kind, &bytes, q, s, o) });
            assert_eq!(avx2, portable, "{kind:?}");
        }
    }

    #[test]
    fn half_conversion_matches_the_half_crate_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let ours = half_at(&bits.to_le_bytes(), 0);
            let theirs = half::f16::from_bits(bits).to_f32();
            assert_eq!(ours.to_bits(), theirs.to_bits(), "f16 bits {bits:#06x}");
        }
    }
}
