//! TinyLoRA: `W' = W + B·R·A`, `R = Σᵢ vᵢ Pᵢ`, with `A`, `B` from the truncated SVD of the frozen
//! `W`, `P` fixed random and `v` (a few floats, shared by tied modules) the only trainable part.

pub mod basis;
pub mod basis_file;
pub mod export;
pub mod file;
pub mod gradients;
pub mod llama_server;
pub mod peft;
pub mod projection;
pub mod svd;
pub mod targets;

/// The adapter's shape and tying, from `tinylora-formats`.
pub use tinylora_formats::adapter::{config, limits, tying};

use burn::tensor::{Device, Tensor, TensorData};

use self::basis::Basis;
use self::config::{Convention, TinyLoraConfig};
use self::targets::targets_mut;
use crate::model::CausalLm;
use crate::model::linear::{Linear, LinearAdapter, Mixes};
use crate::{Error, Result};

/// An adapter: its config, its frozen basis and its trainable vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyLora {
    /// Shape and conventions.
    pub config: TinyLoraConfig,
    /// Frozen factors per module.
    pub basis: Basis,
    /// One vector of length `u` per tie group.
    pub v: Vec<Vec<f32>>,
}

/// The `r×r` matrix applied between `A` and `B` in row form (`Δy = ((x Aᵀ) mix) Bᵀ`).
///
/// PEFT: `mix = Rᵀ`, `R = Σᵢ vᵢ Pᵢ`. verl: `mix = (α/r)·M`, `M = Σᵢ vᵢ Pᵢ / √u` (the authors'
/// training forward `h @ M`).
///
/// # Shapes
/// - `v`: `[u]`; `p`: `[u, r·r]`; output `[r, r]`
pub fn mix_matrix(v: Tensor<1>, p: Tensor<2>, r: usize, config: &TinyLoraConfig) -> Tensor<2> {
    let u = config.u;
    let sum = v.reshape([1, u]).matmul(p).reshape([r, r]);
    match config.convention {
        Convention::Peft => sum.transpose(),
        Convention::Verl { alpha } => sum.mul_scalar(alpha / config.r as f64 / (u as f64).sqrt()),
    }
}

impl TinyLora {
    /// A fresh adapter with `v = 0` (PEFT's default: the adapted model equals the base).
    pub fn new(config: TinyLoraConfig, basis: Basis) -> Self {
        let v = vec![vec![0.0; config.u]; basis.groups];
        Self { config, basis, v }
    }

    /// Computes the basis from `model`'s weights and returns a fresh adapter.
    pub async fn init(model: &mut CausalLm, config: TinyLoraConfig) -> Result<Self> {
        let basis = Basis::compute(model, &config).await?;
        Ok(Self::new(config, basis))
    }

    /// Trainable parameters, counted as the paper does: `u ×` number of tie groups.
    pub fn trainable_count(&self) -> usize {
        self.config.u * self.basis.groups
    }

    /// `v` as device tensors (one `[u]` per group), for training.
    pub fn v_tensors(&self, device: &Device) -> Vec<Tensor<1>> {
        self.v
            .iter()
            .map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device))
            .collect()
    }

    /// Uploads the frozen factors into `model`'s target layers (module `i` of the basis becomes
    /// mix `i` of [`Mixes`]). Replaces any adapter already attached. `v` stays here: each
    /// forward pass is given its mixes ([`mixes`](Self::mixes)).
    pub fn attach(&self, model: &mut CausalLm) -> Result<()> {
        let device = model.device.clone();
        let modules = targets_mut(model, &self.config.targets);
        if modules.len() != self.basis.modules.len() {
            return Err(Error::InvalidInput(format!(
                "the adapter has {} modules, the model has {} matching targets",
                self.basis.modules.len(),
                modules.len()
            )));
        }
        for (module, (target, m)) in modules.into_iter().zip(&self.basis.modules).enumerate() {
            let (path, linear) = (target.path, target.linear);
            let (d_in, d_out) = linear.dims();
            if path != m.path || (d_in, d_out) != (m.d_in, m.d_out) {
                return Err(Error::InvalidInput(format!(
                    "adapter module {} ({}×{}) does not fit the model's {path} ({d_out}×{d_in})",
                    m.path, m.d_out, m.d_in
                )));
            }
            let r = m.a.len() / m.d_in;
            let upload = |values: &[f32], shape: [usize; 2]| {
                Tensor::<2>::from_data(TensorData::new(values.to_vec(), shape), &device)
            };
            linear.unmerge_adapter();
            linear.adapter = Some(LinearAdapter {
                a_t: upload(&m.a, [r, d_in]).transpose(),
                b_t: upload(&m.b, [d_out, r]).transpose(),
                p: upload(&m.p, [self.config.u, r * r]),
                module,
                merged: None,
            });
        }
        Ok(())
    }

    /// The mixing matrices of `v` (one `[u]` tensor per group — leaves that require gradients
    /// when training) for `model`'s attached layers: what a forward pass of the adapted model
    /// is given. An error when this adapter is not attached to `model`.
    pub fn mixes(&self, model: &CausalLm, v: &[Tensor<1>]) -> Result<Mixes> {
        let mut attached: Vec<&LinearAdapter> = model
            .nodes()
            .into_iter()
            .filter_map(|(_, node)| node.linear()?.adapter.as_ref())
            .collect();
        attached.sort_by_key(|ad| ad.module);
        let fits = attached.len() == self.basis.modules.len()
            && attached.iter().enumerate().all(|(i, ad)| ad.module == i)
            && v.len() == self.basis.groups;
        if !fits {
            return Err(Error::InvalidInput(
                "the adapter is not attached to this model".into(),
            ));
        }
        Ok(Mixes(
            attached
                .iter()
                .zip(&self.basis.modules)
                .map(|(ad, m)| {
                    let r = m.a.len() / m.d_in;
                    mix_matrix(v[m.group].clone(), ad.p.clone(), r, &self.config)
                })
                .collect(),
        ))
    }

    /// [`mixes`](Self::mixes) of this adapter's own `v`, as constants.
    pub fn current_mixes(&self, model: &CausalLm) -> Result<Mixes> {
        self.mixes(model, &self.v_tensors(&model.device))
    }
}

/// Removes every attached adapter (merged ones are subtracted first): the base model again.
pub fn detach(model: &mut CausalLm) {
    for linear in linears_mut(model) {
        linear.unmerge_adapter();
        linear.adapter = None;
    }
}

/// Adds every attached adapter's `ΔW` at `mixes` into its layer's weight.
pub fn merge(model: &mut CausalLm, mixes: &Mixes) {
    for linear in linears_mut(model) {
        linear.merge_adapter(mixes);
    }
}

/// Undoes [`merge`].
pub fn unmerge(model: &mut CausalLm) {
    for linear in linears_mut(model) {
        linear.unmerge_adapter();
    }
}

/// Every linear layer of `model`.
fn linears_mut(model: &mut CausalLm) -> impl Iterator<Item = &mut Linear> {
    model
        .nodes_mut()
        .into_iter()
        .filter_map(|(_, node)| node.linear())
}
