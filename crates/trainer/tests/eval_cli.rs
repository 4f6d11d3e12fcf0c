//! `trainer eval` end to end on a tiny model: one JSONL line per problem and a summary whose
//! strict, flexible and truncated counts equal those of the lines. The fixture model is random, so the
//! byte-level tokenizer built here only has to cover its 512 ids.

mod common;

use std::path::Path;
use std::process::Command;

use common::model_with_tokenizer;

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
    let dir = model_with_tokenizer("eval");
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
    let count = |key: &str| lines.iter().filter(|l| l[key] == true).count();
    assert_eq!(summary["correct"], count("correct"));
    assert_eq!(summary["flexible_correct"], count("flexible_correct"));
    assert_eq!(summary["truncated"], count("truncated"));
    // A truncated response used all 6 new tokens.
    for l in lines.iter().filter(|l| l["truncated"] == true) {
        assert_eq!(l["response_tokens"], 6, "{l}");
    }
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
