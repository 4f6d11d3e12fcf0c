//! `tokenizer.json` through the `tokenizers` crate (pure-Rust regex, the same on native and
//! wasm), the model's chat template and the stop tokens.

use std::path::Path;

use crate::{Error, Result};

pub use tinylora_formats::chat::{ChatTemplate, DEFAULT_SYSTEM_PROMPT, chat_prompt};

/// Tokens that end a chat turn or a document in Qwen (`<|im_end|>`, `<|endoftext|>`) and
/// Llama 3 (`<|eot_id|>`, `<|end_of_text|>`) vocabularies.
const STOP_TOKENS: [&str; 4] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
];

/// A Hugging Face tokenizer with its model's chat template (Qwen2.5's until
/// [`with_chat_template`](Self::with_chat_template) gives another).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: ChatTemplate,
}

impl Tokenizer {
    /// Parses the bytes of a `tokenizer.json`; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::BadFile {
            path: origin.to_path_buf(),
            reason: format!("not a valid tokenizer.json: {e}"),
        })?;
        Ok(Self::from_inner(inner))
    }

    /// Reads a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read(path)?;
        Self::from_bytes(&bytes, path)
    }

    /// Wraps an existing tokenizer (for example one just trained).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            chat_template: ChatTemplate::default(),
        }
    }

    /// The same tokenizer with the model's chat template.
    pub fn with_chat_template(self, chat_template: ChatTemplate) -> Self {
        Self {
            chat_template,
            ..self
        }
    }

    /// The chat template prompts are written in.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat_template
    }

    /// Token ids of the paper's GSM8K prompt for `question` in this model's chat template.
    pub fn gsm8k_prompt(&self, question: &str) -> Result<Vec<u32>> {
        self.encode(&tinylora_formats::gsm8k::prompt(
            &self.chat_template,
            question,
        )?)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::InvalidInput(format!("could not tokenize the text: {e}")))
    }

    /// Text of `ids`, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::InvalidInput(format!("could not decode tokens: {e}")))
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids that end generation: the end-of-turn and end-of-text tokens the vocabulary has, and
    /// the config's `eos_token_id`s.
    pub fn stop_tokens(&self, config_eos: &[u32]) -> Vec<u32> {
        let mut ids: Vec<u32> = STOP_TOKENS
            .iter()
            .filter_map(|t| self.token_id(t))
            .chain(config_eos.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_clear_error() {
        let err = Tokenizer::from_bytes(b"{\"hello\": 1}", Path::new("t/tokenizer.json"))
            .err()
            .expect("not a tokenizer")
            .to_string();
        assert!(
            err.starts_with("t/tokenizer.json: not a valid tokenizer.json"),
            "{err}"
        );
    }
}
