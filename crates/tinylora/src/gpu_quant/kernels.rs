//! The GPU kernels: each reads weights straight from GGUF blocks held as `u32` words (the
//! file's bytes, little-endian), decoding one value at a time with [`block_value`], the GPU's
//! one definition of every block layout. They follow the CPU's `decode_row` float for float
//! (`d·sc` then `·q`, then `+ (−dmin·m)` for Q4_K); a GPU compiler may fuse the last two into one
//! multiply-add, which the tests' bounds allow.

use cubecl::prelude::*;

/// Block type codes (GGML's type ids), passed to the kernels at compile time.
pub const Q4_0: u32 = 2;
/// GGML's Q5_0.
pub const Q5_0: u32 = 6;
/// GGML's Q8_0.
pub const Q8_0: u32 = 8;
/// GGML's Q4_K.
pub const Q4_K: u32 = 12;
/// GGML's Q6_K.
pub const Q6_K: u32 = 14;

/// Byte `at` of the words.
#[cube]
fn byte_at(words: &Tensor<u32>, at: u32) -> u32 {
    (words[(at / 4) as usize] >> ((at % 4) * 8)) & 0xFF
}

/// Byte `at` as a signed 8-bit integer.
#[cube]
fn signed_byte_at(words: &Tensor<u32>, at: u32) -> i32 {
    let b = i32::cast_from(byte_at(words, at));
    if b >= 128 { b - 256 } else { b }
}

