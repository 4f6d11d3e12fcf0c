//! `trainer generate`: continue a prompt (text or token ids) with the model.

use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use tinylora::generate::{GenerateConfig, Throughput, generate};
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;

use super::common::{ModelArgs, TokenizerArgs, load_tokenizer, parse_ids};

/// Arguments of `trainer generate`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// The prompt text.
    #[arg(long, conflicts_with = "ids")]
    prompt: Option<String>,
    /// Wrap the prompt in the Qwen2.5 chat template (default system prompt).
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// The prompt as comma-separated token ids.
    #[arg(long)]
    ids: Option<String>,
    /// Most new tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; greedy when absent or 0.
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print `{"tokens": [...], "text": "..."}` instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// Generates and prints the continuation.
pub fn run(args: Args) -> Result<()> {
    if let Some(p) = args.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        bail!("--top-p must be in (0, 1], got {p}");
    }
    if let Some(t) = args.temperature
        && !(t.is_finite() && t >= 0.0)
    {
        bail!("--temperature must be a non-negative number, got {t}");
    }
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let tokenizer = match (&args.prompt, &args.tokenizer.tokenizer) {
        (None, None) if !loaded.tokenizer_path.is_file() => None,
        _ => Some(load_tokenizer(args.tokenizer.tokenizer.as_ref(), &loaded)?),
    };
    let prompt = match (&args.prompt, &args.ids, &tokenizer) {
        (Some(text), _, Some(tok)) => {
            let text = if args.chat {
                tok.chat_template().render(None, text)?
            } else {
                text.clone()
            };
            tok.encode(&text)?
        }
        (None, Some(ids), _) => parse_ids(ids)?,
        _ => bail!("give --prompt TEXT or --ids 1,2,3"),
    };
    let stop_tokens = match &tokenizer {
        Some(tok) => tok.stop_tokens(&model.config.eos_token_ids),
        None => model.config.eos_token_ids.clone(),
    };
    let config = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        },
        seed: args.seed,
        stop_tokens,
    };
    let mut streamed = Vec::new();
    let mut printed = 0;
    let prompt_len = prompt.len();
    let started = Instant::now();
    let mut first_token_at = None;
    let generation = block_on(generate(
        model,
        &loaded.mixes,
        &[prompt],
        &config,
        |_, token| {
            first_token_at.get_or_insert_with(Instant::now);
            if args.json {
                return;
            }
            streamed.push(token);
            if let Some(text) = tokenizer.as_ref().and_then(|t| t.decode(&streamed).ok()) {
                // Print only what is new; a partial UTF-8 sequence decodes to U+FFFD and waits.
                if text.len() > printed && !text.ends_with('\u{FFFD}') {
                    print!("{}", &text[printed..]);
                    let _ = std::io::stdout().flush();
                    printed = text.len();
                }
            } else if tokenizer.is_none() {
                print!("{token} ");
                let _ = std::io::stdout().flush();
            }
        },
    ))?
    .remove(0);
    let finished = Instant::now();
    let text = match &tokenizer {
        Some(tok) => tok.decode(&generation.tokens)?,
        None => String::new(),
    };
    if let Some(first) = first_token_at {
        let prefill = (first - started).as_secs_f64();
        let decoded = generation.tokens.len().saturating_sub(1);
        let decode = (finished - first).as_secs_f64();
        let speed = Throughput::measure(
            prompt_len,
            generation.tokens.len(),
            0.0,
            prefill,
            prefill + decode,
        );
        eprintln!(
            "\nprefill {prompt_len} tokens in {prefill:.2} s ({:.1} tok/s); decode {decoded} tokens in {decode:.2} s ({:.2} tok/s)",
            speed.prefill_tok_s, speed.decode_tok_s
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"tokens": generation.tokens, "text": text, "logprobs": generation.logprobs})
        );
    } else {
        println!();
    }
    Ok(())
}
