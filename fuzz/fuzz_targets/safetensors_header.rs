//! `cargo fuzz run safetensors_header --features libfuzzer`: see [`tinylora_fuzz::safetensors_header`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinylora_fuzz::safetensors_header(data));
