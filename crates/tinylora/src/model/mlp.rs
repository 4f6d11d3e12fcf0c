//! The SwiGLU feed-forward block (`Qwen2MLP`): `down(silu(gate(x)) · up(x))`.

use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::linear::Linear;

/// `mlp` of one decoder layer.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `hidden → intermediate`, no bias.
    pub gate_proj: Linear,
    /// `hidden → intermediate`, no bias.
    pub up_proj: Linear,
    /// `intermediate → hidden`, no bias.
    pub down_proj: Linear,
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
