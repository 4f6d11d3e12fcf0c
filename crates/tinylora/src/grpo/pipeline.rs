//! GRPO on a TinyLoRA adapter as one-way steps with named types, each a phase a trainer can
//! time: a [`RolloutEngine`] samples a group of completions per prompt ([`Samples`]; the
//! [`LocalEngine`] is the adapted model itself, unmerged, so rollouts and training share one
//! forward); the caller scores each completion once ([`Score`]); [`prepare`] turns them into
//! [`Rollouts`] (group advantages, and reference log-probs under the base model when a KL
//! penalty is on); [`train_on`] takes `epochs` passes over `mini_batches` mini-batches
//! ([`update`]: one optimizer step, in micro-batches whose gradients add up). [`grpo_step`]
//! chains them. The trainer, `trainer bench --grpo` and the tests call these same functions.

use burn::tensor::{Tensor, TensorData};

use super::importance::{GapStats, IsCorrection, importance_weights};
use super::logprobs::completion_logprobs;
use super::objective::{
    Clip, Denominators, LossType, group_advantages, kl_k3, policy_loss, reduce,
};
use crate::adapter::TinyLora;
use crate::adapter::gradients::summed_gradients;
use crate::generate::{GenerateConfig, Generation, generate};
use crate::micro_batch::MicroBatch;
use crate::model::{CausalLm, Mixes};
use crate::optim::AdamW;
use crate::readback::to_vec_f32;
use crate::{Error, Result};

/// The knobs of a step (defaults: the paper's GSM8K runs, `docs/reference.md` §5.1, except one
/// mini-batch per rollout batch; the trainer's config defaults to the paper's two).
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoStepConfig {
    /// Completions sampled per prompt (the paper: 4).
    pub group_size: usize,
    /// Ratio clipping (the paper: 0.2 / 0.4, dual clip 3.0).
    pub clip: Clip,
    /// Loss aggregation (the paper: token-mean, i.e. DAPO).
    pub loss_type: LossType,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient-norm bound (the paper: 1.0).
    pub max_grad_norm: f64,
    /// Added to the group std (verl: 1e-6).
    pub adv_eps: f64,
    /// Lower bound on the group std before dividing.
    pub std_floor: f64,
    /// Weight β of the k3 KL penalty to the base model (the paper: 0, off).
    pub kl_beta: f64,
    /// Optimizer updates per rollout batch: the batch is cut into this many mini-batches of
    /// whole groups (the paper: 2, i.e. 32 of 64 prompts each).
    pub mini_batches: usize,
    /// Passes over the mini-batches (verl `ppo_epochs`, the paper: 1).
    pub epochs: usize,
    /// Sequences in one forward/backward; gradients of micro-batches are summed.
    pub micro_batch: MicroBatch,
    /// The correction of samples from another engine (`None`: the samples' log-probs are the
    /// trained model's own, as with the [`LocalEngine`]).
    pub importance: Option<IsCorrection>,
}

impl Default for GrpoStepConfig {
    fn default() -> Self {
        Self {
            group_size: 4,
            clip: Clip::default(),
            loss_type: LossType::Dapo,
            lr: 1e-5,
            max_grad_norm: 1.0,
            adv_eps: 1e-6,
            std_floor: 0.0,
            kl_beta: 0.0,
            mini_batches: 1,
            epochs: 1,
            micro_batch: MicroBatch::Auto,
            importance: None,
        }
    }
}

/// Completions sampled for a batch of prompts: row `i` continues prompt `i / group_size`.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Completions per prompt.
    pub group_size: usize,
    /// The prompt of each row (each prompt repeated `group_size` times).
    pub prompts: Vec<Vec<u32>>,
    /// The sampled completion of each row.
    pub completions: Vec<Vec<u32>>,
    /// Log-probabilities of the sampled tokens under the sampling policy as the sampler
    /// computed them; in [`Rollouts`], π_old as the trainer computes it.
    pub logprobs: Vec<Vec<f32>>,
    /// Whether each row ended with a stop token.
    pub stopped: Vec<bool>,
    /// The temperature the tokens were sampled at.
    pub temperature: f32,
    /// The generation budget (Dr. GRPO's constant length).
    pub max_new_tokens: usize,
}

