//! What a TinyLoRA adapter is made of, besides its trainable numbers.

use serde::{Deserialize, Serialize};

use super::tying::Tying;
use crate::{Error, Result};

/// The seven linear projections of a decoder layer, in checkpoint order.
pub const ALL_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// How the frozen factors and the trainable vector combine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Convention {
    /// PEFT's (canonical here): `A = √Σ Vᵀ`, `B = U √Σ`, `P ~ N(0, 1/r)`, `ΔW = B R A`,
    /// `R = Σᵢ vᵢ Pᵢ`, no scaling.
    Peft,
    /// The authors' verl code: `A = Σ Vᵀ`, `B = U`, `P ~ N(0, 1)`, `M = Σᵢ vᵢ Pᵢ / √u`,
    /// training forward `Δy = (α/r)·(x Aᵀ) M Bᵀ`.
    Verl {
        /// LoRA alpha (the authors' scripts use 32).
        alpha: f64,
    },
}

/// Everything that fixes an adapter's shape and frozen parts. Missing fields take the
/// defaults; unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyLoraConfig {
    /// Frozen rank of the SVD factors (the paper uses 2).
    pub r: usize,
    /// Length of each trainable vector `v`.
    pub u: usize,
    /// Which projections are adapted, from [`ALL_TARGETS`].
    pub targets: Vec<String>,
    /// Which modules share a `v`.
    pub tying: Tying,
    /// How `v`, `P`, `A` and `B` combine.
    pub convention: Convention,
    /// Seed of the projections `P`.
    pub seed: u64,
}

impl Default for TinyLoraConfig {
    /// The paper's headline setting: r = 2, u = 13, all seven projections, fully tied.
    fn default() -> Self {
        Self {
            r: 2,
            u: 13,
            targets: ALL_TARGETS.iter().map(|t| t.to_string()).collect(),
            tying: Tying::Ratio { weight_tying: 1.0 },
            convention: Convention::Peft,
            seed: 42,
        }
    }
}

impl TinyLoraConfig {
    /// Checks ranges and target names.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(format!("adapter config: {m}")));
        if self.r == 0 || self.r > 64 {
            return bad(format!("r = {} must be in 1..=64", self.r));
        }
        if self.u == 0 || self.u > 65535 {
            return bad(format!("u = {} must be in 1..=65535", self.u));
        }
        if self.targets.is_empty() {
            return bad("no target modules".into());
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| !ALL_TARGETS.contains(&t.as_str()))
        {
            return bad(format!(
                "unknown target module `{t}` (expected some of {ALL_TARGETS:?})"
            ));
        }
        if let Some((i, t)) = self
            .targets
            .iter()
            .enumerate()
            .find(|(i, t)| self.targets[..*i].contains(t))
        {
            return bad(format!(
                "target module `{t}` is listed twice (entry {})",
                i + 1
            ));
        }
        if let Err(m) = self.tying.validate() {
            return bad(m);
        }
        if let Convention::Verl { alpha } = self.convention
            && !alpha.is_finite()
        {
            return bad("alpha must be finite".into());
        }
        Ok(())
    }

    /// Standard deviation of the entries of `P`.
    pub fn projection_std(&self) -> f64 {
        match self.convention {
            Convention::Peft => 1.0 / (self.r as f64).sqrt(),
            Convention::Verl { .. } => 1.0,
        }
    }
}
