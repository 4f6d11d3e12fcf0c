//! Finding and opening a model on disk: a Hugging Face directory (`config.json` with
//! `model.safetensors` or a sharded index) or a single `.gguf` file.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::model::load::LoadOptions;
use crate::model::{CausalLm, ModelConfig};
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::weights::TensorSource;
use crate::weights::gguf::{GgufFile, GgufSource};
use crate::weights::safetensors::{SafetensorsFile, ShardedSafetensors};
use crate::{Error, Result};

/// The files of a Hugging Face model folder, by name: the one rule by which the trainer (a
/// folder) and the page (a hub, picked files) find a checkpoint's parts.
pub mod files {
    /// The architecture.
    pub const CONFIG: &str = "config.json";
    /// The tokenizer.
    pub const TOKENIZER: &str = "tokenizer.json";
    /// The chat template (and special tokens).
    pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
    /// A sharded checkpoint's index: looked for first, its shards come from it.
    pub const INDEX: &str = "model.safetensors.index.json";
    /// A single-file checkpoint: looked for when there is no index.
    pub const SINGLE: &str = "model.safetensors";

    /// Which file of a checkpoint holds its weights.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Weights {
        /// A GGUF file (config and tokenizer metadata inside).
        Gguf(String),
        /// [`INDEX`], naming its shards.
        Sharded,
        /// One safetensors file beside [`CONFIG`].
        Single(String),
    }

    /// The weights among the file `names` of a folder or of files a visitor picked: with
    /// [`CONFIG`], the sharded [`INDEX`], else [`SINGLE`], else the only `.safetensors` file;
    /// without it, the only `.gguf` file. The error says what is missing or ambiguous.
    pub fn weights_among(names: &[&str]) -> Result<Weights, String> {
        // The one name ending in `suffix`; else the error says there is none or several.
        let only = |suffix: &str, none: String| -> Result<String, String> {
            let mut found: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n.ends_with(suffix))
                .collect();
            found.sort_unstable();
            match found[..] {
                [one] => Ok(one.to_string()),
                [] => Err(none),
                ref many => Err(format!(
                    "several {suffix} files ({}): give the one to load",
                    many.join(", ")
                )),
            }
        };
        if !names.contains(&CONFIG) {
            let none = format!("neither {CONFIG} (with safetensors weights) nor a .gguf file");
            return only(".gguf", none).map(Weights::Gguf);
        }
        if names.contains(&INDEX) {
            Ok(Weights::Sharded)
        } else if names.contains(&SINGLE) {
            Ok(Weights::Single(SINGLE.into()))
        } else {
            let none = format!("{CONFIG} but no {SINGLE}, {INDEX} or other .safetensors file");
            only(".safetensors", none).map(Weights::Single)
        }
    }
}

/// An opened checkpoint: its config, a reader for its tensors and its chat template.
pub struct Checkpoint {
    /// The architecture.
    pub config: ModelConfig,
    /// The model's chat template: `tokenizer_config.json`'s beside the weights, else a GGUF
    /// file's own, else Qwen2.5's.
    pub chat_template: ChatTemplate,
    /// The tensors, by Hugging Face name.
    pub source: Box<dyn TensorSource>,
    /// The folder holding the checkpoint (where `tokenizer.json` is looked for).
    pub dir: PathBuf,
}

impl Checkpoint {
    /// A checkpoint of `config` over `source` held in memory (no folder beside it), speaking
    /// Qwen2.5's chat template until told otherwise.
    pub fn new(config: ModelConfig, source: Box<dyn TensorSource>) -> Self {
        Self {
            config,
            source,
            chat_template: ChatTemplate::default(),
            dir: PathBuf::new(),
        }
    }

