//! Rotary position embeddings (RoPE) as in Hugging Face's `Qwen2RotaryEmbedding`: the two
//! halves of each head are rotated by `position · θ^(-2i/d)`, with the frequencies rescaled
//! for Llama 3.1's long context where the config says.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::{ModelConfig, RopeScaling};

/// Cosines and sines for a block of positions, ready to broadcast over heads.
///
/// # Shapes
/// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
pub struct RopeTables {
    /// `cos(position · inv_freq)`, both halves.
    pub cos: Tensor<4>,
    /// `sin(position · inv_freq)`, both halves.
    pub sin: Tensor<4>,
}

/// The rotation frequencies `θ^(-2i/d)`, `i < d/2`, rounded to f32 as transformers computes
/// them, then rescaled as `config.rope_scaling` says (transformers' `llama3` rule, or GGUF's
/// per-frequency divisors).
pub fn inverse_frequencies(config: &ModelConfig) -> Vec<f64> {
    let d = config.head_dim;
    let base = (0..d / 2)
        .map(|i| f64::from((1.0 / config.rope_theta.powf(2.0 * i as f64 / d as f64)) as f32));
    let scaled: Vec<f64> = match &config.rope_scaling {
        None => base.collect(),
        Some(RopeScaling::Divisors(divisors)) => base
            .zip(divisors)
            .map(|(f, &div)| f / f64::from(div))
            .collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: context,
        }) => base
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < context / high_freq_factor {
                    f
                } else if wavelen > context / low_freq_factor {
                    f / factor
                } else {
                    let smooth = (context / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect(),
    };
    scaled.into_iter().map(|f| f64::from(f as f32)).collect()
}

/// Builds the tables for `positions` (`[batch][seq]`), computing the angles in f64.
pub fn rope_tables(positions: &[Vec<usize>], config: &ModelConfig, device: &Device) -> RopeTables {
    let head_dim = config.head_dim;
    let batch = positions.len();
    let seq = positions.first().map_or(0, Vec::len);
    let inv_freq = inverse_frequencies(config);
    let mut cos = Vec::with_capacity(batch * seq * head_dim);
    let mut sin = Vec::with_capacity(batch * seq * head_dim);
    for row in positions {
        for &p in row {
            for _ in 0..2 {
                for f in &inv_freq {
                    let angle = f64::from((p as f64 * f) as f32);
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
    }
    let shape = [batch, 1, seq, head_dim];
    RopeTables {
        cos: Tensor::from_data(TensorData::new(cos, shape), device),
        sin: Tensor::from_data(TensorData::new(sin, shape), device),
    }
}

/// Rotates `x` by the tables. On a GPU, when `x` is not part of an autodiff graph, one fused
/// kernel ([`crate::gpu_fused`]); otherwise burn's differentiable operations.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - output: same as `x`
pub fn apply_rope(x: Tensor<4>, tables: &RopeTables) -> Tensor<4> {
    if crate::gpu_fused::serves(&x) {
        return crate::gpu_fused::rope(x, tables.cos.clone(), tables.sin.clone());
    }
    let [b, h, s, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..s, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x.mul(tables.cos.clone()) + rotated.mul(tables.sin.clone())
}
