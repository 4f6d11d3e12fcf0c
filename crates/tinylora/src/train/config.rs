//! The training configuration: one TOML file with sections `[model]`, `[data]`, `[adapter]`,
//! `[init]`, `[grpo]`, `[rollout]`, `[sft]`, `[optim]`, `[run]`, every key optional with the default below, plus
//! `--set section.key=value` overrides. Every knob, its default and its source are listed in
//! `assets/configs/README.md` (a test keeps that table and these defaults in step).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapter::config::{ALL_TARGETS, TinyLoraConfig};
use crate::grpo::LossType;
use crate::grpo::importance::IsMode;
use crate::gsm8k::BadLines;
use crate::hub::HubModel;
use crate::micro_batch::MicroBatch;
use crate::optim::AdamWConfig;
use crate::{Error, Result};

/// Everything a `trainer train` or `trainer sft` run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The base model.
    pub model: ModelSection,
    /// Training and evaluation data.
    pub data: DataSection,
    /// The TinyLoRA adapter (`r`, `u`, `targets`, `tying`, `convention`, `seed`).
    pub adapter: TinyLoraConfig,
    /// Where the adapter starts: its `v` and its frozen factors.
    pub init: InitSection,
    /// GRPO (`trainer train`).
    pub grpo: GrpoSection,
    /// Which engine samples GRPO's completions.
    pub rollout: RolloutSection,
    /// The supervised baseline (`trainer sft`).
    pub sft: SftSection,
    /// AdamW and the learning-rate schedule.
    pub optim: OptimSection,
    /// Length, seeds, checkpoints and evaluation.
    pub run: RunSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A model directory (config.json + safetensors) or a .gguf file; relative paths are
    /// relative to the config file.
    pub path: PathBuf,
    /// tokenizer.json; empty: next to the model.
    pub tokenizer: PathBuf,
    /// `cpu` or `wgpu`.
    pub backend: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            tokenizer: PathBuf::new(),
            backend: "cpu".into(),
        }
    }
}

/// `[init]`: where the adapter starts. Paths are relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct InitSection {
    /// An adapter file whose `v` the run starts from (e.g. `trainer sft`'s, then GRPO); its
    /// config must equal `[adapter]` and its base model this one. Empty: `v = 0`.
    pub adapter: PathBuf,
    /// A basis file (`trainer export --basis`) to read the frozen factors from instead of
    /// computing them; checked against the model and the config. Empty: computed.
    pub basis: PathBuf,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// GSM8K training problems (JSONL or parquet).
    pub train: PathBuf,
    /// Held-out problems for evaluation; empty: none.
    pub eval: PathBuf,
    /// Evaluate on the first N held-out problems; 0: all.
    pub eval_limit: usize,
    /// Skip malformed records (counted) instead of stopping at the first one.
    pub skip_bad_lines: bool,
    /// Shuffle the training problems each epoch (verl `data.shuffle`, off in the paper's runs).
    pub shuffle: bool,
    /// Drop training prompts longer than this many tokens (verl `max_prompt_length`).
    pub max_prompt_tokens: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            eval: PathBuf::new(),
            eval_limit: 0,
            skip_bad_lines: false,
            shuffle: false,
            max_prompt_tokens: 512,
        }
    }
}

/// Which reward scores a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// verl's strict `#### N` rule (the paper's).
    Strict,
    /// The last number in the response.
    Flexible,
}

