//! llama.cpp's `llama-server` as the rollout engine, for one machine (CPU or small GPUs): it
//! serves the base model with one LoRA per trainable float (`trainer export --llama-server`),
//! and each request gives the current `v` as the LoRAs' scales — `ΔW(v)` is linear in `v`, so
//! no file changes between steps. Every request samples the full distribution at the run's
//! temperature (only llama.cpp's temperature sampler, no penalties) and returns the sampled
//! tokens with their post-sampling probabilities.

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use tinylora::adapter::TinyLora;
use tinylora::adapter::llama_server::lora_file;
use tinylora::generate::Generation;
use tinylora::grpo::pipeline::Samples;

use super::http::Server;
use super::{Batch, RemoteEngine, remote_temperature, spread};

/// The `llama-server`s of a run.
pub struct LlamaServerEngine {
    servers: Vec<Server>,
    stop_tokens: Vec<u32>,
}

#[derive(Deserialize)]
struct LoadedLora {
    id: usize,
    path: String,
}

impl LlamaServerEngine {
    /// An engine over `servers` (`http://host:port`), each of which must hold the `floats`
    /// LoRA files of `trainer export --llama-server` in order; `stop_tokens` end a completion.
    pub fn new(servers: &[String], stop_tokens: Vec<u32>, floats: usize) -> Result<Self> {
        let servers = super::servers(servers, "llama-server")?;
        for server in &servers {
            let text = server.get("/lora-adapters")?;
            let loras: Vec<LoadedLora> = serde_json::from_str(&text)
                .with_context(|| format!("{}/lora-adapters: not a list of adapters", server.url))?;
            let in_order = loras
                .iter()
                .enumerate()
                .all(|(i, l)| l.id == i && l.path.ends_with(&lora_file(i)));
            ensure!(
                loras.len() == floats && in_order,
                "{} serves {} LoRA adapter(s), this run has {floats} trainable floats: start it \
                 with the files of `trainer export --llama-server DIR` for this model and \
                 adapter config, in order (lora-000.gguf, lora-001.gguf, ...)",
                server.url,
                loras.len()
            );
        }
        Ok(Self {
            servers,
            stop_tokens,
        })
    }
}

/// The body of `POST /completion` for `prompt` (token ids) with the LoRA scales `scales`.
pub fn request(
    prompt: &[u32],
    scales: &[f32],
    max_tokens: usize,
    temperature: f32,
    seed: u64,
) -> Value {
    let lora: Vec<Value> = scales
        .iter()
        .enumerate()
        .map(|(id, scale)| json!({"id": id, "scale": scale}))
        .collect();
    json!({
        "prompt": prompt,
        "n_predict": max_tokens,
        "temperature": temperature,
        "samplers": ["temperature"],
        "repeat_penalty": 1.0,
        "repeat_last_n": 0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "n_probs": 1,
        "post_sampling_probs": true,
        "return_tokens": true,
        "cache_prompt": true,
        "seed": seed,
        "lora": lora,
    })
}

#[derive(Deserialize)]
struct Response {
    tokens: Vec<u32>,
    stop_type: String,
    tokens_evaluated: Option<usize>,
    completion_probabilities: Vec<TokenProb>,
}

#[derive(Deserialize)]
struct TokenProb {
    id: u32,
    prob: Option<f64>,
}

