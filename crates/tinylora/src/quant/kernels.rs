//! The CPU kernels behind [`QMatrix::matmul`] and [`QMatrix::matmul_t`]: rows of blocks decoded
//! into a cache-resident f32 buffer, then multiplied, on rayon's threads.
//!
//! One generic body per kernel, written so that the compiler vectorises it, compiled three
//! times: for the baseline target (SSE2 on x86-64, NEON on aarch64), for AVX2 and for AVX-512;
//! [`Isa::best`] picks at run time. No fused multiply-add and a fixed order of every sum make
//! the three builds give identical bits.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::QMatrix;
use crate::weights::dequant::decode_row;

/// Interleaved partial sums of a dot product (four AVX-512 or eight AVX2 registers).
pub(super) const LANES: usize = 64;

/// Rows of the weight decoded together and multiplied with each row of `x` while in cache.
const TILE_ROWS: usize = 16;

/// Columns of `dx` one task of [`matmul_t`] owns (rounded to whole blocks).
const STRIPE_COLS: usize = 256;

/// An instruction set the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
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

/// Rows `first..first + out.len()/n` of `yᵀ` (`[rows, n]`): decodes them into `buf` and dots
/// each with every row of `x`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn tile_generic(m: &QMatrix, x: &[f32], n: usize, first: usize, out: &mut [f32], buf: &mut [f32]) {
    let cols = m.cols;
    let rows = out.len() / n;
    for t in 0..rows {
        decode_row(
            m.kind,
            m.row_blocks(first + t),
            &mut buf[t * cols..(t + 1) * cols],
        );
    }
    for i in 0..n {
        let x_row = &x[i * cols..(i + 1) * cols];
        for t in 0..rows {
            out[t * n + i] = dot(&buf[t * cols..(t + 1) * cols], x_row);
        }
    }
}

multiversion!(tile => tile_generic(m: &QMatrix, x: &[f32], n: usize, first: usize, out: &mut [f32], buf: &mut [f32]));

/// Columns `c0..c0 + width` of `dx = dy·W` (`[n, width]`), summed over the rows in order.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn stripe_generic(m: &QMatrix, dy: &[f32], n: usize, c0: usize, out: &mut [f32], buf: &mut [f32]) {
    let width = out.len() / n;
    let (per_block, block_bytes) = m.kind.block();
    let bytes = c0 / per_block * block_bytes..(c0 + width) / per_block * block_bytes;
    for r in 0..m.rows {
        decode_row(m.kind, &m.row_blocks(r)[bytes.clone()], buf);
        for i in 0..n {
            let a = dy[i * m.rows + r];
            let dst = &mut out[i * width..(i + 1) * width];
            for j in 0..width {
                dst[j] += a * buf[j];
            }
        }
    }
}

multiversion!(stripe => stripe_generic(m: &QMatrix, dy: &[f32], n: usize, c0: usize, out: &mut [f32], buf: &mut [f32]));

/// [`QMatrix::matmul`] with the best instruction set.
pub(super) fn matmul(m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    matmul_with(Isa::best(), m, x, n)
}

/// [`QMatrix::matmul`] compiled for `isa` (which must be available).
pub fn matmul_with(isa: Isa, m: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not available on this machine");
    if n == 0 || m.rows == 0 {
        return Vec::new();
    }
    let mut y_t = vec![0.0f32; m.rows * n];
    y_t.par_chunks_mut(TILE_ROWS * n).enumerate().for_each_init(
        || vec![0.0f32; TILE_ROWS * m.cols],
        |buf, (t, out)| tile(isa, m, x, n, t * TILE_ROWS, out, buf),
    );
    if n == 1 {
        return y_t;
    }
    let mut y = vec![0.0f32; n * m.rows];
    for (r, row) in y_t.chunks_exact(n).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            y[i * m.rows + r] = v;
        }
    }
    y
}

/// [`QMatrix::matmul_t`] with the best instruction set.
pub(super) fn matmul_t(m: &QMatrix, dy: &[f32], n: usize) -> Vec<f32> {
    matmul_t_with(Isa::best(), m, dy, n)
}

/// [`QMatrix::matmul_t`] compiled for `isa` (which must be available).
pub fn matmul_t_with(isa: Isa, m: &QMatrix, dy: &[f32], n: usize) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not available on this machine");
    if n == 0 || m.cols == 0 {
        return vec![0.0; n * m.cols];
    }
    let per_block = m.kind.block().0;
    let stripe = STRIPE_COLS.div_ceil(per_block) * per_block;
    let starts: Vec<usize> = (0..m.cols).step_by(stripe).collect();
    let parts: Vec<(usize, Vec<f32>)> = starts
        .into_par_iter()
        .map(|c0| {
            let width = stripe.min(m.cols - c0);
            let mut out = vec![0.0f32; n * width];
            let mut buf = vec![0.0f32; width];
            self::stripe(isa, m, dy, n, c0, &mut out, &mut buf);
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
