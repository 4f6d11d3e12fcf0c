//! `trainer pretrain`: the bundled toy model, made from nothing. Writes toy GSM data
//! (`train.jsonl`, `test.jsonl`), trains a byte-level BPE tokenizer on rendered chat examples,
//! then trains a small Qwen2-architecture model from random weights (every parameter, burn
//! autodiff, AdamW) to write the worked solutions — in mixed answer styles — after the paper's
//! GSM8K prompt. The folder it writes loads like any Hugging Face Qwen2 checkpoint.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::full_adamw::FullAdamW;
use anyhow::{Context, Result, ensure};
use serde_json::json;
use sha2::{Digest, Sha256};
use tinylora::device::{BackendKind, init};
use tinylora::evaluate::{EvalConfig, evaluate};
use tinylora::fsutil::write_atomic;
use tinylora::grpo::{Denominators, LossType, completion_logprobs, reduce};
use tinylora::gsm8k::{BadLines, load_jsonl, prompt};
use tinylora::model::{CausalLm, Mixes, ModelConfig};
use tinylora::optim::AdamWConfig;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::rng::SplitMix64;
use tinylora::tokenizer::ChatTemplate;
use tinylora::tokenizer::Tokenizer;
use tinylora::weights::safetensors;

use super::bpe::train_tokenizer;
use super::corpus::{ToyProblem, draw_style, jsonl};
use crate::run::progress::Progress;
use tinylora::train::config::Schedule;
use tinylora::train::schedule::learning_rate;