impl Samples {
    /// Samples from `rows` (each prompt with its generated continuation, prompts repeated
    /// `group_size` times in a row), sampled at `temperature` within `max_new_tokens`.
    pub fn from_generations(
        group_size: usize,
        temperature: f32,
        max_new_tokens: usize,
        rows: impl IntoIterator<Item = (Vec<u32>, Generation)>,
    ) -> Self {
        let mut out = Self {
            group_size,
            prompts: Vec::new(),
            completions: Vec::new(),
            logprobs: Vec::new(),
            stopped: Vec::new(),
            temperature,
            max_new_tokens,
        };
        for (prompt, g) in rows {
            out.prompts.push(prompt);
            out.completions.push(g.tokens);
            out.logprobs.push(g.logprobs);
            out.stopped.push(g.stopped);
        }
        out
    }

    /// Each row scored once by `score(prompt_index, completion)`; the first error stops it.
    pub fn score<E>(
        &self,
        mut score: impl FnMut(usize, &[u32]) -> std::result::Result<Score, E>,
    ) -> std::result::Result<Vec<Score>, E> {
        self.completions
            .iter()
            .enumerate()
            .map(|(i, completion)| score(i / self.group_size, completion))
            .collect()
    }

    /// The prompts and completions of `rows`.
    pub fn rows(&self, rows: &[usize]) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        rows.iter()
            .map(|&i| (self.prompts[i].clone(), self.completions[i].clone()))
            .unzip()
    }

    /// Total number of completion tokens.
    pub fn tokens(&self) -> usize {
        self.completions.iter().map(Vec::len).sum()
    }

    /// Tokens of row `i`: its prompt and its completion.
    fn length(&self, i: usize) -> usize {
        self.prompts[i].len() + self.completions[i].len()
    }
}

/// Generates the completions of a GRPO step.
pub trait RolloutEngine {
    /// `group_size` completions of each of `prompts`, sampled as `generation` says.
    fn sample(
        &self,
        prompts: &[Vec<u32>],
        group_size: usize,
        generation: &GenerateConfig,
    ) -> impl std::future::Future<Output = Result<Samples>>;
}

/// The local engine: the model being trained, with the adapter at the current `v`.
pub struct LocalEngine<'a> {
    /// The model (the adapter attached).
    pub model: &'a CausalLm,
    /// The adapter's mixes at the `v` to sample with.
    pub mixes: Mixes,
}

impl RolloutEngine for LocalEngine<'_> {
    async fn sample(
        &self,
        prompts: &[Vec<u32>],
        group_size: usize,
        generation: &GenerateConfig,
    ) -> Result<Samples> {
        let group_size = group_size.max(1);
        let expanded: Vec<Vec<u32>> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), group_size))
            .collect();
        let generations =
            generate(self.model, &self.mixes, &expanded, generation, |_, _| {}).await?;
        let temperature = match generation.sampling.temperature {
            Some(t) if t > 0.0 => t,
            _ => 1.0,
        };
        Ok(Samples::from_generations(
            group_size,
            temperature,
            generation.max_new_tokens,
            expanded.into_iter().zip(generations),
        ))
    }
}

/// What scoring one completion gave: the reward GRPO optimises and whether the answer is
/// correct by the strict rule (the accuracy reported beside it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The reward.
    pub reward: f32,
    /// Correct by the strict rule.
    pub correct: bool,
}

/// A scored batch of completions ready for updates: row `i` continues prompt `i / group_size`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollouts {
    /// The completions as sampled.
    pub samples: Samples,
    /// The reward of each row.
    pub rewards: Vec<f32>,
    /// Whether each row is correct by the strict rule.
    pub correct: Vec<bool>,
    /// Group-normalised advantages.
    pub advantages: Vec<f32>,
    /// Log-probabilities of the sampled tokens under the base model (with a KL penalty only).
    pub ref_logprobs: Option<Vec<Vec<f32>>>,
    /// Per-token importance weights of samples from another engine (with
    /// [`GrpoStepConfig::importance`] only).
    pub is_weights: Option<Vec<Vec<f32>>>,
    /// The gap between the engine's log-probs and the trainer's (with importance weights).
    pub gap: Option<GapStats>,
}

