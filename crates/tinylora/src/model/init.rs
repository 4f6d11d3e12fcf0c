//! A freshly initialised model, for training from scratch: every matrix drawn from
//! `N(0, std²)` (Hugging Face's `initializer_range`, 0.02 for Qwen2), norms at one, biases at
//! zero; deterministic in the seed on every platform (SplitMix64 + Box–Muller).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::Device;

use super::config::Qwen2Config;
use super::qwen2::Qwen2ForCausalLM;
use crate::Result;
use crate::adapter::projection::normals;
use crate::weights::{HostTensor, TensorSource};

/// Tensors held in memory under their Hugging Face names.
struct MemorySource(BTreeMap<String, HostTensor>);

impl TensorSource for MemorySource {
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.0.get(name).map(|t| t.shape.clone())
    }

    fn read(&mut self, name: &str) -> Result<HostTensor> {
        Ok(self
            .0
            .remove(name)
            .expect("the loader asks for listed names"))
    }

    fn origin(&self, _: &str) -> PathBuf {
        PathBuf::from("<random initialisation>")
    }
}

/// How many weights `config`'s architecture has (a tied `lm_head` counted once).
pub fn parameter_count(config: &Qwen2Config) -> usize {
    parameter_shapes(config)
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum()
}

/// Every weight of `config`'s architecture with its Hugging Face name and shape.
pub fn parameter_shapes(config: &Qwen2Config) -> Vec<(String, Vec<usize>)> {
    let (h, v, m) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size,
    );
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.num_key_value_heads * config.head_dim();
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.q_proj.bias", vec![q]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.k_proj.bias", vec![kv]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.bias", vec![kv]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![m, h]),
            ("mlp.up_proj.weight", vec![m, h]),
            ("mlp.down_proj.weight", vec![h, m]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    out
}

impl Qwen2ForCausalLM {
    /// A new model of `config`'s architecture with random weights on `device`.
    pub fn init_random(config: &Qwen2Config, seed: u64, std: f64, device: &Device) -> Result<Self> {
        let tensors = parameter_shapes(config)
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n = shape.iter().product();
                let values = if name.ends_with("norm.weight") {
                    vec![1.0; n]
                } else if name.ends_with(".bias") {
                    vec![0.0; n]
                } else {
                    normals(seed, i, n)
                        .into_iter()
                        .map(|x| (x * std) as f32)
                        .collect()
                };
                (name, HostTensor { shape, values })
            })
            .collect();
        Self::load(config, &mut MemorySource(tensors), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Qwen2Config {
        Qwen2Config {
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: true,
            eos_token_ids: vec![0],
        }
    }

    #[test]
    fn random_models_are_seeded_and_scaled() {
        let device = Device::flex();
        let a = Qwen2ForCausalLM::init_random(&tiny(), 7, 0.02, &device).unwrap();
        let b = Qwen2ForCausalLM::init_random(&tiny(), 7, 0.02, &device).unwrap();
        let c = Qwen2ForCausalLM::init_random(&tiny(), 8, 0.02, &device).unwrap();
        let values = |m: &Qwen2ForCausalLM, name: &str| {
            let (_, _, t) = m
                .named_tensors()
                .into_iter()
                .find(|(n, _, _)| n == name)
                .unwrap();
            t.into_data().try_to_vec::<f32>().unwrap()
        };
        let q = "model.layers.1.self_attn.q_proj.weight";
        assert_eq!(values(&a, q), values(&b, q));
        assert_ne!(values(&a, q), values(&c, q));
        let embed = values(&a, "model.embed_tokens.weight");
        let std = (embed.iter().map(|x| x * x).sum::<f32>() / embed.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.003, "{std}");
        assert!(values(&a, "model.norm.weight").iter().all(|&x| x == 1.0));
        assert!(
            values(&a, "model.layers.0.self_attn.k_proj.bias")
                .iter()
                .all(|&x| x == 0.0)
        );
        let names: Vec<String> = a.named_tensors().into_iter().map(|(n, _, _)| n).collect();
        let listed: Vec<String> = parameter_shapes(&tiny())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names.len(), listed.len());
    }
}
