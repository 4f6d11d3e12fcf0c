//! GRPO on a TinyLoRA adapter: the objective ([`objective`]), the log-probabilities it is made
//! of ([`logprobs`]) and the step as one-way phases ([`pipeline`]).

pub mod importance;
pub mod logprobs;
pub mod objective;
pub mod pipeline;

pub use logprobs::completion_logprobs;
pub use objective::{
    Clip, Denominators, LossType, PolicyLoss, group_advantages, kl_k3, policy_loss, reduce,
};
