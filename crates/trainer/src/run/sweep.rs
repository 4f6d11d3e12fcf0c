//! `trainer sweep`: held-out accuracy against the number of trained parameters, the paper's
//! Figure 1 at toy scale. One GRPO run per (size, seed) from the same config, each in its own
//! folder; the table goes to `sweep.jsonl` and the curve to `sweep.svg`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tinylora::adapter::config::ALL_TARGETS;
use tinylora::fsutil::write_atomic;
use tinylora::model::ModelConfig;

use super::metrics::read_records;
use super::plot::write_sweep_plot;
use super::training::RunArgs;
use tinylora::train::config::TrainConfig;

/// Arguments of `trainer sweep`.
#[derive(clap::Args)]
pub struct SweepArgs {
    /// The GRPO config every run starts from (e.g. assets/configs/toy.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Overrides applied to every run, e.g. --set run.max_steps=20.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Seeds per size (runs use seeds 1..=N for data order, sampling and projections).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/sweep")]
    pub out: PathBuf,
}

/// One adapter size of the sweep.
struct Size {
    label: String,
    overrides: Vec<String>,
    parameters: usize,
}

/// The sizes for a model with `modules` adapted modules (all 7 projections per layer): 1 and 13
/// floats fully tied, u = 4 and u = 36 per module untied (~100 and ~1000 for a 4-layer model),
/// and LoRA-XS-sized (r = 8, u = r² per module, untied).
fn sizes(modules: usize) -> Vec<Size> {
    let tied = |u: usize| Size {
        label: format!("TinyLoRA u={u}, all tied"),
        overrides: vec![
            format!("adapter.u={u}"),
            "adapter.tying={ kind = \"ratio\", weight_tying = 1.0 }".into(),
        ],
        parameters: u,
    };
    let untied = |label: String, r: usize, u: usize| Size {
        label,
        overrides: vec![
            format!("adapter.r={r}"),
            format!("adapter.u={u}"),
            "adapter.tying={ kind = \"none\" }".into(),
        ],
        parameters: u * modules,
    };
    vec![
        tied(1),
        tied(13),
        untied("TinyLoRA u=4, untied".into(), 2, 4),
        untied("TinyLoRA u=36, untied".into(), 2, 36),
        untied("LoRA-XS size (r=8, 64 per module)".into(), 8, 64),
    ]
}

/// The held-out accuracy of a finished run: its last evaluation.
fn final_accuracy(run_dir: &std::path::Path) -> Result<(f64, Option<f64>)> {
    let records = read_records(&run_dir.join("metrics.jsonl"))?;
    let evals: Vec<&Value> = records.iter().filter(|r| r["split"] == "eval").collect();
    let last = evals
        .last()
        .and_then(|r| r["accuracy"].as_f64())
        .with_context(|| format!("{}: no evaluation (set data.eval)", run_dir.display()))?;
    let base = evals
        .iter()
        .find(|r| r["step"] == 0)
        .and_then(|r| r["accuracy"].as_f64());
    Ok((last, base))
}

/// Runs `trainer sweep`.
pub fn sweep(args: SweepArgs) -> Result<()> {
    let config = TrainConfig::load(&args.config, &args.set)?;
    if config.data.eval.as_os_str().is_empty() {
        bail!("{}: the sweep needs data.eval", args.config.display());
    }
    let model_config = crate::hub::open(&config.model.path)?.config;
    let modules = sweep_modules(&model_config);
    let mut rows = Vec::new();
    let mut base = None;
    for size in sizes(modules) {
        for seed in 1..=args.seeds {
            let out = args.out.join(format!("p{}-seed{seed}", size.parameters));
            let mut set = args.set.clone();
            set.extend(size.overrides.iter().cloned());
            set.extend([
                format!("run.seed={seed}"),
                format!("adapter.seed={seed}"),
                // The first run also measures the base model (step 0); the rest only the end.
                format!(
                    "run.eval_every={}",
                    if rows.is_empty() { 1_000_000 } else { 0 }
                ),
            ]);
            eprintln!(
                "sweep: {} ({} parameters), seed {seed}",
                size.label, size.parameters
            );
            super::grpo::train(RunArgs {
                config: Some(args.config.clone()),
                set,
                resume: None,
                out: Some(out.clone()),
            })?;
            let (accuracy, at_start) = final_accuracy(&out)?;
            base = base.or(at_start);
            rows.push(json!({
                "label": size.label,
                "parameters": size.parameters,
                "seed": seed,
                "accuracy": accuracy,
                "run": out.display().to_string(),
            }));
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    write_atomic(&args.out.join("sweep.jsonl"), text.as_bytes())?;
    let plot = args.out.join("sweep.svg");
    write_sweep_plot(&plot, &rows, base)?;
    println!(
        "parameters  accuracy (mean over {} seeds)  label",
        args.seeds
    );
    for chunk in rows.chunks(args.seeds as usize) {
        let mean = chunk
            .iter()
            .filter_map(|r| r["accuracy"].as_f64())
            .sum::<f64>()
            / chunk.len() as f64;
        println!(
            "{:>10}  {:>6.1}%  {}",
            chunk[0]["parameters"],
            100.0 * mean,
            chunk[0]["label"].as_str().unwrap_or("")
        );
    }
    println!(
        "table {}, plot {}",
        args.out.join("sweep.jsonl").display(),
        plot.display()
    );
    Ok(())
}

/// Adapted modules when all seven projections of every layer are targets.
fn sweep_modules(config: &ModelConfig) -> usize {
    config.num_hidden_layers * ALL_TARGETS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_one_to_lora_xs() {
        let counts: Vec<usize> = sizes(28).iter().map(|s| s.parameters).collect();
        assert_eq!(counts, vec![1, 13, 112, 1008, 1792]);
        let base = TrainConfig::parse(
            "[model]\npath = \"m\"\n[data]\ntrain = \"t\"\n",
            std::path::Path::new("/x/c.toml"),
            &sizes(28)[4].overrides,
        )
        .unwrap();
        assert_eq!((base.adapter.r, base.adapter.u), (8, 64));
    }
}
