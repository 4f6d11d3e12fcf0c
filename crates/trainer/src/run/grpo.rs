//! `trainer train`: GRPO on GSM8K with a TinyLoRA adapter — the core's GRPO run
//! ([`tinylora::train::grpo`]) with files around it. The completions come from the adapted
//! model itself or from vLLM / llama.cpp servers (`[rollout]`), whose log-prob gap is
//! measured and corrected.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinylora::grpo::pipeline::{GrpoStepStats, LocalEngine, RolloutEngine, prepare, train_on};
use tinylora::readback::block_on;
use tinylora::train::config::EngineKind;
use tinylora::train::grpo::{GrpoRun, step_config};

use super::state::RunKind;
use super::training::{RunArgs, StepReport, TrainingRun};
use crate::rollout::canary::{CANARY_MIN_SHIFT, canary};
use crate::rollout::llama_server::LlamaServerEngine;
use crate::rollout::vllm::VllmEngine;
use crate::rollout::{Batch, RemoteEngine};

/// Runs `trainer train`.
pub fn train(args: RunArgs) -> Result<()> {
    let mut session = TrainingRun::start(&args, RunKind::Grpo)?;
    let config = session.config.clone();
    let problems = std::mem::take(&mut session.train_problems);
    let run = GrpoRun::new(
        config.clone(),
        &session.tokenizer,
        &session.model.config.eos_token_ids,
        &problems,
        &config.data.train,
    )?;
    eprintln!(
        "{} problems ({} prompts longer than {} tokens dropped), {} steps per epoch, {} steps",
        run.problems(),
        run.dropped,
        config.data.max_prompt_tokens,
        run.steps_per_epoch,
        run.total_steps
    );
    let stop_tokens = run.stop_tokens().to_vec();
    let servers = &config.rollout.servers;
    let remote: Option<Box<dyn RemoteEngine>> = match config.rollout.engine {
        EngineKind::Local => None,
        EngineKind::Vllm => {
            let dir = if config.rollout.adapter_dir.as_os_str().is_empty() {
                session.run_dir.join("adapters")
            } else {
                config.rollout.adapter_dir.clone()
            };
            Some(Box::new(VllmEngine::new(servers, &dir, stop_tokens)?))
        }
        EngineKind::LlamaServer => {
            let floats = session.adapter.v.iter().map(Vec::len).sum();
            Some(Box::new(LlamaServerEngine::new(
                servers,
                stop_tokens,
                floats,
            )?))
        }
    };
    let group_size = config.grpo.group_size;
    session.drive(run.total_steps, "grpo", |s, step| {
        let plan = run.plan(step);
        let to_sample = Batch {
            prompts: &plan.prompts,
            group_size,
            generation: &plan.generation,
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
            None => block_on(local.sample(&plan.prompts, group_size, &plan.generation))?,
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
        let scores = run.scores(&plan, &s.tokenizer, &samples)?;
        let update_started = Instant::now();
        let step_config = step_config(&config, plan.lr);
        let rollouts = block_on(prepare(
            &s.model,
            &local.mixes,
            samples,
            &scores,
            &step_config,
        ))?;
        // After the step's own checks (in `prepare`), which name a gap more precisely.
        let every = config.rollout.canary_every;
        let due = every > 0 && step.is_multiple_of(every);
        if let Some(engine) = remote.as_deref().filter(|_| due) {
            let first = Batch {
                prompts: &plan.prompts[..1],
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
        let stats = GrpoStepStats::new(&rollouts, updates, group_size);
        let tokens = stats.rollout_tokens as f64;
        let mut record = json!({
            "epoch": step / run.steps_per_epoch,
            "lr": plan.lr,
            "reward_mean": stats.reward_mean,
            "reward_std": stats.reward_std,
            "accuracy": stats.strict_accuracy,
            "zero_std_fraction": stats.zero_std_fraction,
            "completion_len_mean": stats.completion_len_mean,
            "completion_len_max": stats.completion_len_max,
            "truncated_fraction": stats.truncated_fraction,
            "loss": stats.loss,
            "grad_norm": stats.grad_norm,
            "clip_fraction": stats.clip_fraction,
            "kl": stats.kl,
            "updates": stats.updates.len(),
            "rollout_tokens": stats.rollout_tokens,
            "rollout_time_s": rollout_s,
            "rollout_tokens_per_s": tokens / rollout_s.max(1e-9),
            "update_time_s": update_s,
        });
        if let (Some(gap), Some(fields)) = (stats.gap, record.as_object_mut()) {
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
            "reward {:.3} acc {:.1}% len {:.0} {:.0} tok/s",
            stats.reward_mean,
            100.0 * stats.strict_accuracy,
            stats.completion_len_mean,
            tokens / rollout_s.max(1e-9)
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
