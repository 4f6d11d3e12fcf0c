//! Models from the Hugging Face hub: `--model OWNER/NAME[/FILE][@REVISION]` (and `model.path`
//! in configs) when no such local path exists. The files a checkpoint needs are downloaded with
//! the `hf-hub` crate into the standard cache (`$HF_HOME/hub`, default
//! `~/.cache/huggingface/hub`), which Python's `huggingface_hub` and candle share:
//! `HF_ENDPOINT` picks another hub (a mirror, a local stand-in), `HF_TOKEN` (else the cache's
//! `token` file) authorises gated and private repositories, and `HF_HUB_OFFLINE=1` reads the
//! cache only, as does a hub that cannot be reached.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use tinylora::checkpoint::Checkpoint;
use tinylora::checkpoint::files::{self, Weights, weights_among};
use tinylora::hub::HubModel;
use tinylora::weights::safetensors::shard_names;

/// Files fetched beside the weights when the repository has them.
const COMPANIONS: [&str; 3] = [files::CONFIG, files::TOKENIZER, files::TOKENIZER_CONFIG];

/// Opens `spec`: a local model path as [`Checkpoint::open`] takes it, or, when nothing exists
/// there and it reads as `OWNER/NAME[/FILE][@REVISION]`, that model from the hub.
pub fn open(spec: &Path) -> Result<Checkpoint> {
    Ok(Checkpoint::open(&local_path(spec)?)?)
}

/// The local path of `spec`: itself when it exists or is not a hub name, else the hub model's
/// folder (or named file) in the cache, downloaded first unless offline.
fn local_path(spec: &Path) -> Result<PathBuf> {
    let hub_model = spec.to_str().and_then(HubModel::parse);
    match hub_model {
        Some(model) if !spec.exists() => fetch(&model),
        _ => Ok(spec.to_path_buf()),
    }
}

fn cache_repo(model: &HubModel) -> Repo {
    Repo::with_revision(model.repo.clone(), RepoType::Model, model.revision.clone())
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Downloads what `model` needs (or finds it in the cache) and returns its local path.
fn fetch(model: &HubModel) -> Result<PathBuf> {
    let cache = Cache::from_env();
    if offline() {
        return cached(&cache, model).with_context(|| "HF_HUB_OFFLINE is set".to_string());
    }
    let token = std::env::var("HF_TOKEN").ok().or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into()),
        )
        .with_token(token)
        .with_progress(true)
        .build()
        .context("starting the hub client")?;
    let repo = api.repo(cache_repo(model));
    let info = match repo.info() {
        Ok(info) => info,
        Err(ApiError::RequestError(e)) if matches!(*e, ureq2::Error::Transport(_)) => {
            eprintln!("the hub cannot be reached ({e}); looking in the cache");
            return cached(&cache, model);
        }
        Err(e) => return Err(hub_error(model, e)),
    };
    // The revision now points at this commit: cached files of that commit are used as they
    // are, the others downloaded into the same snapshot.
    cache
        .repo(cache_repo(model))
        .create_ref(&info.sha)
        .with_context(|| {
            format!(
                "writing the revision of {model} into {}",
                cache.path().display()
            )
        })?;
    let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let weights = match &model.file {
        Some(file) if !listed.contains(&file.as_str()) => bail!(
            "{model}: the repository has no file `{file}` (it has: {})",
            listed.join(", ")
        ),
        Some(file) if file.ends_with(".gguf") => Weights::Gguf(file.clone()),
        // A safetensors file beside config.json.
        Some(file) => Weights::Single(file.clone()),
        None => {
            let top: Vec<&str> = listed
                .iter()
                .copied()
                .filter(|n| !n.contains('/'))
                .collect();
            weights_among(&top).map_err(|reason| anyhow::anyhow!("{model}: {reason}"))?
        }
    };
    let mut needed: Vec<String> = COMPANIONS
        .into_iter()
        .filter(|name| listed.contains(name))
        .map(String::from)
        .collect();
    let local = |name: &str| get(&repo, model, name);
    match weights {
        Weights::Gguf(name) | Weights::Single(name) => needed.push(name),
        Weights::Sharded => {
            let index = local(files::INDEX)?;
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?;
            needed.extend(shard_names(&text, &index)?);
        }
    }
    let mut folder = None;
    for name in &needed {
        let path = local(name)?;
        folder.get_or_insert_with(|| snapshot_of(&path, name));
    }
    let folder = folder.expect("a checkpoint needs at least its weights");
    Ok(match &model.file {
        Some(file) => folder.join(file),
        None => folder,
    })
}

/// The cached file `name` of `model`, downloaded when missing.
fn get(repo: &ApiRepo, model: &HubModel, name: &str) -> Result<PathBuf> {
    repo.get(name)
        .map_err(|e| hub_error(model, e))
        .with_context(|| format!("fetching `{name}`"))
}

/// The snapshot folder that holds `path`, the cached file `name`.
fn snapshot_of(path: &Path, name: &str) -> PathBuf {
    let mut folder = path.to_path_buf();
    for _ in Path::new(name).components() {
        folder.pop();
    }
    folder
}

/// `model` from the cache alone.
fn cached(cache: &Cache, model: &HubModel) -> Result<PathBuf> {
    let repo = cache.repo(cache_repo(model));
    let probe = model.file.as_deref().unwrap_or(files::CONFIG);
    // A GGUF repository cached without naming the file: any cached companion shows the folder.
    let found = repo
        .get(probe)
        .or_else(|| COMPANIONS.into_iter().find_map(|name| repo.get(name)));
    match found {
        Some(path) if model.file.is_some() => Ok(path),
        Some(path) => Ok(path.parent().map(Path::to_path_buf).unwrap_or(path)),
        None => bail!(
            "{model} is not in the Hugging Face cache at {} (download it once with the hub \
             reachable and HF_HUB_OFFLINE unset)",
            cache.path().display()
        ),
    }
}

/// A hub error that says which model and what to do about it.
fn hub_error(model: &HubModel, e: ApiError) -> anyhow::Error {
    let status = match &e {
        ApiError::RequestError(e) => match &**e {
            ureq2::Error::Status(status, _) => Some(*status),
            ureq2::Error::Transport(_) => None,
        },
        _ => None,
    };
    let hint = match status {
        Some(401 | 403) => " (a gated or private repository: set HF_TOKEN)",
        Some(404) => {
            " (no such repository, revision or file; a local path that does not exist is read as a hub name)"
        }
        _ => "",
    };
    anyhow::anyhow!("{model} on the hub: {e}{hint}")
}
