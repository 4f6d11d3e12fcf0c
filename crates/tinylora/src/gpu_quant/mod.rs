//! Linear-layer weights kept on the GPU as the checkpoint stores them (wgpu natively, WebGPU
//! in the browser) and multiplied straight from them.
//!
//! A GGUF file's quantised matrices are uploaded as they are stored (the tensor's bytes as
//! `u32` words), so a Q4_K_M Qwen2.5-0.5B takes its file's size in GPU memory instead of
//! 1.98 GB of f32; f16/bf16 matrices (safetensors or GGUF) stay 16-bit the same way (0.99 GB
//! for a bf16 0.5B), every matrix split into buffers of at most [`MAX_BUFFER_BYTES`]. The
//! kernels ([`kernels`]) decode each value where it is used: products of a few rows
//! (decoding), and every product inside an autodiff graph (whose backward reads the blocks
//! again), read the blocks directly; products of many rows outside one (prefill, evaluation)
//! dequantise slices of rows into a transient f32 tile and let burn's matrix product do the
//! work. Outside autodiff, a few rows' product also adds the layer's bias, and SwiGLU's
//! `gate_proj` and `up_proj` are read in one launch; the same row products serve dense f32
//! matrices for one row (a decode step of an f32 model).

mod kernels;
pub mod op;

use burn::backend::Dispatch;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::weights::BlockTensor;
use crate::weights::dequant::GgmlType;
use op::BlocksBackend;

/// Up to this many rows of activations, products read the blocks directly; above, they
/// multiply dequantised tiles of rows.
const DIRECT_MAX_ROWS: usize = 16;

/// Bytes of f32 in one dequantised tile of rows (a transient buffer, within WebGPU's default
/// 128 MiB binding limit).
const TILE_BYTES: usize = 32 << 20;

/// How a matrix's blocks are laid out in its words: `rows` rows of `cols` values of `kind`
/// blocks, row after row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    /// The block type (one the kernels read).
    pub kind: GgmlType,
    /// Rows (`out`).
    pub rows: usize,
    /// Columns (`in`).
    pub cols: usize,
}

impl BlockLayout {
    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        let (values, bytes) = self.kind.block();
        self.cols / values * bytes
    }

    /// What the kernels are compiled for: the block type's code, values and bytes per block
    /// (plain floats in groups of 16 values: f32 is a dense matrix, which only the row
    /// products read).
    pub fn comptime_args(&self) -> (u32, u32, u32) {
        let code = kernel_code(self.kind);
        match self.kind {
            GgmlType::F32 => (code, 16, 64),
            GgmlType::F16 | GgmlType::BF16 => (code, 16, 32),
            kind => {
                let (values, bytes) = kind.block();
                (code, values as u32, bytes as u32)
            }
        }
    }
}

/// Most bytes of blocks in one GPU buffer: WebGPU's default `maxStorageBufferBindingSize`
/// (128 MiB), which lavapipe and many browsers enforce.
pub const MAX_BUFFER_BYTES: usize = 128 << 20;

/// The kernels' code for type `kind`.
fn kernel_code(kind: GgmlType) -> u32 {
    match kind {
        GgmlType::Q4_0 => kernels::Q4_0,
        GgmlType::Q5_0 => kernels::Q5_0,
        GgmlType::Q8_0 => kernels::Q8_0,
        GgmlType::Q4K => kernels::Q4_K,
        GgmlType::Q6K => kernels::Q6_K,
        GgmlType::F16 => kernels::F16,
        GgmlType::BF16 => kernels::BF16,
        GgmlType::F32 => kernels::F32,
    }
}

/// Whether the GPU keeps a matrix of `cols` columns stored as `kind` the way it is stored:
/// GGUF blocks, and f16/bf16 values in whole groups of 16 columns (2 bytes a value instead of
/// f32's 4; the kernels decode the bits themselves, so no `shader-f16` is needed). f32 and
/// other widths of 16-bit matrices are held as f32 tensors.
pub fn keeps(kind: GgmlType, cols: usize) -> bool {
    match kind {
        GgmlType::F32 => false,
        GgmlType::F16 | GgmlType::BF16 => cols.is_multiple_of(16),
        _ => true,
    }
}

/// Whole rows of `row_bytes` bytes that fit one buffer of `limit` bytes (0 when one row does
/// not): how matrices are split into buffers.
pub fn rows_per_buffer(row_bytes: usize, limit: usize) -> usize {
    limit / row_bytes.max(1)
}