    /// Opens `path`: a model directory (its weights found by [`files::weights_among`]), a
    /// `.safetensors` file beside its `config.json`, or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: &str| Error::BadFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if path.is_dir() {
            let listing = std::fs::read_dir(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let names: Vec<String> = listing
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let weights = files::weights_among(&names).map_err(|reason| bad(&reason))?;
            if let files::Weights::Gguf(name) = weights {
                return Self::open(&path.join(name));
            }
            // The config first: its errors are the likelier ones.
            let config = ModelConfig::from_file(&path.join(files::CONFIG))?;
            let source: Box<dyn TensorSource> = match weights {
                files::Weights::Single(name) => Box::new(SafetensorsFile::open(&path.join(name))?),
                _ => Box::new(ShardedSafetensors::open(&path.join(files::INDEX))?),
            };
            return Ok(Self {
                config,
                source,
                chat_template: tokenizer_config_template(path)?.unwrap_or_default(),
                dir: path.to_path_buf(),
            });
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        match path.extension().and_then(|e| e.to_str()) {
            Some("gguf") => {
                let mut file = GgufFile::open(path)?;
                let chat_template = match tokenizer_config_template(&dir)? {
                    Some(template) => Some(template),
                    None => file.chat_template()?,
                };
                Ok(Self {
                    config: file.model_config()?,
                    chat_template: chat_template.unwrap_or_default(),
                    source: Box::new(GgufSource::new(file)),
                    dir,
                })
            }
            Some("safetensors") => Ok(Self {
                config: ModelConfig::from_file(&dir.join(files::CONFIG))?,
                source: Box::new(SafetensorsFile::open(path)?),
                chat_template: tokenizer_config_template(&dir)?.unwrap_or_default(),
                dir,
            }),
            _ if !path.exists() => Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
            _ => Err(bad(
                "not a model: expected a directory with config.json, a .safetensors or a .gguf file",
            )),
        }
    }

    /// The tokenizer at `path` with this model's chat template.
    pub fn tokenizer(&self, path: &Path) -> Result<Tokenizer> {
        Ok(Tokenizer::from_file(path)?.with_chat_template(self.chat_template.clone()))
    }

    /// The `tokenizer.json` next to the checkpoint.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(files::TOKENIZER)
    }

    /// Loads the model onto `device`, one tensor at a time.
    pub fn load(self, device: &Device) -> Result<CausalLm> {
        self.load_with(device, &LoadOptions::default())
    }

    /// [`load`](Self::load) with `options`.
    pub fn load_with(mut self, device: &Device, options: &LoadOptions) -> Result<CausalLm> {
        CausalLm::load_with(&self.config, self.source.as_mut(), device, options)
    }
}

/// The chat template of `dir/tokenizer_config.json`, if the file exists and has one.
fn tokenizer_config_template(dir: &Path) -> Result<Option<ChatTemplate>> {
    let path = dir.join(files::TOKENIZER_CONFIG);
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::fsutil::read_text(&path)?;
    ChatTemplate::from_tokenizer_config(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::files::{Weights, weights_among};

    #[test]
    fn the_weights_among_file_names() {
        let single = |n: &str| Ok(Weights::Single(n.into()));
        let cases: [(&[&str], Result<Weights, String>); 6] = [
            (
                &[
                    "config.json",
                    "model.safetensors.index.json",
                    "model.safetensors",
                ],
                Ok(Weights::Sharded),
            ),
            (
                &["config.json", "x.safetensors", "model.safetensors"],
                single("model.safetensors"),
            ),
            (
                &["tokenizer.json", "config.json", "adapted.safetensors"],
                single("adapted.safetensors"),
            ),
            (
                &["config.json", "m.gguf", "model.safetensors"],
                single("model.safetensors"),
            ),
            (
                &["tokenizer.json", "q4.gguf"],
                Ok(Weights::Gguf("q4.gguf".into())),
            ),
            (&["a.safetensors"], Err(String::new())),
        ];
        for (names, want) in cases {
            match (weights_among(names), want) {
                (Err(_), Err(_)) => {}
                (got, want) => assert_eq!(got, want, "{names:?}"),
            }
        }
        let ambiguous = weights_among(&["config.json", "b.safetensors", "a.safetensors"]);
        assert!(
            ambiguous
                .unwrap_err()
                .contains("a.safetensors, b.safetensors")
        );
        assert!(
            weights_among(&["a.gguf", "b.gguf"])
                .unwrap_err()
                .contains("several .gguf")
        );
        assert!(
            weights_among(&["config.json"])
                .unwrap_err()
                .contains("no model.safetensors")
        );
    }
}
