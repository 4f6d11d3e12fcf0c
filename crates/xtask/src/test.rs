//! `cargo xtask test`: every check the project has, with one summary line at the end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::proc::{self, cargo, root, target_dir};
use crate::setup::{self, Env, WasmRoute};

/// Pass/fail counts over all steps: a test binary's own counts, or 1 for a check step.
#[derive(Default)]
struct Summary {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Summary {
    /// Records `result`; returns whether it succeeded.
    fn check(&mut self, name: &str, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => {
                self.passed += 1;
                true
            }
            Err(err) => {
                self.failed += 1;
                self.failures.push(format!("{name}: {err}"));
                false
            }
        }
    }

    fn tests(&mut self, name: &str, cmd: &mut Command) {
        match run_counting(cmd) {
            Ok((passed, failed, ok)) => {
                self.passed += passed;
                self.failed += failed;
                if !ok || failed > 0 {
                    self.failed += usize::from(failed == 0);
                    self.failures.push(format!("{name}: {failed} failed"));
                }
            }
            Err(err) => {
                self.check(name, Err(err));
            }
        }
    }
}

/// Runs the command, echoing its output, and adds up the pass/fail counts printed by cargo's
/// test harness (`test result: ok. N passed; M failed`) and node's (`# pass N`, `# fail M`).
fn run_counting(cmd: &mut Command) -> Result<(usize, usize, bool), String> {
    eprintln!("xtask: $ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        let count = |key: &str| {
            line.split(key)
                .nth(1)
                .and_then(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .find(|s| !s.is_empty())
                })
                .and_then(|n| n.parse::<usize>().ok())
        };
        if line.starts_with("test result:") {
            let words: Vec<&str> = line.split([' ', ';', '.']).collect();
            for pair in words.windows(2) {
                match pair[1] {
                    "passed" => passed += pair[0].parse::<usize>().unwrap_or(0),
                    "failed" => failed += pair[0].parse::<usize>().unwrap_or(0),
                    _ => {}
                }
            }
        } else if let Some(n) = line.strip_prefix("# pass ").and(count("# pass ")) {
            passed += n;
        } else if let Some(n) = line.strip_prefix("# fail ").and(count("# fail ")) {
            failed += n;
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Ok((passed, failed, status.success()))
}

/// Builds the web app into `dist/` with trunk: release, offline, wasm-opt off (Trunk.toml).
pub fn build_wasm(env: &Env) -> Result<(), String> {
    let mut cmd = Command::new(&env.trunk);
    cmd.args(["build", "--offline"]).current_dir(root());
    if env.wasm == WasmRoute::Debian {
        // Debian's rustc-web ships no std for wasm32 and builds it itself; std's own
        // dependencies must be fetched first, since trunk runs cargo offline.
        proc::run(
            Command::new("/usr/bin/cargo")
                .args([
                    "fetch",
                    "--manifest-path",
                    "/usr/lib/rustlib/src/rust/library/Cargo.toml",
                ])
                .env("RUSTC", "/usr/bin/rustc")
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("/usr/bin:{path}"))
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort")
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER",
                "/usr/lib/llvm-19/bin/wasm-ld",
            )
            .env_remove("RUSTUP_TOOLCHAIN");
    }
    proc::run(&mut cmd)
}

/// The whole test command.
pub fn run() -> Result<(), String> {
    let env = setup::run()?;
    let mut summary = Summary::default();
    summary.check(
        "cargo fmt --check",
        proc::run(cargo().args(["fmt", "--all", "--check"])),
    );
    summary.check(
        "cargo clippy",
        proc::run(cargo().args([
            "clippy",
            "--release",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])),
    );
    if env.wasm == WasmRoute::Rustup {
        // The web worker only compiles for wasm32; Debian's rustc-web route has no clippy.
        summary.check(
            "cargo clippy (wasm32 web worker)",
            proc::run(cargo().args([
                "clippy",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "tinylora-web",
                "--",
                "-D",
                "warnings",
            ])),
        );
    }
    // Every test binary runs even when one fails, so that one failure cannot hide others.
    summary.tests(
        "cargo test",
        cargo().args(["test", "--release", "--no-fail-fast"]),
    );
    let trainer_built = summary.check(
        "trainer build",
        proc::run(cargo().args(["build", "--release", "-p", "trainer"])),
    );
    let wasm_built = summary.check("wasm build", build_wasm(&env));
    if trainer_built && wasm_built {
        let trainer = target_dir().join("release/trainer");
        summary.tests(
            "browser tests",
            Command::new("node")
                .args(["--test", "--test-reporter=tap", "--test-concurrency=1"])
                .arg(root().join("tests/browser"))
                .env("TRAINER_BIN", trainer)
                .env("DIST_DIR", root().join("dist"))
                .env("ARTIFACTS_DIR", target_dir().join("browser-artifacts")),
        );
    } else {
        summary.check(
            "browser tests",
            Err("skipped: the trainer or the wasm build failed".into()),
        );
    }
    for failure in &summary.failures {
        eprintln!("xtask: FAILED {failure}");
    }
    println!(
        "xtask: {} passed, {} failed",
        summary.passed, summary.failed
    );
    if summary.failed == 0 {
        Ok(())
    } else {
        Err(format!("{} failed", summary.failed))
    }
}
