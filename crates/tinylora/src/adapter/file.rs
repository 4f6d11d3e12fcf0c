//! Between a trained [`TinyLora`] and the adapter file users share ([`AdapterFile`], parsed in
//! `tinylora-formats`): describing an adapter, and rebuilding one on a model after checking that
//! the model and the recomputed basis are the ones it was trained with.

use std::io::{Read, Seek};
use std::path::Path;

use tinylora_formats::adapter::file::bad;
pub use tinylora_formats::adapter::file::{AdapterFile, COMPACT_PREFIX, FORMAT, VERSION};

use super::TinyLora;
use super::basis::{Basis, fingerprint};
use super::targets::check_limits;
use crate::Result;
use crate::model::CausalLm;
use crate::weights::safetensors::SafetensorsFile;

impl TinyLora {
    /// The file describing this adapter, trained on a base model with the given fingerprint.
    pub fn to_file(&self, base_fingerprint: String) -> AdapterFile {
        AdapterFile::new(
            self.config.clone(),
            base_fingerprint,
            self.basis.hash(),
            self.v.clone(),
        )
    }

    /// Rebuilds the adapter in `file` on `model`: checks the work it asks for against
    /// [`super::limits`] and the base fingerprint, recomputes the basis and checks its hash.
    /// `origin` names the adapter in errors.
    pub async fn from_file(
        file: &AdapterFile,
        model: &mut CausalLm,
        origin: &Path,
    ) -> Result<Self> {
        Self::from_file_reporting(file, model, origin, None, &mut |_, _| {}).await
    }

    /// [`Self::from_file`], reporting the basis computation as
    /// [`Basis::compute_reporting`] does. `known_fingerprint`: `model`'s [`fingerprint`] over
    /// `file.config.targets` when the caller already has it (a model whose weights have not
    /// changed since), so that it is not computed again.
    pub async fn from_file_reporting(
        file: &AdapterFile,
        model: &mut CausalLm,
        origin: &Path,
        known_fingerprint: Option<&str>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        check_base(file, model, origin, known_fingerprint).await?;
        let basis = Basis::compute_reporting(model, &file.config, progress).await?;
        Self::from_file_with_basis(file, basis, origin)
    }

    /// Rebuilds the adapter in `file` on `model` with the factors saved in a basis file
    /// ([`super::basis_file`]) instead of recomputing them: the same checks as
    /// [`Self::from_file`], and the basis file's own (base model, config, hash).
    /// `known_fingerprint` as in [`Self::from_file_reporting`].
    pub async fn from_file_and_basis<R: Read + Seek>(
        file: &AdapterFile,
        model: &mut CausalLm,
        origin: &Path,
        basis_file: &mut SafetensorsFile<R>,
        basis_origin: &Path,
        known_fingerprint: Option<&str>,
    ) -> Result<Self> {
        let found = check_base(file, model, origin, known_fingerprint).await?;
        let basis = Basis::from_file(basis_file, basis_origin, model, &file.config, &found)?;
        Self::from_file_with_basis(file, basis, origin)
    }

    /// The adapter in `file` with an already computed or loaded basis, after checking its hash
    /// and shape.
    pub fn from_file_with_basis(file: &AdapterFile, basis: Basis, origin: &Path) -> Result<Self> {
        let hash = basis.hash();
        if !hash.starts_with(&file.basis_hash) {
            return Err(bad(
                origin,
                format!(
                    "the frozen basis recomputed differently (hash {}…, expected {}…)",
                    &hash[..16],
                    file.basis_hash.get(..16).unwrap_or(&file.basis_hash)
                ),
            ));
        }
        if basis.groups != file.v.len() {
            return Err(bad(
                origin,
                format!(
                    "the adapter has {} vectors, its tying gives {} groups",
                    file.v.len(),
                    basis.groups
                ),
            ));
        }
        Ok(Self {
            config: file.config.clone(),
            basis,
            v: file.v.clone(),
        })
    }
}

/// Checks the work `file` asks for against [`super::limits`] and that `model` is the base model
/// it was trained on (its fingerprint `known`, or computed); returns the model's fingerprint.
async fn check_base(
    file: &AdapterFile,
    model: &mut CausalLm,
    origin: &Path,
    known: Option<&str>,
) -> Result<String> {
    check_limits(model, &file.config).map_err(|e| bad(origin, e))?;
    let found = match known {
        Some(found) => found.to_string(),
        None => fingerprint(model, &file.config.targets).await?,
    };
    if !found.starts_with(&file.base_fingerprint) {
        return Err(bad(
            origin,
            format!(
                "this adapter was trained on another base model (fingerprint {}…, this model has {}…)",
                file.base_fingerprint
                    .get(..16)
                    .unwrap_or(&file.base_fingerprint),
                &found[..16]
            ),
        ));
    }
    Ok(found)
}
