//! GRPO's objective, pure arithmetic on tensors: group-normalised advantages, the clipped
//! token-level policy loss (verl `core_algos.py`: `compute_grpo_outcome_advantage`,
//! `compute_policy_loss_vanilla`) with the loss aggregations of TRL's `loss_type`, and the k3
//! KL estimate.

use burn::tensor::{Tensor, TensorData};

/// How per-token losses are reduced to one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over each sequence's tokens, then over sequences (the original GRPO).
    Grpo,
    /// Mean over all tokens of the batch (verl `token-mean`, DAPO; the paper's runs).
    Dapo,
    /// Sum over tokens divided by `batch × max_len` (Dr. GRPO: no length bias).
    DrGrpo,
}

/// Clipping of the importance ratio.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Clip {
    /// Lower clip ε (ratio ≥ 1 − ε); the paper's runs use 0.2.
    pub low: f64,
    /// Upper clip ε (ratio ≤ 1 + ε); the paper's runs use 0.4 ("clip-higher").
    pub high: f64,
    /// Dual clip `c` for negative advantages (verl default 3.0); `None` disables it.
    pub dual: Option<f64>,
}

impl Default for Clip {
    fn default() -> Self {
        Self {
            low: 0.2,
            high: 0.4,
            dual: Some(3.0),
        }
    }
}

/// Group-normalised advantages: `(r − mean) / (max(std, floor) + eps)` over consecutive groups
/// of `group_size` rewards, `std` unbiased (as `torch.std`). A group of one gets `r − 0` over 1,
/// as in verl.
pub fn group_advantages(rewards: &[f32], group_size: usize, eps: f64, std_floor: f64) -> Vec<f32> {
    assert!(group_size > 0, "group size");
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let n = group.len() as f64;
        let (mean, std) = if group.len() == 1 {
            (0.0, 1.0)
        } else {
            let mean = group.iter().map(|&r| f64::from(r)).sum::<f64>() / n;
            let var = group
                .iter()
                .map(|&r| (f64::from(r) - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0);
            (mean, var.sqrt())
        };
        out.extend(
            group
                .iter()
                .map(|&r| ((f64::from(r) - mean) / (std.max(std_floor) + eps)) as f32),
        );
    }
    out
}

/// The denominators of a loss over a whole mini-batch. Micro-batches reduce with the
/// mini-batch's denominators, so their losses (and gradients) add up to the mini-batch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denominators {
    /// Sequences in the mini-batch.
    pub sequences: usize,
    /// Response tokens in the mini-batch.
    pub tokens: usize,
    /// The generation budget (`max_new_tokens`), Dr. GRPO's constant length.
    pub max_len: usize,
}

impl Denominators {
    /// The denominators of a mini-batch with responses of `lengths` tokens.
    pub fn of(lengths: impl IntoIterator<Item = usize>, max_len: usize) -> Self {
        let (mut sequences, mut tokens) = (0, 0);
        for len in lengths {
            sequences += 1;
            tokens += len;
        }
        Self {
            sequences,
            tokens,
            max_len,
        }
    }
}

/// Reduces per-token values over the response tokens (`mask = 1`) by `loss_type`:
/// `grpo` sums per-sequence means and divides by the sequences, `dapo` sums and divides by the
/// tokens, `dr_grpo` sums and divides by `sequences × max_len` (TRL's Dr. GRPO).
///
/// # Shapes
/// - `values`, `mask`: `[batch, len]`
/// - output: `[1]`
pub fn reduce(
    values: Tensor<2>,
    mask: Tensor<2>,
    loss_type: LossType,
    denominators: &Denominators,
) -> Tensor<1> {
    let masked = values * mask.clone();
    let d = denominators;
    match loss_type {
        LossType::Dapo => masked.sum().div_scalar(d.tokens.max(1) as f64),
        LossType::Grpo => masked
            .sum_dim(1)
            .div(mask.sum_dim(1).clamp_min(1.0))
            .sum()
            .div_scalar(d.sequences.max(1) as f64),
        LossType::DrGrpo => masked
            .sum()
            .div_scalar((d.sequences * d.max_len).max(1) as f64),
    }
}

/// The clipped policy-gradient loss and how many tokens the clip bound.
pub struct PolicyLoss {
    /// The reduced loss, `[1]`.
    pub loss: Tensor<1>,
    /// Response tokens whose clipped term was the active one, `[1]` (verl's `pg_clipfrac`
    /// numerator).
    pub clipped_tokens: Tensor<1>,
}

