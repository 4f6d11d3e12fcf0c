//! The key/value cache of a batch of left-padded sequences.

use std::collections::HashMap;

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Keys and values of every layer for the tokens seen so far.
///
/// Rows are left-padded: row `b` starts with `pads[b]` padding tokens that no query attends
/// to, and its real tokens have positions `0, 1, ...`.
pub struct KvCache {
    /// Per layer, keys and values `[batch, kv_heads, len, head_dim]`.
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Left padding of each row.
    pub pads: Vec<usize>,
    /// Tokens (padding included) already in the cache.
    pub len: usize,
}

/// Added to the attention scores of masked keys (finite, so fully masked rows stay finite).
const MASKED: f32 = -1e30;

impl KvCache {
    /// An empty cache for `layers` layers and rows with the given left padding.
    pub fn new(layers: usize, pads: Vec<usize>) -> Self {
        Self {
            layers: vec![None; layers],
            pads,
            len: 0,
        }
    }

    /// Keeps only the rows `rows` (in that order): finished rows leave a batch being decoded.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        let ids: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        for (k, v) in self.layers.iter_mut().flatten() {
            let index =
                Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &k.device());
            *k = k.clone().select(0, index.clone());
            *v = v.clone().select(0, index);
        }
        self.pads = rows.iter().map(|&r| self.pads[r]).collect();
    }

    /// The rows of `tokens` that differ in their tokens or their padding: the index of each
    /// distinct row's first occurrence, and for every row the index of its distinct row in
    /// that list.
    pub fn distinct_rows(&self, tokens: &[Vec<u32>]) -> (Vec<usize>, Vec<usize>) {
        let mut seen: HashMap<(&[u32], usize), usize> = HashMap::new();
        let mut firsts = Vec::new();
        let of_row = tokens
            .iter()
            .zip(&self.pads)
            .enumerate()
            .map(|(i, (row, &pad))| {
                *seen.entry((row.as_slice(), pad)).or_insert_with(|| {
                    firsts.push(i);
                    firsts.len() - 1
                })
            })
            .collect();
        (firsts, of_row)
    }

    /// Positions of the next `seq` tokens of each row (`[batch][seq]`); padding gets 0.
    pub fn positions(&self, seq: usize) -> Vec<Vec<usize>> {
        self.pads
            .iter()
            .map(|&pad| {
                (self.len..self.len + seq)
                    .map(|t| t.saturating_sub(pad))
                    .collect()
            })
            .collect()
    }

    /// The additive attention mask for the next `seq` queries against all `len + seq` keys:
    /// causal, and padding keys masked (a padding query sees only itself).
    ///
    /// # Shapes
    /// - output: `[batch, 1, seq, len + seq]`
    pub fn mask(&self, seq: usize, device: &Device) -> Tensor<4> {
        let total = self.len + seq;
        let mut values = Vec::with_capacity(self.pads.len() * seq * total);
        for &pad in &self.pads {
            for q in self.len..total {
                for k in 0..total {
                    let visible = k <= q && (k >= pad || k == q);
                    values.push(if visible { 0.0 } else { MASKED });
                }
            }
        }
        Tensor::from_data(
            TensorData::new(values, [self.pads.len(), 1, seq, total]),
            device,
        )
    }
}
