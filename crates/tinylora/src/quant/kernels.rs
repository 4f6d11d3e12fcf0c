//! The CPU kernels behind [`QMatrix::matmul`] and [`QMatrix::matmul_t`], on rayon's threads.
//!
//! Few rows of `x` (decoding, as llama.cpp does): `x` is quantised to 8 bits per 32 values
//! ([`Q8Rows`]), each row of the weight is decoded into its integer form (i8 values, a scale per
//! 16, an offset per 32: `decode_row_int`, with AVX2 where the machine has it) in a buffer that
//! stays in the core's first-level cache, and the two are multiplied with integer dot products
//! — AVX-512 VNNI (`vpdpbusd`) or AVX2 (`vpmaddubsw`) chosen at run time, portable Rust
//! elsewhere (NEON on aarch64 by the compiler) — one float multiply-add per 16 values. With
//! AVX2, quantised rows skip the buffer: each block is unpacked in registers and multiplied at
//! once (Q4_0, Q5_0 and Q8_0 with the same float operations, so the same bits; Q4_K and Q6_K
//! with their integer scales inside the integer sums, one float multiply-add per 32 values, as
//! llama.cpp does). More rows (prefill, batched rollouts, gradients): a tile of the weight is
//! decoded into f32 and handed to gemm, activations stay f32.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::{Activations, QMatrix};
#[cfg(target_arch = "x86_64")]
use crate::weights::dequant::x86::decode_row_int as x86_decode_row_int;
use crate::weights::dequant::{GgmlType, OFFSET_GROUP, SCALE_GROUP, decode_row, decode_row_int};

/// Rows of the weight one task multiplies (each decoded once, into a buffer that stays in the
/// core's first-level cache, and multiplied with every row of `x`).
const TILE_ROWS: usize = 16;

/// Columns of `dx` one task of [`matmul_t`] owns (rounded to whole blocks).
const STRIPE_COLS: usize = 256;

/// Rows of `x` up to which [`QMatrix::matmul`] uses the integer dot-product kernel; more rows
/// amortise decoding a tile of the weight into f32 for gemm.
pub(super) const DOT_MAX_ROWS: usize = 32;

/// Floats in a decoded tile of the weight for gemm (1 MiB, a core's second-level cache on the
/// machine of BENCHMARKS.md): gemm packs all of `x` again for each tile, so larger tiles pack
/// it fewer times (prefill of 256 tokens, real model: 66–68 tok/s with 256 KiB tiles, 68–77
/// with 1 MiB, in alternating runs).
const TILE_FLOATS: usize = 1 << 18;

/// An instruction set the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64, scalar elsewhere).
    Baseline,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 (F, BW, DQ, VL, VNNI).
    Avx512,
}

impl Isa {
    /// The widest instruction set this machine runs, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            Isa::all()
                .into_iter()
                .rfind(|isa| isa.available())
                .unwrap_or(Isa::Baseline)
        })
    }

    /// Every instruction set, narrowest first.
    pub fn all() -> [Isa; 3] {
        [Isa::Baseline, Isa::Avx2, Isa::Avx512]
    }

    /// Whether this machine runs `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// A row in integer form: value `i` is `scales[i / 16] · q[i] + offsets[i / 32]`.
#[derive(Clone, Copy)]
pub(super) struct IntRow<'a> {
    /// `[cols]`.
    pub q: &'a [i8],
    /// `[cols / 16]`.
    pub scales: &'a [f32],
    /// `[cols / 32]`, or empty for none.
    pub offsets: &'a [f32],
}

/// Rows of `x` quantised to 8 bits per block of 32 values, as llama.cpp's Q8_0 with an f32
/// scale: `x̂ = d·round(x / d)`, `d = max|x| / 127` over the block, so `|x − x̂| ≤ d / 2`.
pub(super) struct Q8Rows {
    cols: usize,
    /// `[n, cols]`.
    q: Vec<i8>,
    /// `[n, cols / 16]`: each block's `d`, twice (lined up with the weight's scales).
    scales: Vec<f32>,
    /// `[n, cols / 32]`: each block's `d·Σq` (multiplied with the weight's offsets).
    sums: Vec<f32>,
}

