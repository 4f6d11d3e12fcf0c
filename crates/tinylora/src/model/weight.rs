//! The frozen weight of a linear layer or an embedding, stored the way it was loaded: an f32
//! tensor on the model's device (in row pieces when it exceeds one GPU buffer), or the
//! checkpoint's GGUF blocks (in host memory for the CPU backend, in GPU buffers for
//! wgpu/WebGPU).

#[cfg(feature = "native")]
use std::sync::Arc;

use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::load::LoadOptions;
use super::split::SplitDense;
use crate::gpu_quant::{GpuBlocks, MAX_BUFFER_BYTES};
use crate::weights::BlockTensor;

#[cfg(feature = "native")]
use crate::quant::{QMatrix, op::quant_linear};

/// A `[out, in]` weight (`[vocab, hidden]` for an embedding).
// A burn tensor handle is large; a model holds a few hundred weights, so boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Weight {
    /// f32 on the model's device, `[out, in]`, contiguous as in the checkpoint.
    Dense(Tensor<2>),
    /// GGUF blocks on the CPU, multiplied without being dequantised (see [`crate::quant`]).
    #[cfg(feature = "native")]
    Blocks(Arc<QMatrix>),
    /// GGUF blocks on the GPU, multiplied without being kept dequantised (see
    /// [`crate::gpu_quant`]).
    GpuBlocks(GpuBlocks),
    /// f32 on a GPU, in row pieces within one buffer's limit each.
    Split(SplitDense),
}

/// `x·Wᵀ` for a dense `[out, in]` weight, always as one 2-D product over the flattened rows.
///
/// Up to [`WEIGHT_LEFT_MAX_ROWS`] rows (decoding) it computes `(W·xᵀ)ᵀ`, with the contiguous
/// matrix on the left: gemm then reads the weight in place (a matrix-vector product for one
/// row) instead of packing a copy of all of it on every call; more rows (prefill, log-prob
/// recomputation) are faster as `x·Wᵀ`. burn's `linear` is avoided on purpose: for a
/// `[1, seq, in]` input it reshapes the weight to `[1, in, out]`, which copies the transposed
/// view into a new contiguous matrix on every call.
///
/// # Shapes
/// - `x`: `[..., in]`; output `[..., out]`
pub(crate) fn dense_project<const D: usize>(w: &Tensor<2>, x: Tensor<D>) -> Tensor<D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let [d_out, d_in] = w.dims();
    let x = x.reshape([rows, d_in]);
    let y = if rows <= WEIGHT_LEFT_MAX_ROWS {
        w.clone().matmul(x.transpose()).transpose()
    } else {
        x.matmul(w.clone().transpose())
    };
    dims[D - 1] = d_out;
    y.reshape(dims)
}

/// Up to this many rows, [`Weight::project`] computes `(W·xᵀ)ᵀ` instead of `x·Wᵀ`.
const WEIGHT_LEFT_MAX_ROWS: usize = 32;

impl Weight {
    /// f32 `values` (`[rows, cols]`, row-major) on `device`: one tensor, or row pieces on a GPU
    /// when they exceed one buffer ([`MAX_BUFFER_BYTES`]).
    pub fn from_values(values: Vec<f32>, [rows, cols]: [usize; 2], device: &Device) -> Self {
        if rows * cols * 4 > MAX_BUFFER_BYTES && !super::load::is_cpu(device) {
            return Weight::Split(SplitDense::new(
                &values,
                [rows, cols],
                device,
                MAX_BUFFER_BYTES,
            ));
        }
        Weight::Dense(Tensor::from_data(
            TensorData::new(values, [rows, cols]),
            device,
        ))
    }

    /// A checkpoint's quantised blocks, kept as they are: in host memory for the CPU backend
    /// (multiplied as `options` says), in a GPU buffer on other devices.
    #[cfg_attr(not(feature = "native"), allow(unused_variables))]
    pub fn from_blocks(
        blocks: BlockTensor,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<Self, String> {
        #[cfg(feature = "native")]
        if super::load::is_cpu(device) {
            return QMatrix::from_blocks(blocks)
                .map(|m| Weight::Blocks(Arc::new(m.with_activations(options.activations))));
        }
        GpuBlocks::from_blocks(&blocks, device).map(Weight::GpuBlocks)
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Weight::Dense(w) => w.dims(),
            #[cfg(feature = "native")]
            Weight::Blocks(m) => m.dims(),
            Weight::GpuBlocks(m) => m.dims(),
            Weight::Split(m) => m.dims(),
        }
    }

    /// How the weight is stored: `f32`, or its GGUF block type (`Q4K`, `Q6K`, ...).
    pub fn storage(&self) -> String {
        match self {
            Weight::Dense(_) => "f32".into(),
            #[cfg(feature = "native")]
            Weight::Blocks(m) => format!("{:?}", m.kind()),
            Weight::GpuBlocks(m) => format!("{:?}", m.kind()),
            Weight::Split(_) => "f32".into(),
        }
    }

