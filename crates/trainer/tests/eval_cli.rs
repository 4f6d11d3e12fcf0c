//! `trainer eval` end to end on a tiny model: one JSONL line per problem and a summary whose
//! accuracy equals the correct lines over the problems. The fixture model is random, so the
//! byte-level tokenizer built here only has to cover its 512 ids.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The `untied_bf16_tf5` fixture with a byte-level tokenizer (256 bytes + chat specials).
fn model_with_tokenizer() -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let dir = std::env::temp_dir().join(format!("tinylora-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let vocab: Vocab = alphabet
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default()));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials =
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(|t| AddedToken::from(t, true));
    tokenizer.add_special_tokens(&specials);
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
    dir
}

/// Runs `trainer eval` on `model` and `data`, writing per-problem results to `out`.
fn eval(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn eval_writes_one_line_per_problem_and_a_consistent_summary() {
    let dir = model_with_tokenizer();
    let data = dir.join("mini.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"What is 2+2?\", \"answer\": \"2+2=4\\n#### 4\"}\n\
         {\"question\": \"What is 10-3?\", \"answer\": \"#### 7\"}\n\
         {\"question\": \"Half of 1,000?\", \"answer\": \"#### 500\"}\n",
    )
    .unwrap();
    let out = dir.join("results.jsonl");
    let run = eval(
        &dir,
        &data,
        &out,
        &["--max-new-tokens", "6", "--batch-size", "2", "--json"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(summary["n"], 3);
    let correct = lines.iter().filter(|l| l["correct"] == true).count();
    assert_eq!(summary["correct"], correct);
    assert_eq!(lines[2]["gold"], "500");
    assert!(
        lines
            .iter()
            .all(|l| l["response_tokens"].as_u64().unwrap() <= 6)
    );

    // A malformed line is fatal by default, with its line number.
    std::fs::write(
        &data,
        "{\"question\": \"Q\", \"answer\": \"#### 1\"}\nnot json\n",
    )
    .unwrap();
    let run = eval(&dir, &data, &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("mini.jsonl: line 2"),
        "{stderr}"
    );
}
