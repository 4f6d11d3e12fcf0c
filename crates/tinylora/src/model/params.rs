//! Mutable access to every weight of a model, for full-parameter training (the frozen-base
//! TinyLoRA path never needs it).

use burn::tensor::Tensor;

use super::linear::Linear;
use super::qwen2::Qwen2ForCausalLM;
use super::weight::Weight;
use crate::{Error, Result};

/// One trainable tensor: a vector (norm weight, bias) or a matrix (embedding, linear `W`).
pub enum ParamMut<'a> {
    /// `[n]`.
    Vector(&'a mut Tensor<1>),
    /// `[rows, cols]`.
    Matrix(&'a mut Tensor<2>),
}

fn matrix(w: &mut Weight) -> Result<ParamMut<'_>> {
    w.dense_mut().map(ParamMut::Matrix).ok_or_else(|| {
        Error::InvalidInput(
            "full-parameter training needs f32 weights, and this model holds quantised blocks"
                .into(),
        )
    })
}

fn linear<'a>(out: &mut Vec<ParamMut<'a>>, l: &'a mut Linear) -> Result<()> {
    out.push(matrix(&mut l.weight)?);
    if let Some(b) = l.bias.as_mut() {
        out.push(ParamMut::Vector(b));
    }
    Ok(())
}

impl Qwen2ForCausalLM {
    /// Every weight, in a fixed order (embedding, then each layer's norms, attention and MLP,
    /// then the final norm and an untied `lm_head`); an error for quantised weights.
    pub fn params_mut(&mut self) -> Result<Vec<ParamMut<'_>>> {
        let mut out = vec![matrix(&mut self.model.embed_tokens)?];
        for layer in &mut self.model.layers {
            out.push(ParamMut::Vector(&mut layer.input_layernorm));
            out.push(ParamMut::Vector(&mut layer.post_attention_layernorm));
            let a = &mut layer.self_attn;
            for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
                linear(&mut out, l)?;
            }
            let m = &mut layer.mlp;
            for l in [&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj] {
                linear(&mut out, l)?;
            }
        }
        out.push(ParamMut::Vector(&mut self.model.norm));
        if let Some(head) = self.lm_head.as_mut() {
            linear(&mut out, head)?;
        }
        Ok(out)
    }
}
