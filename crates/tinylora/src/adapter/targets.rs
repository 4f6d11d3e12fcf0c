//! The adapted linear layers of a model, in checkpoint order (layer-major; q, k, v, o, gate,
//! up, down within a layer), with their Hugging Face module paths.

use super::config::TinyLoraConfig;
use super::limits::{self, ModuleShape};
use crate::model::CausalLm;
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

/// The linear layer of projection `kind` in layer `layer` (every architecture has the seven).
pub fn linear_mut<'a>(model: &'a mut CausalLm, layer: usize, kind: &str) -> &'a mut Linear {
    let path = module_path(layer, kind);
    model
        .linear_mut(&path)
        .unwrap_or_else(|| panic!("every decoder layer has {path}"))
}

/// Checks `config` against [`limits`] on `model`'s target shapes, before any basis work: the
/// error says which limit an adapter exceeds.
pub fn check_limits(model: &mut CausalLm, config: &TinyLoraConfig) -> Result<(), String> {
    let shapes: Vec<ModuleShape> = target_modules(model.config.num_hidden_layers, &config.targets)
        .into_iter()
        .map(|(path, kind, layer)| {
            let (d_in, d_out) = linear_mut(model, layer, kind).dims();
            ModuleShape { path, d_in, d_out }
        })
        .collect();
    limits::check(config, &shapes)
}