impl Q8Rows {
    /// Quantises `x` (`[n, cols]`, `cols` a multiple of 32).
    pub fn new(x: &[f32], cols: usize) -> Self {
        assert!(cols.is_multiple_of(OFFSET_GROUP), "{cols} columns");
        let mut q = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(x.len() / SCALE_GROUP);
        let mut sums = Vec::with_capacity(x.len() / OFFSET_GROUP);
        for (block, q) in x
            .chunks_exact(OFFSET_GROUP)
            .zip(q.chunks_exact_mut(OFFSET_GROUP))
        {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
            let mut sum = 0i32;
            for (q, &v) in q.iter_mut().zip(block) {
                *q = (v * inverse).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(*q);
            }
            scales.extend([d, d]);
            sums.push(d * sum as f32);
        }
        Self {
            cols,
            q,
            scales,
            sums,
        }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> IntRow<'_> {
        let c = self.cols;
        IntRow {
            q: &self.q[i * c..(i + 1) * c],
            scales: &self.scales[i * c / SCALE_GROUP..(i + 1) * c / SCALE_GROUP],
            offsets: &self.sums[i * c / OFFSET_GROUP..(i + 1) * c / OFFSET_GROUP],
        }
    }
}

/// A task's rows of the weight decoded into integer form, reused from task to task.
struct IntBuffer {
    cols: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

impl IntBuffer {
    /// Room for [`TILE_ROWS`] rows of `m`.
    fn new(m: &QMatrix) -> Self {
        let values = TILE_ROWS * m.cols;
        Self {
            cols: m.cols,
            q: vec![0; values],
            scales: vec![0.0; values / SCALE_GROUP],
            offsets: vec![0.0; m.kind.offsets(values)],
        }
    }

    /// Decodes `rows` rows of `m` from `first`, with the decoder for `isa`.
    fn decode(&mut self, isa: Isa, m: &QMatrix, first: usize, rows: usize) {
        let bytes = &m.blocks[first * m.row_bytes..(first + rows) * m.row_bytes];
        let values = rows * self.cols;
        let q = &mut self.q[..values];
        let s = &mut self.scales[..values / SCALE_GROUP];
        let o = &mut self.offsets[..m.kind.offsets(values)];
        match isa {
            // SAFETY: `isa` is available: AVX2 and F16C (AVX-512 machines have both).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { x86_decode_row_int(m.kind, bytes, q, s, o) },
            _ => decode_row_int(m.kind, bytes, q, s, o),
        }
    }

    /// Decoded row `t`.
    fn row(&self, t: usize) -> IntRow<'_> {
        let c = self.cols;
        let offsets = if self.offsets.is_empty() {
            &[][..]
        } else {
            &self.offsets[t * c / OFFSET_GROUP..(t + 1) * c / OFFSET_GROUP]
        };
        IntRow {
            q: &self.q[t * c..(t + 1) * c],
            scales: &self.scales[t * c / SCALE_GROUP..(t + 1) * c / SCALE_GROUP],
            offsets,
        }
    }
}

/// `Σ w.offsets[c] · x.offsets[c]`: the offsets' share of a dot product (`x.offsets` holds
/// `d·Σq` per block); nothing for weights without offsets.
#[inline(always)]
fn offset_sum(w: IntRow, x: IntRow) -> f32 {
    w.offsets.iter().zip(x.offsets).map(|(a, b)| a * b).sum()
}

