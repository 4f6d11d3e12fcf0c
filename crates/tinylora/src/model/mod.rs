//! The Qwen2 / Qwen2.5 decoder. The module tree mirrors the checkpoint keys
//! (`model.layers.N.self_attn.q_proj`, ...), so loading needs no remapping table.

pub mod attention;
pub mod block;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod mlp;
pub mod params;
pub mod qwen2;
pub mod rope;
pub mod weight;

/// `config.json`, from `tinylora-formats`.
pub use tinylora_formats::config;

pub use config::Qwen2Config;
pub use kv_cache::KvCache;
pub use qwen2::Qwen2ForCausalLM;
