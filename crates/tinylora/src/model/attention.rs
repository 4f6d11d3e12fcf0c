//! Grouped-query self-attention with RoPE: `Qwen2Attention` (q/k/v biases), `Qwen3Attention`
//! (RMSNorm on each query and key head) and `LlamaAttention` (optional biases).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::config::ModelConfig;
use super::kv_cache::LayerKv;
use super::linear::Linear;
use super::pass::Pass;
use super::rope::apply_rope;
use super::tree::{TensorSupply, children};
use crate::Result;
use crate::model::norm::rms_norm;

/// `self_attn` of one decoder layer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Query projection, `hidden → heads·head_dim`.
    pub q_proj: Linear,
    /// Key projection, `hidden → kv_heads·head_dim`.
    pub k_proj: Linear,
    /// Value projection, `hidden → kv_heads·head_dim`.
    pub v_proj: Linear,
    /// Output projection, `heads·head_dim → hidden`.
    pub o_proj: Linear,
    /// RMSNorm weight over each query head, `[head_dim]` (Qwen3).
    pub q_norm: Option<Tensor<1>>,
    /// RMSNorm weight over each key head, `[head_dim]` (Qwen3).
    pub k_norm: Option<Tensor<1>>,
    /// The norms' epsilon.
    pub eps: f64,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

children!(Attention {
    q_proj,
    k_proj,
    v_proj,
    o_proj,
    q_norm,
    k_norm
});

impl Attention {
    /// The attention at `path` (`model.layers.N.self_attn`) as `config`'s layout has it.
    pub fn build(supply: &mut dyn TensorSupply, path: &str, config: &ModelConfig) -> Result<Self> {
        let (h, hd, layout) = (config.hidden_size, config.head_dim, config.layout);
        let (q, kv) = (
            config.num_attention_heads * hd,
            config.num_key_value_heads * hd,
        );
        let q_proj = supply.linear(&format!("{path}.q_proj"), h, q, layout.qkv_bias)?;
        let k_proj = supply.linear(&format!("{path}.k_proj"), h, kv, layout.qkv_bias)?;
        let v_proj = supply.linear(&format!("{path}.v_proj"), h, kv, layout.qkv_bias)?;
        let o_proj = supply.linear(&format!("{path}.o_proj"), q, h, layout.o_bias)?;
        let (q_norm, k_norm) = match layout.qk_norm {
            true => (
                Some(supply.norm(&format!("{path}.q_norm"), hd)?),
                Some(supply.norm(&format!("{path}.k_norm"), hd)?),
            ),
            false => (None, None),
        };
        Ok(Self {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            q_norm,
            k_norm,
            eps: config.rms_norm_eps,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: hd,
        })
    }

    /// Attends the new tokens to the cached ones and to each other; appends their keys and
    /// values to `cache`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `cache`: one layer's keys/values `[batch, kv_heads, cached, head_dim]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, pass: &Pass, cache: LayerKv<'_>) -> Tensor<3> {
        let mixes = pass.mixes;
        let [b, s, _] = x.dims();
        let split = |t: Tensor<3>, heads: usize, norm: &Option<Tensor<1>>| {
            let t = t.reshape([b, s, heads, self.head_dim]);
            let t = match norm {
                Some(w) => rms_norm(t, w.clone(), self.eps),
                None => t,
            };
            t.swap_dims(1, 2)
        };
        let q = split(
            self.q_proj.forward(x.clone(), mixes),
            self.heads,
            &self.q_norm,
        );
        let k = split(
            self.k_proj.forward(x.clone(), mixes),
            self.kv_heads,
            &self.k_norm,
        );
        let v = split(self.v_proj.forward(x, mixes), self.kv_heads, &None);
        let (k, v) = cache.append(k, v, &pass.rope);
        // A decode step on a GPU: one launch (on lavapipe a prompt's queries are faster
        // through burn's batched products, 552 against 275 tok/s for the toy model's prefill).
        if s == 1 && crate::gpu_fused::serves(&q) && !k.is_tracked() && !v.is_tracked() {
            let out = crate::gpu_fused::attention(q, &pass.rope, k, v, pass.mask.clone());
            return self.o_proj.forward(out, mixes);
        }
        let q = apply_rope(q, &pass.rope);
        // The query heads that share a key/value head, stacked along the sequence
        // (`[b, kv_heads, group·s, head_dim]`), attend to it in one product: the repeated keys
        // and values are never built.
        let (kv, group, d) = (self.kv_heads, self.heads / self.kv_heads, self.head_dim);
        let t = k.dims()[2];
        let q = q.reshape([b, kv, group * s, d]);
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f64).sqrt());
        let scores = scores.reshape([b, kv, group, s, t]) + pass.mask.clone().unsqueeze_dim::<5>(1);
        let weights = softmax(scores, 4).reshape([b, kv, group * s, t]);
        let out = weights.matmul(v).reshape([b, self.heads, s, d]);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, self.heads * d]), mixes)
    }
}
