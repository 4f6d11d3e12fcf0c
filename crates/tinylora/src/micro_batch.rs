//! How many sequences one forward/backward of log-probabilities takes.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;

/// Bytes the largest activation of an automatic micro-batch may take: logits
/// `[rows, seq, vocab]` or attention scores `[rows, heads, seq, seq]`, f32. A few MiB keeps
/// the tensors in the CPU's caches: on the toy recipe (2 cores) the update takes ~3 s per step
/// in micro-batches of 8–16 sequences against 4–6 s in one of 128.
pub const AUTO_BYTES: usize = 4 << 20;

/// Sequences per forward/backward; their losses and gradients add up to the mini-batch's. In
/// config files a count, `0` for [`MicroBatch::Auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "usize", into = "usize")]
pub enum MicroBatch {
    /// As many as keep the largest activation within [`AUTO_BYTES`] (at least one): tensors
    /// that stay in cache, and padding only to the longest row of each micro-batch.
    #[default]
    Auto,
    /// At most this many (at least one).
    Rows(usize),
}

impl From<usize> for MicroBatch {
    /// A config's count: 0 means [`MicroBatch::Auto`].
    fn from(count: usize) -> Self {
        match count {
            0 => MicroBatch::Auto,
            n => MicroBatch::Rows(n),
        }
    }
}

impl From<MicroBatch> for usize {
    fn from(micro_batch: MicroBatch) -> Self {
        match micro_batch {
            MicroBatch::Auto => 0,
            MicroBatch::Rows(n) => n,
        }
    }
}

impl MicroBatch {
    /// Rows per micro-batch for sequences of up to `seq` tokens on `config`'s model.
    pub fn rows(self, config: &ModelConfig, seq: usize) -> usize {
        self.rows_for(config.vocab_size, config.num_attention_heads, seq)
    }

    /// [`rows`](Self::rows) for a vocabulary of `vocab` and `heads` attention heads.
    fn rows_for(self, vocab: usize, heads: usize, seq: usize) -> usize {
        match self {
            MicroBatch::Rows(n) => n.max(1),
            MicroBatch::Auto => {
                let widest = vocab.max(heads * seq);
                let per_row = seq.max(1) * widest * std::mem::size_of::<f32>();
                (AUTO_BYTES / per_row.max(1)).max(1)
            }
        }
    }

    /// `rows` cut into micro-batches, `length(i)` the tokens of row `i`.
    pub fn chunks<'a>(
        self,
        config: &ModelConfig,
        rows: &'a [usize],
        length: impl Fn(usize) -> usize,
    ) -> std::slice::Chunks<'a, usize> {
        let seq = rows.iter().map(|&i| length(i)).max().unwrap_or(0);
        rows.chunks(self.rows(config, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_micro_batches_fit_the_budget() {
        // The toy model, 100 tokens: logits 100 × 485 × 4 bytes = 189 KiB a row, 21 in 4 MiB.
        assert_eq!(MicroBatch::Auto.rows_for(485, 4, 100), 21);
        // 136 tokens: the scores of 4 heads (544 wide) outgrow the vocabulary: 289 KiB, 14 rows.
        assert_eq!(MicroBatch::Auto.rows_for(485, 4, 136), 14);
        // A real vocabulary: one row at a time.
        assert_eq!(MicroBatch::Auto.rows_for(151_936, 14, 400), 1);
        // Attention wider than the vocabulary: 4 heads × 2000 tokens.
        assert_eq!(MicroBatch::Auto.rows_for(100, 4, 2000), 1);
        assert_eq!(MicroBatch::Rows(0).rows_for(100, 4, 10), 1);
        assert_eq!(MicroBatch::Rows(7).rows_for(100, 4, 10), 7);
        assert_eq!(MicroBatch::from(0), MicroBatch::Auto);
        assert_eq!(MicroBatch::from(3), MicroBatch::Rows(3));
        assert_eq!(usize::from(MicroBatch::Auto), 0);
    }
}
