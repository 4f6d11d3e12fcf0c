//! # tinylora-formats
//!
//! The files tinylora reads and writes, parsed without burn so that they can be fuzzed and
//! tested on their own: checkpoint tensors (safetensors, GGUF), `config.json`, adapter files (JSON
//! and the compact `tl1.` link form), GSM8K problems and answers, and atomic file writes. The
//! `tinylora` crate re-exports every module under the same path.
//!
//! The GSM8K rewards and prompt ([`gsm8k`]) are text rules rather than a file format; they
//! live here for the same reason: the reward tables and the fuzzers run without burn, and the
//! trainer, the worker and the page reach the one definition as `tinylora::gsm8k`.

pub mod adapter;
pub mod chat;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod gsm8k;
pub mod hex;
pub mod weights;

pub use error::{Error, Result};
