//! The `trainer` binary as users and other tools call it: JSON outputs and error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tinylora::model::ModelConfig;
use tinylora::numerics::logits_tolerance;

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn expected(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A JSON array of ids as the `--ids` argument, e.g. `5,77,301`.
fn ids_arg(ids: &Value) -> String {
    let ids: Vec<String> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    ids.join(",")
}

fn floats(values: &Value) -> Vec<f64> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// max |ours − reference| / max |reference|.
fn max_rel_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = reference.iter().fold(0f64, |m, x| m.max(x.abs()));
    ours.iter()
        .zip(reference)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// The summation-order bound for the last logits of the model in `dir` over `positions`
/// positions, relative to the largest logit (`tinylora::numerics`).
fn tolerance(dir: &Path, positions: usize) -> f64 {
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    logits_tolerance(&config, positions, 1.0)
}

/// One fixture of each family (Qwen2, Qwen3, Llama 3).
const FAMILIES: [&str; 3] = [
    "qwen2/untied_bf16_tf5",
    "qwen3/tied_bf16_tf5",
    "llama3/untied_f32_hub_biases",
];

#[test]
fn logits_json_matches_the_transformers_fixture() {
    for name in FAMILIES {
        let dir = fixture(name);
        let case = &expected(&dir)["logits"][1];
        let out = trainer(&[
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            &ids_arg(&case["ids"]),
            "--json",
        ]);
        let err = max_rel_err(
            &floats(&stdout_json(&out)["last_logits"]),
            &floats(&case["last_logits"]),
        );
        let tol = tolerance(&dir, case["ids"].as_array().unwrap().len());
        assert!(err <= tol, "{name}: {err:e} > {tol:e}");
    }
}

#[test]
fn generate_ids_json_is_greedy_by_default() {
    for name in ["qwen2/tied_f32_hub"].into_iter().chain(FAMILIES) {
        let dir = fixture(name);
        let case = &expected(&dir)["greedy"][0];
        let out = trainer(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            &ids_arg(&case["prompt"]),
            "--max-new-tokens",
            "16",
            "--json",
        ]);
        let json = stdout_json(&out);
        // eos (id 2) may end the continuation early; what is there must match transformers.
        let ours = json["tokens"].as_array().unwrap();
        assert!(!ours.is_empty(), "{name}");
        assert_eq!(
            ours[..],
            case["tokens"].as_array().unwrap()[..ours.len()],
            "{name}"
        );
    }
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let model = fixture("qwen2/tied_f32_hub");
    let model = model.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["logits", "--model", "/nonexistent/model", "--ids", "1"],
            "/nonexistent/model",
        ),
        (
            &["logits", "--model", model, "--ids", "1,x"],
            "`x` in --ids is not a token id",
        ),
        (
            &["logits", "--model", model, "--ids", "99999"],
            "outside the vocabulary",
        ),
        (
            &["generate", "--model", model, "--prompt", "hi"],
            "tokenizer",
        ),
        (
            &["logits", "--model", model, "--ids", "1", "--backend", "tpu"],
            "unknown backend",
        ),
    ];
    for (args, needle) in cases {
        let out = trainer(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn adapters_from_peft_and_from_a_compact_link_give_the_same_logits() {
    let model = fixture("qwen2/untied_bf16_tf5");
    let peft = fixture("peft/full_tie_u13");
    let (model, peft_dir) = (model.to_str().unwrap(), peft.to_str().unwrap());
    let expected = expected(&peft);
    let ids = ids_arg(&expected["ids"]);
    let out = trainer(&[
        "logits",
        "--model",
        model,
        "--adapter",
        peft_dir,
        "--ids",
        &ids,
        "--json",
    ]);
    let out_peft = out;
    let err = max_rel_err(
        &floats(&stdout_json(&out_peft)["last_logits"]),
        &floats(&expected["last_logits"]),
    );
    let tol = tolerance(
        &fixture("qwen2/untied_bf16_tf5"),
        expected["ids"].as_array().unwrap().len(),
    );
    assert!(err <= tol, "{err:e} > {tol:e}");

    // PEFT's factors come from torch's RNG and SVD: a link alone could never be applied, so
    // `--compact` alone is refused and `--compact --basis FILE` writes the factors beside it.
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export",
            "--model",
            model,
            "--adapter",
            peft_dir,
            "--compact",
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let out = export(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("add --basis FILE"),
        "{stderr}"
    );
    let tmp = std::env::temp_dir().join(format!("tinylora-cli-basis-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let basis = tmp.join("basis.safetensors");
    let basis = basis.to_str().unwrap();
    let out = export(&["--basis", basis]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compact = String::from_utf8(out.stdout).unwrap();
    assert!(
        compact.trim().starts_with("tl1.") && compact.trim().len() < 200,
        "{compact}"
    );
    let link = tmp.join("adapter.tl1");
    std::fs::write(&link, &compact).unwrap();
    let link = link.to_str().unwrap();
    let logits = |extra: &[&str]| {
        let mut args = vec![
            "logits",
            "--model",
            model,
            "--adapter",
            link,
            "--ids",
            &ids,
            "--json",
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    // The link with its basis file is the PEFT adapter: the same factors and the same f32
    // floats through the same computation, so the same logits bit for bit.
    assert_eq!(
        stdout_json(&logits(&["--basis", basis]))["last_logits"],
        stdout_json(&out_peft)["last_logits"]
    );
    // Without it our SVD does not reproduce PEFT's factors: a loud failure, not a wrong answer.
    let out = logits(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("basis recomputed differently"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
