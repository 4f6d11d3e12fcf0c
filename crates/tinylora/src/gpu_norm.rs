//! RMSNorm in one GPU kernel for passes without gradients (generation, evaluation): burn's
//! composition of it launches seven kernels (square, mean, add, square root, reciprocal and two
//! products), which a GPU pays for per launch and a software one (lavapipe, SwiftShader) pays
//! dearly for. Passes that need a gradient keep the differentiable composition
//! ([`crate::model::norm::rms_norm`] chooses).

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

/// Units of one cube, which normalises one row.
const NORM_UNITS: u32 = 64;

/// `out[row] = x[row] / sqrt(mean(x[row]²) + eps) · weight`, one cube per row of `d` values:
/// each unit sums the squares of every [`NORM_UNITS`]-th value, one adds the partial sums, and
/// all scale their values.
///
/// # Shapes
/// - `x`, `out`: `[rows, d]` contiguous; `weight`: `[d]`
#[cube(launch)]
fn rms_norm_kernel(x: &Tensor<f32>, weight: &Tensor<f32>, out: &mut Tensor<f32>, d: u32, eps: f32) {
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
    let lanes = comptime!(NORM_UNITS as usize);
    let mut partial = Shared::<[f32]>::new_slice(lanes);
    let mut total = Shared::<[f32]>::new_slice(1usize);
    partial[unit as usize] = acc;
    sync_cube();
    if unit == 0 {
        let mut sum = 0.0f32;
        for k in 0..lanes {
            sum += partial[k];
        }
        total[0usize] = sum;
    }
    sync_cube();
    let inverse = 1.0f32 / (total[0usize] / f32::cast_from(d) + eps).sqrt();
    let mut j = unit;
    while j < d {
        let at = (base + j) as usize;
        out[at] = x[at] * inverse * weight[j as usize];
        j += NORM_UNITS;
    }
}

/// RMSNorm as one backend operation.
#[backend_extension(Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff)]
pub trait RmsNormBackend: Backend {
    /// `x / sqrt(mean(x², last) + eps) · weight`: `x` `[..., d]`, `weight` `[d]`. Not
    /// differentiable.
    fn fused_rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;
}

impl RmsNormBackend for CubeBackend {
    fn fused_rms_norm(x: CubeTensor, weight: CubeTensor, eps: f32) -> CubeTensor {
        assert_eq!(x.dtype, DType::F32, "the fused RMSNorm takes f32");
        let x = into_contiguous(x);
        let weight = into_contiguous(weight);
        let shape = x.shape();
        let d = shape[shape.len() - 1];
        let out = empty_device_dtype(x.client.clone(), x.device.clone(), shape, DType::F32);
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
}

/// Untracked: [`rms_norm`] calls it only for inputs that need no gradient.
impl<B: RmsNormBackend, C: CheckpointStrategy> RmsNormBackend for Autodiff<B, C> {
    fn fused_rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let out = B::fused_rms_norm(x.into_primitive(), weight.into_primitive(), eps);
        <Self as AutodiffBackend>::from_inner(out)
    }
}

/// RMSNorm in one launch, for an `x` on a GPU that needs no gradient.
///
/// # Shapes
/// - `x`: `[..., d]`; `weight`: `[d]`; output: same as `x`
pub fn rms_norm<const D: usize>(
    x: BurnTensor<D>,
    weight: BurnTensor<1>,
    eps: f64,
) -> BurnTensor<D> {
    debug_assert!(!x.is_require_grad(), "the fused RMSNorm has no gradient");
    BurnTensor::from_dispatch(<Dispatch as RmsNormBackend>::fused_rms_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        eps as f32,
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

    /// A pass that needs a gradient takes burn's differentiable composition: the gradient
    /// reaches `x`.
    #[test]
    fn inputs_that_need_a_gradient_keep_the_differentiable_norm() {
        let device = init(BackendKind::Wgpu).unwrap().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(random_values(128, 4), [2, 64]), &device)
            .require_grad();
        let w = Tensor::<1>::from_data(TensorData::new(random_values(64, 5), [64]), &device);
        let y = crate::model::norm::rms_norm(x.clone(), w, 1e-6);
        let grads = y.sum().backward();
        let grad = x.grad(&grads).expect("a gradient for x");
        let values = grad
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(values.iter().any(|&g| g != 0.0));
    }
}
