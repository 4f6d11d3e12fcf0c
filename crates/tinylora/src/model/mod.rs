//! The decoder of Qwen2/Qwen2.5, Qwen3 and Llama 3.x, one tree whose switches come from the
//! config ([`config::Layout`]). The module tree mirrors the checkpoint keys
//! (`model.layers.N.self_attn.q_proj`, ...), so loading needs no remapping table; [`tree`]
//! walks it.

pub mod attention;
pub mod block;
pub mod causal_lm;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod mlp;
pub mod norm;
pub mod pass;
pub mod rope;
pub mod split;
pub mod tree;
pub mod weight;

/// `config.json`, from `tinylora-formats`.
pub use tinylora_formats::config;

pub use causal_lm::CausalLm;
pub use config::{Architecture, ModelConfig};
pub use kv_cache::KvCache;
pub use linear::Mixes;
