//! The worker's state: the WebGPU device, the loaded model, its tokenizer and adapter, and the
//! operations the page asks for (load, adapt, generate, logits).

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use js_sys::Uint8Array;
use tinylora::adapter::basis::fingerprint;
use tinylora::adapter::config::ALL_TARGETS;
use tinylora::adapter::file::AdapterFile;
use tinylora::adapter::{TinyLora, detach};
use tinylora::burn::tensor::Device;
use tinylora::checkpoint::Checkpoint;
use tinylora::evaluate::{EvalConfig, evaluate};
use tinylora::generate::{GenerateConfig, Throughput, generate_until};
use tinylora::gsm8k::{self, BadLines, Problem};
use tinylora::model::load::{GpuFootprint, gpu_footprint};
use tinylora::model::{CausalLm, KvCache, Mixes};
use tinylora::readback::to_vec_f32;
use tinylora::sampling::SamplingConfig;
use tinylora::tokenizer::Tokenizer;
use tinylora::weights::dequant::GgmlType;
use tinylora::weights::safetensors::SafetensorsFile;
use tinylora::weights::{BlockTensor, HostTensor, TensorSource};

mod training;

use crate::js_bytes::JsBytes;
use crate::protocol::{Event, ProblemText, Question, Tally};
use crate::scope::{now_ms, post};

/// The progress stage of an adapter's basis computation (the page counts it in modules).
const BASIS_STAGE: &str = "computing the adapter's frozen basis (SVDs)";

/// What the page asked of the running request (`stop` or `pause`), seen between tokens or
/// steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Halt {
    /// Keep going.
    #[default]
    Running,
    /// End it (a training run ends after its current step, keeping its adapter).
    Stop,
    /// Pause a training run after its current step (other requests ignore it).
    Pause,
}

/// The flag the worker's message loop sets and the running request reads.
pub type HaltFlag = Rc<Cell<Halt>>;

/// A loaded model and what goes with it.
pub struct PageModel {
    name: String,
    model: CausalLm,
    tokenizer: Option<Tokenizer>,
    adapter: Option<TinyLora>,
    /// The base model's fingerprint per list of adapted modules, computed once (the page
    /// never changes a base weight).
    fingerprints: HashMap<Vec<String>, String>,
}

impl PageModel {
    /// The base model's fingerprint over `targets`, computed at its first use.
    async fn fingerprint(&mut self, targets: &[String]) -> Result<String, String> {
        if let Some(found) = self.fingerprints.get(targets) {
            return Ok(found.clone());
        }
        let found = fingerprint(&self.model, targets)
            .await
            .map_err(|e| e.to_string())?;
        self.fingerprints.insert(targets.to_vec(), found.clone());
        Ok(found)
    }

    /// The tokenizer, which generation needs.
    fn tokenizer(&self) -> Result<&Tokenizer, String> {
        self.tokenizer.as_ref().ok_or_else(|| {
            format!(
                "{} came without tokenizer.json: load one with the model files",
                self.name
            )
        })
    }
}

/// Everything the worker holds between requests.
pub struct WorkerState {
    device: Device,
    loaded: Option<PageModel>,
    problems: Vec<Problem>,
    training: Option<training::Training>,
}

/// A [`TensorSource`] that reports each tensor it hands out as upload progress.
struct Reporting {
    inner: Box<dyn TensorSource>,
    done: usize,
    total: usize,
}

impl Reporting {
    /// Reports one more tensor uploaded.
    fn uploaded(&mut self, name: &str) {
        self.done += 1;
        post(&Event::Progress {
            stage: format!("uploading tensors to the GPU ({name})"),
            done: self.done as f64,
            total: Some(self.total as f64),
        });
    }
}

impl TensorSource for Reporting {
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.shape(name)
    }
    fn read(&mut self, name: &str) -> tinylora::Result<HostTensor> {
        let tensor = self.inner.read(name)?;
        self.uploaded(name);
        Ok(tensor)
    }
    fn read_blocks(&mut self, name: &str) -> tinylora::Result<Option<BlockTensor>> {
        let blocks = self.inner.read_blocks(name)?;
        if blocks.is_some() {
            self.uploaded(name);
        }
        Ok(blocks)
    }
    fn block_kind(&self, name: &str) -> Option<GgmlType> {
        self.inner.block_kind(name)
    }
    fn origin(&self, name: &str) -> std::path::PathBuf {
        self.inner.origin(name)
    }
}