/// `[grpo]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoSection {
    /// Prompts per step (verl `data.train_batch_size`).
    pub prompts_per_step: usize,
    /// Completions per prompt (verl `rollout.n`).
    pub group_size: usize,
    /// Longest completion in tokens (verl `data.max_response_length`).
    pub max_new_tokens: usize,
    /// Sampling temperature of rollouts.
    pub temperature: f32,
    /// Nucleus sampling bound (`1` in the file: off).
    #[serde(with = "one_is_off")]
    pub top_p: Option<f32>,
    /// Top-k sampling bound (`0` in the file: off).
    #[serde(with = "zero_is_off")]
    pub top_k: Option<usize>,
    /// Optimizer updates per rollout batch (train_batch_size / ppo_mini_batch_size).
    pub mini_batches: usize,
    /// Passes over the mini-batches (verl `ppo_epochs`).
    pub ppo_epochs: usize,
    /// Most sequences per forward/backward (`0` in the file: automatic, as many as keep the
    /// logits and attention scores of one within 4 MiB).
    pub micro_batch: MicroBatch,
    /// `grpo`, `dapo` (token-mean) or `dr_grpo`.
    pub loss_type: LossType,
    /// Lower ratio clip ε.
    pub clip_low: f64,
    /// Upper ratio clip ε.
    pub clip_high: f64,
    /// Dual clip c for negative advantages (`0` in the file: off).
    #[serde(with = "zero_is_off")]
    pub clip_dual: Option<f64>,
    /// Added to the group std.
    pub adv_eps: f64,
    /// Lower bound on the group std.
    pub std_floor: f64,
    /// β of the k3 KL penalty to the base model; 0: off (no reference forward).
    pub kl_beta: f64,
    /// `strict` or `flexible`.
    pub reward: RewardKind,
}

impl Default for GrpoSection {
    fn default() -> Self {
        Self {
            prompts_per_step: 64,
            group_size: 4,
            max_new_tokens: 4096,
            temperature: 1.0,
            top_p: None,
            top_k: None,
            mini_batches: 2,
            ppo_epochs: 1,
            micro_batch: MicroBatch::Auto,
            loss_type: LossType::Dapo,
            clip_low: 0.2,
            clip_high: 0.4,
            clip_dual: Some(3.0),
            adv_eps: 1e-6,
            std_floor: 0.0,
            kl_beta: 0.0,
            reward: RewardKind::Strict,
        }
    }
}

/// The engine that samples GRPO's completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The trained model itself, on the trainer's device.
    #[default]
    Local,
    /// vLLM servers (OpenAI-compatible API with runtime LoRA loading).
    Vllm,
    /// llama.cpp's `llama-server`s holding the LoRAs of `trainer export --llama-server`.
    #[serde(rename = "llama-server")]
    LlamaServer,
}

/// `[rollout]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSection {
    /// `local`, `vllm` or `llama-server`.
    pub engine: EngineKind,
    /// The servers' base URLs (`http://host:port`); each step's prompts are shared among them.
    pub servers: Vec<String>,
    /// Where each step's adapter is written for the servers to read, at the same path on
    /// every machine (a shared folder); empty: `adapters/` in the run folder.
    pub adapter_dir: PathBuf,
    /// `token_truncate` (verl's TIS) or `sequence_mask` (TRL's).
    pub is_mode: IsMode,
    /// Cap of the importance ratio.
    pub is_cap: f64,
    /// Fail a step whose per-token log-prob gap (nats) exceeds this (`0` in the file: no limit).
    #[serde(with = "zero_is_off")]
    pub max_logprob_gap: Option<f64>,
    /// A canary (an exaggerated `v` under its own adapter name, which must move the engine's
    /// log-probs) every N steps, from the first; 0: none.
    pub canary_every: usize,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self {
            engine: EngineKind::Local,
            servers: Vec::new(),
            adapter_dir: PathBuf::new(),
            is_mode: IsMode::TokenTruncate,
            is_cap: 2.0,
            max_logprob_gap: None,
            canary_every: 10,
        }
    }
}

/// `[sft]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftSection {
    /// Problems per update.
    pub batch_size: usize,
    /// Most sequences per forward/backward (`0` in the file: automatic, as for GRPO).
    pub micro_batch: MicroBatch,
    /// Reference solutions are cut to this many tokens.
    pub max_target_tokens: usize,
    /// Weight of the last line's tokens (`#### N` and the end of the turn) in the loss against
    /// 1 for the others; 1: the plain token mean.
    pub last_line_weight: f32,
}

