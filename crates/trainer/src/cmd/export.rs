//! `trainer export`: turn an adapter into what other tools load: a PEFT LoRA directory, merged
//! Hugging Face weights, or the compact text form for a URL.

use std::path::PathBuf;

use anyhow::{Result, bail};
use tinylora::adapter::basis::fingerprint;
use tinylora::adapter::export::{export_merged, export_peft_lora};
use tinylora::readback::block_on;

use super::common::{ModelArgs, load_adapter};

/// Arguments of `trainer export`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Write a standard PEFT LoRA (rank r) into this directory.
    #[arg(long)]
    peft_lora: Option<PathBuf>,
    /// Write the merged model (config.json + model.safetensors) into this directory.
    #[arg(long)]
    merged: Option<PathBuf>,
    /// Print the adapter's compact text form (for `#adapter=` links).
    #[arg(long)]
    compact: bool,
}

/// Writes each requested export.
pub fn run(mut args: Args) -> Result<()> {
    let Some(path) = args.model.adapter.take() else {
        bail!("--adapter is required");
    };
    if args.peft_lora.is_none() && args.merged.is_none() && !args.compact {
        bail!("choose at least one of --peft-lora DIR, --merged DIR, --compact");
    }
    let mut model = args.model.load()?.model;
    let adapter = load_adapter(&path, &mut model)?;
    if let Some(dir) = &args.peft_lora {
        export_peft_lora(&adapter, dir)?;
        eprintln!(
            "wrote PEFT LoRA (r = {}) to {}",
            adapter.config.r,
            dir.display()
        );
    }
    if let Some(dir) = &args.merged {
        adapter.attach(&mut model)?;
        block_on(export_merged(&mut model, dir))?;
        eprintln!("wrote merged weights to {}", dir.display());
    }
    if args.compact {
        let print = block_on(fingerprint(&mut model, &adapter.config.targets))?;
        println!("{}", adapter.to_file(print).to_compact());
    }
    Ok(())
}
