//! RMSNorm and RoPE in one GPU kernel each, for passes without gradients (generation,
//! evaluation): burn's compositions launch seven kernels for RMSNorm (square, mean, add, square
//! root, reciprocal, two products) and about seven for RoPE (two slices, a negation, a
//! concatenation, two products, a sum), which a GPU pays for per launch and a software one
//! (lavapipe, SwiftShader) pays dearly for. Tensors in an autodiff graph (`is_tracked`: a leaf
//! that requires a gradient or anything computed from one) keep the differentiable compositions ([`crate::model::norm::rms_norm`] and
//! [`crate::model::rope::apply_rope`] choose).

pub(crate) mod kernels;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension,
};
use burn::tensor::{DType, Tensor as BurnTensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use kernels::{NORM_UNITS, rms_norm_kernel, rope_kernel};

/// The fused kernels as backend operations (not differentiable).
#[backend_extension(Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff)]
pub trait FusedBackend: Backend {
    /// `x / sqrt(mean(x², last) + eps) · weight`: `x` `[..., d]`, `weight` `[d]`.
    fn fused_rms_norm(
        x: FloatTensor<Self>,
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
}

/// A new contiguous f32 tensor of `x`'s shape beside it.
fn empty_f32_like(x: &CubeTensor) -> CubeTensor {
    assert_eq!(x.dtype, DType::F32, "the fused kernels take f32");
    empty_device_dtype(x.client.clone(), x.device.clone(), x.shape(), DType::F32)
}

impl FusedBackend for CubeBackend {
    fn fused_rms_norm(x: CubeTensor, weight: CubeTensor, eps: f32) -> CubeTensor {
        let x = into_contiguous(x);
        let weight = into_contiguous(weight);
        let d = x.shape()[x.shape().len() - 1];
        let out = empty_f32_like(&x);
        let rows = out.meta.num_elements() / d.max(1);
        let dim = CubeDim::new_1d(NORM_UNITS);
        let count = calculate_cube_count_elemwise(&out.client, rows * NORM_UNITS as usize, dim);
        rms_norm_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            d as u32,
            eps,
        );
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
}

/// Untracked: [`rms_norm`] and [`rope`] are called only for inputs outside any autodiff graph
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
