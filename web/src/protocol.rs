//! The messages between the page and the worker. Each is a JSON object tagged by `cmd`
//! (page → worker) or `type` (worker → page); local files travel beside the JSON in the
//! message's `files` array.

use serde::{Deserialize, Serialize};
use tinylora::evaluate::Answer;
use tinylora::train::config::TrainConfig;

/// What the page asks the worker to do.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start WebGPU and compare a small computation with an f64 reference.
    Selfcheck,
    /// Load the model bundled with the page (`toy/`).
    LoadBundled {
        /// The device's `maxStorageBufferBindingSize`, if the page knows it.
        max_buffer: Option<f64>,
    },
    /// Load a model from a Hugging Face-style hub: `{base}/{repo}/resolve/{revision}/{file}`.
    LoadHub {
        /// Hub address, e.g. `https://huggingface.co`.
        base: String,
        /// Repository, e.g. `Qwen/Qwen2.5-0.5B-Instruct`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// A `.gguf` file in the repository; safetensors (single or sharded) when absent.
        gguf: Option<String>,
        /// The device's `maxStorageBufferBindingSize`, if the page knows it.
        max_buffer: Option<f64>,
    },
    /// Load the model from the files sent with the message (config.json + safetensors, or a
    /// .gguf; tokenizer.json).
    LoadFiles {
        /// The device's `maxStorageBufferBindingSize`, if the page knows it.
        max_buffer: Option<f64>,
    },
    /// Apply an adapter (our JSON file or its compact `tl1.` form) to the loaded model.
    Adapter {
        /// The adapter text.
        text: String,
        /// Where it came from (URL fragment, a file name, "pasted text"), for messages.
        origin: String,
        /// A basis file (`trainer export --basis`) to read the frozen factors from instead of
        /// recomputing them; needed for adapters trained with PEFT.
        #[serde(default)]
        basis_url: Option<String>,
    },
    /// Replace the adapter's trainable vectors (one per tie group).
    SetV {
        /// `groups × u` values.
        v: Vec<Vec<f32>>,
    },
    /// Answer a GSM8K-style question with the paper's prompt, streaming tokens.
    Generate(Question),
    /// Last-position logits of a token sequence (tests compare them with the native build).
    Logits {
        /// Token ids.
        ids: Vec<u32>,
        /// Use the adapter.
        adapted: bool,
    },
    /// Read GSM8K-style JSONL problems (`question`, `answer` with `#### N`) to show and to
    /// evaluate on.
    Problems {
        /// Where the JSONL file is.
        url: String,
    },
    /// Greedy accuracy on problems `start..start + n` of the last problem list, as
    /// `trainer eval` computes it; an `evaluating` event after each batch.
    Evaluate {
        /// First problem.
        start: usize,
        /// How many problems (fewer when the list ends first).
        n: usize,
        /// Use the adapter (`false`: the base model).
        adapted: bool,
        /// Most new tokens per answer.
        max_new_tokens: usize,
        /// Problems decoded together (1 when absent).
        #[serde(default)]
        batch_size: Option<usize>,
    },
    /// Read a training recipe: a `trainer train` TOML config (its relative data paths are
    /// URLs relative to it).
    Recipe {
        /// Where the TOML file is.
        url: String,
    },
    /// Train a fresh adapter on the loaded model with GRPO, as `trainer train` does with the
    /// same config on the CPU; a `train_step` event after each step, `trained` at the end.
    Train {
        /// The config's keys as JSON (`[model]` is the loaded model; `data.train` and
        /// `data.eval` are URLs).
        config: Box<TrainConfig>,
        /// Steps to take now (the run's length is the config's): the run then pauses, and
        /// `train_resume` continues it. All when absent.
        #[serde(default)]
        steps: Option<usize>,
    },
    /// Continue a paused training run.
    TrainResume {
        /// Steps to take now; all that remain when absent.
        #[serde(default)]
        steps: Option<usize>,
    },
    /// Delete the downloaded models from the browser's cache.
    ClearCache,
    /// End the running generation or evaluation after its current token, or the running
    /// training after its current step (its adapter is kept).
    Stop,
    /// Pause the running training after its current step (`train_resume` continues it).
    Pause,
}

