//! `x·Wᵀ` with a [`QMatrix`] as a burn operation on the CPU backend (`flex`), with its backward
//! pass `dx = dy·W` for autodiff ([`crate::frozen_grad`]).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

use super::QMatrix;
use crate::frozen_grad::{FrozenMatrix, tracked};

/// The quantised products as backend operations.
#[backend_extension(Flex, Autodiff)]
pub trait QuantLinearBackend: Backend {
    /// `x·Wᵀ`: `x` `[..., cols]` → `[..., rows]`.
    fn quant_linear(x: FloatTensor<Self>, weight: Arc<QMatrix>) -> FloatTensor<Self>;
    /// `dy·W`: `dy` `[..., rows]` → `[..., cols]`.
    fn quant_linear_backward(dy: FloatTensor<Self>, weight: Arc<QMatrix>) -> FloatTensor<Self>;
}

/// Runs `product` over the rows of `input` (last dimension `d_in`), giving `d_out` per row.
fn on_rows(
    input: FlexTensor,
    d_in: usize,
    d_out: usize,
    product: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> FlexTensor {
    let mut dims = input.shape().to_vec();
    let last = dims.len() - 1;
    assert_eq!(
        dims[last], d_in,
        "quantised product: input {dims:?}, expected last {d_in}"
    );
    let input = input.to_contiguous();
    let values = input.storage::<f32>();
    let rows = values.len() / d_in.max(1);
    let out = product(values, rows);
    dims[last] = d_out;
    FlexTensor::from_data(TensorData::new(out, Shape::from(dims)))
}

impl QuantLinearBackend for Flex {
    fn quant_linear(x: FlexTensor, weight: Arc<QMatrix>) -> FlexTensor {
        let [rows, cols] = weight.dims();
        on_rows(x, cols, rows, |x, n| weight.matmul(x, n))
    }

    fn quant_linear_backward(dy: FlexTensor, weight: Arc<QMatrix>) -> FlexTensor {
        let [rows, cols] = weight.dims();
        on_rows(dy, rows, cols, |dy, n| weight.matmul_t(dy, n))
    }
}

impl<B: QuantLinearBackend> FrozenMatrix<B> for Arc<QMatrix> {
    fn product(&self, input: FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
        match transposed {
            true => B::quant_linear_backward(input, self.clone()),
            false => B::quant_linear(input, self.clone()),
        }
    }
}

impl<B: QuantLinearBackend, C: CheckpointStrategy> QuantLinearBackend for Autodiff<B, C> {
    fn quant_linear(x: FloatTensor<Self>, weight: Arc<QMatrix>) -> FloatTensor<Self> {
        tracked::<B, C, _>(false, x, weight)
    }

    fn quant_linear_backward(dy: FloatTensor<Self>, weight: Arc<QMatrix>) -> FloatTensor<Self> {
        tracked::<B, C, _>(true, dy, weight)
    }
}

/// `x·Wᵀ` for a tensor on the CPU backend (plain or autodiff).
///
/// # Shapes
/// - `x`: `[..., cols]`; output `[..., rows]`
pub fn quant_linear<const D: usize>(x: Tensor<D>, weight: &Arc<QMatrix>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as QuantLinearBackend>::quant_linear(
        x.into_dispatch(),
        weight.clone(),
    ))
}
