//! The fused kernels: RMSNorm (one cube per row), RoPE (one unit per value, reading strided
//! inputs in place), attention (one cube per query row, softmax online over chunks of keys) and
//! SwiGLU's gate (one unit per value), and the sum over a cube's units that RMSNorm and the
//! quantised product share.

use cubecl::prelude::*;

/// The sum of `value` over the `units` units of a cube, given to every unit: partial sums in
/// shared memory, added in unit order by the first unit.
#[cube]
pub fn sum_over_cube(value: f32, #[comptime] units: u32) -> f32 {
    let lanes = comptime!(units as usize);
    let mut partial = Shared::<[f32]>::new_slice(lanes);
    let mut total = Shared::<[f32]>::new_slice(1usize);
    partial[UNIT_POS as usize] = value;
    sync_cube();
    if UNIT_POS == 0 {
        let mut sum = 0.0f32;
        for k in 0..lanes {
            sum += partial[k];
        }
        total[0usize] = sum;
    }
    sync_cube();
    total[0usize]
}

/// Units of one cube, which normalises one row.
pub const NORM_UNITS: u32 = 64;

/// `out[row] = x[row] / sqrt(mean(x[row]²) + eps) · weight`, one cube per row of `d` values:
/// each unit sums the squares of every [`NORM_UNITS`]-th value, [`sum_over_cube`] adds the
/// partial sums, and all scale their values. With `residual`, the row normalised is
/// `x[row] + y[row]` (the residual stream after a block's output is added), written to the
/// first half of `out` and its normalisation to the second half.
///
/// # Shapes
/// - `x`, `y`: `[rows, d]` contiguous (`y` unread without `residual`); `weight`: `[d]`
/// - `out`: `[rows, d]`, with `residual` `[2·rows·d]` (the sums, then their normalisations)
#[cube(launch)]
pub fn rms_norm_kernel(
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    weight: &Tensor<f32>,
    out: &mut Tensor<f32>,
    d: u32,
    eps: f32,
    #[comptime] residual: bool,
) {
    let base = CUBE_POS as u32 * d;
    if base as usize >= x.len() {
        terminate!();
    }
    let mut normed = 0usize;
    if residual {
        normed = x.len();
    }
    let unit = UNIT_POS;
    let mut acc = 0.0f32;
    let mut i = unit;
    while i < d {
        let at = (base + i) as usize;
        let mut v = x[at];
        if residual {
            v += y[at];
            out[at] = v;
        }
        acc += v * v;
        i += NORM_UNITS;
    }
    let sum = sum_over_cube(acc, NORM_UNITS);
    let inverse = 1.0f32 / (sum / f32::cast_from(d) + eps).sqrt();
    let mut j = unit;
    while j < d {
        let at = (base + j) as usize;
        let v = if residual { out[at] } else { x[at] };
        out[normed + at] = v * inverse * weight[j as usize];
        j += NORM_UNITS;
    }
}

/// `out = x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]` over the two halves of the
/// last dimension: one unit per value of `out` ([`rope_value`]).
///
/// # Shapes
/// - `x`, `out`: `[batch, heads, seq, head_dim]` (`out` contiguous); `cos`, `sin`:
///   `[batch, 1, seq, head_dim]`
#[cube(launch)]
pub fn rope_kernel(x: &Tensor<f32>, cos: &Tensor<f32>, sin: &Tensor<f32>, out: &mut Tensor<f32>) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let (d, s, h) = (out.shape(3), out.shape(2), out.shape(1));
    let (di, si, hi) = (pos % d, (pos / d) % s, (pos / (d * s)) % h);
    out[pos] = rope_value(x, cos, sin, pos / (d * s * h), hi, si, di);
}

