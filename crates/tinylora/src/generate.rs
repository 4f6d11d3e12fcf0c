//! Batched generation with a KV cache: prompts of different lengths are left-padded, each step
//! reads back only the last position's logits and samples on the host.

use crate::Result;
use crate::model::{CausalLm, Mixes};
use crate::readback::to_vec_f32;
use crate::rng::SplitMix64;
use crate::sampling::{SamplingConfig, sample};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Most new tokens per prompt.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: SamplingConfig,
    /// Seed of the sampler; row `i` uses the stream `seed + i`.
    pub seed: u64,
    /// Tokens that end a row (included in its output).
    pub stop_tokens: Vec<u32>,
}

/// One prompt's continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids (a final stop token included).
    pub tokens: Vec<u32>,
    /// Log-probability of each new token under the distribution it was sampled from.
    pub logprobs: Vec<f32>,
    /// Whether a stop token ended it (rather than `max_new_tokens`).
    pub stopped: bool,
}

/// Speeds of one generation from its clock readings (seconds, any origin): the prefill
/// (`prompt_tokens` up to the first new token) and the decode (each later token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Prompt tokens per second up to the first new token.
    pub prefill_tok_s: f64,
    /// New tokens after the first per second (0 with one token or none).
    pub decode_tok_s: f64,
}

impl Throughput {
    /// From the start, the first new token's time and the end, for `prompt_tokens` prompt
    /// tokens and `new_tokens` generated.
    pub fn measure(
        prompt_tokens: usize,
        new_tokens: usize,
        started: f64,
        first: f64,
        finished: f64,
    ) -> Self {
        let decoded = new_tokens.saturating_sub(1) as f64;
        Self {
            prefill_tok_s: prompt_tokens as f64 / (first - started).max(1e-9),
            decode_tok_s: match finished > first {
                true => decoded / (finished - first),
                false => 0.0,
            },
        }
    }
}

/// Continues every prompt; rows are independent (the same result as one at a time).
///
/// `on_token` is called after each step with the row index and its new token, for streaming.
pub async fn generate(
    model: &CausalLm,
    mixes: &Mixes,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    generate_until(model, mixes, prompts, config, on_token, || false).await
}

/// [`generate`] that also ends every row early (not `stopped`) once `cancelled` returns true;
/// it is asked before each step, after the previous step's readback (where a browser worker
/// gets to handle a "stop" message).
pub async fn generate_until(
    model: &CausalLm,
    mixes: &Mixes,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    mut on_token: impl FnMut(usize, u32),
    mut cancelled: impl FnMut() -> bool,
) -> Result<Vec<Generation>> {
    model.check_prompts(prompts, config.max_new_tokens)?;
    let vocab = model.config.vocab_size;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut step: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut row = vec![p[0]; longest - p.len()];
            row.extend_from_slice(p);
            row
        })
        .collect();
    let mut cache = model.new_generation_cache(pads, longest + config.max_new_tokens);
    let mut rngs: Vec<SplitMix64> = (0..prompts.len())
        .map(|i| SplitMix64::new(config.seed.wrapping_add(i as u64)))
        .collect();
    let mut out = vec![
        Generation {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            stopped: false,
        };
        prompts.len()
    ];
    // Output row of each row of the batch being decoded; finished rows leave the batch once
    // they are an eighth of it (each leaving copies the cache once).
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    for index in 0..config.max_new_tokens {
        if cancelled() {
            break;
        }
        // The first step is the prefill: rows of the same prompt (a group of samples) share it.
        let logits = if index == 0 {
            model.forward_last_distinct(&step, &mut cache, mixes)
        } else {
            model.forward_last(&step, &mut cache, mixes)
        };
        let logits = to_vec_f32(logits).await?;
        for (slot, &row) in active.iter().enumerate() {
            let generation = &mut out[row];
            if !generation.stopped {
                let (token, logprob) = sample(
                    &logits[slot * vocab..(slot + 1) * vocab],
                    &config.sampling,
                    &mut rngs[row],
                );
                generation.tokens.push(token);
                generation.logprobs.push(logprob);
                generation.stopped = config.stop_tokens.contains(&token);
                on_token(row, token);
            }
        }
        let finished = active.iter().filter(|&&row| out[row].stopped).count();
        if finished == active.len() {
            break;
        }
        if finished * 8 >= active.len() {
            let slots: Vec<usize> = (0..active.len())
                .filter(|&s| !out[active[s]].stopped)
                .collect();
            cache.keep_rows(&slots);
            active = slots.iter().map(|&s| active[s]).collect();
        }
        step = active
            .iter()
            .map(|&row| vec![*out[row].tokens.last().expect("one token per step")])
            .collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_by_hand() {
        // 100 prompt tokens before the first new token at 0.5 s; 11 new tokens by 2.5 s.
        let t = Throughput::measure(100, 11, 10.0, 10.5, 12.5);
        assert_eq!((t.prefill_tok_s, t.decode_tok_s), (200.0, 5.0));
        assert_eq!(Throughput::measure(4, 1, 0.0, 1.0, 1.0).decode_tok_s, 0.0);
    }
}
