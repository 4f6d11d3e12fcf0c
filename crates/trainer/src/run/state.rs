//! Checkpoints: the adapter, the optimizer, the step, the seed and the config, written into a
//! temporary folder and renamed into place, so a crash leaves either the whole checkpoint or
//! none. Data order and sampling are functions of `(seed, step)`, so the step is the whole
//! random state.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tinylora::adapter::file::AdapterFile;
use tinylora::fsutil::write_atomic;
use tinylora::optim::AdamW;

const FORMAT: &str = "tinylora-train-state";

/// Which command wrote a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `trainer train`.
    Grpo,
    /// `trainer sft`.
    Sft,
}

/// The random state: every stream is derived from `seed` and the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The run's seed (`run.seed`).
    pub seed: u64,
    /// The step whose streams come next.
    pub next_step: usize,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Always `tinylora-train-state`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Which command wrote it.
    pub kind: RunKind,
    /// Steps completed.
    pub step: usize,
    /// Steps the run was planned for.
    pub total_steps: usize,
    /// AdamW moments and step count.
    pub optimizer: AdamW,
    /// The random state.
    pub rng: RngState,
    /// The resolved configuration (TOML).
    pub config: String,
}

/// A checkpoint on disk.
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Its adapter.
    pub adapter: AdapterFile,
    /// Its state.
    pub state: TrainState,
}

/// The folder name of step `step`'s checkpoint.
fn step_dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

/// The checkpoints under `run_dir/checkpoints`, oldest first.
pub fn list_checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(run_dir.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

impl TrainState {
    /// A state at `step`.
    pub fn new(
        kind: RunKind,
        step: usize,
        total_steps: usize,
        optimizer: AdamW,
        seed: u64,
        config: String,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            kind,
            step,
            total_steps,
            optimizer,
            rng: RngState {
                seed,
                next_step: step,
            },
            config,
        }
    }
}

/// Writes a checkpoint into `run_dir/checkpoints/step-NNNNNN` atomically and removes the
/// oldest beyond `keep` (0 keeps all). Returns its folder.
pub fn save(
    run_dir: &Path,
    adapter: &AdapterFile,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let parent = run_dir.join("checkpoints");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = step_dir_name(state.step);
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    adapter.save(&tmp.join("adapter.json"))?;
    let json = serde_json::to_string_pretty(state).expect("the state serialises");
    write_atomic(&tmp.join("state.json"), json.as_bytes())?;
    let dir = parent.join(&name);
    if dir.exists() {
        // Only a checkpoint of the same step is replaced, and only once the new one is whole.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(&dir, &old).with_context(|| format!("moving {}", dir.display()))?;
        std::fs::rename(&tmp, &dir).with_context(|| format!("writing {}", dir.display()))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &dir).with_context(|| format!("writing {}", dir.display()))?;
    }
    if keep > 0 {
        let all = list_checkpoints(run_dir);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    Ok(dir)
}

/// Opens a checkpoint: `path` is a checkpoint folder (with `state.json`) or a run folder, whose
/// latest checkpoint is taken.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let dir = if path.join("state.json").is_file() {
        path.to_path_buf()
    } else {
        match list_checkpoints(path).pop() {
            Some((_, dir)) => dir,
            None => bail!(
                "{}: not a checkpoint (no state.json) and no checkpoints/step-* inside",
                path.display()
            ),
        }
    };
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("reading {}", state_path.display()))?;
    let state: TrainState = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a training state", state_path.display()))?;
    ensure!(
        state.format == FORMAT && state.version == 1,
        "{}: format `{}` version {} is not {FORMAT} version 1",
        state_path.display(),
        state.format,
        state.version
    );
    let adapter = AdapterFile::load(&dir.join("adapter.json"))?;
    ensure!(
        state
            .optimizer
            .m
            .iter()
            .map(Vec::len)
            .eq(adapter.v.iter().map(Vec::len)),
        "{}: the optimizer state does not match the adapter's shape",
        state_path.display()
    );
    Ok(Checkpoint {
        dir,
        adapter,
        state,
    })
}

/// The run folder a checkpoint folder belongs to (`RUN/checkpoints/step-N` → `RUN`).
pub fn run_dir_of(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