impl Default for SftSection {
    fn default() -> Self {
        Self {
            batch_size: 16,
            micro_batch: MicroBatch::Auto,
            max_target_tokens: 512,
            last_line_weight: 1.0,
        }
    }
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant (verl's default, the paper's runs).
    Constant,
    /// Linear decay to 0 (TRL's default).
    Linear,
    /// Cosine decay to 0.
    Cosine,
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm bound.
    pub max_grad_norm: f64,
    /// Linear warm-up over this fraction of the steps (verl `lr_warmup_steps_ratio`).
    pub warmup_ratio: f64,
    /// `constant`, `linear` or `cosine` after warm-up.
    pub schedule: Schedule,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            warmup_ratio: 0.05,
            schedule: Schedule::Constant,
        }
    }
}

impl OptimSection {
    /// AdamW's constants (the learning rate comes per step from the schedule).
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Passes over the training problems.
    pub epochs: usize,
    /// Stop after this many steps; 0: when the epochs are done.
    pub max_steps: usize,
    /// Seed of data order and sampling.
    pub seed: u64,
    /// Save a checkpoint every N steps (and always at the end); 0: only at the end.
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk (oldest removed first); 0: all.
    pub keep_checkpoints: usize,
    /// Evaluate on `data.eval` every N steps (and at the end); 0: only at the end.
    pub eval_every: usize,
    /// Problems decoded together during evaluation.
    pub eval_batch_size: usize,
    /// Longest evaluation response in tokens.
    pub eval_max_new_tokens: usize,
    /// Output directory (`--out` wins); relative to the working directory.
    pub out: PathBuf,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            epochs: 3,
            max_steps: 0,
            seed: 42,
            checkpoint_every: 50,
            keep_checkpoints: 3,
            eval_every: 0,
            eval_batch_size: 8,
            eval_max_new_tokens: 1024,
            out: PathBuf::from("runs/latest"),
        }
    }
}

/// Keys (`section.key`) of `table` that the configuration does not have.
fn unknown_keys(table: &toml::Table) -> Vec<String> {
    let known = toml::Table::try_from(TrainConfig::default()).expect("the defaults serialise");
    let mut unknown = Vec::new();
    for (section, value) in table {
        match (known.get(section), value) {
            (None, _) => unknown.push(section.clone()),
            (Some(toml::Value::Table(keys)), toml::Value::Table(given)) => unknown.extend(
                given
                    .keys()
                    .filter(|k| !keys.contains_key(*k))
                    .map(|k| format!("{section}.{k}")),
            ),
            _ => {}
        }
    }
    unknown
}

/// Every known `section.key`, for suggestions.
fn known_keys() -> Vec<String> {
    let known = toml::Table::try_from(TrainConfig::default()).expect("the defaults serialise");
    let mut out = Vec::new();
    for (section, value) in &known {
        if let toml::Value::Table(keys) = value {
            out.extend(keys.keys().map(|k| format!("{section}.{k}")));
        }
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// An error naming an unknown key, with the closest known one.
fn unknown_key_error(key: &str, origin: &str) -> Error {
    let suggestion = known_keys()
        .into_iter()
        .min_by_key(|k| distance(k, key))
        .filter(|k| distance(k, key) <= 3)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    Error::InvalidInput(format!(
        "{origin}: unknown config key `{key}`{suggestion} (every key is listed in assets/configs/README.md)"
    ))
}

/// The keys that hold paths.
const PATH_KEYS: [(&str, &str); 7] = [
    ("model", "path"),
    ("rollout", "adapter_dir"),
    ("model", "tokenizer"),
    ("init", "adapter"),
    ("init", "basis"),
    ("data", "train"),
    ("data", "eval"),
];

/// Makes the relative path at `section.key` of `table` absolute against `base` (a model named
/// on the hub stays a name).
fn resolve_path(table: &mut toml::Table, section: &str, key: &str, base: &Path) {
    let value = table
        .get_mut(section)
        .and_then(toml::Value::as_table_mut)
        .and_then(|t| t.get_mut(key));
    if let Some(toml::Value::String(path)) = value
        && !path.is_empty()
        && Path::new(path.as_str()).is_relative()
    {
        let joined = base.join(path.as_str());
        // A model that is not on disk but reads as `OWNER/NAME` is one on the hub.
        if (section, key) == ("model", "path")
            && !joined.exists()
            && HubModel::parse(path).is_some()
        {
            return;
        }
        // A browser has no working directory: there the joined path is a URL relative to the
        // page.
        let resolved = if cfg!(target_family = "wasm") {
            joined
        } else {
            std::path::absolute(&joined).unwrap_or(joined)
        };
        *path = resolved.to_string_lossy().into_owned();
    }
}

/// Applies `section.key=value` (the value in TOML syntax; bare words are strings); a relative
/// path is taken relative to the working directory.
fn apply_set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let expected = || {
        Error::InvalidInput(format!(
            "--set {assignment}: expected section.key=value, e.g. grpo.group_size=8"
        ))
    };
    let (key, value) = assignment.split_once('=').ok_or_else(expected)?;
    let (section, name) = key.trim().split_once('.').ok_or_else(expected)?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {}", value.trim())) {
        Ok(mut t) => t.remove("v").expect("parsed one key"),
        Err(_) => toml::Value::String(value.trim().to_string()),
    };
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section_table) = entry else {
        return Err(Error::InvalidInput(format!(
            "--set {assignment}: `{section}` is not a section"
        )));
    };
    section_table.insert(name.to_string(), value);
    if let Some(bad) = unknown_keys(table).first() {
        return Err(unknown_key_error(bad, &format!("--set {assignment}")));
    }
    if PATH_KEYS.contains(&(section, name)) {
        resolve_path(table, section, name, Path::new("."));
    }
    Ok(())
}

