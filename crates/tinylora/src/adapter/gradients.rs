//! Gradients of a loss with respect to an adapter's `v`, summed over micro-batches on the host
//! (`v` is a few floats, so its gradient is read back after each backward pass).

use burn::tensor::{Device, Gradients, Tensor};

use crate::Result;
use crate::adapter::TinyLora;
use crate::model::{CausalLm, Mixes};
use crate::readback::to_vec_f32;

/// The gradient with respect to `v` of a loss summed over `parts` (micro-batches), the one loop
/// of GRPO's and SFT's updates. For each part, `loss(part, mixes)` builds, from mixes of fresh
/// leaves `v` (a new graph per backward), the part's loss `[1]` followed by any other scalars
/// `[1]` to add up across parts (read back after the backward pass). Returns those sums, loss
/// first (none without parts), and the gradient, shaped like `v`.
pub async fn summed_gradients<P>(
    model: &CausalLm,
    adapter: &TinyLora,
    parts: impl IntoIterator<Item = P>,
    mut loss: impl FnMut(P, &Mixes) -> Vec<Tensor<1>>,
) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
    let (v, mut grads) = leaves(adapter, &model.device);
    let mut sums: Vec<f64> = Vec::new();
    for part in parts {
        let mixes = adapter.mixes(model, &v)?;
        let scalars = loss(part, &mixes);
        let Some(first) = scalars.first() else {
            continue;
        };
        let gradients = first.backward();
        sums.resize(sums.len().max(scalars.len()), 0.0);
        for (sum, scalar) in sums.iter_mut().zip(scalars) {
            *sum += f64::from(to_vec_f32(scalar).await?[0]);
        }
        accumulate(&mut grads, &v, &gradients).await?;
    }
    Ok((sums, grads))
}

/// `v` as leaves that require gradients (one `[u]` per group), and zeroed sums shaped like `v`.
fn leaves(adapter: &TinyLora, device: &Device) -> (Vec<Tensor<1>>, Vec<Vec<f32>>) {
    let leaves = adapter
        .v_tensors(device)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let sums = adapter.v.iter().map(|p| vec![0.0; p.len()]).collect();
    (leaves, sums)
}

/// Adds each leaf's gradient in `gradients` (if it has one) into `sums`.
async fn accumulate(
    sums: &mut [Vec<f32>],
    leaves: &[Tensor<1>],
    gradients: &Gradients,
) -> Result<()> {
    for (sum, leaf) in sums.iter_mut().zip(leaves) {
        if let Some(grad) = leaf.grad(gradients) {
            for (a, b) in sum.iter_mut().zip(to_vec_f32(grad).await?) {
                *a += b;
            }
        }
    }
    Ok(())
}
