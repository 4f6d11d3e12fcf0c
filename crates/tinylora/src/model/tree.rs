//! The module tree, defined once. Each module lists its children by field name with
//! [`children!`], and the field names are the Hugging Face path components
//! (`model.layers.3.self_attn.q_proj`), so one walk serves every consumer: export
//! ([`CausalLm::named_tensors`]), parameter counts, bytes per token, full-parameter training
//! ([`CausalLm::params_mut`]) and the adapter's target layers ([`crate::adapter::targets`]).
//! Building the tree — from a checkpoint or from random numbers — goes through one
//! [`TensorSupply`], asked for each tensor by path and shape in the modules' `build` functions.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::causal_lm::CausalLm;
use super::linear::{Linear, Mixes};
use super::weight::Weight;
use crate::{Error, Result};

/// One node of the tree during a walk.
pub enum Node<'a> {
    /// A linear layer (`{path}.weight`, `{path}.bias`).
    Linear(&'a Linear),
    /// The token embedding (`{path}.weight`), `[vocab, hidden]`.
    Embedding(&'a Weight),
    /// An RMSNorm weight (`{path}.weight`), `[d]`.
    Norm(&'a Tensor<1>),
}

/// [`Node`] with mutable access.
pub enum NodeMut<'a> {
    /// A linear layer.
    Linear(&'a mut Linear),
    /// The token embedding, `[vocab, hidden]`.
    Embedding(&'a mut Weight),
    /// An RMSNorm weight, `[d]`.
    Norm(&'a mut Tensor<1>),
}

impl<'a> Node<'a> {
    /// The linear layer, if this node is one.
    pub fn linear(self) -> Option<&'a Linear> {
        if let Node::Linear(linear) = self {
            Some(linear)
        } else {
            None
        }
    }
}

impl<'a> NodeMut<'a> {
    /// The linear layer, if this node is one.
    pub fn linear(self) -> Option<&'a mut Linear> {
        if let NodeMut::Linear(linear) = self {
            Some(linear)
        } else {
            None
        }
    }
}

/// What a vector of the tree holds, for suppliers that make values up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorRole {
    /// An RMSNorm weight (starts at one).
    Norm,
    /// A bias (starts at zero).
    Bias,
}

/// Supplies every tensor of a model while its tree is built, in the tree's order.
pub trait TensorSupply {
    /// The `[rows, cols]` matrix `{path}.weight`.
    fn matrix(&mut self, path: &str, rows: usize, cols: usize) -> Result<Weight>;
    /// The vector `name` (`{path}.weight` of a norm, `{path}.bias`), `[len]`.
    fn vector(&mut self, name: &str, len: usize, role: VectorRole) -> Result<Tensor<1>>;

    /// A linear layer `d_in → d_out` at `path`, with a bias when `bias`.
    fn linear(&mut self, path: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
        let weight = self.matrix(path, d_out, d_in)?;
        let bias = match bias {
            true => Some(self.vector(&format!("{path}.bias"), d_out, VectorRole::Bias)?),
            false => None,
        };
        Ok(Linear::new(weight, bias))
    }

    /// The RMSNorm weight of `path`, `[len]`.
    fn norm(&mut self, path: &str, len: usize) -> Result<Tensor<1>> {
        self.vector(&format!("{path}.weight"), len, VectorRole::Norm)
    }
}

/// A child of a module in a walk: a leaf pushes itself, a module its own children.
pub(crate) trait Child {
    /// Appends the nodes under `path`.
    fn nodes<'a>(&'a self, path: String, out: &mut Vec<(String, Node<'a>)>);
    /// Appends the nodes under `path`, mutably.
    fn nodes_mut<'a>(&'a mut self, path: String, out: &mut Vec<(String, NodeMut<'a>)>);
}

impl Child for Linear {
    fn nodes<'a>(&'a self, path: String, out: &mut Vec<(String, Node<'a>)>) {
        out.push((path, Node::Linear(self)));
    }
    fn nodes_mut<'a>(&'a mut self, path: String, out: &mut Vec<(String, NodeMut<'a>)>) {
        out.push((path, NodeMut::Linear(self)));
    }
}

impl Child for Weight {
    fn nodes<'a>(&'a self, path: String, out: &mut Vec<(String, Node<'a>)>) {
        out.push((path, Node::Embedding(self)));
    }
    fn nodes_mut<'a>(&'a mut self, path: String, out: &mut Vec<(String, NodeMut<'a>)>) {
        out.push((path, NodeMut::Embedding(self)));
    }
}

impl Child for Tensor<1> {
    fn nodes<'a>(&'a self, path: String, out: &mut Vec<(String, Node<'a>)>) {
        out.push((path, Node::Norm(self)));
    }
    fn nodes_mut<'a>(&'a mut self, path: String, out: &mut Vec<(String, NodeMut<'a>)>) {
        out.push((path, NodeMut::Norm(self)));
    }
}

impl<T: Child> Child for Option<T> {
    fn nodes<'a>(&'a self, path: String, out: &mut Vec<(String, Node<'a>)>) {
        if let Some(child) = self {
            child.nodes(path, out);
        }
    }
    fn nodes_mut<'a>(&'a mut self, path: String, out: &mut Vec<(String, NodeMut<'a>)>) {
        if let Some(child) = self {
            child.nodes_mut(path, out);
        }
    }
}

impl<T: Child> Child for Vec<T> {
    fn nodes<'a>(&'a self, path: String, out: &mut Vec<(String, Node<'a>)>) {
        for (i, child) in self.iter().enumerate() {
            child.nodes(format!("{path}.{i}"), out);
        }
    }
    fn nodes_mut<'a>(&'a mut self, path: String, out: &mut Vec<(String, NodeMut<'a>)>) {
        for (i, child) in self.iter_mut().enumerate() {
            child.nodes_mut(format!("{path}.{i}"), out);
        }
    }
}

/// Makes a module a [`Child`] whose children are the listed fields, in that order, each under
/// its field name.
macro_rules! children {
    ($module:ty { $($field:ident),* $(,)? }) => {
        impl $crate::model::tree::Child for $module {
            fn nodes<'a>(
                &'a self,
                path: String,
                out: &mut Vec<(String, $crate::model::tree::Node<'a>)>,
            ) {
                $($crate::model::tree::Child::nodes(
                    &self.$field,
                    $crate::model::tree::join(&path, stringify!($field)),
                    out,
                );)*
            }
            fn nodes_mut<'a>(
                &'a mut self,
                path: String,
                out: &mut Vec<(String, $crate::model::tree::NodeMut<'a>)>,
            ) {
                $($crate::model::tree::Child::nodes_mut(
                    &mut self.$field,
                    $crate::model::tree::join(&path, stringify!($field)),
                    out,
                );)*
            }
        }
    };
}
pub(crate) use children;

/// `parent.child`, or `child` at the root.
pub(crate) fn join(parent: &str, child: &str) -> String {
    match parent {
        "" => child.to_string(),
        _ => format!("{parent}.{child}"),
    }
}

/// How a model's weights are stored ([`CausalLm::weight_storage`]): on a GPU, the weight memory
/// and the largest buffer the weights need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightStorage {
    /// Bytes per storage kind (`f32`, or a GGUF block type such as `Q4K`).
    pub bytes: BTreeMap<String, usize>,
    /// The weight with the largest single buffer: its name and that buffer's bytes.
    pub largest: (String, usize),
}

impl WeightStorage {
    /// Bytes of all weights.
    pub fn total_bytes(&self) -> usize {
        self.bytes.values().sum()
    }

    /// The storage kinds joined by `+` (`Q4K+Q6K+f32`).
    pub fn kinds(&self) -> String {
        self.bytes.keys().cloned().collect::<Vec<_>>().join("+")
    }
}

/// One trainable tensor: a vector (norm weight, bias) or a matrix (embedding, linear `W`).
pub enum ParamMut<'a> {
    /// `[n]`.
    Vector(&'a mut Tensor<1>),
    /// `[rows, cols]`.
    Matrix(&'a mut Tensor<2>),
}

fn dense_param(w: &mut Weight) -> Result<ParamMut<'_>> {
    w.dense_mut().map(ParamMut::Matrix).ok_or_else(|| {
        Error::InvalidInput(
            "full-parameter training needs f32 weights, and this model holds quantised blocks"
                .into(),
        )
    })
}

impl CausalLm {
    /// Every node under its module path, in the tree's order.
    pub fn nodes(&self) -> Vec<(String, Node<'_>)> {
        let mut out = Vec::new();
        Child::nodes(self, String::new(), &mut out);
        out
    }

    /// [`nodes`](Self::nodes), mutably.
    pub fn nodes_mut(&mut self) -> Vec<(String, NodeMut<'_>)> {
        let mut out = Vec::new();
        Child::nodes_mut(self, String::new(), &mut out);
        out
    }

    /// Every weight under its Hugging Face name with its checkpoint shape (`[out, in]` for
    /// linear weights), flattened, with the adapter at `mixes` merged; for export.
    pub fn named_tensors(&self, mixes: &Mixes) -> Vec<(String, Vec<usize>, Tensor<1>)> {
        fn flat<const D: usize>(name: String, t: Tensor<D>) -> (String, Vec<usize>, Tensor<1>) {
            let shape = t.dims().to_vec();
            let n = shape.iter().product::<usize>();
            (name, shape, t.reshape([n]))
        }
        let mut out = Vec::new();
        for (path, node) in self.nodes() {
            match node {
                Node::Linear(l) => {
                    let weight = l.merged_weight(mixes, &self.device);
                    out.push(flat(format!("{path}.weight"), weight));
                    if let Some(b) = &l.bias {
                        out.push(flat(format!("{path}.bias"), b.clone()));
                    }
                }
                Node::Embedding(w) => {
                    out.push(flat(format!("{path}.weight"), w.to_dense(&self.device)))
                }
                Node::Norm(t) => out.push(flat(format!("{path}.weight"), t.clone())),
            }
        }
        out
    }

    /// How many weights the model has (a tied `lm_head` counted once).
    pub fn parameter_count(&self) -> usize {
        self.nodes()
            .iter()
            .map(|(_, node)| match node {
                Node::Linear(l) => {
                    let (d_in, d_out) = l.dims();
                    d_in * d_out + l.bias.as_ref().map_or(0, |b| b.dims()[0])
                }
                Node::Embedding(w) => w.dims().iter().product(),
                Node::Norm(t) => t.dims()[0],
            })
            .sum()
    }

    /// How the model's weights are stored: bytes per kind and the largest single buffer.
    pub fn weight_storage(&self) -> WeightStorage {
        let mut bytes = BTreeMap::new();
        let mut largest = (String::new(), 0);
        let mut add = |name: String, kind: String, n: usize, buffer: usize| {
            *bytes.entry(kind).or_insert(0) += n;
            if buffer > largest.1 {
                largest = (name, buffer);
            }
        };
        for (path, node) in self.nodes() {
            match node {
                Node::Linear(l) => {
                    let w = &l.weight;
                    let name = format!("{path}.weight");
                    add(name, w.storage(), w.size_bytes(), w.largest_buffer_bytes());
                    if let Some(b) = &l.bias {
                        let n = b.dims()[0] * 4;
                        add(format!("{path}.bias"), "f32".into(), n, n);
                    }
                }
                Node::Embedding(w) => add(
                    format!("{path}.weight"),
                    w.storage(),
                    w.size_bytes(),
                    w.largest_buffer_bytes(),
                ),
                Node::Norm(t) => {
                    let n = t.dims()[0] * 4;
                    add(format!("{path}.weight"), "f32".into(), n, n)
                }
            }
        }
        WeightStorage { bytes, largest }
    }

    /// Bytes of weights one decoded token reads: every linear layer and norm, as stored (blocks
    /// or f32), and the embedding only where it is also the output projection.
    pub fn weight_bytes_per_token(&self) -> usize {
        let tied = self.lm_head.is_none();
        self.nodes()
            .iter()
            .map(|(_, node)| match node {
                Node::Linear(l) => {
                    l.weight.size_bytes() + l.bias.as_ref().map_or(0, |b| b.dims()[0] * 4)
                }
                Node::Embedding(w) if tied => w.size_bytes(),
                Node::Embedding(_) => 0,
                Node::Norm(t) => t.dims()[0] * 4,
            })
            .sum()
    }

    /// Every weight, in the tree's order; an error for quantised weights.
    pub fn params_mut(&mut self) -> Result<Vec<ParamMut<'_>>> {
        let mut out = Vec::new();
        for (_, node) in self.nodes_mut() {
            match node {
                NodeMut::Linear(l) => {
                    out.push(dense_param(&mut l.weight)?);
                    if let Some(b) = l.bias.as_mut() {
                        out.push(ParamMut::Vector(b));
                    }
                }
                NodeMut::Embedding(w) => out.push(dense_param(w)?),
                NodeMut::Norm(t) => out.push(ParamMut::Vector(t)),
            }
        }
        Ok(out)
    }
}
