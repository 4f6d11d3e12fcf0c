//! Building a [`CausalLm`] from a [`TensorSource`], one tensor at a time, checking
//! every name and shape against the config (the loader is the tree's [`TensorSupply`]).

use std::collections::BTreeSet;

use burn::tensor::{Device, Tensor, TensorData};

use super::causal_lm::CausalLm;
use super::config::{ModelConfig, RopeScaling};
use super::tree::{TensorSupply, VectorRole};
use super::weight::Weight;
use crate::gpu_quant::{MAX_BUFFER_BYTES, keeps, rows_per_buffer};
#[cfg(feature = "native")]
use crate::quant::{Activations, WeightFormat};
use crate::weights::dequant::{GgmlType, quantize_q8_0};
use crate::weights::gguf::ROPE_DIVISORS;
use crate::weights::{BlockTensor, TensorSource};
use crate::{Error, Result};

/// Choices made when loading a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// How quantised weights kept on the CPU multiply a few rows of activations.
    #[cfg(feature = "native")]
    pub activations: Activations,
    /// How f16/bf16/f32 matrices are held (quantised ones stay as stored on every device).
    #[cfg(feature = "native")]
    pub weights: WeightFormat,
}

impl LoadOptions {
    /// Whether f16/bf16/f32 matrices are quantised to Q8_0 at load.
    fn quantise_dense(&self) -> bool {
        #[cfg(feature = "native")]
        {
            self.weights == WeightFormat::Q8_0
        }
        #[cfg(not(feature = "native"))]
        {
            false
        }
    }
}

/// Pulls tensors by name, checks their shapes and remembers which ones were used.
struct Loader<'a> {
    source: &'a mut dyn TensorSource,
    device: &'a Device,
    options: &'a LoadOptions,
    used: BTreeSet<String>,
}

/// Whether `device` is burn's CPU backend (plain or autodiff), where [`Weight::Blocks`] run.
#[cfg(feature = "native")]
pub(crate) fn is_cpu(device: &Device) -> bool {
    matches!(
        device.clone().without_autodiff().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// No CPU backend in the browser build.
#[cfg(not(feature = "native"))]
pub(crate) fn is_cpu(_: &Device) -> bool {
    false
}

impl Loader<'_> {
    /// Checks that `name` exists with `shape` and marks it used.
    fn check(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        let found = self.source.shape(name).ok_or_else(|| Error::BadFile {
            path: self.source.origin(name),
            reason: format!("missing tensor `{name}`"),
        })?;
        if found != shape {
            return Err(Error::BadFile {
                path: self.source.origin(name),
                reason: format!(
                    "tensor `{name}` has shape {found:?}, the config implies {shape:?}"
                ),
            });
        }
        self.used.insert(name.to_string());
        Ok(())
    }
}

impl TensorSupply for Loader<'_> {
    /// `{path}.weight`: its blocks when quantised, Q8_0 blocks when asked for, its f16/bf16
    /// values as stored on a GPU ([`keeps`]), else f32 on the device.
    fn matrix(&mut self, path: &str, rows: usize, cols: usize) -> Result<Weight> {
        let name = &format!("{path}.weight");
        self.check(name, &[rows, cols])?;
        let bad = |source: &dyn TensorSource, reason: String| Error::BadFile {
            path: source.origin(name),
            reason: format!("tensor `{name}`: {reason}"),
        };
        let keep_halves = !is_cpu(self.device) && !self.options.quantise_dense();
        let kept = self
            .source
            .block_kind(name)
            .filter(|&kind| kind.is_quantised() || (keep_halves && keeps(kind, cols)));
        let blocks = match kept {
            Some(_) => self.source.read_blocks(name)?,
            None if self.options.quantise_dense() => {
                if !cols.is_multiple_of(32) {
                    let reason = format!("{cols} columns are not whole Q8_0 blocks of 32");
                    return Err(bad(&*self.source, reason));
                }
                let values = self.source.read(name)?.values;
                Some(BlockTensor {
                    shape: vec![rows, cols],
                    kind: GgmlType::Q8_0,
                    bytes: quantize_q8_0(&values),
                })
            }
            None => None,
        };
        match blocks {
            Some(blocks) => Weight::from_blocks(blocks, self.options, self.device)
                .map_err(|reason| bad(&*self.source, reason)),
            None => {
                let values = self.source.read(name)?.values;
                Ok(Weight::from_values(values, [rows, cols], self.device))
            }
        }
    }

    fn vector(&mut self, name: &str, len: usize, _: VectorRole) -> Result<Tensor<1>> {
        self.check(name, &[len])?;
        let values = self.source.read(name)?.values;
        Ok(Tensor::from_data(
            TensorData::new(values, [len]),
            self.device,
        ))
    }
}

