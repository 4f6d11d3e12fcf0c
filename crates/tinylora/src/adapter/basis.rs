//! The frozen factors of every adapted module: `A (r×in)`, `B (out×r)` from the top-r SVD of the
//! module's weight, the projections `P (u×r×r)`, and each module's tie group. Computed on the
//! host in f64 (see [`super::svd`]) so that native and browser builds get the same bits.

use burn::tensor::{Device, Tensor};
use sha2::{Digest, Sha256};

use super::config::{Convention, TinyLoraConfig};
use super::projection::projection;
use super::svd::top_svd;
use super::targets::{check_limits, targets};
use crate::model::CausalLm;
use crate::model::linear::Linear;
use crate::readback::to_vec_f32;
use crate::{Error, Result};

/// The frozen factors of one adapted module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleBasis {
    /// Hugging Face module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// `A`, row-major `[r, in]`.
    pub a: Vec<f32>,
    /// `B`, row-major `[out, r]`.
    pub b: Vec<f32>,
    /// `P`, row-major `[u, r, r]`.
    pub p: Vec<f32>,
    /// Index of the `v` this module uses.
    pub group: usize,
}

/// The frozen factors of all adapted modules, in checkpoint order.
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    /// Frozen rank.
    pub r: usize,
    /// Length of each `v`.
    pub u: usize,
    /// Number of distinct `v` vectors.
    pub groups: usize,
    /// One entry per adapted module.
    pub modules: Vec<ModuleBasis>,
}

/// The weight of a linear layer as a row-major `[out, in]` host matrix.
pub async fn host_weight(linear: &Linear, device: &Device) -> Result<Vec<f32>> {
    to_vec_f32(linear.weight.to_dense(device)).await
}

/// `A` (`[r, in]`) and `B` (`[out, r]`), row-major, from the top-r SVD of the row-major
/// `[out, in]` weight `w`, split per `convention`.
fn factors(
    w: &[f32],
    d_out: usize,
    d_in: usize,
    r: usize,
    convention: &Convention,
) -> (Vec<f32>, Vec<f32>) {
    let svd = top_svd(w, d_out, d_in, r);
    let (mut a, mut b) = (vec![0f32; r * d_in], vec![0f32; d_out * r]);
    for k in 0..r {
        // PEFT rounds σ to the weight dtype before the square root; so do we.
        let (left, right) = match convention {
            Convention::Peft => {
                let s = (svd.sigma[k] as f32).sqrt();
                (s, s)
            }
            Convention::Verl { .. } => (1.0, svd.sigma[k] as f32),
        };
        for j in 0..d_in {
            a[k * d_in + j] = right * svd.v[k][j] as f32;
        }
        for i in 0..d_out {
            b[i * r + k] = svd.u[k][i] as f32 * left;
        }
    }
    (a, b)
}

/// `items.map(f)` in order, on rayon's threads natively and in sequence in the browser.
fn map_maybe_parallel<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    }
    #[cfg(target_family = "wasm")]
    {
        items.into_iter().map(f).collect()
    }
}

impl Basis {
    /// Computes the basis of `model` for `config`: SVD factors per the convention, projections
    /// from the config's seed, groups from its tying. Refuses a config beyond [`super::limits`]
    /// before any work.
    pub async fn compute(model: &CausalLm, config: &TinyLoraConfig) -> Result<Self> {
        Self::compute_reporting(model, config, &mut |_, _| {}).await
    }

    /// [`Self::compute`], calling `progress(done, total)` with the count of modules factored
    /// after each layer (the page shows it: a 0.5B model's 168 SVDs take minutes in wasm).
    pub async fn compute_reporting(
        model: &CausalLm,
        config: &TinyLoraConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        config.validate()?;
        check_limits(model, config)
            .map_err(|e| Error::InvalidInput(format!("adapter config: {e}")))?;
        let modules = targets(model, &config.targets);
        let kinds: Vec<&str> = modules.iter().map(|m| m.kind).collect();
        let groups_of = config
            .tying
            .groups(&kinds)
            .map_err(|e| Error::InvalidInput(format!("adapter config: {e}")))?;
        let total = modules.len();
        let mut out = Vec::with_capacity(total);
        let device = model.device.clone();
        let mut modules = modules.into_iter().zip(groups_of).enumerate().peekable();
        // One layer's weights at a time on the host; their SVDs in parallel where threads exist
        // (each is deterministic on its own, so the bits do not depend on the thread count).
        while let Some(layer) = modules.peek().map(|(_, (t, _))| t.layer) {
            let mut work = Vec::new();
            while let Some((index, (target, group))) =
                modules.next_if(|(_, (t, _))| t.layer == layer)
            {
                let (d_in, d_out) = target.linear.dims();
                work.push((
                    index,
                    target.path,
                    group,
                    d_in,
                    d_out,
                    host_weight(target.linear, &device).await?,
                ));
            }
            let factored = map_maybe_parallel(work, |(index, path, group, d_in, d_out, w)| {
                let (a, b) = factors(&w, d_out, d_in, config.r, &config.convention);
                let p = projection(
                    config.seed,
                    index,
                    config.u,
                    config.r,
                    config.projection_std(),
                );
                ModuleBasis {
                    path,
                    d_in,
                    d_out,
                    a,
                    b,
                    p,
                    group,
                }
            });
            out.extend(factored);
            progress(out.len(), total);
        }
        Ok(Self::from_modules(config, out))
    }

    /// The basis of `config` made of `modules` (their groups give the group count).
    pub fn from_modules(config: &TinyLoraConfig, modules: Vec<ModuleBasis>) -> Self {
        Self {
            r: config.r,
            u: config.u,
            groups: modules.iter().map(|m| m.group + 1).max().unwrap_or(0),
            modules,
        }
    }

    /// SHA-256 (hex) of the factors' f32 bits, shapes and groups, in module order.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "tinylora-basis r={} u={} groups={}",
            self.r, self.u, self.groups
        ));
        for m in &self.modules {
            h.update(format!("|{} {}x{} g{}|", m.path, m.d_out, m.d_in, m.group));
            for values in [&m.a, &m.b, &m.p] {
                for x in values.iter() {
                    h.update(x.to_le_bytes());
                }
            }
        }
        crate::hex::encode(&h.finalize())
    }
}

/// SHA-256 (hex) identifying the base model's adapted weights: each target's path, shape and
/// up to 4096 evenly strided values of its weight (row-major `[out, in]`). Only those values
/// are decoded from GPU blocks and leave the device, in one read, so this is cheap for a large
/// model on a GPU.
pub async fn fingerprint(model: &CausalLm, names: &[String]) -> Result<String> {
    let device = model.device.clone();
    let mut headers = Vec::new();
    let mut picked = Vec::new();
    for target in targets(model, names) {
        let (d_in, d_out) = target.linear.dims();
        let len = d_in * d_out;
        let stride = (len / 4096).max(1);
        let ids: Vec<u32> = (0..len).step_by(stride).map(|k| k as u32).collect();
        headers.push((format!("|{} {d_out}x{d_in}|", target.path), ids.len()));
        picked.push(target.linear.weight.values_at(&ids, &device));
    }
    let values = match picked.is_empty() {
        true => Vec::new(),
        false => to_vec_f32(Tensor::cat(picked, 0)).await?,
    };
    let mut h = Sha256::new();
    let mut rest = &values[..];
    for (header, count) in headers {
        h.update(header);
        let (these, after) = rest.split_at(count);
        for x in these {
            h.update(x.to_le_bytes());
        }
        rest = after;
    }
    Ok(crate::hex::encode(&h.finalize()))
}