/// `out[i] = Σⱼ ŵⱼx̂ᵢⱼ` for a weight row and every quantised row `i` of `x`, both in integer
/// form: per group of 16 an exact integer sum, then one float multiply-add. Each output's
/// float operations are the same whatever the number of rows.
pub(super) fn dots_int(isa: Isa, w: IntRow, x: &Q8Rows, out: &mut [f32]) {
    let fits = |r: IntRow| {
        r.q.len() == w.q.len()
            && r.scales.len() == w.scales.len()
            && (w.offsets.is_empty() || w.offsets.len() == r.offsets.len())
    };
    assert!(
        w.q.len().is_multiple_of(OFFSET_GROUP)
            && w.scales.len() * SCALE_GROUP == w.q.len()
            && (0..out.len()).all(|i| fits(x.row(i))),
        "integer rows do not match"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            let done = out.len() / 4 * 4;
            let mut quads = out.chunks_exact_mut(4);
            for (k, y) in (&mut quads).enumerate() {
                let rows: [IntRow; 4] = std::array::from_fn(|r| x.row(4 * k + r));
                // SAFETY: `isa` is available (checked by the callers); lengths checked above.
                y.copy_from_slice(&unsafe { x86::dots_int_avx512(w, rows) });
            }
            for (i, y) in quads.into_remainder().iter_mut().enumerate() {
                // SAFETY: as above.
                *y = unsafe { x86::dots_int_avx512(w, [x.row(done + i)]) }[0];
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            for (i, y) in out.iter_mut().enumerate() {
                // SAFETY: as above.
                *y = unsafe { x86::dot_int_avx2(w, x.row(i)) };
            }
        }
        _ => {
            for (i, y) in out.iter_mut().enumerate() {
                *y = dot_int_portable(w, x.row(i));
            }
        }
    }
}

