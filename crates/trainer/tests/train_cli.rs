//! `trainer train` and `trainer sft` end to end on a tiny model: files written, resume from a
//! checkpoint equals the uninterrupted run, Ctrl-C saves a checkpoint that resumes the same
//! trajectory, a diverging run stops and names the last good checkpoint, and config errors name
//! the key. The fixture model is random, so its GRPO rewards are flat and `v` stays put there;
//! the supervised runs move `v` and carry the trajectory checks (the loop is shared).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{model_with_tokenizer, run, s};
use serde_json::Value;

/// A tiny GRPO setup: 8 short problems, 2 prompts × 2 samples of 4 tokens per step, two
/// updates per step, constant learning rate (no warm-up, so the trajectory does not depend on
/// the planned length).
fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = model_with_tokenizer(name);
    let data: String = (0..8)
        .map(|i| {
            format!(
                "{{\"question\": \"{i}+1?\", \"answer\": \"#### {}\"}}\n",
                i + 1
            )
        })
        .collect();
    std::fs::write(dir.join("train.jsonl"), data).unwrap();
    let config = "\
[model]\npath = \".\"\n\
[data]\ntrain = \"train.jsonl\"\neval = \"train.jsonl\"\neval_limit = 2\n\
[grpo]\nprompts_per_step = 2\ngroup_size = 2\nmax_new_tokens = 4\nmini_batches = 2\nreward = \"flexible\"\n\
[sft]\nbatch_size = 2\nmax_target_tokens = 8\n\
[optim]\nlr = 0.05\nwarmup_ratio = 0.0\n\
[run]\nmax_steps = 6\ncheckpoint_every = 2\nkeep_checkpoints = 0\neval_max_new_tokens = 4\n";
    let path = dir.join("tiny.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

fn trainer(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(args);
    cmd
}

fn train_records(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["split"] == "train")
        .collect()
}

/// The fields of a record that do not depend on timing.
fn trajectory(record: &Value) -> Vec<String> {
    [
        "step",
        "reward_mean",
        "accuracy",
        "loss",
        "grad_norm",
        "clip_fraction",
        "v_norm",
        "lr",
        "completion_len_mean",
        "tokens",
    ]
    .iter()
    .map(|k| format!("{k}={}", record[*k]))
    .collect()
}

fn adapter_v(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["v"].clone()
}

#[test]
fn a_grpo_run_writes_its_files_and_resumes_exactly() {
    let (dir, config) = setup("train");
    let full = dir.join("full");
    run(&["train", "--config", s(&config), "--out", s(&full)]);
    let records = train_records(&full);
    assert_eq!(records.len(), 6);
    for key in [
        "reward_mean",
        "reward_std",
        "accuracy",
        "zero_std_fraction",
        "completion_len_mean",
        "completion_len_max",
        "clip_fraction",
        "kl",
        "v_norm",
        "lr",
        "rollout_tokens_per_s",
        "step_time_s",
        "loss",
        "grad_norm",
    ] {
        assert!(
            records.iter().all(|r| r[key].is_number()),
            "{key} missing: {}",
            records[0]
        );
    }
    assert!(records.iter().all(|r| r["updates"] == 2 && r["lr"] == 0.05));
    for file in [
        "adapter.json",
        "adapter.tl1",
        "config.toml",
        "plots/metrics.svg",
        "plots/reward.svg",
        "checkpoints/step-000002/adapter.json",
        "checkpoints/step-000004/state.json",
        "checkpoints/step-000006/state.json",
        "eval/step-000006.jsonl",
    ] {
        assert!(full.join(file).is_file(), "{file} missing");
    }
    let evals = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    assert!(evals.contains("\"split\":\"eval\""), "{evals}");

    // Resuming from step 2 replays steps 3..6 exactly (same samples, same rewards).
    let resumed = dir.join("resumed");
    run(&[
        "train",
        "--resume",
        s(&full.join("checkpoints/step-000002")),
        "--out",
        s(&resumed),
    ]);
    let again = train_records(&resumed);
    assert_eq!(again.len(), 4);
    for (a, b) in records[2..].iter().zip(&again) {
        assert_eq!(trajectory(a), trajectory(b));
    }
    assert_eq!(
        adapter_v(&full.join("adapter.json")),
        adapter_v(&resumed.join("adapter.json"))
    );
}

