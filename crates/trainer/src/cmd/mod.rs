//! One module per one-shot `trainer` subcommand (each with its `Args` and `run`). The
//! subcommands that keep state across steps live beside them: training runs (`train`, `sft`,
//! `sweep`) in `run/`, the toy model's pretraining (`pretrain`) in `toy/`.

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
