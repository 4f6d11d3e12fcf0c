//! Linear-layer weights kept as GGUF blocks on the CPU and multiplied straight from them.
//!
//! A Q4_K_M checkpoint of Qwen2.5-0.5B is 463 MiB of blocks and 1.98 GB once dequantised to
//! f32; decoding reads every weight once per token, so it runs at the speed the memory delivers
//! the blocks. [`QMatrix`] holds a `[out, in]` weight as its blocks and computes `x·Wᵀ` (and
//! `dy·W` for gradients) by decoding one row of blocks at a time into a small buffer that stays
//! in the core's cache: for a few rows of `x` (decoding) as integers multiplied with `x`
//! quantised to 8 bits, as llama.cpp does; for more (prefill, batched rollouts, gradients) as
//! f32 tiles handed to gemm (see [`QMatrix::matmul`] for the bounds).
//!
//! [`op`] makes the product a burn operation on the CPU backend, with its backward pass, so that
//! an adapter's gradient flows through a quantised base model.

mod kernels;
pub mod op;

use std::fmt;

use crate::weights::BlockTensor;
use crate::weights::dequant::{GgmlType, decode_row};

/// How a checkpoint's matrices are held (on the CPU and on a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As the file stores them: GGUF blocks stay blocks, f16/bf16/f32 become f32.
    #[default]
    AsStored,
    /// As stored when quantised; f16/bf16/f32 matrices are quantised to Q8_0 at load
    /// (`quantize_q8_0`): a quarter of f32's bytes, values within `d·(½ + 127·2⁻¹¹)`.
    Q8_0,
}

impl WeightFormat {
    /// The name [`FromStr`](std::str::FromStr) reads.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::AsStored => "as-stored",
            WeightFormat::Q8_0 => "q8",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    /// `as-stored` or `q8`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "as-stored" => Ok(WeightFormat::AsStored),
            "q8" | "q8_0" => Ok(WeightFormat::Q8_0),
            _ => Err(format!("unknown weight format `{s}` (as-stored or q8)")),
        }
    }
}

/// How [`QMatrix::matmul`] multiplies a few rows of activations (decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Up to 32 rows are rounded to 8 bits per 32 values and multiplied with integer dot
    /// products, as llama.cpp does: the fastest, within the rounding bound of
    /// [`QMatrix::matmul`].
    #[default]
    Q8,
    /// Always f32 (gemm on decoded tiles): the dequantised model's products within float
    /// rounding, for comparisons with a reference.
    F32,
}

/// A `[rows, cols]` matrix (`[out, in]` of a linear layer) stored as GGML blocks, row-major,
/// each row a whole number of blocks.
#[derive(Clone, PartialEq)]
pub struct QMatrix {
    kind: GgmlType,
    activations: Activations,
    rows: usize,
    cols: usize,
    /// `rows · row_bytes` bytes.
    blocks: Vec<u8>,
    row_bytes: usize,
}

impl fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QMatrix({:?}, [{}, {}], {} bytes)",
            self.kind,
            self.rows,
            self.cols,
            self.blocks.len()
        )
    }
}

impl QMatrix {
    /// Wraps `blocks` of `kind` as a `[rows, cols]` matrix; an error when a row is not a whole
    /// number of blocks or the byte count does not match.
    pub fn new(
        kind: GgmlType,
        rows: usize,
        cols: usize,
        blocks: Vec<u8>,
    ) -> std::result::Result<Self, String> {
        let (per_block, block_bytes) = kind.block();
        if !cols.is_multiple_of(per_block) {
            return Err(format!(
                "rows of {cols} values are not whole {kind:?} blocks of {per_block}"
            ));
        }
        let row_bytes = cols / per_block * block_bytes;
        if rows.checked_mul(row_bytes) != Some(blocks.len()) {
            return Err(format!(
                "{} bytes of {kind:?} blocks do not make a [{rows}, {cols}] matrix",
                blocks.len()
            ));
        }
        Ok(Self {
            kind,
            activations: Activations::Q8,
            rows,
            cols,
            blocks,
            row_bytes,
        })
    }

    /// A matrix from a checkpoint's blocks (`shape` `[rows, cols]`).
    pub fn from_blocks(tensor: BlockTensor) -> std::result::Result<Self, String> {
        match tensor.shape[..] {
            [rows, cols] => Self::new(tensor.kind, rows, cols, tensor.bytes),
            _ => Err(format!(
                "a {}-dimensional tensor is not a matrix",
                tensor.shape.len()
            )),
        }
    }

    /// The same matrix multiplying activations as `activations` says.
    pub fn with_activations(self, activations: Activations) -> Self {
        Self {
            activations,
            ..self
        }
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The GGUF block type.
    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    /// Bytes of blocks held.
    pub fn size_bytes(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks of row `row`.
    fn row_blocks(&self, row: usize) -> &[u8] {
        &self.blocks[row * self.row_bytes..(row + 1) * self.row_bytes]
    }

    /// Decodes row `row` into `out` (`cols` values).
    pub fn decode_row(&self, row: usize, out: &mut [f32]) {
        decode_row(self.kind, self.row_blocks(row), out);
    }

    /// Every value, `[rows, cols]` row-major (for export and for the adapter basis's SVDs).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (row, chunk) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.decode_row(row, chunk);
        }
        out
    }

    /// The rows `ids`, decoded: an embedding lookup, `[ids.len(), cols]`.
    ///
    /// # Panics
    /// If an id is `≥ rows` (token ids are checked against the vocabulary before).
    pub fn gather(&self, ids: &[usize]) -> Vec<f32> {
        let mut out = vec![0.0; ids.len() * self.cols];
        for (&id, chunk) in ids.iter().zip(out.chunks_exact_mut(self.cols.max(1))) {
            self.decode_row(id, chunk);
        }
        out
    }

    /// `y = x·Wᵀ`: `x` is `[n, cols]`, the result `[n, rows]`.
    ///
    /// With [`Activations::Q8`] (the default), up to 32 (`kernels::DOT_MAX_ROWS`) rows
    /// (decoding), `x` is first rounded to 8 bits per
    /// block of 32 (step `d = max|x| / 127`, as llama.cpp's Q8_0 but with an f32 `d`), which
    /// moves each output by at most `Σᵢ |wᵢ|·dᵢ / 2`; the integer products are exact and the
    /// float sums add `(cols/16 + cols/32 + 3)·ε·Σ|wᵢx̂ᵢ|` (ε = 2⁻²⁴, first order). More rows,
    /// or [`Activations::F32`], go through gemm with f32 activations, within `cols·ε·Σ|wᵢxᵢ|` of an exact product of the
    /// dequantised values. The backward ([`matmul_t`](Self::matmul_t)) is the f32 one either way.
    ///
    /// # Panics
    /// If `x.len() != n · cols`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "x is not [{n}, {}]", self.cols);
        kernels::matmul(self, x, n)
    }

    /// `dx = dy·W`: `dy` is `[n, rows]`, the result `[n, cols]` (the backward of
    /// [`matmul`](Self::matmul)), through gemm on decoded tiles; within `rows·ε·Σ|dyᵣwᵣ|`
    /// of exact.
    ///
    /// # Panics
    /// If `dy.len() != n · rows`.
    pub fn matmul_t(&self, dy: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(dy.len(), n * self.rows, "dy is not [{n}, {}]", self.rows);
        kernels::matmul_t(self, dy, n)
    }
}

#[cfg(test)]
pub(crate) mod tests;
