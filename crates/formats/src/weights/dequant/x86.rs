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
        GgmlType::Q8_0 => {
            for ((b, q), s) in blocks {
                prefetch(b);
                s.fill(half(b));
                store(q, 0, load(&b[2..34]));
            }
        }
        GgmlType::Q4_0 => {
            for ((b, q), s) in blocks {
                prefetch(b);
                s.fill(half(b));
                store(
                    q,
                    0,
                    _mm256_sub_epi8(nibbles(&b[2..18]), _mm256_set1_epi8(8)),
                );
            }
        }
        GgmlType::Q5_0 => {
            for ((b, q), s) in blocks {
                prefetch(b);
                s.fill(half(b));
                let high = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                // A clear fifth bit makes the value nibble − 16, that is nibble | 0xF0.
                let minus = _mm256_andnot_si256(bytes_from_bits(high), _mm256_set1_epi8(-16));
                store(q, 0, _mm256_or_si256(nibbles(&b[6..22]), minus));
            }
        }
        GgmlType::Q4K => {
            for (((b, q), s), m) in
                blocks.zip(offsets.chunks_exact_mut(kind.offsets(kind.block().0)))
            {
                prefetch(b);
                q4_k_scales(b, s, m);
                let low_nibble = _mm256_set1_epi8(0x0F);
                for (chunk, packed) in b[16..144].chunks_exact(32).enumerate() {
                    let v = load(packed);
                    store(q, 64 * chunk, _mm256_and_si256(v, low_nibble));
                    let high = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibble);
                    store(q, 64 * chunk + 32, high);
                }
            }
        }
        GgmlType::Q6K => {
            for ((b, q), s) in blocks {
                prefetch(b);
                q6_k_scales(b, s);
                let (m4, m30, bias) = (
                    _mm256_set1_epi8(0x0F),
                    _mm256_set1_epi8(0x30),
                    _mm256_set1_epi8(32),
                );
                for half in 0..2 {
                    let ql0 = load(&b[64 * half..64 * half + 32]);
                    let ql1 = load(&b[64 * half + 32..64 * half + 64]);
                    let qh = load(&b[128 + 32 * half..128 + 32 * half + 32]);
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
                        store(q, 128 * half + 32 * k, _mm256_sub_epi8(v, bias));
                    }
                }
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!("returned above"),
    }
}

/// Bytes ahead of the block being decoded that are asked into the cache: a decoded row
/// streams its weight from memory once, and the hardware prefetcher alone keeps too few
/// loads in flight.
const PREFETCH_AHEAD: usize = 4096;

/// Asks for the cache lines `PREFETCH_AHEAD` bytes past each 64 of `block` (hints: no fault
/// past the end of the weight).
#[target_feature(enable = "avx2")]
#[inline]
fn prefetch(block: &[u8]) {
    for offset in (0..block.len()).step_by(64) {
        let ahead = block.as_ptr().wrapping_add(PREFETCH_AHEAD + offset);
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
    }
}

/// The block's leading f16 scale, widened by F16C (exact, as the portable `half_at`).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn half(block: &[u8]) -> f32 {
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
