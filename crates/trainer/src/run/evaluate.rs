//! GSM8K accuracy under the strict reward with greedy decoding, as the paper evaluates (and
//! under the flexible rule beside it, to tell format from arithmetic): used by `trainer eval`
//! and by training runs on their held-out set.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};
use tinylora::generate::{GenerateConfig, generate};
use tinylora::gsm8k::{Problem, flexible_reward, strict_reward};
use tinylora::model::{CausalLm, Mixes};
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;
use tinylora::tokenizer::Tokenizer;

/// What an evaluation found.
pub struct Evaluation {
    /// Problems answered correctly by the strict rule (`#### N`).
    pub correct: usize,
    /// Problems whose last number is the gold answer (the flexible rule).
    pub flexible_correct: usize,
    /// Responses that hit the new-token limit.
    pub truncated: usize,
    /// Problems evaluated.
    pub n: usize,
    /// One record per problem: index, question, gold, response, correct, flexible_correct,
    /// response_tokens, truncated.
    pub records: Vec<Value>,
}

impl Evaluation {
    /// `correct / n`.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }

    /// Writes the per-problem records as JSONL, atomically.
    pub fn write_records(&self, path: &Path) -> Result<()> {
        let text: String = self.records.iter().map(|r| format!("{r}\n")).collect();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        tinylora::fsutil::write_atomic(path, text.as_bytes())?;
        Ok(())
    }
}

/// Greedy answers to `problems` by `model` with the adapter at `mixes`, in batches of
/// `batch_size`; `on_batch(so_far)` after each.
pub fn evaluate(
    model: &CausalLm,
    mixes: &Mixes,
    tokenizer: &Tokenizer,
    problems: &[Problem],
    batch_size: usize,
    max_new_tokens: usize,
    mut on_batch: impl FnMut(&Evaluation) -> Result<()>,
) -> Result<Evaluation> {
    let config = GenerateConfig {
        max_new_tokens,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        stop_tokens: tokenizer.stop_tokens(&model.config.eos_token_ids),
    };
    let mut out = Evaluation {
        correct: 0,
        flexible_correct: 0,
        truncated: 0,
        n: 0,
        records: Vec::with_capacity(problems.len()),
    };
    for batch in problems.chunks(batch_size.max(1)) {
        let prompts = batch
            .iter()
            .map(|p| tokenizer.gsm8k_prompt(&p.question))
            .collect::<tinylora::Result<Vec<_>>>()?;
        let generations = block_on(generate(model, mixes, &prompts, &config, |_, _| {}))?;
        for (problem, generation) in batch.iter().zip(generations) {
            let response = tokenizer.decode(&generation.tokens)?;
            let correct = strict_reward(&response, &problem.gold) == 1.0;
            let flexible = flexible_reward(&response, &problem.gold) == 1.0;
            let truncated = !generation.stopped;
            out.correct += usize::from(correct);
            out.flexible_correct += usize::from(flexible);
            out.truncated += usize::from(truncated);
            out.records.push(json!({
                "index": out.n,
                "question": problem.question,
                "gold": problem.gold,
                "response": response,
                "correct": correct,
                "flexible_correct": flexible,
                "response_tokens": generation.tokens.len(),
                "truncated": truncated,
            }));
            out.n += 1;
        }
        on_batch(&out)?;
    }
    Ok(out)
}