/// Sends Ctrl-C to a run once its first step is logged; returns the steps it had done.
fn interrupt_after_first_step(args: &[&str], run_dir: &Path) -> usize {
    let child = trainer(args).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    // The file is appended to while it is polled: look at complete lines only.
    let a_step_done = || {
        let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).unwrap()["split"] == "train")
    };
    while !a_step_done() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after step"), "{stderr}");
    let done = train_records(run_dir).len();
    assert!(
        run_dir
            .join(format!("checkpoints/step-{done:06}/state.json"))
            .is_file()
    );
    done
}

#[test]
fn sft_resumes_and_survives_ctrl_c_on_one_trajectory() {
    let (dir, config) = setup("sft");
    // Long enough that Ctrl-C lands mid-run; the comparison covers the first 12 steps.
    let long = [
        "--set",
        "run.max_steps=60",
        "--set",
        "run.checkpoint_every=4",
    ];
    let full = dir.join("full");
    let mut args = vec!["sft", "--config", s(&config), "--out", s(&full)];
    args.extend(long);
    args.extend(["--set", "run.max_steps=12"]);
    run(&args);
    let records = train_records(&full);
    assert_eq!(records.len(), 12);
    assert!(
        records
            .iter()
            .all(|r| r["loss"].as_f64().is_some_and(f64::is_finite))
    );
    assert!(records[11]["loss"].as_f64() < records[0]["loss"].as_f64());
    assert!(records[11]["v_norm"].as_f64().unwrap() > 0.0);

    let resumed = dir.join("resumed");
    run(&[
        "sft",
        "--resume",
        s(&full.join("checkpoints/step-000004")),
        "--out",
        s(&resumed),
    ]);
    let again = train_records(&resumed);
    assert_eq!(
        again.iter().map(trajectory).collect::<Vec<_>>(),
        records[4..].iter().map(trajectory).collect::<Vec<_>>()
    );
    assert_eq!(
        adapter_v(&full.join("adapter.json")),
        adapter_v(&resumed.join("adapter.json"))
    );

    let interrupted = dir.join("interrupted");
    let mut args = vec!["sft", "--config", s(&config), "--out", s(&interrupted)];
    args.extend(long);
    let done = interrupt_after_first_step(&args, &interrupted);
    assert!(done < 12, "Ctrl-C landed after step {done}");
    run(&[
        "sft",
        "--resume",
        s(&interrupted),
        "--set",
        "run.max_steps=12",
    ]);
    let finished = train_records(&interrupted);
    assert_eq!(
        finished.iter().map(trajectory).collect::<Vec<_>>(),
        records.iter().map(trajectory).collect::<Vec<_>>()
    );
    assert_eq!(
        adapter_v(&full.join("adapter.json")),
        adapter_v(&interrupted.join("adapter.json"))
    );

    // An SFT checkpoint does not resume as GRPO.
    let out = trainer(&["train", "--resume", s(&full)]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was written by `trainer sft`"), "{stderr}");
}

#[test]
fn a_run_starts_from_an_adapter_and_a_basis_file() {
    let (dir, config) = setup("init");
    let first = dir.join("first");
    run(&[
        "sft",
        "--config",
        s(&config),
        "--out",
        s(&first),
        "--set",
        "run.max_steps=2",
    ]);
    let adapter = first.join("adapter.json");
    let basis = dir.join("basis.safetensors");
    run(&[
        "export",
        "--model",
        s(&dir),
        "--adapter",
        s(&adapter),
        "--basis",
        s(&basis),
    ]);

    // The factors read from the basis file are the computed ones: the same trajectory.
    let computed = dir.join("computed");
    let read = dir.join("read");
    run(&[
        "sft",
        "--config",
        s(&config),
        "--out",
        s(&computed),
        "--set",
        "run.max_steps=3",
    ]);
    let with_basis = format!("init.basis={}", s(&basis));
    run(&[
        "sft",
        "--config",
        s(&config),
        "--out",
        s(&read),
        "--set",
        "run.max_steps=3",
        "--set",
        &with_basis,
    ]);
    assert_eq!(
        train_records(&computed)
            .iter()
            .map(trajectory)
            .collect::<Vec<_>>(),
        train_records(&read)
            .iter()
            .map(trajectory)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        adapter_v(&computed.join("adapter.json")),
        adapter_v(&read.join("adapter.json"))
    );

    // A run from an adapter starts at its v: with a zero learning rate it stays there.
    let from = dir.join("from");
    let with_adapter = format!("init.adapter={}", s(&adapter));
    run(&[
        "train",
        "--config",
        s(&config),
        "--out",
        s(&from),
        "--set",
        "run.max_steps=1",
        "--set",
        "optim.lr=0.0",
        "--set",
        &with_adapter,
        "--set",
        &with_basis,
    ]);
    assert_eq!(adapter_v(&from.join("adapter.json")), adapter_v(&adapter));
    assert_ne!(
        adapter_v(&adapter),
        adapter_v(&computed.join("adapter.json"))
    );

    // A basis file for another adapter config is refused, naming it.
    let out = trainer(&[
        "sft",
        "--config",
        s(&config),
        "--out",
        s(&dir.join("bad")),
        "--set",
        "adapter.seed=7",
        "--set",
        &with_basis,
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("basis.safetensors")
            && stderr.contains("another adapter config"),
        "{stderr}"
    );
}

#[test]
fn a_diverging_run_keeps_the_last_good_checkpoint() {
    let (dir, config) = setup("diverge");
    let out_dir = dir.join("run");
    let out = trainer(&[
        "sft",
        "--config",
        s(&config),
        "--out",
        s(&out_dir),
        "--set",
        "optim.lr=1e30",
        "--set",
        "run.checkpoint_every=1",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("training diverged"), "{stderr}");
    assert!(stderr.contains("the last good checkpoint is"), "{stderr}");
    let kept = train_records(&out_dir).len();
    assert!(
        out_dir
            .join(format!("checkpoints/step-{kept:06}/state.json"))
            .is_file(),
        "{stderr}"
    );
    assert!(
        !out_dir
            .join(format!("checkpoints/step-{:06}", kept + 1))
            .exists()
    );
    assert!(!out_dir.join("adapter.json").exists());
}

#[test]
fn config_errors_name_the_key() {
    let (dir, config) = setup("badkey");
    let out = trainer(&["train", "--config", s(&config), "--set", "grpo.groupsize=3"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown config key `grpo.groupsize`; did you mean `grpo.group_size`?"),
        "{stderr}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[model]\npath = \".\"\n[data]\ntrain = \"missing.jsonl\"\n",
    )
    .unwrap();
    let out = trainer(&["train", "--config", s(&bad)]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("missing.jsonl"),
        "{stderr}"
    );
}

/// Every checkpoint folder of `run_dir` holds a readable state and adapter.
fn checkpoints_load(run_dir: &Path) -> usize {
    let mut found = 0;
    for entry in std::fs::read_dir(run_dir.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("step-") {
            continue;
        }
        let state = std::fs::read_to_string(path.join("state.json"))
            .unwrap_or_else(|e| panic!("{name}: state.json unreadable: {e}"));
        serde_json::from_str::<Value>(&state).unwrap_or_else(|e| panic!("{name}: {e}"));
        tinylora::adapter::file::AdapterFile::load(&path.join("adapter.json"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        found += 1;
    }
    found
}

#[test]
fn sigkill_at_random_moments_never_loses_the_last_checkpoint() {
    let (dir, config) = setup("sigkill");
    let steps = [
        "--set",
        "run.max_steps=60",
        "--set",
        "run.checkpoint_every=1",
    ];
    let full = dir.join("full");
    let mut args = vec!["sft", "--config", s(&config), "--out", s(&full)];
    args.extend(steps);
    run(&args);

    let killed = dir.join("killed");
    let mut first = vec!["sft", "--config", s(&config), "--out", s(&killed)];
    first.extend(steps);
    let resume = ["sft", "--resume", s(&killed)];
    // Seeded random moments, tied to progress rather than wall time (machines differ in
    // speed): 1-4 more checkpoints into each run, then 0-20 ms further, i.e. mid-step.
    let mut rng = tinylora::rng::SplitMix64::new(7);
    let saved = |dir: &Path| {
        std::fs::read_dir(dir.join("checkpoints")).map_or(0, |entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
                .count()
        })
    };
    for round in 0..4 {
        let args: &[&str] = if round == 0 { &first } else { &resume };
        let target = saved(&killed) + 1 + (rng.next_f64() * 4.0) as usize;
        let mut child = trainer(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while saved(&killed) < target {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let wait = (rng.next_f64() * 20.0) as u64;
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            !killed.join("adapter.json").exists(),
            "round {round}: the run ended before the kill"
        );
        let loaded = checkpoints_load(&killed);
        eprintln!("round {round}: killed {wait} ms after checkpoint {target}; {loaded} load");
    }
    run(&resume);
    assert_eq!(
        adapter_v(&full.join("adapter.json")),
        adapter_v(&killed.join("adapter.json")),
        "four SIGKILLs and resumes reproduce the uninterrupted run"
    );
}
