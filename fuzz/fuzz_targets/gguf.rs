//! `cargo fuzz run gguf --features libfuzzer`: see [`tinylora_fuzz::gguf`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinylora_fuzz::gguf(data));
