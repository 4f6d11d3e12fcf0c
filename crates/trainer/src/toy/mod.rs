//! The bundled toy task and model: a procedural GSM-style corpus, its tokenizer, and
//! `trainer pretrain`, which trains a small Qwen2 model on it from scratch.

pub mod bpe;
pub mod corpus;
pub mod full_adamw;
pub mod pretrain;
