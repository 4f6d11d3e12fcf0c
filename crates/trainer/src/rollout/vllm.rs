//! vLLM as the rollout engine: each step the adapter is exported as a PEFT LoRA into a folder
//! the servers read (`adapter_dir/step-K`), loaded under the name `step-K` on every server,
//! and each prompt's group sampled there (prompts shared round-robin across the servers, one
//! thread per server). The trainer keeps computing log-probs and gradients on its own device.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use tinylora::adapter::TinyLora;
use tinylora::adapter::export::export_peft_lora;
use tinylora::generate::GenerateConfig;
use tinylora::grpo::pipeline::{RolloutEngine, Samples, sample_logprobs};
use tinylora::micro_batch::MicroBatch;
use tinylora::model::CausalLm;
use tinylora::readback::block_on;

use super::completions::{Completion, Sampling, parse, request};

/// A vLLM server answering on `url` (OpenAI-compatible, started with
/// `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 vllm serve MODEL --enable-lora --max-lora-rank R`).
struct Server {
    url: String,
    agent: ureq::Agent,
}

impl Server {
    fn new(url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3600)))
            .build();
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// `POST {url}{path}` with `body`; the response body, or an error with the server's words.
    fn post(&self, path: &str, body: &Value) -> Result<String> {
        let url = format!("{}{path}", self.url);
        let mut response = self
            .agent
            .post(&url)
            .send_json(body)
            .with_context(|| format!("{url}: no answer"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .with_context(|| format!("{url}: reading the answer"))?;
        ensure!(
            status.is_success(),
            "{url}: HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        Ok(text)
    }
}

/// What one server answered: (prompt index, its completions) for each of its prompts.
type Answered = Vec<(usize, Vec<Completion>)>;

/// The vLLM engine of a run: its servers and where the step adapters go.
pub struct VllmEngine {
    servers: Vec<Server>,
    adapter_dir: PathBuf,
    stop_tokens: Vec<u32>,
}

/// The LoRA name of step `step`'s adapter.
pub fn adapter_name(step: usize) -> String {
    format!("step-{step}")
}

impl VllmEngine {
    /// An engine over `servers` (`http://host:port`), writing adapters under `adapter_dir`
    /// (a folder every server can read at the same path); `stop_tokens` end a completion.
    pub fn new(servers: &[String], adapter_dir: &Path, stop_tokens: Vec<u32>) -> Result<Self> {
        ensure!(
            !servers.is_empty(),
            "[rollout] servers is empty: give at least one vLLM URL"
        );
        let adapter_dir = std::path::absolute(adapter_dir)
            .with_context(|| format!("{}: not a usable folder", adapter_dir.display()))?;
        Ok(Self {
            servers: servers.iter().map(|url| Server::new(url)).collect(),
            adapter_dir,
            stop_tokens,
        })
    }

    /// Exports `adapter` (at its current `v`) as step `step`'s LoRA and loads it on every
    /// server; unloads step `step − 2`'s (a failure there only leaves memory in use).
    pub fn load_adapter(&self, adapter: &TinyLora, step: usize) -> Result<StepEngine<'_>> {
        let loaded = self.load(adapter, adapter_name(step))?;
        if let Some(old) = step.checked_sub(2) {
            self.unload(&adapter_name(old));
        }
        Ok(loaded)
    }

    /// Exports `adapter` as the LoRA `name` and loads it on every server.
    fn load(&self, adapter: &TinyLora, name: String) -> Result<StepEngine<'_>> {
        let dir = self.adapter_dir.join(&name);
        export_peft_lora(adapter, &dir)?;
        let path = dir.to_string_lossy();
        for server in &self.servers {
            server
                .post(
                    "/v1/load_lora_adapter",
                    &json!({"lora_name": name, "lora_path": path}),
                )
                .with_context(|| {
                    format!("loading adapter {name} from {path} (is it readable by the server?)")
                })?;
        }
        Ok(StepEngine { engine: self, name })
    }

    /// Unloads the LoRA `name` from every server; a failure only leaves memory in use.
    fn unload(&self, name: &str) {
        for server in &self.servers {
            let _ = server.post("/v1/unload_lora_adapter", &json!({"lora_name": name}));
        }
    }

    /// The canary of step `step`: `adapter` with an exaggerated `v` ([`canary_v`]), loaded as
    /// `canary-K`, samples a group for `prompt` on the first server. The engine's log-probs
    /// must follow the canary (the trainer's own log-probs of the same tokens at the canary's
    /// `v`) rather than the step's adapter: an engine that ignores adapters fails here even
    /// when `v` is too small for the per-step gap to show it.
    pub fn canary(
        &self,
        model: &CausalLm,
        adapter: &TinyLora,
        step: usize,
        prompt: &[u32],
        group_size: usize,
        generation: &GenerateConfig,
    ) -> Result<Canary> {
        let mut canary = adapter.clone();
        canary.v = canary_v(&adapter.v);
        let name = format!("canary-{step}");
        let engine = self.load(&canary, name.clone())?;
        let samples = engine.sample_blocking(&[prompt.to_vec()], group_size, generation);
        self.unload(&name);
        let samples = samples?;
        let logprobs = |adapter: &TinyLora| -> Result<Vec<Vec<f32>>> {
            let mixes = adapter.current_mixes(model)?;
            Ok(block_on(sample_logprobs(
                model,
                &mixes,
                &samples,
                MicroBatch::Auto,
            ))?)
        };
        let (at_canary, at_step) = (logprobs(&canary)?, logprobs(adapter)?);
        let found = Canary {
            shift: mean_abs_difference(&at_canary, &at_step),
            gap: mean_abs_difference(&samples.logprobs, &at_canary),
        };
        ensure!(
            found.shift < CANARY_MIN_SHIFT || found.gap <= found.shift / 4.0,
            "the engine ignored adapter {name}: its log-probs of the canary's samples are {:.4} \
             nats per token from the trainer's at the canary's v, which moves them {:.4} from \
             the step's adapter (is LoRA enabled, and is --max-lora-rank at least the adapter's \
             r?)",
            found.gap,
            found.shift
        );
        Ok(found)
    }
}

