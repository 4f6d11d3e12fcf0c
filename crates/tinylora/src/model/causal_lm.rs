//! The full causal language model (transformers' `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
//! `LlamaForCausalLM`).

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::block::{DecoderLayer, Residual};
use super::config::ModelConfig;
use super::kv_cache::KvCache;
use super::linear::{Linear, Mixes};
use super::pass::Pass;
use super::tree::{TensorSupply, children};
use super::weight::Weight;
use crate::{Error, Result};

/// `model`: embeddings, decoder layers and the final norm.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Token embeddings, `[vocab, hidden]`.
    pub embed_tokens: Weight,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final RMSNorm weight, `[hidden]`.
    pub norm: Tensor<1>,
}

children!(Decoder {
    embed_tokens,
    layers,
    norm
});

/// Which distinct row each row of a batch shares
/// ([`CausalLm::hidden_states_distinct`]); `None` when every row is distinct.
pub struct SharedRows(Option<Tensor<1, Int>>);

impl SharedRows {
    /// Values of the distinct rows, `[distinct, ...]`, given to every row: `[batch, ...]`
    /// (differentiable: the gradients of rows that share one add up).
    pub fn expand<const D: usize>(&self, values: Tensor<D>) -> Tensor<D> {
        match &self.0 {
            Some(index) => values.select(0, index.clone()),
            None => values,
        }
    }
}

/// A decoder with its language-model head.
#[derive(Debug, Clone)]
pub struct CausalLm {
    /// The architecture.
    pub config: ModelConfig,
    /// The decoder.
    pub model: Decoder,
    /// Untied output projection `hidden → vocab`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// Where the weights live.
    pub device: Device,
}

children!(CausalLm { model, lm_head });

impl CausalLm {
    /// Builds `config`'s tree on `device`, asking `supply` for every tensor.
    pub fn build(
        config: &ModelConfig,
        supply: &mut dyn TensorSupply,
        device: &Device,
    ) -> Result<Self> {
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let embed_tokens = supply.matrix("model.embed_tokens", vocab, h)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::build(supply, &format!("model.layers.{i}"), config))
            .collect::<Result<Vec<_>>>()?;
        let norm = supply.norm("model.norm", h)?;
        let lm_head = match config.tie_word_embeddings {
            true => None,
            false => Some(supply.linear("lm_head", h, vocab, false)?),
        };
        Ok(Self {
            config: config.clone(),
            model: Decoder {
                embed_tokens,
                layers,
                norm,
            },
            lm_head,
            device: device.clone(),
        })
    }

    /// Checks rows of token ids before a pass: none empty, every id in the vocabulary, the
    /// longest plus `new_tokens` within the context; the error says which rule failed.
    pub fn check_prompts(&self, rows: &[Vec<u32>], new_tokens: usize) -> Result<()> {
        let vocab = self.config.vocab_size;
        if let Some(i) = rows.iter().position(Vec::is_empty) {
            return Err(Error::InvalidInput(format!("prompt {i} is empty")));
        }
        if let Some(&bad) = rows.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let context = self.config.max_position_embeddings;
        if longest + new_tokens > context {
            return Err(Error::InvalidInput(format!(
                "prompt of {longest} tokens plus {new_tokens} new tokens exceeds the model's \
                 context of {context}"
            )));
        }
        Ok(())
    }

    /// An empty cache for rows with the given left padding.
    pub fn new_cache(&self, pads: Vec<usize>) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, pads)
    }

    /// An empty cache for a generation of at most `positions` tokens per row (padding, prompt
    /// and new tokens): its buffers are allocated once and written in place, where a
    /// concatenation copies the whole cache for every token.
    pub fn new_generation_cache(&self, pads: Vec<usize>, positions: usize) -> KvCache {
        KvCache::with_capacity(self.config.num_hidden_layers, pads, positions)
    }

    /// Runs the decoder over the next tokens of each row, with the adapter at `mixes`
    /// ([`Mixes::none`]: the base model), and appends them to `cache`. Returns the final
    /// hidden states.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`, all rows the same length
    /// - output: `[batch, seq, hidden]`
    pub fn hidden_states(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        mixes: &Mixes,
    ) -> Tensor<3> {
        let seq = tokens.first().map_or(0, Vec::len);
        let mut x = Residual {
            stream: self.model.embed_tokens.rows(tokens, &self.device),
            pending: None,
        };
        let (rope, mask) = cache.pass_tables(seq, &self.config, &self.device);
        let pass = Pass { rope, mask, mixes };
        for (i, layer) in self.model.layers.iter().enumerate() {
            x = layer.forward(x, &pass, cache.layer(i));
        }
        cache.len += seq;
        x.normed(self.model.norm.clone(), self.config.rms_norm_eps)
            .1
    }

    /// [`hidden_states`](Self::hidden_states) run once per distinct row (tokens and left
    /// padding): the samples of one prompt share its prefill, and their keys and values are
    /// copied to every row of `cache`. Returns the hidden states of the distinct rows and
    /// which of them each row of `tokens` shares.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`, all rows the same length
    /// - output: `[distinct, seq, hidden]`
    pub fn hidden_states_distinct(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        mixes: &Mixes,
    ) -> (Tensor<3>, SharedRows) {
        let (firsts, of_row) = cache.distinct_rows(tokens);
        if firsts.len() == tokens.len() {
            return (self.hidden_states(tokens, cache, mixes), SharedRows(None));
        }
        cache.keep_rows(&firsts);
        let distinct: Vec<Vec<u32>> = firsts.iter().map(|&i| tokens[i].clone()).collect();
        let hidden = self.hidden_states(&distinct, cache, mixes);
        cache.keep_rows(&of_row);
        let index = TensorData::new(of_row.iter().map(|&r| r as i32).collect(), [of_row.len()]);
        (
            hidden,
            SharedRows(Some(Tensor::from_data(index, &self.device))),
        )
    }

    /// Projects hidden states to vocabulary logits.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden, &Mixes::none()),
            None => self.model.embed_tokens.project(hidden, None),
        }
    }

    /// Logits of every position of `tokens`, continuing `cache`.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`
    /// - output: `[batch, seq, vocab]`
    pub fn forward(&self, tokens: &[Vec<u32>], cache: &mut KvCache, mixes: &Mixes) -> Tensor<3> {
        let hidden = self.hidden_states(tokens, cache, mixes);
        self.logits(hidden)
    }

    /// Logits of the last position only (what sampling needs), continuing `cache`.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`
    /// - output: `[batch, vocab]`
    pub fn forward_last(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        mixes: &Mixes,
    ) -> Tensor<2> {
        let hidden = self.hidden_states(tokens, cache, mixes);
        self.last_logits(hidden)
    }

    /// [`forward_last`](Self::forward_last) that runs repeated rows once
    /// ([`hidden_states_distinct`](Self::hidden_states_distinct)): a prefill of a group of
    /// samples of the same prompt.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`
    /// - output: `[batch, vocab]`
    pub fn forward_last_distinct(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        mixes: &Mixes,
    ) -> Tensor<2> {
        let (hidden, shared) = self.hidden_states_distinct(tokens, cache, mixes);
        shared.expand(self.last_logits(hidden))
    }

    /// Logits of the last position.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - output: `[batch, vocab]`
    fn last_logits(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, s, h] = hidden.dims();
        let last = hidden.slice([0..b, s - 1..s, 0..h]);
        let logits = self.logits(last);
        let vocab = logits.dims()[2];
        logits.reshape([b, vocab])
    }
}
