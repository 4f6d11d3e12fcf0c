//! The adapted linear layers of a model, in checkpoint order (layer-major; q, k, v, o, gate,
//! up, down within a layer), with their Hugging Face module paths.

use super::config::TinyLoraConfig;
use super::limits::{self, ModuleShape};
use crate::model::Qwen2ForCausalLM;
use crate::model::linear::Linear;

/// The module path of projection `kind` in layer `layer`, e.g. `model.layers.0.self_attn.q_proj`.
pub fn module_path(layer: usize, kind: &str) -> String {
    let block = if matches!(kind, "gate_proj" | "up_proj" | "down_proj") {
        "mlp"
    } else {
        "self_attn"
    };
    format!("model.layers.{layer}.{block}.{kind}")
}

/// `(path, kind, layer)` of every target present in the model, in checkpoint order.
pub fn target_modules(layers: usize, targets: &[String]) -> Vec<(String, &'static str, usize)> {
    let mut out = Vec::new();
    for layer in 0..layers {
        for kind in super::config::ALL_TARGETS {
            if targets.iter().any(|t| t == kind) {
                out.push((module_path(layer, kind), kind, layer));
            }
        }
    }
    out
}

/// The linear layer of projection `kind` in layer `layer`.
pub fn linear_mut<'a>(model: &'a mut Qwen2ForCausalLM, layer: usize, kind: &str) -> &'a mut Linear {
    let block = &mut model.model.layers[layer];
    match kind {
        "q_proj" => &mut block.self_attn.q_proj,
        "k_proj" => &mut block.self_attn.k_proj,
        "v_proj" => &mut block.self_attn.v_proj,
        "o_proj" => &mut block.self_attn.o_proj,
        "gate_proj" => &mut block.mlp.gate_proj,
        "up_proj" => &mut block.mlp.up_proj,
        _ => &mut block.mlp.down_proj,
    }
}

/// Checks `config` against [`limits`] on `model`'s target shapes, before any basis work: the
/// error says which limit an adapter exceeds.
pub fn check_limits(model: &mut Qwen2ForCausalLM, config: &TinyLoraConfig) -> Result<(), String> {
    let shapes: Vec<ModuleShape> = target_modules(model.config.num_hidden_layers, &config.targets)
        .into_iter()
        .map(|(path, kind, layer)| {
            let (d_in, d_out) = linear_mut(model, layer, kind).dims();
            ModuleShape { path, d_in, d_out }
        })
        .collect();
    limits::check(config, &shapes)
}
