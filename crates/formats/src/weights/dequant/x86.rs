//! [`decode_row_int`](super::decode_row_int) with AVX2 and F16C: the same integers and scales,
//! bit for bit (checked against the portable decoders on random blocks), sixteen to thirty-two
//! values per instruction instead of one. Scales that need more than a widening (Q4_K's packed
//! 6-bit ones, Q6_K's sixteen) come from the portable code.

use std::arch::x86_64::*;

use super::{GgmlType, int_blocks, q4_k_scales, q6_k_scales};

/// [`decode_row_int`](super::decode_row_int) for Q4_0, Q5_0, Q8_0, Q4_K and Q6_K.
///
/// # Safety
/// The machine must run AVX2 and F16C (`is_x86_feature_detected!`).
///
/// # Panics
/// As [`decode_row_int`](super::decode_row_int).
#[target_feature(enable = "avx2,f16c")]
pub fn decode_row_int(
    kind: GgmlType,
    bytes: &[u8],
    q: &mut [i8],
    scales: &mut [f32],
    offsets: &mut [f32],
) {
    if !kind.is_quantised() {
        return super::decode_row_int(kind, bytes, q, scales, offsets);
    }
    let blocks = int_blocks(kind, bytes, q, scales, offsets);
    match kind {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => {
            for ((b, q), s) in blocks {
                prefetch(b);
                s.fill(half(b));
                store(q, 0, block32_values(kind, b));
            }
        }
        GgmlType::Q4K => {
            for (((b, q), s), m) in blocks.zip(offsets.chunks_exact_mut(8)) {
                prefetch(b);
                q4_k_scales(b, s, m);
                for (k, v) in q4_k_values(b).into_iter().enumerate() {
                    store(q, 32 * k, v);
                }
            }
        }
        GgmlType::Q6K => {
            for ((b, q), s) in blocks {
                prefetch(b);
                q6_k_scales(b, s);
                for (k, v) in q6_k_values(b).into_iter().enumerate() {
                    store(q, 32 * k, v);
                }
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!("returned above"),
    }
}

/// The 32 integers of a Q4_0, Q5_0 or Q8_0 block (32 values, one f16 scale at its start), as
/// signed bytes (the values are these times the block's [`half`] scale).
///
/// # Panics
/// If `kind` is not one of these types or `block` is shorter than its block.
///
/// # Safety
/// The machine must run AVX2 (`is_x86_feature_detected!`).
#[target_feature(enable = "avx2")]
#[inline]
pub fn block32_values(kind: GgmlType, block: &[u8]) -> __m256i {
    match kind {
        GgmlType::Q8_0 => load(&block[2..34]),
        GgmlType::Q4_0 => _mm256_sub_epi8(nibbles(&block[2..18]), _mm256_set1_epi8(8)),
        GgmlType::Q5_0 => {
            let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            // A clear fifth bit makes the value nibble − 16, that is nibble | 0xF0.
            let minus = _mm256_andnot_si256(bytes_from_bits(high), _mm256_set1_epi8(-16));
            _mm256_or_si256(nibbles(&block[6..22]), minus)
        }
        _ => panic!("{kind:?} is not a type of 32-value blocks with one scale"),
    }
}

/// The 256 4-bit values of a Q4_K block (0 to 15, before its scales and mins) as eight
/// vectors of 32 bytes, in order.
///
/// # Panics
/// If `block` is shorter than 144 bytes.
///
/// # Safety
/// The machine must run AVX2 (`is_x86_feature_detected!`).
#[target_feature(enable = "avx2")]
#[inline]
pub fn q4_k_values(block: &[u8]) -> [__m256i; 8] {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let mut values = [_mm256_setzero_si256(); 8];
    for (chunk, packed) in block[16..144].chunks_exact(32).enumerate() {
        let v = load(packed);
        values[2 * chunk] = _mm256_and_si256(v, low_nibble);
        values[2 * chunk + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibble);
    }
    values
}

/// The 256 values of a Q6_K block (−32 to 31, before its scales) as eight vectors of 32
/// signed bytes, in order.
///
/// # Panics
/// If `block` is shorter than 192 bytes.
///
/// # Safety
/// The machine must run AVX2 (`is_x86_feature_detected!`).
#[target_feature(enable = "avx2")]
#[inline]
pub fn q6_k_values(block: &[u8]) -> [__m256i; 8] {
    let (m4, m30, bias) = (
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(0x30),
        _mm256_set1_epi8(32),
    );
    let mut values = [_mm256_setzero_si256(); 8];
    for half in 0..2 {
        let ql0 = load(&block[64 * half..64 * half + 32]);
        let ql1 = load(&block[64 * half + 32..64 * half + 64]);
        let qh = load(&block[128 + 32 * half..128 + 32 * half + 32]);
        // 16-bit shifts: the bits they carry across bytes are masked off.
        let parts = [
            (_mm256_and_si256(ql0, m4), _mm256_slli_epi16(qh, 4)),
            (_mm256_and_si256(ql1, m4), _mm256_slli_epi16(qh, 2)),
            (_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), qh),
            (
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                _mm256_srli_epi16(qh, 2),
            ),
        ];
        for (k, (low, high)) in parts.into_iter().enumerate() {
            let v = _mm256_or_si256(low, _mm256_and_si256(high, m30));
            values[4 * half + k] = _mm256_sub_epi8(v, bias);
        }
    }
    values
}

/// Bytes ahead of the block being decoded that are asked into the cache: a decoded row
/// streams its weight from memory once, and the hardware prefetcher alone keeps too few
/// loads in flight.
const PREFETCH_AHEAD: usize = 4096;

/// Asks for the cache lines `PREFETCH_AHEAD` bytes past each 64 of `block` (hints: no fault
/// past the end of the weight).
///
/// # Safety
/// The machine must run AVX2 (`is_x86_feature_detected!`).
#[target_feature(enable = "avx2")]
#[inline]
pub fn prefetch(block: &[u8]) {
    for offset in (0..block.len()).step_by(64) {
        let ahead = block.as_ptr().wrapping_add(PREFETCH_AHEAD + offset);
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
    }
}

/// The block's leading f16 scale, widened by F16C (exact, as the portable `half_at`).
///
/// # Safety
/// The machine must run AVX2 and F16C (`is_x86_feature_detected!`).
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub fn half(block: &[u8]) -> f32 {
    let bits = i32::from(u16::from_le_bytes([block[0], block[1]]));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

/// 32 bytes of `bytes` (at least 32 long).
#[target_feature(enable = "avx2")]
#[inline]
fn load(bytes: &[u8]) -> __m256i {
    assert!(bytes.len() >= 32);
    // SAFETY: 32 readable bytes (asserted); an unaligned load.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// Writes `v` to `q[at..at + 32]`.
#[target_feature(enable = "avx2")]
#[inline]
fn store(q: &mut [i8], at: usize, v: __m256i) {
    let out = &mut q[at..at + 32];
    // SAFETY: 32 writable bytes (the slice above); an unaligned store.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// 16 bytes of packed nibbles as 32 values: the low nibbles, then the high ones.
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles(packed: &[u8]) -> __m256i {
    assert!(packed.len() >= 16);
    // SAFETY: 16 readable bytes (asserted); an unaligned load.
    let v = unsafe { _mm_loadu_si128(packed.as_ptr().cast()) };
    let low_nibble = _mm_set1_epi8(0x0F);
    let low = _mm_and_si128(v, low_nibble);
    let high = _mm_and_si128(_mm_srli_epi16(v, 4), low_nibble);
    _mm256_set_m128i(high, low)
}

/// Byte `v` is 0xFF where bit `v` of `bits` is set, 0 elsewhere.
#[target_feature(enable = "avx2")]
#[inline]
fn bytes_from_bits(bits: u32) -> __m256i {
    // Byte v of the spread holds byte v / 8 of `bits`.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    // Every bit but bit v % 8 forced on: all ones exactly where that bit was set.
    let others = _mm256_set1_epi64x(i64::from_le_bytes([!1u8, !2, !4, !8, !16, !32, !64, !128]));
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}
