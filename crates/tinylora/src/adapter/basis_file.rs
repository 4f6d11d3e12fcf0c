//! The basis file: an adapter's frozen factors saved once per base model, so that applying an
//! adapter does not recompute 168 SVDs (the page), and so that adapters whose factors cannot be
//! recomputed here (PEFT's come from torch's RNG and SVD) travel as a link plus this file.
//!
//! A safetensors file with PEFT's names — `base_model.model.{module}.tinylora_A` `[r, in]`,
//! `.tinylora_B` `[out, r]`, `.tinylora_P` `[u, r, r]`, f32 — and in `__metadata__`:
//! `format` = `tinylora-basis`, `version` = `1`, `config` (the adapter config as JSON),
//! `base_fingerprint` and `basis_hash` (SHA-256 hex, as in the adapter file). Reading checks the
//! metadata against the adapter and the model, every tensor's shape against the model, and the
//! hash of what was read.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

use super::basis::{Basis, ModuleBasis};
use super::config::TinyLoraConfig;
use super::targets::targets;
use crate::Result;
use crate::model::CausalLm;
use crate::weights::TensorSource;
use crate::weights::safetensors::{SafetensorsFile, to_bytes_with_metadata};
use tinylora_formats::adapter::file::bad;

/// The value of the `format` metadata entry.
pub const BASIS_FORMAT: &str = "tinylora-basis";
/// The basis file version this build reads and writes.
pub const BASIS_VERSION: &str = "1";

/// The safetensors name of factor `which` (`A`, `B` or `P`) of `module`, as PEFT saves it.
fn factor_name(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.tinylora_{which}")
}

impl Basis {
    /// Serialises this basis with the `config` it was made for and the base model's fingerprint.
    pub fn to_file_bytes(
        &self,
        config: &TinyLoraConfig,
        base_fingerprint: &str,
    ) -> Result<Vec<u8>> {
        let mut tensors = Vec::with_capacity(3 * self.modules.len());
        for m in &self.modules {
            let r = m.a.len() / m.d_in;
            let u = m.p.len() / (r * r);
            tensors.push((factor_name(&m.path, "A"), vec![r, m.d_in], m.a.clone()));
            tensors.push((factor_name(&m.path, "B"), vec![m.d_out, r], m.b.clone()));
            tensors.push((factor_name(&m.path, "P"), vec![u, r, r], m.p.clone()));
        }
        let metadata = BTreeMap::from([
            ("format".to_string(), BASIS_FORMAT.to_string()),
            ("version".to_string(), BASIS_VERSION.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(config).expect("JSON of a plain struct"),
            ),
            ("base_fingerprint".to_string(), base_fingerprint.to_string()),
            ("basis_hash".to_string(), self.hash()),
        ]);
        to_bytes_with_metadata(&tensors, &metadata)
    }

    /// Reads the basis of an adapter with `config` from a basis file, for `model` whose
    /// fingerprint is `model_fingerprint`. Checks, in this order, with errors naming `origin`:
    /// the format and version, that the file was made for this base model and this adapter
    /// config, every factor's shape, and that the factors hash to the file's `basis_hash`.
    pub fn from_file<R: Read + Seek>(
        file: &mut SafetensorsFile<R>,
        origin: &Path,
        model: &mut CausalLm,
        config: &TinyLoraConfig,
        model_fingerprint: &str,
    ) -> Result<Self> {
        let meta = file.metadata().clone();
        let field = |key: &str| {
            meta.get(key).ok_or_else(|| {
                bad(
                    origin,
                    format!("not a tinylora basis file: no `{key}` in the safetensors metadata"),
                )
            })
        };
        if field("format")? != BASIS_FORMAT {
            return Err(bad(
                origin,
                format!("format is `{}`, expected `{BASIS_FORMAT}`", meta["format"]),
            ));
        }
        if field("version")? != BASIS_VERSION {
            return Err(bad(
                origin,
                format!(
                    "basis file version {} is not supported (this build reads {BASIS_VERSION})",
                    meta["version"]
                ),
            ));
        }
        let made_for = field("base_fingerprint")?;
        if made_for.len() < 16 || !model_fingerprint.starts_with(made_for.as_str()) {
            return Err(bad(
                origin,
                format!(
                    "this basis file was made for another base model (fingerprint {}…, this model has {}…)",
                    made_for.get(..16).unwrap_or(made_for),
                    &model_fingerprint[..16]
                ),
            ));
        }
        let file_config: TinyLoraConfig = serde_json::from_str(field("config")?).map_err(|e| {
            bad(
                origin,
                format!("metadata `config` is not an adapter config: {e}"),
            )
        })?;
        if &file_config != config {
            return Err(bad(
                origin,
                format!(
                    "this basis file is for another adapter config ({}), the adapter has {}",
                    serde_json::to_string(&file_config).expect("JSON"),
                    serde_json::to_string(config).expect("JSON")
                ),
            ));
        }
        let basis = read_factors(file, origin, model, config)?;
        let hash = basis.hash();
        if &hash != field("basis_hash")? {
            return Err(bad(
                origin,
                format!(
                    "the factors hash to {}…, the file says {}…: the file is corrupted or was altered",
                    &hash[..16],
                    meta["basis_hash"].get(..16).unwrap_or(&meta["basis_hash"])
                ),
            ));
        }
        Ok(basis)
    }
}

/// Reads the factors `A`, `B`, `P` of every module `config` targets in `model` from `file`
/// (PEFT's tensor names), checking each shape against the model. The caller has checked
/// `config` against the limits.
pub fn read_factors<R: Read + Seek>(
    file: &mut SafetensorsFile<R>,
    origin: &Path,
    model: &CausalLm,
    config: &TinyLoraConfig,
) -> Result<Basis> {
    let modules = targets(model, &config.targets);
    let kinds: Vec<&str> = modules.iter().map(|m| m.kind).collect();
    let groups_of = config.tying.groups(&kinds).map_err(|e| bad(origin, e))?;
    let (r, u) = (config.r, config.u);
    let mut read = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
        match file.shape(&name) {
            Some(s) if s == shape => Ok(file.read(&name)?.values),
            Some(s) => Err(bad(
                origin,
                format!("`{name}` has shape {s:?}, the model needs {shape:?}"),
            )),
            None => Err(bad(
                origin,
                format!(
                    "missing `{name}`{}",
                    if name.ends_with("tinylora_P") {
                        " (saved with save_projection=False: torch's generator cannot be reproduced, save the projections)"
                    } else {
                        ""
                    }
                ),
            )),
        }
    };
    let mut out = Vec::with_capacity(modules.len());
    for (target, group) in modules.into_iter().zip(groups_of) {
        let ((d_in, d_out), path) = (target.linear.dims(), target.path);
        let a = read(factor_name(&path, "A"), &[r, d_in])?;
        let b = read(factor_name(&path, "B"), &[d_out, r])?;
        let p = read(factor_name(&path, "P"), &[u, r, r])?;
        if a.iter().chain(&b).chain(&p).any(|x| !x.is_finite()) {
            return Err(bad(
                origin,
                format!("the factors of {path} contain NaN or infinite values"),
            ));
        }
        out.push(ModuleBasis {
            path,
            d_in,
            d_out,
            a,
            b,
            p,
            group,
        });
    }
    Ok(Basis::from_modules(config, out))
}
