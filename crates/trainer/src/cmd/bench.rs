//! `trainer bench`: prefill and decode speed, peak memory, adapter basis and merge time, and
//! where decode stands against the memory-bandwidth limit (and against candle, when its bench
//! binary is given). Prints a Markdown table, or with `--json` one JSON object per backend
//! (weight memory, largest weight buffer, kernel launches per decoded token on a GPU) for
//! scripts to compare runs; timings are for reading, never asserted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::adapter::{TinyLora, merge, unmerge};
use tinylora::device::{BackendKind, init};
use tinylora::generate::{GenerateConfig, generate};
use tinylora::model::Mixes;
use tinylora::model::load::LoadOptions;
use tinylora::quant::WeightFormat;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::sampling::SamplingConfig;

use super::bench_grpo::grpo_step;

/// Timed prefills, after one untimed (as `llama-bench -r 3` after its warm-up run); the
/// prefill figure is their mean tokens/s.
const PREFILL_RUNS: usize = 3;

/// Arguments of `trainer bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The model (e.g. one written by `trainer random-model --shape 0.5b`).
    #[arg(long)]
    model: PathBuf,
    /// Compute backends to measure, comma-separated.
    #[arg(long, default_value = "cpu,wgpu", value_delimiter = ',')]
    backends: Vec<BackendKind>,
    /// Prompt length of the prefill measurement (mean of 3 runs after a warm-up).
    #[arg(long, default_value_t = 256)]
    prompt_len: usize,
    /// New tokens per decode measurement.
    #[arg(long, default_value_t = 16)]
    decode_tokens: usize,
    /// `as-stored` or `q8` (f16/bf16/f32 matrices quantised to Q8_0 at load).
    #[arg(long, default_value = "as-stored")]
    weights: WeightFormat,
    /// Batch sizes of the decode measurement.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    batches: Vec<usize>,
    /// The candle comparison binary (`bench/candle`), run on the same model and workload.
    #[arg(long)]
    candle: Option<PathBuf>,
    /// Also time the TinyLoRA basis (u = 13, fully tied, r = 2, all 7 projections) and merge.
    #[arg(long)]
    adapter: bool,
    /// Also time one GRPO step (prompts × 4 samples of `--decode-tokens` tokens), by part.
    #[arg(long, value_name = "PROMPTS")]
    grpo: Option<usize>,
    /// Print one JSON object per backend (a line each) instead of the table: `backend`,
    /// `weights`, `weight_bytes`, `gpu_weight_bytes`, `largest_buffer_bytes`,
    /// `dispatches_per_token`, `prefill_tok_s`, `decode_tok_s_b1`, `decode_tok_s_b8`, ….
    #[arg(long)]
    json: bool,
}

/// Kernel launches per decoded token on `backend` (a GPU backend), batch 1: two greedy
/// generations of this same program (2 and 10 new tokens from one prompt) with cubecl's
/// profiler on (`CUBECL_DEBUG_OPTION=profile`, one `| duration | kernel` line per launch);
/// the difference per token.
fn dispatches_per_token(model: &Path, backend: BackendKind, weights: WeightFormat) -> Result<f64> {
    const SHORT: usize = 2;
    const LONG: usize = 10;
    let dir = std::env::temp_dir().join(format!("tinylora-dispatches-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let launches = |tokens: usize| -> Result<usize> {
        let log = dir.join(format!("{tokens}.log"));
        let _ = std::fs::remove_file(&log);
        let out = Command::new(std::env::current_exe()?)
            .args([
                "generate",
                "--backend",
                backend.name(),
                "--ids",
                "5,17,42,99,7,23,61,8",
                "--weights",
                weights.name(),
            ])
            .arg("--model")
            .arg(model)
            .args(["--max-new-tokens", &tokens.to_string(), "--json"])
            .env("CUBECL_DEBUG_LOG", &log)
            .env("CUBECL_DEBUG_OPTION", "profile")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "counting kernel launches: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let n = generated["tokens"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            n == tokens,
            "counting kernel launches: the generation stopped after {n} of {tokens} tokens"
        );
        let text = std::fs::read_to_string(&log)
            .with_context(|| format!("cubecl wrote no profile to {}", log.display()))?;
        Ok(text.lines().filter(|l| is_launch(l)).count())
    };
    let (short, long) = (launches(SHORT)?, launches(LONG)?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((long as f64 - short as f64) / (LONG - SHORT) as f64)
}

/// Whether a line of cubecl's profile log is a kernel launch: `| DURATION | KERNEL`, where
/// the kernel's name may itself hold `|` between its generic parts (burn's elementwise and
/// matmul kernels: `| 407µs | KernelBinop | MulOp_6c21`).
fn is_launch(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("| ") else {
        return false;
    };
    let duration = rest.split('|').next().unwrap_or("").trim();
    let number = duration.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ');
    duration.ends_with('s') && !number.is_empty() && number.parse::<f64>().is_ok()
}

/// Bytes copied per second by a large `memcpy` (read + write), the best of three.
fn copy_bandwidth() -> f64 {
    const BYTES: usize = 1 << 30;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    (0..3)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
            2.0 * BYTES as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Tokens of a synthetic prompt (ids spread over the vocabulary).
fn prompt(len: usize, vocab: usize, row: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + row * 104729) % (vocab - 10) + 10) as u32)
        .collect()
}

