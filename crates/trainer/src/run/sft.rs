//! `trainer sft`: the supervised baseline (`docs/reference.md` §5.3) — next-token prediction of
//! the reference solutions (GSM8K's worked answers ending in `#### N`, then `<|im_end|>`) after
//! the same chat prompt as GRPO, through the same adapter, optimizer, schedule and checkpoints.

use anyhow::{Result, bail};
use serde_json::json;
use tinylora::readback::block_on;
use tinylora::sft::{SftUpdateConfig, sft_update};
use tinylora::tokenizer::Tokenizer;

use super::state::RunKind;
use super::training::{RunArgs, StepReport, TrainingRun};

/// The token that ends an assistant turn in the chat template: `<|im_end|>`, else the
/// config's first eos (not `<|endoftext|>`, which ends documents, not turns).
fn end_of_turn(tokenizer: &Tokenizer, config_eos: &[u32]) -> Option<u32> {
    tokenizer
        .token_id("<|im_end|>")
        .or_else(|| config_eos.first().copied())
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
        let question = session.tokenizer.gsm8k_prompt(&p.question)?;
        let mut target = session.tokenizer.encode(&p.solution)?;
        target.truncate(sft.max_target_tokens.saturating_sub(1));
        target.push(end);
        if question.len() <= config.data.max_prompt_tokens {
            pairs.push((question, target));
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
        let targets: Vec<Vec<u32>> = batch.iter().map(|&i| pairs[i].1.clone()).collect();
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
}
