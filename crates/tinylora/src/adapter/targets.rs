//! The adapted linear layers of a model, in checkpoint order (layer-major; q, k, v, o, gate,
//! up, down within a layer), with their Hugging Face module paths: found in one walk of the
//! model's tree.

use super::config::{ALL_TARGETS, TinyLoraConfig};
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

/// A target layer: where it is, and the layer (`&Linear` or `&mut Linear`).
pub struct Target<L> {
    /// Module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    /// Projection kind, one of [`ALL_TARGETS`].
    pub kind: &'static str,
    /// Decoder layer.
    pub layer: usize,
    /// The layer itself.
    pub linear: L,
}

/// The layer and kind of the module at `path` when it is a projection named in `targets`.
fn as_target(path: &str, targets: &[String]) -> Option<(usize, &'static str)> {
    let (layer, _) = path.strip_prefix("model.layers.")?.split_once('.')?;
    let layer = layer.parse().ok()?;
    let kind = ALL_TARGETS
        .into_iter()
        .find(|kind| targets.iter().any(|t| t == kind) && module_path(layer, kind) == path)?;
    Some((layer, kind))
}

/// The `linears` (path, layer) that `targets` names, in checkpoint order.
fn select<L>(linears: impl Iterator<Item = (String, L)>, targets: &[String]) -> Vec<Target<L>> {
    let mut found: Vec<Target<L>> = linears
        .filter_map(|(path, linear)| {
            let (layer, kind) = as_target(&path, targets)?;
            Some(Target {
                path,
                kind,
                layer,
                linear,
            })
        })
        .collect();
    found.sort_by_key(|t| (t.layer, ALL_TARGETS.iter().position(|k| *k == t.kind)));
    found
}

/// `model`'s layers that `targets` names, in checkpoint order.
pub fn targets<'a>(model: &'a CausalLm, targets: &[String]) -> Vec<Target<&'a Linear>> {
    let nodes = model.nodes().into_iter();
    select(
        nodes.filter_map(|(path, n)| Some((path, n.linear()?))),
        targets,
    )
}

/// [`targets`], mutably (to attach an adapter).
pub fn targets_mut<'a>(model: &'a mut CausalLm, targets: &[String]) -> Vec<Target<&'a mut Linear>> {
    let nodes = model.nodes_mut().into_iter();
    select(
        nodes.filter_map(|(path, n)| Some((path, n.linear()?))),
        targets,
    )
}

/// Checks `config` against [`limits`] on `model`'s target shapes, before any basis work: the
/// error says which limit an adapter exceeds.
pub fn check_limits(model: &CausalLm, config: &TinyLoraConfig) -> Result<(), String> {
    let shapes: Vec<ModuleShape> = targets(model, &config.targets)
        .into_iter()
        .map(|t| {
            let (d_in, d_out) = t.linear.dims();
            ModuleShape {
                path: t.path,
                d_in,
                d_out,
            }
        })
        .collect();
    limits::check(config, &shapes)
}

#[cfg(test)]
mod tests {
    use super::as_target;

    #[test]
    fn paths_of_targets() {
        let targets = ["q_proj".to_string(), "down_proj".to_string()];
        assert_eq!(
            as_target("model.layers.12.self_attn.q_proj", &targets),
            Some((12, "q_proj"))
        );
        assert_eq!(
            as_target("model.layers.0.mlp.down_proj", &targets),
            Some((0, "down_proj"))
        );
        for other in [
            "model.layers.0.mlp.up_proj",         // not a target
            "model.layers.0.self_attn.down_proj", // wrong block
            "model.layers.x.self_attn.q_proj",
            "lm_head",
        ] {
            assert_eq!(as_target(other, &targets), None, "{other}");
        }
    }
}
