//! Reading checkpoint tensors one at a time: Hugging Face safetensors (single file or sharded)
//! and GGUF. Every reader converts to f32 and names the file and tensor in its errors.

pub mod dequant;
pub mod gguf;
pub mod gguf_write;
pub mod safetensors;

use std::io::{Read, Seek};
use std::path::PathBuf;

use crate::Result;

/// A loaded tensor: row-major f32 values and their shape (Hugging Face order, `[out, in]` for
/// linear weights).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub values: Vec<f32>,
}

/// A tensor as the file stores it, not converted: GGML blocks, or 16-bit floats.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTensor {
    /// Dimensions, outermost first (`[out, in]` for linear weights); blocks run along the last.
    pub shape: Vec<usize>,
    /// The block type (`F16`/`BF16` for 16-bit floats).
    pub kind: dequant::GgmlType,
    /// The blocks (or values), row-major, little-endian, as in the file.
    pub bytes: Vec<u8>,
}

/// Anything that hands out checkpoint tensors by their Hugging Face names.
pub trait TensorSource {
    /// Every tensor name the source holds.
    fn names(&self) -> Vec<String>;
    /// The shape of `name`, if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Reads and converts one tensor.
    fn read(&mut self, name: &str) -> Result<HostTensor>;
    /// Reads one tensor as it is stored, without converting it: quantised blocks (GGUF), or
    /// f16/bf16 values (GGUF, safetensors); `None` when the source stores `name` otherwise (as
    /// f32, or the default: in a form it does not hand out).
    fn read_blocks(&mut self, _name: &str) -> Result<Option<BlockTensor>> {
        Ok(None)
    }
    /// The type `name` is stored in when [`read_blocks`](Self::read_blocks) returns it,
    /// without reading it; `None` otherwise.
    fn block_kind(&self, _name: &str) -> Option<dequant::GgmlType> {
        None
    }
    /// The file that holds `name` (or the checkpoint itself), for error messages.
    fn origin(&self, name: &str) -> PathBuf;
}

/// The number of values of a tensor of shape `dims`; `None` when the dimensions multiply past
/// `usize` in any order (a zero dimension does not excuse the others: code that multiplies the
/// shape from the other end must not overflow either).
pub fn element_count(dims: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut nonzero = 1u64;
    let mut any_zero = false;
    for d in dims {
        if d == 0 {
            any_zero = true;
        } else {
            nonzero = nonzero.checked_mul(d)?;
        }
    }
    usize::try_from(nonzero).ok()?;
    Some(if any_zero { 0 } else { nonzero })
}

/// A byte stream tensors are read from: a file, or bytes already in memory (the browser).
pub trait ReadSeek: Read + Seek {}

impl<T: Read + Seek> ReadSeek for T {}

/// A boxed [`ReadSeek`], the reader type of checkpoints opened from anything but a path.
pub type BoxedReader = Box<dyn ReadSeek>;

#[cfg(test)]
mod tests {
    use super::element_count;

    #[test]
    fn element_count_refuses_overflow_in_any_order() {
        assert_eq!(element_count([2, 3, 4]), Some(24));
        assert_eq!(element_count([]), Some(1));
        assert_eq!(element_count([5, 0, 7]), Some(0));
        assert_eq!(element_count([1 << 40, 1 << 40]), None);
        // 0 first would stop a left-to-right checked product before it sees the overflow.
        assert_eq!(element_count([0, 1 << 40, 1 << 40]), None);
    }
}
