//! Rollout engines besides the trained model itself: vLLM servers ([`vllm`]) and the
//! OpenAI-compatible completions API they speak ([`completions`]).

pub mod completions;
pub mod vllm;