/// Scored samples as [`Rollouts`]: group advantages of the rewards, the reference log-probs
/// under the base `model` when `config.kl_beta > 0`, and — for samples from another engine
/// (`config.importance`) — π_old recomputed by `model` at `mixes` (the adapter's `v` the
/// engine was asked to sample with) and the importance weights of the gap. The only place
/// either is made.
pub async fn prepare(
    model: &CausalLm,
    mixes: &Mixes,
    mut samples: Samples,
    scores: &[Score],
    config: &GrpoStepConfig,
) -> Result<Rollouts> {
    if scores.len() != samples.completions.len() {
        return Err(Error::InvalidInput(format!(
            "{} scores for {} completions",
            scores.len(),
            samples.completions.len()
        )));
    }
    let (mut is_weights, mut gap) = (None, None);
    if let Some(correction) = &config.importance {
        let trainer = sample_logprobs(model, mixes, &samples, config.micro_batch).await?;
        let (weights, stats) = importance_weights(&trainer, &samples.logprobs, correction)?;
        samples.logprobs = trainer;
        (is_weights, gap) = (Some(weights), Some(stats));
    }
    let rewards: Vec<f32> = scores.iter().map(|s| s.reward).collect();
    let advantages = group_advantages(
        &rewards,
        config.group_size.max(1),
        config.adv_eps,
        config.std_floor,
    );
    let mut rollouts = Rollouts {
        samples,
        rewards,
        correct: scores.iter().map(|s| s.correct).collect(),
        advantages,
        ref_logprobs: None,
        is_weights,
        gap,
    };
    if config.kl_beta > 0.0 {
        let base = Mixes::none();
        rollouts.ref_logprobs =
            Some(sample_logprobs(model, &base, &rollouts.samples, config.micro_batch).await?);
    }
    Ok(rollouts)
}

