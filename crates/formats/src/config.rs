//! Qwen2 / Qwen2.5 configuration, read from a Hugging Face `config.json` in either form: the
//! hub's (top-level `rope_theta`, integer `sliding_window`) or transformers 5.x's
//! (`rope_parameters.rope_theta`, `sliding_window: null`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The architecture hyper-parameters of a Qwen2 model, with Hugging Face's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
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
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
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
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    tie_word_embeddings: bool,
    eos_token_id: Option<OneOrMany>,
    model_type: Option<String>,
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
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
    const COUNTS: [&str; 7] = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
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
            wrong(
                "tie_word_embeddings",
                serde_json::Value::is_boolean,
                "true or false",
            )
        })
}

fn default_max_positions() -> usize {
    32768
}

fn default_eps() -> f64 {
    1e-6
}

impl Qwen2Config {
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
            bad(format!("not a Qwen2 config.json: {detail}"))
        })?;
        if let Some(kind) = raw.model_type.as_deref()
            && !matches!(kind, "qwen2" | "qwen2_5")
        {
            return Err(bad(format!(
                "model_type `{kind}` is not supported (expected qwen2)"
            )));
        }
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(bad(format!(
                "hidden_act `{act}` is not supported (expected silu)"
            )));
        }
        if let Some(kind) = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.as_deref())
            && kind != "default"
        {
            return Err(bad(format!(
                "rope_parameters.rope_type `{kind}` is not supported (expected default)"
            )));
        }
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10000.0);
        let config = Qwen2Config {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
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
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
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
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
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
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err("rms_norm_eps must be a positive number".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err("rope_theta must be a positive number".into());
        }
        Ok(())
    }

    /// The config as a Hugging Face `config.json` (hub form), for exported checkpoints.
    pub fn to_hf_json(&self) -> String {
        let json = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "eos_token_id": self.eos_token_ids,
            "use_sliding_window": false,
            "torch_dtype": "float32",
        });
        serde_json::to_string_pretty(&json).expect("JSON of plain values")
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
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
        let c = Qwen2Config::from_json(HUB, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 1_000_000.0);
        assert_eq!(c.head_dim(), 64);
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
        let c = Qwen2Config::from_json(&text, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 5000.0);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = Qwen2Config::from_json(
            &HUB.replace("\"hidden_size\":896,", ""),
            Path::new("m/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("m/config.json: ") && err.contains("hidden_size"),
            "{err}"
        );
        let err = Qwen2Config::from_json(
            &HUB.replace("\"num_attention_heads\":14", "\"num_attention_heads\":5"),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("num_attention_heads 5"), "{err}");
        let err = Qwen2Config::from_json(
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
