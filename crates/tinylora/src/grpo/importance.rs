//! Rollouts sampled by another engine (vLLM, llama.cpp's server): the gap between its
//! log-probabilities and the trainer's own, and the importance weights that correct the policy
//! loss for it, as verl's truncated importance sampling (per token, capped) and TRL's sequence
//! mask do (`docs/reference.md` §5.1; TRL's `vllm_importance_sampling_mode` [T]). Plain arithmetic on the host.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the gap between the engine's and the trainer's log-probabilities is corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsMode {
    /// Per token `w = min(exp(logπ_trainer − logπ_engine), cap)` (verl's TIS, the paper's runs).
    #[default]
    TokenTruncate,
    /// Per sequence `r = exp(Σ (logπ_trainer − logπ_engine))`; every token of the sequence
    /// gets `w = r`, or 0 when `r > cap` (TRL's `sequence_mask`).
    SequenceMask,
}

/// The correction of rollouts from another engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IsCorrection {
    /// How.
    pub mode: IsMode,
    /// The cap on the ratio (verl's default, the paper's setting: 2.0).
    pub cap: f64,
    /// The largest per-token |logπ_trainer − logπ_engine| allowed; beyond it the step fails
    /// (an engine serving another adapter, temperature or model).
    pub max_gap: Option<f64>,
}

impl IsCorrection {
    /// verl's truncated importance sampling with the paper's cap of 2, no gap limit.
    pub const TIS: Self = Self {
        mode: IsMode::TokenTruncate,
        cap: 2.0,
        max_gap: None,
    };
}

/// What the gap was over a batch's response tokens (sequences, for the ratios of
/// [`IsMode::SequenceMask`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GapStats {
    /// Mean |logπ_trainer − logπ_engine| per token.
    pub gap_mean: f64,
    /// Largest |logπ_trainer − logπ_engine| of a token.
    pub gap_max: f64,
    /// Smallest ratio before the cap.
    pub ratio_min: f64,
    /// Mean ratio before the cap.
    pub ratio_mean: f64,
    /// Largest ratio before the cap.
    pub ratio_max: f64,
    /// Fraction of ratios above the cap (truncated or masked).
    pub clipped_fraction: f64,
}

