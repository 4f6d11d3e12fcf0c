//! The GRPO step breakdown of `trainer bench --grpo`: rollout, reference log-probs (a forward
//! without gradients), policy loss forward + backward, optimizer, on a TinyLoRA adapter
//! (u = 13, fully tied, r = 2) of the benchmarked model.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::device::{BackendKind, init};
use tinylora::generate::GenerateConfig;
use tinylora::grpo::pipeline::{
    GrpoStepConfig, LocalEngine, RolloutEngine, Score, loss_and_gradients, prepare,
};
use tinylora::optim::{AdamW, AdamWConfig};
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;

/// Seconds spent in each part of one GRPO step.
pub struct Breakdown {
    /// Sequences (prompts × group) and completion tokens.
    pub sequences: usize,
    /// Completion tokens generated.
    pub tokens: usize,
    /// Sampling the completions.
    pub rollout: f64,
    /// Log-probs of the base model (v = 0), forward only.
    pub reference: f64,
    /// Policy log-probs, loss and the backward pass to `v`.
    pub backward: f64,
    /// The non-finite check, gradient clipping and AdamW.
    pub optimizer: f64,
}

/// One step of `prompts` prompts × `group` samples of `new_tokens` tokens each.
pub fn grpo_step(
    model_path: &Path,
    backend: BackendKind,
    prompts: usize,
    group: usize,
    new_tokens: usize,
) -> Result<Breakdown> {
    let device = init(backend)?.autodiff();
    let mut model = crate::hub::open(model_path)?.load(&device)?;
    let config = TinyLoraConfig {
        r: 2,
        ..TinyLoraConfig::default()
    };
    let mut adapter = block_on(TinyLora::init(&mut model, config))?;
    adapter.attach(&mut model)?;
    let vocab = model.config.vocab_size as u32;
    let prompt_ids: Vec<Vec<u32>> = (0..prompts)
        .map(|p| {
            (0..32)
                .map(|i| (i * 31 + p as u32 * 97) % (vocab - 10) + 10)
                .collect()
        })
        .collect();
    let generation = GenerateConfig {
        max_new_tokens: new_tokens,
        sampling: SamplingConfig {
            temperature: Some(1.0),
            top_k: None,
            top_p: None,
        },
        seed: 1,
        stop_tokens: Vec::new(),
    };
    let step = GrpoStepConfig {
        group_size: group,
        lr: 1e-3,
        ..GrpoStepConfig::default()
    };
    // A reward that differs within groups, so that advantages and gradients are non-zero.
    let reward = |i: usize, tokens: &[u32]| (tokens.iter().sum::<u32>() as usize + i) as f32 % 2.0;
    let t = Instant::now();
    let engine = LocalEngine {
        model: &model,
        mixes: adapter.current_mixes(&model)?,
    };
    let samples = block_on(engine.sample(&prompt_ids, group, &generation))?;
    let rollout_s = t.elapsed().as_secs_f64();
    let scores = samples.score(|i, tokens| {
        anyhow::Ok(Score {
            reward: reward(i, tokens),
            correct: false,
        })
    })?;
    // The reference forward, timed on its own: `prepare` makes it when a KL penalty is on.
    let with_reference = GrpoStepConfig {
        kl_beta: 1e-3,
        ..step.clone()
    };
    let t = Instant::now();
    let rollouts = block_on(prepare(
        &model,
        &engine.mixes,
        samples,
        &scores,
        &with_reference,
    ))?;
    let reference = t.elapsed().as_secs_f64();
    let rows: Vec<usize> = (0..rollouts.samples.completions.len()).collect();
    let t = Instant::now();
    let mut computed = block_on(loss_and_gradients(
        &model, &adapter, &rollouts, &rows, &step,
    ))?;
    let backward = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut optimizer = AdamW::new(AdamWConfig::default(), &adapter.v);
    optimizer.apply(
        &mut adapter.v,
        "GRPO",
        computed.loss,
        &mut computed.grads,
        step.max_grad_norm,
        step.lr,
    )?;
    let optimizer_s = t.elapsed().as_secs_f64();
    Ok(Breakdown {
        sequences: rows.len(),
        tokens: rollouts.samples.tokens(),
        rollout: rollout_s,
        reference,
        backward,
        optimizer: optimizer_s,
    })
}
