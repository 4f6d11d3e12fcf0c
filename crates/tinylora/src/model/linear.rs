//! A linear layer holding its weight as `[in, out]` (a transposed view of the checkpoint's
//! contiguous `[out, in]`), with an optional bias and an optional TinyLoRA adapter.

use burn::tensor::Tensor;
use burn::tensor::module::linear;

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

/// Up to this many rows, [`project`] computes `(W·xᵀ)ᵀ` instead of `x·Wᵀ`.
const WEIGHT_LEFT_MAX_ROWS: usize = 32;

/// `x·Wᵀ + b` through `weight_t` (`[in, out]`, a transposed view of the checkpoint's
/// contiguous `[out, in]`), always as one 2-D product over the flattened rows.
///
/// Up to [`WEIGHT_LEFT_MAX_ROWS`] rows (decoding) it computes `(W·xᵀ)ᵀ`, with the contiguous
/// matrix on the left: gemm then reads the weight in place (a matrix-vector product for one
/// row) instead of packing a copy of all of it on every call. More rows (prefill, log-prob
/// recomputation) are faster as `x·Wᵀ`. burn's `linear` is avoided on purpose: for a
/// `[1, seq, in]` input it reshapes the weight to `[1, in, out]`, which copies the transposed
/// view into a new contiguous matrix on every call. Measured on the 0.5B shape (2 CPU cores,
/// `BENCHMARKS.md`): prefill 45 → 75–87 tok/s, decode at batch 8 +10 %, at batch 32 +20 %.
///
/// # Shapes
/// - `x`: `[..., in]`; `weight_t`: `[in, out]`; `bias`: `[out]`; output `[..., out]`
pub fn project<const D: usize>(
    x: Tensor<D>,
    weight_t: &Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let [d_in, d_out] = weight_t.dims();
    let x = x.reshape([rows, d_in]);
    let y = if rows <= WEIGHT_LEFT_MAX_ROWS {
        weight_t
            .clone()
            .transpose()
            .matmul(x.transpose())
            .transpose()
    } else {
        x.matmul(weight_t.clone())
    };
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    dims[D - 1] = d_out;
    y.reshape(dims)
}

/// `y = x·Wᵀ + b (+ adapter)` with `W` stored transposed.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `Wᵀ`, shape `[in, out]`.
    pub weight_t: Tensor<2>,
    /// Bias `[out]`, if the layer has one.
    pub bias: Option<Tensor<1>>,
    /// TinyLoRA adapter, if attached.
    pub adapter: Option<LinearAdapter>,
}

impl Linear {
    /// A plain layer without adapter.
    pub fn new(weight_t: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight_t,
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
        let base = project(x.clone(), &self.weight_t, self.bias.clone());
        match &self.adapter {
            Some(ad) if !ad.merged => {
                let h = linear(x, ad.a_t.clone(), None);
                let h = linear(h, ad.mix.clone(), None);
                base + linear(h, ad.b_t.clone(), None)
            }
            _ => base,
        }
    }

    /// Adds the adapter's `ΔW` into the weight (fast inference, export). No-op without adapter.
    pub fn merge_adapter(&mut self) {
        if let Some(ad) = self.adapter.as_mut().filter(|a| !a.merged) {
            self.weight_t = self.weight_t.clone() + ad.delta_t();
            ad.merged = true;
        }
    }

    /// Subtracts a merged `ΔW` again, restoring the unmerged forward.
    pub fn unmerge_adapter(&mut self) {
        if let Some(ad) = self.adapter.as_mut().filter(|a| a.merged) {
            self.weight_t = self.weight_t.clone() - ad.delta_t();
            ad.merged = false;
        }
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight_t.dims();
        (i, o)
    }
}
