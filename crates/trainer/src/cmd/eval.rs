//! `trainer eval`: GSM8K accuracy of a model (with or without adapter) under the strict reward,
//! greedy decoding, as the paper evaluates.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use tinylora::generate::{GenerateConfig, generate};
use tinylora::gsm8k::{BadLines, load_jsonl, prompt, strict_reward};
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;

use super::common::{ModelArgs, TokenizerArgs, load_tokenizer};

/// Arguments of `trainer eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// GSM8K JSONL file (`question`, `answer` with `#### N`).
    #[arg(long)]
    data: PathBuf,
    /// Only the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// Problems decoded together.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Longest response in tokens.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Skip malformed lines (counted) instead of stopping at the first one.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Per-problem results (JSONL).
    #[arg(long, default_value = "eval.jsonl")]
    out: PathBuf,
    /// Print `{"accuracy": ..., "n": ..., "correct": ...}`.
    #[arg(long)]
    json: bool,
}

/// Evaluates and writes per-problem results.
pub fn run(args: Args) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let bad_lines = if args.skip_bad_lines {
        BadLines::Skip
    } else {
        BadLines::Fatal
    };
    let (mut problems, skipped) = load_jsonl(&args.data, bad_lines)?;
    if skipped > 0 {
        eprintln!(
            "skipped {skipped} malformed line(s) in {}",
            args.data.display()
        );
    }
    problems.truncate(args.limit.unwrap_or(usize::MAX));
    ensure!(
        !problems.is_empty(),
        "{}: no problems to evaluate",
        args.data.display()
    );
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let tokenizer = load_tokenizer(args.tokenizer.tokenizer.as_ref(), &loaded.tokenizer_path)?;
    let config = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        stop_tokens: tokenizer.stop_tokens(&model.config.eos_token_ids),
    };
    let tmp = args.out.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let started = std::time::Instant::now();
    let mut correct = 0usize;
    for (batch_index, batch) in problems.chunks(args.batch_size).enumerate() {
        let prompts = batch
            .iter()
            .map(|p| tokenizer.encode(&prompt(&p.question)))
            .collect::<tinylora::Result<Vec<_>>>()?;
        let generations = block_on(generate(model, &prompts, &config, |_, _| {}))?;
        for (i, (problem, generation)) in batch.iter().zip(generations).enumerate() {
            let response = tokenizer.decode(&generation.tokens)?;
            let reward = strict_reward(&response, &problem.gold);
            correct += usize::from(reward == 1.0);
            let record = serde_json::json!({
                "index": batch_index * args.batch_size + i,
                "question": problem.question,
                "gold": problem.gold,
                "response": response,
                "correct": reward == 1.0,
                "response_tokens": generation.tokens.len(),
            });
            writeln!(out, "{record}")?;
        }
        let done = batch_index * args.batch_size + batch.len();
        eprint!(
            "\r{done}/{} problems, accuracy {:.1}%, {:.0} s",
            problems.len(),
            100.0 * correct as f64 / done as f64,
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let n = problems.len();
    let accuracy = correct as f64 / n as f64;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"accuracy": accuracy, "n": n, "correct": correct})
        );
    } else {
        println!(
            "accuracy {:.2}% ({correct}/{n}); per-problem results in {}",
            100.0 * accuracy,
            args.out.display()
        );
    }
    Ok(())
}
