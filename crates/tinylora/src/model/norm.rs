//! RMSNorm, the one normalisation of every layer and of the q/k heads of Qwen3.

use burn::tensor::Tensor;

/// Root-mean-square normalisation over the last dimension, as in Qwen2's `Qwen2RMSNorm`:
/// `x / sqrt(mean(x²) + eps) * weight`. On a GPU, when neither input is part of an autodiff
/// graph, one fused kernel ([`crate::gpu_fused`]); otherwise burn's differentiable operations.
///
/// # Shapes
/// - `x`: `[..., d]`
/// - `weight`: `[d]`
/// - output: same as `x`
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    if crate::gpu_fused::serves(&x) && !weight.is_tracked() {
        return crate::gpu_fused::rms_norm(x, weight, eps);
    }
    let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1);
    let normed = x.mul(mean_square.add_scalar(eps).sqrt().recip());
    let mut shape = [1usize; D];
    shape[D - 1] = weight.dims()[0];
    normed.mul(weight.reshape(shape))
}

/// `x + y` (a block's output added to the residual stream) and its [`rms_norm`]: one fused
/// kernel where [`rms_norm`] has one, burn's operations otherwise.
///
/// # Shapes
/// - `x`, `y`: `[..., d]`; `weight`: `[d]`; outputs: the sum and its normalisation, as `x`
pub fn add_rms_norm<const D: usize>(
    x: Tensor<D>,
    y: Tensor<D>,
    weight: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<D>) {
    if crate::gpu_fused::serves(&x) && !y.is_tracked() && !weight.is_tracked() {
        return crate::gpu_fused::add_rms_norm(x, y, weight, eps);
    }
    let sum = x + y;
    (sum.clone(), rms_norm(sum, weight, eps))
}
