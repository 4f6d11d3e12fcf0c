//! A test of the trainer's checks on a rollout engine: a fake vLLM server in this process (an
//! HTTP server on 127.0.0.1 that loads each step's PEFT LoRA into the bundled toy model and
//! samples with the project's own CPU code) serves `trainer train` with `[rollout] engine =
//! "vllm"`. Served honestly, the run trains and logs a log-prob gap near zero and a canary the
//! engine follows; with an injected fault — the adapter ignored (caught by the canary), the
//! wrong temperature, an off-by-one token, a stale adapter version — the step fails with an
//! error that says what is wrong.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::s;
use serde_json::{Value, json};
use tinylora::adapter::targets::targets_mut;
use tinylora::burn::tensor::{Device, Tensor, TensorData};
use tinylora::checkpoint::Checkpoint;
use tinylora::generate::{GenerateConfig, generate};
use tinylora::model::{CausalLm, Mixes};
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;
use tinylora::weights::TensorSource;
use tinylora::weights::safetensors::SafetensorsFile;

/// What the fake engine gets wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    IgnoresAdapter,
    DoublesTemperature,
    DropsFirstToken,
    AnswersWithOlderAdapter,
}

fn toy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy")
}

struct Fake {
    fault: Fault,
    /// Loaded adapters by name, in load order.
    loras: Mutex<Vec<(String, PathBuf)>>,
    stop_tokens: Vec<u32>,
}

impl Fake {
    /// The toy model with the PEFT LoRA in `dir` merged into its weights (`W += B·A`).
    fn model(&self, dir: Option<&Path>) -> CausalLm {
        let mut model = Checkpoint::open(&toy())
            .unwrap()
            .load(&Device::flex())
            .unwrap();
        let Some(dir) = dir else { return model };
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let targets: Vec<String> =
            serde_json::from_value(config["target_modules"].clone()).unwrap();
        let mut lora = SafetensorsFile::open(&dir.join("adapter_model.safetensors")).unwrap();
        let device = model.device.clone();
        for target in targets_mut(&mut model, &targets) {
            let read = |lora: &mut SafetensorsFile<_>, part: &str| {
                let t = lora
                    .read(&format!("base_model.model.{}.{part}.weight", target.path))
                    .unwrap();
                let shape = [t.shape[0], t.shape[1]];
                Tensor::<2>::from_data(TensorData::new(t.values, shape), &device)
            };
            let (a, b) = (read(&mut lora, "lora_A"), read(&mut lora, "lora_B"));
            let w = target.linear.weight.dense_mut().unwrap();
            *w = w.clone() + b.matmul(a);
        }
        model
    }

    fn completions(&self, request: &Value) -> (u16, Value) {
        let name = request["model"].as_str().unwrap().to_string();
        let loras = self.loras.lock().unwrap().clone();
        let Some(at) = loras.iter().position(|(n, _)| *n == name) else {
            return (404, json!({"error": format!("no adapter {name}")}));
        };
        let dir = (self.fault != Fault::IgnoresAdapter).then(|| loras[at].1.as_path());
        let model = self.model(dir);
        let prompt: Vec<u32> = serde_json::from_value(request["prompt"].clone()).unwrap();
        let n = request["n"].as_u64().unwrap() as usize;
        let mut temperature = request["temperature"].as_f64().unwrap() as f32;
        if self.fault == Fault::DoublesTemperature {
            temperature *= 2.0;
        }
        let config = GenerateConfig {
            max_new_tokens: request["max_tokens"].as_u64().unwrap() as usize,
            sampling: SamplingConfig {
                temperature: Some(temperature),
                top_k: None,
                top_p: None,
            },
            seed: request["seed"].as_u64().unwrap(),
            stop_tokens: self.stop_tokens.clone(),
        };
        let prompts = vec![prompt.clone(); n];
        let generations = block_on(generate(
            &model,
            &Mixes::none(),
            &prompts,
            &config,
            |_, _| {},
        ))
        .unwrap();
        let answered = match (self.fault, at) {
            (Fault::AnswersWithOlderAdapter, 1..) => loras[at - 1].0.clone(),
            _ => name,
        };
        let choices: Vec<Value> = generations
            .into_iter()
            .enumerate()
            .map(|(index, g)| {
                let mut tokens = g.tokens;
                if self.fault == Fault::DropsFirstToken {
                    tokens.remove(0);
                }
                json!({
                    "index": index, "text": "",
                    "logprobs": {"token_logprobs": g.logprobs, "top_logprobs": null},
                    "finish_reason": if g.stopped { "stop" } else { "length" },
                    "stop_reason": null, "prompt_token_ids": prompt, "token_ids": tokens,
                })
            })
            .collect();
        (
            200,
            json!({"object": "text_completion", "model": answered, "choices": choices}),
        )
    }

