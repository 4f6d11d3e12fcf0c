//! A linear layer: a frozen [`Weight`], an optional bias and an optional TinyLoRA adapter.

use burn::tensor::Tensor;
use burn::tensor::module::linear;

use super::weight::Weight;

/// Frozen TinyLoRA factors of one layer: `Δy = ((x·Aᵀ)·mix)·Bᵀ`, i.e. `ΔW = B·mixᵀ·A`, with
/// `mix` (from `v`) given to each forward pass in [`Mixes`].
#[derive(Debug, Clone)]
pub struct LinearAdapter {
    /// `Aᵀ`, `[in, r]`.
    pub a_t: Tensor<2>,
    /// `Bᵀ`, `[r, out]`.
    pub b_t: Tensor<2>,
    /// The projections `P` flattened to `[u, r·r]`.
    pub p: Tensor<2>,
    /// This layer's place among the adapter's modules: its mix is `Mixes[module]`.
    pub module: usize,
    /// The mix whose `ΔW` was added into the weight, while merged (the adapter path is then
    /// skipped, and unmerging subtracts that same `ΔW`).
    pub merged: Option<Tensor<2>>,
}

impl LinearAdapter {
    /// `ΔWᵀ = Aᵀ·mix·Bᵀ`, `[in, out]`.
    pub fn delta_t(&self, mix: &Tensor<2>) -> Tensor<2> {
        self.a_t
            .clone()
            .matmul(mix.clone())
            .matmul(self.b_t.clone())
    }
}

/// The adapter's mixing matrix (`[r, r]`) of every adapted module for one forward pass, in
/// module order (see [`LinearAdapter::module`]); derived from `v` by the adapter, never stored
/// in the model. Empty: the base model.
#[derive(Debug, Clone, Default)]
pub struct Mixes(pub Vec<Tensor<2>>);

impl Mixes {
    /// No adapter: the base model.
    pub fn none() -> Self {
        Self(Vec::new())
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

    /// Applies the layer, and its unmerged adapter with its mix from `mixes` (none there: the
    /// base layer).
    ///
    /// # Shapes
    /// - `x`: `[..., in]`
    /// - output: `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>, mixes: &Mixes) -> Tensor<D> {
        let base = self.weight.project(x.clone(), self.bias.clone());
        match self.active(mixes) {
            Some((ad, mix)) => {
                let h = linear(x, ad.a_t.clone(), None);
                let h = linear(h, mix.clone(), None);
                base + linear(h, ad.b_t.clone(), None)
            }
            None => base,
        }
    }

    /// The weight, when the layer at `mixes` is `x·Wᵀ` alone (no bias, no unmerged adapter
    /// active): what a kernel fusing this product with another may read in its place.
    pub fn bare_weight(&self, mixes: &Mixes) -> Option<&Weight> {
        (self.bias.is_none() && self.active(mixes).is_none()).then_some(&self.weight)
    }

    /// The unmerged adapter and its mix in `mixes`: what adds to this layer's output.
    fn active<'a>(&'a self, mixes: &'a Mixes) -> Option<(&'a LinearAdapter, &'a Tensor<2>)> {
        let ad = self.adapter.as_ref().filter(|ad| ad.merged.is_none())?;
        Some((ad, mixes.0.get(ad.module)?))
    }

    /// The dense weight with the adapter's `ΔW` at `mixes` added, `[out, in]` (for export).
    pub fn merged_weight(&self, mixes: &Mixes, device: &burn::tensor::Device) -> Tensor<2> {
        let w = self.weight.to_dense(device);
        match self.active(mixes) {
            Some((ad, mix)) => w + ad.delta_t(mix).transpose(),
            None => w,
        }
    }

    /// Adds the adapter's `ΔW` at `mixes` into a dense weight (fast inference). No-op without
    /// adapter and for a quantised weight, whose adapter stays a separate low-rank path.
    pub fn merge_adapter(&mut self, mixes: &Mixes) {
        if self.weight.dense_mut().is_none() {
            return;
        }
        let Some((delta, mix)) = self
            .active(mixes)
            .map(|(ad, mix)| (ad.delta_t(mix).transpose(), mix.clone()))
        else {
            return;
        };
        if let (Some(ad), Some(w)) = (self.adapter.as_mut(), self.weight.dense_mut()) {
            *w = w.clone() + delta;
            ad.merged = Some(mix);
        }
    }

    /// Subtracts a merged `ΔW` again, restoring the unmerged forward.
    pub fn unmerge_adapter(&mut self) {
        if let (Some(ad), Some(w)) = (self.adapter.as_mut(), self.weight.dense_mut())
            && let Some(mix) = ad.merged.take()
        {
            *w = w.clone() - ad.delta_t(&mix).transpose();
        }
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        let [o, i] = self.weight.dims();
        (i, o)
    }
}
