//! Where a model comes from in the browser: the bundled toy model, a Hugging Face-style hub,
//! or local files. Each gives a [`Checkpoint`] over bytes held in JavaScript memory and the
//! tokenizer, if there is one.

use std::path::{Path, PathBuf};

use js_sys::Uint8Array;
use tinylora::checkpoint::Checkpoint;
use tinylora::checkpoint::files::{self, Weights};
use tinylora::hub::HubModel;
use tinylora::model::ModelConfig;
use tinylora::tokenizer::{ChatTemplate, Tokenizer};
use tinylora::weights::BoxedReader;
use tinylora::weights::gguf::{GgufFile, GgufSource};
use tinylora::weights::safetensors::{SafetensorsFile, ShardedSafetensors, shard_names};

use crate::download::{fetch_file, fetch_required, read_file, text};
use crate::js_bytes::JsBytes;
use crate::protocol::Event;
use crate::scope::post;

/// A model ready to upload: its tensors, its tokenizer (with the model's chat template) and a
/// display name.
pub struct Found {
    /// Config and tensor source.
    pub checkpoint: Checkpoint,
    /// `tokenizer.json`, if one came with it.
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from.
    pub name: String,
}

fn reader(bytes: Uint8Array) -> BoxedReader {
    Box::new(JsBytes::new(bytes))
}

fn safetensors(
    config: ModelConfig,
    weights: Uint8Array,
    origin: &str,
) -> Result<Checkpoint, String> {
    let source = SafetensorsFile::from_reader(reader(weights), Path::new(origin))
        .map_err(|e| e.to_string())?;
    Ok(Checkpoint::new(config, Box::new(source)))
}

fn gguf(weights: Uint8Array, origin: &str) -> Result<Checkpoint, String> {
    let mut file =
        GgufFile::from_reader(reader(weights), Path::new(origin)).map_err(|e| e.to_string())?;
    let config = file.model_config().map_err(|e| e.to_string())?;
    let template = file.chat_template().map_err(|e| e.to_string())?;
    let mut checkpoint = Checkpoint::new(config, Box::new(GgufSource::new(file)));
    checkpoint.chat_template = template.unwrap_or_default();
    Ok(checkpoint)
}

fn config(bytes: &Uint8Array, origin: &str) -> Result<ModelConfig, String> {
    ModelConfig::from_json(&text(bytes, origin)?, Path::new(origin)).map_err(|e| e.to_string())
}

fn tokenizer(bytes: &Uint8Array, origin: &str) -> Result<Tokenizer, String> {
    Tokenizer::from_bytes(&bytes.to_vec(), Path::new(origin)).map_err(|e| e.to_string())
}

/// The chat template of a `tokenizer_config.json`, if it has one.
fn tokenizer_config(bytes: &Uint8Array, origin: &str) -> Result<Option<ChatTemplate>, String> {
    ChatTemplate::from_tokenizer_config(&text(bytes, origin)?, Path::new(origin))
        .map_err(|e| e.to_string())
}

impl Found {
    /// `checkpoint` with `tokenizer` speaking its chat template, which `tokenizer_config`
    /// (a `tokenizer_config.json` beside the weights) replaces where it has one.
    fn new(
        mut checkpoint: Checkpoint,
        tokenizer: Option<Tokenizer>,
        tokenizer_config: Option<ChatTemplate>,
        name: String,
    ) -> Self {
        if let Some(template) = tokenizer_config {
            checkpoint.chat_template = template;
        }
        let template = checkpoint.chat_template.clone();
        Self {
            checkpoint,
            tokenizer: tokenizer.map(|t| t.with_chat_template(template)),
            name,
        }
    }
}

/// The toy model served with the page (`toy/`).
pub async fn bundled() -> Result<Found, String> {
    let cfg = fetch_required("toy/config.json", "toy/config.json", false).await?;
    let tok = fetch_required("toy/tokenizer.json", "toy/tokenizer.json", false).await?;
    let weights = fetch_required("toy/model.safetensors", "toy/model.safetensors", false).await?;
    Ok(Found::new(
        safetensors(
            config(&cfg, "toy/config.json")?,
            weights,
            "toy/model.safetensors",
        )?,
        Some(tokenizer(&tok, "toy/tokenizer.json")?),
        None,
        "bundled toy model (assets/toy)".into(),
    ))
}

