//! `trainer`: the native command-line front end of tinylora.

mod cmd;
mod hub;
mod rollout;
mod run;
mod toy;

use clap::{Parser, Subcommand};

/// Train, evaluate and run TinyLoRA adapters on Qwen2/Qwen2.5, Qwen3 and Llama 3 models.
#[derive(Parser)]
#[command(name = "trainer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that each compute backend starts and computes correctly.
    Devices(cmd::devices::Args),
    /// Print the logits of the last position of a token sequence.
    Logits(cmd::logits::Args),
    /// Continue a prompt with the model (greedy or sampled).
    Generate(cmd::generate::Args),
    /// Export an adapter as a PEFT LoRA, merged weights or a compact link.
    Export(cmd::export::Args),
    /// GSM8K accuracy under the strict reward (greedy decoding).
    Eval(cmd::eval::Args),
    /// Supervised targets in the strict format from a model's own answers (`trainer eval`'s).
    Distill(cmd::distill::Args),
    /// Train a TinyLoRA adapter with GRPO on GSM8K (see assets/configs/).
    Train(run::training::RunArgs),
    /// Train a TinyLoRA adapter on the reference solutions (supervised baseline).
    Sft(run::training::RunArgs),
    /// Accuracy against the number of trained parameters (GRPO runs over sizes and seeds).
    Sweep(run::sweep::SweepArgs),
    /// Make the toy GSM data, tokenizer and model from scratch (the bundled default).
    Pretrain(toy::pretrain::PretrainArgs),
    /// Prefill/decode speed, memory, adapter basis time, bandwidth limit (and candle's numbers).
    Bench(cmd::bench::Args),
    /// Write a Qwen2.5-shaped model with random weights (for benchmarks).
    RandomModel(cmd::random_model::Args),
}

/// Runs `command` on a thread of rayon's pool, with the main thread's 8 MiB of stack, so that
/// the parallel products it starts (about 170 per decoded token of a 0.5B model) begin on the
/// calling thread, instead of waking a pool thread and sleeping until the pool is done
/// (BENCHMARKS.md has the measurement).
fn on_pool<R: Send>(command: impl FnOnce() -> R + Send) -> R {
    // Nothing has used the pool yet, so this sets it up; were it set up, it keeps its settings.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    rayon::scope(|_| command())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = on_pool(|| match cli.command {
        Command::Devices(args) => cmd::devices::run(args),
        Command::Logits(args) => cmd::logits::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Distill(args) => cmd::distill::run(args),
        Command::Train(args) => run::grpo::train(args),
        Command::Sft(args) => run::sft::sft(args),
        Command::Pretrain(args) => toy::pretrain::pretrain(args),
        Command::Sweep(args) => run::sweep::sweep(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::RandomModel(args) => cmd::random_model::run(args),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.is::<run::interrupt::Interrupted>() => {
            eprintln!("{err}");
            std::process::ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
