//! Training in the page: the core's GRPO run ([`tinylora::train::grpo::GrpoRun`], the steps of
//! `trainer train`) on the loaded model, one step at a time with an event after each. A pause
//! keeps the run for `train_resume`; a stop ends it; either way the adapter so far stays
//! applied, and every step's sampling seed and learning rate depend on its index only, so a
//! paused run takes the same steps as an uninterrupted one.

use std::path::Path;

use tinylora::adapter::basis::fingerprint;
use tinylora::adapter::{TinyLora, detach};
use tinylora::evaluate::{EvalConfig, evaluate};
use tinylora::gsm8k::{self, Problem};
use tinylora::optim::{AdamW, global_norm};
use tinylora::train::config::TrainConfig;
use tinylora::train::grpo::GrpoRun;

use super::{Halt, HaltFlag, WorkerState};
use crate::download::fetch_text;
use crate::protocol::{Event, Tally};
use crate::scope::{now_ms, post};

/// A training run between requests.
pub struct Training {
    run: GrpoRun,
    optimizer: AdamW,
    /// Steps done.
    done: usize,
    base_fingerprint: String,
    eval_problems: Vec<Problem>,
}

/// The GSM8K problems at `url` (JSONL), by the config's malformed-record policy.
async fn problems_at(url: &Path, config: &TrainConfig) -> Result<Vec<Problem>, String> {
    let text = fetch_text(&url.to_string_lossy()).await?;
    let (problems, _) =
        gsm8k::parse_jsonl(&text, url, config.bad_lines()).map_err(|e| e.to_string())?;
    Ok(problems)
}

impl WorkerState {
    /// Starts a fresh GRPO run of `config` on the loaded model (`v = 0`, the frozen basis
    /// built as `trainer train` builds it; any applied adapter is replaced) and takes `steps`
    /// of its steps (all when `None`).
    pub async fn train(
        &mut self,
        config: TrainConfig,
        steps: Option<usize>,
        halt: HaltFlag,
    ) -> Result<Event, String> {
        let started = now_ms();
        self.training = None;
        config
            .validate_recipe()
            .map_err(|e| format!("the recipe: {e}"))?;
        let train_problems = problems_at(&config.data.train, &config).await?;
        let mut eval_problems = if config.data.eval.as_os_str().is_empty() {
            Vec::new()
        } else {
            problems_at(&config.data.eval, &config).await?
        };
        if config.data.eval_limit > 0 {
            eval_problems.truncate(config.data.eval_limit);
        }
        let loaded = self.loaded()?;
        let tokenizer = loaded.tokenizer()?;
        let run = GrpoRun::new(
            config.clone(),
            tokenizer,
            &loaded.model.config.eos_token_ids,
            &train_problems,
            &config.data.train,
        )
        .map_err(|e| e.to_string())?;
        loaded.adapter = None;
        detach(&mut loaded.model);
        let targets = &config.adapter.targets;
        let base_fingerprint = fingerprint(&loaded.model, targets)
            .await
            .map_err(|e| e.to_string())?;
        let adapter = TinyLora::init(&mut loaded.model, config.adapter.clone())
            .await
            .map_err(|e| e.to_string())?;
        adapter
            .attach(&mut loaded.model)
            .map_err(|e| e.to_string())?;
        let optimizer = AdamW::new(config.optim.adamw(), &adapter.v);
        post(&Event::TrainStarted {
            step: 0,
            total_steps: run.total_steps,
            problems: run.problems(),
            trainable: adapter.trainable_count(),
            v: adapter.v.clone(),
            seconds: (now_ms() - started) / 1000.0,
        });
        loaded.adapter = Some(adapter);
        self.training = Some(Training {
            run,
            optimizer,
            done: 0,
            base_fingerprint,
            eval_problems,
        });
        self.take_steps(steps, halt).await
    }

