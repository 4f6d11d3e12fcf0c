//! The decoder's configuration, read from a Hugging Face `config.json` in either form: the
//! hub's (top-level `rope_theta`, `rope_scaling`, integer `sliding_window`) or transformers 5.x's
//! (`rope_parameters` holding both, `sliding_window: null`). GGUF metadata gives the same struct
//! (`weights::gguf`).
//!
//! Three families share one decoder and differ only in the switches below
//! ([`Architecture::layout`]): Qwen2/Qwen2.5 (q/k/v biases), Qwen3 (RMSNorm on each query and
//! key head, `head_dim` from the config) and Llama 3.x (optional biases, `llama3` RoPE scaling).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A decoder family, named as in `config.json`'s `model_type` and GGUF's `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Qwen2 and Qwen2.5 (`model_type` `qwen2`).
    #[default]
    Qwen2,
    /// Qwen3 dense models (`qwen3`).
    Qwen3,
    /// Llama 2/3.x (`llama`).
    Llama,
}

/// The optional tensors of each decoder layer; everything else is the same in every family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Layout {
    /// Biases on the query, key and value projections.
    pub qkv_bias: bool,
    /// A bias on the output projection.
    pub o_bias: bool,
    /// Biases on the MLP's three projections.
    pub mlp_bias: bool,
    /// RMSNorm over each query and key head before RoPE (`q_norm`, `k_norm`, `[head_dim]`).
    pub qk_norm: bool,
}

impl Architecture {
    /// The family of a `model_type` or `general.architecture` value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "qwen2" | "qwen2_5" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "llama" => Some(Self::Llama),
            _ => None,
        }
    }

    /// `model_type` (and GGUF's `general.architecture`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Llama => "llama",
        }
    }

    /// The transformers class, for `architectures` in exported checkpoints.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Llama => "LlamaForCausalLM",
        }
    }

    /// Which optional tensors a layer has, from the config's `attention_bias` and `mlp_bias`
    /// (Qwen2 ignores both: its q/k/v always have biases, its other projections never).
    pub fn layout(self, attention_bias: bool, mlp_bias: bool) -> Layout {
        match self {
            Self::Qwen2 => Layout {
                qkv_bias: true,
                ..Layout::default()
            },
            Self::Qwen3 => Layout {
                qkv_bias: attention_bias,
                o_bias: attention_bias,
                qk_norm: true,
                ..Layout::default()
            },
            Self::Llama => Layout {
                qkv_bias: attention_bias,
                o_bias: attention_bias,
                mlp_bias,
                qk_norm: false,
            },
        }
    }
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Llama 3.1's `rope_type: "llama3"`: low frequencies divided by `factor`, high ones kept,
    /// a smooth blend between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
    /// One divisor per frequency, `[head_dim / 2]`: llama.cpp's `rope_freqs.weight`, which GGUF
    /// files of Llama 3.1+ carry instead of the `llama3` parameters.
    Divisors(Vec<f32>),
}

/// The architecture hyper-parameters of a decoder, with Hugging Face's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The family.
    #[serde(default)]
    pub architecture: Architecture,
    /// The optional tensors of each layer.
    #[serde(default)]
    pub layout: Layout,
    /// Number of tokens in the vocabulary (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one attention head (`hidden_size / num_attention_heads` unless the config says).
    pub head_dim: usize,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RoPE frequency scaling, if any.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Token ids that end generation (from `eos_token_id`, a number or a list).
    pub eos_token_ids: Vec<u32>,
}

/// `config.json` as found on disk, before the two forms are reconciled.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeParameters>,
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    eos_token_id: Option<OneOrMany>,
    model_type: Option<String>,
    hidden_act: Option<String>,
}

/// `rope_parameters` (transformers 5) or `rope_scaling` (the hub form; `type` in old files).
#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    #[serde(alias = "type")]
    rope_type: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}