/// The completion of a response to [`request`], checked: the prompt's length evaluated, the
/// post-sampling probability of each token in order (NaN for the few llama-server leaves out),
/// `stop_type` "eos" only on a stop
/// token and "limit" only at `max_tokens`. A completion that runs past a stop token (one the
/// server does not count as end-of-generation) is cut after it, as the trainer samples.
pub fn parse(
    body: &str,
    prompt: &[u32],
    max_tokens: usize,
    stop_tokens: &[u32],
    origin: &str,
) -> Result<Generation> {
    let r: Response = serde_json::from_str(body).with_context(|| {
        format!(
            "{origin}: not a llama-server completion: {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    if let Some(n) = r.tokens_evaluated {
        ensure!(
            n == prompt.len(),
            "{origin}: evaluated {n} prompt tokens, {} were sent",
            prompt.len()
        );
    }
    // llama-server gives no probability for a token whose text is an incomplete UTF-8
    // sequence (a byte of a multi-byte character): such tokens are unscored (NaN), as TRL
    // treats tokens vLLM could not score; every probability must belong to a token, in order.
    let mut probs = r.completion_probabilities.iter().peekable();
    let mut logprobs = Vec::with_capacity(r.tokens.len());
    for (t, &token) in r.tokens.iter().enumerate() {
        let Some(p) = probs.next_if(|p| p.id == token) else {
            logprobs.push(f32::NAN);
            continue;
        };
        match p.prob {
            Some(x) if x > 0.0 && x <= 1.0 => logprobs.push(x.ln() as f32),
            other => bail!("{origin}: token {t}: probability {other:?} is not in (0, 1]"),
        }
    }
    if let Some(extra) = probs.next() {
        bail!(
            "{origin}: a probability for token {} that is not in the completion {:?} at its place",
            extra.id,
            r.tokens
        );
    }
    let unscored = logprobs.iter().filter(|x| x.is_nan()).count();
    ensure!(
        unscored * 4 <= logprobs.len(),
        "{origin}: {unscored} of {} tokens came without a probability",
        logprobs.len()
    );
    let mut tokens = r.tokens;
    if let Some(end) = tokens.iter().position(|t| stop_tokens.contains(t)) {
        tokens.truncate(end + 1);
        logprobs.truncate(end + 1);
        return Ok(Generation {
            tokens,
            logprobs,
            stopped: true,
        });
    }
    match r.stop_type.as_str() {
        "limit" => ensure!(
            tokens.len() == max_tokens,
            "{origin}: stop_type \"limit\" after {} of {max_tokens} tokens",
            tokens.len()
        ),
        "eos" => bail!(
            "{origin}: stop_type \"eos\" but no stop token ({stop_tokens:?}) in the completion"
        ),
        other => bail!("{origin}: stop_type {other:?} (expected \"eos\" or \"limit\")"),
    }
    Ok(Generation {
        tokens,
        logprobs,
        stopped: false,
    })
}

impl RemoteEngine for LlamaServerEngine {
    fn sample(&self, adapter: &TinyLora, _name: &str, batch: Batch<'_>) -> Result<Samples> {
        let (prompts, group_size, generation) = (batch.prompts, batch.group_size, batch.generation);
        let temperature = remote_temperature(generation)?;
        let scales: Vec<f32> = adapter.v.concat();
        spread(&self.servers, batch, temperature, |server, i| {
            (0..group_size)
                .map(|j| {
                    let seed = generation.seed.wrapping_add((i * group_size + j) as u64);
                    let body = request(
                        &prompts[i],
                        &scales,
                        generation.max_new_tokens,
                        temperature,
                        seed,
                    );
                    let text = server.post("/completion", &body)?;
                    parse(
                        &text,
                        &prompts[i],
                        generation.max_new_tokens,
                        &self.stop_tokens,
                        &server.url,
                    )
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response shaped as llama-server answers [`request`] (fields it adds trimmed).
    const RESPONSE: &str = r#"{"index": 0, "content": "1+1", "tokens": [19, 31, 2],
      "id_slot": 0, "stop": true, "model": "model.gguf", "tokens_predicted": 3,
      "tokens_evaluated": 2, "prompt": "ab", "truncated": false, "stop_type": "eos",
      "stopping_word": "", "tokens_cached": 4,
      "completion_probabilities": [
        {"id": 19, "token": "1", "bytes": [49], "prob": 0.5, "top_probs": [{"id": 19, "token": "1", "bytes": [49], "prob": 0.5}]},
        {"id": 31, "token": "+", "bytes": [43], "prob": 0.25, "top_probs": []},
        {"id": 2, "token": "<eos>", "bytes": [], "prob": 1.0, "top_probs": []}]}"#;

    fn parsed(body: &str, max: usize) -> Result<Generation> {
        parse(body, &[5, 6], max, &[2, 3], "http://ls")
    }

    #[test]
    fn a_llama_server_response() {
        let got = parsed(RESPONSE, 8).unwrap();
        assert_eq!(got.tokens, vec![19, 31, 2]);
        assert!(got.stopped);
        assert_eq!(
            got.logprobs,
            vec![0.5f64.ln() as f32, 0.25f64.ln() as f32, 0.0]
        );
        // Past a stop token the server does not treat as the end: cut after it.
        let past =
            RESPONSE
                .replace("[19, 31, 2]", "[19, 3, 2]")
                .replacen("\"id\": 31", "\"id\": 3", 1);
        assert_eq!(parsed(&past, 8).unwrap().tokens, vec![19, 3]);
        // A token without a probability (llama-server leaves out incomplete UTF-8) is NaN.
        let gap = RESPONSE.replace("[19, 31, 2]", "[19, 158, 31, 2]");
        let got = parsed(&gap, 8).unwrap();
        assert_eq!(got.tokens, vec![19, 158, 31, 2]);
        assert!(got.logprobs[1].is_nan() && got.logprobs[2] == 0.25f64.ln() as f32);
        let body = request(&[5, 6], &[0.5, -1.0], 8, 0.7, 3);
        assert_eq!(
            body["lora"],
            json!([{"id": 0, "scale": 0.5}, {"id": 1, "scale": -1.0}])
        );
        assert_eq!(body["samplers"], json!(["temperature"]));
        assert_eq!(body["post_sampling_probs"], json!(true));
    }

    #[test]
    fn responses_that_cannot_be_trusted_are_errors() {
        let cases = [
            (
                "\"tokens_evaluated\": 2",
                "\"tokens_evaluated\": 3",
                "evaluated 3 prompt tokens",
            ),
            (
                "[19, 31, 2]",
                "[19, 31, 4]",
                "for token 2 that is not in the completion",
            ),
            (
                "[19, 31, 2]",
                "[19, 31]",
                "for token 2 that is not in the completion",
            ),
            ("\"prob\": 0.25", "\"prob\": 0.0", "not in (0, 1]"),
        ];
        for (from, to, want) in cases {
            assert!(RESPONSE.contains(from), "{from}");
            let err = format!(
                "{:#}",
                parsed(&RESPONSE.replacen(from, to, 1), 8).unwrap_err()
            );
            assert!(
                err.contains(want) && err.contains("http://ls"),
                "{to}: {err}"
            );
        }
        // "eos" without a stop token, and "limit" before the limit.
        let no_stop = RESPONSE
            .replace("[19, 31, 2]", "[19, 31, 4]")
            .replace("\"id\": 2,", "\"id\": 4,");
        assert!(format!("{:#}", parsed(&no_stop, 8).unwrap_err()).contains("no stop token"));
        let limit = no_stop.replace("\"eos\"", "\"limit\"");
        assert!(parsed(&limit, 3).is_ok());
        assert!(format!("{:#}", parsed(&limit, 8).unwrap_err()).contains("after 3 of 8"));
    }
}
