//! Arguments and loading steps shared by several subcommands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tinylora::adapter::TinyLora;
use tinylora::adapter::file::AdapterFile;
use tinylora::adapter::peft::{is_peft_dir, load_peft_tinylora};
use tinylora::device::{BackendKind, init};
use tinylora::model::load::LoadOptions;
use tinylora::model::{CausalLm, Mixes};
use tinylora::quant::WeightFormat;
use tinylora::readback::block_on;
use tinylora::tokenizer::{ChatTemplate, Tokenizer};
use tinylora::weights::safetensors::SafetensorsFile;

/// Which model to load and where to run it.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A model directory (config.json + safetensors) or a .gguf file; when no such path
    /// exists, `OWNER/NAME[/FILE][@REVISION]` on the Hugging Face hub (downloaded into its cache).
    #[arg(long)]
    pub model: PathBuf,
    /// Compute backend: cpu (burn flex) or wgpu.
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// `as-stored` (GGUF blocks stay blocks, on the CPU and on the GPU; other matrices f32)
    /// or `q8` (f16/bf16/f32 matrices quantised to Q8_0 at load).
    #[arg(long, default_value = "as-stored")]
    pub weights: WeightFormat,
    /// A TinyLoRA adapter: our JSON or compact file, or a PEFT TinyLoRA directory.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The adapter's basis file (`trainer export --basis`): its frozen factors are read from
    /// it instead of recomputed. `trainer export` writes this file instead.
    #[arg(long, requires = "adapter")]
    pub basis: Option<PathBuf>,
}

/// Where the tokenizer comes from.
#[derive(clap::Args)]
pub struct TokenizerArgs {
    /// tokenizer.json (default: next to the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// A loaded model and the folder it came from.
pub struct LoadedModel {
    /// The model, on the chosen device.
    pub model: CausalLm,
    /// The mixes of `--adapter` at its `v` ([`Mixes::none`] without one): what every forward
    /// pass is given.
    pub mixes: Mixes,
    /// Where `tokenizer.json` is looked for by default.
    pub tokenizer_path: PathBuf,
    /// The model's chat template.
    pub chat_template: ChatTemplate,
}

impl ModelArgs {
    /// Starts the backend and loads the model.
    pub fn load(&self) -> Result<LoadedModel> {
        if let (WeightFormat::Q8_0, Some(adapter)) = (self.weights, &self.adapter) {
            bail!(
                "{}: --weights q8 with an adapter: an adapter is bound to its base model's \
                 stored values (fingerprint and basis), which rounding to Q8_0 changes; load \
                 the model as stored to apply it",
                adapter.display()
            );
        }
        let device = init(self.backend)?;
        let checkpoint = crate::hub::open(&self.model)?;
        let tokenizer_path = checkpoint.tokenizer_path();
        let chat_template = checkpoint.chat_template.clone();
        let options = LoadOptions {
            weights: self.weights,
            ..LoadOptions::default()
        };
        let mut model = checkpoint
            .load_with(&device, &options)
            .with_context(|| format!("loading {}", self.model.display()))?;
        let mut mixes = Mixes::none();
        if let Some(path) = &self.adapter {
            let adapter = load_adapter(path, self.basis.as_deref(), &mut model)?;
            eprintln!(
                "adapter {}: {} trainable parameters ({} vector(s) of u = {} over {} modules)",
                path.display(),
                adapter.trainable_count(),
                adapter.basis.groups,
                adapter.config.u,
                adapter.basis.modules.len()
            );
            adapter.attach(&mut model)?;
            mixes = adapter.current_mixes(&model)?;
        }
        Ok(LoadedModel {
            model,
            mixes,
            tokenizer_path,
            chat_template,
        })
    }
}

/// Reads an adapter for `model`: a PEFT TinyLoRA directory, or our adapter file (JSON or
/// compact form), whose base fingerprint and basis hash are checked; its frozen factors come
/// from `basis` (a basis file) when given, else they are recomputed.
pub fn load_adapter(path: &Path, basis: Option<&Path>, model: &mut CausalLm) -> Result<TinyLora> {
    if is_peft_dir(path) {
        if let Some(basis) = basis {
            bail!(
                "{}: a PEFT directory carries its own factors; --basis {} is for adapter files",
                path.display(),
                basis.display()
            );
        }
        return Ok(load_peft_tinylora(path, model)?);
    }
    let file = AdapterFile::load(path)?;
    adapter_from_file(&file, path, basis, model)
}

/// The adapter in `file` (read from `origin`) on `model`, its frozen factors read from the basis
/// file `basis` when given, else recomputed.
pub fn adapter_from_file(
    file: &AdapterFile,
    origin: &Path,
    basis: Option<&Path>,
    model: &mut CausalLm,
) -> Result<TinyLora> {
    Ok(match basis {
        None => {
            // The basis is the slow part on a real model (a 0.5B model's 168 SVDs take
            // minutes): a bar on a terminal, layer by layer.
            let bar = std::io::stderr().is_terminal().then(|| {
                ProgressBar::new(0).with_style(
                    ProgressStyle::with_template(
                        "adapter basis {bar:30.cyan/blue} {pos}/{len} modules [{elapsed_precise}<{eta_precise}]",
                    )
                    .expect("a valid template"),
                )
            });
            let adapter = block_on(TinyLora::from_file_reporting(
                file,
                model,
                origin,
                None,
                &mut |done, total| {
                    if let Some(bar) = &bar {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    }
                },
            ))?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            adapter
        }
        Some(basis) => {
            let mut basis_file = SafetensorsFile::open(basis)?;
            block_on(TinyLora::from_file_and_basis(
                file,
                model,
                origin,
                &mut basis_file,
                basis,
                None,
            ))?
        }
    })
}

/// Parses `5,77,301` into token ids.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .with_context(|| format!("`{s}` in --ids is not a token id"))
        })
        .collect()
}

/// Loads the tokenizer from `explicit` or from beside the model, with the model's chat
/// template.
pub fn load_tokenizer(explicit: Option<&PathBuf>, loaded: &LoadedModel) -> Result<Tokenizer> {
    let path = explicit.unwrap_or(&loaded.tokenizer_path);
    let tokenizer = Tokenizer::from_file(path).with_context(|| {
        if explicit.is_none() {
            "no tokenizer given: pass --tokenizer FILE or put tokenizer.json next to the model"
                .to_string()
        } else {
            "loading the tokenizer".to_string()
        }
    })?;
    Ok(tokenizer.with_chat_template(loaded.chat_template.clone()))
}