    /// Continues the paused run for `steps` steps (all that remain when `None`).
    pub async fn train_resume(
        &mut self,
        steps: Option<usize>,
        halt: HaltFlag,
    ) -> Result<Event, String> {
        let training = self
            .training
            .as_ref()
            .ok_or("no paused training run: start one with Train")?;
        let adapter = self.loaded.as_ref().and_then(|l| l.adapter.as_ref());
        post(&Event::TrainStarted {
            step: training.done,
            total_steps: training.run.total_steps,
            problems: training.run.problems(),
            trainable: adapter.map_or(0, TinyLora::trainable_count),
            v: adapter.map(|a| a.v.clone()).unwrap_or_default(),
            seconds: 0.0,
        });
        self.take_steps(steps, halt).await
    }

    /// Takes up to `steps` steps of the run, ending early at a stop or pause (after the
    /// current step); evaluates on the held-out problems when `TrainConfig::eval_due`
    /// says, as `trainer train` does. The run is kept for `train_resume` unless it is done or
    /// stopped (or a step failed: the steps before it count).
    async fn take_steps(&mut self, steps: Option<usize>, halt: HaltFlag) -> Result<Event, String> {
        let WorkerState {
            loaded, training, ..
        } = self;
        let (Some(loaded), Some(state)) = (loaded.as_mut(), training.as_mut()) else {
            return Err("no model is loaded yet".into());
        };
        let tokenizer = loaded.tokenizer.as_ref().ok_or("no tokenizer")?;
        let model = &loaded.model;
        let adapter = loaded
            .adapter
            .as_mut()
            .ok_or("the training run's adapter was replaced: start again with Train")?;
        let run = &state.run;
        let total = run.total_steps;
        let end = total.min(state.done.saturating_add(steps.unwrap_or(total)));
        let eval = EvalConfig {
            batch_size: run.config.run.eval_batch_size,
            max_new_tokens: run.config.run.eval_max_new_tokens,
        };
        let held_out = async |step: usize, adapter: &TinyLora| -> Result<(), String> {
            if !run.config.eval_due(step, total) || state.eval_problems.is_empty() {
                return Ok(());
            }
            let mixes = adapter.current_mixes(model).map_err(|e| e.to_string())?;
            let evaluation = evaluate(
                model,
                &mixes,
                tokenizer,
                &state.eval_problems,
                eval,
                |_| Ok(()),
                || halt.get() == Halt::Stop,
            )
            .await
            .map_err(|e| e.to_string())?;
            // A stop cuts the check short: what it did is not a held-out accuracy.
            if halt.get() == Halt::Stop {
                return Ok(());
            }
            post(&Event::TrainEval {
                step,
                tally: Tally::of(&evaluation),
            });
            Ok(())
        };
        if state.done == 0 {
            held_out(0, adapter).await?;
        }
        let mut done = state.done;
        while done < end && halt.get() == Halt::Running {
            let started = now_ms();
            let stats = run
                .step(model, adapter, &mut state.optimizer, tokenizer, done)
                .await
                .map_err(|e| format!("step {}: {e}", done + 1))?;
            done += 1;
            state.done = done;
            post(&Event::TrainStep {
                step: done,
                total_steps: total,
                lr: run.config.lr_at(done - 1, total),
                reward_mean: stats.reward_mean,
                strict_accuracy: stats.strict_accuracy,
                kl: stats.kl,
                loss: stats.loss,
                grad_norm: stats.grad_norm,
                completion_len_mean: stats.completion_len_mean,
                v_norm: global_norm(adapter.v.iter().flatten()),
                v: adapter.v.clone(),
                seconds: (now_ms() - started) / 1000.0,
            });
            if done < total {
                held_out(done, adapter).await?;
            }
        }
        if done == total {
            held_out(total, adapter).await?;
        }
        let file = adapter.to_file(state.base_fingerprint.clone());
        let paused = done < total && halt.get() != Halt::Stop;
        let event = Event::Trained {
            step: done,
            total_steps: total,
            v: adapter.v.clone(),
            adapter: file.to_compact(),
            file: file.to_json(),
            paused,
        };
        if !paused {
            *training = None;
        }
        Ok(event)
    }
}