/// One output of [`dots_int`] in portable Rust: four interleaved float sums over the groups of 16.
fn dot_int_portable(w: IntRow, x: IntRow) -> f32 {
    let mut acc = [0.0f32; 4];
    let groups =
        w.q.chunks_exact(SCALE_GROUP)
            .zip(x.q.chunks_exact(SCALE_GROUP));
    for (g, ((wq, xq), (ws, xs))) in groups.zip(w.scales.iter().zip(x.scales)).enumerate() {
        let mut sum = 0i32;
        for j in 0..SCALE_GROUP {
            sum += i32::from(wq[j]) * i32::from(xq[j]);
        }
        acc[g % 4] += ws * xs * sum as f32;
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + offset_sum(w, x)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! [`dots_int`](super::dots_int) with x86-64 intrinsics.
    use std::arch::x86_64::*;

    use super::{IntRow, offset_sum};
    use crate::weights::dequant::GgmlType;
    use crate::weights::dequant::q4_k_scale_mins;
    use crate::weights::dequant::x86::{block32_values, half, prefetch, q4_k_values, q6_k_values};

    /// One block of 32: `Σ (wᵢ·xᵢ)` over each run of four values, eight i32 lanes (lanes 0–3
    /// the first group of 16, 4–7 the second). `|wᵢ| ≤ 128`, `|xᵢ| ≤ 127`: no pair of
    /// products overflows `vpmaddubsw`'s i16.
    ///
    /// # Safety
    /// 32 values must be readable at `w` and at `x`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block_sums_avx2(w: *const i8, x: *const i8) -> __m256i {
        // SAFETY: the caller's.
        let (w, x) = unsafe { (_mm256_loadu_si256(w.cast()), _mm256_loadu_si256(x.cast())) };
        int_sums_avx2(w, x)
    }

    /// [`block_sums_avx2`] of 32 values in registers.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn int_sums_avx2(w: __m256i, x: __m256i) -> __m256i {
        // |w| as unsigned times x with w's sign.
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// `R` outputs of one weight row stored as blocks of 32 with one scale (`kind` one of
    /// [`BLOCK32`]), read straight from `row` without decoding it into a buffer: the same
    /// float operations as [`dot_int_avx2`] on the decoded row, so the same bits.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    ///
    /// # Panics
    /// If `kind` is not one of [`BLOCK32`] or a row of `x` does not have `row`'s values.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn dots_block32_avx2<const R: usize>(
        kind: GgmlType,
        row: &[u8],
        x: [IntRow; R],
    ) -> [f32; R] {
        // One loop per type, so that each unpacks its blocks without asking which type.
        // SAFETY: this function's features.
        unsafe {
            match BLOCK32.iter().position(|&k| k == kind) {
                Some(0) => block32_loop::<0, R>(row, x),
                Some(1) => block32_loop::<1, R>(row, x),
                Some(2) => block32_loop::<2, R>(row, x),
                _ => panic!("{kind:?} is not a type of 32-value blocks"),
            }
        }
    }

    /// The types of 32-value blocks with one scale, by the index [`block32_loop`] takes.
    const BLOCK32: [GgmlType; 3] = [GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4_0];

    /// [`dots_block32_avx2`] for the type `BLOCK32[K]`, compiled once per type. Blocks
    /// alternate between two sums (even and odd blocks), as in `dot_int_avx2`; a pair of
    /// blocks per turn keeps both sums in registers.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block32_loop<const K: usize, const R: usize>(row: &[u8], x: [IntRow; R]) -> [f32; R] {
        let kind = BLOCK32[K];
        blocks_of(kind, row, &x);
        let size = kind.block().1;
        // Block `b` (at byte `size·b`) into `acc`.
        let add = |acc: &mut [__m256; R], b: usize, block: &[u8]| {
            prefetch(block);
            let w = block32_values(kind, block);
            let d = half(block);
            for (acc, x) in acc.iter_mut().zip(&x) {
                // SAFETY: `32·b + 32 ≤ x.q.len()` and `2·b < x.scales.len()` (checked above).
                let (xv, xs) = unsafe {
                    (
                        _mm256_loadu_si256(x.q.as_ptr().add(32 * b).cast()),
                        *x.scales.get_unchecked(2 * b),
                    )
                };
                let sums = int_sums_avx2(w, xv);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * xs), *acc);
            }
        };
        let (mut even, mut odd) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
        let mut pairs = row.chunks_exact(2 * size);
        for (p, pair) in pairs.by_ref().enumerate() {
            add(&mut even, 2 * p, &pair[..size]);
            add(&mut odd, 2 * p + 1, &pair[size..]);
        }
        let last = pairs.remainder();
        if !last.is_empty() {
            add(&mut even, row.len() / size - 1, last);
        }
        std::array::from_fn(|r| sum_avx2(_mm256_add_ps(even[r], odd[r])))
    }

    /// Checks that `row` is whole blocks of `kind` and that each row of `x` has its values
    /// (and the scales and block sums of [`Q8Rows`](super::Q8Rows)).
    ///
    /// # Panics
    /// If not.
    fn blocks_of(kind: GgmlType, row: &[u8], x: &[IntRow]) {
        let (values, size) = kind.block();
        let blocks = row.len() / size;
        assert!(
            row.len() == blocks * size
                && x.iter().all(|x| {
                    x.q.len() == values * blocks
                        && x.scales.len() == values / 16 * blocks
                        && x.offsets.len() == values / 32 * blocks
                }),
            "a {kind:?} row and rows of x that do not match"
        );
    }

    /// `R` outputs of one Q4_K weight row, read straight from its blocks: per sub-block of
    /// 32 an integer sum weighted by the 6-bit scale (`vpmaddubsw` of the unsigned values with
    /// `x`, then `vpmaddwd` with the scale), one float multiply-add by `d·dₓ`, and the mins
    /// times `x`'s block sums eight at a time.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    ///
    /// # Panics
    /// If a row of `x` does not have `row`'s values.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn dots_q4_k_avx2<const R: usize>(row: &[u8], x: [IntRow; R]) -> [f32; R] {
        blocks_of(GgmlType::Q4K, row, &x);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut min_acc = [_mm256_setzero_ps(); R];
        for (b, block) in row.chunks_exact(144).enumerate() {
            prefetch(block);
            let (d, dmin) = (half(block), half(&block[2..]));
            let (scales, mins) = q4_k_scale_mins(block);
            let mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi64x(
                0,
                i64::from_le_bytes(mins),
            )));
            let mins = _mm256_mul_ps(mins, _mm256_set1_ps(dmin));
            for (j, w) in q4_k_values(block).into_iter().enumerate() {
                let scale = _mm256_set1_epi16(i16::from(scales[j]));
                let k = 256 * b + 32 * j;
                for (acc, x) in acc.iter_mut().zip(&x) {
                    // SAFETY: `k + 32 ≤ x.q.len()`, `k / 16 < x.scales.len()` (checked).
                    let (xv, xs) = unsafe {
                        (
                            _mm256_loadu_si256(x.q.as_ptr().add(k).cast()),
                            *x.scales.get_unchecked(k / 16),
                        )
                    };
                    // |products| ≤ 15·127, pairs within i16; times the scale ≤ 63 within i32.
                    let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), scale);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * xs), *acc);
                }
            }
            for (min_acc, x) in min_acc.iter_mut().zip(&x) {
                // SAFETY: `8b + 8 ≤ x.offsets.len()` (checked).
                let sums = unsafe { _mm256_loadu_ps(x.offsets.as_ptr().add(8 * b)) };
                *min_acc = _mm256_fmadd_ps(mins, sums, *min_acc);
            }
        }
        std::array::from_fn(|r| sum_avx2(acc[r]) - sum_avx2(min_acc[r]))
    }

    /// `R` outputs of one Q6_K weight row, read straight from its blocks: per 16 values an
    /// integer sum weighted by the i8 scale (`vpmaddubsw` with `x` then `vpmaddwd` with the
    /// scales), one float multiply-add per 32 by `d·dₓ`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    ///
    /// # Panics
    /// If a row of `x` does not have `row`'s values.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn dots_q6_k_avx2<const R: usize>(row: &[u8], x: [IntRow; R]) -> [f32; R] {
        blocks_of(GgmlType::Q6K, row, &x);
        let mut acc = [_mm256_setzero_ps(); R];
        for (b, block) in row.chunks_exact(210).enumerate() {
            prefetch(block);
            let d = half(&block[208..]);
            let scales = &block[192..208];
            for (j, w) in q6_k_values(block).into_iter().enumerate() {
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(scales[2 * j + 1].cast_signed())),
                    _mm_set1_epi16(i16::from(scales[2 * j].cast_signed())),
                );
                let magnitude = _mm256_sign_epi8(w, w);
                let k = 256 * b + 32 * j;
                for (acc, x) in acc.iter_mut().zip(&x) {
                    // SAFETY: `k + 32 ≤ x.q.len()`, `k / 16 < x.scales.len()` (checked).
                    let (xv, xs) = unsafe {
                        (
                            _mm256_loadu_si256(x.q.as_ptr().add(k).cast()),
                            *x.scales.get_unchecked(k / 16),
                        )
                    };
                    // |w| ≤ 32, |x| ≤ 127: pairs within i16; times |scale| ≤ 128 within i32.
                    let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(xv, w));
                    let sums = _mm256_madd_epi16(pairs, scale);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * xs), *acc);
                }
            }
        }
        std::array::from_fn(|r| sum_avx2(acc[r]))
    }

    /// The block of 32 at `k` scaled and added to `acc`.
    ///
    /// # Safety
    /// `k + 32 ≤ len` of both rows, `(k + 32) / 16 ≤` both scale lengths.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block_avx2(w: IntRow, x: IntRow, k: usize, acc: __m256) -> __m256 {
        // SAFETY: the caller's.
        let sums = unsafe { block_sums_avx2(w.q.as_ptr().add(k), x.q.as_ptr().add(k)) };
        let g = k / 16;
        // SAFETY: as above.
        let (s0, s1) = unsafe {
            (
                w.scales.get_unchecked(g) * x.scales.get_unchecked(g),
                w.scales.get_unchecked(g + 1) * x.scales.get_unchecked(g + 1),
            )
        };
        let scale = _mm256_set_m128(_mm_set1_ps(s1), _mm_set1_ps(s0));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc)
    }

    /// Sum of the eight lanes.
    #[target_feature(enable = "avx")]
    #[inline]
    fn sum_avx2(v: __m256) -> f32 {
        let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)))
    }

    /// # Safety
    /// AVX2 and FMA available; the rows' lengths checked by [`dots_int`](super::dots_int).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_int_avx2(w: IntRow, x: IntRow) -> f32 {
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let len = w.q.len();
        let mut k = 0;
        while k + 64 <= len {
            // SAFETY: in bounds (the loop's condition).
            unsafe {
                even = block_avx2(w, x, k, even);
                odd = block_avx2(w, x, k + 32, odd);
            }
            k += 64;
        }
        if k < len {
            // SAFETY: `len` is a multiple of 32.
            even = unsafe { block_avx2(w, x, k, even) };
        }
        sum_avx2(_mm256_add_ps(even, odd)) + offset_sum(w, x)
    }

    /// `R` outputs at once: each 64 values of `w` are loaded and prepared once for all rows.
    ///
    /// # Safety
    /// AVX-512 (F, BW, VL, VNNI), AVX2 and FMA available; the rows' lengths checked by
    /// [`dots_int`](super::dots_int).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn dots_int_avx512<const R: usize>(w: IntRow, x: [IntRow; R]) -> [f32; R] {
        // Lane l of `vpdpbusd` sums values 4l..4l+3: group l / 4 of the four in 64 values.
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); R];
        let len = w.q.len();
        let mut k = 0;
        while k + 64 <= len {
            // SAFETY: in bounds (the loop's condition; four scales per 64 values).
            let (wv, ws) = unsafe {
                (
                    _mm512_loadu_si512(w.q.as_ptr().add(k).cast()),
                    _mm_loadu_ps(w.scales.as_ptr().add(k / 16)),
                )
            };
            let negative = _mm512_movepi8_mask(wv);
            let magnitude = _mm512_abs_epi8(wv);
            for (acc, x) in acc.iter_mut().zip(&x) {
                // SAFETY: as above, `x` as long as `w`.
                let (xv, xs) = unsafe {
                    (
                        _mm512_loadu_si512(x.q.as_ptr().add(k).cast()),
                        _mm_loadu_ps(x.scales.as_ptr().add(k / 16)),
                    )
                };
                // x with w's sign, times |w| as unsigned.
                let signed_x = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
                let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), magnitude, signed_x);
                let scale =
                    _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_mul_ps(ws, xs)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, *acc);
            }
            k += 64;
        }
        std::array::from_fn(|r| {
            let mut total = _mm512_reduce_add_ps(acc[r]);
            if k < len {
                // SAFETY: `len` is a multiple of 32.
                total += sum_avx2(unsafe { block_avx2(w, x[r], k, _mm256_setzero_ps()) });
            }
            total + offset_sum(w, x[r])
        })
    }
}