    /// Bytes the weight occupies.
    pub fn size_bytes(&self) -> usize {
        match self {
            Weight::Dense(_) | Weight::Split(_) => self.dims().iter().product::<usize>() * 4,
            #[cfg(feature = "native")]
            Weight::Blocks(m) => m.size_bytes(),
            Weight::GpuBlocks(m) => m.size_bytes(),
        }
    }

    /// Bytes of the largest single buffer the weight occupies (GPU blocks are split into
    /// buffers within WebGPU's default limits).
    pub fn largest_buffer_bytes(&self) -> usize {
        match self {
            Weight::GpuBlocks(m) => m.largest_buffer_bytes(),
            Weight::Split(m) => m.largest_buffer_bytes(),
            _ => self.size_bytes(),
        }
    }

    /// `x·Wᵀ + b` (see [`dense_project`] for dense weights, [`GpuBlocks::project`] for blocks
    /// on a GPU).
    ///
    /// # Shapes
    /// - `x`: `[..., in]`; `bias`: `[out]`; output `[..., out]`
    pub fn project<const D: usize>(&self, x: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
        let y = match self {
            Weight::Dense(w) => {
                if let Some(b) = &bias
                    && let Some(y) = crate::gpu_quant::dense_project_bias(w, &x, b)
                {
                    return y;
                }
                dense_project(w, x)
            }
            #[cfg(feature = "native")]
            Weight::Blocks(m) => quant_linear(x, m),
            Weight::GpuBlocks(m) => return m.project(x, bias),
            Weight::Split(m) => m.project(x),
        };
        match bias {
            Some(b) => y + b.unsqueeze::<D>(),
            None => y,
        }
    }

    /// SwiGLU's hidden values `silu(x·Gᵀ)·(x·Uᵀ)` with `self` as `G` (`gate_proj`) and `up` as
    /// `U` in one launch, where one serves (both dense or both GPU blocks, a few rows on a GPU
    /// outside any autodiff graph); `None` otherwise.
    ///
    /// # Shapes
    /// - `x`: `[..., in]`; output `[..., out]`
    pub fn gate_up<const D: usize>(&self, up: &Weight, x: &Tensor<D>) -> Option<Tensor<D>> {
        match (self, up) {
            (Weight::GpuBlocks(gate), Weight::GpuBlocks(up)) => gate.gate_up(up, x),
            (Weight::Dense(gate), Weight::Dense(up)) => {
                crate::gpu_quant::dense_gate_up(gate, up, x)
            }
            _ => None,
        }
    }

    /// The rows `ids` (an embedding lookup).
    ///
    /// # Shapes
    /// - `ids`: `[batch][seq]`, each `< out` (checked by the caller); output `[batch, seq, in]`
    pub fn rows(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<3> {
        let batch = ids.len();
        let seq = ids.first().map_or(0, Vec::len);
        match self {
            Weight::Dense(w) => {
                let flat: Vec<i32> = ids.iter().flatten().map(|&t| t as i32).collect();
                let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, seq]), device);
                embedding(w.clone(), ids)
            }
            #[cfg(feature = "native")]
            Weight::Blocks(m) => {
                let flat: Vec<usize> = ids.iter().flatten().map(|&t| t as usize).collect();
                let d_in = m.dims()[1];
                Tensor::from_data(TensorData::new(m.gather(&flat), [batch, seq, d_in]), device)
            }
            Weight::GpuBlocks(m) => m.rows(ids, device),
            Weight::Split(m) => m.rows(ids, device),
        }
    }

    /// The weight as an f32 tensor `[out, in]` on `device`: the tensor itself when dense, a
    /// dequantised copy (for export, the adapter basis and merged inference) otherwise.
    #[cfg_attr(not(feature = "native"), allow(unused_variables))]
    pub fn to_dense(&self, device: &Device) -> Tensor<2> {
        match self {
            Weight::Dense(w) => w.clone(),
            #[cfg(feature = "native")]
            Weight::Blocks(m) => {
                Tensor::from_data(TensorData::new(m.dequantize(), m.dims()), device)
            }
            Weight::GpuBlocks(m) => m.dequantize_rows(0, m.dims()[0]),
            Weight::Split(m) => m.to_dense(),
        }
    }

    /// The values at flat indices `ids` (`out·in` order, each `< out·in`), `[n]`: GPU blocks
    /// decode only those values; other storage is read densely first.
    pub fn values_at(&self, ids: &[u32], device: &Device) -> Tensor<1> {
        if let Weight::GpuBlocks(m) = self {
            return m.values_at(ids, device);
        }
        let flat: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let picks = Tensor::<1, Int>::from_data(TensorData::new(flat, [ids.len()]), device);
        let len = self.dims().iter().product::<usize>();
        self.to_dense(device).reshape([len]).select(0, picks)
    }

    /// The dense tensor, for full-parameter training; `None` for blocks.
    pub fn dense_mut(&mut self) -> Option<&mut Tensor<2>> {
        match self {
            Weight::Dense(w) => Some(w),
            #[cfg(feature = "native")]
            Weight::Blocks(_) => None,
            Weight::GpuBlocks(_) | Weight::Split(_) => None,
        }
    }
}