/// The clipped policy-gradient loss.
///
/// `ρ = exp(clamp(logπ − logπ_old, −20, 20))`, per token `L = max(−Aρ, −A·clip(ρ, 1−low, 1+high))`,
/// and for `A < 0` with dual clip `L = min(L, −A·c)`; times the importance weight of rollouts
/// from another engine (`is_weights`, [`super::importance`]; constants); then reduced by
/// [`reduce`] over the response tokens (`mask = 1`).
///
/// # Shapes
/// - `logp`, `old_logp`, `mask`, `is_weights`: `[batch, len]`
/// - `advantages`: `[batch]`
#[allow(clippy::too_many_arguments)]
pub fn policy_loss(
    logp: Tensor<2>,
    old_logp: Tensor<2>,
    advantages: &[f32],
    mask: Tensor<2>,
    is_weights: Option<Tensor<2>>,
    clip: &Clip,
    loss_type: LossType,
    denominators: &Denominators,
) -> PolicyLoss {
    let [batch, len] = logp.dims();
    let device = logp.device();
    let adv = Tensor::<2>::from_data(TensorData::new(advantages.to_vec(), [batch, 1]), &device);
    let ratio = (logp - old_logp).clamp(-20.0, 20.0).exp();
    let unclipped = -adv.clone() * ratio.clone();
    let clipped = -adv.clone() * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    let clipped_tokens = (clipped.clone().greater(unclipped.clone()).float() * mask.clone()).sum();
    let mut per_token = unclipped.max_pair(clipped);
    if let Some(c) = clip.dual {
        let capped = per_token.clone().min_pair(-adv.clone() * c);
        per_token = per_token.mask_where(adv.lower_elem(0.0).expand([batch, len]), capped);
    }
    if let Some(weights) = is_weights {
        per_token = per_token * weights;
    }
    PolicyLoss {
        loss: reduce(per_token, mask, loss_type, denominators),
        clipped_tokens,
    }
}