/// Rows `first..first + out.len()/n` of `yᵀ` (`[rows, n]`, at most [`TILE_ROWS`]): decodes
/// them into integer form in `buf`, then multiplies each with every row of `x`.
fn tile(
    isa: Isa,
    m: &QMatrix,
    x: &Q8Rows,
    n: usize,
    first: usize,
    out: &mut [f32],
    buf: &mut IntBuffer,
) {
    buf.decode(isa, m, first, out.len() / n);
    for (t, out) in out.chunks_exact_mut(n).enumerate() {
        dots_int(isa, buf.row(t), x, out);
    }
}

/// [`dots_int`] for consecutive weight rows of quantised blocks (`rows`, `row_bytes` each),
/// multiplied straight from them, four rows of `x` at a time: `out` is `[rows, n]`. The row
/// loop, the choice of kernel and the kernels themselves are one AVX2 function, so that a short
/// row (896 values: 28 blocks of Q5_0) pays no call or check per row beyond the kernel's own.
///
/// # Safety
/// AVX2, FMA and F16C available (`Isa::Avx2`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_blocks(kind: GgmlType, rows: &[u8], row_bytes: usize, x: &Q8Rows, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dots<const R: usize>(kind: GgmlType, row: &[u8], x: [IntRow; R]) -> [f32; R] {
        // SAFETY: this function's own features, which its only caller has.
        unsafe {
            match kind {
                GgmlType::Q4K => x86::dots_q4_k_avx2(row, x),
                GgmlType::Q6K => x86::dots_q6_k_avx2(row, x),
                _ => x86::dots_block32_avx2(kind, row, x),
            }
        }
    }
    let n = out.len() / (rows.len() / row_bytes);
    let done = n / 4 * 4;
    for (row, out) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(n)) {
        let (quads, rest) = out.split_at_mut(done);
        for (k, y) in quads.chunks_exact_mut(4).enumerate() {
            y.copy_from_slice(&dots::<4>(
                kind,
                row,
                std::array::from_fn(|r| x.row(4 * k + r)),
            ));
        }
        for (i, y) in rest.iter_mut().enumerate() {
            *y = dots(kind, row, [x.row(done + i)])[0];
        }
    }
}