/// Whether a product of `x`'s rows (`[..., in]`) may read its matrix directly in one launch:
/// at most `max_rows` rows on a GPU, outside any autodiff graph.
fn reads_directly<const D: usize>(x: &Tensor<D>, max_rows: usize) -> bool {
    let n = x.dims()[..D - 1].iter().product::<usize>();
    n <= max_rows && crate::gpu_fused::serves(x)
}

/// Up to this many rows, products of dense f32 matrices read them directly in one launch;
/// above, burn's matrix product, which reads the matrix once for all rows, is faster (toy
/// model on lavapipe, batch 8: 65 against 50 tok/s).
const DENSE_DIRECT_MAX_ROWS: usize = 1;

/// `x` (`[..., in]`) as `[n, in]` through `launch`, whose output `[n, out]` comes back as
/// `[..., out]`.
fn direct<const D: usize>(
    x: Tensor<D>,
    out: usize,
    launch: impl FnOnce(FloatTensor<Dispatch>) -> FloatTensor<Dispatch>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let n = dims[..D - 1].iter().product::<usize>();
    let x = x.reshape([n, dims[D - 1]]);
    dims[D - 1] = out;
    Tensor::<2>::from_dispatch(launch(x.into_dispatch())).reshape(dims)
}

/// `x·Wᵀ + bias` of a dense f32 matrix `W` (`[out, in]`) in one launch of the blocks' row
/// product, where one serves (one row, see [`DENSE_DIRECT_MAX_ROWS`], on a GPU outside any
/// autodiff graph; `in` a multiple of 16, `W` frozen); `None` otherwise.
///
/// # Shapes
/// - `x`: `[..., in]`; `bias`: `[out]`; output `[..., out]`
pub fn dense_project_bias<const D: usize>(
    w: &Tensor<2>,
    x: &Tensor<D>,
    bias: &Tensor<1>,
) -> Option<Tensor<D>> {
    let [rows, cols] = w.dims();
    let serves = reads_directly(x, DENSE_DIRECT_MAX_ROWS) && cols.is_multiple_of(16);
    (serves && !w.is_tracked()).then(|| {
        direct(x.clone(), rows, |x| {
            <Dispatch as BlocksBackend>::dense_matvec_bias(
                x,
                w.clone().into_dispatch(),
                bias.clone().into_dispatch(),
            )
        })
    })
}

/// [`GpuBlocks::gate_up`] of two dense f32 matrices (`in` a multiple of 16, both frozen).
///
/// # Shapes
/// - `gate`, `up`: `[out, in]`; `x`: `[..., in]`; output `[..., out]`
pub fn dense_gate_up<const D: usize>(
    gate: &Tensor<2>,
    up: &Tensor<2>,
    x: &Tensor<D>,
) -> Option<Tensor<D>> {
    let [rows, cols] = gate.dims();
    let serves = reads_directly(x, DENSE_DIRECT_MAX_ROWS) && cols.is_multiple_of(16);
    let frozen = !gate.is_tracked() && !up.is_tracked();
    (serves && frozen && gate.dims() == up.dims()).then(|| {
        direct(x.clone(), rows, |x| {
            <Dispatch as BlocksBackend>::dense_gate_up(
                x,
                gate.clone().into_dispatch(),
                up.clone().into_dispatch(),
            )
        })
    })
}

/// Consecutive rows of a matrix in one GPU buffer.
#[derive(Debug, Clone)]
struct Piece {
    /// The rows' blocks as little-endian `u32` words (the last one zero-padded), `[words]`.
    words: Tensor<1, Int>,
    /// The layout of these rows (`rows` is the piece's).
    layout: BlockLayout,
    /// The matrix row of the piece's first row.
    first_row: usize,
}

impl Piece {
    /// `x·Wᵀ` of this piece's rows: `[n, cols]` → `[n, rows]`.
    fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as BlocksBackend>::blocks_matmul(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.layout.clone(),
            false,
        ))
    }

    /// Rows `first..first + count` of the piece (piece-local), dequantised, `[count, cols]`.
    fn dequantize(&self, first: usize, count: usize) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as BlocksBackend>::blocks_dequantize(
            self.words.clone().into_dispatch(),
            self.layout.clone(),
            first,
            count,
        ))
    }
}

/// A `[rows, cols]` matrix stored as GGUF blocks on the GPU, in pieces of whole rows of at
/// most [`MAX_BUFFER_BYTES`] each.
#[derive(Debug, Clone)]
pub struct GpuBlocks {
    pieces: Vec<Piece>,
    kind: GgmlType,
    rows: usize,
    cols: usize,
}

