//! Interoperability with Hugging Face PEFT (≥ 0.19): importing a TinyLoRA adapter directory
//! (`adapter_config.json` with `peft_type: TINYLORA` and `adapter_model.safetensors` holding
//! `tinylora_A/B/P` per module and `tinylora_v.{group}`), so that its factors are used as saved.

use std::path::Path;

use serde::Deserialize;

use super::TinyLora;
use super::basis_file::read_factors;
use super::config::{ALL_TARGETS, Convention, TinyLoraConfig};
use super::targets::check_limits;
use super::tying::Tying;
use crate::model::CausalLm;
use crate::weights::TensorSource;
use crate::weights::safetensors::SafetensorsFile;
use crate::{Error, Result};

#[derive(Deserialize)]
struct PeftConfig {
    peft_type: String,
    r: usize,
    u: usize,
    #[serde(default)]
    weight_tying: f64,
    #[serde(default = "default_seed")]
    projection_seed: u64,
    target_modules: TargetModules,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    One(String),
}

fn default_seed() -> u64 {
    42
}

/// Whether `dir` looks like a PEFT adapter directory.
pub fn is_peft_dir(dir: &Path) -> bool {
    dir.join("adapter_config.json").is_file()
}

/// Loads a PEFT TinyLoRA adapter for `model`, using its saved `A`, `B` and `P`.
pub fn load_peft_tinylora(dir: &Path, model: &mut CausalLm) -> Result<TinyLora> {
    let config_path = dir.join("adapter_config.json");
    let bad = |path: &Path, reason: String| Error::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = crate::fsutil::read_text(&config_path)?;
    let peft: PeftConfig = serde_json::from_str(&text).map_err(|e| {
        bad(
            &config_path,
            format!("not a PEFT TinyLoRA adapter_config.json: {e}"),
        )
    })?;
    if peft.peft_type != "TINYLORA" {
        return Err(bad(
            &config_path,
            format!("peft_type is {}, expected TINYLORA", peft.peft_type),
        ));
    }
    let targets: Vec<String> = match peft.target_modules {
        TargetModules::One(s) if s == "all-linear" => {
            ALL_TARGETS.iter().map(|t| t.to_string()).collect()
        }
        TargetModules::One(s) => vec![s],
        TargetModules::List(list) => {
            // Keep checkpoint order regardless of the order PEFT saved them in.
            ALL_TARGETS
                .iter()
                .filter(|t| list.iter().any(|l| l == *t))
                .map(|t| t.to_string())
                .collect()
        }
    };
    let config = TinyLoraConfig {
        r: peft.r,
        u: peft.u,
        targets,
        tying: Tying::Ratio {
            weight_tying: peft.weight_tying,
        },
        convention: Convention::Peft,
        seed: peft.projection_seed,
    };
    config
        .validate()
        .map_err(|e| bad(&config_path, e.to_string()))?;
    check_limits(model, &config).map_err(|e| bad(&config_path, e))?;
    let weights_path = dir.join("adapter_model.safetensors");
    let mut weights = SafetensorsFile::open(&weights_path)?;
    let basis = read_factors(&mut weights, &weights_path, model, &config)?;
    let mut read = |name: String| -> Result<Vec<f32>> {
        match weights.shape(&name) {
            Some(s) if s == [config.u] => Ok(weights.read(&name)?.values),
            Some(s) => Err(bad(
                &weights_path,
                format!("`{name}` has shape {s:?}, expected [{}]", config.u),
            )),
            None => Err(bad(&weights_path, format!("missing `{name}`"))),
        }
    };
    let v = (0..basis.groups)
        .map(|g| read(format!("base_model.tinylora_v.{g}")))
        .collect::<Result<Vec<_>>>()?;
    if v.iter().flatten().any(|x| !x.is_finite()) {
        return Err(bad(
            &weights_path,
            "tinylora_v contains NaN or infinite values".into(),
        ));
    }
    Ok(TinyLora { basis, config, v })
}