/// [`QMatrix::matmul`]: the integer kernel for the best instruction set up to
/// [`DOT_MAX_ROWS`] rows of `x` with [`Activations::Q8`], gemm on decoded tiles otherwise.
pub(super) fn matmul(m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    if m.activations == Activations::Q8 && n <= DOT_MAX_ROWS {
        matmul_with(Isa::best(), m, x, n)
    } else {
        matmul_tiled(m, x, n)
    }
}

/// `x̂·Wᵀ` (`x` quantised to [`Q8Rows`]) by the integer kernel compiled for `isa` (which must
/// be available).
pub(super) fn matmul_with(isa: Isa, m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not available on this machine");
    if n == 0 {
        return Vec::new();
    }
    let mut y_t = vec![0.0f32; m.rows * n];
    let x = Q8Rows::new(x, m.cols);
    let tiles = y_t.par_chunks_mut(TILE_ROWS * n).enumerate();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && m.kind.is_quantised() {
        // Multiplied straight from the blocks: no buffer to decode into.
        tiles.for_each(|(t, out)| {
            let first = t * TILE_ROWS * m.row_bytes;
            let rows = &m.blocks[first..first + out.len() / n * m.row_bytes];
            // SAFETY: `isa` (AVX2) is available (asserted above).
            unsafe { dots_blocks(m.kind, rows, m.row_bytes, &x, out) };
        });
        return transpose(y_t, m.rows, n);
    }
    tiles.for_each_init(
        || IntBuffer::new(m),
        |buf, (t, out)| tile(isa, m, &x, n, t * TILE_ROWS, out, buf),
    );
    transpose(y_t, m.rows, n)
}

