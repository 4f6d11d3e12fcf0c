//! Reading tensors back to the host. Asynchronous, because browsers have no synchronous GPU
//! reads; native callers block on these futures (see [`block_on`]).

use burn::tensor::Tensor;

use crate::{Error, Result};

/// Reads a float tensor of any rank back as a flat row-major `Vec<f32>`.
pub async fn to_vec_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// Runs a future to completion on the current thread (native only).
#[cfg(not(target_family = "wasm"))]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}
