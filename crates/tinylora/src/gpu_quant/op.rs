//! The GPU kernels of [`super::kernels`] as burn operations on the cubecl backend (wgpu
//! natively, WebGPU in the browser), with the products' backward pass for autodiff
//! ([`crate::frozen_grad`]).

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::BlockLayout;
use super::kernels::{ROW_LANES, dequantize_kernel, matmul_t_kernel, matvec_kernel, rows_kernel};
use crate::frozen_grad::{FrozenMatrix, tracked};

/// Products with, and rows of, a matrix held as GGUF blocks in a `u32` tensor (`words`).
#[backend_extension(Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff)]
pub trait BlocksBackend: Backend {
    /// `x·Wᵀ` (`[..., cols]` → `[..., rows]`), or with `transposed` `dy·W` (`[..., rows]` →
    /// `[..., cols]`).
    fn blocks_matmul(
        input: FloatTensor<Self>,
        words: IntTensor<Self>,
        layout: BlockLayout,
        transposed: bool,
    ) -> FloatTensor<Self>;
    /// Rows `ids` (`[n]`, `u32`) of a piece of `W` whose first row is `first_row`: `[n, cols]`,
    /// zeros for ids outside the piece.
    fn blocks_rows(
        ids: IntTensor<Self>,
        words: IntTensor<Self>,
        layout: BlockLayout,
        first_row: usize,
    ) -> FloatTensor<Self>;
    /// Rows `first..first + count` of `W`, dequantised: `[count, cols]`.
    fn blocks_dequantize(
        words: IntTensor<Self>,
        layout: BlockLayout,
        first: usize,
        count: usize,
    ) -> FloatTensor<Self>;
}

/// Units per cube of the kernels (one output value each).
const CUBE_UNITS: u32 = 256;

/// A launch of one unit per value of `out`.
fn grid(out: &CubeTensor) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(CUBE_UNITS);
    let count = calculate_cube_count_elemwise(&out.client, out.meta.num_elements(), dim);
    (count, dim)
}

/// A new f32 tensor beside `like`, `[dims…]`.
fn empty_like(like: &CubeTensor, dims: Vec<usize>) -> CubeTensor {
    let dtype = like.dtype;
    assert_eq!(
        dtype,
        DType::F32,
        "quantised GPU products take f32 activations"
    );
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(dims),
        dtype,
    )
}

/// `input` `[..., d_in]` contiguous, and an output `[..., d_out]`.
fn rows_in_out(input: CubeTensor, d_in: usize, d_out: usize) -> (CubeTensor, CubeTensor) {
    let mut dims = input.shape().to_vec();
    let last = dims.len() - 1;
    assert_eq!(
        dims[last], d_in,
        "quantised GPU product: input {dims:?}, expected last {d_in}"
    );
    dims[last] = d_out;
    let input = into_contiguous(input);
    let out = empty_like(&input, dims);
    (input, out)
}

impl BlocksBackend for CubeBackend {
    fn blocks_matmul(
        input: CubeTensor,
        words: CubeTensor,
        layout: BlockLayout,
        transposed: bool,
    ) -> CubeTensor {
        let (d_in, d_out) = match transposed {
            true => (layout.rows, layout.cols),
            false => (layout.cols, layout.rows),
        };
        let (input, out) = rows_in_out(input, d_in, d_out);
        let (kind, values, bytes) = layout.comptime_args();
        let (rows, cols, row_bytes) = (
            layout.rows as u32,
            layout.cols as u32,
            layout.row_bytes() as u32,
        );
        let (input, words, target) = (
            input.into_tensor_arg(),
            words.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
        if transposed {
            let (count, dim) = grid(&out);
            matmul_t_kernel::launch(
                &out.client,
                count,
                dim,
                input,
                words,
                target,
                rows,
                cols,
                row_bytes,
                kind,
                values,
                bytes,
            );
        } else {
            // One cube per output value.
            let dim = CubeDim::new_1d(ROW_LANES);
            let units = out.meta.num_elements() * ROW_LANES as usize;
            let count = calculate_cube_count_elemwise(&out.client, units, dim);
            matvec_kernel::launch(
                &out.client,
                count,
                dim,
                input,
                words,
                target,
                rows,
                cols,
                row_bytes,
                kind,
                values,
                bytes,
            );
        }
        out
    }

    fn blocks_rows(
        ids: CubeTensor,
        words: CubeTensor,
        layout: BlockLayout,
        first_row: usize,
    ) -> CubeTensor {
        let ids = into_contiguous(ids);
        let n = ids.meta.num_elements();
        let dims = vec![n, layout.cols];
        let out = empty_device_dtype(
            ids.client.clone(),
            ids.device.clone(),
            Shape::from(dims),
            DType::F32,
        );
        let (count, dim) = grid(&out);
        let (kind, values, bytes) = layout.comptime_args();
        rows_kernel::launch(
            &out.client,
            count,
            dim,
            ids.into_tensor_arg(),
            words.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            first_row as u32,
            layout.rows as u32,
            layout.cols as u32,
            layout.row_bytes() as u32,
            kind,
            values,
            bytes,
        );
        out
    }

    fn blocks_dequantize(
        words: CubeTensor,
        layout: BlockLayout,
        first: usize,
        count: usize,
    ) -> CubeTensor {
        let out = empty_device_dtype(
            words.client.clone(),
            words.device.clone(),
            Shape::from(vec![count, layout.cols]),
            DType::F32,
        );
        let (cubes, dim) = grid(&out);
        let (kind, values, bytes) = layout.comptime_args();
        dequantize_kernel::launch(
            &out.client,
            cubes,
            dim,
            words.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            first as u32,
            layout.cols as u32,
            layout.row_bytes() as u32,
            kind,
            values,
            bytes,
        );
        out
    }
}

/// The blocks and their layout, as the autodiff graph keeps them for backward.
#[derive(Debug, Clone)]
struct DeviceBlocks<B: Backend> {
    words: IntTensor<B>,
    layout: BlockLayout,
}

impl<B: BlocksBackend> FrozenMatrix<B> for DeviceBlocks<B> {
    fn product(&self, input: FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
        B::blocks_matmul(input, self.words.clone(), self.layout.clone(), transposed)
    }
}

impl<B: BlocksBackend, C: CheckpointStrategy> BlocksBackend for Autodiff<B, C> {
    fn blocks_matmul(
        input: FloatTensor<Self>,
        words: IntTensor<Self>,
        layout: BlockLayout,
        transposed: bool,
    ) -> FloatTensor<Self> {
        tracked::<B, C, _>(transposed, input, DeviceBlocks::<B> { words, layout })
    }

    fn blocks_rows(
        ids: IntTensor<Self>,
        words: IntTensor<Self>,
        layout: BlockLayout,
        first_row: usize,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::blocks_rows(ids, words, layout, first_row))
    }

    fn blocks_dequantize(
        words: IntTensor<Self>,
        layout: BlockLayout,
        first: usize,
        count: usize,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::blocks_dequantize(words, layout, first, count))
    }
}
