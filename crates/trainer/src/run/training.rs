//! What `trainer train` and `trainer sft` share: the configuration, the model on an autodiff
//! device with its adapter, the optimizer, and the step loop with learning-rate schedule,
//! metrics, progress, periodic evaluation and checkpoints, Ctrl-C and divergence handling.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tinylora::adapter::TinyLora;
use tinylora::adapter::basis::{Basis, fingerprint};
use tinylora::adapter::file::AdapterFile;
use tinylora::device::{BackendKind, init};
use tinylora::evaluate::{EvalConfig, evaluate};
use tinylora::fsutil::write_atomic;
use tinylora::gsm8k::Problem;
use tinylora::model::CausalLm;
use tinylora::optim::{AdamW, global_norm};
use tinylora::readback::block_on;
use tinylora::tokenizer::Tokenizer;
use tinylora::train::config::TrainConfig;
use tinylora::weights::safetensors::SafetensorsFile;

use super::data::load_problems;
use super::interrupt::{Interrupt, Interrupted};
use super::metrics::MetricsLog;
use super::plot::write_plots;
use super::progress::Progress;
use super::state::{self, RunKind, TrainState};
use crate::cmd::common::adapter_from_file;

/// Command-line arguments of `trainer train` and `trainer sft`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The TOML config (see assets/configs/README.md); optional with --resume.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides, e.g. --set grpo.group_size=8 --set optim.lr=1e-4.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from a checkpoint folder, or from a run folder's latest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Output folder (default: run.out from the config, or the resumed run's folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A run in progress.
pub struct TrainingRun {
    /// The resolved configuration.
    pub config: TrainConfig,
    /// Where everything is written.
    pub run_dir: PathBuf,
    /// The model (autodiff device) with the adapter attached.
    pub model: CausalLm,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The adapter being trained.
    pub adapter: TinyLora,
    /// AdamW state.
    pub optimizer: AdamW,
    /// Steps already done (from a checkpoint).
    pub start_step: usize,
    /// The training problems (`data.train`).
    pub train_problems: Vec<Problem>,
    kind: RunKind,
    base_fingerprint: String,
    metrics: MetricsLog,
    eval_problems: Vec<Problem>,
    interrupt: Interrupt,
    last_checkpoint: Option<(usize, PathBuf)>,
}

/// What one step reports: its metrics record and a one-line summary for the progress bar.
pub struct StepReport {
    /// Fields of the `metrics.jsonl` record, `lr` among them (`split`, `step`, `v_norm` and
    /// times are added).
    pub record: Value,
    /// A short summary.
    pub summary: String,
}

