//! `trainer sft`: the supervised baseline (`docs/reference.md` §5.3) — next-token prediction of
//! the reference solutions (GSM8K's worked answers ending in `#### N`, then `<|im_end|>`) after
//! the same chat prompt as GRPO, through the same adapter, optimizer, schedule and checkpoints.
//! `sft.last_line_weight` weighs the answer line (`#### N`) and `<|im_end|>` against the
//! rest of the solution.

use anyhow::{Result, bail};
use serde_json::json;
use tinylora::readback::block_on;
use tinylora::sft::{SftUpdateConfig, sft_update};
use tinylora::tokenizer::Tokenizer;
use tinylora::train::config::SftSection;

use super::state::RunKind;
use super::training::{RunArgs, StepReport, TrainingRun};

/// The token that ends an assistant turn in the chat template: `<|im_end|>`, else the
/// config's first eos (not `<|endoftext|>`, which ends documents, not turns).
fn end_of_turn(tokenizer: &Tokenizer, config_eos: &[u32]) -> Option<u32> {
    tokenizer
        .token_id("<|im_end|>")
        .or_else(|| config_eos.first().copied())
}

/// `solution` split before its last line: (the lines before, `\n` + the last line).
fn split_last_line(solution: &str) -> (&str, &str) {
    let text = solution.trim_end();
    text.split_at(text.rfind('\n').unwrap_or(0))
}

/// The target tokens of `solution` (cut to `sft.max_target_tokens`, then `end`) and, when
/// `sft.last_line_weight` is not 1, each token's weight: the last line's tokens and `end`
/// weigh `last_line_weight`, the others 1.
fn weighted_target(
    tokenizer: &Tokenizer,
    solution: &str,
    end: u32,
    sft: &SftSection,
) -> Result<(Vec<u32>, Option<Vec<f32>>)> {
    let limit = sft.max_target_tokens.saturating_sub(1);
    if sft.last_line_weight == 1.0 {
        let mut target = tokenizer.encode(solution)?;
        target.truncate(limit);
        target.push(end);
        return Ok((target, None));
    }
    let (before, last_line) = split_last_line(solution);
    let mut target = tokenizer.encode(before)?;
    let plain = target.len().min(limit);
    target.extend(tokenizer.encode(last_line)?);
    target.truncate(limit);
    target.push(end);
    let weights = (0..target.len())
        .map(|i| if i < plain { 1.0 } else { sft.last_line_weight })
        .collect();
    Ok((target, Some(weights)))
}

/// Runs `trainer sft`.
pub fn sft(args: RunArgs) -> Result<()> {
    let mut session = TrainingRun::start(&args, RunKind::Sft)?;
    let config = session.config.clone();
    let sft = config.sft.clone();
    let Some(end) = end_of_turn(&session.tokenizer, &session.model.config.eos_token_ids) else {
        bail!("the tokenizer has no <|im_end|> and the model config no eos_token_id");
    };
    let mut pairs = Vec::new();
    for p in std::mem::take(&mut session.train_problems) {
        let prompt = session.tokenizer.gsm8k_prompt(&p.question)?;
        if prompt.len() <= config.data.max_prompt_tokens {
            let target = weighted_target(&session.tokenizer, &p.solution, end, &sft)?;
            pairs.push((prompt, target));
        }
    }
    let (total, per_epoch) = config.plan_steps(pairs.len(), sft.batch_size, &config.data.train)?;
    eprintln!(
        "{} problems, {per_epoch} steps per epoch, {total} steps",
        pairs.len()
    );
    session.drive(total, "sft", |s, step| {
        let lr = config.lr_at(step, total);
        let batch = config.step_items(pairs.len(), sft.batch_size, step);
        let prompts: Vec<Vec<u32>> = batch.iter().map(|&i| pairs[i].0.clone()).collect();
        let targets: Vec<Vec<u32>> = batch.iter().map(|&i| pairs[i].1.0.clone()).collect();
        let weights: Option<Vec<Vec<f32>>> = batch.iter().map(|&i| pairs[i].1.1.clone()).collect();
        let update = SftUpdateConfig {
            micro_batch: sft.micro_batch,
            lr,
            max_grad_norm: config.optim.max_grad_norm,
        };
        let stats = block_on(sft_update(
            &s.model,
            &mut s.adapter,
            &mut s.optimizer,
            &prompts,
            &targets,
            weights.as_deref(),
            &update,
        ))?;
        Ok(StepReport {
            record: json!({
                "epoch": step / per_epoch,
                "lr": lr,
                "loss": stats.loss,
                "grad_norm": stats.grad_norm,
                "tokens": stats.tokens,
            }),
            summary: format!("loss {:.4}", stats.loss),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn targets_end_with_im_end_not_endoftext() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy/tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).unwrap();
        let im_end = tokenizer.token_id("<|im_end|>").unwrap();
        assert!(tokenizer.token_id("<|endoftext|>").unwrap() < im_end);
        assert_eq!(end_of_turn(&tokenizer, &[7]), Some(im_end));
    }

    #[test]
    fn the_last_line_weighs_what_the_config_says() {
        assert_eq!(
            split_last_line("3 + 4 = 7\nso 7\n#### 7\n"),
            ("3 + 4 = 7\nso 7", "\n#### 7")
        );
        assert_eq!(split_last_line("#### 7"), ("", "#### 7"));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy/tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).unwrap();
        let solution = "3 + 4 = 7\n#### 7";
        let plain = SftSection::default();
        let (whole, none) = weighted_target(&tokenizer, solution, 2, &plain).unwrap();
        assert_eq!(none, None);
        let weighted = SftSection {
            last_line_weight: 20.0,
            ..plain
        };
        let (target, weights) = weighted_target(&tokenizer, solution, 2, &weighted).unwrap();
        let weights = weights.unwrap();
        let before = tokenizer.encode("3 + 4 = 7").unwrap().len();
        assert_eq!(target.len(), weights.len());
        assert_eq!(target.len(), whole.len(), "{target:?} vs {whole:?}");
        assert!(weights[..before].iter().all(|&w| w == 1.0));
        assert!(weights[before..].iter().all(|&w| w == 20.0));
        assert_eq!(target.last(), Some(&2));
    }
}
