//! The canary: now and then the engine samples one group with an exaggerated `v` under its
//! own adapter name, and its log-probs must follow the trainer's at that `v`. An engine that
//! ignores adapters (LoRA off, a rank limit below `r`, the wrong files) fails here even while
//! the trained `v` is too small for the per-step log-prob gap to show it.

use anyhow::{Result, ensure};
use tinylora::adapter::TinyLora;
use tinylora::grpo::pipeline::sample_logprobs;
use tinylora::micro_batch::MicroBatch;
use tinylora::model::CausalLm;
use tinylora::readback::block_on;

use super::{Batch, RemoteEngine};

/// Below this mean shift per token (nats) a canary cannot tell adapters apart: it is reported,
/// not judged.
pub const CANARY_MIN_SHIFT: f64 = 0.05;

/// The canary's `v`: four times `v` plus ±0.25 alternating, so that it differs from `v` even
/// at `v = 0`.
pub fn canary_v(v: &[Vec<f32>]) -> Vec<Vec<f32>> {
    v.iter()
        .map(|group| {
            let sign = |i: usize| if i.is_multiple_of(2) { 0.25 } else { -0.25 };
            group
                .iter()
                .enumerate()
                .map(|(i, x)| 4.0 * x + sign(i))
                .collect()
        })
        .collect()
}

/// Mean |a − b| over the tokens of rows of equal lengths (tokens an engine left unscored,
/// NaN, left out).
fn mean_abs_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let pairs = a.iter().flatten().zip(b.iter().flatten());
    let pairs = pairs.filter(|(x, y)| !x.is_nan() && !y.is_nan());
    let (sum, n) = pairs.fold((0.0, 0usize), |(s, n), (x, y)| {
        (s + f64::from(x - y).abs(), n + 1)
    });
    sum / n.max(1) as f64
}

/// What a canary found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canary {
    /// Mean |logπ(canary v) − logπ(step v)| per token of the canary's samples, by the trainer:
    /// how far the canary moves the distribution.
    pub shift: f64,
    /// Mean |logπ_engine − logπ(canary v)| per token: near 0 when the engine used the canary.
    pub gap: f64,
}

/// Step `step`'s canary: `adapter` at [`canary_v`] samples `batch` (a group of one prompt)
/// on `engine` as `canary-K`; the engine's log-probs must be within a quarter of the canary's
/// shift of the trainer's at the canary's `v`.
pub fn canary(
    engine: &dyn RemoteEngine,
    model: &CausalLm,
    adapter: &TinyLora,
    step: usize,
    batch: Batch<'_>,
) -> Result<Canary> {
    let mut canary = adapter.clone();
    canary.v = canary_v(&adapter.v);
    let name = format!("canary-{step}");
    let samples = engine.sample(&canary, &name, batch);
    engine.release(&name);
    let samples = samples?;
    let logprobs = |adapter: &TinyLora| -> Result<Vec<Vec<f32>>> {
        let mixes = adapter.current_mixes(model)?;
        Ok(block_on(sample_logprobs(
            model,
            &mixes,
            &samples,
            MicroBatch::Auto,
        ))?)
    };
    let (at_canary, at_step) = (logprobs(&canary)?, logprobs(adapter)?);
    let found = Canary {
        shift: mean_abs_difference(&at_canary, &at_step),
        gap: mean_abs_difference(&samples.logprobs, &at_canary),
    };
    ensure!(
        found.shift < CANARY_MIN_SHIFT || found.gap <= found.shift / 4.0,
        "the engine ignored adapter {name}: its log-probs of the canary's samples are {:.4} \
         nats per token from the trainer's at the canary's v, which moves them {:.4} from the \
         step's adapter (is LoRA enabled and loaded, and is the LoRA rank limit at least the \
         adapter's r?)",
        found.gap,
        found.shift
    );
    Ok(found)
}
