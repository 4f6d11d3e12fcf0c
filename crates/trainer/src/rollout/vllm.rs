//! vLLM as the rollout engine: each adapter version is exported as a PEFT LoRA into a folder
//! the servers read (`adapter_dir/NAME`), loaded under its name on every server, and each
//! prompt's group sampled there (prompts shared round-robin across the servers). The trainer
//! keeps computing log-probs and gradients on its own device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use tinylora::adapter::TinyLora;
use tinylora::adapter::export::export_peft_lora;
use tinylora::grpo::pipeline::Samples;

use super::completions::{Sampling, parse, request};
use super::http::Server;
use super::{Batch, RemoteEngine, remote_temperature, spread};

/// The vLLM servers of a run (OpenAI-compatible, started with
/// `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 vllm serve MODEL --enable-lora --max-lora-rank R`) and
/// where the adapters go.
pub struct VllmEngine {
    servers: Vec<Server>,
    adapter_dir: PathBuf,
    stop_tokens: Vec<u32>,
}

impl VllmEngine {
    /// An engine over `servers` (`http://host:port`), writing adapters under `adapter_dir`
    /// (a folder every server can read at the same path); `stop_tokens` end a completion.
    pub fn new(servers: &[String], adapter_dir: &Path, stop_tokens: Vec<u32>) -> Result<Self> {
        let servers = super::servers(servers, "vLLM")?;
        let adapter_dir = std::path::absolute(adapter_dir)
            .with_context(|| format!("{}: not a usable folder", adapter_dir.display()))?;
        Ok(Self {
            servers,
            adapter_dir,
            stop_tokens,
        })
    }
}

impl RemoteEngine for VllmEngine {
    fn sample(&self, adapter: &TinyLora, name: &str, batch: Batch<'_>) -> Result<Samples> {
        let (prompts, group_size, generation) = (batch.prompts, batch.group_size, batch.generation);
        let dir = self.adapter_dir.join(name);
        export_peft_lora(adapter, &dir)?;
        let path = dir.to_string_lossy();
        for server in &self.servers {
            let body = json!({"lora_name": name, "lora_path": path});
            server
                .post("/v1/load_lora_adapter", &body)
                .with_context(|| {
                    format!("loading adapter {name} from {path} (is it readable by the server?)")
                })?;
        }
        let temperature = remote_temperature(generation)?;
        spread(&self.servers, batch, temperature, |server, i| {
            let sampling = Sampling {
                n: group_size,
                max_tokens: generation.max_new_tokens,
                temperature,
                seed: generation.seed.wrapping_add(i as u64),
            };
            let text = server.post("/v1/completions", &request(name, &prompts[i], &sampling))?;
            parse(
                &text,
                name,
                &prompts[i],
                &sampling,
                &self.stop_tokens,
                &server.url,
            )
        })
    }

    /// Unloads `name` from every server; a failure only leaves memory in use.
    fn release(&self, name: &str) {
        for server in &self.servers {
            let _ = server.post("/v1/unload_lora_adapter", &json!({"lora_name": name}));
        }
    }
}
