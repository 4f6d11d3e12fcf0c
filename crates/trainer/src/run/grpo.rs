//! `trainer train`: GRPO on GSM8K with a TinyLoRA adapter (`docs/reference.md` §5.1): per step,
//! `prompts_per_step` problems × `group_size` sampled completions from the adapted model,
//! strict (or flexible) reward, group-normalised advantages, `mini_batches × ppo_epochs`
//! clipped-ratio AdamW updates of `v`. The completions come from the adapted model itself or
//! from vLLM servers (`[rollout]`), whose log-prob gap is measured and corrected.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinylora::generate::GenerateConfig;
use tinylora::grpo::Clip;
use tinylora::grpo::importance::IsCorrection;
use tinylora::grpo::pipeline::{
    GrpoStepConfig, LocalEngine, RolloutEngine, Score, prepare, train_on,
};
use tinylora::gsm8k::{flexible_reward, strict_reward};
use tinylora::readback::block_on;
use tinylora::rng::SplitMix64;
use tinylora::sampling::SamplingConfig;

use super::config::{EngineKind, RewardKind, TrainConfig};
use super::state::RunKind;
use super::training::{RunArgs, StepReport, TrainingRun, plan_steps};
use crate::rollout::canary::{CANARY_MIN_SHIFT, canary};
use crate::rollout::llama_server::LlamaServerEngine;
use crate::rollout::vllm::VllmEngine;
use crate::rollout::{Batch, RemoteEngine};

/// The step configuration of the core library from `[grpo]` and `[optim]`.
fn step_config(config: &TrainConfig) -> GrpoStepConfig {
    let g = &config.grpo;
    GrpoStepConfig {
        group_size: g.group_size,
        clip: Clip {
            low: g.clip_low,
            high: g.clip_high,
            dual: g.clip_dual,
        },
        loss_type: g.loss_type,
        lr: config.optim.lr,
        max_grad_norm: config.optim.max_grad_norm,
        adv_eps: g.adv_eps,
        std_floor: g.std_floor,
        kl_beta: g.kl_beta,
        mini_batches: g.mini_batches,
        epochs: g.ppo_epochs,
        micro_batch: g.micro_batch,
        // The local engine samples with the trained model itself: nothing to correct.
        importance: match config.rollout.engine {
            EngineKind::Local => None,
            EngineKind::Vllm | EngineKind::LlamaServer => Some(IsCorrection {
                mode: config.rollout.is_mode,
                cap: config.rollout.is_cap,
                max_gap: config.rollout.max_logprob_gap,
            }),
        },
    }
}

