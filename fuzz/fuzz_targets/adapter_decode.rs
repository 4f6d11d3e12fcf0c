//! `cargo fuzz run adapter_decode --features libfuzzer`: see [`tinylora_fuzz::adapter_decode`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinylora_fuzz::adapter_decode(data));