/// A `generate` request: what to answer and how to sample.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Echoed in every event of this generation.
    pub id: u64,
    /// The question (the prompt suffix and chat template are added).
    pub question: String,
    /// The gold answer, if known: the reply then says whether the answer is right.
    pub gold: Option<String>,
    /// Use the adapter (`false`: the base model).
    pub adapted: bool,
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature; greedy when absent or 0.
    pub temperature: Option<f32>,
    /// Sampler seed.
    pub seed: u64,
}

/// A problem as the page shows it.
#[derive(Debug, Serialize)]
pub struct ProblemText {
    /// The question.
    pub question: String,
    /// The gold answer (the number after `####`, without commas).
    pub gold: String,
}

/// Counts of an evaluation so far.
#[derive(Debug, Serialize)]
pub struct Tally {
    /// Problems answered.
    pub n: usize,
    /// Right by the strict rule (`#### N`).
    pub correct: usize,
    /// Right by the flexible rule (the last number).
    pub flexible_correct: usize,
    /// Answers that hit the token limit.
    pub truncated: usize,
}

impl Tally {
    /// The counts of `evaluation`.
    pub fn of(evaluation: &tinylora::evaluate::Evaluation) -> Self {
        Self {
            n: evaluation.n,
            correct: evaluation.correct,
            flexible_correct: evaluation.flexible_correct,
            truncated: evaluation.truncated,
        }
    }
}