/// Refuses a model whose largest GPU buffer ([`gpu_footprint`]: matrices as stored or as f32,
/// split into buffers of at most 128 MiB) exceeds what this browser allows.
fn check_buffer_limit(
    name: &str,
    footprint: &GpuFootprint,
    max_buffer: Option<f64>,
) -> Result<(), String> {
    let (tensor, bytes) = &footprint.largest;
    match max_buffer {
        Some(limit) if *bytes as f64 > limit => Err(format!(
            "{name} cannot be loaded here: `{tensor}` needs a GPU buffer of {:.0} MiB, but this \
             browser's WebGPU allows {:.0} MiB per buffer (maxStorageBufferBindingSize). Try a \
             smaller model, or a browser/GPU with higher limits.",
            mib(*bytes as f64),
            mib(limit)
        )),
        _ => Ok(()),
    }
}

/// Bytes in MiB.
fn mib(bytes: f64) -> f64 {
    bytes / 1048576.0
}

impl WorkerState {
    /// A session without a model on `device`.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            loaded: None,
            problems: Vec::new(),
            training: None,
        }
    }

    /// The WebGPU device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn loaded(&mut self) -> Result<&mut PageModel, String> {
        self.loaded
            .as_mut()
            .ok_or_else(|| "no model is loaded yet".to_string())
    }

    /// Uploads `checkpoint` tensor by tensor and makes it the current model (any adapter is
    /// dropped). Returns the `Ready` event.
    pub async fn load(
        &mut self,
        checkpoint: Checkpoint,
        tokenizer: Option<Tokenizer>,
        name: String,
        max_buffer: Option<f64>,
        started_ms: f64,
    ) -> Result<Event, String> {
        let footprint = gpu_footprint(&checkpoint.config, &*checkpoint.source);
        check_buffer_limit(&name, &footprint, max_buffer)?;
        // What the device could not allocate surfaces when the weights are first read back.
        let too_big = |e: String| {
            format!(
                "{name} needs {:.0} MiB of GPU memory for its weights (largest buffer {:.0} MiB), \
                 and this browser's WebGPU device failed while holding them: {e}",
                mib(footprint.total_bytes as f64),
                mib(footprint.largest.1 as f64)
            )
        };
        // Free the previous model's GPU memory before uploading the next one.
        self.loaded = None;
        self.training = None;
        let config = checkpoint.config.clone();
        let total = checkpoint.source.names().len();
        let mut source = Reporting {
            inner: checkpoint.source,
            done: 0,
            total,
        };
        let model =
            CausalLm::load(&config, &mut source, &self.device).map_err(|e| e.to_string())?;
        let targets: Vec<String> = ALL_TARGETS.iter().map(|t| t.to_string()).collect();
        let fingerprint = fingerprint(&model, &targets)
            .await
            .map_err(|e| too_big(e.to_string()))?;
        let parameters = model.parameter_count();
        let storage = model.weight_storage();

        let has_tokenizer = tokenizer.is_some();
        self.loaded = Some(PageModel {
            name: name.clone(),
            model,
            tokenizer,
            adapter: None,
            fingerprints: HashMap::from([(targets, fingerprint.clone())]),
        });
        Ok(Event::Ready {
            name,
            parameters,
            layers: config.num_hidden_layers,
            hidden: config.hidden_size,
            vocab: config.vocab_size,
            has_tokenizer,
            weights: storage.kinds(),
            gpu_bytes: storage.total_bytes(),
            largest_buffer: storage.largest.1,
            fingerprint,
            seconds: (now_ms() - started_ms) / 1000.0,
        })
    }

    /// Parses an adapter (JSON or compact form), checks it against the loaded model, rebuilds
    /// its frozen basis — or reads it from `basis`, a basis file's bytes and URL — and attaches
    /// it in place of any previous one.
    pub async fn apply_adapter(
        &mut self,
        text: &str,
        origin: &str,
        basis: Option<(Uint8Array, String)>,
    ) -> Result<Event, String> {
        let started = now_ms();
        let loaded = self.loaded()?;
        let path = Path::new(origin);
        let file = AdapterFile::from_text(text, path).map_err(|e| e.to_string())?;
        let known = loaded.fingerprint(&file.config.targets).await?;
        let basis_from_file = basis.is_some();
        let adapter = match basis {
            None => {
                let mut progress = |done: usize, total: usize| {
                    post(&Event::Progress {
                        stage: BASIS_STAGE.into(),
                        done: done as f64,
                        total: Some(total as f64),
                    })
                };
                TinyLora::from_file_reporting(
                    &file,
                    &mut loaded.model,
                    path,
                    Some(&known),
                    &mut progress,
                )
                .await
            }
            Some((bytes, url)) => {
                let basis_origin = Path::new(&url);
                match SafetensorsFile::from_reader(JsBytes::new(bytes), basis_origin) {
                    Ok(mut basis) => {
                        TinyLora::from_file_and_basis(
                            &file,
                            &mut loaded.model,
                            path,
                            &mut basis,
                            basis_origin,
                            Some(&known),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
        }
        .map_err(|e| e.to_string())?;
        detach(&mut loaded.model);
        adapter
            .attach(&mut loaded.model)
            .map_err(|e| e.to_string())?;
        self.training = None;
        let loaded = self.loaded()?;
        let event = Event::AdapterReady {
            origin: origin.to_string(),
            v: adapter.v.clone(),
            trainable: adapter.trainable_count(),
            r: adapter.config.r,
            modules: adapter.basis.modules.len(),
            basis_from_file,
            seconds: (now_ms() - started) / 1000.0,
        };
        loaded.adapter = Some(adapter);
        Ok(event)
    }

    /// Replaces the adapter's vectors (the sliders).
    pub fn set_v(&mut self, v: Vec<Vec<f32>>) -> Result<(), String> {
        let loaded = self.loaded()?;
        let adapter = loaded
            .adapter
            .as_mut()
            .ok_or_else(|| "apply an adapter first".to_string())?;
        let u = adapter.config.u;
        if v.len() != adapter.v.len() || v.iter().any(|g| g.len() != u) {
            return Err(format!(
                "expected {} vector(s) of {u} values",
                adapter.v.len()
            ));
        }
        if v.iter().flatten().any(|x| !x.is_finite()) {
            return Err("adapter values must be finite numbers".into());
        }
        adapter.v = v;
        Ok(())
    }

    /// The loaded model and the mixes of a forward pass: the adapter at its vectors
    /// (`adapted`), or none (the base model exactly).
    fn select(&mut self, adapted: bool) -> Result<(&PageModel, Mixes), String> {
        let loaded = self.loaded()?;
        let mixes = match (&loaded.adapter, adapted) {
            (Some(adapter), true) => adapter
                .current_mixes(&loaded.model)
                .map_err(|e| e.to_string())?,
            (None, true) => {
                return Err("no adapter is applied: load one, or run the base model".into());
            }
            (_, false) => Mixes::none(),
        };
        Ok((loaded, mixes))
    }

    /// Last-position logits for `ids` (`[vocab]`).
    pub async fn logits(&mut self, ids: &[u32], adapted: bool) -> Result<Vec<f32>, String> {
        let (loaded, mixes) = self.select(adapted)?;
        let model = &loaded.model;
        let ids = ids.to_vec();
        model
            .check_prompts(std::slice::from_ref(&ids), 0)
            .map_err(|e| e.to_string())?;
        let mut cache: KvCache = model.new_cache(vec![0]);
        to_vec_f32(model.forward_last(&[ids], &mut cache, &mixes))
            .await
            .map_err(|e| e.to_string())
    }

    /// Answers `request` (a `generate` request: question, gold answer, adapted or not, token
    /// limit, temperature, seed) with the paper's GSM8K prompt, posting a `Token` event per
    /// token; `stop` ends it early. Returns the `Done` event.
    pub async fn generate(&mut self, request: Question, halt: HaltFlag) -> Result<Event, String> {
        let Question {
            id,
            question,
            gold,
            adapted,
            max_new_tokens,
            temperature,
            seed,
        } = request;
        let sampling = SamplingConfig {
            temperature,
            top_k: None,
            top_p: None,
        };
        let (loaded, mixes) = self.select(adapted)?;
        let tokenizer = loaded.tokenizer()?;
        let prompt =
            gsm8k::prompt(tokenizer.chat_template(), &question).map_err(|e| e.to_string())?;
        let ids = tokenizer.encode(&prompt).map_err(|e| e.to_string())?;
        let config = GenerateConfig {
            max_new_tokens,
            sampling,
            seed,
            stop_tokens: tokenizer.stop_tokens(&loaded.model.config.eos_token_ids),
        };
        let started = now_ms();
        let mut first = None;
        let mut streamed = Vec::new();
        let generation = generate_until(
            &loaded.model,
            &mixes,
            std::slice::from_ref(&ids),
            &config,
            |_, token| {
                let now = now_ms();
                let first = *first.get_or_insert(now);
                streamed.push(token);
                let text = tokenizer.decode(&streamed).unwrap_or_default();
                let (first_s, now_s) = (first / 1000.0, now / 1000.0);
                let tok_s =
                    Throughput::measure(0, streamed.len(), first_s, first_s, now_s).decode_tok_s;
                post(&Event::Token {
                    id,
                    text,
                    tokens: streamed.len(),
                    tok_s,
                });
            },
            || halt.get() == Halt::Stop,
        )
        .await
        .map_err(|e| e.to_string())?
        .remove(0);
        let finished = now_ms();
        let text = tokenizer
            .decode(&generation.tokens)
            .map_err(|e| e.to_string())?;
        let answer = gsm8k::strict_answer(&text);
        let correct = gold.map(|g| gsm8k::strict_reward(&text, &gsm8k::gold_of(&g)) == 1.0);
        let first = first.unwrap_or(finished);
        let throughput = Throughput::measure(
            ids.len(),
            generation.tokens.len(),
            started / 1000.0,
            first / 1000.0,
            finished / 1000.0,
        );
        Ok(Event::Done {
            id,
            prompt,
            stopped: generation.stopped,
            cancelled: halt.get() == Halt::Stop,
            tokens: generation.tokens,
            text,
            answer,
            correct,
            prefill_tok_s: throughput.prefill_tok_s,
            decode_tok_s: throughput.decode_tok_s,
        })
    }

    /// Reads GSM8K JSONL `text` from `url`: the problems of later `evaluate` requests.
    pub fn set_problems(&mut self, text: &str, url: &str) -> Result<Event, String> {
        let (problems, _) =
            gsm8k::parse_jsonl(text, Path::new(url), BadLines::Fatal).map_err(|e| e.to_string())?;
        let shown = problems
            .iter()
            .map(|p| ProblemText {
                question: p.question.clone(),
                gold: p.gold.clone(),
            })
            .collect();
        self.problems = problems;
        Ok(Event::Problems {
            url: url.to_string(),
            problems: shown,
        })
    }

    /// Greedy accuracy on problems `start..start + n` (the library's evaluation, as `trainer
    /// eval`), posting an `Evaluating` event after each batch; `stop` ends it, and the batch in
    /// flight is not counted.
    pub async fn evaluate(
        &mut self,
        start: usize,
        n: usize,
        adapted: bool,
        config: EvalConfig,
        halt: HaltFlag,
    ) -> Result<Event, String> {
        let end = start.saturating_add(n).min(self.problems.len());
        if start >= end {
            return Err(format!(
                "no problems from #{start}: the list has {}",
                self.problems.len()
            ));
        }
        let problems = self.problems[start..end].to_vec();
        let (loaded, mixes) = self.select(adapted)?;
        let tokenizer = loaded.tokenizer()?;
        let total = problems.len();
        let mut posted = 0;
        let evaluation = evaluate(
            &loaded.model,
            &mixes,
            tokenizer,
            &problems,
            config,
            |so_far| {
                post(&Event::Evaluating {
                    adapted,
                    start,
                    total,
                    tally: Tally::of(so_far),
                    answers: so_far.answers[posted..].to_vec(),
                });
                posted = so_far.n;
                Ok(())
            },
            || halt.get() == Halt::Stop,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Event::Evaluated {
            adapted,
            start,
            total,
            tally: Tally::of(&evaluation),
            cancelled: halt.get() == Halt::Stop,
            answers: evaluation.answers,
        })
    }
}