/// Value `(bi, hi, si, di)` of RoPE's `x·cos + rotate_half(x)·sin`, `x`, `cos` and `sin` read
/// through their strides (the heads' view of a projection, a slice of the generation's
/// tables).
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`
#[cube]
fn rope_value(
    x: &Tensor<f32>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    bi: usize,
    hi: usize,
    si: usize,
    di: usize,
) -> f32 {
    let half = x.shape(3) / 2;
    let row = bi * x.stride(0) + hi * x.stride(1) + si * x.stride(2);
    let table = bi * cos.stride(0) + si * cos.stride(2) + di * cos.stride(3);
    let partner = if di < half {
        -x[row + (di + half) * x.stride(3)]
    } else {
        x[row + (di - half) * x.stride(3)]
    };
    rotated(x[row + di * x.stride(3)], partner, cos[table], sin[table])
}

/// A pass's keys rotated by RoPE ([`rope_value`]) into a KV cache and its values copied beside
/// them: `k_cache[b, h, at + s, i] = rope(k)[b, h, s, i]`, `v_cache[b, h, at + s, i] =
/// v[b, h, s, i]`, one unit per value of `k`; every tensor read through its strides.
///
/// # Shapes
/// - `k`, `v`: `[batch, kv_heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`;
///   `k_cache`, `v_cache`: `[batch, kv_heads, capacity, head_dim]`, `at + seq ≤ capacity`
#[cube(launch)]
pub fn rope_append_kernel(
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    k_cache: &mut Tensor<f32>,
    v_cache: &mut Tensor<f32>,
    at: u32,
) {
    let pos = ABSOLUTE_POS;
    let (d, s, h) = (k.shape(3), k.shape(2), k.shape(1));
    if pos >= k.shape(0) * h * s * d {
        terminate!();
    }
    let (di, si, hi, bi) = (
        pos % d,
        (pos / d) % s,
        (pos / (d * s)) % h,
        pos / (d * s * h),
    );
    let slot = at as usize + si;
    let kc = bi * k_cache.stride(0)
        + hi * k_cache.stride(1)
        + slot * k_cache.stride(2)
        + di * k_cache.stride(3);
    k_cache[kc] = rope_value(k, cos, sin, bi, hi, si, di);
    let vc = bi * v_cache.stride(0)
        + hi * v_cache.stride(1)
        + slot * v_cache.stride(2)
        + di * v_cache.stride(3);
    v_cache[vc] = v[bi * v.stride(0) + hi * v.stride(1) + si * v.stride(2) + di * v.stride(3)];
}

/// One value of RoPE's `x·cos + rotate_half(x)·sin`, given its `partner` in
/// `rotate_half(x)` (`−x[i + d/2]` in the first half, `x[i − d/2]` in the second).
#[cube]
fn rotated(value: f32, partner: f32, cos: f32, sin: f32) -> f32 {
    value * cos + partner * sin
}

/// Units of one attention cube, and keys scored per chunk.
pub const ATTENTION_UNITS: u32 = 32;

/// Below every score a key can have (masked keys get about `-1e30`): the running maximum
/// before the first key, and the score of the slots past the last key in the last chunk.
const NO_SCORE: f32 = -3.0e38;