/// The sampling seed of step `step`: a SplitMix64 draw keyed by the run seed and the step, so
/// a resumed run samples exactly what the uninterrupted one would have.
fn step_seed(seed: u64, step: usize) -> u64 {
    SplitMix64::new(seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Runs `trainer train`.
pub fn train(args: RunArgs) -> Result<()> {
    let mut session = TrainingRun::start(&args, RunKind::Grpo)?;
    let config = session.config.clone();
    let g = config.grpo.clone();
    let problems = std::mem::take(&mut session.train_problems);
    let mut usable = Vec::with_capacity(problems.len());
    let mut dropped = 0;
    for p in problems {
        let ids = session.tokenizer.gsm8k_prompt(&p.question)?;
        if ids.len() <= config.data.max_prompt_tokens {
            usable.push((ids, p.gold));
        } else {
            dropped += 1;
        }
    }
    let (total, per_epoch) = plan_steps(
        &config,
        usable.len(),
        g.prompts_per_step,
        &config.data.train,
    )?;
    eprintln!(
        "{} problems ({dropped} prompts longer than {} tokens dropped), {per_epoch} steps per epoch, {total} steps",
        usable.len(),
        config.data.max_prompt_tokens
    );
    let stop_tokens = session
        .tokenizer
        .stop_tokens(&session.model.config.eos_token_ids);
    let mut step_config = step_config(&config);
    let servers = &config.rollout.servers;
    let remote: Option<Box<dyn RemoteEngine>> = match config.rollout.engine {
        EngineKind::Local => None,
        EngineKind::Vllm => {
            let dir = if config.rollout.adapter_dir.as_os_str().is_empty() {
                session.run_dir.join("adapters")
            } else {
                config.rollout.adapter_dir.clone()
            };
            Some(Box::new(VllmEngine::new(
                servers,
                &dir,
                stop_tokens.clone(),
            )?))
        }
        EngineKind::LlamaServer => {
            let floats = session.adapter.v.iter().map(Vec::len).sum();
            Some(Box::new(LlamaServerEngine::new(
                servers,
                stop_tokens.clone(),
                floats,
            )?))
        }
    };
    let reward_fn = match g.reward {
        RewardKind::Strict => strict_reward,
        RewardKind::Flexible => flexible_reward,
    };
    session.drive(total, "grpo", |s, step, lr| {
        let batch = config.step_items(usable.len(), g.prompts_per_step, step);
        let prompts: Vec<Vec<u32>> = batch.iter().map(|&i| usable[i].0.clone()).collect();
        let generation = GenerateConfig {
            max_new_tokens: g.max_new_tokens,
            sampling: SamplingConfig {
                temperature: Some(g.temperature),
                top_k: g.top_k,
                top_p: g.top_p,
            },
            seed: step_seed(config.run.seed, step),
            stop_tokens: stop_tokens.clone(),
        };
        let to_sample = Batch {
            prompts: &prompts,
            group_size: g.group_size,
            generation: &generation,
        };
        let rollout_started = Instant::now();
        let mut canary_found = None;
        // The adapter at this step's v: the local engine samples with it, another engine is
        // given it, and `prepare` recomputes π_old with it.
        let local = LocalEngine {
            model: &s.model,
            mixes: s.adapter.current_mixes(&s.model)?,
        };
        let samples = match &remote {
            None => block_on(local.sample(&prompts, g.group_size, &generation))?,
            Some(engine) => {
                let name = format!("step-{step}");
                let samples = engine.sample(&s.adapter, &name, to_sample);
                if let Some(old) = step.checked_sub(2) {
                    engine.release(&format!("step-{old}"));
                }
                samples?
            }
        };
        let rollout_s = rollout_started.elapsed().as_secs_f64();
        // Each completion decoded once, for its reward and its strict correctness.
        let scores = samples.score(|i, tokens| {
            let text = s.tokenizer.decode(tokens)?;
            let gold = &usable[batch[i]].1;
            anyhow::Ok(Score {
                reward: reward_fn(&text, gold),
                correct: strict_reward(&text, gold) == 1.0,
            })
        })?;
        let update_started = Instant::now();
        step_config.lr = lr;
        let rollouts = block_on(prepare(&s.model, &local.mixes, samples, &scores, &step_config))?;
        // After the step's own checks (in `prepare`), which name a gap more precisely.
        let every = config.rollout.canary_every;
        let due = every > 0 && step.is_multiple_of(every);
        if let Some(engine) = remote.as_deref().filter(|_| due) {
            let first = Batch {
                prompts: &prompts[..1],
                ..to_sample
            };
            let found = canary(engine, &s.model, &s.adapter, step, first)?;
            canary_found = Some(found);
        }
        let updates = block_on(train_on(
            &s.model,
            &mut s.adapter,
            &mut s.optimizer,
            &rollouts,
            &step_config,
        ))?;
        let update_s = update_started.elapsed().as_secs_f64();
        let strict_correct = rollouts.correct.iter().filter(|&&c| c).count();
        let n = rollouts.samples.completions.len() as f64;
        let (reward_mean, reward_std) = rollouts.reward_mean_std();
        let tokens = rollouts.samples.tokens();
        let mean = |f: fn(&tinylora::grpo::pipeline::UpdateStats) -> f64| {
            updates.iter().map(f).sum::<f64>() / updates.len() as f64
        };
        let accuracy = strict_correct as f64 / n;
        let mut record = json!({
            "epoch": step / per_epoch,
            "reward_mean": reward_mean,
            "reward_std": reward_std,
            "accuracy": accuracy,
            "zero_std_fraction": rollouts.zero_std_fraction(g.group_size),
            "completion_len_mean": tokens as f64 / n,
            "completion_len_max": rollouts.samples.completions.iter().map(Vec::len).max().unwrap_or(0),
            "truncated_fraction": rollouts.samples.stopped.iter().filter(|s| !**s).count() as f64 / n,
            "loss": mean(|u| u.loss),
            "grad_norm": mean(|u| u.grad_norm),
            "clip_fraction": mean(|u| u.clip_fraction),
            "kl": mean(|u| u.kl),
            "updates": updates.len(),
            "rollout_tokens": tokens,
            "rollout_time_s": rollout_s,
            "rollout_tokens_per_s": tokens as f64 / rollout_s.max(1e-9),
            "update_time_s": update_s,
        });
        if let (Some(gap), Some(fields)) = (rollouts.gap, record.as_object_mut()) {
            for (key, value) in [
                ("engine_logprob_gap_mean", gap.gap_mean),
                ("engine_logprob_gap_max", gap.gap_max),
                ("is_ratio_min", gap.ratio_min),
                ("is_ratio_mean", gap.ratio_mean),
                ("is_ratio_max", gap.ratio_max),
                ("is_clipped_fraction", gap.clipped_fraction),
            ] {
                fields.insert(key.into(), json!(value));
            }
        }
        let mut summary = format!(
            "reward {reward_mean:.3} acc {:.1}% len {:.0} {:.0} tok/s",
            100.0 * accuracy,
            tokens as f64 / n,
            tokens as f64 / rollout_s.max(1e-9)
        );
        if let (Some(found), Some(fields)) = (canary_found, record.as_object_mut()) {
            fields.insert("canary_shift".into(), json!(found.shift));
            fields.insert("canary_gap".into(), json!(found.gap));
            if found.shift < CANARY_MIN_SHIFT {
                summary.push_str(" (canary too weak to judge the engine)");
            }
        }
        Ok(StepReport { record, summary })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinylora::micro_batch::MicroBatch;

    #[test]
    fn the_papers_recipe_maps_onto_the_core() {
        let c = step_config(&TrainConfig::default());
        assert_eq!(c.group_size, 4);
        assert_eq!(
            c.clip,
            Clip {
                low: 0.2,
                high: 0.4,
                dual: Some(3.0)
            }
        );
        assert_eq!(c.mini_batches, 2);
        assert_eq!(c.micro_batch, MicroBatch::Auto);
        assert_ne!(step_seed(42, 0), step_seed(42, 1));
        assert_ne!(step_seed(42, 0), step_seed(43, 0));
    }
}
