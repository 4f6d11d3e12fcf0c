//! llama.cpp's `llama-server` as a real rollout engine (opt-in, never a CI requirement: set
//! `TINYLORA_LLAMA_SERVER` to a `llama-server` binary, e.g. built by
//! `bash bench/build-llama-cpp.sh llama-server`). `trainer export --llama-server` writes the
//! bundled toy model and one LoRA per trainable float; the server started with the arguments
//! it prints samples for `trainer train` with `[rollout] engine = "llama-server"`: its
//! sampled-token log-probs equal the trainer's within 1e-3 (f32), the canary passes, and a
//! short GRPO run through it raises held-out accuracy as the local engine's run does.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, s};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tinylora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `llama-server` child, killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exports the toy model with `adapter`'s basis and starts `binary` on what the export
/// printed, on a free port; waits until it answers.
fn serve(binary: &Path, adapter: &Path) -> Served {
    let dir = temp("llama-server-files");
    let out = run(&[
        "export",
        "--model",
        s(&root().join("assets/toy")),
        "--adapter",
        s(adapter),
        "--llama-server",
        s(&dir),
    ]);
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut args: Vec<String> = printed
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = args.iter().position(|a| a == "--port").unwrap();
    args[at + 1] = port.to_string();
    args.extend(["-np", "1", "-c", "512", "-t", "2"].map(String::from));
    let lib = binary.parent().unwrap();
    let child = Command::new(binary)
        .args(&args)
        .env("LD_LIBRARY_PATH", lib)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let served = Served { child, url };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "llama-server did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    served
}

/// `trainer train` on the toy recipe with `sets`; the run's records.
fn train(out: &Path, sets: &[String]) -> Vec<Value> {
    let config = root().join("assets/configs/toy.toml");
    let mut args = vec!["train", "--config", s(&config), "--out", s(out)];
    for set in sets {
        args.extend(["--set", set.as_str()]);
    }
    run(&args);
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn llama_server_samples_the_policy_being_trained() {
    let Some(binary) = std::env::var_os("TINYLORA_LLAMA_SERVER").map(PathBuf::from) else {
        eprintln!("TINYLORA_LLAMA_SERVER not set: skipping the llama-server check");
        return;
    };
    let example = root().join("assets/toy/example-adapter.json");
    let served = serve(&binary, &example);
    let remote = |url: &str| {
        vec![
            "rollout.engine=\"llama-server\"".to_string(),
            format!("rollout.servers=[\"{url}\"]"),
            "rollout.canary_every=1".into(),
        ]
    };
    // From the example adapter (v ≠ 0): the engine's log-probs are the trainer's.
    let mut sets = remote(&served.url);
    sets.extend([
        "grpo.prompts_per_step=4".to_string(),
        "grpo.group_size=4".into(),
        "run.max_steps=2".into(),
        "data.eval=\"\"".into(),
        "rollout.max_logprob_gap=1e-3".into(),
        format!("init.adapter={}", s(&example)),
    ]);
    let records = train(&temp("llama-server-gap"), &sets);
    for r in records.iter().filter(|r| r["split"] == "train") {
        println!(
            "gap mean {} max {}; canary shift {} gap {}",
            r["engine_logprob_gap_mean"],
            r["engine_logprob_gap_max"],
            r["canary_shift"],
            r["canary_gap"]
        );
        assert!(r["engine_logprob_gap_max"].as_f64().unwrap() <= 1e-3, "{r}");
    }
    // From v = 0 (the same basis: the example's config and seed): the same short GRPO run
    // through the local engine and through llama-server.
    let accuracy = |records: &[Value]| -> Vec<f64> {
        records
            .iter()
            .filter(|r| r["split"] == "eval")
            .map(|r| r["accuracy"].as_f64().unwrap())
            .collect()
    };
    let short = [
        "run.max_steps=8".to_string(),
        "run.eval_every=8".into(),
        "data.eval_limit=100".into(),
    ];
    let local = train(&temp("llama-server-local"), &short);
    let mut sets = remote(&served.url);
    sets.extend(short);
    let served_run = train(&temp("llama-server-run"), &sets);
    let (a, b) = (accuracy(&local), accuracy(&served_run));
    println!("held-out accuracy, local engine: {a:?}; llama-server: {b:?}");
    assert!(a.len() >= 2 && b.len() >= 2);
    assert!(b.last().unwrap() - b[0] >= 0.2, "llama-server run: {b:?}");
    assert!(
        (a.last().unwrap() - b.last().unwrap()).abs() <= 0.25,
        "{a:?} vs {b:?}"
    );
}
