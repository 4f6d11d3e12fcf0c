//! `trainer random-model`: a Qwen2.5-shaped checkpoint with random weights (config.json +
//! model.safetensors, f32 or the bf16/f16 real checkpoints ship in), for benchmarks on
//! machines without a real model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tinylora::adapter::export::export_merged;
use tinylora::device::{BackendKind, init};
use tinylora::model::{CausalLm, Mixes, ModelConfig};
use tinylora::readback::block_on;
use tinylora::weights::safetensors::Dtype;

/// Arguments of `trainer random-model`.
#[derive(clap::Args)]
pub struct Args {
    /// The shape: 0.5b or 1.5b (Qwen2.5-0.5B / 1.5B-Instruct's config), or toy (assets/toy).
    #[arg(long, default_value = "0.5b")]
    shape: String,
    /// Weight seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Weight type: f32, bf16 (as Qwen's checkpoints are published) or f16.
    #[arg(long, default_value = "f32")]
    dtype: Dtype,
}

/// The config of a named shape.
pub fn shape_config(shape: &str) -> Result<ModelConfig> {
    let (hidden, inter, layers, heads) = match shape {
        "0.5b" => (896, 4864, 24, 14),
        "1.5b" => (1536, 8960, 28, 12),
        "toy" => (128, 384, 4, 4),
        other => bail!("unknown shape `{other}`: use 0.5b, 1.5b or toy"),
    };
    let toy = shape == "toy";
    Ok(ModelConfig {
        max_position_embeddings: if toy { 512 } else { 32768 },
        eos_token_ids: vec![if toy { 2 } else { 151645 }],
        ..ModelConfig::qwen2(
            if toy { 485 } else { 151936 },
            hidden,
            inter,
            layers,
            heads,
            2,
            if toy { 10000.0 } else { 1e6 },
            true,
        )
    })
}

/// Writes the random checkpoint.
pub fn run(args: Args) -> Result<()> {
    let config = shape_config(&args.shape)?;
    let device = init(BackendKind::Cpu)?;
    let model = CausalLm::init_random(&config, args.seed, 0.02, &device)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    block_on(export_merged(&model, &Mixes::none(), &args.out, args.dtype))?;
    eprintln!(
        "wrote {} ({} shape, random {:?} weights, seed {})",
        args.out.display(),
        args.shape,
        args.dtype,
        args.seed
    );
    Ok(())
}
