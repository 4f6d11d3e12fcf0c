//! Error bounds for comparing two f32 computations of one quantity that differ only in the
//! order of their sums: another machine's SIMD width (AVX2, AVX-512, NEON), another thread
//! count, another batch shape, or another backend. Tests set their tolerances from these, never
//! from what one machine printed.
//!
//! A sum of `n` terms computed in floating point in any order satisfies
//! `|fl(Σxᵢ) − Σxᵢ| ≤ γₙ₋₁·Σ|xᵢ|`, with `γₙ = n·u / (1 − n·u)` and the unit roundoff `u`
//! (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §4.2). Two orders of the
//! same sum therefore differ by at most `2γₙ·Σ|xᵢ|`; a computation that chains `k` such
//! reductions, each feeding the next through well-conditioned operations, differs by at most
//! about `k` times that (first order). The magnitude `Σ|xᵢ|` is taken as the size of the
//! quantity compared (the largest logit, a gradient's norm), which holds while the terms do not
//! cancel far beyond it.

use crate::model::config::ModelConfig;

/// The unit roundoff of f32, `u = 2⁻²⁴`.
pub const F32_UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;

/// Higham's `γₙ = n·u / (1 − n·u)` for f32: the relative error bound of an `n`-term sum in
/// any order.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * F32_UNIT_ROUNDOFF;
    assert!(nu < 1.0, "γ({n}) is unbounded in f32");
    nu / (1.0 - nu)
}

/// The largest difference between two f32 evaluations of one computation that differ only in
/// summation order: `2·stages·γ(terms)·magnitude`, for `stages` chained reductions of at most
/// `terms` terms over values of size `magnitude`.
pub fn reorder_tolerance(stages: usize, terms: usize, magnitude: f64) -> f64 {
    2.0 * stages as f64 * gamma(terms) * magnitude
}

/// The longest reduction in a pass of `config`'s model over `positions` positions: the MLP
/// width, the hidden size, the attention width (`o_proj`'s input, wider than the hidden size
/// in Qwen3), the positions (attention, sums over positions) and, with
/// `vocabulary`, the vocabulary (log-softmax, the head's backward).
pub fn longest_reduction(config: &ModelConfig, positions: usize, vocabulary: bool) -> usize {
    let widest = config
        .intermediate_size
        .max(config.hidden_size)
        .max(config.num_attention_heads * config.head_dim)
        .max(positions);
    if vocabulary {
        widest.max(config.vocab_size)
    } else {
        widest
    }
}

/// [`reorder_tolerance`] for logits of `config`'s model over `positions` positions, of size
/// `magnitude` (the largest logit; 1 for errors relative to it).
pub fn logits_tolerance(config: &ModelConfig, positions: usize, magnitude: f64) -> f64 {
    reorder_tolerance(
        forward_stages(config.num_hidden_layers),
        longest_reduction(config, positions, false),
        magnitude,
    )
}

/// [`reorder_tolerance`] for log-probabilities and losses made from them (one more reduction,
/// over the vocabulary), of size `magnitude`.
pub fn logprob_tolerance(config: &ModelConfig, positions: usize, magnitude: f64) -> f64 {
    reorder_tolerance(
        forward_stages(config.num_hidden_layers) + 1,
        longest_reduction(config, positions, true),
        magnitude,
    )
}

/// [`reorder_tolerance`] for gradients through `config`'s model over `positions` positions, of
/// size `magnitude` (the gradient's norm).
pub fn gradient_tolerance(config: &ModelConfig, positions: usize, magnitude: f64) -> f64 {
    reorder_tolerance(
        backward_stages(config.num_hidden_layers),
        longest_reduction(config, positions, true),
        magnitude,
    )
}

/// The central difference `(f(h) − f(−h)) / 2h` of `f` at 0, with an estimate of its own
/// error: `|D(h) − D(h/2)|`. Truncation (`O(h²)`) and the rounding of `f` (`O(ε/h)`, from
/// whatever summation order this machine uses) both show in it, so a test that allows an
/// analytic derivative a few times this estimate holds on any machine, and stays tight where
/// `f` is computed precisely.
pub fn central_difference(mut f: impl FnMut(f64) -> f64, h: f64) -> (f64, f64) {
    let mut at = |step: f64| (f(step) - f(-step)) / (2.0 * step);
    let coarse = at(h);
    let fine = at(h / 2.0);
    (coarse, (coarse - fine).abs())
}

/// Checks an autodiff derivative against a [`central_difference`] `(numeric, error)`: they may
/// differ by three times the difference's own error estimate (truncation and this machine's
/// rounding) plus `tolerance`, the analytic side's summation-order bound. The error says by
/// how much they differ and what was allowed.
pub fn check_derivative(
    analytic: f64,
    (numeric, error): (f64, f64),
    tolerance: f64,
) -> Result<(), String> {
    let allowed = 3.0 * error + tolerance;
    let gap = (analytic - numeric).abs();
    match gap <= allowed {
        true => Ok(()),
        false => Err(format!(
            "autodiff {analytic}, finite differences {numeric}: apart by {gap:.3e}, allowed \
             {allowed:.3e} (error estimate {error:.1e})"
        )),
    }
}

/// Chained reductions in a decoder's forward pass: per layer the two RMSNorms, the q/k/v
/// projections, the attention scores, their softmax, the weighted sum of values, the output
/// projection, gate/up and down (9); then the final norm and the head (2).
pub fn forward_stages(layers: usize) -> usize {
    9 * layers + 2
}

/// Chained reductions in a forward pass, its backward (each forward reduction has a transposed
/// one) and the sum of a parameter's gradient over positions and modules.
pub fn backward_stages(layers: usize) -> usize {
    2 * forward_stages(layers) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_is_n_u_to_first_order() {
        assert_eq!(gamma(0), 0.0);
        let g = gamma(1000);
        assert!((g / (1000.0 * F32_UNIT_ROUNDOFF) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn two_orders_of_a_sum_stay_within_the_bound() {
        // Forward, backward and pairwise (SIMD-like, 16 lanes) orders of one f32 sum.
        let xs: Vec<f32> = (0..4096)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let forward: f32 = xs.iter().sum();
        let backward: f32 = xs.iter().rev().sum();
        let lanes: f32 = (0..16)
            .map(|l| xs.iter().skip(l).step_by(16).sum::<f32>())
            .sum();
        let magnitude: f64 = xs.iter().map(|x| f64::from(x.abs())).sum();
        let bound = reorder_tolerance(1, xs.len(), magnitude);
        for (a, b) in [(forward, backward), (forward, lanes), (backward, lanes)] {
            assert!(
                f64::from((a - b).abs()) <= bound,
                "{a} vs {b}, bound {bound}"
            );
        }
    }
}
