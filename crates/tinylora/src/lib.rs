//! # tinylora
//!
//! TinyLoRA ("Learning to Reason in 13 Parameters", Morris et al., arXiv 2602.04118) on
//! [burn](https://burn.dev): adapt a frozen Qwen2/Qwen2.5, Qwen3 or Llama 3 model through a handful
//! of trainable floats.
//!
//! The same crate compiles for native targets (feature `native`: burn's `flex` CPU backend and
//! wgpu) and for `wasm32-unknown-unknown` (feature `webgpu`). Every GPU readback in code shared
//! with the browser is asynchronous (see [`readback`]).

pub mod adapter;
pub mod checkpoint;
pub mod device;
pub mod evaluate;
mod frozen_grad;
pub mod generate;
pub mod gpu_fused;
pub mod gpu_quant;
pub mod grpo;
pub mod hub;
pub mod micro_batch;
pub mod model;
pub mod numerics;
pub mod optim;
#[cfg(feature = "native")]
pub mod quant;
pub mod readback;
pub mod rng;
pub mod sampling;
pub mod selfcheck;
pub mod sft;
pub mod tokenizer;
pub mod train;

/// The file formats (checkpoints, config.json, adapter files, GSM8K, atomic writes), from the
/// burn-free `tinylora-formats` crate.
pub use tinylora_formats::{error, fsutil, gsm8k, hex, weights};

/// The burn version this crate is built on, for callers that create tensors or devices.
pub use burn;
pub use error::{Error, Result};
