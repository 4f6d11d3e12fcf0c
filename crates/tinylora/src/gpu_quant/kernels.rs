//! The GPU kernels: each reads weights straight from GGUF blocks held as `u32` words (the
//! file's bytes, little-endian), through [`quant`], [`group_scale`] and [`q4_k_offset`], the
//! GPU's one definition of every block layout, and [`half_from_bits`] for f16/bf16 values.
//! A value is `scale·q (+ offset)` as the CPU's `decode_row` computes it float for float
//! (`d·sc` then `·q`, then `+ (−dmin·m)` for Q4_K; a GPU compiler may fuse the last two into
//! one multiply-add, which the tests' bounds allow); the direct product sums `x·q` per group
//! of 16 values and scales the sum once.

use cubecl::prelude::*;

use crate::gpu_fused::kernels::{silu_times, sum_over_cube};

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
/// Plain f32 values (a dense matrix's own buffer, its bits read as words): read by the
/// row products ([`lane_dot`]) only.
pub const F32: u32 = 0;
/// GGML's F16: IEEE half-precision values, 2 bytes each, read in groups of 16 (32 bytes)
/// as if blocks of 16 values with no scale.
pub const F16: u32 = 1;
/// GGML's BF16: bfloat16 values (an f32's upper 16 bits), grouped as [`F16`].
pub const BF16: u32 = 30;

/// Whether `kind` is a plain 16-bit float ([`F16`] or [`BF16`]).
fn is_half(kind: u32) -> bool {
    kind == F16 || kind == BF16
}

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

/// The 16 bits at byte `at` (even: every half in a block and every value of an F16/BF16 row
/// starts on an even byte).
#[cube]
fn bits16_at(words: &Tensor<u32>, at: u32) -> u32 {
    (words[(at / 4) as usize] >> ((at % 4) * 8)) & 0xFFFF
}

