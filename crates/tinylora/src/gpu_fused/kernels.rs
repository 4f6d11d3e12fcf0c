//! The fused kernels: RMSNorm (one cube per row) and RoPE (one unit per value, reading strided
//! inputs in place), and the sum over a cube's units that RMSNorm and the quantised product
//! share.

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
/// partial sums, and all scale their values.
///
/// # Shapes
/// - `x`, `out`: `[rows, d]` contiguous; `weight`: `[d]`
#[cube(launch)]
pub fn rms_norm_kernel(
    x: &Tensor<f32>,
    weight: &Tensor<f32>,
    out: &mut Tensor<f32>,
    d: u32,
    eps: f32,
) {
    let base = CUBE_POS as u32 * d;
    if base as usize >= out.len() {
        terminate!();
    }
    let unit = UNIT_POS;
    let mut acc = 0.0f32;
    let mut i = unit;
    while i < d {
        let v = x[(base + i) as usize];
        acc += v * v;
        i += NORM_UNITS;
    }
    let sum = sum_over_cube(acc, NORM_UNITS);
    let inverse = 1.0f32 / (sum / f32::cast_from(d) + eps).sqrt();
    let mut j = unit;
    while j < d {
        let at = (base + j) as usize;
        out[at] = x[at] * inverse * weight[j as usize];
        j += NORM_UNITS;
    }
}

/// `out = x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]` over the two halves of the
/// last dimension: one unit per value of `out`; `x`, `cos` and `sin` are read through their
/// strides (the heads' view of a projection, a slice of the generation's tables).
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
    let di = pos % d;
    let si = (pos / d) % s;
    let hi = (pos / (d * s)) % h;
    let bi = pos / (d * s * h);
    let half = d / 2;
    let row = bi * x.stride(0) + hi * x.stride(1) + si * x.stride(2);
    let table = bi * cos.stride(0) + si * cos.stride(2) + di * cos.stride(3);
    let partner = if di < half {
        -x[row + (di + half) * x.stride(3)]
    } else {
        x[row + (di - half) * x.stride(3)]
    };
    out[pos] = x[row + di * x.stride(3)] * cos[table] + partner * sin[table];
}