impl RopeParameters {
    /// The scaling these parameters describe; an error for kinds the decoder does not implement.
    fn scaling(&self) -> std::result::Result<Option<RopeScaling>, String> {
        match self.rope_type.as_deref() {
            None | Some("default") => Ok(None),
            Some("llama3") => {
                let field = |name: &str, v: Option<f64>| {
                    v.filter(|v| v.is_finite() && *v > 0.0)
                        .ok_or_else(|| format!("llama3 RoPE scaling needs a positive `{name}`"))
                };
                let low_freq_factor = field("low_freq_factor", self.low_freq_factor)?;
                let high_freq_factor = field("high_freq_factor", self.high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(
                        "llama3 RoPE scaling needs high_freq_factor > low_freq_factor".into(),
                    );
                }
                Ok(Some(RopeScaling::Llama3 {
                    factor: field("factor", self.factor)?,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: field(
                        "original_max_position_embeddings",
                        self.original_max_position_embeddings,
                    )?,
                }))
            }
            Some(kind) => Err(format!(
                "RoPE type `{kind}` is not supported (expected default or llama3)"
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

/// Names the first known field whose value has the wrong JSON type (serde's own message gives
/// only the line and column).
fn mistyped_field(map: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    const COUNTS: [&str; 8] = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
    ];
    let wrong = |key: &str, ok: fn(&serde_json::Value) -> bool, kind: &str| {
        map.get(key)
            .filter(|v| !v.is_null() && !ok(v))
            .map(|v| format!("`{key}` must be {kind}, got {v}"))
    };
    COUNTS
        .iter()
        .find_map(|k| wrong(k, serde_json::Value::is_u64, "a non-negative integer"))
        .or_else(|| {
            ["rms_norm_eps", "rope_theta"]
                .iter()
                .find_map(|k| wrong(k, serde_json::Value::is_number, "a number"))
        })
        .or_else(|| {
            ["tie_word_embeddings", "attention_bias", "mlp_bias"]
                .iter()
                .find_map(|k| wrong(k, serde_json::Value::is_boolean, "true or false"))
        })
}

fn default_max_positions() -> usize {
    32768
}

fn default_eps() -> f64 {
    1e-6
}

impl ModelConfig {
    /// Parses the text of a `config.json`; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadFile {
            path: origin.to_path_buf(),
            reason,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| {
            let detail = serde_json::from_str(text)
                .ok()
                .and_then(|map| mistyped_field(&map))
                .unwrap_or_else(|| e.to_string());
            bad(format!("not a decoder config.json: {detail}"))
        })?;
        let architecture = match raw.model_type.as_deref() {
            None => Architecture::Qwen2,
            Some(kind) => Architecture::from_name(kind).ok_or_else(|| {
                bad(format!(
                    "model_type `{kind}` is not supported (expected qwen2, qwen3 or llama)"
                ))
            })?,
        };
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(bad(format!(
                "hidden_act `{act}` is not supported (expected silu)"
            )));
        }
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_scaling = match rope {
            Some(rope) => rope.scaling().map_err(&bad)?,
            None => None,
        };
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10000.0);
        let heads = raw.num_attention_heads;
        if raw.head_dim.is_none() && heads > 0 && !raw.hidden_size.is_multiple_of(heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {heads}",
                raw.hidden_size
            )));
        }
        let config = ModelConfig {
            architecture,
            layout: architecture.layout(raw.attention_bias, raw.mlp_bias),
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / heads.max(1)),
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings,
            eos_token_ids: match raw.eos_token_id {
                None => Vec::new(),
                Some(OneOrMany::One(id)) => vec![id],
                Some(OneOrMany::Many(ids)) => ids,
            },
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Reads and parses a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::fsutil::read_text(path)?;
        Self::from_json(&text, path)
    }

    /// A Qwen2 config with the default head width and plain RoPE (for models made here).
    #[allow(clippy::too_many_arguments)]
    pub fn qwen2(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        rope_theta: f64,
        tie_word_embeddings: bool,
    ) -> Self {
        Self {
            architecture: Architecture::Qwen2,
            layout: Architecture::Qwen2.layout(false, false),
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads.max(1),
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-6,
            rope_theta,
            rope_scaling: None,
            tie_word_embeddings,
            eos_token_ids: Vec::new(),
        }
    }

    /// Checks the relations between fields that the model relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err("rms_norm_eps must be a positive number".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err("rope_theta must be a positive number".into());
        }
        if let Some(RopeScaling::Divisors(d)) = &self.rope_scaling {
            if d.len() != self.head_dim / 2 {
                return Err(format!(
                    "{} RoPE frequency divisors for a head of {} (expected {})",
                    d.len(),
                    self.head_dim,
                    self.head_dim / 2
                ));
            }
            if !d.iter().all(|x| x.is_finite() && *x > 0.0) {
                return Err("RoPE frequency divisors must be positive numbers".into());
            }
        }
        Ok(())
    }

    /// The config as a Hugging Face `config.json` (hub form), for exported checkpoints; an
    /// error for RoPE divisors read from a GGUF file, which `config.json` cannot express.
    pub fn to_hf_json(&self) -> std::result::Result<String, String> {
        let mut json = serde_json::json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.name(),
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "eos_token_id": self.eos_token_ids,
            "attention_bias": self.layout.o_bias,
            "mlp_bias": self.layout.mlp_bias,
            "use_sliding_window": false,
            "torch_dtype": "float32",
        });
        if let Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) = &self.rope_scaling
        {
            json["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            });
        }
        if let Some(RopeScaling::Divisors(_)) = &self.rope_scaling {
            return Err(
                "the RoPE frequency divisors of this GGUF file (`rope_freqs.weight`) \
                have no config.json form"
                    .into(),
            );
        }
        Ok(serde_json::to_string_pretty(&json).expect("JSON of plain values"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2",
        "vocab_size":151936,"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,
        "num_attention_heads":14,"num_key_value_heads":2,"max_position_embeddings":32768,
        "rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":32768,
        "use_sliding_window":false,"tie_word_embeddings":true,"eos_token_id":151645,
        "hidden_act":"silu","torch_dtype":"bfloat16"}"#;

    #[test]
    fn reads_the_hub_form() {
        let c = ModelConfig::from_json(HUB, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 1_000_000.0);
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.eos_token_ids, vec![151645]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn reads_the_transformers_5_form() {
        let text = HUB
            .replace(
                r#""rope_theta":1000000.0"#,
                r#""rope_parameters":{"rope_theta":5000.0,"rope_type":"default"}"#,
            )
            .replace(r#""sliding_window":32768"#, r#""sliding_window":null"#)
            .replace(r#""eos_token_id":151645"#, r#""eos_token_id":[1,2]"#);
        let c = ModelConfig::from_json(&text, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 5000.0);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = ModelConfig::from_json(
            &HUB.replace("\"hidden_size\":896,", ""),
            Path::new("m/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("m/config.json: ") && err.contains("hidden_size"),
            "{err}"
        );
        let err = ModelConfig::from_json(
            &HUB.replace("\"num_attention_heads\":14", "\"num_attention_heads\":5"),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("num_attention_heads 5"), "{err}");
        let err = ModelConfig::from_json(
            &HUB.replace("\"hidden_size\":896", "\"hidden_size\":\"896\""),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("hidden_size") || err.contains("invalid type"),
            "{err}"
        );
    }
}
