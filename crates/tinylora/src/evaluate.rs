//! GSM8K accuracy under the strict reward with greedy decoding, as the paper evaluates, and
//! under the flexible rule beside it (to tell the format from the arithmetic): the one
//! evaluation loop of `trainer eval`, training runs' held-out checks and the page.

use std::path::Path;

use serde::Serialize;

use crate::Result;
use crate::generate::{GenerateConfig, Generation, generate_until};
use crate::gsm8k::{Problem, flexible_reward, strict_reward};
use crate::model::{CausalLm, Mixes};
use crate::sampling::SamplingConfig;
use crate::tokenizer::Tokenizer;

/// One problem's greedy answer and how it scored.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The problem's position in the evaluated slice.
    pub index: usize,
    /// The question.
    pub question: String,
    /// The gold answer.
    pub gold: String,
    /// The decoded response.
    pub response: String,
    /// Right by the strict rule (`#### N`).
    pub correct: bool,
    /// Right by the flexible rule (the last number).
    pub flexible_correct: bool,
    /// Tokens in the response.
    pub response_tokens: usize,
    /// The response hit the new-token limit.
    pub truncated: bool,
}

/// What an evaluation found so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evaluation {
    /// Problems right by the strict rule.
    pub correct: usize,
    /// Problems right by the flexible rule.
    pub flexible_correct: usize,
    /// Responses that hit the new-token limit.
    pub truncated: usize,
    /// Problems answered.
    pub n: usize,
    /// One answer per problem, in order.
    pub answers: Vec<Answer>,
}

impl Evaluation {
    /// `correct / n` (0 before any answer).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }

    /// `flexible_correct / n` (0 before any answer).
    pub fn flexible_accuracy(&self) -> f64 {
        self.flexible_correct as f64 / self.n.max(1) as f64
    }

    /// Scores `generation`, the response to `problem`, and adds it.
    fn add(
        &mut self,
        problem: &Problem,
        generation: Generation,
        tokenizer: &Tokenizer,
    ) -> Result<()> {
        let response = tokenizer.decode(&generation.tokens)?;
        let answer = Answer {
            index: self.n,
            question: problem.question.clone(),
            gold: problem.gold.clone(),
            correct: strict_reward(&response, &problem.gold) == 1.0,
            flexible_correct: flexible_reward(&response, &problem.gold) == 1.0,
            response_tokens: generation.tokens.len(),
            truncated: !generation.stopped,
            response,
        };
        self.correct += usize::from(answer.correct);
        self.flexible_correct += usize::from(answer.flexible_correct);
        self.truncated += usize::from(answer.truncated);
        self.n += 1;
        self.answers.push(answer);
        Ok(())
    }

    /// Writes the answers as JSONL (one [`Answer`] per line), atomically.
    pub fn write_records(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for answer in &self.answers {
            text.push_str(&serde_json::to_string(answer).expect("answers serialise"));
            text.push('\n');
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| crate::Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// How to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct EvalConfig {
    /// Problems decoded together.
    pub batch_size: usize,
    /// Most new tokens per response.
    pub max_new_tokens: usize,
}

/// Greedy answers to `problems` by `model` with the adapter at `mixes`, in batches;
/// `on_batch(so_far)` after each batch. Once `cancelled` returns true (asked before every
/// decoding step) the batch in flight is dropped and the evaluation so far returned.
pub async fn evaluate(
    model: &CausalLm,
    mixes: &Mixes,
    tokenizer: &Tokenizer,
    problems: &[Problem],
    config: EvalConfig,
    mut on_batch: impl FnMut(&Evaluation) -> Result<()>,
    mut cancelled: impl FnMut() -> bool,
) -> Result<Evaluation> {
    let generation = GenerateConfig {
        max_new_tokens: config.max_new_tokens,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        stop_tokens: tokenizer.stop_tokens(&model.config.eos_token_ids),
    };
    let mut out = Evaluation {
        answers: Vec::with_capacity(problems.len()),
        ..Evaluation::default()
    };
    for batch in problems.chunks(config.batch_size.max(1)) {
        let prompts = batch
            .iter()
            .map(|p| tokenizer.gsm8k_prompt(&p.question))
            .collect::<Result<Vec<_>>>()?;
        let generations = generate_until(
            model,
            mixes,
            &prompts,
            &generation,
            |_, _| {},
            &mut cancelled,
        )
        .await?;
        if cancelled() {
            break;
        }
        for (problem, generation) in batch.iter().zip(generations) {
            out.add(problem, generation, tokenizer)?;
        }
        on_batch(&out)?;
    }
    Ok(out)
}