/// `x·Wᵀ` by gemm on tiles of the weight decoded into f32, each task writing its tile's columns
/// of the result `[n, rows]` in place.
fn matmul_tiled(m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n * m.rows];
    if n == 0 || m.rows == 0 || m.cols == 0 {
        return y;
    }
    let tile_rows = (TILE_FLOATS / m.cols).max(1);
    let out = Disjoint(y.as_mut_ptr());
    (0..m.rows.div_ceil(tile_rows))
        .into_par_iter()
        .for_each_init(
            || vec![0.0f32; tile_rows * m.cols],
            |tile, t| {
                let first = t * tile_rows;
                let count = tile_rows.min(m.rows - first);
                let tile = &mut tile[..count * m.cols];
                decode_rows(m, first, tile);
                // SAFETY: `y[i, first..first + count]` for every `i < n`: inside `y`
                // (`first + count ≤ rows`), and no other task writes these columns.
                unsafe {
                    gemm_at(
                        (n, count, m.cols),
                        out.at(first),
                        (m.rows, 1),
                        x,
                        (m.cols, 1),
                        tile,
                        (1, m.cols),
                        false,
                    );
                }
            },
        );
    y
}

/// The result of [`matmul_tiled`], shared by tasks that write disjoint columns of it.
struct Disjoint(*mut f32);

// SAFETY: the tasks that hold it write disjoint elements, and the buffer outlives them.
unsafe impl Sync for Disjoint {}

impl Disjoint {
    /// A pointer to element `at`.
    fn at(&self, at: usize) -> *mut f32 {
        self.0.wrapping_add(at)
    }
}

/// Rows `first..` of `m` decoded into `out` (whole rows), by the decoders compiled for AVX2
/// where the machine has it (the same values: decoding is exact).
fn decode_rows(m: &QMatrix, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn avx2(m: &QMatrix, first: usize, out: &mut [f32]) {
        for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
            decode_row(m.kind, m.row_blocks(first + r), row);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::best() != Isa::Baseline {
        // SAFETY: AVX2, FMA and F16C are available (`Isa::Avx2` and `Isa::Avx512` have them).
        return unsafe { avx2(m, first, out) };
    }
    for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
        m.decode_row(first + r, row);
    }
}

