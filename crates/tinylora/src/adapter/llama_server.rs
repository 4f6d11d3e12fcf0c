//! An adapter for llama.cpp's `llama-server`: `model.gguf` (the base model in f32 with its
//! tokenizer) and one LoRA GGUF per trainable float. `ΔW(v)` is linear in `v`, so LoRA `i`
//! holds `lora_a = A`, `lora_b = B·mix(eᵢ)ᵀ` for the modules of float `i`'s tie group, and a
//! request with per-adapter scales `vᵢ` samples the adapter at `v` exactly
//! (`Σᵢ vᵢ·B·mix(eᵢ)ᵀ·A = B·mix(v)ᵀ·A`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::TinyLora;
use super::export::{lora_b, mix_transposed};
use crate::model::rope::inverse_frequencies;
use crate::model::{Architecture, CausalLm, Mixes, ModelConfig};
use crate::readback::to_vec_f32;
use crate::weights::gguf::{ROPE_DIVISORS, gguf_name, permute_rows};
use crate::weights::gguf_write::{GgufWriter, Meta};
use crate::{Error, Result};

/// The base model's file in the export folder.
pub const MODEL_FILE: &str = "model.gguf";

/// The LoRA file of trainable float `i` (group-major: float `k` of group `g` is `g·u + k`).
pub fn lora_file(i: usize) -> String {
    format!("lora-{i:03}.gguf")
}

/// llama.cpp's name of the linear layer at Hugging Face `path` (`...q_proj` → `blk.0.attn_q`).
fn gguf_module(path: &str) -> Result<String> {
    let name = gguf_name(&format!("{path}.weight"))
        .ok_or_else(|| Error::InvalidInput(format!("no GGUF name for `{path}`")))?;
    Ok(name.trim_end_matches(".weight").to_string())
}

/// The LoRA of trainable float `k` of group `group`: `lora_a = A`, `lora_b = B·mix(e_k)ᵀ` of
/// every module of the group, `alpha = r` (llama.cpp then scales by the request's `scale`).
pub fn float_lora(adapter: &TinyLora, group: usize, k: usize, arch: &str) -> Result<GgufWriter> {
    let r = adapter.config.r;
    let mut unit = vec![0f32; adapter.config.u];
    unit[k] = 1.0;
    let mut file = GgufWriter::new();
    file.meta("general.architecture", Meta::Str(arch.into()));
    file.meta("general.type", Meta::Str("adapter".into()));
    file.meta("adapter.type", Meta::Str("lora".into()));
    file.meta("adapter.lora.alpha", Meta::F32(r as f32));
    for m in adapter.basis.modules.iter().filter(|m| m.group == group) {
        let name = gguf_module(&m.path)?;
        let mix_t = mix_transposed(adapter, &m.p, &unit, r);
        file.tensor(&format!("{name}.weight.lora_a"), &[r, m.d_in], m.a.clone());
        file.tensor(
            &format!("{name}.weight.lora_b"),
            &[m.d_out, r],
            lora_b(m, &mix_t, r),
        );
    }
    Ok(file)
}

/// The tokenizer's metadata from `tokenizer.json` text (`origin` names it in errors): a GPT-2
/// style BPE vocabulary of `vocab_size` entries (ids the tokenizer lacks are `[PAD{i}]`,
/// unused), its merges, special tokens as control tokens, `eos`, and llama.cpp's name `pre`
/// of its pre-tokenizer.
fn tokenizer_meta(
    file: &mut GgufWriter,
    json: &str,
    origin: &Path,
    vocab_size: usize,
    eos: u32,
    pre: &str,
) -> Result<()> {
    let bad = |reason: &str| Error::BadFile {
        path: origin.to_path_buf(),
        reason: reason.to_string(),
    };
    let value: Value = serde_json::from_str(json).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let model = &value["model"];
    if model["type"] != "BPE" {
        return Err(bad("llama-server export needs a BPE tokenizer"));
    }
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut put = |id: u64, text: &str, kind: i32| -> Result<()> {
        let slot = tokens
            .get_mut(id as usize)
            .ok_or_else(|| bad(&format!("token id {id} is beyond the model's {vocab_size}")))?;
        *slot = Some((text.to_string(), kind));
        Ok(())
    };
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab"))?;
    for (text, id) in vocab {
        put(
            id.as_u64()
                .ok_or_else(|| bad("a vocab id is not a number"))?,
            text,
            1,
        )?;
    }
    for added in value["added_tokens"].as_array().into_iter().flatten() {
        let id = added["id"]
            .as_u64()
            .ok_or_else(|| bad("an added token has no id"))?;
        let kind = if added["special"] == true { 3 } else { 4 };
        put(id, added["content"].as_str().unwrap_or_default(), kind)?;
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => pair
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .collect();
    let (texts, kinds): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), 5)))
        .unzip();
    file.meta("tokenizer.ggml.model", Meta::Str("gpt2".into()));
    file.meta("tokenizer.ggml.pre", Meta::Str(pre.into()));
    file.meta("tokenizer.ggml.tokens", Meta::Strs(texts));
    file.meta("tokenizer.ggml.token_type", Meta::I32s(kinds));
    file.meta("tokenizer.ggml.merges", Meta::Strs(merges));
    file.meta("tokenizer.ggml.eos_token_id", Meta::U32(eos));
    file.meta("tokenizer.ggml.add_bos_token", Meta::Bool(false));
    Ok(())
}