/// The 16-bit float of `kind` ([`F16`] or [`BF16`]) with bits `h` as f32 (exact: subnormals,
/// infinities and NaNs included).
#[cube]
fn half_from_bits(h: u32, #[comptime] kind: u32) -> f32 {
    if comptime!(kind == BF16) {
        f32::reinterpret(h << 16)
    } else {
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
}

/// The f16 at byte `at` (even) as f32.
#[cube]
fn half_at(words: &Tensor<u32>, at: u32) -> f32 {
    half_from_bits(bits16_at(words, at), F16)
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

/// The integer `q` of value `j` of the block of type `kind` at byte `base`.
#[cube]
fn quant(words: &Tensor<u32>, base: u32, j: u32, #[comptime] kind: u32) -> i32 {
    if comptime!(kind == Q8_0) {
        signed_byte_at(words, base + 2 + j)
    } else if comptime!(kind == Q4_0) {
        let packed = byte_at(words, base + 2 + j % 16);
        let nibble = if j < 16 { packed & 0x0F } else { packed >> 4 };
        i32::cast_from(nibble) - 8
    } else if comptime!(kind == Q5_0) {
        let high = (byte_at(words, base + 2 + j / 8) >> (j % 8)) & 1;
        let packed = byte_at(words, base + 6 + j % 16);
        let nibble = if j < 16 { packed & 0x0F } else { packed >> 4 };
        i32::cast_from(nibble | (high << 4)) - 16
    } else if comptime!(kind == Q4_K) {
        let l = j % 64;
        let packed = byte_at(words, base + 16 + (j / 64) * 32 + l % 32);
        i32::cast_from(if l < 32 { packed & 0x0F } else { packed >> 4 })
    } else {
        // Q6_K: 128 low-nibble bytes, then 64 bytes of high bit pairs.
        let (half, l) = (j / 128, j % 128);
        let (quarter, ll) = (l / 32, l % 32);
        let packed = byte_at(words, base + half * 64 + (quarter % 2) * 32 + ll);
        let low = if quarter < 2 {
            packed & 0x0F
        } else {
            packed >> 4
        };
        let high = (byte_at(words, base + 128 + half * 32 + ll) >> (2 * quarter)) & 3;
        i32::cast_from(low | (high << 4)) - 32
    }
}

/// The scale of values `16·g .. 16·g + 16` of the block at byte `base` (`d`, or `d·sc` for the
/// K-quants).
#[cube]
fn group_scale(words: &Tensor<u32>, base: u32, g: u32, #[comptime] kind: u32) -> f32 {
    if comptime!(kind == Q4_K) {
        half_at(words, base) * f32::cast_from(q4_k_scale_min(words, base + 4, g / 2, false))
    } else if comptime!(kind == Q6_K) {
        half_at(words, base + 208) * f32::cast_from(signed_byte_at(words, base + 192 + g))
    } else {
        half_at(words, base)
    }
}

/// Q4_K's offset `−dmin·m` of values `32·s .. 32·s + 32` of the block at byte `base`.
#[cube]
fn q4_k_offset(words: &Tensor<u32>, base: u32, s: u32) -> f32 {
    -(half_at(words, base + 2) * f32::cast_from(q4_k_scale_min(words, base + 4, s, true)))
}

/// Value `j` of the block of type `kind` at byte `base`: `scale·q (+ offset)`, or the 16-bit
/// float itself.
#[cube]
pub fn block_value(words: &Tensor<u32>, base: u32, j: u32, #[comptime] kind: u32) -> f32 {
    if comptime!(is_half(kind)) {
        half_from_bits(bits16_at(words, base + 2 * j), kind)
    } else {
        let scaled =
            group_scale(words, base, j / 16, kind) * f32::cast_from(quant(words, base, j, kind));
        if comptime!(kind == Q4_K) {
            scaled + q4_k_offset(words, base, j / 32)
        } else {
            scaled
        }
    }
}

/// `Σ x[x_at + c] · W[row, c]` over group `g` (16 values) of the row at byte `row_base`:
/// `scale·Σ x·q (+ offset·Σ x)`, the group's scale (and offset) read once.
#[cube]
fn group_dot(
    x: &Tensor<f32>,
    x_at: u32,
    words: &Tensor<u32>,
    row_base: u32,
    g: u32,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
) -> f32 {
    let groups_per_block = comptime!(block_values / 16);
    let (b, gb) = (g / groups_per_block, g % groups_per_block);
    let base = row_base + b * block_bytes;
    let x_group = x_at + g * 16;
    let mut xq = 0.0f32;
    let mut xs = 0.0f32;
    #[unroll]
    for t in 0..16u32 {
        let xv = x[(x_group + t) as usize];
        xq += xv * f32::cast_from(quant(words, base, gb * 16 + t, kind));
        if comptime!(kind == Q4_K) {
            xs += xv;
        }
    }
    let scaled = group_scale(words, base, gb, kind) * xq;
    if comptime!(kind == Q4_K) {
        scaled + q4_k_offset(words, base, gb / 2) * xs
    } else {
        scaled
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

/// This unit's share of `Σ_c x[x_at + c] · W[row, c]` for the row at byte `row_base`: the
/// row's groups of 16 values `UNIT_POS, UNIT_POS + ROW_LANES, ...` (neighbouring units read
/// neighbouring bytes; `cols` a multiple of 16); [`sum_over_cube`] adds the shares.
#[cube]
#[allow(clippy::too_many_arguments)]
fn lane_dot(
    x: &Tensor<f32>,
    x_at: u32,
    words: &Tensor<u32>,
    row_base: u32,
    cols: u32,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
) -> f32 {
    let mut acc = 0.0f32;
    let mut g = UNIT_POS;
    while g < cols / 16 {
        if comptime!(kind == F32) {
            let (x_group, w_group) = (x_at + g * 16, row_base / 4 + g * 16);
            let mut sum = 0.0f32;
            #[unroll]
            for t in 0..16u32 {
                sum += x[(x_group + t) as usize] * f32::reinterpret(words[(w_group + t) as usize]);
            }
            acc += sum;
        } else if comptime!(is_half(kind)) {
            // Two values per word: the group's 32 bytes are 8 aligned words.
            let (x_group, w_word) = (x_at + g * 16, (row_base + g * 32) / 4);
            let mut sum = 0.0f32;
            #[unroll]
            for t in 0..8u32 {
                let word = words[(w_word + t) as usize];
                let at = (x_group + 2 * t) as usize;
                sum += x[at] * half_from_bits(word & 0xFFFF, kind);
                sum += x[at + 1] * half_from_bits(word >> 16, kind);
            }
            acc += sum;
        } else {
            acc += group_dot(x, x_at, words, row_base, g, kind, block_values, block_bytes);
        }
        g += ROW_LANES;
    }
    acc
}

/// Units of one cube that share an output value of [`matvec_kernel`].
pub const ROW_LANES: u32 = 32;

/// `out[i, r] = Σ_c x[i, c] · W[r, c] (+ bias[r])`: one cube of [`ROW_LANES`] units per output
/// value, each unit's [`lane_dot`] added by [`sum_over_cube`], the bias added last (with
/// `has_bias`; `bias` is unread otherwise).
///
/// # Shapes
/// - `x`: `[n, cols]` contiguous; `bias`: `[rows]`; `out`: `[n, rows]`
#[cube(launch)]
pub fn matvec_kernel(
    x: &Tensor<f32>,
    words: &Tensor<u32>,
    bias: &Tensor<f32>,
    out: &mut Tensor<f32>,
    rows: u32,
    cols: u32,
    row_bytes: u32,
    #[comptime] kind: u32,
    #[comptime] block_values: u32,
    #[comptime] block_bytes: u32,
    #[comptime] has_bias: bool,
) {
    let cube = CUBE_POS;
    if cube >= out.len() {
        terminate!();
    }
    let (i, r) = (cube as u32 / rows, cube as u32 % rows);
    let lane = UNIT_POS;
    let acc = lane_dot(
        x,
        i * cols,
        words,
        r * row_bytes,
        cols,
        kind,
        block_values,
        block_bytes,
    );
    let total = sum_over_cube(acc, ROW_LANES);
    if lane == 0 {
        if has_bias {
            out[cube] = total + bias[r as usize];
        } else {
            out[cube] = total;
        }
    }
}

/// SwiGLU's hidden values straight from two matrices' blocks: `out[i, r] = silu(Σ_c x[i, c] ·
/// G[r, c]) · Σ_c x[i, c] · U[r, c]` (`gate_proj`, `up_proj`), one cube of [`ROW_LANES`] units
/// per output value, both sums as [`matvec_kernel`] forms them.
///
/// # Shapes
/// - `x`: `[n, cols]` contiguous; `out`: `[n, rows]`
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gate_up_kernel(
    x: &Tensor<f32>,
    gate: &Tensor<u32>,
    up: &Tensor<u32>,
    out: &mut Tensor<f32>,
    rows: u32,
    cols: u32,
    gate_row_bytes: u32,
    up_row_bytes: u32,
    #[comptime] gate_kind: u32,
    #[comptime] gate_values: u32,
    #[comptime] gate_bytes: u32,
    #[comptime] up_kind: u32,
    #[comptime] up_values: u32,
    #[comptime] up_bytes: u32,
) {
    let cube = CUBE_POS;
    if cube >= out.len() {
        terminate!();
    }
    let (i, r) = (cube as u32 / rows, cube as u32 % rows);
    let g = lane_dot(
        x,
        i * cols,
        gate,
        r * gate_row_bytes,
        cols,
        gate_kind,
        gate_values,
        gate_bytes,
    );
    let u = lane_dot(
        x,
        i * cols,
        up,
        r * up_row_bytes,
        cols,
        up_kind,
        up_values,
        up_bytes,
    );
    let (g, u) = (sum_over_cube(g, ROW_LANES), sum_over_cube(u, ROW_LANES));
    if UNIT_POS == 0 {
        out[cube] = silu_times(g, u);
    }
}

/// `out[i, c] = Σ_r dy[i, r] · W[r, c]` (the backward product): one unit per output value.
///
/// # Shapes
/// - `dy`: `[n, rows]` contiguous; `out`: `[n, cols]`
#[cube(launch)]
pub fn matmul_t_kernel(
    dy: &Tensor<f32>,
    words: &Tensor<u32>,
    out: &mut Tensor<f32>,
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
    let (i, c) = (pos as u32 / cols, pos as u32 % cols);
    let mut acc = 0.0f32;
    for r in 0..rows {
        let w = matrix_value(words, r, c, row_bytes, kind, block_values, block_bytes);
        acc += dy[(i * rows + r) as usize] * w;
    }
    out[pos] = acc;
}

/// Values of a matrix that one piece of it holds (rows `first..first + rows`), zeros for the
/// others, one unit per value of `out`: with `whole_rows`, `out[t, c] = W[ids[t], c]` (an
/// embedding lookup); otherwise `out[t] = W[row, col]` for the flat index `ids[t] = row·cols +
/// col` (single values).
///
/// # Shapes
/// - `ids`: `[n]`; `out`: `[n, cols]` with `whole_rows`, else `[n]`
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn lookup_kernel(
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
    #[comptime] whole_rows: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let row = if whole_rows {
        ids[pos / cols as usize]
    } else {
        ids[pos] / cols
    };
    let col = if whole_rows {
        pos as u32 % cols
    } else {
        ids[pos] % cols
    };
    out[pos] = if row >= first && row - first < rows {
        matrix_value(
            words,
            row - first,
            col,
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