impl Rollouts {
    /// Mean and population standard deviation of the rewards.
    pub fn reward_mean_std(&self) -> (f64, f64) {
        let n = self.rewards.len().max(1) as f64;
        let mean = self.rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / n;
        let var = self
            .rewards
            .iter()
            .map(|&r| (f64::from(r) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    /// Fraction of groups whose rewards are all equal (no learning signal).
    pub fn zero_std_fraction(&self, group_size: usize) -> f64 {
        let groups = self.rewards.chunks(group_size.max(1));
        let total = groups.len().max(1) as f64;
        let flat = groups.filter(|g| g.iter().all(|&r| r == g[0])).count();
        flat as f64 / total
    }
}

/// What one optimizer update measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateStats {
    /// The mini-batch loss before the update (policy loss + β·KL).
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Fraction of response tokens whose ratio was clipped.
    pub clip_fraction: f64,
    /// Mean k3 KL to the base model over response tokens (0 when β = 0).
    pub kl: f64,
}

/// What one GRPO step measured: its completions and rewards, and its updates (means over
/// them). The trainer's `metrics.jsonl` and the page's `train_step` events carry these.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoStepStats {
    /// Mean reward of the sampled completions.
    pub reward_mean: f64,
    /// Population standard deviation of the rewards.
    pub reward_std: f64,
    /// Fraction of completions correct by the strict rule.
    pub strict_accuracy: f64,
    /// Fraction of groups whose rewards were all equal (no learning signal).
    pub zero_std_fraction: f64,
    /// Mean completion length in tokens.
    pub completion_len_mean: f64,
    /// Longest completion in tokens.
    pub completion_len_max: usize,
    /// Fraction of completions cut at the token limit.
    pub truncated_fraction: f64,
    /// Completion tokens sampled.
    pub rollout_tokens: usize,
    /// Mean loss of the updates.
    pub loss: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean fraction of clipped ratios.
    pub clip_fraction: f64,
    /// Mean k3 KL to the base model (0 when β = 0).
    pub kl: f64,
    /// Every update of the step.
    pub updates: Vec<UpdateStats>,
    /// The engine's log-prob gap (samples from another engine only).
    pub gap: Option<GapStats>,
}

impl GrpoStepStats {
    /// The statistics of `rollouts` in groups of `group_size` and of the `updates` made on them.
    pub fn new(rollouts: &Rollouts, updates: Vec<UpdateStats>, group_size: usize) -> Self {
        let completions = &rollouts.samples.completions;
        let n = completions.len().max(1) as f64;
        let (reward_mean, reward_std) = rollouts.reward_mean_std();
        let tokens = rollouts.samples.tokens();
        let mean = |f: fn(&UpdateStats) -> f64| {
            updates.iter().map(f).sum::<f64>() / updates.len().max(1) as f64
        };
        Self {
            reward_mean,
            reward_std,
            strict_accuracy: rollouts.correct.iter().filter(|&&c| c).count() as f64 / n,
            zero_std_fraction: rollouts.zero_std_fraction(group_size),
            completion_len_mean: tokens as f64 / n,
            completion_len_max: completions.iter().map(Vec::len).max().unwrap_or(0),
            truncated_fraction: rollouts.samples.stopped.iter().filter(|s| !**s).count() as f64 / n,
            rollout_tokens: tokens,
            loss: mean(|u| u.loss),
            grad_norm: mean(|u| u.grad_norm),
            clip_fraction: mean(|u| u.clip_fraction),
            kl: mean(|u| u.kl),
            gap: rollouts.gap,
            updates,
        }
    }
}

/// Pads ragged rows to `[rows.len(), width]` (zeros after each row's end).
fn padded(rows: &[&Vec<f32>], width: usize) -> Vec<f32> {
    rows.iter()
        .flat_map(|r| (0..width).map(|j| r.get(j).copied().unwrap_or(0.0)))
        .collect()
}

/// The log-probs of the sampled tokens under `model` at `mixes` (the base model for the KL
/// penalty; the adapter's sampling `v` for π_old of another engine's samples), micro-batch by
/// micro-batch, without gradients.
pub async fn sample_logprobs(
    model: &CausalLm,
    mixes: &Mixes,
    samples: &Samples,
    micro_batch: MicroBatch,
) -> Result<Vec<Vec<f32>>> {
    let rows: Vec<usize> = (0..samples.prompts.len()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for part in micro_batch.chunks(&model.config, &rows, |i| samples.length(i)) {
        let (prompts, completions) = samples.rows(part);
        let width = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let (logp, _) =
            completion_logprobs(model, mixes, &prompts, &completions, samples.temperature);
        let flat = to_vec_f32(logp).await?;
        for (k, c) in completions.iter().enumerate() {
            out.push(flat[k * width..k * width + c.len()].to_vec());
        }
    }
    Ok(out)
}

/// The loss of a mini-batch and its gradient with respect to `v`.
#[derive(Debug, Clone, PartialEq)]
pub struct LossAndGradients {
    /// Policy loss + β·KL, reduced over the mini-batch.
    pub loss: f64,
    /// `∂loss/∂v`, shaped like the adapter's `v`.
    pub grads: Vec<Vec<f32>>,
    /// Fraction of response tokens whose ratio was clipped.
    pub clip_fraction: f64,
    /// Mean k3 KL to the base model over response tokens (0 without a reference).
    pub kl: f64,
}

/// The loss on the rollout rows `rows` (a mini-batch) at the adapter's current `v` and its
/// gradient, computed in micro-batches (`config.micro_batch`) whose losses and
/// gradients add up to the mini-batch's.
pub async fn loss_and_gradients(
    model: &CausalLm,
    adapter: &TinyLora,
    rollouts: &Rollouts,
    rows: &[usize],
    config: &GrpoStepConfig,
) -> Result<LossAndGradients> {
    let device = model.device.clone();
    let denominators = Denominators::of(
        rows.iter().map(|&i| rollouts.samples.completions[i].len()),
        rollouts.samples.max_new_tokens,
    );
    let parts = config
        .micro_batch
        .chunks(&model.config, rows, |i| rollouts.samples.length(i));
    let loss_of = |part: &[usize], mixes: &Mixes| {
        let (prompts, completions) = rollouts.samples.rows(part);
        let width = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let batch = part.len();
        let as_tensor = |rows: Vec<&Vec<f32>>| {
            Tensor::<2>::from_data(
                TensorData::new(padded(&rows, width), [batch, width]),
                &device,
            )
        };
        let old = as_tensor(
            part.iter()
                .map(|&i| &rollouts.samples.logprobs[i])
                .collect(),
        );
        let advantages: Vec<f32> = part.iter().map(|&i| rollouts.advantages[i]).collect();
        let is_weights = rollouts
            .is_weights
            .as_ref()
            .map(|w| as_tensor(part.iter().map(|&i| &w[i]).collect()));
        let (logp, mask) = completion_logprobs(
            model,
            mixes,
            &prompts,
            &completions,
            rollouts.samples.temperature,
        );
        let terms = policy_loss(
            logp.clone(),
            old,
            &advantages,
            mask.clone(),
            is_weights,
            &config.clip,
            config.loss_type,
            &denominators,
        );
        // The loss, the clipped tokens and (with a KL penalty) the mean KL, summed over parts.
        match (&rollouts.ref_logprobs, config.kl_beta > 0.0) {
            (Some(reference), true) => {
                let reference = as_tensor(part.iter().map(|&i| &reference[i]).collect());
                let kl = kl_k3(logp, reference);
                let kl_mean = reduce(kl.clone(), mask.clone(), LossType::Dapo, &denominators);
                let penalty = reduce(kl, mask, config.loss_type, &denominators);
                let loss = terms.loss + penalty.mul_scalar(config.kl_beta);
                vec![loss, terms.clipped_tokens, kl_mean]
            }
            _ => vec![terms.loss, terms.clipped_tokens],
        }
    };
    let (sums, grads) = summed_gradients(model, adapter, parts, loss_of).await?;
    let sum = |i: usize| sums.get(i).copied().unwrap_or(0.0);
    let (loss_total, clipped, kl_total) = (sum(0), sum(1), sum(2));
    Ok(LossAndGradients {
        loss: loss_total,
        grads,
        clip_fraction: clipped / denominators.tokens.max(1) as f64,
        kl: kl_total,
    })
}

/// One optimizer update of `v` on the rollout rows `rows` (a mini-batch): the gradient of
/// [`loss_and_gradients`], clipped to `config.max_grad_norm`, then AdamW at `config.lr`.
///
/// Fails with [`Error::Diverged`] without touching `v` or the optimizer when the loss or a
/// gradient is not finite.
pub async fn update(
    model: &CausalLm,
    adapter: &mut TinyLora,
    optimizer: &mut AdamW,
    rollouts: &Rollouts,
    rows: &[usize],
    config: &GrpoStepConfig,
) -> Result<UpdateStats> {
    let mut computed = loss_and_gradients(model, adapter, rollouts, rows, config).await?;
    let grad_norm = optimizer.apply(
        &mut adapter.v,
        "GRPO",
        computed.loss,
        &mut computed.grads,
        config.max_grad_norm,
        config.lr,
    )?;
    Ok(UpdateStats {
        loss: computed.loss,
        grad_norm,
        clip_fraction: computed.clip_fraction,
        kl: computed.kl,
    })
}

/// The mini-batches of a rollout batch: `config.mini_batches` runs of whole groups, in order
/// (verl does not shuffle them).
pub fn mini_batches(rows: usize, config: &GrpoStepConfig) -> Vec<Vec<usize>> {
    let group = config.group_size.max(1);
    let groups = rows.div_ceil(group);
    let per = groups.div_ceil(config.mini_batches.max(1)).max(1);
    (0..groups)
        .step_by(per)
        .map(|start| (start * group..((start + per) * group).min(rows)).collect())
        .collect()
}

/// `config.epochs` passes over the rollouts' mini-batches ([`mini_batches`]), one
/// [`update`] each.
pub async fn train_on(
    model: &CausalLm,
    adapter: &mut TinyLora,
    optimizer: &mut AdamW,
    rollouts: &Rollouts,
    config: &GrpoStepConfig,
) -> Result<Vec<UpdateStats>> {
    let mut updates = Vec::new();
    for _ in 0..config.epochs.max(1) {
        for rows in mini_batches(rollouts.samples.prompts.len(), config) {
            updates.push(update(model, adapter, optimizer, rollouts, &rows, config).await?);
        }
    }
    Ok(updates)
}

/// Runs one whole step on the local engine: sample, score (`score(prompt_index,
/// completion)`, whose error stops the step), [`prepare`], [`train_on`]. `model` must live on
/// an autodiff device and have `adapter` attached.
pub async fn grpo_step(
    model: &CausalLm,
    adapter: &mut TinyLora,
    optimizer: &mut AdamW,
    prompts: &[Vec<u32>],
    score: impl Fn(usize, &[u32]) -> Result<Score>,
    generation: &GenerateConfig,
    config: &GrpoStepConfig,
) -> Result<GrpoStepStats> {
    let engine = LocalEngine {
        model,
        mixes: adapter.current_mixes(model)?,
    };
    let samples = engine
        .sample(prompts, config.group_size, generation)
        .await?;
    let scores = samples.score(&score)?;
    let rollouts = prepare(model, &engine.mixes, samples, &scores, config).await?;
    let updates = train_on(model, adapter, optimizer, &rollouts, config).await?;
    Ok(GrpoStepStats::new(&rollouts, updates, config.group_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mini_batches_are_whole_groups_in_order() {
        let config = GrpoStepConfig {
            group_size: 4,
            mini_batches: 2,
            ..GrpoStepConfig::default()
        };
        let m = mini_batches(24, &config);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], (0..12).collect::<Vec<_>>());
        assert_eq!(m[1], (12..24).collect::<Vec<_>>());
        // 5 groups into 2 mini-batches: 3 + 2 groups.
        let m = mini_batches(20, &config);
        assert_eq!((m[0].len(), m[1].len()), (12, 8));
        let one = mini_batches(
            8,
            &GrpoStepConfig {
                group_size: 4,
                ..GrpoStepConfig::default()
            },
        );
        assert_eq!(one, vec![(0..8).collect::<Vec<_>>()]);
    }
}