impl GpuBlocks {
    /// Uploads a checkpoint's blocks to `device`; an error names what the GPU kernels cannot
    /// read (a block type they do not have, a shape the bytes do not make, a row larger than
    /// one buffer).
    pub fn from_blocks(blocks: &BlockTensor, device: &Device) -> Result<Self, String> {
        Self::with_buffer_limit(blocks, device, MAX_BUFFER_BYTES)
    }

    /// [`from_blocks`](Self::from_blocks) with buffers of at most `limit` bytes.
    fn with_buffer_limit(
        blocks: &BlockTensor,
        device: &Device,
        limit: usize,
    ) -> Result<Self, String> {
        let kind = blocks.kind;
        let [rows, cols] = match blocks.shape[..] {
            [rows, cols] => [rows, cols],
            _ => return Err(format!("{:?} is not a matrix", blocks.shape)),
        };
        if !keeps(kind, cols) {
            return Err(format!(
                "the GPU kernels do not read rows of {cols} {kind:?} values"
            ));
        }
        let (block_values, block_bytes) = kind.block();
        let row_bytes = cols / block_values * block_bytes;
        if !cols.is_multiple_of(block_values) || rows * row_bytes != blocks.bytes.len() {
            return Err(format!(
                "{} bytes are not {rows} rows of {cols} {kind:?} values",
                blocks.bytes.len()
            ));
        }
        let rows_per_piece = rows_per_buffer(row_bytes, limit);
        if rows_per_piece == 0 {
            return Err(format!(
                "one row of {row_bytes} bytes exceeds a GPU buffer of {limit} bytes"
            ));
        }
        let pieces = blocks
            .bytes
            .chunks(rows_per_piece * row_bytes)
            .enumerate()
            .map(|(i, bytes)| {
                let words: Vec<u32> = bytes
                    .chunks(4)
                    .map(|c| {
                        let mut w = [0u8; 4];
                        w[..c.len()].copy_from_slice(c);
                        u32::from_le_bytes(w)
                    })
                    .collect();
                let len = words.len();
                Piece {
                    words: Tensor::from_data(TensorData::new(words, [len]), (device, DType::U32)),
                    layout: BlockLayout {
                        kind,
                        rows: bytes.len() / row_bytes,
                        cols,
                    },
                    first_row: i * rows_per_piece,
                }
            })
            .collect();
        Ok(Self {
            pieces,
            kind,
            rows,
            cols,
        })
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The block type.
    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    /// Bytes on the GPU.
    pub fn size_bytes(&self) -> usize {
        self.pieces.iter().map(|p| p.words.dims()[0] * 4).sum()
    }

    /// Bytes of the largest of the GPU buffers the matrix is split into.
    pub fn largest_buffer_bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| p.words.dims()[0] * 4)
            .max()
            .unwrap_or(0)
    }

    /// `x·Wᵀ + bias`: the bias is added by the product's own kernel when one launch reads the
    /// blocks directly (a few rows, one piece, outside any autodiff graph), after it otherwise.
    ///
    /// # Shapes
    /// - `x`: `[..., cols]`; `bias`: `[rows]`; output `[..., rows]`
    pub fn project<const D: usize>(&self, x: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
        match (bias, &self.pieces[..]) {
            (Some(bias), [piece]) if reads_directly(&x, DIRECT_MAX_ROWS) => {
                direct(x, self.rows, |x| {
                    <Dispatch as BlocksBackend>::blocks_matvec_bias(
                        x,
                        piece.words.clone().into_dispatch(),
                        bias.into_dispatch(),
                        piece.layout.clone(),
                    )
                })
            }
            (Some(bias), _) => self.matmul(x) + bias.unsqueeze::<D>(),
            (None, _) => self.matmul(x),
        }
    }

    /// SwiGLU's hidden values `silu(x·Gᵀ)·(x·Uᵀ)` with `self` as `G` (`gate_proj`) and `up` as
    /// `U` in one launch, where one launch can read both directly (a few rows, one piece
    /// each, outside any autodiff graph); `None` otherwise.
    ///
    /// # Shapes
    /// - `x`: `[..., cols]`; output `[..., rows]`
    pub fn gate_up<const D: usize>(&self, up: &GpuBlocks, x: &Tensor<D>) -> Option<Tensor<D>> {
        let ([gate_piece], [up_piece]) = (&self.pieces[..], &up.pieces[..]) else {
            return None;
        };
        (reads_directly(x, DIRECT_MAX_ROWS) && self.dims() == up.dims()).then(|| {
            direct(x.clone(), self.rows, |x| {
                <Dispatch as BlocksBackend>::blocks_gate_up(
                    x,
                    gate_piece.words.clone().into_dispatch(),
                    gate_piece.layout.clone(),
                    up_piece.words.clone().into_dispatch(),
                    up_piece.layout.clone(),
                )
            })
        })
    }

    /// `x·Wᵀ`; differentiable in `x` (the backward reads the same blocks).
    ///
    /// # Shapes
    /// - `x`: `[..., cols]`; output `[..., rows]`
    pub fn matmul<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut dims = x.dims();
        let n = dims[..D - 1].iter().product::<usize>();
        let tracked = x.is_tracked();
        let x = x.reshape([n, self.cols]);
        // Under autodiff the direct product keeps only the blocks for backward, where a
        // product with dequantised tiles would keep the tiles.
        let outputs: Vec<Tensor<2>> = if n <= DIRECT_MAX_ROWS || tracked {
            self.pieces.iter().map(|p| p.matmul(x.clone())).collect()
        } else {
            let step = rows_per_buffer(self.cols * 4, TILE_BYTES).max(1);
            self.pieces
                .iter()
                .flat_map(|p| {
                    (0..p.layout.rows)
                        .step_by(step)
                        .map(move |first| (p, first))
                })
                .map(|(p, first)| {
                    let tile = p.dequantize(first, step.min(p.layout.rows - first));
                    x.clone().matmul(tile.transpose())
                })
                .collect()
        };
        let out = match outputs.len() {
            1 => outputs.into_iter().next().expect("one output"),
            _ => Tensor::cat(outputs, 1),
        };
        dims[D - 1] = self.rows;
        out.reshape(dims)
    }

    /// The rows `ids` (an embedding lookup), through [`lookup`](Self::lookup): a decode step
    /// of one row launches one piece.
    ///
    /// # Shapes
    /// - `ids`: `[batch][seq]`, each `< rows` (checked by the caller); output
    ///   `[batch, seq, cols]`
    pub fn rows(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<3> {
        let batch = ids.len();
        let seq = ids.first().map_or(0, Vec::len);
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let rows: Tensor<2> = self.lookup(&flat, true, device);
        rows.reshape([batch, seq, self.cols])
    }

    /// The values at flat indices `ids` (`row·cols + col`, each `< rows·cols`), `[n]`, through
    /// [`lookup`](Self::lookup).
    pub fn values_at(&self, ids: &[u32], device: &Device) -> Tensor<1> {
        self.lookup(ids, false, device)
    }

    /// Rows `ids` (`whole_rows`, `[n, cols]`) or values at flat indices `ids` (`[n]`): each
    /// piece holding one of them writes what it holds and zeros elsewhere, and those pieces'
    /// outputs add up (exactly: one term is nonzero); pieces holding none are not launched.
    fn lookup<const D: usize>(&self, ids: &[u32], whole_rows: bool, device: &Device) -> Tensor<D> {
        let row_of = |id: u32| match whole_rows {
            true => id as usize,
            false => id as usize / self.cols,
        };
        let holds = |p: &&Piece| {
            let held = p.first_row..p.first_row + p.layout.rows;
            ids.iter().any(|&id| held.contains(&row_of(id)))
        };
        let mut used: Vec<&Piece> = self.pieces.iter().filter(holds).collect();
        if used.is_empty() {
            used.push(&self.pieces[0]);
        }
        let ids = Tensor::<1, Int>::from_data(
            TensorData::new(ids.to_vec(), [ids.len()]),
            (device, DType::U32),
        );
        used.into_iter()
            .map(|p| {
                Tensor::<D>::from_dispatch(<Dispatch as BlocksBackend>::blocks_lookup(
                    ids.clone().into_dispatch(),
                    p.words.clone().into_dispatch(),
                    p.layout.clone(),
                    p.first_row,
                    whole_rows,
                ))
            })
            .reduce(|a, b| a + b)
            .expect("at least one piece")
    }

    /// Rows `first..first + count`, dequantised to f32 on the GPU, `[count, cols]` (not
    /// differentiable: the weight is frozen).
    pub fn dequantize_rows(&self, first: usize, count: usize) -> Tensor<2> {
        let end = first + count;
        let parts: Vec<Tensor<2>> = self
            .pieces
            .iter()
            .filter_map(|p| {
                let (start, stop) = (first.max(p.first_row), end.min(p.first_row + p.layout.rows));
                (start < stop).then(|| p.dequantize(start - p.first_row, stop - start))
            })
            .collect();
        match parts.len() {
            1 => parts.into_iter().next().expect("one part"),
            _ => Tensor::cat(parts, 0),
        }
    }
}

#[cfg(all(test, feature = "native"))]
mod tests;
