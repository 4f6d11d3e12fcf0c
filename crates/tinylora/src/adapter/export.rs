//! Exporting an adapter for other tools: a standard PEFT LoRA of rank r (`lora_A = A`,
//! `lora_B = B·mixᵀ`, `lora_alpha = r` so the scaling is 1) that `peft.PeftModel`, transformers
//! and vLLM load, and the merged full weights as a Hugging Face checkpoint.

use std::path::Path;

use super::TinyLora;
use super::basis::ModuleBasis;
use super::config::Convention;
use crate::model::CausalLm;
use crate::model::linear::Mixes;
use crate::readback::to_vec_f32;
use crate::weights::safetensors::{self, Dtype};
use crate::{Error, Result};

/// `mixᵀ` of one module on the host, `[r, r]` row-major, so that `ΔW = B·mixᵀ·A`.
pub fn mix_transposed(adapter: &TinyLora, p: &[f32], v: &[f32], r: usize) -> Vec<f32> {
    let mut sum = vec![0f64; r * r];
    for (i, &vi) in v.iter().enumerate() {
        for (s, &pij) in sum.iter_mut().zip(&p[i * r * r..(i + 1) * r * r]) {
            *s += f64::from(vi) * f64::from(pij);
        }
    }
    match adapter.config.convention {
        // mix = Rᵀ, so mixᵀ = R.
        Convention::Peft => sum.iter().map(|&x| x as f32).collect(),
        // mix = s·R, so mixᵀ = s·Rᵀ.
        Convention::Verl { alpha } => {
            let s = alpha / adapter.config.r as f64 / (adapter.config.u as f64).sqrt();
            (0..r * r)
                .map(|k| (s * sum[(k % r) * r + k / r]) as f32)
                .collect()
        }
    }
}

/// `B·mixᵀ` of module `m`, row-major `[out, r]`: the `lora_B` whose product with `A` is the
/// module's `ΔW`.
pub fn lora_b(m: &ModuleBasis, mix_t: &[f32], r: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.d_out * r];
    for o in 0..m.d_out {
        for k in 0..r {
            out[o * r + k] = (0..r).map(|j| m.b[o * r + j] * mix_t[j * r + k]).sum();
        }
    }
    out
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` as a PEFT LoRA.
pub fn export_peft_lora(adapter: &TinyLora, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tensors = Vec::new();
    let mut rank = 0;
    for m in &adapter.basis.modules {
        let r = m.a.len() / m.d_in;
        rank = rank.max(r);
        let mix_t = mix_transposed(adapter, &m.p, &adapter.v[m.group], r);
        let key = format!("base_model.model.{}", m.path);
        tensors.push((format!("{key}.lora_A.weight"), vec![r, m.d_in], m.a.clone()));
        tensors.push((
            format!("{key}.lora_B.weight"),
            vec![m.d_out, r],
            lora_b(m, &mix_t, r),
        ));
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": adapter.config.targets,
        "base_model_name_or_path": null,
    });
    safetensors::write(&dir.join("adapter_model.safetensors"), &tensors)?;
    crate::fsutil::write_atomic(
        &dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&config)
            .expect("JSON")
            .as_bytes(),
    )
}

/// Writes the model's weights with the adapter at `mixes` merged ([`Mixes::none`]: the base
/// weights) as `dir/model.safetensors` (values as `dtype`, rounded to nearest) and
/// `dir/config.json`, a checkpoint transformers reads with the model's own class.
pub async fn export_merged(
    model: &CausalLm,
    mixes: &Mixes,
    dir: &Path,
    dtype: Dtype,
) -> Result<()> {
    let config_json = model.config.to_hf_json().map_err(|reason| Error::BadFile {
        path: dir.join("config.json"),
        reason,
    })?;
    let mut tensors = Vec::new();
    for (name, shape, tensor) in model.named_tensors(mixes) {
        tensors.push((name, shape, to_vec_f32(tensor).await?));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    safetensors::write_as(&dir.join("model.safetensors"), &tensors, dtype)?;
    crate::fsutil::write_atomic(&dir.join("config.json"), config_json.as_bytes())
}