/// Whether the loader skips tensor `name` of a checkpoint of `config` (RoPE tables it computes
/// itself, an `lm_head` tied to the embedding).
fn ignored(config: &ModelConfig, name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
        || (config.tie_word_embeddings && name == "lm_head.weight")
        || (matches!(config.rope_scaling, Some(RopeScaling::Divisors(_))) && name == ROPE_DIVISORS)
}

/// What a checkpoint's weights take on a GPU ([`gpu_footprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFootprint {
    /// Bytes of all weights.
    pub total_bytes: usize,
    /// The tensor with the largest single buffer: its name and that buffer's bytes.
    pub largest: (String, usize),
}

/// What loading `source` onto a GPU will allocate for its weights (default [`LoadOptions`]),
/// from the shapes and block types alone, before anything is read: quantised matrices stay
/// blocks, f16/bf16 matrices stay 16-bit ([`keeps`]), everything else is f32, and matrices are split into buffers of at most
/// [`MAX_BUFFER_BYTES`] (as [`Weight::from_blocks`] and [`Weight::from_values`] do).
pub fn gpu_footprint(config: &ModelConfig, source: &dyn TensorSource) -> GpuFootprint {
    let mut footprint = GpuFootprint {
        total_bytes: 0,
        largest: (String::new(), 0),
    };
    for name in source.names() {
        let Some(shape) = source.shape(&name).filter(|_| !ignored(config, &name)) else {
            continue;
        };
        let values = shape.iter().product::<usize>();
        let (rows, cols, kind) = match shape[..] {
            [rows, cols] => (rows, cols, source.block_kind(&name)),
            // Vectors (norms, biases) are f32 on every device.
            _ => (1, values, None),
        };
        let row_bytes = match kind.filter(|&k| keeps(k, cols)) {
            Some(kind) => {
                let (block_values, block_bytes) = kind.block();
                cols / block_values * block_bytes
            }
            None => cols * 4,
        };
        let bytes = rows * row_bytes;
        let buffer = match shape.len() {
            2 => bytes.min(rows_per_buffer(row_bytes, MAX_BUFFER_BYTES).max(1) * row_bytes),
            _ => bytes,
        };
        footprint.total_bytes += bytes;
        if buffer > footprint.largest.1 {
            footprint.largest = (name, buffer);
        }
    }
    footprint
}

impl CausalLm {
    /// Loads every weight of `config`'s architecture from `source` onto `device`.
    ///
    /// Matrices the source stores quantised (GGUF Q4_0, Q5_0, Q8_0, Q4_K, Q6_K) stay as their
    /// blocks: in host memory on the CPU backend ([`Weight::Blocks`]), in GPU buffers on other
    /// devices ([`Weight::GpuBlocks`]), where f16/bf16 matrices also stay 16-bit; everything
    /// else is f32 on `device`.
    /// Missing tensors, wrong shapes and tensors the architecture does not use are errors
    /// naming the file and the tensor.
    pub fn load(
        config: &ModelConfig,
        source: &mut dyn TensorSource,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with(config, source, device, &LoadOptions::default())
    }

    /// [`load`](Self::load) with `options`.
    pub fn load_with(
        config: &ModelConfig,
        source: &mut dyn TensorSource,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        let mut loader = Loader {
            source,
            device,
            options,
            used: BTreeSet::new(),
        };
        let model = Self::build(config, &mut loader, device)?;
        let unused: Vec<String> = loader
            .source
            .names()
            .into_iter()
            .filter(|n| !loader.used.contains(n) && !ignored(config, n))
            .collect();
        if let Some(first) = unused.first() {
            return Err(Error::BadFile {
                path: loader.source.origin(first),
                reason: format!(
                    "{} tensor(s) that a {} model with this config does not have, e.g. `{first}`",
                    unused.len(),
                    config.architecture.name()
                ),
            });
        }
        Ok(model)
    }
}
