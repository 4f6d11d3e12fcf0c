//! Which adapted modules share one trainable vector `v`. Modules are numbered in checkpoint
//! order (layer-major; q, k, v, o, gate, up, down within a layer), as `named_modules()` lists
//! them in PyTorch.

use serde::{Deserialize, Serialize};

/// A tying scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tying {
    /// Every module has its own `v`.
    None,
    /// PEFT's `weight_tying` ratio in [0, 1]: `round(N·(1 − ratio))` groups of `N // groups`
    /// consecutive modules, the last group absorbing the remainder. 1.0 ties everything.
    Ratio {
        /// PEFT's `weight_tying`.
        weight_tying: f64,
    },
    /// The authors' "tiled" mode: chunks of `n_tie` consecutive modules (last chunk shorter).
    Tiled {
        /// Modules per chunk.
        n_tie: usize,
    },
    /// The authors' "structured" mode: chunks of `n_tie` modules of the same type, in layer order.
    Structured {
        /// Modules per chunk.
        n_tie: usize,
    },
}

/// Python's `round` (half to even), which PEFT uses for the number of groups.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

impl Tying {
    /// Checks the scheme's parameter: a ratio in [0, 1], a chunk size in 1..=2³²−1.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Tying::None => Ok(()),
            Tying::Ratio { weight_tying } if !(0.0..=1.0).contains(&weight_tying) => {
                Err(format!("weight_tying {weight_tying} is outside [0, 1]"))
            }
            Tying::Ratio { .. } => Ok(()),
            Tying::Tiled { n_tie } | Tying::Structured { n_tie } => {
                if n_tie == 0 || u32::try_from(n_tie).is_err() {
                    Err(format!("n_tie = {n_tie} must be in 1..=4294967295"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The group of each module, given each module's type name (`q_proj`, ...), numbered
    /// `0..groups` in order of first use.
    pub fn groups(&self, module_types: &[&str]) -> Result<Vec<usize>, String> {
        self.validate()?;
        let n = module_types.len();
        Ok(match *self {
            Tying::None => (0..n).collect(),
            Tying::Ratio { weight_tying } => {
                let groups = (round_half_even(n as f64 * (1.0 - weight_tying)) as usize).max(1);
                let size = (n / groups).max(1);
                (0..n).map(|i| (i / size).min(groups - 1)).collect()
            }
            Tying::Tiled { n_tie } => (0..n).map(|i| i / n_tie).collect(),
            Tying::Structured { n_tie } => {
                let mut kinds: Vec<&str> = Vec::new();
                for t in module_types {
                    if !kinds.contains(t) {
                        kinds.push(t);
                    }
                }
                let mut group_of = vec![0; n];
                let mut next = 0;
                for kind in kinds {
                    let members: Vec<usize> = (0..n).filter(|&i| module_types[i] == kind).collect();
                    for chunk in members.chunks(n_tie) {
                        for &i in chunk {
                            group_of[i] = next;
                        }
                        next += 1;
                    }
                }
                group_of
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::adapter::config::ALL_TARGETS;

    fn qwen(layers: usize) -> Vec<&'static str> {
        (0..layers).flat_map(|_| ALL_TARGETS).collect()
    }

    fn count(groups: &[usize]) -> usize {
        groups.iter().max().map_or(0, |m| m + 1)
    }

    #[test]
    fn counts_match_the_reference_for_qwen25_half_b() {
        // Qwen2.5-0.5B (docs/reference.md §4.2): 24 layers × 7 modules = 168 adapted modules.
        let types = qwen(24);
        assert_eq!(
            count(&Tying::Ratio { weight_tying: 1.0 }.groups(&types).unwrap()),
            1
        );
        assert_eq!(
            count(&Tying::Ratio { weight_tying: 0.0 }.groups(&types).unwrap()),
            168
        );
        assert_eq!(count(&Tying::None.groups(&types).unwrap()), 168);
        let g = Tying::Ratio {
            weight_tying: 0.875,
        }
        .groups(&types)
        .unwrap();
        assert_eq!(count(&g), 21);
        assert_eq!(g, Tying::Tiled { n_tie: 8 }.groups(&types).unwrap());
        // n_tie = 64: the authors chunk 64, 64, 40; PEFT's ratio gives 3 groups of 56.
        let tiled = Tying::Tiled { n_tie: 64 }.groups(&types).unwrap();
        assert_eq!((tiled[63], tiled[64], tiled[167]), (0, 1, 2));
        let ratio = Tying::Ratio {
            weight_tying: 1.0 - 3.0 / 168.0,
        }
        .groups(&types)
        .unwrap();
        assert_eq!((ratio[55], ratio[56], ratio[112], ratio[167]), (0, 1, 2, 2));
    }

    #[test]
    fn last_ratio_group_absorbs_the_remainder() {
        // 10 modules into round(10·0.3) = 3 groups of 10 // 3 = 3: sizes 3, 3, 4.
        let g = Tying::Ratio { weight_tying: 0.7 }
            .groups(&[""; 10])
            .unwrap();
        assert_eq!(g, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]);
        // Python rounds 2.5 to 2.
        let g = Tying::Ratio { weight_tying: 0.5 }.groups(&[""; 5]).unwrap();
        assert_eq!(count(&g), 2);
    }

    #[test]
    fn structured_ties_only_modules_of_one_type() {
        let types = qwen(4);
        let g = Tying::Structured { n_tie: 2 }.groups(&types).unwrap();
        assert_eq!(count(&g), 14);
        assert_eq!(g[0], g[7]); // q_proj of layers 0 and 1
        assert_ne!(g[0], g[14]); // q_proj of layer 2 starts a new chunk
        assert_ne!(g[0], g[1]);
        assert!(Tying::Tiled { n_tie: 0 }.groups(&types).is_err());
        assert!(Tying::Ratio { weight_tying: 1.5 }.groups(&types).is_err());
    }
}
