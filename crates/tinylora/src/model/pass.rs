//! What the layers of one forward pass share.

use burn::tensor::Tensor;

use super::linear::Mixes;
use super::rope::RopeTables;

/// What every layer of one forward pass shares.
pub struct Pass<'a> {
    /// RoPE tables of the new positions.
    pub rope: RopeTables,
    /// Additive attention mask, `[batch, 1, seq, cached + seq]`.
    pub mask: Tensor<4>,
    /// The adapter's mixing matrices for this pass.
    pub mixes: &'a Mixes,
}
