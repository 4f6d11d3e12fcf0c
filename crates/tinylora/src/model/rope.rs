//! Rotary position embeddings (RoPE) as in Hugging Face's `Qwen2RotaryEmbedding`: the two
//! halves of each head are rotated by `position · θ^(-2i/d)`.

use burn::tensor::{Device, Tensor, TensorData};

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

/// Builds the tables for `positions` (`[batch][seq]`), computing the angles in f64.
pub fn rope_tables(
    positions: &[Vec<usize>],
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> RopeTables {
    let batch = positions.len();
    let seq = positions.first().map_or(0, Vec::len);
    let half = head_dim / 2;
    // HF computes inv_freq in f32; do the same so angles agree at large positions.
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| f64::from((1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32))
        .collect();
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

/// Rotates `x` by the tables.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - output: same as `x`
pub fn apply_rope(x: Tensor<4>, tables: &RopeTables) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..s, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x.mul(tables.cos.clone()) + rotated.mul(tables.sin.clone())
}
