//! The SwiGLU feed-forward block (`Qwen2MLP`): `down(silu(gate(x)) · up(x))`; on a GPU,
//! `silu(gate(x)) · up(x)` in one launch reading both weights, or one after the products.

use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::config::ModelConfig;
use super::linear::{Linear, Mixes};
use super::tree::{TensorSupply, children};
use crate::Result;

/// `mlp` of one decoder layer.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `hidden → intermediate`.
    pub gate_proj: Linear,
    /// `hidden → intermediate`.
    pub up_proj: Linear,
    /// `intermediate → hidden`.
    pub down_proj: Linear,
}

children!(Mlp {
    gate_proj,
    up_proj,
    down_proj
});

impl Mlp {
    /// The MLP at `path` (`model.layers.N.mlp`).
    pub fn build(supply: &mut dyn TensorSupply, path: &str, config: &ModelConfig) -> Result<Self> {
        let (h, m, bias) = (
            config.hidden_size,
            config.intermediate_size,
            config.layout.mlp_bias,
        );
        Ok(Self {
            gate_proj: supply.linear(&format!("{path}.gate_proj"), h, m, bias)?,
            up_proj: supply.linear(&format!("{path}.up_proj"), h, m, bias)?,
            down_proj: supply.linear(&format!("{path}.down_proj"), m, h, bias)?,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, mixes: &Mixes) -> Tensor<3> {
        if let (Some(gate), Some(up)) = (
            self.gate_proj.bare_weight(mixes),
            self.up_proj.bare_weight(mixes),
        ) && let Some(hidden) = gate.gate_up(up, &x)
        {
            return self.down_proj.forward(hidden, mixes);
        }
        let gate = self.gate_proj.forward(x.clone(), mixes);
        let up = self.up_proj.forward(x, mixes);
        let hidden = match crate::gpu_fused::serves(&gate) {
            true => crate::gpu_fused::swiglu(gate, up),
            false => silu(gate) * up,
        };
        self.down_proj.forward(hidden, mixes)
    }
}
