//! # tinylora-formats
//!
//! The files tinylora reads and writes, parsed without burn so that they can be fuzzed and
//! tested on their own: checkpoint tensors (safetensors, GGUF), `config.json`, adapter files (JSON
//! and the compact `tl1.` link form), GSM8K problems and answers, and atomic file writes. The
//! `tinylora` crate re-exports every module under the same path.

pub mod adapter;
pub mod chat;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod gsm8k;
pub mod hex;
pub mod weights;

pub use error::{Error, Result};
