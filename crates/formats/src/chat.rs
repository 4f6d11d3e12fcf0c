//! The Qwen2.5 chat template, as text (the tokenizer turns it into ids).

/// Qwen2.5's default system prompt (its chat template inserts it when none is given).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// The Qwen2.5 chat template for one user turn, ending where the assistant starts to speak.
pub fn chat_prompt(system: Option<&str>, user: &str) -> String {
    let system = system.unwrap_or(DEFAULT_SYSTEM_PROMPT);
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_matches_qwen25() {
        assert_eq!(
            chat_prompt(None, "What is 12*7?"),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
