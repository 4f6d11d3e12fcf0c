//! One GRPO step on a TinyLoRA adapter: sample a group of completions per prompt with the
//! adapted model itself (unmerged, so rollouts and training share one forward), score them,
//! normalise rewards within groups, and update `v` with the clipped loss and AdamW.

use burn::tensor::{Tensor, TensorData};

use crate::adapter::TinyLora;
use crate::generate::{GenerateConfig, generate};
use crate::grpo::{Clip, LossType, completion_logprobs, group_advantages, policy_loss};
use crate::model::Qwen2ForCausalLM;
use crate::optim::{AdamW, clip_grad_norm};
use crate::readback::to_vec_f32;
use crate::{Error, Result};

/// The knobs of one step (defaults: the paper's GSM8K runs, `tinylora-spec.md` §5.1).
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
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoStepStats {
    /// Mean reward of the sampled completions.
    pub reward_mean: f64,
    /// Fraction of groups whose rewards were all equal (no learning signal).
    pub zero_std_fraction: f64,
    /// The loss before the update.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean completion length in tokens.
    pub completion_len_mean: f64,
}

/// Runs one step. `reward(prompt_index, completion)` scores a completion of `prompts[i]`.
/// `model` must live on an autodiff device and have `adapter` attached.
pub async fn grpo_step(
    model: &mut Qwen2ForCausalLM,
    adapter: &mut TinyLora,
    optimizer: &mut AdamW,
    prompts: &[Vec<u32>],
    reward: impl Fn(usize, &[u32]) -> f32,
    generation: &GenerateConfig,
    config: &GrpoStepConfig,
) -> Result<GrpoStepStats> {
    let device = model.device.clone();
    let group = config.group_size.max(1);
    // Rollouts with the current v (no gradient tracking: v is a constant here).
    adapter.set_v(model, &adapter.v_tensors(&device));
    let expanded: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), group))
        .collect();
    let rollouts = generate(model, &expanded, generation, |_, _| {}).await?;
    let rewards: Vec<f32> = rollouts
        .iter()
        .enumerate()
        .map(|(i, r)| reward(i / group, &r.tokens))
        .collect();
    let advantages = group_advantages(&rewards, group, config.adv_eps, config.std_floor);
    let zero_std = rewards
        .chunks(group)
        .filter(|g| g.iter().all(|&r| r == g[0]))
        .count();
    // The loss with v requiring gradients.
    let completions: Vec<Vec<u32>> = rollouts.iter().map(|r| r.tokens.clone()).collect();
    let width = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let old: Vec<f32> = rollouts
        .iter()
        .flat_map(|r| (0..width).map(|j| r.logprobs.get(j).copied().unwrap_or(0.0)))
        .collect();
    let v: Vec<Tensor<1>> = adapter
        .v_tensors(&device)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    adapter.set_v(model, &v);
    let (logp, mask) = completion_logprobs(model, &expanded, &completions);
    let old = Tensor::<2>::from_data(TensorData::new(old, [expanded.len(), width]), &device);
    let loss = policy_loss(logp, old, &advantages, mask, &config.clip, config.loss_type);
    let gradients = loss.backward();
    let loss = f64::from(to_vec_f32(loss).await?[0]);
    if !loss.is_finite() {
        return Err(Error::InvalidInput(format!(
            "the GRPO loss is {loss}; v was not updated"
        )));
    }
    let mut grads = Vec::with_capacity(v.len());
    for t in &v {
        grads.push(match t.grad(&gradients) {
            Some(g) => to_vec_f32(g).await?,
            None => vec![0.0; adapter.config.u],
        });
    }
    let grad_norm = clip_grad_norm(&mut grads, config.max_grad_norm);
    optimizer.step(&mut adapter.v, &grads, config.lr);
    adapter.set_v(model, &adapter.v_tensors(&device));
    let n = rewards.len() as f64;
    Ok(GrpoStepStats {
        reward_mean: rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / n,
        zero_std_fraction: zero_std as f64 / prompts.len().max(1) as f64,
        loss,
        grad_norm,
        completion_len_mean: completions.iter().map(Vec::len).sum::<usize>() as f64 / n,
    })
}