/// `[rows, n]` → `[n, rows]`, in 64×64 blocks so that reads and writes both stay in cache.
fn transpose(y_t: Vec<f32>, rows: usize, n: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    if n <= 1 {
        return y_t;
    }
    let mut y = vec![0.0f32; n * rows];
    for r0 in (0..rows).step_by(BLOCK) {
        for i0 in (0..n).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for i in i0..(i0 + BLOCK).min(n) {
                    y[i * rows + r] = y_t[r * n + i];
                }
            }
        }
    }
    y
}

/// [`QMatrix::matmul_t`]: per stripe of `dx`'s columns (one task each), the weight's rows a
/// tile at a time, decoded and multiplied in with gemm.
pub(super) fn matmul_t(m: &QMatrix, dy: &[f32], n: usize) -> Vec<f32> {
    if n == 0 || m.cols == 0 {
        return vec![0.0; n * m.cols];
    }
    let (per_block, block_bytes) = m.kind.block();
    let stripe = STRIPE_COLS.div_ceil(per_block) * per_block;
    let tile_rows = (TILE_FLOATS / stripe).max(1);
    let starts: Vec<usize> = (0..m.cols).step_by(stripe).collect();
    let parts: Vec<(usize, Vec<f32>)> = starts
        .into_par_iter()
        .map(|c0| {
            let width = stripe.min(m.cols - c0);
            let bytes = c0 / per_block * block_bytes..(c0 + width) / per_block * block_bytes;
            let mut out = vec![0.0f32; n * width];
            let mut tile = vec![0.0f32; tile_rows * width];
            for r0 in (0..m.rows).step_by(tile_rows) {
                let count = tile_rows.min(m.rows - r0);
                for (t, row) in tile.chunks_exact_mut(width).take(count).enumerate() {
                    decode_row(m.kind, &m.row_blocks(r0 + t)[bytes.clone()], row);
                }
                // out[n, width] += dy[:, r0..r0 + count] · tile[count, width]
                gemm_into(
                    (n, width, count),
                    &mut out,
                    (width, 1),
                    &dy[r0..],
                    (m.rows, 1),
                    &tile,
                    (width, 1),
                    r0 > 0,
                );
            }
            (c0, out)
        })
        .collect();
    let mut dx = vec![0.0f32; n * m.cols];
    for (c0, part) in parts {
        let width = part.len() / n;
        for (i, src) in part.chunks_exact(width).enumerate() {
            dx[i * m.cols + c0..i * m.cols + c0 + width].copy_from_slice(src);
        }
    }
    dx
}

/// `dst (+)= lhs · rhs` for `(m, n, k)`, each matrix given with its `(row, column)` strides,
/// on the calling thread.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    accumulate: bool,
) {
    assert!(m == 0 || n == 0 || last_offset(m, n, (dst_rs, dst_cs)) < dst.len());
    // SAFETY: every element of `dst` gemm touches is inside it (asserted), and `dst` is
    // borrowed mutably, so it aliases neither input.
    unsafe {
        gemm_at(
            (m, n, k),
            dst.as_mut_ptr(),
            (dst_rs, dst_cs),
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
            accumulate,
        );
    }
}

/// The offset of the last element of a `rows × cols` matrix with strides `(rs, cs)`.
fn last_offset(rows: usize, cols: usize, (rs, cs): (usize, usize)) -> usize {
    (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
}

/// [`gemm_into`] with `dst` given by a pointer: the one call of gemm in this file.
///
/// # Safety
/// The `m × n` elements at `dst` with its strides must be writable, read by nothing else
/// meanwhile, and overlap neither input.
///
/// # Panics
/// If `lhs` or `rhs` is shorter than its strides reach.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_at(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    accumulate: bool,
) {
    assert!(m == 0 || k == 0 || last_offset(m, k, (lhs_rs, lhs_cs)) < lhs.len());
    assert!(k == 0 || n == 0 || last_offset(k, n, (rhs_rs, rhs_cs)) < rhs.len());
    // SAFETY: the inputs' elements are inside their slices (asserted); `dst` is the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