/// Arguments of `trainer pretrain` (the defaults made the bundled model).
#[derive(clap::Args, Clone, serde::Serialize)]
pub struct PretrainArgs {
    /// Output folder (config.json, model.safetensors, tokenizer.json, data, manifest.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of everything: data, tokenizer corpus, initial weights, batches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (5% warm-up, cosine decay to zero).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Fraction of worked solutions that end in `#### N` (the rest end in prose).
    #[arg(long, default_value_t = 0.3)]
    pub hash_fraction: f64,
    /// Tokenizer vocabulary size.
    #[arg(long, default_value_t = 512)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 128)]
    pub hidden_size: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Query heads (key/value heads are half as many).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Width of the SwiGLU MLP.
    #[arg(long, default_value_t = 384)]
    pub intermediate_size: usize,
    /// Toy problems in train.jsonl (for GRPO) and test.jsonl (held out).
    #[arg(long, default_value_t = 2000)]
    pub train_problems: usize,
    /// Held-out problems in test.jsonl.
    #[arg(long, default_value_t = 500)]
    pub test_problems: usize,
    /// Held-out problems the final report evaluates.
    #[arg(long, default_value_t = 200)]
    pub eval_problems: usize,
    /// Compute backend: cpu or wgpu.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

/// A pretraining example: the chat prompt and the styled solution with `<|im_end|>`.
fn example(rng: &mut SplitMix64, hash_fraction: f64) -> (String, String) {
    let problem = ToyProblem::generate(rng);
    let style = draw_style(rng, hash_fraction);
    // The toy model speaks Qwen2.5's template.
    let prompt = prompt(&ChatTemplate::Qwen25, &problem.question).expect("the built-in template");
    (prompt, problem.solution(style))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Strict and flexible greedy accuracy on the first `n` problems of `data`.
fn report(model: &CausalLm, tokenizer: &Tokenizer, data: &Path, n: usize) -> Result<(f64, f64)> {
    let (mut problems, _) = load_jsonl(data, BadLines::Fatal)?;
    problems.truncate(n);
    let config = EvalConfig {
        batch_size: 32,
        max_new_tokens: 96,
    };
    let evaluation = block_on(evaluate(
        model,
        &Mixes::none(),
        tokenizer,
        &problems,
        config,
        |_| Ok(()),
        || false,
    ))?;
    Ok((evaluation.accuracy(), evaluation.flexible_accuracy()))
}

/// Runs `trainer pretrain`.
pub fn pretrain(args: PretrainArgs) -> Result<()> {
    ensure!(
        args.steps > 0 && args.batch_size > 0,
        "--steps and --batch-size must be at least 1"
    );
    ensure!(
        (0.0..=1.0).contains(&args.hash_fraction),
        "--hash-fraction must be in [0, 1]"
    );
    let started = Instant::now();
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    // Data for GRPO and evaluation, disjoint.
    let train = jsonl(
        args.seed.wrapping_add(1),
        args.train_problems,
        &HashSet::new(),
    );
    let train_questions: HashSet<String> = train
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(String::from))
        .collect();
    let test = jsonl(
        args.seed.wrapping_add(2),
        args.test_problems,
        &train_questions,
    );
    write_atomic(&out.join("train.jsonl"), train.as_bytes())?;
    write_atomic(&out.join("test.jsonl"), test.as_bytes())?;

    // Tokenizer.
    let mut rng = SplitMix64::new(args.seed.wrapping_add(3));
    let texts: Vec<String> = (0..4000)
        .map(|_| {
            let (p, s) = example(&mut rng, args.hash_fraction);
            format!("{p}{s}<|im_end|>")
        })
        .collect();
    let tokenizer_json = train_tokenizer(&texts, args.vocab_size)?;
    write_atomic(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let tokenizer = Tokenizer::from_bytes(tokenizer_json.as_bytes(), &out.join("tokenizer.json"))?;
    let im_end = tokenizer
        .token_id("<|im_end|>")
        .context("the trained tokenizer has no <|im_end|>")?;

    // Model.
    let config = ModelConfig {
        max_position_embeddings: 512,
        eos_token_ids: vec![im_end],
        ..ModelConfig::qwen2(
            tokenizer.inner().get_vocab_size(true),
            args.hidden_size,
            args.intermediate_size,
            args.layers,
            args.heads,
            (args.heads / 2).max(1),
            10_000.0,
            true,
        )
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("model shape: {e}"))?;
    let backend: BackendKind = args.backend.parse()?;
    let device = init(backend)?.autodiff();
    let mut model = CausalLm::init_random(&config, args.seed, 0.02, &device)?;
    let mut optimizer = FullAdamW::new(
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        &mut model,
    )?;
    let warmup = args.steps / 20;
    let progress = Progress::new(0, args.steps, "pretrain");
    let mut losses = Vec::with_capacity(args.steps);
    let mut batches = SplitMix64::new(args.seed.wrapping_add(4));
    for step in 0..args.steps {
        let mut prompts = Vec::with_capacity(args.batch_size);
        let mut targets = Vec::with_capacity(args.batch_size);
        for _ in 0..args.batch_size {
            let (p, s) = example(&mut batches, args.hash_fraction);
            prompts.push(tokenizer.encode(&p)?);
            let mut t = tokenizer.encode(&s)?;
            t.push(im_end);
            targets.push(t);
        }
        let denominators = Denominators::of(targets.iter().map(Vec::len), 0);
        let (logp, mask) = completion_logprobs(&model, &Mixes::none(), &prompts, &targets, 1.0);
        let loss = -reduce(logp, mask, LossType::Dapo, &denominators);
        let grads = loss.backward();
        let loss = f64::from(block_on(to_vec_f32(loss))?[0]);
        ensure!(
            loss.is_finite(),
            "step {}: the loss is {loss}; lower --lr",
            step + 1
        );
        let lr = learning_rate(args.lr, step, args.steps, warmup, Schedule::Cosine);
        optimizer.step(&mut model, &grads, lr)?;
        losses.push(loss);
        let recent = &losses[losses.len().saturating_sub(20)..];
        progress.step(
            step + 1,
            &format!(
                "loss {:.4} lr {lr:.2e}",
                recent.iter().sum::<f64>() / recent.len() as f64
            ),
        );
    }
    progress.finish();

    // Weights, config, report.
    let mut tensors = Vec::new();
    for (name, shape, t) in model.named_tensors(&Mixes::none()) {
        tensors.push((name, shape, block_on(to_vec_f32(t))?));
    }
    let weights = safetensors::to_bytes(&tensors)?;
    write_atomic(&out.join("model.safetensors"), &weights)?;
    write_atomic(
        &out.join("config.json"),
        config.to_hf_json().map_err(anyhow::Error::msg)?.as_bytes(),
    )?;
    let inference = init(backend)?;
    let reloaded = tinylora::checkpoint::Checkpoint::open(out)?.load(&inference)?;
    let (strict, flexible) = report(
        &reloaded,
        &tokenizer,
        &out.join("test.jsonl"),
        args.eval_problems,
    )?;
    let tail = &losses[losses.len().saturating_sub(50)..];
    let manifest = json!({
        "what": "toy GSM model made by `trainer pretrain`; regenerate with the command below",
        "command": format!(
            "trainer pretrain --out {} --seed {} --steps {} --batch-size {} --lr {} --hash-fraction {} --vocab-size {} --hidden-size {} --layers {} --heads {} --intermediate-size {} --train-problems {} --test-problems {} --eval-problems {} --backend {}",
            out.display(), args.seed, args.steps, args.batch_size, args.lr, args.hash_fraction,
            args.vocab_size, args.hidden_size, args.layers, args.heads, args.intermediate_size,
            args.train_problems, args.test_problems, args.eval_problems, args.backend
        ),
        "args": args,
        "parameters": tensors.iter().map(|(_, s, _)| s.iter().product::<usize>()).sum::<usize>(),
        "sha256": {
            "model.safetensors": sha256_hex(&weights),
            "tokenizer.json": sha256_hex(tokenizer_json.as_bytes()),
            "train.jsonl": sha256_hex(train.as_bytes()),
            "test.jsonl": sha256_hex(test.as_bytes()),
        },
        "final_loss": tail.iter().sum::<f64>() / tail.len() as f64,
        "held_out": {"problems": args.eval_problems, "strict_accuracy": strict, "flexible_accuracy": flexible},
        "seconds": started.elapsed().as_secs_f64(),
    });
    write_atomic(
        &out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    println!(
        "wrote {}: {} parameters, loss {:.4}, held-out strict accuracy {:.1}%, flexible {:.1}% ({:.0} s)",
        out.display(),
        manifest["parameters"],
        manifest["final_loss"].as_f64().unwrap_or(f64::NAN),
        100.0 * strict,
        100.0 * flexible,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
