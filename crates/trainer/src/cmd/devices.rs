//! `trainer devices`: start each backend and run the self-check computation on it.

use anyhow::{Result, bail};
use tinylora::device::{BackendKind, init};
use tinylora::readback::block_on;
use tinylora::selfcheck;

/// Arguments of `trainer devices`.
#[derive(clap::Args)]
pub struct Args {
    /// Only this backend (cpu or wgpu); all of them when absent.
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Print one JSON object per backend instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the self-check on the chosen backends; fails if any backend fails.
pub fn run(args: Args) -> Result<()> {
    let kinds = match args.backend {
        Some(kind) => vec![kind],
        None => vec![BackendKind::Cpu, BackendKind::Wgpu],
    };
    let mut failures = 0;
    for kind in kinds {
        let outcome = init(kind).and_then(|device| block_on(selfcheck::run(&device)));
        match (&outcome, args.json) {
            (Ok(check), true) => println!(
                "{}",
                serde_json::json!({"backend": kind.name(), "ok": check.passed(),
                    "values": check.values, "max_abs_err": check.max_abs_err,
                    "error_bound": selfcheck::error_bound(), "basis_hash": check.basis_hash})
            ),
            (Err(err), true) => println!(
                "{}",
                serde_json::json!({"backend": kind.name(), "ok": false, "error": err.to_string()})
            ),
            (Ok(check), false) => println!(
                "{:<5} {}  max |err| vs f64 reference = {:.2e}",
                kind.name(),
                if check.passed() { "ok  " } else { "FAIL" },
                check.max_abs_err
            ),
            (Err(err), false) => println!("{:<5} FAIL  {err}", kind.name()),
        }
        if !matches!(&outcome, Ok(check) if check.passed()) {
            failures += 1;
        }
    }
    if failures > 0 {
        bail!("{failures} backend(s) failed the self-check");
    }
    Ok(())
}