impl TrainingRun {
    /// Resolves the config (from `--config`, or the resumed checkpoint's), loads the data,
    /// model and tokenizer, and creates or restores the adapter and optimizer. Nothing is
    /// written before the data has loaded.
    pub fn start(args: &RunArgs, kind: RunKind) -> Result<Self> {
        let resumed = args.resume.as_deref().map(state::open).transpose()?;
        let config = match (&args.config, &resumed) {
            (Some(path), _) => TrainConfig::load(path, &args.set)?,
            (None, Some(c)) => {
                let origin = c.dir.join("state.json");
                TrainConfig::parse(&c.state.config, &origin, &args.set)?
            }
            (None, None) => bail!("give --config FILE.toml (or --resume a checkpoint)"),
        };
        if let Some(c) = &resumed {
            ensure!(
                c.state.kind == kind,
                "{}: this checkpoint was written by `trainer {}`",
                c.dir.display(),
                if c.state.kind == RunKind::Grpo {
                    "train"
                } else {
                    "sft"
                }
            );
        }
        let train_problems = training_problems(&config)?;
        let run_dir = match (&args.out, &resumed) {
            (Some(out), _) => out.clone(),
            (None, Some(c)) => state::run_dir_of(&c.dir),
            (None, None) => config.run.out.clone(),
        };
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let backend: BackendKind = config.model.backend.parse()?;
        let device = init(backend)?.autodiff();
        let checkpoint = crate::hub::open(&config.model.path)?;
        let tokenizer_path = if config.model.tokenizer.as_os_str().is_empty() {
            checkpoint.tokenizer_path()
        } else {
            config.model.tokenizer.clone()
        };
        let tokenizer = checkpoint.tokenizer(&tokenizer_path)?;
        let mut model = checkpoint
            .load(&device)
            .with_context(|| format!("loading {}", config.model.path.display()))?;
        let adapter_config = config.adapter.clone();
        let base_fingerprint = block_on(fingerprint(&model, &adapter_config.targets))?;
        let basis = Some(config.init.basis.as_path()).filter(|p| !p.as_os_str().is_empty());
        let (adapter, optimizer, start_step) = match &resumed {
            Some(c) => {
                let origin = c.dir.join("adapter.json");
                ensure!(
                    c.adapter.config == adapter_config,
                    "{}: the checkpoint's adapter differs from the config's [adapter]",
                    origin.display()
                );
                let adapter = adapter_from_file(&c.adapter, &origin, basis, &mut model)?;
                (adapter, c.state.optimizer.clone(), c.state.step)
            }
            None => {
                let adapter = if !config.init.adapter.as_os_str().is_empty() {
                    let origin = &config.init.adapter;
                    let file = AdapterFile::load(origin)?;
                    ensure!(
                        file.config == adapter_config,
                        "{}: init.adapter's config differs from the config's [adapter]",
                        origin.display()
                    );
                    adapter_from_file(&file, origin, basis, &mut model)?
                } else if let Some(basis) = basis {
                    let mut file = SafetensorsFile::open(basis)?;
                    let basis = Basis::from_file(
                        &mut file,
                        basis,
                        &mut model,
                        &adapter_config,
                        &base_fingerprint,
                    )?;
                    TinyLora::new(adapter_config, basis)
                } else {
                    block_on(TinyLora::init(&mut model, adapter_config))?
                };
                let optimizer = AdamW::new(config.optim.adamw(), &adapter.v);
                (adapter, optimizer, 0)
            }
        };
        adapter.attach(&mut model)?;
        let eval_problems = if config.data.eval.as_os_str().is_empty() {
            Vec::new()
        } else {
            let (mut problems, _) = load_problems(&config.data.eval, config.bad_lines())?;
            if config.data.eval_limit > 0 {
                problems.truncate(config.data.eval_limit);
            }
            problems
        };
        write_atomic(&run_dir.join("config.toml"), config.to_toml().as_bytes())?;
        let metrics = MetricsLog::open(&run_dir, resumed.as_ref().map(|c| c.state.step))?;
        eprintln!(
            "{} trainable parameters ({} vector(s) of u = {} over {} modules); writing to {}{}",
            adapter.trainable_count(),
            adapter.basis.groups,
            adapter.config.u,
            adapter.basis.modules.len(),
            run_dir.display(),
            if start_step > 0 {
                format!("; resuming after step {start_step}")
            } else {
                String::new()
            }
        );
        Ok(Self {
            last_checkpoint: resumed.map(|c| (c.state.step, c.dir)),
            config,
            run_dir,
            model,
            tokenizer,
            adapter,
            optimizer,
            start_step,
            train_problems,
            kind,
            base_fingerprint,
            metrics,
            eval_problems,
            interrupt: Interrupt::install()?,
        })
    }

    /// The adapter as a file.
    pub fn adapter_file(&self) -> AdapterFile {
        self.adapter.to_file(self.base_fingerprint.clone())
    }

    fn checkpoint(&mut self, step: usize, total: usize) -> Result<PathBuf> {
        let state = TrainState::new(
            self.kind,
            step,
            total,
            self.optimizer.clone(),
            self.config.run.seed,
            self.config.to_toml(),
        );
        let dir = state::save(
            &self.run_dir,
            &self.adapter_file(),
            &state,
            self.config.run.keep_checkpoints,
        )?;
        self.last_checkpoint = Some((step, dir.clone()));
        Ok(dir)
    }

    /// Evaluates on the held-out set (if any) after `step` steps and logs the result.
    fn evaluate(&mut self, step: usize, progress: &Progress) -> Result<Option<f64>> {
        if self.eval_problems.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let config = EvalConfig {
            batch_size: self.config.run.eval_batch_size,
            max_new_tokens: self.config.run.eval_max_new_tokens,
        };
        let evaluation = block_on(evaluate(
            &self.model,
            &self.adapter.current_mixes(&self.model)?,
            &self.tokenizer,
            &self.eval_problems,
            config,
            |_| Ok(()),
            || false,
        ))?;
        evaluation.write_records(&self.run_dir.join(format!("eval/step-{step:06}.jsonl")))?;
        let accuracy = evaluation.accuracy();
        self.metrics.write(&json!({
            "split": "eval",
            "step": step,
            "accuracy": accuracy,
            "correct": evaluation.correct,
            "n": evaluation.n,
            "eval_time_s": started.elapsed().as_secs_f64(),
        }))?;
        progress.println(&format!(
            "step {step}: held-out accuracy {:.1}% ({}/{})",
            100.0 * accuracy,
            evaluation.correct,
            evaluation.n
        ));
        Ok(Some(accuracy))
    }