struct Row {
    what: String,
    value: String,
    note: String,
}

/// Runs the candle bench binary; returns its (prefill, decode) tokens/s.
fn candle(bin: &PathBuf, args: &Args, batch: usize) -> Result<(f64, f64)> {
    let out = Command::new(bin)
        .arg(&args.model)
        .arg(args.prompt_len.to_string())
        .arg(args.decode_tokens.to_string())
        .arg(batch.to_string())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{} printed no result: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((
        json["prefill_tok_s"].as_f64().unwrap_or(0.0),
        json["decode_tok_s"].as_f64().unwrap_or(0.0),
    ))
}

/// Measures and prints the table.
pub fn run(args: Args) -> Result<()> {
    let mut rows = Vec::new();
    // (row, decode tok/s, weight bytes per token) of batch-1 decodes, compared with the bandwidth at the end.
    let mut single = Vec::new();
    // candle (CPU only): one run per batch size, batch 1 also giving its prefill figure.
    let mut candle_runs = std::collections::BTreeMap::new();
    if let Some(bin) = &args.candle
        && args.backends.contains(&BackendKind::Cpu)
    {
        for batch in args.batches.iter().copied().chain([1]) {
            if let std::collections::btree_map::Entry::Vacant(slot) = candle_runs.entry(batch) {
                slot.insert(candle(bin, &args, batch)?);
            }
        }
    }
    let candle_on = |backend: BackendKind, batch: usize| {
        (backend == BackendKind::Cpu)
            .then(|| candle_runs.get(&batch).copied())
            .flatten()
    };
    let mut objects = Vec::new();
    for &backend in &args.backends {
        let device = init(backend)?;
        let t = Instant::now();
        let options = LoadOptions {
            weights: args.weights,
            ..LoadOptions::default()
        };
        let mut model = crate::hub::open(&args.model)?.load_with(&device, &options)?;
        let load_s = t.elapsed().as_secs_f64();
        let params = model.parameter_count();
        let bytes_per_token = model.weight_bytes_per_token();
        let b = backend.name();
        rows.push(Row {
            what: format!("{b}: load"),
            value: format!("{load_s:.2} s"),
            note: format!(
                "{:.1} M parameters; a decoded token reads {:.0} MiB of weights",
                params as f64 / 1e6,
                bytes_per_token as f64 / (1 << 20) as f64
            ),
        });
        let vocab = model.config.vocab_size;
        let ids = prompt(args.prompt_len, vocab, 0);
        let prefill_rate = || -> Result<f64> {
            let mut cache = model.new_cache(vec![0]);
            let t = Instant::now();
            block_on(to_vec_f32(model.forward_last(
                std::slice::from_ref(&ids),
                &mut cache,
                &Mixes::none(),
            )))?;
            Ok(args.prompt_len as f64 / t.elapsed().as_secs_f64())
        };
        prefill_rate()?;
        let prefill = (0..PREFILL_RUNS)
            .map(|_| prefill_rate())
            .sum::<Result<f64>>()?
            / PREFILL_RUNS as f64;
        let candle_prefill = candle_on(backend, 1);
        rows.push(Row {
            what: format!("{b}: prefill, prompt {}", args.prompt_len),
            value: format!("{prefill:.1} tok/s"),
            note: candle_prefill.map_or(String::new(), |(p, _)| {
                format!("candle {p:.1} tok/s, ours/candle {:.2}", prefill / p)
            }),
        });
        let mut decodes = serde_json::Map::new();
        for &batch in &args.batches {
            let prompts: Vec<Vec<u32>> = (0..batch).map(|r| prompt(16, vocab, r)).collect();
            let config = GenerateConfig {
                max_new_tokens: args.decode_tokens + 1,
                sampling: SamplingConfig {
                    temperature: None,
                    top_k: None,
                    top_p: None,
                },
                seed: 0,
                stop_tokens: Vec::new(),
            };
            let mut first = None;
            block_on(generate(
                &model,
                &Mixes::none(),
                &prompts,
                &config,
                |_, _| {
                    first.get_or_insert_with(Instant::now);
                },
            ))?;
            let decode = (batch * args.decode_tokens) as f64
                / first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
            decodes.insert(batch.to_string(), decode.into());
            let mut note = Vec::new();
            if batch == 1 {
                single.push((rows.len(), decode, bytes_per_token));
            }
            if let Some((_, c)) = candle_on(backend, batch) {
                note.push(format!(
                    "candle {c:.2} tok/s, ours/candle {:.2}",
                    decode / c
                ));
            }
            rows.push(Row {
                what: format!("{b}: decode, batch {batch}"),
                value: format!("{decode:.2} tok/s"),
                note: note.join("; "),
            });
        }
        if args.adapter {
            let config = TinyLoraConfig {
                r: 2,
                ..TinyLoraConfig::default()
            };
            let t = Instant::now();
            let adapter = block_on(TinyLora::init(&mut model, config))?;
            let basis = t.elapsed().as_secs_f64();
            adapter.attach(&mut model)?;
            let t = Instant::now();
            let mixes = adapter.current_mixes(&model)?;
            merge(&mut model, &mixes);
            unmerge(&mut model);
            rows.push(Row {
                what: format!(
                    "{b}: TinyLoRA basis ({} modules)",
                    adapter.basis.modules.len()
                ),
                value: format!("{basis:.2} s"),
                note: format!("merge + unmerge {:.2} s", t.elapsed().as_secs_f64()),
            });
        }
        if let Some(prompts) = args.grpo {
            let step = grpo_step(&args.model, backend, prompts, 4, args.decode_tokens)?;
            let total = step.rollout + step.reference + step.backward + step.optimizer;
            rows.push(Row {
                what: format!("{b}: GRPO step, {} sequences", step.sequences),
                value: format!("{total:.2} s"),
                note: format!(
                    "rollout {:.2} s ({} tokens, {:.1} tok/s); reference log-probs {:.2} s; \
                     loss + backward {:.2} s; optimizer {:.3} s",
                    step.rollout,
                    step.tokens,
                    step.tokens as f64 / step.rollout,
                    step.reference,
                    step.backward,
                    step.optimizer
                ),
            });
        }
        if args.json {
            let storage = model.weight_storage();
            let weight_bytes = storage.total_bytes();
            let gpu = backend != BackendKind::Cpu;
            let dispatches = if gpu {
                Some(dispatches_per_token(&args.model, backend, args.weights)?)
            } else {
                None
            };
            objects.push(serde_json::json!({
                "backend": b,
                "weights": storage.kinds(),
                "weight_bytes": weight_bytes,
                "weight_bytes_by_kind": storage.bytes,
                "gpu_weight_bytes": gpu.then_some(weight_bytes),
                "largest_buffer_bytes": gpu.then_some(storage.largest.1),
                "largest_weight": storage.largest.0,
                "dispatches_per_token": dispatches,
                "load_s": load_s,
                "parameters": params,
                "prefill_tok_s": prefill,
                "decode_tok_s_b1": decodes.get("1"),
                "decode_tok_s_b8": decodes.get("8"),
                "decode_tok_s": decodes,
            }));
        }
    }
    if args.json {
        for object in objects {
            println!("{object}");
        }
        return Ok(());
    }
    rows.push(Row {
        what: "peak resident memory".into(),
        value: peak_rss_mib().map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        note: "all of the above (host side; wgpu buffers live in GPU memory)".into(),
    });
    let bandwidth = copy_bandwidth();
    rows.push(Row {
        what: "memory copy bandwidth (read + write)".into(),
        value: format!("{:.1} GB/s", bandwidth / 1e9),
        note: "1 GiB memcpy, best of 3".into(),
    });
    for (row, decode, bytes_per_token) in single {
        // Decoding one token reads every f32 weight once: half of a copy's traffic per byte.
        let limit = bandwidth / 2.0 / bytes_per_token as f64;
        let note = &mut rows[row].note;
        let sep = if note.is_empty() { "" } else { "; " };
        *note = format!(
            "{:.0} % of the bandwidth limit ({limit:.1} tok/s){sep}{note}",
            100.0 * decode / limit
        );
    }
    println!("| measurement | value | notes |\n|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.what, r.value, r.note);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_launch;

    #[test]
    fn every_launch_line_of_the_profile_counts() {
        let log = "| 38.234966ms | RowsKernel_bc32ff31\n\
                   | 407.124µs  | KernelBinop | MulOp_6c217c5a\n\
                   | 1.3s | MatmulEntry | TensorArgs | DynamicScalar | RowMajor_269a\n\
                   | 950ns | Copy_1\n\
                   | Kernel | Calls | Total |\n\
                   name: tinylora::gpu_quant::kernels::rows_kernel\n";
        assert_eq!(log.lines().filter(|l| is_launch(l.trim_start())).count(), 4);
    }
}
