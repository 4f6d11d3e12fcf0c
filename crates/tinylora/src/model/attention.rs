//! Grouped-query self-attention with q/k/v biases and RoPE (`Qwen2Attention`).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::linear::Linear;
use super::rope::{RopeTables, apply_rope};

/// `self_attn` of one decoder layer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Query projection, `hidden → heads·head_dim`, with bias.
    pub q_proj: Linear,
    /// Key projection, `hidden → kv_heads·head_dim`, with bias.
    pub k_proj: Linear,
    /// Value projection, `hidden → kv_heads·head_dim`, with bias.
    pub v_proj: Linear,
    /// Output projection, `heads·head_dim → hidden`, no bias.
    pub o_proj: Linear,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl Attention {
    /// Attends the new tokens to the cached ones and to each other; appends their keys and
    /// values to `cache`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `mask`: `[batch, 1, seq, cached + seq]` (additive)
    /// - `cache`: keys/values `[batch, kv_heads, cached, head_dim]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        mask: Tensor<4>,
        cache: &mut Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let split =
            |t: Tensor<3>, heads: usize| t.reshape([b, s, heads, self.head_dim]).swap_dims(1, 2);
        let q = apply_rope(split(self.q_proj.forward(x.clone()), self.heads), rope);
        let k = apply_rope(split(self.k_proj.forward(x.clone()), self.kv_heads), rope);
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let (k, v) = match cache.take() {
            Some((k0, v0)) => (Tensor::cat(vec![k0, k], 2), Tensor::cat(vec![v0, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        // The query heads that share a key/value head, stacked along the sequence
        // (`[b, kv_heads, group·s, head_dim]`), attend to it in one product: the repeated keys
        // and values are never built.
        let (kv, group, d) = (self.kv_heads, self.heads / self.kv_heads, self.head_dim);
        let t = k.dims()[2];
        let q = q.reshape([b, kv, group * s, d]);
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f64).sqrt());
        let scores = scores.reshape([b, kv, group, s, t]) + mask.unsqueeze_dim::<5>(1);
        let weights = softmax(scores, 4).reshape([b, kv, group * s, t]);
        let out = weights.matmul(v).reshape([b, self.heads, s, d]);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, self.heads * d]))
    }
}
