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
use super::kernels::{
    ROW_LANES, dequantize_kernel, gate_up_kernel, lookup_kernel, matmul_t_kernel, matvec_kernel,
};
use crate::frozen_grad::{FrozenMatrix, tracked};
use crate::weights::dequant::GgmlType;

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
    /// `x·Wᵀ + bias` (`[..., cols]` → `[..., rows]`, `bias` `[rows]`), not differentiable.
    fn blocks_matvec_bias(
        input: FloatTensor<Self>,
        words: IntTensor<Self>,
        bias: FloatTensor<Self>,
        layout: BlockLayout,
    ) -> FloatTensor<Self>;
    /// `silu(x·Gᵀ)·(x·Uᵀ)` (`[..., cols]` → `[..., rows]`) of two matrices of the same shape,
    /// not differentiable.
    fn blocks_gate_up(
        input: FloatTensor<Self>,
        gate: IntTensor<Self>,
        gate_layout: BlockLayout,
        up: IntTensor<Self>,
        up_layout: BlockLayout,
    ) -> FloatTensor<Self>;
    /// `x·Wᵀ + bias` for a dense f32 `W` (`[rows, cols]`, `cols` a multiple of 16), not
    /// differentiable.
    fn dense_matvec_bias(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// [`blocks_gate_up`](Self::blocks_gate_up) of two dense f32 matrices.
    fn dense_gate_up(
        input: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Values of a piece of `W` whose first row is `first_row`, zeros for rows outside it:
    /// with `whole_rows` the rows `ids` (`[n]`, `u32`) as `[n, cols]`, otherwise the values at
    /// flat indices `ids` (`row·cols + col`) as `[n]`.
    fn blocks_lookup(
        ids: IntTensor<Self>,
        words: IntTensor<Self>,
        layout: BlockLayout,
        first_row: usize,
        whole_rows: bool,
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

/// A launch of one cube of [`ROW_LANES`] units per value of `out` (the row products).
fn row_grid(out: &CubeTensor) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(ROW_LANES);
    let units = out.meta.num_elements() * ROW_LANES as usize;
    (calculate_cube_count_elemwise(&out.client, units, dim), dim)
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

/// [`matvec_kernel`]: `x·Wᵀ (+ bias)`, `[..., cols]` → `[..., rows]`.
fn launch_matvec(
    input: CubeTensor,
    words: CubeTensor,
    bias: Option<CubeTensor>,
    layout: &BlockLayout,
) -> CubeTensor {
    let (input, out) = rows_in_out(input, layout.cols, layout.rows);
    let (kind, values, bytes) = layout.comptime_args();
    let (count, dim) = row_grid(&out);
    let has_bias = bias.is_some();
    // Without a bias the kernel reads none: the input stands in for the argument.
    let bias = bias.unwrap_or_else(|| input.clone());
    matvec_kernel::launch(
        &out.client,
        count,
        dim,
        input.into_tensor_arg(),
        words.into_tensor_arg(),
        bias.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        layout.rows as u32,
        layout.cols as u32,
        layout.row_bytes() as u32,
        kind,
        values,
        bytes,
        has_bias,
    );
    out
}

/// [`gate_up_kernel`]: `silu(x·Gᵀ)·(x·Uᵀ)`, `[..., cols]` → `[..., rows]`.
fn launch_gate_up(
    input: CubeTensor,
    gate: CubeTensor,
    gate_layout: &BlockLayout,
    up: CubeTensor,
    up_layout: &BlockLayout,
) -> CubeTensor {
    assert_eq!(
        (gate_layout.rows, gate_layout.cols),
        (up_layout.rows, up_layout.cols),
        "gate and up projections of one shape"
    );
    let (input, out) = rows_in_out(input, gate_layout.cols, gate_layout.rows);
    let (gate_kind, gate_values, gate_bytes) = gate_layout.comptime_args();
    let (up_kind, up_values, up_bytes) = up_layout.comptime_args();
    let (count, dim) = row_grid(&out);
    gate_up_kernel::launch(
        &out.client,
        count,
        dim,
        input.into_tensor_arg(),
        gate.into_tensor_arg(),
        up.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        gate_layout.rows as u32,
        gate_layout.cols as u32,
        gate_layout.row_bytes() as u32,
        up_layout.row_bytes() as u32,
        gate_kind,
        gate_values,
        gate_bytes,
        up_kind,
        up_values,
        up_bytes,
    );
    out
}

/// A dense f32 `[rows, cols]` matrix as the row products read it (its own buffer, the values'
/// bits as words).
fn dense_layout(weight: &CubeTensor) -> BlockLayout {
    let shape = weight.shape();
    assert_eq!(weight.dtype, DType::F32, "dense products take f32 weights");
    BlockLayout {
        kind: GgmlType::F32,
        rows: shape[0],
        cols: shape[1],
    }
}

impl BlocksBackend for CubeBackend {
    fn blocks_matmul(
        input: CubeTensor,
        words: CubeTensor,
        layout: BlockLayout,
        transposed: bool,
    ) -> CubeTensor {
        if !transposed {
            return launch_matvec(input, words, None, &layout);
        }
        let (input, out) = rows_in_out(input, layout.rows, layout.cols);
        let (kind, values, bytes) = layout.comptime_args();
        let (count, dim) = grid(&out);
        matmul_t_kernel::launch(
            &out.client,
            count,
            dim,
            input.into_tensor_arg(),
            words.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            layout.rows as u32,
            layout.cols as u32,
            layout.row_bytes() as u32,
            kind,
            values,
            bytes,
        );
        out
    }

    fn blocks_matvec_bias(
        input: CubeTensor,
        words: CubeTensor,
        bias: CubeTensor,
        layout: BlockLayout,
    ) -> CubeTensor {
        launch_matvec(input, words, Some(into_contiguous(bias)), &layout)
    }

    fn blocks_gate_up(
        input: CubeTensor,
        gate: CubeTensor,
        gate_layout: BlockLayout,
        up: CubeTensor,
        up_layout: BlockLayout,
    ) -> CubeTensor {
        launch_gate_up(input, gate, &gate_layout, up, &up_layout)
    }

    fn dense_matvec_bias(input: CubeTensor, weight: CubeTensor, bias: CubeTensor) -> CubeTensor {
        let layout = dense_layout(&weight);
        launch_matvec(
            input,
            into_contiguous(weight),
            Some(into_contiguous(bias)),
            &layout,
        )
    }

    fn dense_gate_up(input: CubeTensor, gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        let (gate_layout, up_layout) = (dense_layout(&gate), dense_layout(&up));
        launch_gate_up(
            input,
            into_contiguous(gate),
            &gate_layout,
            into_contiguous(up),
            &up_layout,
        )
    }

    fn blocks_lookup(
        ids: CubeTensor,
        words: CubeTensor,
        layout: BlockLayout,
        first_row: usize,
        whole_rows: bool,
    ) -> CubeTensor {
        let ids = into_contiguous(ids);
        let n = ids.meta.num_elements();
        let dims = match whole_rows {
            true => vec![n, layout.cols],
            false => vec![n],
        };
        let out = empty_device_dtype(
            ids.client.clone(),
            ids.device.clone(),
            Shape::from(dims),
            DType::F32,
        );
        let (count, dim) = grid(&out);
        let (kind, values, bytes) = layout.comptime_args();
        lookup_kernel::launch(
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
            whole_rows,
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

    fn blocks_matvec_bias(
        input: FloatTensor<Self>,
        words: IntTensor<Self>,
        bias: FloatTensor<Self>,
        layout: BlockLayout,
    ) -> FloatTensor<Self> {
        let out =
            B::blocks_matvec_bias(input.into_primitive(), words, bias.into_primitive(), layout);
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn blocks_gate_up(
        input: FloatTensor<Self>,
        gate: IntTensor<Self>,
        gate_layout: BlockLayout,
        up: IntTensor<Self>,
        up_layout: BlockLayout,
    ) -> FloatTensor<Self> {
        let out = B::blocks_gate_up(input.into_primitive(), gate, gate_layout, up, up_layout);
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn dense_matvec_bias(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = B::dense_matvec_bias(
            input.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn dense_gate_up(
        input: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = B::dense_gate_up(
            input.into_primitive(),
            gate.into_primitive(),
            up.into_primitive(),
        );
        <Self as AutodiffBackend>::from_inner(out)
    }

    fn blocks_lookup(
        ids: IntTensor<Self>,
        words: IntTensor<Self>,
        layout: BlockLayout,
        first_row: usize,
        whole_rows: bool,
    ) -> FloatTensor<Self> {
        let out = B::blocks_lookup(ids, words, layout, first_row, whole_rows);
        <Self as AutodiffBackend>::from_inner(out)
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
