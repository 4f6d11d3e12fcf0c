//! The full causal language model (`Qwen2ForCausalLM`).

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::block::DecoderLayer;
use super::config::Qwen2Config;
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::rope::rope_tables;
use super::weight::Weight;
use crate::ops::rms_norm;

/// `model`: embeddings, decoder layers and the final norm.
#[derive(Debug, Clone)]
pub struct Qwen2Model {
    /// Token embeddings, `[vocab, hidden]`.
    pub embed_tokens: Weight,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final RMSNorm weight, `[hidden]`.
    pub norm: Tensor<1>,
}

/// Which distinct row each row of a batch shares
/// ([`Qwen2ForCausalLM::hidden_states_distinct`]); `None` when every row is distinct.
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

/// A Qwen2 model with its language-model head.
#[derive(Debug, Clone)]
pub struct Qwen2ForCausalLM {
    /// The architecture.
    pub config: Qwen2Config,
    /// The decoder.
    pub model: Qwen2Model,
    /// Untied output projection `hidden → vocab`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// Where the weights live.
    pub device: Device,
}

impl Qwen2ForCausalLM {
    /// An empty cache for rows with the given left padding.
    pub fn new_cache(&self, pads: Vec<usize>) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, pads)
    }

    /// Runs the decoder over the next tokens of each row and appends them to `cache`.
    /// Returns the final hidden states.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`, all rows the same length
    /// - output: `[batch, seq, hidden]`
    pub fn hidden_states(&self, tokens: &[Vec<u32>], cache: &mut KvCache) -> Tensor<3> {
        let seq = tokens.first().map_or(0, Vec::len);
        let mut x = self.model.embed_tokens.rows(tokens, &self.device);
        let rope = rope_tables(
            &cache.positions(seq),
            self.config.head_dim(),
            self.config.rope_theta,
            &self.device,
        );
        let mask = cache.mask(seq, &self.device);
        for (layer, layer_cache) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(
                x,
                &rope,
                mask.clone(),
                layer_cache,
                self.config.rms_norm_eps,
            );
        }
        cache.len += seq;
        rms_norm(x, self.model.norm.clone(), self.config.rms_norm_eps)
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
    ) -> (Tensor<3>, SharedRows) {
        let (firsts, of_row) = cache.distinct_rows(tokens);
        if firsts.len() == tokens.len() {
            return (self.hidden_states(tokens, cache), SharedRows(None));
        }
        cache.keep_rows(&firsts);
        let distinct: Vec<Vec<u32>> = firsts.iter().map(|&i| tokens[i].clone()).collect();
        let hidden = self.hidden_states(&distinct, cache);
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
            Some(head) => head.forward(hidden),
            None => self.model.embed_tokens.project(hidden, None),
        }
    }

    /// Logits of every position of `tokens`, continuing `cache`.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`
    /// - output: `[batch, seq, vocab]`
    pub fn forward(&self, tokens: &[Vec<u32>], cache: &mut KvCache) -> Tensor<3> {
        let hidden = self.hidden_states(tokens, cache);
        self.logits(hidden)
    }

    /// Every weight under its Hugging Face name with its checkpoint shape (`[out, in]` for
    /// linear weights), flattened; for export.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Tensor<1>)> {
        fn flat<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Tensor<1>) {
            let shape = t.dims().to_vec();
            let n = shape.iter().product::<usize>();
            (shape, t.reshape([n]))
        }
        let mut out = Vec::new();
        let mut push =
            |name: String, (shape, t): (Vec<usize>, Tensor<1>)| out.push((name, shape, t));
        let linear =
            |push: &mut dyn FnMut(String, (Vec<usize>, Tensor<1>)), name: String, l: &Linear| {
                push(
                    format!("{name}.weight"),
                    flat(l.weight.to_dense(&self.device)),
                );
                if let Some(b) = &l.bias {
                    push(format!("{name}.bias"), flat(b.clone()));
                }
            };
        push(
            "model.embed_tokens.weight".into(),
            flat(self.model.embed_tokens.to_dense(&self.device)),
        );
        for (i, layer) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            push(
                format!("{p}.input_layernorm.weight"),
                flat(layer.input_layernorm.clone()),
            );
            push(
                format!("{p}.post_attention_layernorm.weight"),
                flat(layer.post_attention_layernorm.clone()),
            );
            let a = &layer.self_attn;
            for (n, l) in [
                ("q_proj", &a.q_proj),
                ("k_proj", &a.k_proj),
                ("v_proj", &a.v_proj),
                ("o_proj", &a.o_proj),
            ] {
                linear(&mut push, format!("{p}.self_attn.{n}"), l);
            }
            let m = &layer.mlp;
            for (n, l) in [
                ("gate_proj", &m.gate_proj),
                ("up_proj", &m.up_proj),
                ("down_proj", &m.down_proj),
            ] {
                linear(&mut push, format!("{p}.mlp.{n}"), l);
            }
        }
        push("model.norm.weight".into(), flat(self.model.norm.clone()));
        if let Some(head) = &self.lm_head {
            linear(&mut push, "lm_head".into(), head);
        }
        out
    }

    /// Bytes of weights one decoded token reads: every layer's projections, the output
    /// projection (the embedding when tied) and the norms, as stored (blocks or f32).
    pub fn weight_bytes_per_token(&self) -> usize {
        let hidden = self.config.hidden_size * 4;
        let layers: usize = self
            .model
            .layers
            .iter()
            .map(|l| {
                let (a, m) = (&l.self_attn, &l.mlp);
                [
                    &a.q_proj,
                    &a.k_proj,
                    &a.v_proj,
                    &a.o_proj,
                    &m.gate_proj,
                    &m.up_proj,
                    &m.down_proj,
                ]
                .iter()
                .map(|p| p.weight.size_bytes())
                .sum::<usize>()
                    + 2 * hidden
            })
            .sum();
        let head = match &self.lm_head {
            Some(head) => head.weight.size_bytes(),
            None => self.model.embed_tokens.size_bytes(),
        };
        layers + head + hidden
    }

    /// Logits of the last position only (what sampling needs), continuing `cache`.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`
    /// - output: `[batch, vocab]`
    pub fn forward_last(&self, tokens: &[Vec<u32>], cache: &mut KvCache) -> Tensor<2> {
        let hidden = self.hidden_states(tokens, cache);
        self.last_logits(hidden)
    }

    /// [`forward_last`](Self::forward_last) that runs repeated rows once
    /// ([`hidden_states_distinct`](Self::hidden_states_distinct)): a prefill of a group of
    /// samples of the same prompt.
    ///
    /// # Shapes
    /// - `tokens`: `[batch][seq]`
    /// - output: `[batch, vocab]`
    pub fn forward_last_distinct(&self, tokens: &[Vec<u32>], cache: &mut KvCache) -> Tensor<2> {
        let (hidden, shared) = self.hidden_states_distinct(tokens, cache);
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
