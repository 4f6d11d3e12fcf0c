//! The CPU kernels behind [`QMatrix::matmul`] and [`QMatrix::matmul_t`]: rows of blocks decoded
//! into a cache-resident f32 buffer, then multiplied, on rayon's threads.
//!
//! Few rows of `x` (decoding): one dot-product body, written so that the compiler vectorises
//! it, compiled three times — for the baseline target (SSE2 on x86-64, NEON on aarch64), for
//! AVX2 and for AVX-512 — and [`Isa::best`] picks at run time; no fused multiply-add and a fixed
//! order of every sum make the three builds give identical bits. More rows (prefill, batched
//! rollouts, gradients): a tile of the weight is decoded and handed to gemm, whose own kernels
//! and summation order depend on the machine (within the usual `k·ε·Σ|wᵢxᵢ|`).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::QMatrix;
use crate::weights::dequant::decode_row;

/// Interleaved partial sums of a dot product (four AVX-512 or eight AVX2 registers).
pub(super) const LANES: usize = 64;

/// Rows of the weight one task multiplies (each decoded once, into a buffer that stays in the
/// core's first-level cache, and dotted with every row of `x`).
const TILE_ROWS: usize = 16;

/// Columns of `dx` one task of [`matmul_t`] owns (rounded to whole blocks).
const STRIPE_COLS: usize = 256;

/// Rows of `x` up to which [`QMatrix::matmul`] uses the dot-product kernel; more rows
/// amortise decoding a tile of the weight into f32 for gemm (4864×896, 2 cores: for Q5_0 the
/// dot kernel is faster up to 8 rows, gemm from 16; Q8_0 and Q4_K cross between 4 and 8).
pub(super) const DOT_MAX_ROWS: usize = 8;

/// Floats in a decoded tile of the weight for gemm (256 KiB, a core's second-level cache).
const TILE_FLOATS: usize = 1 << 16;

/// An instruction set the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64, scalar elsewhere).
    Baseline,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 (F, BW, DQ, VL).
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
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Defines `$name(isa, args…)` that runs the `#[inline(always)]` body `$generic` compiled for
/// `isa` (which must be [`Isa::available`]).
macro_rules! multiversion {
    ($name:ident => $generic:ident ( $($arg:ident : $ty:ty),* )) => {
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn avx2($($arg: $ty),*) {
                $generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
            fn avx512($($arg: $ty),*) {
                $generic($($arg),*)
            }
            debug_assert!(isa.available());
            match isa {
                // SAFETY: `isa.available()`: the machine runs these instructions.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512($($arg),*) },
                _ => $generic($($arg),*),
            }
        }
    };
}

/// `Σ aᵢbᵢ` in [`LANES`] interleaved sums, then a halving tree; any tail last.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let full = len / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    let mut k = 0;
    while k < full {
        let (x, y) = (&a[k..k + LANES], &b[k..k + LANES]);
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
        k += LANES;
    }
    let mut tail = 0.0f32;
    for j in full..len {
        tail += a[j] * b[j];
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            acc[j] += acc[j + width];
        }
    }
    acc[0] + tail
}

/// Rows `first..first + out.len()/n` of `yᵀ` (`[rows, n]`): decodes each into `buf` and dots
/// it with every row of `x`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn tile_generic(m: &QMatrix, x: &[f32], n: usize, first: usize, out: &mut [f32], buf: &mut [f32]) {
    let cols = m.cols;
    let rows = out.len() / n;
    let buf = &mut buf[..cols];
    for t in 0..rows {
        decode_row(m.kind, m.row_blocks(first + t), buf);
        for i in 0..n {
            out[t * n + i] = dot(buf, &x[i * cols..(i + 1) * cols]);
        }
    }
}

multiversion!(tile => tile_generic(m: &QMatrix, x: &[f32], n: usize, first: usize, out: &mut [f32], buf: &mut [f32]));

/// [`QMatrix::matmul`]: the dot-product kernel for the best instruction set up to
/// [`DOT_MAX_ROWS`] rows of `x`, gemm on decoded tiles beyond.
pub(super) fn matmul(m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    if n <= DOT_MAX_ROWS {
        matmul_with(Isa::best(), m, x, n)
    } else {
        matmul_tiled(m, x, n)
    }
}

/// `x·Wᵀ` by the dot-product kernel compiled for `isa` (which must be available).
pub(super) fn matmul_with(isa: Isa, m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not available on this machine");
    let mut y_t = vec![0.0f32; m.rows * n];
    if n > 0 {
        y_t.par_chunks_mut(TILE_ROWS * n).enumerate().for_each_init(
            || vec![0.0f32; m.cols],
            |buf, (t, out)| tile(isa, m, x, n, t * TILE_ROWS, out, buf),
        );
    }
    transpose(y_t, m.rows, n)
}

/// `x·Wᵀ` by gemm on tiles of the weight decoded into f32.
fn matmul_tiled(m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    let mut y_t = vec![0.0f32; m.rows * n];
    let tile_rows = (TILE_FLOATS / m.cols.max(1)).max(1);
    if n > 0 {
        y_t.par_chunks_mut(tile_rows * n).enumerate().for_each_init(
            || vec![0.0f32; tile_rows * m.cols],
            |buf, (t, out)| {
                let count = out.len() / n;
                for (r, row) in buf.chunks_exact_mut(m.cols).take(count).enumerate() {
                    m.decode_row(t * tile_rows + r, row);
                }
                // out[count, n] = tile[count, cols] · xᵀ[cols, n]
                gemm_into(
                    (count, n, m.cols),
                    out,
                    (n, 1),
                    buf,
                    (m.cols, 1),
                    x,
                    (1, m.cols),
                    false,
                );
            },
        );
    }
    transpose(y_t, m.rows, n)
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
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    accumulate: bool,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    assert!(m == 0 || n == 0 || last(m, n, dst_rs, dst_cs) < dst.len());
    assert!(m == 0 || k == 0 || last(m, k, lhs_rs, lhs_cs) < lhs.len());
    assert!(k == 0 || n == 0 || last(k, n, rhs_rs, rhs_cs) < rhs.len());
    // SAFETY: the asserts above keep every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