/// What the worker tells the page. One more event comes from `web/worker.js` itself, which
/// watches the GPU device: `{"type": "device_lost", "reason": ..., "message": ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker is listening (messages sent before this are lost).
    Started,
    /// The self-check's outcome.
    Selfcheck {
        /// Largest |WebGPU − f64 reference|.
        max_abs_err: f64,
        /// The computed values.
        values: Vec<f32>,
        /// Hash of an adapter basis computed in wasm (equals the native one).
        basis_hash: String,
    },
    /// Loading progress.
    Progress {
        /// What is happening ("downloading model.safetensors", "uploading to the GPU", ...).
        stage: String,
        /// Bytes (or tensors) done.
        done: f64,
        /// Bytes (or tensors) in all, when known.
        total: Option<f64>,
    },
    /// Something worth knowing that did not stop the work (e.g. the cache is full).
    Warning {
        /// The message.
        message: String,
    },
    /// A model is loaded.
    Ready {
        /// Where it came from.
        name: String,
        /// Parameter count.
        parameters: usize,
        /// Layers, hidden size, vocabulary.
        layers: usize,
        /// Hidden size.
        hidden: usize,
        /// Vocabulary size.
        vocab: usize,
        /// Whether a tokenizer came with it (generation needs one).
        has_tokenizer: bool,
        /// How its weights are held on the GPU: `f32`, GGUF block types (`Q4K+Q6K+f32`).
        weights: String,
        /// Bytes of its weights on the GPU.
        gpu_bytes: usize,
        /// Bytes of its largest GPU buffer.
        largest_buffer: usize,
        /// Fingerprint of its seven projections (as in adapter files with all targets): the
        /// page offers the shipped adapters trained on this base model.
        fingerprint: String,
        /// Seconds from request to ready.
        seconds: f64,
    },
    /// An adapter is applied.
    AdapterReady {
        /// Where it came from.
        origin: String,
        /// Its vectors.
        v: Vec<Vec<f32>>,
        /// Trainable parameters as the paper counts them.
        trainable: usize,
        /// Frozen rank.
        r: usize,
        /// Adapted modules.
        modules: usize,
        /// Whether the frozen basis was read from a basis file (else it was recomputed).
        basis_from_file: bool,
        /// Seconds to check the adapter and rebuild or read its frozen basis.
        seconds: f64,
    },
    /// The adapter's vectors were replaced.
    VSet,
    /// A new token of generation `id`.
    Token {
        /// The generation.
        id: u64,
        /// Everything generated so far, decoded.
        text: String,
        /// New tokens so far.
        tokens: usize,
        /// Decode speed so far (tokens after the first / seconds since the first).
        tok_s: f64,
    },
    /// Generation `id` ended.
    Done {
        /// The generation.
        id: u64,
        /// The exact prompt text the model saw.
        prompt: String,
        /// The decoded completion.
        text: String,
        /// Its token ids.
        tokens: Vec<u32>,
        /// A stop token ended it.
        stopped: bool,
        /// The page's stop request ended it.
        cancelled: bool,
        /// The answer after `####`, if any.
        answer: Option<String>,
        /// Strict reward against the gold answer, when one was given.
        correct: Option<bool>,
        /// Prompt tokens per second.
        prefill_tok_s: f64,
        /// Decode tokens per second.
        decode_tok_s: f64,
    },
    /// The problems of a `problems` request.
    Problems {
        /// Where they came from.
        url: String,
        /// In file order.
        problems: Vec<ProblemText>,
    },
    /// An evaluation's progress, after each batch.
    Evaluating {
        /// Whether the adapter is used (else the base model).
        adapted: bool,
        /// The first problem's index in the list.
        start: usize,
        /// Problems to evaluate.
        total: usize,
        /// Counts so far.
        #[serde(flatten)]
        tally: Tally,
        /// This batch's answers (`index` counts from `start`).
        answers: Vec<Answer>,
    },
    /// An evaluation ended.
    Evaluated {
        /// Whether the adapter was used (else the base model).
        adapted: bool,
        /// The first problem's index in the list.
        start: usize,
        /// Problems asked for.
        total: usize,
        /// Counts.
        #[serde(flatten)]
        tally: Tally,
        /// Whether a stop request ended it early.
        cancelled: bool,
        /// Every answer (`index` counts from `start`).
        answers: Vec<Answer>,
    },
    /// A training recipe was read.
    Recipe {
        /// Where it came from.
        url: String,
        /// The config, every key filled in.
        config: Box<TrainConfig>,
    },
    /// A training run started or resumed.
    TrainStarted {
        /// Steps already done.
        step: usize,
        /// Steps of the whole run.
        total_steps: usize,
        /// Usable training problems.
        problems: usize,
        /// Trainable floats.
        trainable: usize,
        /// The vectors at the start.
        v: Vec<Vec<f32>>,
        /// Seconds to read the data and build the adapter's frozen basis.
        seconds: f64,
    },
    /// A training step ended.
    TrainStep {
        /// Steps done (1 after the first).
        step: usize,
        /// Steps of the whole run.
        total_steps: usize,
        /// The step's learning rate.
        lr: f64,
        /// Mean reward of its completions.
        reward_mean: f64,
        /// Fraction of its completions correct by the strict rule.
        strict_accuracy: f64,
        /// Mean k3 KL to the base model (0 when `grpo.kl_beta` is 0).
        kl: f64,
        /// Mean loss of its updates.
        loss: f64,
        /// Gradient norm before clipping.
        grad_norm: f64,
        /// Mean completion length in tokens.
        completion_len_mean: f64,
        /// |v| after the step.
        v_norm: f64,
        /// The vectors after the step.
        v: Vec<Vec<f32>>,
        /// Seconds the step took.
        seconds: f64,
    },
    /// A held-out evaluation during training (`run.eval_every`, on `data.eval`).
    TrainEval {
        /// Steps done.
        step: usize,
        /// Counts.
        #[serde(flatten)]
        tally: Tally,
    },
    /// A training request ended: the run is done, paused or stopped; the adapter so far is
    /// applied to the model.
    Trained {
        /// Steps done.
        step: usize,
        /// Steps of the whole run.
        total_steps: usize,
        /// The trained vectors.
        v: Vec<Vec<f32>>,
        /// The adapter's compact form (`tl1.…`), for a link.
        adapter: String,
        /// The adapter file (JSON), for a download.
        file: String,
        /// Whether `train_resume` can continue it.
        paused: bool,
    },
    /// The downloaded models' cache was deleted.
    CacheCleared {
        /// Whether there was one.
        removed: bool,
    },
    /// Last-position logits.
    Logits {
        /// `vocab` values.
        values: Vec<f32>,
    },
    /// A request failed; the worker stays usable.
    Error {
        /// The request's `cmd`.
        cmd: String,
        /// What went wrong and what to do.
        message: String,
    },
}
