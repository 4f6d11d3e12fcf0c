//! `cargo xtask demo`: the main job on the bundled default — GRPO on the toy GSM task with a
//! 13-parameter TinyLoRA adapter on the bundled toy model — then the demo page.

use std::process::Command;

use crate::proc::{self, cargo, root, target_dir};
use crate::setup;
use crate::test::build_wasm;

/// Default port of the demo page.
const PORT: u16 = 8080;

/// Sets up, runs the main job, builds the web app and serves it until interrupted.
pub fn run(args: &[String]) -> Result<(), String> {
    let no_serve = args.iter().any(|a| a == "--no-serve");
    let env = setup::run()?;
    proc::run(cargo().args(["build", "--release", "-p", "trainer"]))?;
    let trainer = target_dir().join("release/trainer");
    proc::run(Command::new(&trainer).arg("devices"))?;
    let run_dir = root().join("runs/toy");
    proc::run(
        Command::new(&trainer)
            .args(["train", "--config"])
            .arg(root().join("assets/configs/toy.toml"))
            .arg("--out")
            .arg(&run_dir),
    )?;
    eprintln!(
        "\nxtask: the run is in {}: metrics.jsonl, plots/reward.svg, adapter.json, adapter.tl1",
        run_dir.display()
    );
    build_wasm(&env)?;
    if no_serve {
        return Ok(());
    }
    let link = std::fs::read_to_string(run_dir.join("adapter.tl1"))
        .map(|tl1| format!("#adapter={}", tl1.trim()))
        .unwrap_or_default();
    eprintln!(
        "\nxtask: demo page: open http://127.0.0.1:{PORT}/ in a browser with WebGPU \
         (Chrome/Edge 113+); the adapter just trained: http://127.0.0.1:{PORT}/{link}\n\
         Ctrl-C stops the server.\n"
    );
    proc::run(
        Command::new("node")
            .arg(root().join("tests/browser/serve.mjs"))
            .arg(root().join("dist"))
            .arg(PORT.to_string()),
    )
}
