//! Training runs (`trainer train`, `trainer sft`, `trainer sweep`) and what they are made of.

pub mod data;
pub mod grpo;
pub mod interrupt;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod sft;
pub mod state;
pub mod sweep;
pub mod training;