    /// The divergence message: what happened and which checkpoint is the last good one.
    fn diverged(&self, step: usize, error: &tinylora::Error) -> anyhow::Error {
        let kept = match &self.last_checkpoint {
            Some((s, dir)) => format!(
                "the last good checkpoint is {} (step {s}); resume from it with a lower optim.lr",
                dir.display()
            ),
            None => "no checkpoint had been written yet".to_string(),
        };
        anyhow::anyhow!("step {}: {error}; stopped, {kept}", step + 1)
    }

    /// Runs steps `start_step..total`: `step_fn(run, step)` does the work of one step (at
    /// [`TrainConfig::lr_at`]). Then evaluates, checkpoints, writes the adapter and plots.
    pub fn drive(
        mut self,
        total: usize,
        what: &str,
        mut step_fn: impl FnMut(&mut Self, usize) -> Result<StepReport>,
    ) -> Result<()> {
        let r = self.config.run.clone();
        ensure!(
            self.start_step <= total,
            "the checkpoint is at step {}, past the run's {total} steps (raise run.epochs or run.max_steps)",
            self.start_step
        );
        let progress = Progress::new(self.start_step, total, what);
        let started = Instant::now();
        if self.start_step == 0 && self.config.eval_due(0, total) {
            self.evaluate(0, &progress)?;
        }
        for step in self.start_step..total {
            let step_started = Instant::now();
            let report = match step_fn(&mut self, step) {
                Ok(report) => report,
                Err(e) => match e.downcast_ref::<tinylora::Error>() {
                    Some(inner @ tinylora::Error::Diverged(_)) => {
                        progress.finish();
                        return Err(self.diverged(step, inner));
                    }
                    _ => return Err(e),
                },
            };
            let done = step + 1;
            let v_norm = global_norm(self.adapter.v.iter().flatten());
            let mut record = report.record;
            record["split"] = json!("train");
            record["step"] = json!(done);
            record["v_norm"] = json!(v_norm);
            record["step_time_s"] = json!(step_started.elapsed().as_secs_f64());
            record["elapsed_s"] = json!(started.elapsed().as_secs_f64());
            self.metrics.write(&record)?;
            progress.step(done, &report.summary);
            if done < total && self.config.eval_due(done, total) {
                self.evaluate(done, &progress)?;
            }
            let interrupted = self.interrupt.requested();
            if (r.checkpoint_every > 0 && done % r.checkpoint_every == 0 && done < total)
                || interrupted
            {
                let dir = self.checkpoint(done, total)?;
                progress.println(&format!("step {done}: checkpoint {}", dir.display()));
            }
            if interrupted {
                progress.finish();
                write_plots(&self.run_dir)?;
                return Err(Interrupted(format!(
                    "interrupted after step {done} of {total}; checkpoint saved; continue with `trainer {} --resume {}`",
                    if self.kind == RunKind::Grpo { "train" } else { "sft" },
                    self.run_dir.display()
                ))
                .into());
            }
        }
        progress.finish();
        let final_dir = match &self.last_checkpoint {
            Some((s, dir)) if *s == total => dir.clone(),
            _ => self.checkpoint(total, total)?,
        };
        let accuracy = self.evaluate(total, &progress)?;
        let file = self.adapter_file();
        let adapter_path = self.run_dir.join("adapter.json");
        file.save(&adapter_path)?;
        write_atomic(
            &self.run_dir.join("adapter.tl1"),
            file.to_compact().as_bytes(),
        )?;
        let plots = write_plots(&self.run_dir)?;
        println!(
            "done: {total} steps in {:.0} s; adapter {} ({} floats; compact form in adapter.tl1); checkpoint {}{}; plots {}",
            started.elapsed().as_secs_f64(),
            adapter_path.display(),
            self.adapter.trainable_count(),
            final_dir.display(),
            accuracy
                .map(|a| format!("; held-out accuracy {:.1}%", 100.0 * a))
                .unwrap_or_default(),
            plots
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

/// Loads the training problems, saying how many malformed records were skipped.
fn training_problems(config: &TrainConfig) -> Result<Vec<Problem>> {
    let (problems, skipped) = load_problems(&config.data.train, config.bad_lines())?;
    if skipped > 0 {
        eprintln!(
            "skipped {skipped} malformed record(s) in {}",
            config.data.train.display()
        );
    }
    Ok(problems)
}
