//! `trainer eval`: GSM8K accuracy of a model (with or without adapter) under the strict reward,
//! greedy decoding, as the paper evaluates.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use tinylora::evaluate::{EvalConfig, evaluate};
use tinylora::gsm8k::BadLines;
use tinylora::readback::block_on;

use super::common::{ModelArgs, TokenizerArgs, load_tokenizer};
use crate::run::data::load_problems;

/// Arguments of `trainer eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// GSM8K problems: JSONL or parquet (`question`, `answer` with `#### N`).
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
    /// Per-problem results (JSONL), rewritten after every batch.
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
    let (mut problems, skipped) = load_problems(&args.data, bad_lines)?;
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
    let tokenizer = load_tokenizer(args.tokenizer.tokenizer.as_ref(), &loaded)?;
    let started = std::time::Instant::now();
    let total = problems.len();
    let config = EvalConfig {
        batch_size: args.batch_size,
        max_new_tokens: args.max_new_tokens,
    };
    let evaluation = block_on(evaluate(
        model,
        &loaded.mixes,
        &tokenizer,
        &problems,
        config,
        |so_far| {
            eprint!(
                "\r{}/{total} problems, accuracy {:.1}% (flexible {}, {} truncated), {:.0} s",
                so_far.n,
                100.0 * so_far.accuracy(),
                so_far.flexible_correct,
                so_far.truncated,
                started.elapsed().as_secs_f64()
            );
            // After every batch, so that an interrupted evaluation keeps what it answered.
            so_far.write_records(&args.out)
        },
        || false,
    ))?;
    eprintln!();
    let (n, correct, accuracy) = (evaluation.n, evaluation.correct, evaluation.accuracy());
    let (flexible, truncated) = (evaluation.flexible_correct, evaluation.truncated);
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"accuracy": accuracy, "n": n, "correct": correct,
                "flexible_correct": flexible, "truncated": truncated, "seconds": seconds})
        );
    } else {
        println!(
            "accuracy {:.2}% ({correct}/{n}), flexible {flexible}/{n}, {truncated} truncated, \
             {seconds:.0} s; per-problem results in {}",
            100.0 * accuracy,
            args.out.display()
        );
    }
    Ok(())
}
