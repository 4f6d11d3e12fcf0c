//! One pre-norm decoder layer (`Qwen2DecoderLayer`, `LlamaDecoderLayer`, ...).

use burn::tensor::Tensor;

use super::attention::Attention;
use super::config::ModelConfig;
use super::kv_cache::LayerKv;
use super::mlp::Mlp;
use super::pass::Pass;
use super::tree::{TensorSupply, children};
use crate::Result;
use crate::model::norm::{add_rms_norm, rms_norm};

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
    /// - `x`: the residual stream `[batch, seq, hidden]`
    /// - output: the stream with this layer's attention added and its MLP output pending
    pub fn forward(&self, x: Residual, pass: &Pass, cache: LayerKv<'_>) -> Residual {
        let (x, normed) = x.normed(self.input_layernorm.clone(), self.eps);
        let attended = self.self_attn.forward(normed, pass, cache);
        let (x, normed) =
            add_rms_norm(x, attended, self.post_attention_layernorm.clone(), self.eps);
        Residual {
            stream: x,
            pending: Some(self.mlp.forward(normed, pass.mixes)),
        }
    }
}

/// The decoder's residual stream, with the last block's output not yet added: the next
/// RMSNorm adds it ([`add_rms_norm`], one kernel on a GPU where burn needs an addition and the
/// norm's own launches).
pub struct Residual {
    /// The stream so far, `[batch, seq, hidden]`.
    pub stream: Tensor<3>,
    /// A block's output to add to it, `[batch, seq, hidden]`.
    pub pending: Option<Tensor<3>>,
}

impl Residual {
    /// The stream with its pending output added, and its RMSNorm with `weight`.
    ///
    /// # Shapes
    /// - `weight`: `[hidden]`; outputs: `[batch, seq, hidden]` each
    pub fn normed(self, weight: Tensor<1>, eps: f64) -> (Tensor<3>, Tensor<3>) {
        match self.pending {
            Some(pending) => add_rms_norm(self.stream, pending, weight, eps),
            None => (self.stream.clone(), rms_norm(self.stream, weight, eps)),
        }
    }
}