/// The importance weight of every response token (rows as in `trainer`) and the gap's
/// statistics. A NaN engine log-prob is a token the engine did not score: its weight is 1 (no
/// correction) and it is left out of the statistics, as TRL does. An error names the first
/// row whose lengths differ, any other log-probability that is not finite, or a gap beyond
/// `correction.max_gap`.
pub fn importance_weights(
    trainer: &[Vec<f32>],
    engine: &[Vec<f32>],
    correction: &IsCorrection,
) -> Result<(Vec<Vec<f32>>, GapStats)> {
    if trainer.len() != engine.len() {
        return Err(Error::Engine(format!(
            "the engine returned {} completions' log-probs for {} completions",
            engine.len(),
            trainer.len()
        )));
    }
    let (mut gap_sum, mut gap_max, mut tokens) = (0.0f64, 0.0f64, 0usize);
    let mut ratios = Vec::new();
    let mut weights = Vec::with_capacity(trainer.len());
    for (row, (ours, theirs)) in trainer.iter().zip(engine).enumerate() {
        if ours.len() != theirs.len() {
            return Err(Error::Engine(format!(
                "completion {row}: the engine gave {} log-probs for {} tokens",
                theirs.len(),
                ours.len()
            )));
        }
        let mut diffs = Vec::with_capacity(ours.len());
        for (t, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
            if a.is_finite() && b.is_nan() {
                diffs.push(None);
                continue;
            }
            if !a.is_finite() || !b.is_finite() {
                return Err(Error::Engine(format!(
                    "completion {row}, token {t}: log-probs {a} (trainer) and {b} (engine) must be finite"
                )));
            }
            let d = f64::from(a) - f64::from(b);
            gap_sum += d.abs();
            gap_max = gap_max.max(d.abs());
            tokens += 1;
            diffs.push(Some(d));
        }
        weights.push(match correction.mode {
            IsMode::TokenTruncate => diffs
                .iter()
                .map(|d| match d {
                    Some(d) => {
                        let r = d.clamp(-20.0, 20.0).exp();
                        ratios.push(r);
                        r.min(correction.cap) as f32
                    }
                    None => 1.0,
                })
                .collect(),
            IsMode::SequenceMask => {
                let r = diffs.iter().flatten().sum::<f64>().clamp(-20.0, 20.0).exp();
                ratios.push(r);
                let w = if r > correction.cap { 0.0 } else { r as f32 };
                vec![w; diffs.len()]
            }
        });
    }
    if let Some(limit) = correction.max_gap
        && gap_max > limit
    {
        return Err(Error::Engine(format!(
            "the engine's log-probs differ from the trainer's by up to {gap_max:.4} nats per token \
             (max_logprob_gap = {limit}): is it serving the adapter version asked for, the same \
             base model and temperature?"
        )));
    }
    let n = ratios.len().max(1) as f64;
    let stats = GapStats {
        gap_mean: gap_sum / tokens.max(1) as f64,
        gap_max,
        ratio_min: ratios.iter().copied().reduce(f64::min).unwrap_or(0.0),
        ratio_mean: ratios.iter().sum::<f64>() / n,
        ratio_max: ratios.iter().copied().reduce(f64::max).unwrap_or(0.0),
        clipped_fraction: ratios.iter().filter(|&&r| r > correction.cap).count() as f64 / n,
    };
    Ok((weights, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn token_truncate_by_hand() {
        let trainer = vec![vec![-1.0, -2.0], vec![-0.5]];
        let engine = vec![vec![-1.5, -1.0], vec![-2.0]];
        let (w, s) = importance_weights(&trainer, &engine, &IsCorrection::TIS).unwrap();
        // Gaps 0.5, −1.0, 1.5: ratios e^0.5, e^−1, e^1.5 (capped at 2).
        let want = [0.5f64.exp(), (-1.0f64).exp(), 2.0];
        for (got, want) in w.concat().iter().zip(want) {
            assert!(close(f64::from(*got), want), "{w:?}");
        }
        assert!(close(s.gap_mean, 1.0) && close(s.gap_max, 1.5));
        assert!(close(s.ratio_min, (-1.0f64).exp()) && close(s.ratio_max, 1.5f64.exp()));
        assert!(close(s.clipped_fraction, 1.0 / 3.0));
    }

    #[test]
    fn sequence_mask_by_hand() {
        let correction = IsCorrection {
            mode: IsMode::SequenceMask,
            ..IsCorrection::TIS
        };
        // Row sums 0.5 − 0.2 = 0.3 (kept, e^0.3) and 1.0 (e^1 > 2: masked).
        let trainer = vec![vec![-1.0, -1.2], vec![-1.0]];
        let engine = vec![vec![-1.5, -1.0], vec![-2.0]];
        let (w, s) = importance_weights(&trainer, &engine, &correction).unwrap();
        let kept = 0.3f64.exp();
        assert!(w[0].iter().all(|&x| close(f64::from(x), kept)), "{w:?}");
        assert_eq!(w[1], vec![0.0]);
        assert!(close(s.clipped_fraction, 0.5) && close(s.ratio_max, 1.0f64.exp()));
    }

    #[test]
    fn unscored_tokens_weigh_one_and_are_not_counted() {
        let (w, s) = importance_weights(
            &[vec![-1.0, -2.0]],
            &[vec![f32::NAN, -2.5]],
            &IsCorrection::TIS,
        )
        .unwrap();
        assert!(w[0][0] == 1.0 && close(f64::from(w[0][1]), 0.5f64.exp()));
        assert!(close(s.gap_mean, 0.5) && close(s.ratio_min, 0.5f64.exp()));
    }

    #[test]
    fn equal_logprobs_weigh_one() {
        let rows = vec![vec![-0.3, -4.0, -0.01]];
        let (w, s) = importance_weights(&rows, &rows, &IsCorrection::TIS).unwrap();
        assert_eq!(w, vec![vec![1.0; 3]]);
        assert_eq!((s.gap_max, s.clipped_fraction), (0.0, 0.0));
    }

    #[test]
    fn mismatches_are_errors() {
        let c = IsCorrection {
            max_gap: Some(0.1),
            ..IsCorrection::TIS
        };
        let err = |t: Vec<Vec<f32>>, e: Vec<Vec<f32>>| {
            importance_weights(&t, &e, &c).unwrap_err().to_string()
        };
        assert!(err(vec![vec![-1.0]], vec![]).contains("1 completions"));
        assert!(err(vec![vec![-1.0, -1.0]], vec![vec![-1.0]]).contains("1 log-probs for 2 tokens"));
        assert!(err(vec![vec![f32::NAN]], vec![vec![-1.0]]).contains("finite"));
        assert!(err(vec![vec![-1.0]], vec![vec![f32::INFINITY]]).contains("finite"));
        assert!(err(vec![vec![-1.0]], vec![vec![-1.5]]).contains("max_logprob_gap"));
    }
}