impl TrainConfig {
    /// The items of step `step` of `n` in batches of `per_step`, in this run's data order
    /// ([`super::order::step_batch`] with `run.seed` and `data.shuffle`).
    pub fn step_items(&self, n: usize, per_step: usize, step: usize) -> Vec<usize> {
        super::order::step_batch(n, per_step, step, self.run.seed, self.data.shuffle)
    }

    /// The learning rate of step `step` (0-based) of a run of `total` steps: `[optim]`'s peak,
    /// warm-up and schedule.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let o = &self.optim;
        let warmup = super::schedule::warmup_steps(total, o.warmup_ratio);
        super::schedule::learning_rate(o.lr, step, total, warmup, o.schedule)
    }

    /// Whether a run of `total` steps evaluates on `data.eval` after `step` steps: at the
    /// start and every `run.eval_every` steps when that is above 0, and at the end.
    pub fn eval_due(&self, step: usize, total: usize) -> bool {
        let every = self.run.eval_every;
        step == total || (every > 0 && step.is_multiple_of(every))
    }

    /// The malformed-record policy of `data.skip_bad_lines`.
    pub fn bad_lines(&self) -> BadLines {
        if self.data.skip_bad_lines {
            BadLines::Skip
        } else {
            BadLines::Fatal
        }
    }

    /// Steps of a run over `n` items in batches of `batch` (the last partial batch dropped, as
    /// verl does): `run.max_steps` if set, else `epochs × ⌊n / batch⌋`; and the steps per
    /// epoch. `origin` names the data in the error when there is not one batch.
    pub fn plan_steps(&self, n: usize, batch: usize, origin: &Path) -> Result<(usize, usize)> {
        let per_epoch = n / batch.max(1);
        if per_epoch == 0 {
            return Err(Error::InvalidInput(format!(
                "{}: {n} usable problems, fewer than one batch of {batch}",
                origin.display()
            )));
        }
        let total = if self.run.max_steps > 0 {
            self.run.max_steps
        } else {
            self.run.epochs * per_epoch
        };
        Ok((total, per_epoch))
    }

    /// Parses TOML text with overrides; `origin` names the text in errors, and relative model
    /// and data paths in the text are relative to its folder. Paths come out absolute, so a
    /// config saved with a checkpoint means the same from anywhere.
    pub fn parse(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| Error::BadFile {
            path: origin.to_path_buf(),
            reason: format!("not a valid TOML config: {e}"),
        })?;
        if let Some(bad) = unknown_keys(&table).first() {
            return Err(unknown_key_error(bad, &origin.display().to_string()));
        }
        let base = origin.parent().unwrap_or(Path::new("."));
        for (section, key) in PATH_KEYS {
            resolve_path(&mut table, section, key, base);
        }
        for assignment in overrides {
            apply_set(&mut table, assignment)?;
        }
        let config: TrainConfig = table.try_into().map_err(|e| Error::BadFile {
            path: origin.to_path_buf(),
            reason: format!("invalid config: {e}"),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads a config file with overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, overrides)
    }

    /// The config as TOML, paths as resolved.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serialises")
    }

    /// Checks values that would fail later or silently misbehave; a run from files also needs
    /// `model.path` and `data.train`.
    fn validate(&self, origin: &Path) -> Result<()> {
        let paths = [
            (self.model.path.as_os_str().is_empty(), "model.path"),
            (self.data.train.as_os_str().is_empty(), "data.train"),
        ];
        if let Some((_, key)) = paths.iter().find(|(missing, _)| *missing) {
            return Err(Error::InvalidInput(format!(
                "{}: {key} is required",
                origin.display()
            )));
        }
        self.validate_recipe()
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", origin.display())))
    }

    /// Checks the recipe's values (everything but the model and data paths, which a page
    /// supplies otherwise); the message names the key.
    pub fn validate_recipe(&self) -> Result<(), String> {
        let g = &self.grpo;
        let checks: [(bool, &str); 11] = [
            (
                g.prompts_per_step == 0,
                "grpo.prompts_per_step must be at least 1",
            ),
            (g.group_size == 0, "grpo.group_size must be at least 1"),
            (
                g.max_new_tokens == 0,
                "grpo.max_new_tokens must be at least 1",
            ),
            (
                g.mini_batches == 0 || g.mini_batches > g.prompts_per_step,
                "grpo.mini_batches must be between 1 and grpo.prompts_per_step",
            ),
            (
                !(self.optim.lr.is_finite() && self.optim.lr >= 0.0),
                "optim.lr must be a non-negative number",
            ),
            (
                !(0.0..1.0).contains(&self.optim.warmup_ratio),
                "optim.warmup_ratio must be in [0, 1)",
            ),
            (
                self.run.epochs == 0 && self.run.max_steps == 0,
                "run.epochs or run.max_steps must be at least 1",
            ),
            (
                self.sft.batch_size == 0,
                "sft.batch_size must be at least 1",
            ),
            (
                !(self.sft.last_line_weight.is_finite() && self.sft.last_line_weight > 0.0),
                "sft.last_line_weight must be a positive number",
            ),
            (
                self.rollout.engine != EngineKind::Local && self.rollout.servers.is_empty(),
                "rollout.servers must list at least one server for engine = \"vllm\" or \"llama-server\"",
            ),
            (
                !(self.rollout.is_cap.is_finite() && self.rollout.is_cap >= 1.0),
                "rollout.is_cap must be a number ≥ 1",
            ),
        ];
        if let Some((_, message)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(message.to_string());
        }
        if let Err(e) = self.adapter.validate() {
            return Err(format!("[adapter]: {e}"));
        }
        if self
            .adapter
            .targets
            .iter()
            .any(|t| !ALL_TARGETS.contains(&t.as_str()))
        {
            return Err(format!("adapter.targets must be among {ALL_TARGETS:?}"));
        }
        Ok(())
    }
}

