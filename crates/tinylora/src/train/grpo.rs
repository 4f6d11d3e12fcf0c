//! A GRPO run's steps (`docs/reference.md` §5.1): per step, `prompts_per_step` problems ×
//! `group_size` sampled completions, strict (or flexible) reward, group-normalised advantages,
//! `mini_batches × ppo_epochs` clipped-ratio AdamW updates of `v`. Which problems, which
//! sampling seed and which learning rate a step uses depend only on the config and the step's
//! index, so a paused or resumed run takes the same steps as an uninterrupted one.

use std::path::Path;

use crate::Result;
use crate::adapter::TinyLora;
use crate::generate::GenerateConfig;
use crate::grpo::Clip;
use crate::grpo::importance::IsCorrection;
use crate::grpo::pipeline::{GrpoStepConfig, GrpoStepStats, Samples, Score, grpo_step};
use crate::gsm8k::{Problem, flexible_reward, strict_reward};
use crate::model::CausalLm;
use crate::optim::AdamW;
use crate::rng::SplitMix64;
use crate::sampling::SamplingConfig;
use crate::tokenizer::Tokenizer;

use super::config::{EngineKind, RewardKind, TrainConfig};

/// The sampling seed of step `step`: a SplitMix64 draw keyed by the run seed and the step, so
/// a resumed run samples exactly what the uninterrupted one would have.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    SplitMix64::new(seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// The core's step configuration of `config` from `[grpo]`, `[optim]` and `[rollout]` at learning
/// rate `lr`. Samples of the trained model itself need no importance correction; another
/// engine's do.
pub fn step_config(config: &TrainConfig, lr: f64) -> GrpoStepConfig {
    let g = &config.grpo;
    GrpoStepConfig {
        group_size: g.group_size,
        clip: Clip {
            low: g.clip_low,
            high: g.clip_high,
            dual: g.clip_dual,
        },
        loss_type: g.loss_type,
        lr,
        max_grad_norm: config.optim.max_grad_norm,
        adv_eps: g.adv_eps,
        std_floor: g.std_floor,
        kl_beta: g.kl_beta,
        mini_batches: g.mini_batches,
        epochs: g.ppo_epochs,
        micro_batch: g.micro_batch,
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

/// What one step works on.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// The step's index (0-based).
    pub step: usize,
    /// Indices of its problems among the run's usable ones.
    pub items: Vec<usize>,
    /// Their prompts' token ids.
    pub prompts: Vec<Vec<u32>>,
    /// How completions are sampled (the step's seed included).
    pub generation: GenerateConfig,
    /// The learning rate of the step.
    pub lr: f64,
}

/// A GRPO run: its config and its usable training problems as prompts.
#[derive(Debug, Clone)]
pub struct GrpoRun {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The usable problems' prompt token ids.
    prompts: Vec<Vec<u32>>,
    /// Their gold answers.
    golds: Vec<String>,
    /// Problems dropped for prompts longer than `data.max_prompt_tokens`.
    pub dropped: usize,
    /// Steps of the whole run (the schedule's length).
    pub total_steps: usize,
    /// Steps per pass over the problems.
    pub steps_per_epoch: usize,
    stop_tokens: Vec<u32>,
}

impl GrpoRun {
    /// Prepares a run of `config` over `problems` (read from `origin`) with the model's
    /// tokenizer and end-of-sequence ids; an error when fewer than one step's problems fit.
    pub fn new(
        config: TrainConfig,
        tokenizer: &Tokenizer,
        eos_token_ids: &[u32],
        problems: &[Problem],
        origin: &Path,
    ) -> Result<Self> {
        let (mut prompts, mut golds, mut dropped) = (Vec::new(), Vec::new(), 0);
        for p in problems {
            let ids = tokenizer.gsm8k_prompt(&p.question)?;
            if ids.len() <= config.data.max_prompt_tokens {
                prompts.push(ids);
                golds.push(p.gold.clone());
            } else {
                dropped += 1;
            }
        }
        let (total_steps, steps_per_epoch) =
            config.plan_steps(prompts.len(), config.grpo.prompts_per_step, origin)?;
        Ok(Self {
            config,
            prompts,
            golds,
            dropped,
            total_steps,
            steps_per_epoch,
            stop_tokens: tokenizer.stop_tokens(eos_token_ids),
        })
    }

    /// The usable problems.
    pub fn problems(&self) -> usize {
        self.prompts.len()
    }

    /// The tokens that end a completion.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    /// Step `step`'s problems, sampling and learning rate.
    pub fn plan(&self, step: usize) -> StepPlan {
        let g = &self.config.grpo;
        let items = self
            .config
            .step_items(self.prompts.len(), g.prompts_per_step, step);
        StepPlan {
            step,
            prompts: items.iter().map(|&i| self.prompts[i].clone()).collect(),
            items,
            generation: GenerateConfig {
                max_new_tokens: g.max_new_tokens,
                sampling: SamplingConfig {
                    temperature: Some(g.temperature),
                    top_k: g.top_k,
                    top_p: g.top_p,
                },
                seed: step_seed(self.config.run.seed, step),
                stop_tokens: self.stop_tokens.clone(),
            },
            lr: self.config.lr_at(step, self.total_steps),
        }
    }

    /// The score of completion `tokens` of the plan's prompt `i`: the configured reward, and
    /// strict correctness beside it.
    pub fn score(
        &self,
        plan: &StepPlan,
        tokenizer: &Tokenizer,
        i: usize,
        tokens: &[u32],
    ) -> Result<Score> {
        let text = tokenizer.decode(tokens)?;
        let gold = &self.golds[plan.items[i]];
        let reward = match self.config.grpo.reward {
            RewardKind::Strict => strict_reward(&text, gold),
            RewardKind::Flexible => flexible_reward(&text, gold),
        };
        Ok(Score {
            reward,
            correct: strict_reward(&text, gold) == 1.0,
        })
    }

    /// Every completion of `samples` scored (each decoded once).
    pub fn scores(
        &self,
        plan: &StepPlan,
        tokenizer: &Tokenizer,
        samples: &Samples,
    ) -> Result<Vec<Score>> {
        samples.score(|i, tokens| self.score(plan, tokenizer, i, tokens))
    }

    /// Step `step` with the trained model as its own engine: samples at the adapter's `v`,
    /// scores, updates `v` (the `adapter` attached to `model`, on an autodiff device).
    pub async fn step(
        &self,
        model: &CausalLm,
        adapter: &mut TinyLora,
        optimizer: &mut AdamW,
        tokenizer: &Tokenizer,
        step: usize,
    ) -> Result<GrpoStepStats> {
        let plan = self.plan(step);
        grpo_step(
            model,
            adapter,
            optimizer,
            &plan.prompts,
            |i, tokens| self.score(&plan, tokenizer, i, tokens),
            &plan.generation,
            &step_config(&self.config, plan.lr),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_recipe_maps_onto_the_core() {
        let c = step_config(&TrainConfig::default(), 0.5);
        assert_eq!(c.group_size, 4);
        assert_eq!(
            c.clip,
            Clip {
                low: 0.2,
                high: 0.4,
                dual: Some(3.0)
            }
        );
        assert_eq!((c.mini_batches, c.lr), (2, 0.5));
        assert_eq!(c.micro_batch, crate::micro_batch::MicroBatch::Auto);
        assert_eq!(c.importance, None);
    }

    #[test]
    fn steps_have_their_own_seeds() {
        assert_ne!(step_seed(42, 0), step_seed(42, 1));
        assert_ne!(step_seed(42, 0), step_seed(43, 0));
    }
}