/// A model from a Hugging Face-style hub: `gguf` names a GGUF file, otherwise config.json with
/// a sharded index or model.safetensors, looked for in the order of [`files`]. tokenizer.json
/// is optional (a warning when missing), tokenizer_config.json gives the chat template.
pub async fn hub(base: &str, model: &HubModel) -> Result<Found, String> {
    let (repo, revision) = (&model.repo, &model.revision);
    let url = |file: &str| model.file_url(base, file);
    let tok = fetch_file(&url(files::TOKENIZER), files::TOKENIZER, true).await?;
    let tokenizer = match tok {
        Some(bytes) => Some(tokenizer(&bytes, &url(files::TOKENIZER))?),
        None => {
            post(&Event::Warning {
                message: format!(
                    "{repo} has no tokenizer.json: logits work, generation needs a tokenizer (load the model from local files with one)"
                ),
            });
            None
        }
    };
    let checkpoint = if let Some(file) = &model.file {
        let weights = fetch_required(&url(file), file, true).await?;
        gguf(weights, &url(file))?
    } else {
        let cfg = config(
            &fetch_required(&url(files::CONFIG), files::CONFIG, true).await?,
            &url(files::CONFIG),
        )?;
        // The order of `files`: a sharded index first, then the single file.
        let index_url = url(files::INDEX);
        match fetch_file(&index_url, files::INDEX, true).await? {
            Some(index) => {
                let index = text(&index, &index_url)?;
                let mut shards = Vec::new();
                for name in shard_names(&index, Path::new(&index_url)).map_err(|e| e.to_string())? {
                    shards.push((
                        name.clone(),
                        fetch_required(&url(&name), &name, true).await?,
                    ));
                }
                sharded(cfg, &index, &index_url, shards, &url)?
            }
            None => {
                let weights = fetch_file(&url(files::SINGLE), files::SINGLE, true)
                    .await?
                    .ok_or_else(|| {
                        format!(
                            "{repo} has neither {} nor {} at {revision}: for a GGUF \
                             repository, give the .gguf file name",
                            files::SINGLE,
                            files::INDEX
                        )
                    })?;
                safetensors(cfg, weights, &url(files::SINGLE))?
            }
        }
    };
    let template =
        match fetch_file(&url(files::TOKENIZER_CONFIG), files::TOKENIZER_CONFIG, true).await? {
            Some(bytes) => tokenizer_config(&bytes, &url(files::TOKENIZER_CONFIG))?,
            None => None,
        };
    Ok(Found::new(
        checkpoint,
        tokenizer,
        template,
        format!("{repo} ({revision})"),
    ))
}

fn sharded(
    config: ModelConfig,
    index: &str,
    index_origin: &str,
    mut shards: Vec<(String, Uint8Array)>,
    origin_of: &dyn Fn(&str) -> String,
) -> Result<Checkpoint, String> {
    let source =
        ShardedSafetensors::from_index(index, Path::new(index_origin), |name| {
            let at = shards.iter().position(|(n, _)| n == name).ok_or_else(|| {
                tinylora::Error::BadFile {
                    path: PathBuf::from(index_origin),
                    reason: format!("shard `{name}` was not provided"),
                }
            })?;
            let (_, bytes) = shards.swap_remove(at);
            Ok((reader(bytes), PathBuf::from(origin_of(name))))
        })
        .map_err(|e| e.to_string())?;
    Ok(Checkpoint::new(config, Box::new(source)))
}

/// A model from files the visitor picked or dropped, its weights found by
/// [`files::weights_among`] (as in a folder given to the trainer); tokenizer.json and
/// tokenizer_config.json beside them.
pub async fn local(picked: Vec<web_sys::File>) -> Result<Found, String> {
    let names: Vec<String> = picked.iter().map(|f| f.name()).collect();
    let find = |name: &str| {
        picked.iter().find(|f| f.name() == name).ok_or_else(|| {
            format!(
                "{name} is not among the picked files ({})",
                names.join(", ")
            )
        })
    };
    let present = |name: &str| names.iter().any(|n| n == name);
    let tokenizer = if present(files::TOKENIZER) {
        let bytes = read_file(find(files::TOKENIZER)?).await?;
        Some(tokenizer(&bytes, files::TOKENIZER)?)
    } else {
        None
    };
    let listed: Vec<&str> = names.iter().map(String::as_str).collect();
    let weights = files::weights_among(&listed)
        .map_err(|reason| format!("the picked files ({}): {reason}", names.join(", ")))?;
    let checkpoint = match weights {
        Weights::Gguf(name) => gguf(read_file(find(&name)?).await?, &name)?,
        Weights::Sharded => {
            let cfg = config(&read_file(find(files::CONFIG)?).await?, files::CONFIG)?;
            let index = text(&read_file(find(files::INDEX)?).await?, files::INDEX)?;
            let mut shards = Vec::new();
            for name in shard_names(&index, Path::new(files::INDEX)).map_err(|e| e.to_string())? {
                shards.push((name.clone(), read_file(find(&name)?).await?));
            }
            sharded(cfg, &index, files::INDEX, shards, &|n| n.to_string())?
        }
        Weights::Single(name) => {
            let cfg = config(&read_file(find(files::CONFIG)?).await?, files::CONFIG)?;
            safetensors(cfg, read_file(find(&name)?).await?, &name)?
        }
    };
    if tokenizer.is_none() {
        post(&Event::Warning {
            message: "no tokenizer.json among the picked files: logits work, generation needs one"
                .into(),
        });
    }
    let template = if present(files::TOKENIZER_CONFIG) {
        let bytes = read_file(find(files::TOKENIZER_CONFIG)?).await?;
        tokenizer_config(&bytes, files::TOKENIZER_CONFIG)?
    } else {
        None
    };
    Ok(Found::new(
        checkpoint,
        tokenizer,
        template,
        names.join(", "),
    ))
}
