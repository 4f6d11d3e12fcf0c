//! Rollout engines besides the trained model itself — vLLM servers ([`vllm`], speaking the
//! OpenAI-compatible [`completions`] API) and llama.cpp's server ([`llama_server`]) — and
//! what they share: sampling settings, prompts spread over servers, the [`canary`].

pub mod canary;
pub mod completions;
pub mod http;
pub mod llama_server;
pub mod vllm;

use anyhow::{Result, anyhow, bail, ensure};
use tinylora::adapter::TinyLora;
use tinylora::generate::{GenerateConfig, Generation};
use tinylora::grpo::pipeline::Samples;

use self::http::Server;

/// What to sample: `group_size` completions of each of `prompts`, as `generation` says.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The prompts' token ids.
    pub prompts: &'a [Vec<u32>],
    /// Completions per prompt.
    pub group_size: usize,
    /// Token limit, temperature, seed, stop tokens.
    pub generation: &'a GenerateConfig,
}

/// An engine on other machines that samples with the adapter it is given.
pub trait RemoteEngine {
    /// `batch` sampled with `adapter` at its `v`, as adapter version `name` (a step or a canary).
    fn sample(&self, adapter: &TinyLora, name: &str, batch: Batch<'_>) -> Result<Samples>;

    /// Forgets adapter version `name` (nothing to do where versions cost nothing).
    fn release(&self, _name: &str) {}
}

/// The sampling temperature of `generation`, which a remote engine must be able to reproduce:
/// above 0, the full distribution (no top-k or top-p).
pub fn remote_temperature(generation: &GenerateConfig) -> Result<f32> {
    let temperature = match generation.sampling.temperature {
        Some(t) if t > 0.0 => t,
        _ => bail!("a rollout engine samples at a temperature above 0"),
    };
    ensure!(
        generation.sampling.top_k.is_none() && generation.sampling.top_p.is_none(),
        "a rollout engine samples the full distribution: set top_k = 0 and top_p = 1"
    );
    Ok(temperature)
}

/// The servers at `urls`, at least one (`engine` names them in the error).
pub fn servers(urls: &[String], engine: &str) -> Result<Vec<Server>> {
    ensure!(
        !urls.is_empty(),
        "[rollout] servers is empty: give at least one {engine} URL"
    );
    Ok(urls.iter().map(|url| Server::new(url)).collect())
}

/// What one server answered: (prompt index, its completions) for each of its prompts.
type Answered = Vec<(usize, Vec<Generation>)>;

/// `batch`, sampled at `temperature` ([`remote_temperature`]), from `completions(server,
/// prompt index)` for every prompt, prompt `i` on server `i mod servers` (one thread per
/// server), assembled in prompt order.
pub fn spread(
    servers: &[Server],
    batch: Batch<'_>,
    temperature: f32,
    completions: impl Fn(&Server, usize) -> Result<Vec<Generation>> + Sync,
) -> Result<Samples> {
    let (prompts, group_size) = (batch.prompts, batch.group_size);
    let answers: Vec<Result<Answered>> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(s, server)| {
                let completions = &completions;
                scope.spawn(move || {
                    (s..prompts.len())
                        .step_by(servers.len())
                        .map(|i| Ok((i, completions(server, i)?)))
                        .collect()
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
    let mut by_prompt: Vec<Vec<Generation>> = vec![Vec::new(); prompts.len()];
    for answer in answers {
        for (i, completions) in answer? {
            ensure!(
                completions.len() == group_size,
                "{} completions for prompt {i}, expected {group_size}",
                completions.len()
            );
            by_prompt[i] = completions;
        }
    }
    let rows = prompts
        .iter()
        .zip(by_prompt)
        .flat_map(|(prompt, group)| group.into_iter().map(move |g| (prompt.clone(), g)));
    Ok(Samples::from_generations(
        group_size,
        temperature,
        batch.generation.max_new_tokens,
        rows,
    ))
}
