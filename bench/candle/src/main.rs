//! Prefill and decode speed of candle-transformers' Qwen2 on the CPU, for comparison with
//! `trainer bench` on the same weights file and workload.
//!
//!     candle-qwen2-bench MODEL_DIR PROMPT_LEN DECODE_TOKENS BATCH
//!
//! Prints one JSON line: `{"prefill_tok_s": .., "decode_tok_s": .., "threads": ..}`.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2::{Config, ModelForCausalLM};
use serde_json::Value;

/// Builds candle's config from either config.json form (hub or transformers 5.x).
fn config(json: &Value) -> Result<Config> {
    let n = |k: &str| json[k].as_u64().with_context(|| format!("config.json: `{k}`"));
    let heads = n("num_attention_heads")? as usize;
    let rope_theta = json["rope_theta"]
        .as_f64()
        .or_else(|| json["rope_parameters"]["rope_theta"].as_f64())
        .unwrap_or(10000.0);
    Ok(Config {
        vocab_size: n("vocab_size")? as usize,
        hidden_size: n("hidden_size")? as usize,
        intermediate_size: n("intermediate_size")? as usize,
        num_hidden_layers: n("num_hidden_layers")? as usize,
        num_attention_heads: heads,
        num_key_value_heads: json["num_key_value_heads"].as_u64().map_or(heads, |v| v as usize),
        max_position_embeddings: n("max_position_embeddings")? as usize,
        sliding_window: json["sliding_window"].as_u64().unwrap_or(4096) as usize,
        max_window_layers: json["max_window_layers"].as_u64().unwrap_or(0) as usize,
        tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
        rope_theta,
        rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, prompt_len, decode, batch] = args.as_slice() else {
        anyhow::bail!("usage: candle-qwen2-bench MODEL_DIR PROMPT_LEN DECODE_TOKENS BATCH");
    };
    let (prompt_len, decode, batch): (usize, usize, usize) =
        (prompt_len.parse()?, decode.parse()?, batch.parse()?);
    let dir = std::path::Path::new(dir);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let cfg = config(&json)?;
    let device = Device::Cpu;
    let weights = dir.join("model.safetensors");
    // SAFETY: the weights file is not modified while it is mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
    let mut model = ModelForCausalLM::new(&cfg, vb)?;
    // The same synthetic prompts as `trainer bench`: row r, position i.
    let vocab = cfg.vocab_size;
    let prompt = |len: usize| -> Result<Tensor> {
        let ids: Vec<u32> = (0..batch)
            .flat_map(|r| (0..len).map(move |i| ((i * 7919 + r * 104729) % (vocab - 10) + 10) as u32))
            .collect();
        Ok(Tensor::from_vec(ids, (batch, len), &device)?)
    };
    // Prefill: one untimed run, then the mean tokens/s of three (as `trainer bench`).
    let mut prefill_rate = || -> Result<f64> {
        model.clear_kv_cache();
        let started = Instant::now();
        model.forward(&prompt(prompt_len)?, 0)?.squeeze(1)?.argmax(1)?.to_vec1::<u32>()?;
        Ok((batch * prompt_len) as f64 / started.elapsed().as_secs_f64())
    };
    prefill_rate()?;
    let prefill_tok_s = (prefill_rate()? + prefill_rate()? + prefill_rate()?) / 3.0;
    // Decode after a 16-token prompt, like `trainer bench`.
    model.clear_kv_cache();
    let logits = model.forward(&prompt(16)?, 0)?;
    let mut next = logits.squeeze(1)?.argmax(1)?.to_vec1::<u32>()?;
    let started = Instant::now();
    for step in 0..decode {
        let input = Tensor::from_vec(next.clone(), (batch, 1), &device)?;
        let logits = model.forward(&input, 16 + step)?;
        next = logits.squeeze(1)?.argmax(1)?.to_vec1::<u32>()?;
    }
    let decode_s = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": (batch * decode) as f64 / decode_s,
            "threads": candle_core::utils::get_num_threads(),
        })
    );
    Ok(())
}
