//! Gradients of a loss with respect to an adapter's `v`, summed over micro-batches on the host
//! (`v` is a few floats, so its gradient is read back after each backward pass).

use burn::tensor::{Device, Gradients, Tensor};

use crate::Result;
use crate::adapter::TinyLora;
use crate::readback::to_vec_f32;

/// `v` as leaves that require gradients (one `[u]` per group), and zeroed sums shaped like `v`.
pub fn leaves(adapter: &TinyLora, device: &Device) -> (Vec<Tensor<1>>, Vec<Vec<f32>>) {
    let leaves = adapter
        .v_tensors(device)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let sums = adapter.v.iter().map(|p| vec![0.0; p.len()]).collect();
    (leaves, sums)
}

/// Adds each leaf's gradient in `gradients` (if it has one) into `sums`.
pub async fn accumulate(
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
