//! The supervised baseline (`docs/reference.md` §5.3): next-token prediction on (problem,
//! reference solution) pairs, `−Σₜ wₜ·log π(yₜ | x, y<ₜ) / Σₜ wₜ` over solution tokens (every
//! weight 1 unless given), with gradients for the adapter's `v` only.

use burn::tensor::{Tensor, TensorData};

use crate::adapter::TinyLora;
use crate::adapter::gradients::summed_gradients;
use crate::grpo::completion_logprobs;
use crate::micro_batch::MicroBatch;
use crate::model::CausalLm;
use crate::optim::AdamW;
use crate::{Error, Result};

/// The knobs of one supervised update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftUpdateConfig {
    /// Rows in one forward/backward; gradients of micro-batches are summed.
    pub micro_batch: MicroBatch,
    /// Learning rate of this update.
    pub lr: f64,
    /// Global gradient-norm bound.
    pub max_grad_norm: f64,
}

/// What one supervised update measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftStats {
    /// Mean negative log-likelihood per target token before the update.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens in the batch.
    pub tokens: usize,
}

/// The weighted token-mean negative log-likelihood of `targets[i]` after `prompts[i]` at the
/// adapter's current `v`, `Σ wₜ·(−log π(yₜ)) / Σ wₜ` over the batch (`weights[i][t]`; `None`:
/// every token 1, the plain token mean), and its gradient with respect to `v`, in
/// micro-batches (`micro_batch`) whose losses and gradients add up.
pub async fn sft_loss_and_gradients(
    model: &CausalLm,
    adapter: &TinyLora,
    prompts: &[Vec<u32>],
    targets: &[Vec<u32>],
    weights: Option<&[Vec<f32>]>,
    micro_batch: MicroBatch,
) -> Result<(f64, Vec<Vec<f32>>)> {
    let ones: Vec<Vec<f32>>;
    let weights = match weights {
        Some(weights) => {
            if let Some(i) =
                (0..targets.len()).find(|&i| weights.get(i).map(Vec::len) != Some(targets[i].len()))
            {
                return Err(Error::InvalidInput(format!(
                    "SFT target {i}: {} tokens but {} weights",
                    targets[i].len(),
                    weights.get(i).map_or(0, Vec::len)
                )));
            }
            weights
        }
        None => {
            ones = targets.iter().map(|t| vec![1.0; t.len()]).collect();
            &ones
        }
    };
    let total: f64 = weights.iter().flatten().map(|&w| f64::from(w)).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "SFT weights sum to {total}: nothing to learn from"
        )));
    }
    let longest = prompts
        .iter()
        .zip(targets)
        .map(|(p, t)| p.len() + t.len())
        .max();
    let size = micro_batch.rows(&model.config, longest.unwrap_or(0));
    let parts = prompts
        .chunks(size)
        .zip(targets.chunks(size))
        .zip(weights.chunks(size));
    let (sums, grads) = summed_gradients(model, adapter, parts, |((p, t), w), mixes| {
        let (logp, mask) = completion_logprobs(model, mixes, p, t, 1.0);
        let [rows, len] = mask.dims();
        let padded: Vec<f32> = w
            .iter()
            .flat_map(|w| w.iter().copied().chain(std::iter::repeat(0.0)).take(len))
            .collect();
        let w = Tensor::<2>::from_data(TensorData::new(padded, [rows, len]), &model.device);
        vec![-(logp * w).sum().div_scalar(total)]
    })
    .await?;
    let loss_total = sums.first().copied().unwrap_or(0.0);
    Ok((loss_total, grads))
}

/// One supervised AdamW update of `v` on a batch; fails with [`Error::Diverged`] without
/// touching `v` or the optimizer when the loss or a gradient is not finite.
pub async fn sft_update(
    model: &CausalLm,
    adapter: &mut TinyLora,
    optimizer: &mut AdamW,
    prompts: &[Vec<u32>],
    targets: &[Vec<u32>],
    weights: Option<&[Vec<f32>]>,
    config: &SftUpdateConfig,
) -> Result<SftStats> {
    if let Some(i) = targets.iter().position(Vec::is_empty) {
        return Err(Error::InvalidInput(format!("SFT target {i} is empty")));
    }
    let (loss, mut grads) = sft_loss_and_gradients(
        model,
        adapter,
        prompts,
        targets,
        weights,
        config.micro_batch,
    )
    .await?;
    let grad_norm = optimizer.apply(
        &mut adapter.v,
        "SFT",
        loss,
        &mut grads,
        config.max_grad_norm,
        config.lr,
    )?;
    Ok(SftStats {
        loss,
        grad_norm,
        tokens: targets.iter().map(Vec::len).sum(),
    })
}
