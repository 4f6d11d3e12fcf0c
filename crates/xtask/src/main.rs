//! `cargo xtask`: the project's set-up and orchestration, with no dependencies beyond std.
//!
//! - `cargo xtask demo`: install what is missing, train on the bundled default, serve the demo page.
//! - `cargo xtask test`: install what is missing, then run every check (fmt, clippy, unit and
//!   integration tests, the wasm build, browser end-to-end tests) and print a summary line.
//! - `cargo xtask setup`: only the installation step.

mod demo;
mod proc;
mod setup;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <demo|test|setup|wasm>
  demo    set up, run the main job on the bundled default and serve the demo page
  test    set up and run every test (fmt, clippy, cargo tests, wasm build, browser tests)
  setup   install missing prerequisites only (apt packages, trunk, wasm-bindgen-cli, npm packages)
  wasm    set up and build the web app (trunk build, release per Trunk.toml) into dist/";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run().map(|_| ()),
        Some("test") => test::run(),
        Some("demo") => demo::run(&args[1..]),
        Some("wasm") => setup::run().and_then(|env| test::build_wasm(&env)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}
