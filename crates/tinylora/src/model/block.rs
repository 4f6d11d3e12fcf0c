//! One pre-norm decoder layer (`Qwen2DecoderLayer`, `LlamaDecoderLayer`, ...).

use burn::tensor::Tensor;

use super::attention::Attention;
use super::config::ModelConfig;
use super::kv_cache::LayerKv;
use super::mlp::Mlp;
use super::pass::Pass;
use super::tree::{TensorSupply, children};
use crate::Result;
use crate::model::norm::rms_norm;

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
    /// The norms' epsilon.
    pub eps: f64,
}

// The norms first: the order random initialisation draws in (and full training updates in).
children!(DecoderLayer {
    input_layernorm,
    post_attention_layernorm,
    self_attn,
    mlp
});

impl DecoderLayer {
    /// Layer `path` (`model.layers.N`).
    pub fn build(supply: &mut dyn TensorSupply, path: &str, config: &ModelConfig) -> Result<Self> {
        let h = config.hidden_size;
        let input_layernorm = supply.norm(&format!("{path}.input_layernorm"), h)?;
        let post_attention_layernorm =
            supply.norm(&format!("{path}.post_attention_layernorm"), h)?;
        Ok(Self {
            input_layernorm,
            self_attn: Attention::build(supply, &format!("{path}.self_attn"), config)?,
            post_attention_layernorm,
            mlp: Mlp::build(supply, &format!("{path}.mlp"), config)?,
            eps: config.rms_norm_eps,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, pass: &Pass, cache: LayerKv<'_>) -> Tensor<3> {
        let normed = rms_norm(x.clone(), self.input_layernorm.clone(), self.eps);
        let x = x + self.self_attn.forward(normed, pass, cache);
        let normed = rms_norm(x.clone(), self.post_attention_layernorm.clone(), self.eps);
        x + self.mlp.forward(normed, pass.mixes)
    }
}
