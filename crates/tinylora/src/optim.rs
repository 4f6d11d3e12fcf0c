//! AdamW on the host for the adapter's few trainable floats (torch's `AdamW` update, in f64).

use crate::{Error, Result};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay (torch default 0.9).
    pub beta1: f64,
    /// Second-moment decay (torch default 0.999).
    pub beta2: f64,
    /// Denominator epsilon (torch default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (verl's 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state for vectors of fixed shapes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// First moments, shaped like the parameters.
    pub m: Vec<Vec<f64>>,
    /// Second moments, shaped like the parameters.
    pub s: Vec<Vec<f64>>,
    /// Steps taken.
    pub t: u64,
}

impl AdamW {
    /// Fresh state for parameters shaped like `params`.
    pub fn new(config: AdamWConfig, params: &[Vec<f32>]) -> Self {
        let zeros: Vec<Vec<f64>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        Self {
            config,
            m: zeros.clone(),
            s: zeros,
            t: 0,
        }
    }

    /// One update of `params` with gradients `grads` at learning rate `lr`:
    /// `p ← p − lr·wd·p`, then `p ← p − lr·m̂/(√ŝ + eps)`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        self.t += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.t as i32);
        let bias2 = 1.0 - c.beta2.powi(self.t as i32);
        for (k, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            for (i, (pi, &gi)) in p.iter_mut().zip(g).enumerate() {
                let g = f64::from(gi);
                let m = &mut self.m[k][i];
                let s = &mut self.s[k][i];
                *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                *s = c.beta2 * *s + (1.0 - c.beta2) * g * g;
                let mut x = f64::from(*pi) * (1.0 - lr * c.weight_decay);
                x -= lr * (*m / bias1) / ((*s / bias2).sqrt() + c.eps);
                *pi = x as f32;
            }
        }
    }

    /// The update every trainer takes (GRPO's and SFT's alike): refuses a non-finite `loss`
    /// or gradient with [`Error::Diverged`] naming `what`, without touching `params` or the
    /// state; else clips `grads` to `max_norm` and takes one [`step`](Self::step). Returns the
    /// gradient norm before clipping.
    pub fn apply(
        &mut self,
        params: &mut [Vec<f32>],
        what: &str,
        loss: f64,
        grads: &mut [Vec<f32>],
        max_norm: f64,
        lr: f64,
    ) -> Result<f64> {
        let grads_finite = grads.iter().flatten().all(|g| g.is_finite());
        if !loss.is_finite() || !grads_finite {
            return Err(Error::Diverged(format!(
                "the {what} loss is {loss} (gradients finite: {grads_finite}); v was not updated"
            )));
        }
        let norm = clip_grad_norm(grads, max_norm);
        self.step(params, grads, lr);
        Ok(norm)
    }
}

/// The L2 norm of `values` (e.g. every vector of `v` or of its gradient, flattened), in f64.
pub fn global_norm<'a>(values: impl IntoIterator<Item = &'a f32>) -> f64 {
    values
        .into_iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(grads.iter().flatten());
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (f64::from(*g) * scale) as f32;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_steps_by_hand() {
        // Step 1: m̂ = g, ŝ = g², so the update is lr·g/(|g| + eps) = lr·sign(g) (plus decay).
        let mut p = vec![vec![1.0f32, -2.0]];
        let mut opt = AdamW::new(AdamWConfig::default(), &p);
        opt.step(&mut p, &[vec![0.5, -3.0]], 0.1);
        assert!(
            (p[0][0] - (1.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-6,
            "{p:?}"
        );
        assert!(
            (p[0][1] - (-2.0 * (1.0 - 0.001) + 0.1)).abs() < 1e-6,
            "{p:?}"
        );
        // Step 2 with the same gradient keeps the unit-size step.
        let before = p[0][0];
        opt.step(&mut p, &[vec![0.5, -3.0]], 0.1);
        assert!((before * (1.0 - 0.001) - 0.1 - p[0][0]).abs() < 1e-5);
    }

    #[test]
    fn clipping_scales_to_the_bound() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        assert!((clip_grad_norm(&mut g, 1.0) - 5.0).abs() < 1e-9);
        assert!((g[0][0] - 0.6).abs() < 1e-5 && (g[1][0] - 0.8).abs() < 1e-5);
    }
}
