//! `trainer random-model` writes a checkpoint the other commands load, and `trainer bench`
//! measures it end to end (the numbers are for reading; only their presence is checked).

mod common;

use common::{run, s};

#[test]
fn a_random_model_loads_and_benches() {
    let dir = std::env::temp_dir().join(format!("tinylora-bench-{}", std::process::id()));
    run(&[
        "random-model",
        "--shape",
        "toy",
        "--seed",
        "3",
        "--out",
        s(&dir),
    ]);
    let logits = run(&["logits", "--model", s(&dir), "--ids", "1,2,3", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&logits.stdout).unwrap();
    assert_eq!(json["last_logits"].as_array().unwrap().len(), 485);

    let out = run(&[
        "bench",
        "--model",
        s(&dir),
        "--backends",
        "cpu",
        "--prompt-len",
        "8",
        "--decode-tokens",
        "2",
        "--batches",
        "1,2",
        "--adapter",
        "--grpo",
        "2",
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    for row in [
        "| cpu: prefill, prompt 8 |",
        "| cpu: decode, batch 1 |",
        "| cpu: decode, batch 2 |",
        "| cpu: TinyLoRA basis (28 modules) |",
        "| cpu: GRPO step, 8 sequences |",
        "% of the bandwidth limit",
        "| memory copy bandwidth (read + write) |",
    ] {
        assert!(table.contains(row), "missing `{row}` in\n{table}");
    }
}