/// verl's `low_var_kl` (Schulman's k3) to a reference policy, per token:
/// `d = clamp(ref − logπ, −20, 20)`, `kl = clamp(exp(d) − d − 1, −10, 10)`. Non-negative, zero
/// where the policies agree; its gradient is an unbiased estimate of the KL's.
///
/// # Shapes
/// - `logp`, `ref_logp`, output: `[batch, len]`
pub fn kl_k3(logp: Tensor<2>, ref_logp: Tensor<2>) -> Tensor<2> {
    let d = (ref_logp - logp).clamp(-20.0, 20.0);
    (d.clone().exp() - d - 1.0).clamp(-10.0, 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn advantages_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5, unbiased std √(1/3) ≈ 0.57735.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4, 1e-6, 0.0);
        let s = (1.0f64 / 3.0).sqrt();
        for (got, want) in a[..4].iter().zip([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{a:?}");
        }
        assert!(
            a[4..].iter().all(|&x| x == 0.0),
            "a zero-std group has no signal"
        );
        let single = f64::from(group_advantages(&[0.7], 1, 1e-6, 0.0)[0]);
        assert!((single - f64::from(0.7f32) / (1.0 + 1e-6)).abs() < 1e-7);
        let floored = group_advantages(&[1.0, 0.0], 2, 0.0, 10.0);
        assert!((floored[0] - 0.05).abs() < 1e-7);
    }

    /// How far these six-token losses may be from the exact value in f32, in any summation
    /// order: two reductions over at most 6 terms of size at most |A|·e^1.5·w < 12 (importance
    /// weights w ≤ 2), plus 4 ULP of each term's `exp` and its weighting.
    fn loss_tolerance() -> f64 {
        let terms = 6.0 * 12.0;
        crate::numerics::reorder_tolerance(2, 6, terms)
            + 8.0 * crate::numerics::F32_UNIT_ROUNDOFF * terms
    }

    /// The same loss in scalar f64, written out from the formula.
    fn reference(
        logp: &[[f64; 3]; 2],
        old: &[[f64; 3]; 2],
        adv: [f64; 2],
        mask: &[[f64; 3]; 2],
        weights: &[[f64; 3]; 2],
        clip: &Clip,
        kind: LossType,
    ) -> f64 {
        let mut per_seq = [0.0; 2];
        let (mut total, mut count) = (0.0, 0.0);
        for b in 0..2 {
            let mut tokens = 0.0;
            for t in 0..3 {
                let ratio = (logp[b][t] - old[b][t]).clamp(-20.0, 20.0).exp();
                let mut l =
                    (-adv[b] * ratio).max(-adv[b] * ratio.clamp(1.0 - clip.low, 1.0 + clip.high));
                if let (Some(c), true) = (clip.dual, adv[b] < 0.0) {
                    l = l.min(-adv[b] * c);
                }
                l *= weights[b][t];
                per_seq[b] += l * mask[b][t];
                total += l * mask[b][t];
                tokens += mask[b][t];
                count += mask[b][t];
            }
            per_seq[b] /= tokens;
        }
        match kind {
            LossType::Dapo => total / count,
            LossType::Grpo => (per_seq[0] + per_seq[1]) / 2.0,
            LossType::DrGrpo => total / (2.0 * 4.0),
        }
    }

    #[test]
    fn loss_matches_the_formula_for_every_aggregation() {
        let device = Device::flex();
        // Ratios exp(±0.5), exp(1.5) (clipped high), exp(−2) (clipped low), one beyond the dual clip.
        let logp = [[-1.0, -0.5, 0.0], [-2.0, -3.5, -0.2]];
        let old = [[-1.5, -1.0, -1.5], [-0.5, -1.5, -1.4]];
        let mask = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]];
        let adv = [1.3, -0.8];
        let t = |v: &[[f64; 3]; 2]| {
            let flat: Vec<f32> = v.iter().flatten().map(|&x| x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(flat, [2, 3]), &device)
        };
        let ones = [[1.0; 3]; 2];
        let weights = [[0.5, 2.0, 1.0], [1.0, 0.0, 1.7]];
        let cases = [
            (Clip::default(), None),
            (Clip::default(), Some(weights)),
            (
                Clip {
                    dual: None,
                    ..Clip::default()
                },
                None,
            ),
        ];
        for (clip, is_weights) in cases {
            for kind in [LossType::Grpo, LossType::Dapo, LossType::DrGrpo] {
                let denominators = Denominators::of([2, 3], 4);
                let ours = policy_loss(
                    t(&logp),
                    t(&old),
                    &[1.3, -0.8],
                    t(&mask),
                    is_weights.as_ref().map(t),
                    &clip,
                    kind,
                    &denominators,
                )
                .loss
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()[0];
                let w = is_weights.as_ref().unwrap_or(&ones);
                let want = reference(&logp, &old, adv, &mask, w, &clip, kind);
                assert!(
                    (f64::from(ours) - want).abs() <= loss_tolerance(),
                    "{kind:?} {clip:?}: {ours} vs {want}"
                );
            }
        }
    }

    fn tensor(rows: &[&[f32]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), device)
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn micro_batches_add_up_and_clipped_tokens_are_counted() {
        let device = Device::flex();
        let logp: [&[f32]; 2] = [&[-1.0, -0.5, 0.0], &[-2.0, -3.5, -0.2]];
        let old: [&[f32]; 2] = [&[-1.5, -1.0, -1.5], &[-0.5, -1.5, -1.4]];
        let mask: [&[f32]; 2] = [&[1.0, 1.0, 0.0], &[1.0, 1.0, 1.0]];
        let adv = [1.3f32, -0.8];
        let d = Denominators::of([2, 3], 4);
        let clip = Clip::default();
        for kind in [LossType::Grpo, LossType::Dapo, LossType::DrGrpo] {
            let whole = policy_loss(
                tensor(&logp, &device),
                tensor(&old, &device),
                &adv,
                tensor(&mask, &device),
                None,
                &clip,
                kind,
                &d,
            );
            let parts: f32 = (0..2)
                .map(|i| {
                    scalar(
                        policy_loss(
                            tensor(&logp[i..=i], &device),
                            tensor(&old[i..=i], &device),
                            &adv[i..=i],
                            tensor(&mask[i..=i], &device),
                            None,
                            &clip,
                            kind,
                            &d,
                        )
                        .loss,
                    )
                })
                .sum();
            assert!(
                f64::from((scalar(whole.loss) - parts).abs()) <= loss_tolerance(),
                "{kind:?}"
            );
            // Row 0 (A > 0): ratios e^0.5, e^0.5 — e^0.5 ≈ 1.65 > 1.4 is clipped, both tokens.
            // Row 1 (A < 0): ratios e^−1.5, e^−2, e^1.2 — the first two fall below 0.8 and
            // the clipped term −A·0.8 is larger; e^1.2 is above 1.4, where the unclipped term
            // is larger. So 2 + 2 = 4 clipped tokens.
            assert_eq!(scalar(whole.clipped_tokens), 4.0);
        }
    }

    #[test]
    fn k3_by_hand() {
        let device = Device::flex();
        let kl = kl_k3(
            tensor(&[&[-1.0, -2.0, -0.3]], &device),
            tensor(&[&[-1.5, -1.0, -0.3]], &device),
        );
        let got = kl.into_data().try_to_vec::<f32>().unwrap();
        let deltas = [-0.5f64, 1.0, 0.0];
        for (g, d) in got.iter().zip(deltas) {
            // e^Δ − Δ − 1: 4 ULP for `exp` and one rounding per operation, of the terms' size.
            let tol = 8.0 * crate::numerics::F32_UNIT_ROUNDOFF * (d.exp() + d.abs() + 1.0);
            assert!(
                (f64::from(*g) - (d.exp() - d - 1.0)).abs() <= tol,
                "{got:?}"
            );
        }
    }
}
