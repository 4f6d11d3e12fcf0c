//! One pre-norm decoder layer (`Qwen2DecoderLayer`).

use burn::tensor::Tensor;

use super::attention::Attention;
use super::mlp::Mlp;
use super::rope::RopeTables;
use crate::ops::rms_norm;

/// `model.layers.N`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// RMSNorm weight before attention, `[hidden]`.
    pub input_layernorm: Tensor<1>,
    /// Self-attention.
    pub self_attn: Attention,
    /// RMSNorm weight before the MLP, `[hidden]`.
    pub post_attention_layernorm: Tensor<1>,
    /// Feed-forward block.
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        mask: Tensor<4>,
        cache: &mut Option<(Tensor<4>, Tensor<4>)>,
        eps: f64,
    ) -> Tensor<3> {
        let normed = rms_norm(x.clone(), self.input_layernorm.clone(), eps);
        let x = x + self.self_attn.forward(normed, rope, mask, cache);
        let normed = rms_norm(x.clone(), self.post_attention_layernorm.clone(), eps);
        x + self.mlp.forward(normed)
    }
}
