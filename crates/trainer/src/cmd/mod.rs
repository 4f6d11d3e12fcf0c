//! One module per `trainer` subcommand.

pub mod common;
pub mod devices;
pub mod eval;
pub mod export;
pub mod generate;
pub mod logits;
