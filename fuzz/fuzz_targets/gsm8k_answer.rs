//! `cargo fuzz run gsm8k_answer --features libfuzzer`: see [`tinylora_fuzz::gsm8k_answer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinylora_fuzz::gsm8k_answer(data));