/// llama.cpp's per-frequency RoPE divisors of `config`'s scaling (`rope_freqs.weight`), if it
/// has one: the unscaled frequencies over the scaled ones.
fn rope_divisors(config: &ModelConfig) -> Option<Vec<f32>> {
    config.rope_scaling.as_ref()?;
    let unscaled = ModelConfig {
        rope_scaling: None,
        ..config.clone()
    };
    let (base, scaled) = (inverse_frequencies(&unscaled), inverse_frequencies(config));
    Some(
        base.iter()
            .zip(scaled)
            .map(|(b, s)| (b / s) as f32)
            .collect(),
    )
}

/// `model` as a llama.cpp GGUF in f32, with the tokenizer of `tokenizer_json` (from
/// `origin`): llama.cpp's names, Llama's q/k rows interleaved per head as its converter does,
/// RoPE scaling as per-frequency divisors.
pub async fn base_gguf(
    model: &CausalLm,
    tokenizer_json: &str,
    origin: &Path,
) -> Result<GgufWriter> {
    let c = &model.config;
    let arch = c.architecture.name();
    let mut file = GgufWriter::new();
    file.meta("general.architecture", Meta::Str(arch.into()));
    file.meta("general.name", Meta::Str("tinylora export".into()));
    let size = |x: usize| Meta::U32(x as u32);
    for (key, value) in [
        ("context_length", size(c.max_position_embeddings)),
        ("embedding_length", size(c.hidden_size)),
        ("block_count", size(c.num_hidden_layers)),
        ("feed_forward_length", size(c.intermediate_size)),
        ("attention.head_count", size(c.num_attention_heads)),
        ("attention.head_count_kv", size(c.num_key_value_heads)),
        ("attention.key_length", size(c.head_dim)),
        ("attention.value_length", size(c.head_dim)),
        (
            "attention.layer_norm_rms_epsilon",
            Meta::F32(c.rms_norm_eps as f32),
        ),
        ("rope.freq_base", Meta::F32(c.rope_theta as f32)),
    ] {
        file.meta(&format!("{arch}.{key}"), value);
    }
    let eos = c.eos_token_ids.first().copied().unwrap_or(0);
    let pre = match c.architecture {
        Architecture::Llama => "llama-bpe",
        Architecture::Qwen2 | Architecture::Qwen3 => "qwen2",
    };
    tokenizer_meta(&mut file, tokenizer_json, origin, c.vocab_size, eos, pre)?;
    if let Some(divisors) = rope_divisors(c) {
        file.tensor(ROPE_DIVISORS, &[divisors.len()], divisors);
    }
    for (name, shape, values) in model.named_tensors(&Mixes::none()) {
        let gguf = gguf_name(&name)
            .ok_or_else(|| Error::InvalidInput(format!("no GGUF name for `{name}`")))?;
        let mut values = to_vec_f32(values).await?;
        let heads = match name.rsplit('.').nth(1) {
            Some("q_proj") => c.num_attention_heads,
            Some("k_proj") => c.num_key_value_heads,
            _ => 0,
        };
        if c.architecture == Architecture::Llama && heads > 0 {
            values = permute_rows(&values, shape[0], heads).ok_or_else(|| {
                Error::InvalidInput(format!("`{name}` does not split into {heads} heads"))
            })?;
        }
        file.tensor(&gguf, &shape, values);
    }
    Ok(file)
}

/// Writes `dir/model.gguf` and `dir/lora-NNN.gguf` (one per trainable float of `adapter`);
/// returns the LoRA files in float order.
pub async fn export_llama_server(
    model: &CausalLm,
    tokenizer_json: &str,
    tokenizer_origin: &Path,
    adapter: &TinyLora,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    base_gguf(model, tokenizer_json, tokenizer_origin)
        .await?
        .write(&dir.join(MODEL_FILE))?;
    let arch = model.config.architecture.name();
    let mut files = Vec::new();
    for group in 0..adapter.v.len() {
        for k in 0..adapter.config.u {
            let path = dir.join(lora_file(files.len()));
            float_lora(adapter, group, k, arch)?.write(&path)?;
            files.push(path);
        }
    }
    Ok(files)
}
