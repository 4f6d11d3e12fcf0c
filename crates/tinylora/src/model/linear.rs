//! A linear layer: a frozen [`Weight`], an optional bias and an optional TinyLoRA adapter.

use burn::tensor::Tensor;
use burn::tensor::module::linear;

use super::weight::Weight;

/// Frozen TinyLoRA factors of one layer and the `r×r` matrix that mixes them:
/// `Δy = ((x·Aᵀ)·mix)·Bᵀ`, i.e. `ΔW = B·mixᵀ·A`.
#[derive(Debug, Clone)]
pub struct LinearAdapter {
    /// `Aᵀ`, `[in, r]`.
    pub a_t: Tensor<2>,
    /// `Bᵀ`, `[r, out]`.
    pub b_t: Tensor<2>,
    /// The projections `P` flattened to `[u, r·r]`.
    pub p: Tensor<2>,
    /// The current mixing matrix, `[r, r]` (derived from `v`; see `adapter::mix_matrix`).
    pub mix: Tensor<2>,
    /// Whether `ΔW` has been added into the weight (the adapter path is then skipped).
    pub merged: bool,
}

impl LinearAdapter {
    /// `ΔWᵀ = Aᵀ·mix·Bᵀ`, `[in, out]`.
    pub fn delta_t(&self) -> Tensor<2> {
        self.a_t
            .clone()
            .matmul(self.mix.clone())
            .matmul(self.b_t.clone())
    }
}

/// `y = x·Wᵀ + b (+ adapter)`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `W`, `[out, in]`.
    pub weight: Weight,
    /// Bias `[out]`, if the layer has one.
    pub bias: Option<Tensor<1>>,
    /// TinyLoRA adapter, if attached.
    pub adapter: Option<LinearAdapter>,
}

impl Linear {
    /// A plain layer without adapter.
    pub fn new(weight: Weight, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight,
            bias,
            adapter: None,
        }
    }

    /// Applies the layer (and its unmerged adapter).
    ///
    /// # Shapes
    /// - `x`: `[..., in]`
    /// - output: `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let base = self.weight.project(x.clone(), self.bias.clone());
        match &self.adapter {
            Some(ad) if !ad.merged => {
                let h = linear(x, ad.a_t.clone(), None);
                let h = linear(h, ad.mix.clone(), None);
                base + linear(h, ad.b_t.clone(), None)
            }
            _ => base,
        }
    }

    /// Adds the adapter's `ΔW` into a dense weight (fast inference). No-op without adapter and
    /// for a quantised weight, whose adapter stays a separate low-rank path.
    pub fn merge_adapter(&mut self) {
        if let (Some(ad), Some(w)) = (
            self.adapter.as_mut().filter(|a| !a.merged),
            self.weight.dense_mut(),
        ) {
            *w = w.clone() + ad.delta_t().transpose();
            ad.merged = true;
        }
    }

    /// Subtracts a merged `ΔW` again, restoring the unmerged forward.
    pub fn unmerge_adapter(&mut self) {
        if let (Some(ad), Some(w)) = (
            self.adapter.as_mut().filter(|a| a.merged),
            self.weight.dense_mut(),
        ) {
            *w = w.clone() - ad.delta_t().transpose();
            ad.merged = false;
        }
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        let [o, i] = self.weight.dims();
        (i, o)
    }
}
