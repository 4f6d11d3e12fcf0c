//! A byte-level BPE tokenizer for the toy model, trained with the `tokenizers` crate like
//! Qwen2's: digits split one by one, byte-level pre-tokenisation and decoding, and the chat
//! special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` as ids 0, 1, 2.

use anyhow::{Result, anyhow};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// The chat special tokens, in id order.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Trains a tokenizer of at most `vocab_size` tokens on `texts`; returns its `tokenizer.json`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<String> {
    let specials: Vec<AddedToken> = SPECIALS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let pre_tokenizer = Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ]);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    tokenizer.add_special_tokens(&specials);
    tokenizer
        .to_string(false)
        .map_err(|e| anyhow!("serialising the tokenizer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn round_trips_and_splits_digits() {
        let texts: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "<|im_start|>user\nTom has {i} apples and {} pens.<|im_end|>\n",
                    i * 7
                )
            })
            .collect();
        let json = train_tokenizer(&texts, 300).unwrap();
        assert_eq!(json, train_tokenizer(&texts, 300).unwrap(), "deterministic");
        let tokenizer =
            tinylora::tokenizer::Tokenizer::from_bytes(json.as_bytes(), Path::new("t.json"))
                .unwrap();
        for (id, token) in SPECIALS.iter().enumerate() {
            assert_eq!(tokenizer.token_id(token), Some(id as u32));
        }
        let text = "<|im_start|>user\nTom has 127 apples.<|im_end|>";
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(*ids.last().unwrap(), 2);
        // "127" is three tokens, one per digit.
        let digits = ids
            .iter()
            .filter(|&&i| matches!(tokenizer.decode(&[i]).unwrap().as_str(), "1" | "2" | "7"))
            .count();
        assert_eq!(digits, 3);
        assert_eq!(tokenizer.inner().decode(&ids, false).unwrap(), text);
    }
}
