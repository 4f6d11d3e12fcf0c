//! `trainer random-model` writes a checkpoint the other commands load, and `trainer bench`
//! measures it end to end (the numbers are for reading; only their presence is checked), as a
//! table or as JSON whose weight sizes follow from the model's shapes.

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

/// `trainer bench --json` of the model in `dir` on the CPU and wgpu, decoding `batches`: one
/// object per backend.
fn bench_json(dir: &std::path::Path, batches: &str) -> Vec<serde_json::Value> {
    let out = run(&[
        "bench",
        "--model",
        s(dir),
        "--backends",
        "cpu,wgpu",
        "--prompt-len",
        "8",
        "--decode-tokens",
        "2",
        "--batches",
        batches,
        "--json",
    ]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bench_json_gives_one_object_per_backend_with_the_weight_sizes_of_the_model() {
    let dir = std::env::temp_dir().join(format!("tinylora-bench-json-{}", std::process::id()));
    run(&["random-model", "--shape", "toy", "--out", s(&dir)]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let embedding =
        4 * config["vocab_size"].as_u64().unwrap() * config["hidden_size"].as_u64().unwrap();
    let lines = bench_json(&dir, "1,8");
    assert_eq!(lines.len(), 2);
    for (json, backend) in lines.iter().zip(["cpu", "wgpu"]) {
        assert_eq!(json["backend"], backend);
        assert_eq!(json["weights"], "f32");
        // Every weight f32, the tied embedding once: 4 bytes per parameter.
        assert_eq!(
            json["weight_bytes"],
            4 * json["parameters"].as_u64().unwrap()
        );
        assert_eq!(json["largest_weight"], "model.embed_tokens.weight");
        for key in ["prefill_tok_s", "decode_tok_s_b1", "decode_tok_s_b8"] {
            assert!(
                json[key].as_f64().unwrap() > 0.0,
                "{backend}: {key} in {json}"
            );
        }
        let gpu = backend == "wgpu";
        assert_eq!(json["gpu_weight_bytes"].is_null(), !gpu, "{json}");
        assert_eq!(json["dispatches_per_token"].is_null(), !gpu, "{json}");
        if gpu {
            assert_eq!(json["gpu_weight_bytes"], json["weight_bytes"]);
            assert_eq!(json["largest_buffer_bytes"], embedding);
            // Counted from cubecl's profiler: at least one kernel per layer for a token.
            let layers = config["num_hidden_layers"].as_f64().unwrap();
            assert!(
                json["dispatches_per_token"].as_f64().unwrap() >= layers,
                "{json}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bf16 checkpoint (as Qwen's are published) keeps its matrices 16-bit on the GPU: half the
/// f32 bytes but for the f32 norms, the embedding's buffer half its f32 size; the CPU holds f32.
#[test]
fn a_bf16_model_takes_two_bytes_a_matrix_value_on_the_gpu() {
    let dir = std::env::temp_dir().join(format!("tinylora-bench-bf16-{}", std::process::id()));
    run(&[
        "random-model",
        "--shape",
        "toy",
        "--dtype",
        "bf16",
        "--out",
        s(&dir),
    ]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let hidden = config["hidden_size"].as_u64().unwrap();
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    let embedding = 2 * config["vocab_size"].as_u64().unwrap() * hidden;
    let lines = bench_json(&dir, "1");
    let (cpu, gpu) = (&lines[0], &lines[1]);
    assert_eq!(cpu["weights"], "f32", "{cpu}");
    assert_eq!(gpu["weights"], "BF16+f32", "{gpu}");
    // The f32 vectors: two norms a layer and the final one (the toy Qwen2 has q/k/v biases).
    let parameters = gpu["parameters"].as_u64().unwrap();
    let bias = config["num_key_value_heads"].as_u64().unwrap()
        * (hidden / config["num_attention_heads"].as_u64().unwrap());
    let vectors = (2 * layers + 1) * hidden + layers * (hidden + 2 * bias);
    assert_eq!(
        gpu["gpu_weight_bytes"],
        2 * (parameters - vectors) + 4 * vectors,
        "{gpu}"
    );
    assert_eq!(gpu["largest_buffer_bytes"], embedding, "{gpu}");
    assert!(gpu["decode_tok_s_b1"].as_f64().unwrap() > 0.0, "{gpu}");
    std::fs::remove_dir_all(&dir).unwrap();
}
