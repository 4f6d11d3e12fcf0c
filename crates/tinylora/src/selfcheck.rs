//! A small end-to-end computation (RMSNorm → matmul → softmax) with a scalar f64 reference, used
//! by `trainer devices` and the browser page to show that a backend computes correctly.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::norm::rms_norm;
use crate::readback::to_vec_f32;
use crate::{Result, numerics};

/// Rows of the probe input.
pub const ROWS: usize = 4;
/// Width of the probe input.
pub const IN: usize = 8;
/// Width of the probe output.
pub const OUT: usize = 5;
const EPS: f64 = 1e-6;

/// Deterministic probe values in [-1, 1): `((i·a + b) mod 11) / 5 − 1`.
fn probe_values(n: usize, a: usize, b: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * a + b) % 11) as f32 / 5.0 - 1.0)
        .collect()
}

fn inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        probe_values(ROWS * IN, 7, 3),
        probe_values(IN, 3, 5).iter().map(|g| g + 1.5).collect(),
        probe_values(IN * OUT, 5, 1),
    )
}

/// Runs the probe on `device`.
///
/// # Shapes
/// - output: `[ROWS, OUT]`, each row a probability distribution
pub fn compute(device: &Device) -> Tensor<2> {
    let (x, gain, w) = inputs();
    let x = Tensor::<2>::from_data(TensorData::new(x, [ROWS, IN]), device);
    let gain = Tensor::<1>::from_data(TensorData::new(gain, [IN]), device);
    let w = Tensor::<2>::from_data(TensorData::new(w, [IN, OUT]), device);
    softmax(rms_norm(x, gain, EPS).matmul(w), 1)
}

/// The terms `normedᵢ·wᵢₒ` of each logit in f64, `[ROWS][OUT][IN]`: what [`reference`] sums
/// and [`error_bound`] bounds.
fn logit_terms() -> Vec<Vec<Vec<f64>>> {
    let (x, gain, w) = inputs();
    x.chunks(IN)
        .map(|row| {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / IN as f64;
            let scale = 1.0 / (ms + EPS).sqrt();
            let normed: Vec<f64> = row
                .iter()
                .zip(&gain)
                .map(|(&v, &g)| f64::from(v) * scale * f64::from(g))
                .collect();
            (0..OUT)
                .map(|o| {
                    (0..IN)
                        .map(|i| normed[i] * f64::from(w[i * OUT + o]))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The same computation in scalar f64, row-major `[ROWS, OUT]`.
pub fn reference() -> Vec<f64> {
    let mut out = Vec::with_capacity(ROWS * OUT);
    for row in logit_terms() {
        let logits: Vec<f64> = row.iter().map(|terms| terms.iter().sum()).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let denom: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        out.extend(logits.iter().map(|l| (l - max).exp() / denom));
    }
    out
}

/// The largest `|value − reference|` a correct f32 backend can show, in any summation order:
/// the normalisation and each product sum `IN` terms (relative error `γ_IN` each, plus a few
/// roundings for the square root and divisions), so a logit is off by at most
/// `(2γ_IN + 8u)·Σᵢ|normedᵢ·wᵢₒ|`; softmax moves a probability by at most twice its inputs'
/// largest error, plus its own sum (`γ_OUT`) and WGSL's allowance for `exp` (`3 + 2|x|` ULP, the
/// loosest of the backends).
pub fn error_bound() -> f64 {
    let u = numerics::F32_UNIT_ROUNDOFF;
    let (mut largest_sum, mut largest_logit) = (0f64, 0f64);
    for terms in logit_terms().iter().flatten() {
        largest_sum = largest_sum.max(terms.iter().map(|t| t.abs()).sum());
        largest_logit = largest_logit.max(terms.iter().sum::<f64>().abs());
    }
    let logit_error = (2.0 * numerics::gamma(IN) + 8.0 * u) * largest_sum;
    2.0 * logit_error + numerics::gamma(OUT) + (3.0 + 2.0 * 2.0 * largest_logit) * 2.0 * u
}

/// SHA-256 (hex) of a top-2 SVD of a fixed 48×40 matrix and of one module's projections, as
/// the adapter basis code computes them. Equal on every platform, or adapters shared between
/// the trainer and the browser would not apply.
pub fn basis_determinism_hash() -> String {
    use sha2::{Digest, Sha256};
    let mut rng = crate::rng::SplitMix64::new(2024);
    let w: Vec<f32> = (0..48 * 40)
        .map(|_| (rng.next_f64() - 0.5) as f32)
        .collect();
    let svd = crate::adapter::svd::top_svd(&w, 48, 40, 2);
    let p = crate::adapter::projection::projection(42, 3, 13, 2, std::f64::consts::FRAC_1_SQRT_2);
    let mut h = Sha256::new();
    for x in svd
        .sigma
        .iter()
        .chain(svd.u.iter().flatten())
        .chain(svd.v.iter().flatten())
    {
        h.update(x.to_bits().to_le_bytes());
    }
    for x in p {
        h.update(x.to_bits().to_le_bytes());
    }
    crate::hex::encode(&h.finalize())
}

/// The probe's result on one device, with its largest deviation from [`reference`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SelfCheck {
    /// The device's output, row-major `[ROWS, OUT]`.
    pub values: Vec<f32>,
    /// `max |value − reference|`.
    pub max_abs_err: f64,
    /// [`basis_determinism_hash`] as computed by this build.
    pub basis_hash: String,
}

impl SelfCheck {
    /// Whether the device computed the probe within [`error_bound`]: a working backend.
    pub fn passed(&self) -> bool {
        self.max_abs_err <= error_bound()
    }
}

/// Runs the probe on `device` and compares it with the f64 reference.
pub async fn run(device: &Device) -> Result<SelfCheck> {
    let values = to_vec_f32(compute(device)).await?;
    let max_abs_err = values
        .iter()
        .zip(reference())
        .map(|(&v, r)| (f64::from(v) - r).abs())
        .fold(0.0, f64::max);
    Ok(SelfCheck {
        values,
        max_abs_err,
        basis_hash: basis_determinism_hash(),
    })
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use crate::device::{BackendKind, init};
    use crate::readback::block_on;

    #[test]
    fn reference_rows_are_distributions() {
        for row in reference().chunks(OUT) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn cpu_backend_matches_reference() {
        let check = block_on(run(&init(BackendKind::Cpu).unwrap())).unwrap();
        assert_eq!(check.values.len(), ROWS * OUT);
        assert!(check.passed(), "{check:?}");
    }

    #[test]
    fn wgpu_backend_matches_reference() {
        let check = block_on(run(&init(BackendKind::Wgpu).unwrap())).unwrap();
        println!(
            "wgpu: {:.2e} (bound {:.2e})",
            check.max_abs_err,
            error_bound()
        );
        assert!(check.passed(), "{check:?}");
    }
}
