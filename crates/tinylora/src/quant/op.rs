//! `x·Wᵀ` with a [`QMatrix`] as a burn operation on the CPU backend (`flex`), with its backward
//! pass `dx = dy·W` for autodiff: the gradient of an adapter's `v` flows through a quantised
//! base model without a dequantised copy of a weight ever being kept.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

use super::QMatrix;

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

/// The backward of `x·Wᵀ` is `dy·W` and the backward of that is `x·Wᵀ` again.
#[derive(Debug)]
struct QuantLinearGrad {
    /// Whether the forward was `dy·W` (the backward product).
    transposed: bool,
}

fn product<B: QuantLinearBackend>(
    transposed: bool,
    input: FloatTensor<B>,
    weight: Arc<QMatrix>,
) -> FloatTensor<B> {
    if transposed {
        B::quant_linear_backward(input, weight)
    } else {
        B::quant_linear(input, weight)
    }
}

impl<B: QuantLinearBackend> Backward<B, 1> for QuantLinearGrad {
    type State = Arc<QMatrix>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let weight = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            product::<B>(!self.transposed, grad, weight)
        });
    }
}

fn tracked<B: QuantLinearBackend, C: CheckpointStrategy>(
    transposed: bool,
    input: FloatTensor<Autodiff<B, C>>,
    weight: Arc<QMatrix>,
) -> FloatTensor<Autodiff<B, C>> {
    match (QuantLinearGrad { transposed })
        .prepare::<C>([input.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = product::<B>(transposed, input.into_primitive(), weight.clone());
            prep.finish(weight, out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(product::<B>(transposed, input.into_primitive(), weight))
        }
    }
}

impl<B: QuantLinearBackend, C: CheckpointStrategy> QuantLinearBackend for Autodiff<B, C> {
    fn quant_linear(x: FloatTensor<Self>, weight: Arc<QMatrix>) -> FloatTensor<Self> {
        tracked::<B, C>(false, x, weight)
    }

    fn quant_linear_backward(dy: FloatTensor<Self>, weight: Arc<QMatrix>) -> FloatTensor<Self> {
        tracked::<B, C>(true, dy, weight)
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
