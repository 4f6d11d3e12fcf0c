//! RMSNorm (alone or with the residual add before it), RoPE (alone, or of the keys written
//! into the KV cache with the values), a decode step's attention and SwiGLU's `silu(gate)·up`
//! in one GPU kernel each, for passes without gradients (generation, evaluation): burn's compositions launch seven kernels for RMSNorm (square, mean, add, square
//! root, reciprocal, two products), about seven for RoPE (two slices, a negation, a
//! concatenation, two products, a sum), ten or more for attention (the heads' copies, two
//! products, the scaling, the mask, the softmax's four, the output's copy) and three for
//! `silu(gate)·up`, which a GPU pays for per launch and a software one (lavapipe, SwiftShader)
//! pays dearly for. Tensors in an autodiff graph (`is_tracked`: a leaf that requires a gradient
//! or anything computed from one) keep the differentiable compositions (the model's callers
//! choose, through [`serves`]).

pub(crate) mod kernels;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension,
};
use burn::tensor::{DType, Shape, Tensor as BurnTensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use crate::model::rope::RopeTables;
use kernels::{
    ATTENTION_UNITS, NORM_UNITS, attention_kernel, rms_norm_kernel, rope_append_kernel,
    rope_kernel, swiglu_kernel,
};

/// The fused kernels as backend operations (not differentiable).
#[backend_extension(Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff)]
pub trait FusedBackend: Backend {
    /// `x / sqrt(mean(x², last) + eps) · weight`: `x` `[..., d]`, `weight` `[d]`.
    fn fused_rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;
    /// `x + y` and its RMSNorm one after the other, flat (`[2·n]` for `x`, `y` `[..., d]` of
    /// `n` values), `weight` `[d]`.
    fn fused_add_rms_norm(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;
    /// `x·cos + rotate_half(x)·sin`: `x` `[batch, heads, seq, head_dim]`, `cos`, `sin`
    /// `[batch, 1, seq, head_dim]`.
    fn fused_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// RoPE of `k` written into `k_cache` and `v` copied into `v_cache`, both at slots
    /// `at..at + seq` (in place when a cache's buffer is not shared, else into a copy): `k`,
    /// `v` `[batch, kv_heads, seq, d]`, `cos`, `sin` `[batch, 1, seq, d]`, the caches
    /// `[batch, kv_heads, capacity, d]`; returns the caches.
    fn fused_rope_append(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        at: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `softmax(rope(q)·kᵀ/sqrt(d) + mask)·v` per query head against its key/value head: `q`
    /// `[batch, heads, seq, d]`, `cos`, `sin` `[batch, 1, seq, d]`, `k`, `v`
    /// `[batch, kv_heads, keys, d]`, `mask` `[batch, 1, seq, keys]`; output
    /// `[batch, seq, heads·d]`.
    fn fused_attention(
        q: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `silu(gate)·up`, both of the same shape.
    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// [`rms_norm_kernel`] over the rows of `x` (`[..., d]`, contiguous), of `x + y` with
/// `residual`.
fn launch_rms_norm(
    x: CubeTensor,
    y: CubeTensor,
    weight: CubeTensor,
    out: CubeTensor,
    eps: f32,
    residual: bool,
) {
    let weight = into_contiguous(weight);
    let d = x.shape()[x.shape().len() - 1];
    let rows = x.meta.num_elements() / d.max(1);
    let dim = CubeDim::new_1d(NORM_UNITS);
    let count = calculate_cube_count_elemwise(&out.client, rows * NORM_UNITS as usize, dim);
    let client = out.client.clone();
    rms_norm_kernel::launch(
        &client,
        count,
        dim,
        x.into_tensor_arg(),
        y.into_tensor_arg(),
        weight.into_tensor_arg(),
        out.into_tensor_arg(),
        d as u32,
        eps,
        residual,
    );
}

/// A new contiguous f32 tensor of `x`'s shape beside it.
fn empty_f32_like(x: &CubeTensor) -> CubeTensor {
    assert_eq!(x.dtype, DType::F32, "the fused kernels take f32");
    empty_device_dtype(x.client.clone(), x.device.clone(), x.shape(), DType::F32)
}

impl FusedBackend for CubeBackend {
    fn fused_rms_norm(x: CubeTensor, weight: CubeTensor, eps: f32) -> CubeTensor {
        let x = into_contiguous(x);
        let out = empty_f32_like(&x);
        launch_rms_norm(x.clone(), x, weight, out.clone(), eps, false);
        out
    }

    fn fused_add_rms_norm(
        x: CubeTensor,
        y: CubeTensor,
        weight: CubeTensor,
        eps: f32,
    ) -> CubeTensor {
        let (x, y) = (into_contiguous(x), into_contiguous(y));
        assert_eq!(x.shape(), y.shape(), "the residual add takes equal shapes");
        let out = empty_device_dtype(
            x.client.clone(),
            x.device.clone(),
            Shape::from(vec![2 * x.meta.num_elements()]),
            DType::F32,
        );
        launch_rms_norm(x, y, weight, out.clone(), eps, true);
        out
    }

    fn fused_rope(x: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        let out = empty_f32_like(&x);
        let dim = CubeDim::new_1d(256);
        let count = calculate_cube_count_elemwise(&out.client, out.meta.num_elements(), dim);
        rope_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
        out
    }

    fn fused_rope_append(
        k_cache: CubeTensor,
        v_cache: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        at: usize,
    ) -> (CubeTensor, CubeTensor) {
        // As burn's `slice_assign`: write in place only into a buffer no other tensor holds.
        let writable = |t: CubeTensor| match t.can_mut() && t.is_nonoverlapping() {
            true => t,
            false => t.copy(),
        };
        let (k_cache, v_cache) = (writable(k_cache), writable(v_cache));
        assert_eq!(k.dtype, DType::F32, "the fused kernels take f32");
        let dim = CubeDim::new_1d(256);
        let count = calculate_cube_count_elemwise(&k.client, k.meta.num_elements(), dim);
        rope_append_kernel::launch(
            &k_cache.client,
            count,
            dim,
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            k_cache.clone().into_tensor_arg(),
            v_cache.clone().into_tensor_arg(),
            at as u32,
        );
        (k_cache, v_cache)
    }

    fn fused_attention(
        q: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        mask: CubeTensor,
    ) -> CubeTensor {
        let [b, heads, s, d] = q.shape().dims::<4>();
        assert_eq!(q.dtype, DType::F32, "the fused kernels take f32");
        let out = empty_device_dtype(
            q.client.clone(),
            q.device.clone(),
            Shape::from(vec![b, s, heads * d]),
            DType::F32,
        );
        let dim = CubeDim::new_1d(ATTENTION_UNITS);
        let units = b * s * heads * ATTENTION_UNITS as usize;
        let count = calculate_cube_count_elemwise(&out.client, units, dim);
        attention_kernel::launch(
            &out.client,
            count,
            dim,
            q.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            mask.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            d as u32,
        );
        out
    }

    fn fused_swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        let (gate, up) = (into_contiguous(gate), into_contiguous(up));
        let out = empty_f32_like(&gate);
        let dim = CubeDim::new_1d(256);
        let count = calculate_cube_count_elemwise(&out.client, out.meta.num_elements(), dim);
        swiglu_kernel::launch(
            &out.client,
            count,
            dim,
            gate.into_tensor_arg(),
            up.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
        out
    }
}

/// Untracked: the operations are called only for inputs outside any autodiff graph
/// (`Tensor::is_tracked`).
impl<B: FusedBackend, C: CheckpointStrategy> FusedBackend for Autodiff<B, C> {
    fn fused_rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let out = B::fused_rms_norm(x.into_primitive(), weight.into_primitive(), eps);
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn fused_add_rms_norm(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let out = B::fused_add_rms_norm(
            x.into_primitive(),
            y.into_primitive(),
            weight.into_primitive(),
            eps,
        );
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn fused_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = B::fused_rope(
            x.into_primitive(),
            cos.into_primitive(),
            sin.into_primitive(),
        );
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn fused_rope_append(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        at: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (k_cache, v_cache) = B::fused_rope_append(
            k_cache.into_primitive(),
            v_cache.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            cos.into_primitive(),
            sin.into_primitive(),
            at,
        );
        (
            <Self as AutodiffBackend>::from_inner(k_cache),
            <Self as AutodiffBackend>::from_inner(v_cache),
        )
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = B::fused_attention(
            q.into_primitive(),
            cos.into_primitive(),
            sin.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            mask.into_primitive(),
        );
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let out = B::fused_swiglu(gate.into_primitive(), up.into_primitive());
        <Self as AutodiffBackend>::from_inner(out)
    }
}

/// Whether the fused kernels serve `x`: on a GPU and outside any autodiff graph.
pub(crate) fn serves<const D: usize>(x: &BurnTensor<D>) -> bool {
    !crate::model::load::is_cpu(&x.device()) && !x.is_tracked()
}

/// RMSNorm in one launch, for an `x` on a GPU outside any autodiff graph.
///
/// # Shapes
/// - `x`: `[..., d]`; `weight`: `[d]`; output: same as `x`
pub fn rms_norm<const D: usize>(
    x: BurnTensor<D>,
    weight: BurnTensor<1>,
    eps: f64,
) -> BurnTensor<D> {
    debug_assert!(!x.is_tracked(), "the fused RMSNorm has no gradient");
    BurnTensor::from_dispatch(<Dispatch as FusedBackend>::fused_rms_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        eps as f32,
    ))
}

/// `x + y` and its RMSNorm in one launch, for tensors on a GPU outside any autodiff graph:
/// `(sum, rms_norm(sum))`.
///
/// # Shapes
/// - `x`, `y`: `[..., d]`; `weight`: `[d]`; outputs: same as `x`
pub fn add_rms_norm<const D: usize>(
    x: BurnTensor<D>,
    y: BurnTensor<D>,
    weight: BurnTensor<1>,
    eps: f64,
) -> (BurnTensor<D>, BurnTensor<D>) {
    debug_assert!(
        !x.is_tracked() && !y.is_tracked(),
        "the fused add has no gradient"
    );
    let dims = x.dims();
    let both: BurnTensor<1> =
        BurnTensor::from_dispatch(<Dispatch as FusedBackend>::fused_add_rms_norm(
            x.into_dispatch(),
            y.into_dispatch(),
            weight.into_dispatch(),
            eps as f32,
        ));
    let n = dims.iter().product::<usize>();
    (
        both.clone().narrow(0, 0, n).reshape(dims),
        both.narrow(0, n, n).reshape(dims),
    )
}

/// RoPE in one launch, for an `x` on a GPU outside any autodiff graph.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`; output:
///   same as `x`
pub fn rope(x: BurnTensor<4>, cos: BurnTensor<4>, sin: BurnTensor<4>) -> BurnTensor<4> {
    debug_assert!(!x.is_tracked(), "the fused RoPE has no gradient");
    BurnTensor::from_dispatch(<Dispatch as FusedBackend>::fused_rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

/// A pass's keys rotated by RoPE into a KV cache and its values copied beside them, in one
/// launch, for tensors on a GPU outside any autodiff graph: slots `at..at + seq` of the
/// returned caches hold `rope(k)` and `v` (written in place when no other tensor holds a
/// cache's buffer).
///
/// # Shapes
/// - `caches`: `[batch, kv_heads, capacity, d]` each; `k`, `v`: `[batch, kv_heads, seq, d]`
///   (any strides); `tables`: `[batch, 1, seq, d]` each; `at + seq ≤ capacity`
pub fn rope_append(
    (k_cache, v_cache): (BurnTensor<4>, BurnTensor<4>),
    k: BurnTensor<4>,
    v: BurnTensor<4>,
    tables: &RopeTables,
    at: usize,
) -> (BurnTensor<4>, BurnTensor<4>) {
    debug_assert!(
        !k.is_tracked() && !v.is_tracked(),
        "the fused cache write has no gradient"
    );
    let (k_cache, v_cache) = <Dispatch as FusedBackend>::fused_rope_append(
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        tables.cos.clone().into_dispatch(),
        tables.sin.clone().into_dispatch(),
        at,
    );
    (
        BurnTensor::from_dispatch(k_cache),
        BurnTensor::from_dispatch(v_cache),
    )
}

/// Grouped-query attention in one launch, for tensors on a GPU outside any autodiff graph:
/// `softmax(rope(q)·kᵀ/sqrt(d) + mask)·v`, the query rotated by `tables` on loading, query
/// head `h` against key/value head `h / (heads / kv_heads)`, the heads laid side by side for
/// the output projection.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, d]`, not yet rotated; `tables`: `[batch, 1, seq, d]` each; `k`,
///   `v`: `[batch, kv_heads, keys, d]`; `mask`: `[batch, 1, seq, keys]` (any strides); output
///   `[batch, seq, heads·d]`
pub fn attention(
    q: BurnTensor<4>,
    tables: &RopeTables,
    k: BurnTensor<4>,
    v: BurnTensor<4>,
    mask: BurnTensor<4>,
) -> BurnTensor<3> {
    debug_assert!(!q.is_tracked(), "the fused attention has no gradient");
    BurnTensor::from_dispatch(<Dispatch as FusedBackend>::fused_attention(
        q.into_dispatch(),
        tables.cos.clone().into_dispatch(),
        tables.sin.clone().into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        mask.into_dispatch(),
    ))
}

/// `silu(gate)·up` in one launch, for tensors on a GPU outside any autodiff graph.
///
/// # Shapes
/// - `gate`, `up`: the same shape; output: that shape
pub fn swiglu<const D: usize>(gate: BurnTensor<D>, up: BurnTensor<D>) -> BurnTensor<D> {
    debug_assert!(!gate.is_tracked(), "the fused SwiGLU has no gradient");
    BurnTensor::from_dispatch(<Dispatch as FusedBackend>::fused_swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use crate::device::{BackendKind, init};
    use crate::numerics::{F32_UNIT_ROUNDOFF, gamma};
    use crate::quant::tests::random_values;

    /// The fused kernel against an f64 RMSNorm of the same values: within the bound of a
    /// `d`-term sum of squares in any order plus a few roundings (the square root, the
    /// division, two products; WGSL allows its square root a few ULP).
    #[test]
    fn the_fused_kernel_is_rms_norm_within_its_bound() {
        let device = init(BackendKind::Wgpu).unwrap();
        let eps = 1e-6;
        for (dims, seed) in [([2usize, 3, 896], 1u64), ([1, 4, 64], 2), ([3, 1, 100], 3)] {
            let d = dims[2];
            let n = dims.iter().product::<usize>();
            let x = random_values(n, seed);
            let w = random_values(d, seed + 10);
            let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), dims), &device);
            let wt = Tensor::<1>::from_data(TensorData::new(w.clone(), [d]), &device);
            // Also as a non-contiguous view of the same values: `[dims1, dims0, d]` swapped.
            let permuted: Vec<f32> = (0..dims[1])
                .flat_map(|j| (0..dims[0]).map(move |i| (i * dims[1] + j) * d))
                .flat_map(|at| x[at..at + d].to_vec())
                .collect();
            let swapped =
                Tensor::<3>::from_data(TensorData::new(permuted, [dims[1], dims[0], d]), &device)
                    .swap_dims(0, 1);
            for input in [xt, swapped] {
                let got = super::rms_norm(input, wt.clone(), eps)
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap();
                let bound = gamma(d) + 16.0 * F32_UNIT_ROUNDOFF;
                for (row, (xs, gs)) in x.chunks(d).zip(got.chunks(d)).enumerate() {
                    let ms = xs.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for (i, (&v, &g)) in xs.iter().zip(gs).enumerate() {
                        let exact = f64::from(v) * inv * f64::from(w[i]);
                        let err = (f64::from(g) - exact).abs();
                        assert!(
                            err <= bound * exact.abs() + 1e-30,
                            "{dims:?} row {row} value {i}: {g} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    /// The residual add fused with the norm: the sums are f32 additions (equal bit for bit to
    /// the host's), their normalisation within the bound of the plain kernel's test.
    #[test]
    fn the_fused_add_is_the_sum_and_its_rms_norm() {
        let device = init(BackendKind::Wgpu).unwrap();
        let (dims, eps) = ([2usize, 3, 96], 1e-6);
        let (n, d) = (dims.iter().product::<usize>(), dims[2]);
        let (x, y, w) = (
            random_values(n, 41),
            random_values(n, 42),
            random_values(d, 43),
        );
        let tensor =
            |v: &Vec<f32>| Tensor::<3>::from_data(TensorData::new(v.clone(), dims), &device);
        let wt = Tensor::<1>::from_data(TensorData::new(w.clone(), [d]), &device);
        let (sum, normed) = super::add_rms_norm(tensor(&x), tensor(&y), wt, eps);
        let read = |t: Tensor<3>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let (sum, normed) = (read(sum), read(normed));
        let host: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        assert_eq!(sum, host);
        let bound = gamma(d) + 16.0 * F32_UNIT_ROUNDOFF;
        for (row, (ss, gs)) in host.chunks(d).zip(normed.chunks(d)).enumerate() {
            let ms = ss.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            for (i, (&v, &g)) in ss.iter().zip(gs).enumerate() {
                let exact = f64::from(v) * inv * f64::from(w[i]);
                assert!(
                    (f64::from(g) - exact).abs() <= bound * exact.abs() + 1e-30,
                    "row {row} value {i}: {g} vs {exact}"
                );
            }
        }
    }

    /// The fused RoPE against an f64 rotation of the same values, reading the heads' strided
    /// view of a projection and a slice of larger tables: within two roundings of each product
    /// and one of the sum.
    #[test]
    fn the_fused_rope_is_the_rotation_within_its_bound() {
        let device = init(BackendKind::Wgpu).unwrap();
        let (b, h, s, d, cap, at) = (2, 3, 4, 8, 9, 3);
        // The projection's layout `[b, s, h, d]`, seen as `[b, h, s, d]`.
        let proj = random_values(b * s * h * d, 7);
        let x = Tensor::<4>::from_data(TensorData::new(proj.clone(), [b, s, h, d]), &device)
            .swap_dims(1, 2);
        let (cos, sin) = (random_values(b * cap * d, 8), random_values(b * cap * d, 9));
        let table = |v: &Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v.clone(), [b, 1, cap, d]), &device).slice([
                0..b,
                0..1,
                at..at + s,
                0..d,
            ])
        };
        let got = super::rope(x, table(&cos), table(&sin))
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let u = F32_UNIT_ROUNDOFF;
        for bi in 0..b {
            for hi in 0..h {
                for si in 0..s {
                    for di in 0..d {
                        let xv = |k: usize| f64::from(proj[((bi * s + si) * h + hi) * d + k]);
                        let t = (bi * cap + at + si) * d + di;
                        let (c, sn) = (f64::from(cos[t]), f64::from(sin[t]));
                        let partner = if di < d / 2 {
                            -xv(di + d / 2)
                        } else {
                            xv(di - d / 2)
                        };
                        let (p1, p2) = (xv(di) * c, partner * sn);
                        let exact = p1 + p2;
                        let g = f64::from(got[((bi * h + hi) * s + si) * d + di]);
                        let bound = 2.0 * u * (p1.abs() + p2.abs()) + u * exact.abs();
                        assert!(
                            (g - exact).abs() <= bound,
                            "[{bi}, {hi}, {si}, {di}]: {g} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    /// The fused attention against an f64 attention of the same values, over more keys than
    /// one chunk (37 = 32 + 5), a head width that is not a multiple of the cube (40), grouped
    /// heads (4 query heads on 2 key/value heads), a strided query rotated by slices of larger
    /// tables, keys and values read as views of larger cache buffers, masked keys and a fully
    /// masked row (uniform weights, as burn's softmax gives). Bound per output: the rotation
    /// (two products and a sum per query value) and the score's dot product (`γ_d` of
    /// `Σ|q·k|`, the scaling and the mask add) move each weight by at most `e^{2Δ} − 1`; each
    /// exponential is within `3 + 2|x|` ULP (Vulkan's bound) of its argument `x`, chained over
    /// the chunks' rescalings; the weighted sums and the total are sums of `keys + chunks`
    /// terms; the last division a few ULP. Twice all that, summed over the keys' weights.
    #[test]
    fn the_fused_attention_is_softmax_attention_within_its_bound() {
        use crate::model::rope::RopeTables;
        let device = init(BackendKind::Wgpu).unwrap();
        let (b, heads, kv, s, d, keys, cap, at) = (2, 4, 2, 3, 40, 37, 45, 5);
        let group = heads / kv;
        let q: Vec<f32> = random_values(b * s * heads * d, 21)
            .iter()
            .map(|v| v * 3.0)
            .collect();
        let (k, v) = (
            random_values(b * kv * cap * d, 22),
            random_values(b * kv * cap * d, 23),
        );
        let (cos, sin) = (
            random_values(b * cap * d, 25),
            random_values(b * cap * d, 26),
        );
        let coins = random_values(b * s * cap, 24);
        let masked = -1e30f32;
        let mask: Vec<f32> = coins
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let (bi, si) = (i / (s * cap), (i / cap) % s);
                if c < -0.6 || (bi, si) == (1, 2) {
                    masked
                } else {
                    0.0
                }
            })
            .collect();
        let cache = |values: &Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(values.clone(), [b, kv, cap, d]), &device)
                .slice([0..b, 0..kv, 0..keys, 0..d])
        };
        let table = |values: &Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(values.clone(), [b, 1, cap, d]), &device)
                .slice([0..b, 0..1, at..at + s, 0..d])
        };
        let tables = RopeTables {
            cos: table(&cos),
            sin: table(&sin),
        };
        // The query as the projection's layout `[b, s, heads, d]` seen as `[b, heads, s, d]`.
        let qt = Tensor::<4>::from_data(TensorData::new(q.clone(), [b, s, heads, d]), &device)
            .swap_dims(1, 2);
        let mt = Tensor::<4>::from_data(TensorData::new(mask.clone(), [b, 1, s, cap]), &device)
            .slice([0..b, 0..1, 0..s, 0..keys]);
        let got = super::attention(qt, &tables, cache(&k), cache(&v), mt)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(got.len(), b * s * heads * d);
        let u = F32_UNIT_ROUNDOFF;
        let chunks = keys.div_ceil(super::kernels::ATTENTION_UNITS as usize) as f64;
        let sum_terms = gamma(keys + 2 * chunks as usize);
        let root = (d as f64).sqrt();
        for bi in 0..b {
            for si in 0..s {
                for hi in 0..heads {
                    // The rotated query in f64, and the rounding of the f32 rotation.
                    let raw = |i: usize| f64::from(q[((bi * s + si) * heads + hi) * d + i]);
                    let t = |i: usize| (bi * cap + at + si) * d + i;
                    let (rot, rot_err): (Vec<f64>, Vec<f64>) = (0..d)
                        .map(|i| {
                            let partner = if i < d / 2 {
                                -raw(i + d / 2)
                            } else {
                                raw(i - d / 2)
                            };
                            let (p1, p2) = (
                                raw(i) * f64::from(cos[t(i)]),
                                partner * f64::from(sin[t(i)]),
                            );
                            (p1 + p2, 3.0 * u * (p1.abs() + p2.abs()))
                        })
                        .unzip();
                    let at = |j: usize, i: usize| ((bi * kv + hi / group) * cap + j) * d + i;
                    let (mut scores, mut delta) = (Vec::new(), 0.0f64);
                    for j in 0..keys {
                        let kv_ = |i: usize| f64::from(k[at(j, i)]);
                        let dot: f64 = (0..d).map(|i| rot[i] * kv_(i)).sum();
                        let size: f64 = (0..d).map(|i| (rot[i] * kv_(i)).abs()).sum();
                        let moved: f64 = (0..d).map(|i| rot_err[i] * kv_(i).abs()).sum();
                        let m = f64::from(mask[(bi * s + si) * cap + j]);
                        scores.push(dot / root + m);
                        if m == 0.0 {
                            let err =
                                (gamma(d) * size + moved) / root + 16.0 * u * (dot / root).abs();
                            delta = delta.max(err);
                        }
                    }
                    let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|&x| (x - top).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    let w: Vec<f64> = exps.iter().map(|e| e / total).collect();
                    // Relative error of each unnormalised weight from the exponentials.
                    let eps: Vec<f64> = scores
                        .iter()
                        .zip(&w)
                        .map(|(&x, &wj)| match wj > 0.0 {
                            true => 2.0 * u * (3.0 * (chunks + 1.0) + 3.0 * (top - x)),
                            false => 0.0,
                        })
                        .collect();
                    let spread = (2.0 * delta).exp() - 1.0;
                    let weighted_eps: f64 = w.iter().zip(&eps).map(|(a, e)| a * e).sum();
                    for i in 0..d {
                        let vs = |j: usize| f64::from(v[at(j, i)]);
                        let exact: f64 = (0..keys).map(|j| w[j] * vs(j)).sum();
                        let size: f64 = (0..keys).map(|j| w[j] * vs(j).abs()).sum();
                        let own: f64 = (0..keys).map(|j| w[j] * vs(j).abs() * eps[j]).sum();
                        let bound = 2.0
                            * (size * (2.0 * (sum_terms + spread) + weighted_eps + 8.0 * u) + own);
                        let g = f64::from(got[((bi * s + si) * heads + hi) * d + i]);
                        assert!(
                            (g - exact).abs() <= bound,
                            "[{bi}, {si}, {hi}, {i}]: {g} vs {exact} (bound {bound:e})"
                        );
                    }
                }
            }
        }
    }

    /// The fused `silu(gate)·up` against f64: the exponential within `3 + 2|g|` ULP, then an
    /// addition, a division and a product (a few ULP each).
    #[test]
    fn the_fused_swiglu_is_silu_times_up_within_its_bound() {
        let device = init(BackendKind::Wgpu).unwrap();
        let n = 3 * 5 * 77;
        let gate: Vec<f32> = random_values(n, 31).iter().map(|v| v * 12.0).collect();
        let up = random_values(n, 32);
        let tensor = |values: &Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(values.clone(), [3, 5, 77]), &device)
        };
        let got = super::swiglu(tensor(&gate), tensor(&up))
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let u = F32_UNIT_ROUNDOFF;
        for (i, ((&g, &up), &out)) in gate.iter().zip(&up).zip(&got).enumerate() {
            let (g, up) = (f64::from(g), f64::from(up));
            let exact = g / (1.0 + (-g).exp()) * up;
            let bound = (2.0 * u * (3.0 + 2.0 * g.abs()) + 12.0 * u) * exact.abs();
            assert!(
                (f64::from(out) - exact).abs() <= bound,
                "value {i}: {out} vs {exact}"
            );
        }
    }

    /// Tensors in an autodiff graph take burn's differentiable compositions, also when they are
    /// not leaves (`2·x` here): the gradients through RMSNorm and RoPE on wgpu are the CPU's
    /// within the bound of their sums (64 terms, a few chained).
    #[test]
    fn tracked_inputs_keep_the_differentiable_norm_and_rope() {
        use crate::model::rope::{RopeTables, apply_rope};
        let grad = |device: burn::tensor::Device| {
            let device = device.autodiff();
            let x = Tensor::<4>::from_data(
                TensorData::new(random_values(2 * 3 * 4 * 64, 4), [2, 3, 4, 64]),
                &device,
            )
            .require_grad();
            let w = Tensor::<1>::from_data(TensorData::new(random_values(64, 5), [64]), &device);
            let table = |seed| {
                Tensor::<4>::from_data(
                    TensorData::new(random_values(2 * 4 * 64, seed), [2, 1, 4, 64]),
                    &device,
                )
            };
            let tables = RopeTables {
                cos: table(6),
                sin: table(7),
            };
            let y = apply_rope(
                crate::model::norm::rms_norm(x.clone() * 2.0, w, 1e-6),
                &tables,
            );
            let g = random_values(2 * 3 * 4 * 64, 8);
            let g = Tensor::<4>::from_data(TensorData::new(g, [2, 3, 4, 64]), &device);
            let grads = (y * g).sum().backward();
            x.grad(&grads)
                .expect("a gradient for x")
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let (gpu, cpu) = (
            grad(init(BackendKind::Wgpu).unwrap()),
            grad(init(BackendKind::Cpu).unwrap()),
        );
        let magnitude: f64 = cpu.iter().map(|&v| f64::from(v).abs()).sum();
        let bound = crate::numerics::reorder_tolerance(4, 64, magnitude);
        for (i, (&a, &b)) in gpu.iter().zip(&cpu).enumerate() {
            assert!(
                (f64::from(a) - f64::from(b)).abs() <= bound,
                "x.grad[{i}]: wgpu {a} vs cpu {b} (bound {bound:e})"
            );
        }
        assert!(cpu.iter().any(|&v| v != 0.0));
    }
}
