//! The backward pass of a product with a frozen matrix that a backend holds in its own form
//! (GGUF blocks on the CPU or on the GPU): the gradient of `x·Wᵀ` is `dy·W`, and that of
//! `dy·W` is `dy'·Wᵀ` again, so an adapter's gradient flows through a quantised base model
//! without a dequantised copy of any weight being kept for backward.

use std::marker::PhantomData;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};

/// A frozen `[rows, cols]` matrix `W` as a backend `B` multiplies it.
pub(crate) trait FrozenMatrix<B: Backend>: Clone + Send + std::fmt::Debug + 'static {
    /// `x·Wᵀ` (`[..., cols]` → `[..., rows]`), or with `transposed` `dy·W` (`[..., rows]` →
    /// `[..., cols]`).
    fn product(&self, input: FloatTensor<B>, transposed: bool) -> FloatTensor<B>;
}

/// The backward step of one product: the other direction's product with the same matrix.
#[derive(Debug)]
struct FrozenGrad<W> {
    /// Whether the forward was `dy·W`.
    transposed: bool,
    weight: PhantomData<W>,
}

impl<B: Backend, W: FrozenMatrix<B>> Backward<B, 1> for FrozenGrad<W> {
    type State = W;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let weight = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            weight.product(grad, !self.transposed)
        });
    }
}

/// The product of `input` with `weight` on an autodiff backend, recorded for backward when
/// `input` needs a gradient.
pub(crate) fn tracked<B: Backend, C: CheckpointStrategy, W: FrozenMatrix<B>>(
    transposed: bool,
    input: FloatTensor<Autodiff<B, C>>,
    weight: W,
) -> FloatTensor<Autodiff<B, C>> {
    let grad = FrozenGrad {
        transposed,
        weight: PhantomData::<W>,
    };
    match grad.prepare::<C>([input.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = weight.product(input.into_primitive(), transposed);
            prep.finish(weight, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(weight.product(input.into_primitive(), transposed)),
    }
}
