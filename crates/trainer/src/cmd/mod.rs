//! One module per `trainer` subcommand.

pub mod bench;
pub mod bench_grpo;
pub mod common;
pub mod devices;
pub mod distill;
pub mod eval;
pub mod export;
pub mod generate;
pub mod logits;
pub mod random_model;