/// Scaled dot-product attention of one query row, rotated by RoPE on loading, against its
/// key/value head, with the softmax computed online (as flash-decoding does): the keys are
/// taken [`ATTENTION_UNITS`] at a time, each unit scores one key of the chunk
/// (`q·k / sqrt(d) + mask`), every unit updates the running maximum `m` and sum `l` of
/// `exp(score − m)` the same way, and each unit keeps the weighted sum of the values for its
/// own dimensions (`i ≡ unit mod ATTENTION_UNITS`), rescaled by `exp(m_old − m_new)` when the
/// maximum grows. Query head `h` reads key/value head
/// `h / (heads / kv_heads)` (grouped-query attention without repeated keys and values).
///
/// # Shapes
/// - `q`: `[batch, heads, seq, d]`, not yet rotated; `cos`, `sin`: `[batch, 1, seq, d]`; `k`,
///   `v`: `[batch, kv_heads, keys, d]`; `mask`: `[batch, 1, seq, keys]` (all read through
///   their strides: the heads' view of a projection, the cache's views, slices of the
///   generation's tables)
/// - `out`: `[batch, seq, heads·d]` contiguous (the layout the output projection reads); one
///   cube per `(batch, seq, head)` in that order
#[cube(launch)]
pub fn attention_kernel(
    q: &Tensor<f32>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    mask: &Tensor<f32>,
    out: &mut Tensor<f32>,
    #[comptime] d: u32,
) {
    let row = CUBE_POS;
    if row * (d as usize) >= out.len() {
        terminate!();
    }
    let (heads, seq, kv_heads, keys) = (q.shape(1), q.shape(2), k.shape(1), k.shape(2));
    let hi = row % heads;
    let si = (row / heads) % seq;
    let bi = row / (heads * seq);
    let kvh = hi / (heads / kv_heads);
    let units = comptime!(ATTENTION_UNITS as usize);
    let width = comptime!(d as usize);
    let unit = UNIT_POS as usize;
    let mut query = Shared::<[f32]>::new_slice(width);
    let mut acc = Shared::<[f32]>::new_slice(width);
    let mut scores = Shared::<[f32]>::new_slice(units);
    let mut weights = Shared::<[f32]>::new_slice(units);
    let mut raw = Shared::<[f32]>::new_slice(width);
    let q_row = bi * q.stride(0) + hi * q.stride(1) + si * q.stride(2);
    let mut i = unit;
    while i < width {
        raw[i] = q[q_row + i * q.stride(3)];
        acc[i] = 0.0;
        i += units;
    }
    sync_cube();
    // The query rotated as `rope_kernel` rotates it.
    let table = bi * cos.stride(0) + si * cos.stride(2);
    let half = width / 2;
    let mut i = unit;
    while i < width {
        let partner = if i < half {
            -raw[i + half]
        } else {
            raw[i - half]
        };
        let t = table + i * cos.stride(3);
        query[i] = rotated(raw[i], partner, cos[t], sin[t]);
        i += units;
    }
    sync_cube();
    let k_head = bi * k.stride(0) + kvh * k.stride(1);
    let v_head = bi * v.stride(0) + kvh * v.stride(1);
    let mask_row = bi * mask.stride(0) + si * mask.stride(2);
    let root = f32::cast_from(d).sqrt();
    let mut running = f32::new(NO_SCORE);
    let mut sum = 0.0f32;
    let mut first = 0usize;
    while first < keys {
        let key = first + unit;
        let mut score = f32::new(NO_SCORE);
        if key < keys {
            let at = k_head + key * k.stride(2);
            let mut dot = 0.0f32;
            for j in 0..width {
                dot += query[j] * k[at + j * k.stride(3)];
            }
            score = dot / root + mask[mask_row + key * mask.stride(3)];
        }
        scores[unit] = score;
        sync_cube();
        let mut new_max = running;
        for u in 0..units {
            new_max = max(new_max, scores[u]);
        }
        weights[unit] = if key < keys {
            (score - new_max).exp()
        } else {
            0.0f32
        };
        sync_cube();
        let rescale = (running - new_max).exp();
        let mut chunk_sum = 0.0f32;
        for u in 0..units {
            chunk_sum += weights[u];
        }
        sum = sum * rescale + chunk_sum;
        let mut i = unit;
        while i < width {
            let mut weighted = 0.0f32;
            for u in 0..units {
                if first + u < keys {
                    weighted +=
                        weights[u] * v[v_head + (first + u) * v.stride(2) + i * v.stride(3)];
                }
            }
            acc[i] = acc[i] * rescale + weighted;
            i += units;
        }
        running = new_max;
        first += units;
        sync_cube();
    }
    let mut i = unit;
    while i < width {
        out[row * width + i] = acc[i] / sum;
        i += units;
    }
}

/// `out = silu(gate)·up = gate / (1 + exp(−gate)) · up`, one unit per value.
///
/// # Shapes
/// - `gate`, `up`, `out`: the same shape, contiguous
#[cube(launch)]
pub fn swiglu_kernel(gate: &Tensor<f32>, up: &Tensor<f32>, out: &mut Tensor<f32>) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    out[pos] = silu_times(gate[pos], up[pos]);
}

/// `silu(g)·u = g / (1 + exp(−g)) · u`.
#[cube]
pub fn silu_times(g: f32, u: f32) -> f32 {
    g / (1.0 + (-g).exp()) * u
}
