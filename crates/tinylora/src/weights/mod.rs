//! Reading checkpoint tensors one at a time: Hugging Face safetensors (single file or sharded)
//! and GGUF. Every reader converts to f32 and names the file and tensor in its errors.

pub mod dequant;
pub mod gguf;
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

/// Anything that hands out checkpoint tensors by their Hugging Face names.
pub trait TensorSource {
    /// Every tensor name the source holds.
    fn names(&self) -> Vec<String>;
    /// The shape of `name`, if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Reads and converts one tensor.
    fn read(&mut self, name: &str) -> Result<HostTensor>;
    /// The file that holds `name` (or the checkpoint itself), for error messages.
    fn origin(&self, name: &str) -> PathBuf;
}

/// A byte stream tensors are read from: a file, or bytes already in memory (the browser).
pub trait ReadSeek: Read + Seek {}

impl<T: Read + Seek> ReadSeek for T {}

/// A boxed [`ReadSeek`], the reader type of checkpoints opened from anything but a path.
pub type BoxedReader = Box<dyn ReadSeek>;