/// Below this mean shift per token (nats) a canary cannot tell adapters apart: it is reported,
/// not judged.
pub const CANARY_MIN_SHIFT: f64 = 0.05;

/// The canary's `v`: four times `v` plus ±0.25 alternating, so that it differs from `v` even
/// at `v = 0`.
pub fn canary_v(v: &[Vec<f32>]) -> Vec<Vec<f32>> {
    v.iter()
        .map(|group| {
            let sign = |i: usize| if i.is_multiple_of(2) { 0.25 } else { -0.25 };
            group
                .iter()
                .enumerate()
                .map(|(i, x)| 4.0 * x + sign(i))
                .collect()
        })
        .collect()
}

/// Mean |a − b| over the tokens of rows of equal lengths.
fn mean_abs_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let pairs = a.iter().flatten().zip(b.iter().flatten());
    let (sum, n) = pairs.fold((0.0, 0usize), |(s, n), (x, y)| {
        (s + f64::from(x - y).abs(), n + 1)
    });
    sum / n.max(1) as f64
}

/// What a canary found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canary {
    /// Mean |logπ(canary v) − logπ(step v)| per token of the canary's samples, by the trainer:
    /// how far the canary moves the distribution.
    pub shift: f64,
    /// Mean |logπ_engine − logπ(canary v)| per token: near 0 when the engine used the canary.
    pub gap: f64,
}

/// The engine with one step's adapter loaded: samples under it.
pub struct StepEngine<'a> {
    engine: &'a VllmEngine,
    name: String,
}

impl StepEngine<'_> {
    fn sample_blocking(
        &self,
        prompts: &[Vec<u32>],
        group_size: usize,
        generation: &GenerateConfig,
    ) -> Result<Samples> {
        let temperature = match generation.sampling.temperature {
            Some(t) if t > 0.0 => t,
            _ => bail!("the vLLM engine samples at a temperature above 0"),
        };
        ensure!(
            generation.sampling.top_k.is_none() && generation.sampling.top_p.is_none(),
            "the vLLM engine samples the full distribution: set top_k = 0 and top_p = 1"
        );
        let servers = &self.engine.servers;
        let sampling = |i: usize| Sampling {
            n: group_size,
            max_tokens: generation.max_new_tokens,
            temperature,
            seed: generation.seed.wrapping_add(i as u64),
        };
        // Prompt i goes to server i mod servers; one thread per server.
        let answers: Vec<Result<Answered>> = std::thread::scope(|scope| {
            let handles: Vec<_> = servers
                .iter()
                .enumerate()
                .map(|(s, server)| {
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        for i in (s..prompts.len()).step_by(servers.len()) {
                            let sampling = sampling(i);
                            let body = request(&self.name, &prompts[i], &sampling);
                            let text = server.post("/v1/completions", &body)?;
                            let completions = parse(
                                &text,
                                &self.name,
                                &prompts[i],
                                &sampling,
                                &self.engine.stop_tokens,
                                &server.url,
                            )?;
                            out.push((i, completions));
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a request thread panicked")))
                })
                .collect()
        });
        let mut by_prompt: Vec<Option<Vec<Completion>>> = vec![None; prompts.len()];
        for answer in answers {
            for (i, completions) in answer? {
                by_prompt[i] = Some(completions);
            }
        }
        let mut samples = Samples {
            group_size,
            prompts: Vec::new(),
            completions: Vec::new(),
            logprobs: Vec::new(),
            stopped: Vec::new(),
            temperature,
            max_new_tokens: generation.max_new_tokens,
        };
        for (prompt, completions) in prompts.iter().zip(by_prompt) {
            for c in completions.expect("every prompt was answered") {
                samples.prompts.push(prompt.clone());
                samples.completions.push(c.tokens);
                samples.logprobs.push(c.logprobs);
                samples.stopped.push(c.stopped);
            }
        }
        Ok(samples)
    }
}

impl RolloutEngine for StepEngine<'_> {
    async fn sample(
        &self,
        prompts: &[Vec<u32>],
        group_size: usize,
        generation: &GenerateConfig,
    ) -> tinylora::Result<Samples> {
        self.sample_blocking(prompts, group_size, generation)
            .map_err(|e| tinylora::Error::Engine(format!("{e:#}")))
    }
}
