//! AdamW over every weight of a model, on the device: for training a model from scratch
//! (`trainer pretrain`). Moments live on the inner (non-autodiff) backend; after each step the
//! weights are fresh leaves that require gradients.

use tinylora::Result;
use tinylora::burn::tensor::{Gradients, Tensor};
use tinylora::model::CausalLm;
use tinylora::model::tree::ParamMut;
use tinylora::optim::AdamWConfig;

/// First and second moments of one weight.
enum Moments {
    Vector(Tensor<1>, Tensor<1>),
    Matrix(Tensor<2>, Tensor<2>),
}

/// AdamW state for all weights of one model.
pub struct FullAdamW {
    config: AdamWConfig,
    t: u64,
    moments: Vec<Moments>,
}

/// The update of one weight; `bias` = (1 − β₁ᵗ, 1 − β₂ᵗ).
fn update<const D: usize>(
    p: &mut Tensor<D>,
    m: &mut Tensor<D>,
    s: &mut Tensor<D>,
    grads: &Gradients,
    c: &AdamWConfig,
    lr: f64,
    bias: (f64, f64),
) {
    let Some(g) = p.grad(grads) else {
        return;
    };
    *m = m.clone().mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
    *s = s.clone().mul_scalar(c.beta2) + (g.clone() * g).mul_scalar(1.0 - c.beta2);
    let step = m.clone().div_scalar(bias.0) / (s.clone().div_scalar(bias.1).sqrt() + c.eps);
    let new = p.clone().inner().mul_scalar(1.0 - lr * c.weight_decay) - step.mul_scalar(lr);
    *p = new.autodiff().require_grad();
}

impl FullAdamW {
    /// Fresh state for every weight of `model`, whose weights are made leaves that require
    /// gradients (`model` must live on an autodiff device and hold f32 weights).
    pub fn new(config: AdamWConfig, model: &mut CausalLm) -> Result<Self> {
        let moments = model
            .params_mut()?
            .into_iter()
            .map(|p| match p {
                ParamMut::Vector(t) => {
                    *t = t.clone().require_grad();
                    let z = t.clone().inner().zeros_like();
                    Moments::Vector(z.clone(), z)
                }
                ParamMut::Matrix(t) => {
                    *t = t.clone().require_grad();
                    let z = t.clone().inner().zeros_like();
                    Moments::Matrix(z.clone(), z)
                }
            })
            .collect();
        Ok(Self {
            config,
            t: 0,
            moments,
        })
    }

    /// One update of every weight of `model` from `grads` at learning rate `lr`.
    pub fn step(&mut self, model: &mut CausalLm, grads: &Gradients, lr: f64) -> Result<()> {
        self.t += 1;
        let c = self.config;
        let bias = (
            1.0 - c.beta1.powi(self.t as i32),
            1.0 - c.beta2.powi(self.t as i32),
        );
        for (p, moments) in model.params_mut()?.into_iter().zip(&mut self.moments) {
            match (p, moments) {
                (ParamMut::Vector(p), Moments::Vector(m, s)) => {
                    update(p, m, s, grads, &c, lr, bias)
                }
                (ParamMut::Matrix(p), Moments::Matrix(m, s)) => {
                    update(p, m, s, grads, &c, lr, bias)
                }
                _ => unreachable!("the parameter order of a model is fixed"),
            }
        }
        Ok(())
    }
}
