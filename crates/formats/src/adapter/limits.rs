//! How much work an adapter may ask of a model, checked before any of it is done.
//!
//! An adapter file, or a `tl1.` link, is input from a stranger: its config alone decides how many
//! projection values are drawn (`u·r²` per adapted module) and how much SVD work its basis takes
//! (about `r·out·in` multiply-adds per module, a few passes over each weight). Left unchecked, a
//! 460 KB file with `r = 64`, `u = 65535` asks for a gigabyte of projections per module. The
//! limits below are far above every real use and far below what exhausts a machine or a page:
//!
//! | setting | `u·r²` per module | `r·out·in` over all modules |
//! |---|---|---|
//! | the paper's headline (r = 2, u = 13) and largest TinyLoRA runs (r = 2, u = 512) | 52 / 2,048 | 2 × the adapted weights |
//! | PEFT's `TinyLoraConfig` defaults (r = 2, u = 64) | 256 | 2 × the adapted weights |
//! | LoRA-XS-sized (u = r²) at r = 32 | 1,048,576 | 32 × the adapted weights |
//! | r = 2 on a 70B Llama (68 G adapted weights) | — | 1.4 × 10¹¹ |

use super::config::TinyLoraConfig;

/// Most projection values `u·r²` one module may use (4 MiB as f32): LoRA-XS size at r = 32.
pub const MAX_PROJECTION_PER_MODULE: usize = 1 << 20;
/// Most projection values `Σ u·r²` over all adapted modules (128 MiB as f32, WebGPU's default
/// largest binding).
pub const MAX_PROJECTION_TOTAL: usize = 1 << 25;
/// Most basis work `Σ r·out·in` over all adapted modules (2.7 × 10¹¹ multiply-adds): rank 2 on a
/// 70B-class model, any rank up to 64 on models up to about 4B.
pub const MAX_BASIS_WORK: u128 = 1 << 38;

/// One adapted module as the limits see it: its Hugging Face path and weight shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleShape {
    /// Module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

/// Checks that `config` on modules of these shapes stays within the limits: `r` at most every
/// module's `min(out, in)`, the projections' size per module and in total, and the basis work.
/// The error says which limit and why it exists.
pub fn check(config: &TinyLoraConfig, modules: &[ModuleShape]) -> Result<(), String> {
    let r = config.r;
    if let Some(m) = modules.iter().find(|m| r > m.d_in.min(m.d_out)) {
        return Err(format!(
            "r = {r} exceeds the rank of {} ({}×{}): a rank-r basis needs r ≤ min(out, in)",
            m.path, m.d_out, m.d_in
        ));
    }
    let per_module = config.u.saturating_mul(r * r);
    if per_module > MAX_PROJECTION_PER_MODULE {
        return Err(format!(
            "u·r² = {}·{r}² = {per_module} projection values per module exceeds the limit of \
             {MAX_PROJECTION_PER_MODULE} (LoRA-XS size at r = 32; the paper uses at most 2,048)",
            config.u
        ));
    }
    let total = per_module.saturating_mul(modules.len());
    if total > MAX_PROJECTION_TOTAL {
        return Err(format!(
            "u·r² over {} modules = {total} projection values exceeds the limit of \
             {MAX_PROJECTION_TOTAL} (128 MiB of f32)",
            modules.len()
        ));
    }
    let work: u128 = modules
        .iter()
        .map(|m| r as u128 * m.d_in as u128 * m.d_out as u128)
        .sum();
    if work > MAX_BASIS_WORK {
        return Err(format!(
            "a rank-{r} basis of {} modules takes {work:.3e} multiply-adds per SVD pass, above \
             the limit of {:.3e} (rank 2 on a 70B-class model): use a smaller r or fewer targets",
            modules.len(),
            MAX_BASIS_WORK as f64
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(layers: usize, hidden: usize, kv: usize, mlp: usize) -> Vec<ModuleShape> {
        let mut out = Vec::new();
        for layer in 0..layers {
            for (kind, d_in, d_out) in [
                ("q_proj", hidden, hidden),
                ("k_proj", hidden, kv),
                ("v_proj", hidden, kv),
                ("o_proj", hidden, hidden),
                ("gate_proj", hidden, mlp),
                ("up_proj", hidden, mlp),
                ("down_proj", mlp, hidden),
            ] {
                out.push(ModuleShape {
                    path: format!("model.layers.{layer}.{kind}"),
                    d_in,
                    d_out,
                });
            }
        }
        out
    }

    fn config(r: usize, u: usize) -> TinyLoraConfig {
        TinyLoraConfig {
            r,
            u,
            ..TinyLoraConfig::default()
        }
    }

    #[test]
    fn real_settings_pass() {
        let qwen_05b = shapes(24, 896, 128, 4864);
        let llama_70b = shapes(80, 8192, 1024, 28672);
        let toy = shapes(4, 128, 64, 384);
        for (c, m) in [
            (config(2, 13), &qwen_05b),
            (config(2, 512), &qwen_05b),
            (config(2, 64), &qwen_05b),
            (config(2, 13), &llama_70b),
            (config(64, 13), &qwen_05b),
            (config(32, 13), &toy),
            (config(32, 1024), &toy),
            (config(8, 64), &toy),
        ] {
            assert_eq!(check(&c, m), Ok(()), "r = {}, u = {}", c.r, c.u);
        }
    }

    #[test]
    fn hostile_settings_fail_with_the_limit_named() {
        let toy = shapes(4, 128, 64, 384);
        let err = check(&config(64, 65535), &toy).unwrap_err();
        assert!(err.contains("per module"), "{err}");
        let err = check(&config(65, 1), &toy).unwrap_err();
        assert!(err.contains("k_proj (64×128)"), "{err}");
        let err = check(&config(32, 1024), &shapes(24, 896, 128, 4864)).unwrap_err();
        assert!(err.contains("over 168 modules"), "{err}");
        let err = check(&config(8, 13), &shapes(80, 8192, 1024, 28672)).unwrap_err();
        assert!(err.contains("multiply-adds"), "{err}");
    }
}