/// Numbers whose `0` in a config file means "off": `None` here, `0` again when written. The
/// file keeps verl's convention; the program sees an `Option`, converted in this one place.
mod zero_is_off {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T, S>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + Default + Copy,
        S: Serializer,
    {
        value.unwrap_or_default().serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: Deserialize<'de> + Default + PartialEq,
        D: Deserializer<'de>,
    {
        let value = T::deserialize(d)?;
        Ok((value != T::default()).then_some(value))
    }
}

/// `top_p`, whose `1` in a config file means "off" (nothing is cut).
mod one_is_off {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
        value.unwrap_or(1.0).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
        let value = f32::deserialize(d)?;
        Ok((value != 1.0).then_some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::tying::Tying;

    fn parse(text: &str, sets: &[&str]) -> Result<TrainConfig> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::parse(text, Path::new("/cfg/run.toml"), &sets)
    }

    const MINIMAL: &str = "[model]\npath = \"m\"\n[data]\ntrain = \"/d/train.jsonl\"\n";

    #[test]
    fn defaults_fill_missing_keys_and_paths_resolve() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.model.path, Path::new("/cfg/m"));
        assert_eq!(c.data.train, Path::new("/d/train.jsonl"));
        assert_eq!(c.grpo, GrpoSection::default());
        assert_eq!(c.adapter, TinyLoraConfig::default());
        let round = parse(&c.to_toml(), &[]).unwrap();
        assert_eq!(round, c);
        // A model that is not on disk but reads as a hub name stays a name, in the file and
        // in `--set`; one that is not a hub name is a path.
        let hub = MINIMAL.replace("path = \"m\"", "path = \"Qwen/Qwen2.5-0.5B-Instruct\"");
        assert_ne!(hub, MINIMAL);
        let c = parse(&hub, &["model.path=\"o/n/f.gguf@v2\""]).unwrap();
        assert_eq!(c.model.path, Path::new("o/n/f.gguf@v2"));
        let c = parse(&hub, &[]).unwrap();
        assert_eq!(c.model.path, Path::new("Qwen/Qwen2.5-0.5B-Instruct"));
        assert_eq!(c.data.train, Path::new("/d/train.jsonl"));
    }

    #[test]
    fn set_overrides_with_toml_values() {
        let c = parse(
            MINIMAL,
            &[
                "grpo.group_size=8",
                "grpo.loss_type=dr_grpo",
                "optim.lr = 2e-4",
                "adapter.tying={ kind = \"tiled\", n_tie = 3 }",
            ],
        )
        .unwrap();
        assert_eq!(c.grpo.group_size, 8);
        assert_eq!(c.grpo.loss_type, LossType::DrGrpo);
        assert_eq!(c.optim.lr, 2e-4);
        assert_eq!(c.adapter.tying, Tying::Tiled { n_tie: 3 });
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let err = parse(&format!("{MINIMAL}[grpo]\ngroup_sise = 4\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/cfg/run.toml: unknown config key `grpo.group_sise`; did you mean `grpo.group_size`?"), "{err}");
        let err = parse(MINIMAL, &["optim.learning_rate=1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--set optim.learning_rate=1: unknown config key `optim.learning_rate`"),
            "{err}"
        );
        let err = parse("[modle]\npath = \"m\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown config key `modle`"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = format!(
            "{:#}",
            parse(&format!("{MINIMAL}[grpo]\ngroup_size = \"four\"\n"), &[]).unwrap_err()
        );
        assert!(err.contains("group_size"), "{err}");
        let err = parse(&format!("{MINIMAL}[grpo]\ngroup_size = 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpo.group_size must be at least 1"), "{err}");
        let err = parse("[data]\ntrain = \"t\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.path is required"), "{err}");
    }

    fn configs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/configs")
    }

    #[test]
    fn the_documented_table_lists_every_key_with_its_default() {
        let readme = std::fs::read_to_string(configs_dir().join("README.md")).unwrap();
        let defaults = toml::Table::try_from(TrainConfig::default()).unwrap();
        let mut documented = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            let key = cells[0].trim_start_matches("| `").trim_end_matches('`');
            if key.ends_with(".toml") {
                continue;
            }
            let (section, name) = key.split_once('.').unwrap();
            let cell = cells[1].trim_matches('`');
            let parsed: toml::Table = toml::from_str(&format!("v = {cell}")).unwrap();
            assert_eq!(
                Some(&parsed["v"]),
                defaults[section].get(name),
                "the README's default of {key}"
            );
            documented.push(key.to_string());
        }
        let mut known = known_keys();
        known.sort();
        documented.sort();
        assert_eq!(documented, known);
    }

    #[test]
    fn shipped_configs_parse() {
        let mut count = 0;
        for entry in std::fs::read_dir(configs_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = TrainConfig::load(&path, &[]).unwrap();
                assert!(c.data.train.is_file(), "{}", path.display());
                count += 1;
            }
        }
        assert!(count >= 2);
    }
}
