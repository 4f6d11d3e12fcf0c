//! `trainer export`: turn an adapter into what other tools load: a PEFT LoRA directory, merged
//! Hugging Face weights, the compact text form for a URL, and the basis file that lets the page
//! (or `--basis`) skip the SVDs and carries factors that cannot be recomputed (PEFT's), and
//! the base model with one LoRA per trainable float for llama.cpp's server.

use std::path::PathBuf;

use anyhow::{Result, bail};
use tinylora::adapter::basis::{Basis, fingerprint};
use tinylora::adapter::export::{export_merged, export_peft_lora};
use tinylora::adapter::peft::is_peft_dir;
use tinylora::fsutil::write_atomic;
use tinylora::readback::block_on;

use super::common::{ModelArgs, TokenizerArgs, load_adapter};
use tinylora::adapter::llama_server::{MODEL_FILE, export_llama_server};
use tinylora::weights::safetensors::Dtype;

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
    /// The merged model's weight type: f32, bf16 or f16 (rounded to nearest).
    #[arg(long, default_value = "f32", requires = "merged")]
    dtype: Dtype,
    /// Print the adapter's compact text form (for `#adapter=` links).
    #[arg(long)]
    compact: bool,
    /// Write `model.gguf` (the base, f32) and `lora-NNN.gguf` (one LoRA per trainable float)
    /// into this directory for llama.cpp's `llama-server`, and print its arguments.
    #[arg(long)]
    llama_server: Option<PathBuf>,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
}

/// Writes each requested export.
pub fn run(mut args: Args) -> Result<()> {
    let Some(path) = args.model.adapter.take() else {
        bail!("--adapter is required");
    };
    let basis_out = args.model.basis.take();
    let chosen = [
        args.peft_lora.is_some(),
        args.merged.is_some(),
        args.compact,
    ];
    if !chosen.contains(&true) && basis_out.is_none() && args.llama_server.is_none() {
        bail!(
            "choose at least one of --peft-lora DIR, --merged DIR, --compact, --basis FILE, \
             --llama-server DIR"
        );
    }
    let loaded = args.model.load()?;
    let tokenizer_path = args.tokenizer.tokenizer.unwrap_or(loaded.tokenizer_path);
    let mut model = loaded.model;
    let adapter = load_adapter(&path, None, &mut model)?;
    // Before any merge: merging and unmerging need not give back the same bits.
    let print = block_on(fingerprint(&model, &adapter.config.targets))?;
    if let Some(file) = &basis_out {
        write_atomic(file, &adapter.basis.to_file_bytes(&adapter.config, &print)?)?;
        eprintln!(
            "wrote the basis ({} modules, r = {}) to {}",
            adapter.basis.modules.len(),
            adapter.config.r,
            file.display()
        );
    }
    if args.compact && basis_out.is_none() && is_peft_dir(&path) {
        let ours = block_on(Basis::compute(&model, &adapter.config))?;
        if ours.hash() != adapter.basis.hash() {
            bail!(
                "{}: this PEFT adapter's frozen factors come from torch's RNG and SVD and cannot be \
                 recomputed from a link; add --basis FILE and publish the file beside the link \
                 (the page takes #adapter=tl1.…&basis=URL)",
                path.display()
            );
        }
    }
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
        block_on(export_merged(
            &model,
            &adapter.current_mixes(&model)?,
            dir,
            args.dtype,
        ))?;
        eprintln!("wrote merged weights to {}", dir.display());
    }
    if let Some(dir) = &args.llama_server {
        let json = tinylora::fsutil::read_text(&tokenizer_path)?;
        let loras = block_on(export_llama_server(
            &model,
            &json,
            &tokenizer_path,
            &adapter,
            dir,
        ))?;
        eprintln!(
            "wrote {} and {} LoRA files (one per trainable float) to {}; serve them with:",
            MODEL_FILE,
            loras.len(),
            dir.display()
        );
        // Comma-separated LoRAs (llama-server keeps only the last of repeated --lora);
        // exact f32 attention and KV cache keep its log-probs within 1e-5 of the trainer's
        // (CPU flash attention rounds to f16: ~1e-3).
        let files: Vec<String> = loras.iter().map(|l| l.display().to_string()).collect();
        let line = format!(
            "llama-server -m {} --lora {} --lora-init-without-apply -fa off \
             --cache-type-k f32 --cache-type-v f32 --port 8080",
            dir.join(MODEL_FILE).display(),
            files.join(",")
        );
        println!("{line}");
    }
    if args.compact {
        println!("{}", adapter.to_file(print).to_compact());
    }
    Ok(())
}
