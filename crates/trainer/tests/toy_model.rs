//! The bundled toy model (`assets/toy`): it loads and answers through the same code as any
//! Qwen2 checkpoint, a short fixed-seed GRPO run with 13 trainable floats raises its held-out
//! strict accuracy, and `trainer pretrain` regenerates its data and tokenizer exactly and is
//! deterministic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{run, s};
use serde_json::Value;

fn toy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(toy().join("manifest.json")).unwrap()).unwrap()
}

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_bundled_model_solves_a_toy_problem_greedily() {
    let out = run(&[
        "generate",
        "--model",
        s(&toy()),
        "--chat",
        "--prompt",
        "Tom has 12 apples. Tom buys 7 more. How many apples does Tom have now? Let's think step by step and output the final answer after \"####\".",
        "--max-new-tokens",
        "60",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("12+7=19"), "{text}");
}

#[test]
fn a_short_grpo_run_with_13_floats_raises_the_strict_accuracy() {
    let dir = std::env::temp_dir().join(format!("tinylora-toy-grpo-{}", std::process::id()));
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/configs/toy.toml");
    run(&[
        "train",
        "--config",
        s(&config),
        "--out",
        s(&dir),
        "--set",
        "run.max_steps=8",
        "--set",
        "run.eval_every=8",
        "--set",
        "data.eval_limit=50",
    ]);
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let eval: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["split"] == "eval")
        .map(|r| r["accuracy"].as_f64().unwrap())
        .collect();
    println!("held-out strict accuracy at steps 0 and 8: {eval:?}");
    assert_eq!(eval.len(), 2);
    assert!(eval[1] >= eval[0] + 0.2, "{eval:?}");
    let adapter: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter.json")).unwrap()).unwrap();
    assert_eq!(adapter["trainable_parameters"], 13);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pretrain_regenerates_the_data_and_tokenizer_and_is_deterministic() {
    let m = manifest();
    let a = &m["args"];
    let dir = std::env::temp_dir().join(format!("tinylora-pretrain-{}", std::process::id()));
    let args = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = [
            "pretrain",
            "--out",
            s(out),
            "--steps",
            "2",
            "--eval-problems",
            "4",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        for key in [
            "seed",
            "batch_size",
            "lr",
            "hash_fraction",
            "vocab_size",
            "hidden_size",
            "layers",
            "heads",
            "intermediate_size",
            "train_problems",
            "test_problems",
        ] {
            v.push(format!("--{}", key.replace('_', "-")));
            v.push(a[key].to_string());
        }
        v
    };
    let first = dir.join("a");
    let second = dir.join("b");
    for out in [&first, &second] {
        let argv = args(out);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let output = trainer(&refs);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let read = |dir: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
    };
    let (ma, mb) = (read(&first), read(&second));
    for file in ["tokenizer.json", "train.jsonl", "test.jsonl"] {
        assert_eq!(
            ma["sha256"][file], m["sha256"][file],
            "{file} differs from the shipped one"
        );
    }
    assert_eq!(
        ma["sha256"]["model.safetensors"],
        mb["sha256"]["model.safetensors"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
