//! Mutation fuzzing of every parser of untrusted input, in-process and deterministic: valid
//! files and strings get random byte flips, insertions, deletions, truncations and length-field
//! edits, thousands of times; every outcome must be `Ok` or `Err`, never a panic (and never a
//! huge allocation: a panic-free run within the test's memory shows none was attempted).
//! The checks are the `cargo fuzz` targets' own (`tinylora-fuzz`); here they run without coverage
//! feedback, with fixed seeds, so a failure names the iteration that reproduces it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tinylora::rng::SplitMix64;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// One to four random edits, most of them inside the first `hot` bytes (the header).
fn mutate(rng: &mut SplitMix64, input: &[u8], hot: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + below(rng, 4) {
        let span = if below(rng, 4) == 0 {
            out.len()
        } else {
            hot.min(out.len())
        };
        let at = below(rng, span.max(1));
        match below(rng, 6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << below(rng, 8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next_u64() as u8;
            }
            2 => out.insert(at.min(out.len()), rng.next_u64() as u8),
            3 if !out.is_empty() => {
                out.remove(at.min(out.len() - 1));
            }
            4 => out.truncate(at),
            _ => {
                // Overwrite 8 bytes with an extreme little-endian integer (lengths, counts, offsets).
                let value: u64 = [u64::MAX, 1 << 40, 0, u32::MAX as u64][below(rng, 4)];
                for (i, b) in value.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    out
}

/// Runs `check` on `iterations` mutants of `input`; collects any panic with its iteration.
fn fuzz(name: &str, input: &[u8], hot: usize, iterations: usize, check: fn(&[u8])) {
    let mut rng = SplitMix64::new(0x5eed);
    let mut panics = Vec::new();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..iterations {
        let mutant = mutate(&mut rng, input, hot);
        if catch_unwind(AssertUnwindSafe(|| check(&mutant))).is_err() {
            panics.push(i);
        }
    }
    std::panic::set_hook(hook);
    assert!(
        panics.is_empty(),
        "{name}: {} of {iterations} mutants panicked (iterations {:?})",
        panics.len(),
        &panics[..panics.len().min(10)]
    );
}

#[test]
fn safetensors_parser_never_panics() {
    let file = std::fs::read(format!(
        "{ROOT}/tests/fixtures/qwen2/tied_f32_hub/model.safetensors"
    ))
    .unwrap();
    let header = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    // Keep the data short so that each read is cheap; offsets past it are part of the test.
    let input = &file[..header + 4096];
    fuzz(
        "safetensors",
        input,
        header,
        100_000,
        tinylora_fuzz::safetensors_header,
    );
}

#[test]
fn gguf_parser_never_panics() {
    let file = std::fs::read(format!("{ROOT}/tests/fixtures/gguf/tiny-qwen2.gguf")).unwrap();
    fuzz("gguf", &file, 4096, 20_000, tinylora_fuzz::gguf);
}

#[test]
fn adapter_decoders_never_panic() {
    let compact =
        std::fs::read_to_string(format!("{ROOT}/assets/toy/example-adapter.tl1")).unwrap();
    let compact = compact.trim().as_bytes();
    fuzz(
        "compact adapter",
        compact,
        compact.len(),
        100_000,
        tinylora_fuzz::adapter_decode,
    );
    let json = std::fs::read(format!("{ROOT}/assets/toy/example-adapter.json")).unwrap();
    fuzz(
        "json adapter",
        &json,
        json.len(),
        50_000,
        tinylora_fuzz::adapter_decode,
    );
}

#[test]
fn answer_extraction_never_panics() {
    let seed =
        "Tom has 1,000 apples.\nSo 3*4=12 and $5.50 each.\n#### 1,012\nThe answer is -7. ÷ é 😀";
    fuzz(
        "gsm8k answers",
        seed.as_bytes(),
        seed.len(),
        200_000,
        tinylora_fuzz::gsm8k_answer,
    );
}
