//! A linear layer holding its weight as `[in, out]` (transposed once at load time from the
//! checkpoint's `[out, in]`), with an optional bias.

use burn::tensor::Tensor;
use burn::tensor::module::linear;

/// `y = x·Wᵀ + b` with `W` stored transposed.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `Wᵀ`, shape `[in, out]`.
    pub weight_t: Tensor<2>,
    /// Bias `[out]`, if the layer has one.
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[..., in]`
    /// - output: `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight_t.clone(), self.bias.clone())
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight_t.dims();
        (i, o)
    }
}
