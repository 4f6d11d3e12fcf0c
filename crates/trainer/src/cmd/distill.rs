//! `trainer distill`: supervised targets in the strict format from a model's own answers.
//!
//! A base model that reasons well but ends with `\boxed{N}` (Qwen2.5-Coder-0.5B-Instruct) gives
//! GRPO's strict reward nothing to work with, and its loss on GSM8K's reference solutions is
//! dominated by their unfamiliar style rather than by the format. Its own greedy answers to
//! training problems (`trainer eval --data train.jsonl`), each followed by `#### N` with N its
//! own final number, are targets whose only unfamiliar tokens are the format's: `trainer sft`
//! on them moves the few floats towards `#### N` and little else.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use tinylora::fsutil::write_atomic;
use tinylora::gsm8k::last_number;

/// Arguments of `trainer distill`.
#[derive(clap::Args)]
pub struct Args {
    /// Per-problem results of `trainer eval` (JSONL with `question`, `response`, `truncated`).
    #[arg(long)]
    eval: PathBuf,
    /// Where to write the targets: GSM8K JSONL (`question`, `answer` ending in `#### N`).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Deserialize)]
struct EvalRecord {
    question: String,
    response: String,
    truncated: bool,
}

/// The answer `response` with the strict format's last line (its own final number), or `None`
/// when it has no number.
pub fn with_strict_format(response: &str) -> Option<String> {
    let n = last_number(response)?;
    Some(format!("{}\n#### {n}", response.trim_end()))
}

/// Writes the targets and reports how many answers were kept.
pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.eval)
        .with_context(|| format!("reading {}", args.eval.display()))?;
    let (mut out, mut kept, mut truncated, mut no_number) = (String::new(), 0, 0, 0);
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let record: EvalRecord = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a `trainer eval` record",
                args.eval.display(),
                i + 1
            )
        })?;
        if record.truncated {
            truncated += 1;
            continue;
        }
        let Some(answer) = with_strict_format(&record.response) else {
            no_number += 1;
            continue;
        };
        let json = serde_json::json!({"question": record.question, "answer": answer});
        writeln!(out, "{json}").expect("writing to a String");
        kept += 1;
    }
    ensure!(
        kept > 0,
        "{}: no complete answer with a number to learn from",
        args.eval.display()
    );
    write_atomic(&args.out, out.as_bytes())?;
    eprintln!(
        "wrote {kept} targets to {} (left out: {truncated} cut at the token limit, {no_number} without a number)",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinylora::gsm8k::{parse_gold, strict_reward};

    #[test]
    fn targets_end_in_the_strict_format_with_the_answers_own_number() {
        let response = "So she sells 16 - 3 - 4 = 9 eggs, for \\(\\boxed{1,800}\\).  \n";
        let target = with_strict_format(response).unwrap();
        assert!(
            target.ends_with("\\(\\boxed{1,800}\\).\n#### 1800"),
            "{target}"
        );
        assert_eq!(parse_gold(&target).as_deref(), Some("1800"));
        assert_eq!(strict_reward(&target, "1800"), 1.0);
        assert_eq!(with_strict_format("no digits here"), None);
    }
}
