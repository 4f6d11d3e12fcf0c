//! The checks behind the fuzz targets, one per parser of untrusted input. Each takes arbitrary
//! bytes and must return (an `Err` from the parser is fine); a panic, an abort or a huge
//! allocation is a bug. Where a parse succeeds, the check also asserts what a good parse
//! promises (shapes match value counts, a decoded adapter survives a round trip).
//!
//! `cargo fuzz run TARGET --features libfuzzer` drives them with coverage feedback
//! (`fuzz_targets/`); `cargo test -p tinylora-fuzz` replays the committed corpus and the inputs
//! that once failed (`corpus/`, `regressions/`).

use std::io::Cursor;
use std::path::Path;

use tinylora_formats::adapter::config::ALL_TARGETS;
use tinylora_formats::adapter::file::AdapterFile;
use tinylora_formats::gsm8k::{self, BadLines};
use tinylora_formats::weights::gguf::{GgufFile, GgufSource};
use tinylora_formats::weights::safetensors::SafetensorsFile;
use tinylora_formats::weights::{HostTensor, TensorSource};

/// A fuzz target's check: arbitrary bytes in, a panic on a bug.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (the folders under `corpus/` and `regressions/`).
pub const TARGETS: [(&str, Check); 4] = [
    ("safetensors_header", safetensors_header),
    ("gguf", gguf),
    ("adapter_decode", adapter_decode),
    ("gsm8k_answer", gsm8k_answer),
];

/// Reads every tensor `source` lists and checks that each has as many values as its shape says.
fn read_all(source: &mut dyn TensorSource) {
    for name in source.names() {
        let shape = source.shape(&name).expect("a listed tensor has a shape");
        if let Ok(HostTensor { shape: got, values }) = source.read(&name) {
            assert_eq!(
                got, shape,
                "{name}: shape changed between listing and reading"
            );
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        }
    }
}

/// A safetensors file: the 8-byte header length, the JSON header, then the data.
pub fn safetensors_header(data: &[u8]) {
    if let Ok(mut file) = SafetensorsFile::from_reader(Cursor::new(data), Path::new("fuzz")) {
        read_all(&mut file);
    }
}

/// A GGUF file: header, metadata, tensor infos, the config they describe, every tensor.
pub fn gguf(data: &[u8]) {
    let reader = Box::new(Cursor::new(data.to_vec()));
    if let Ok(mut file) = GgufFile::from_reader(reader, Path::new("fuzz.gguf")) {
        let _ = file.model_config();
        read_all(&mut GgufSource::new(file));
    }
}

/// An adapter as text: the compact `tl1.` form or JSON. What decodes must encode and decode to
/// the same adapter.
pub fn adapter_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("fuzz");
    if let Ok(file) = AdapterFile::from_compact(text, origin) {
        let again = AdapterFile::from_compact(&file.to_compact(), origin)
            .expect("a decoded compact adapter re-encodes");
        assert_eq!(again, file);
    }
    if let Ok(file) = AdapterFile::from_json(text, origin) {
        let again =
            AdapterFile::from_json(&file.to_json(), origin).expect("a read JSON adapter re-reads");
        assert_eq!(again, file);
        let mut compact = AdapterFile::from_compact(&file.to_compact(), origin)
            .expect("a valid JSON adapter has a compact form");
        // The compact form stores the targets as a set, in the model's module order.
        let mut targets = file.config.targets.clone();
        targets.sort_by_key(|t| ALL_TARGETS.iter().position(|a| a == t));
        assert_eq!(compact.config.targets, targets);
        compact.config.targets = file.config.targets.clone();
        assert_eq!((&compact.config, &compact.v), (&file.config, &file.v));
    }
}

/// A model's response and a GSM8K JSONL file: answer extraction, rewards and record parsing.
pub fn gsm8k_answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(answer) = gsm8k::strict_answer(&text) {
        assert_eq!(gsm8k::strict_reward(&text, &answer), 1.0, "{text:?}");
    }
    let _ = gsm8k::flexible_reward(&text, "-7");
    let _ = gsm8k::parse_gold(&text);
    let _ = gsm8k::parse_jsonl(&text, Path::new("fuzz.jsonl"), BadLines::Skip);
}
