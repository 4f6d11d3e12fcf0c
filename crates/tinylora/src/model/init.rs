//! A freshly initialised model, for training from scratch: every matrix drawn from
//! `N(0, std²)` (Hugging Face's `initializer_range`, 0.02 for Qwen2), norms at one, biases at
//! zero; deterministic in the seed on every platform (SplitMix64 + Box–Muller). The `i`-th
//! tensor the tree asks for is drawn from stream `i` of the seed.

use burn::tensor::{Device, Tensor, TensorData};

use super::causal_lm::CausalLm;
use super::config::ModelConfig;
use super::tree::{TensorSupply, VectorRole};
use super::weight::Weight;
use crate::Result;
use crate::rng::normals;

/// Random tensors in the order the tree asks for them.
struct RandomSupply<'a> {
    seed: u64,
    std: f64,
    /// How many tensors were supplied so far (the stream of the next one).
    index: usize,
    device: &'a Device,
}

impl TensorSupply for RandomSupply<'_> {
    fn matrix(&mut self, _: &str, rows: usize, cols: usize) -> Result<Weight> {
        let values = normals(self.seed, self.index, rows * cols)
            .into_iter()
            .map(|x| (x * self.std) as f32)
            .collect();
        self.index += 1;
        Ok(Weight::from_values(values, [rows, cols], self.device))
    }

    fn vector(&mut self, _: &str, len: usize, role: VectorRole) -> Result<Tensor<1>> {
        self.index += 1;
        let value = match role {
            VectorRole::Norm => 1.0,
            VectorRole::Bias => 0.0,
        };
        Ok(Tensor::from_data(
            TensorData::new(vec![value; len], [len]),
            self.device,
        ))
    }
}

impl CausalLm {
    /// A new model of `config`'s architecture with random weights on `device`.
    pub fn init_random(config: &ModelConfig, seed: u64, std: f64, device: &Device) -> Result<Self> {
        let mut supply = RandomSupply {
            seed,
            std,
            index: 0,
            device,
        };
        Self::build(config, &mut supply, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mixes;

    fn tiny() -> ModelConfig {
        ModelConfig::qwen2(40, 16, 24, 2, 4, 2, 10000.0, true)
    }

    #[test]
    fn random_models_are_seeded_and_scaled() {
        let device = Device::flex();
        let a = CausalLm::init_random(&tiny(), 7, 0.02, &device).unwrap();
        let b = CausalLm::init_random(&tiny(), 7, 0.02, &device).unwrap();
        let c = CausalLm::init_random(&tiny(), 8, 0.02, &device).unwrap();
        let values = |m: &CausalLm, name: &str| {
            let (_, _, t) = m
                .named_tensors(&Mixes::none())
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
        // Embedding, 2 × (2 norms + q, k, v with biases + o, gate, up, down), final norm.
        assert_eq!(a.named_tensors(&Mixes::none()).len(), 1 + 2 * 12 + 1);
        assert_eq!(
            a.parameter_count(),
            40 * 16 + 2 * (2 * 16 + (16 * 16 + 16) + 2 * (8 * 16 + 8) + 16 * 16 + 3 * 16 * 24) + 16
        );
    }
}