    fn answer(&self, path: &str, body: &Value) -> (u16, Value) {
        match path {
            "/v1/load_lora_adapter" => {
                let name = body["lora_name"].as_str().unwrap().to_string();
                let dir = PathBuf::from(body["lora_path"].as_str().unwrap());
                self.loras.lock().unwrap().push((name, dir));
                (200, json!("Success"))
            }
            "/v1/unload_lora_adapter" => (200, json!("Success")),
            "/v1/completions" => self.completions(body),
            _ => (404, json!({"error": "not found"})),
        }
    }

    /// One HTTP/1.1 request and its answer (the connection closes after it).
    fn handle(&self, mut stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = self.answer(&path, &body);
        let text = answer.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            text.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(text.as_bytes()).unwrap();
    }
}

/// Starts a fake engine with `fault`; returns its URL.
fn serve(fault: Fault) -> String {
    let tokenizer = Checkpoint::open(&toy())
        .unwrap()
        .tokenizer(&toy().join("tokenizer.json"))
        .unwrap();
    let config = Checkpoint::open(&toy()).unwrap().config;
    let fake = Arc::new(Fake {
        fault,
        loras: Mutex::new(Vec::new()),
        stop_tokens: tokenizer.stop_tokens(&config.eos_token_ids),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            fake.handle(stream);
        }
    });
    url
}

/// `trainer train` on the toy recipe, two small steps from the example adapter, sampled by
/// the engine at `url` with a gap limit of 0.5 nats and a canary every `canary_every` steps;
/// returns whether it succeeded, its stderr and its metrics.
fn train(url: &str, name: &str, canary_every: usize) -> (bool, String, Vec<Value>) {
    let out_dir =
        std::env::temp_dir().join(format!("tinylora-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/configs/toy.toml");
    let adapter = toy().join("example-adapter.json");
    let sets = [
        "grpo.prompts_per_step=2".to_string(),
        "grpo.group_size=2".into(),
        "grpo.max_new_tokens=24".into(),
        "run.max_steps=2".into(),
        "run.eval_every=0".into(),
        "run.checkpoint_every=0".into(),
        "data.eval=\"\"".into(),
        format!("init.adapter={}", s(&adapter)),
        "rollout.engine=\"vllm\"".into(),
        format!("rollout.servers=[\"{url}\"]"),
        "rollout.max_logprob_gap=0.5".into(),
        format!("rollout.canary_every={canary_every}"),
    ];
    let mut args = vec!["train", "--config", s(&config), "--out", s(&out_dir)];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(&args)
        .output()
        .unwrap();
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap_or_default();
    let records = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["split"] == "train")
        .collect();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        records,
    )
}

#[test]
fn an_honest_engine_trains_with_a_log_prob_gap_near_zero() {
    let (ok, stderr, records) = train(&serve(Fault::None), "honest", 1);
    assert!(ok, "{stderr}");
    assert_eq!(records.len(), 2, "{stderr}");
    for r in &records {
        println!(
            "step {}: gap mean {} max {}, ratio {}..{}",
            r["step"],
            r["engine_logprob_gap_mean"],
            r["engine_logprob_gap_max"],
            r["is_ratio_min"],
            r["is_ratio_max"]
        );
        // The engine merges W + B·A, the trainer keeps the adapter unmerged: the same
        // log-probs up to f32 rounding of logits of size ≲ 30 (toy model) — 1e-3 is ~3000 ULP.
        assert!(r["engine_logprob_gap_max"].as_f64().unwrap() < 1e-3, "{r}");
        assert_eq!(r["is_clipped_fraction"], 0.0);
        // The canary moves the distribution enough to judge, and the engine follows it.
        let (shift, gap) = (
            r["canary_shift"].as_f64().unwrap(),
            r["canary_gap"].as_f64().unwrap(),
        );
        println!("canary: shift {shift}, gap {gap}");
        assert!(shift > 0.05 && gap < 1e-3, "{r}");
    }
}

#[test]
fn each_injected_fault_is_caught() {
    // Ignoring the adapter moves the log-probs by less than the 0.5-nat limit here (the
    // example adapter's v is small): without a canary the run goes on; the canary stops it.
    let (ok, stderr, _) = train(&serve(Fault::IgnoresAdapter), "no-canary", 0);
    assert!(ok, "{stderr}");
    let cases = [
        (Fault::IgnoresAdapter, "ignored adapter canary-"),
        (Fault::DoublesTemperature, "max_logprob_gap"),
        (Fault::DropsFirstToken, "log-probs for"),
        (Fault::AnswersWithOlderAdapter, "stale or unloaded adapter"),
    ];
    let mut caught: HashMap<String, String> = HashMap::new();
    for (fault, want) in cases {
        let name = format!("{fault:?}");
        let (ok, stderr, _) = train(&serve(fault), &name, 1);
        assert!(
            !ok && stderr.contains(want),
            "{fault:?}: expected `{want}` in:\n{stderr}"
        );
        caught.insert(name, stderr.lines().last().unwrap_or("").to_string());
    }
    println!("{caught:#?}");
}