/// The f16 at byte `at` as f32 (exact: subnormals, infinities and NaNs included).
#[cube]
fn half_at(words: &Tensor<u32>, at: u32) -> f32 {
    let h = byte_at(words, at) | (byte_at(words, at + 1) << 8);
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1F;
    let mantissa = h & 0x3FF;
    if exponent == 0 {
        // ±0 and subnormals: mantissa · 2⁻²⁴.
        let magnitude = f32::cast_from(mantissa) * f32::reinterpret(0x3380_0000u32);
        if sign == 0 { magnitude } else { -magnitude }
    } else if exponent == 0x1F {
        let bits = if mantissa == 0 {
            0x7F80_0000u32
        } else {
            0x7FC0_0000u32 | (mantissa << 13)
        };
        f32::reinterpret(sign | bits)
    } else {
        f32::reinterpret(sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
}

/// The 6-bit scale (`want_min` false) or min of Q4_K sub-block `j`, from the 12 packed bytes
/// at `at`.
#[cube]
fn q4_k_scale_min(words: &Tensor<u32>, at: u32, j: u32, want_min: bool) -> u32 {
    if j < 4 {
        let offset = if want_min { 4u32 } else { 0u32 };
        byte_at(words, at + j + offset) & 63
    } else {
        let packed = byte_at(words, at + j + 4);
        if want_min {
            (packed >> 4) | ((byte_at(words, at + j) >> 6) << 4)
        } else {
            (packed & 0x0F) | ((byte_at(words, at + j - 4) >> 6) << 4)
        }
    }
}

/// Value `j` of the block of type `kind` starting at byte `base`.
#[cube]
pub fn block_value(words: &Tensor<u32>, base: u32, j: u32, #[comptime] kind: u32) -> f32 {
    if comptime!(kind == Q8_0) {
        let d = half_at(words, base);
        d * f32::cast_from(signed_byte_at(words, base + 2 + j))
    } else if comptime!(kind == Q4_0) {
        let d = half_at(words, base);
        let packed = byte_at(words, base + 2 + j % 16);
        let nibble = if j < 16 { packed & 0x0F } else { packed >> 4 };
        d * f32::cast_from(i32::cast_from(nibble) - 8)
    } else if comptime!(kind == Q5_0) {
        let d = half_at(words, base);
        let high = (byte_at(words, base + 2 + j / 8) >> (j % 8)) & 1;
        let packed = byte_at(words, base + 6 + j % 16);
        let nibble = if j < 16 { packed & 0x0F } else { packed >> 4 };
        d * f32::cast_from(i32::cast_from(nibble | (high << 4)) - 16)
    } else if comptime!(kind == Q4_K) {
        let d = half_at(words, base);
        let dmin = half_at(words, base + 2);
        let sub = j / 32;
        let scale = d * f32::cast_from(q4_k_scale_min(words, base + 4, sub, false));
        let offset = -(dmin * f32::cast_from(q4_k_scale_min(words, base + 4, sub, true)));
        let l = j % 64;
        let packed = byte_at(words, base + 16 + (j / 64) * 32 + l % 32);
        let nibble = if l < 32 { packed & 0x0F } else { packed >> 4 };
        scale * f32::cast_from(nibble) + offset
    } else {
        // Q6_K: 128 low-nibble bytes, 64 high-bit bytes, 16 signed scales, f16 d.
        let d = half_at(words, base + 208);
        let scale = d * f32::cast_from(signed_byte_at(words, base + 192 + j / 16));
        let (half, l) = (j / 128, j % 128);
        let (quarter, ll) = (l / 32, l % 32);
        let packed = byte_at(words, base + half * 64 + (quarter % 2) * 32 + ll);
        let low = if quarter < 2 {
            packed & 0x0F
        } else {
            packed >> 4
        };
        let high = (byte_at(words, base + 128 + half * 32 + ll) >> (2 * quarter)) & 3;
        scale * f32::cast_from(i32::cast_from(low | (high << 4)) - 32)
    }
}

/// Value `(row, col)` of a matrix whose rows are `row_bytes` bytes of `kind` blocks of
/// `block_values` values and `block_bytes` bytes.
#[cube]
pub fn matrix_value(
    words: &Tensor<u32>,
    row: u32,
    col: u32,
    row_bytes: u32,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
) -> f32 {
    let base = row * row_bytes + (col / block_values) * block_bytes;
    block_value(words, base, col % block_values, kind)
}

/// `out[i, r] = Σ_c x[i, c] · W[r, c]`, or with `transposed` the backward product
/// `out[i, c] = Σ_r x[i, r] · W[r, c]`: one unit per output value.
///
/// # Shapes
/// - `x`: `[n, cols]` (`[n, rows]` transposed), contiguous; `out`: `[n, rows]` (`[n, cols]`)
#[cube(launch)]
pub fn matmul_kernel(
    x: &Tensor<f32>,
    words: &Tensor<u32>,
    out: &mut Tensor<f32>,
    rows: u32,
    cols: u32,
    row_bytes: u32,
    #[comptime] transposed: bool,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let (outer, inner) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let (i, o) = (pos as u32 / outer, pos as u32 % outer);
    let x_row = i * inner;
    let mut acc = 0.0f32;
    for k in 0..inner {
        let (r, c) = if transposed { (k, o) } else { (o, k) };
        let w = matrix_value(words, r, c, row_bytes, kind, block_values, block_bytes);
        acc += x[(x_row + k) as usize] * w;
    }
    out[pos] = acc;
}

/// `out[t, c] = W[ids[t] − first, c]` where `first ≤ ids[t] < first + rows`, else 0: the rows
/// of an embedding lookup that one piece of the matrix holds, one unit per value.
///
/// # Shapes
/// - `ids`: `[n]`; `out`: `[n, cols]`
#[cube(launch)]
pub fn rows_kernel(
    ids: &Tensor<u32>,
    words: &Tensor<u32>,
    out: &mut Tensor<f32>,
    first: u32,
    rows: u32,
    cols: u32,
    row_bytes: u32,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let (t, c) = (pos as u32 / cols, pos as u32 % cols);
    let id = ids[t as usize];
    out[pos] = if id >= first && id - first < rows {
        matrix_value(
            words,
            id - first,
            c,
            row_bytes,
            kind,
            block_values,
            block_bytes,
        )
    } else {
        0.0f32
    };
}

/// `out[r, c] = W[r, c]` for `r` in `first..first + out rows`: a dequantised slice of rows.
///
/// # Shapes
/// - `out`: `[n, cols]`
#[cube(launch)]
pub fn dequantize_kernel(
    words: &Tensor<u32>,
    out: &mut Tensor<f32>,
    first: u32,
    cols: u32,
    row_bytes: u32,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let (r, c) = (pos as u32 / cols, pos as u32 % cols);
    out[pos] = matrix_value(
        words,
        first + r,
        c,
        row_bytes,
        kind,
        block_values,
        block_bytes,
    );
}
