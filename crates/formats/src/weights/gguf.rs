//! GGUF (v2 and v3): metadata, tensor directory and dequantised tensors under their Hugging Face
//! names and row order, plus the config the metadata describes (Qwen2, Qwen3, Llama).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::dequant::{GgmlType, dequantize};
use super::{BlockTensor, BoxedReader, HostTensor, TensorSource};
use crate::chat::ChatTemplate;
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::{Error, Result};

/// Longest string or array the parser accepts (guards against lying lengths).
const MAX_LEN: u64 = 1 << 28;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any integer type (and bool), widened.
    Int(i64),
    /// f32 or f64, widened.
    Float(f64),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

#[derive(Debug, Clone)]
struct TensorInfo {
    /// Hugging Face order (outermost first): GGUF's dimensions reversed.
    shape: Vec<usize>,
    kind: GgmlType,
    offset: u64,
    bytes: u64,
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    reader: BoxedReader,
    /// Metadata key/value pairs.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors by their GGUF names.
    tensors: BTreeMap<String, TensorInfo>,
    data_start: u64,
}

/// Reads little-endian primitives with errors naming the file.
struct Cursor<'a, R> {
    reader: &'a mut R,
    path: &'a Path,
}

impl<R: Read> Cursor<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|_| Error::BadFile {
                path: self.path.to_path_buf(),
                reason: "truncated GGUF header".into(),
            })?;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn len(&mut self, what: &str) -> Result<u64> {
        let n = self.u64()?;
        if n > MAX_LEN {
            return Err(self.bad(format!("{what} length {n} is implausible")));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len("string")?;
        let mut buf = Vec::new();
        self.reader
            .by_ref()
            .take(n)
            .read_to_end(&mut buf)
            .map_err(|e| self.bad(e.to_string()))?;
        if buf.len() as u64 != n {
            return Err(self.bad("truncated GGUF header".into()));
        }
        String::from_utf8(buf).map_err(|_| self.bad("a string is not UTF-8".into()))
    }
    fn bad(&self, reason: String) -> Error {
        Error::BadFile {
            path: self.path.to_path_buf(),
            reason,
        }
    }
    fn value(&mut self, kind: u32) -> Result<Value> {
        Ok(match kind {
            0 => Value::Int(i64::from(self.bytes::<1>()?[0])),
            1 => Value::Int(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => Value::Int(i64::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::Int(i64::from(self.u32()?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Value::Int(i64::from(self.bytes::<1>()?[0] != 0)),
            8 => Value::Str(self.string()?),
            9 => {
                let inner = self.u32()?;
                let n = self.len("array")?;
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(inner)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.bad(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens a GGUF file and reads its metadata and tensor directory.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(Box::new(BufReader::new(file)), path)
    }

    /// Reads the metadata and tensor directory of a GGUF stream; `path` names it in errors.
    pub fn from_reader(mut reader: BoxedReader, path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_len = reader.seek(SeekFrom::End(0)).map_err(io)?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut c = Cursor {
            reader: &mut reader,
            path,
        };
        if &c.bytes::<4>()? != b"GGUF" {
            return Err(c.bad("bad magic: not a GGUF file".into()));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.bad(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = c.len("tensor count")?;
        let n_kv = c.len("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let kind = c.u32()?;
            metadata.insert(key, c.value(kind)?);
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.bad(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::new();
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let type_id = c.u32()?;
            let kind = GgmlType::from_id(type_id).ok_or_else(|| {
                c.bad(format!(
                    "tensor `{name}` has GGML type {type_id}, which is not supported \
                     (F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K are)"
                ))
            })?;
            let offset = c.u64()?;
            infos.push((name, dims, kind, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            Some(Value::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() => *a as u64,
            None => 32,
            Some(other) => return Err(c.bad(format!("general.alignment {other:?} is invalid"))),
        };
        let here = reader.stream_position().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let data_start = here
            .div_ceil(alignment)
            .checked_mul(alignment)
            .ok_or_else(|| Error::BadFile {
                path: path.to_path_buf(),
                reason: format!("general.alignment {alignment} is invalid"),
            })?;
        let mut tensors = BTreeMap::new();
        for (name, dims, kind, offset) in infos {
            let bad = |reason: String| Error::BadFile {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {reason}"),
            };
            let numel = super::element_count(dims.iter().copied())
                .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
            let (per_block, block_bytes) = kind.block();
            if numel % per_block as u64 != 0 {
                return Err(bad(format!("{numel} values are not whole {kind:?} blocks")));
            }
            let bytes = (numel / per_block as u64)
                .checked_mul(block_bytes as u64)
                .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
            let end = data_start
                .checked_add(offset)
                .and_then(|s| s.checked_add(bytes));
            if end.is_none_or(|e| e > file_len) {
                return Err(bad(format!(
                    "data at offset {offset} ({bytes} bytes) runs past the end of the file"
                )));
            }
            let shape = dims.iter().rev().map(|&d| d as usize).collect();
            tensors.insert(
                name,
                TensorInfo {
                    shape,
                    kind,
                    offset,
                    bytes,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            metadata,
            tensors,
            data_start,
        })
    }

    fn meta_int(&self, key: &str) -> Result<i64> {
        match self.metadata.get(key) {
            Some(Value::Int(v)) => Ok(*v),
            Some(other) => Err(self.bad(format!(
                "metadata `{key}` is {other:?}, expected an integer"
            ))),
            None => Err(self.bad(format!("metadata `{key}` is missing"))),
        }
    }

    fn meta_float(&self, key: &str) -> Option<f64> {
        match self.metadata.get(key) {
            Some(Value::Float(v)) => Some(*v),
            Some(Value::Int(v)) => Some(*v as f64),
            _ => None,
        }
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadFile {
            path: self.path.clone(),
            reason,
        }
    }

    /// The architecture named by `general.architecture`.
    fn architecture(&self) -> Result<Architecture> {
        match self.metadata.get("general.architecture") {
            Some(Value::Str(a)) => Architecture::from_name(a).ok_or_else(|| {
                self.bad(format!(
                    "general.architecture `{a}` is not supported (expected qwen2, qwen3 or llama)"
                ))
            }),
            other => Err(self.bad(format!(
                "general.architecture is {other:?}, expected a string"
            ))),
        }
    }

    /// The config described by the `{architecture}.*` metadata; the RoPE divisors of
    /// [`ROPE_DIVISORS`] where the file has them (Llama 3.1+).
    pub fn model_config(&mut self) -> Result<ModelConfig> {
        let architecture = self.architecture()?;
        let arch = architecture.name();
        let rope_scaling = match self.tensors.get(ROPE_DIVISORS) {
            Some(info) if info.kind == GgmlType::F32 => {
                let (_, bytes) = self.read_raw(ROPE_DIVISORS)?;
                let values = dequantize(&bytes, GgmlType::F32);
                Some(RopeScaling::Divisors(values))
            }
            Some(_) => return Err(self.bad(format!("`{ROPE_DIVISORS}` must be F32"))),
            None => None,
        };

        let size = |key: &str| -> Result<usize> {
            let v = self.meta_int(&format!("{arch}.{key}"))?;
            usize::try_from(v).map_err(|_| self.bad(format!("{arch}.{key} = {v} is negative")))
        };
        let vocab_size = self
            .tensors
            .get("token_embd.weight")
            .map(|t| t.shape[0])
            .ok_or_else(|| self.bad("missing tensor `token_embd.weight`".into()))?;
        let (hidden_size, heads) = (size("embedding_length")?, size("attention.head_count")?);
        let head_dim = match self
            .metadata
            .contains_key(&format!("{arch}.attention.key_length"))
        {
            true => size("attention.key_length")?,
            false => hidden_size / heads.max(1),
        };
        let has = |name: &str| self.tensors.contains_key(name);
        let config = ModelConfig {
            architecture,
            layout: architecture.layout(has("blk.0.attn_q.bias"), has("blk.0.ffn_gate.bias")),
            vocab_size,
            hidden_size,
            intermediate_size: size("feed_forward_length")?,
            num_hidden_layers: size("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: size("attention.head_count_kv")?,
            head_dim,
            max_position_embeddings: size("context_length")?,
            rms_norm_eps: self
                .meta_float(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6),
            rope_theta: self
                .meta_float(&format!("{arch}.rope.freq_base"))
                .unwrap_or(match architecture {
                    Architecture::Llama => 10000.0,
                    _ => 1e6,
                }),
            rope_scaling,
            tie_word_embeddings: !has("output.weight"),
            eos_token_ids: self
                .meta_int("tokenizer.ggml.eos_token_id")
                .ok()
                .and_then(|id| u32::try_from(id).ok())
                .into_iter()
                .collect(),
        };
        config.validate().map_err(|e| self.bad(e))?;
        Ok(config)
    }

    /// The chat template of `tokenizer.chat_template`, with the texts of the BOS and EOS tokens
    /// from the vocabulary; `None` when the file has none.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>> {
        let Some(Value::Str(source)) = self.metadata.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let token = |key: &str| {
            let tokens = match self.metadata.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens,
                _ => return String::new(),
            };
            let id = self
                .meta_int(key)
                .ok()
                .and_then(|id| usize::try_from(id).ok());
            match id.and_then(|id| tokens.get(id)) {
                Some(Value::Str(text)) => text.clone(),
                _ => String::new(),
            }
        };
        let (bos, eos) = (
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        );
        ChatTemplate::jinja(source.clone(), bos, eos, &self.path).map(Some)
    }

    /// The stored bytes of the tensor GGUF calls `name`.
    fn read_raw(&mut self, name: &str) -> Result<(TensorInfo, Vec<u8>)> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| self.bad(format!("no tensor `{name}`")))?
            .clone();
        let mut bytes = vec![0u8; info.bytes as usize];
        self.reader
            .seek(SeekFrom::Start(self.data_start + info.offset))
            .and_then(|_| self.reader.read_exact(&mut bytes))
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok((info, bytes))
    }
}

/// llama.cpp's tensor of per-frequency RoPE divisors (Llama 3.1+ GGUF files).
pub const ROPE_DIVISORS: &str = "rope_freqs.weight";

/// Whole-model tensors: GGUF name, Hugging Face name.
const FIXED_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-layer modules: GGUF name (after `blk.N.`), Hugging Face name (after `model.layers.N.`).
const LAYER_MODULES: [(&str, &str); 11] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Maps `name` from one naming scheme to the other: whole-model names by `fixed`, layer
/// tensors `{from_prefix}N.{module}.{param}` by `modules`; pairs are (from, to).
fn rename(
    name: &str,
    fixed: &[(&str, &str)],
    modules: &[(&str, &str)],
    (from_prefix, to_prefix): (&str, &str),
) -> Option<String> {
    if let Some((_, to)) = fixed.iter().find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let (layer, rest) = name.strip_prefix(from_prefix)?.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    let (_, to) = modules.iter().find(|(from, _)| *from == module)?;
    Some(format!("{to_prefix}{layer}.{to}.{param}"))
}

/// Maps a GGUF tensor name to its Hugging Face name (llama.cpp's naming, the same for Qwen2,
/// Qwen3 and Llama).
pub fn hf_name(gguf: &str) -> Option<String> {
    rename(
        gguf,
        &FIXED_NAMES,
        &LAYER_MODULES,
        ("blk.", "model.layers."),
    )
}

/// Maps a Hugging Face tensor name to its GGUF name ([`hf_name`] the other way).
pub fn gguf_name(hf: &str) -> Option<String> {
    let swap = |pairs: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        pairs.iter().map(|&(a, b)| (b, a)).collect()
    };
    let (fixed, modules) = (swap(&FIXED_NAMES), swap(&LAYER_MODULES));
    rename(hf, &fixed, &modules, ("model.layers.", "blk."))
}

/// A GGUF file seen as a [`TensorSource`] with Hugging Face names and Hugging Face row order.
pub struct GgufSource {
    file: GgufFile,
    /// HF name → GGUF name.
    names: BTreeMap<String, String>,
    /// Query and key-value heads of a Llama file, whose q/k rows llama.cpp interleaves.
    llama_heads: Option<(usize, usize)>,
}

impl GgufSource {
    /// Wraps an open file; tensors with names outside llama.cpp's scheme keep their GGUF names
    /// (and are then reported as unexpected by the loader).
    pub fn new(file: GgufFile) -> Self {
        let names = file
            .tensors
            .keys()
            .map(|g| (hf_name(g).unwrap_or_else(|| g.clone()), g.clone()))
            .collect();
        let heads = |key: &str| {
            file.meta_int(key)
                .ok()
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
        };
        let llama_heads = match file.architecture() {
            Ok(Architecture::Llama) => {
                heads("llama.attention.head_count").zip(heads("llama.attention.head_count_kv"))
            }
            _ => None,
        };
        Self {
            file,
            names,
            llama_heads,
        }
    }

    /// The stored bytes of `name`, rows in Hugging Face order.
    fn bytes_of(&mut self, name: &str) -> Result<(TensorInfo, Vec<u8>)> {
        let gguf = self
            .names
            .get(name)
            .ok_or_else(|| self.file.bad(format!("no tensor `{name}`")))?
            .clone();
        let (info, bytes) = self.file.read_raw(&gguf)?;
        let heads = match (self.llama_heads, name.rsplit('.').nth(1)) {
            (Some((q, _)), Some("q_proj")) => q,
            (Some((_, kv)), Some("k_proj")) => kv,
            _ => return Ok((info, bytes)),
        };
        let bytes = unpermute_rows(&bytes, info.shape[0], heads).ok_or_else(|| {
            self.file
                .bad(format!("`{gguf}` does not split into {heads} heads"))
        })?;
        Ok((info, bytes))
    }
}

/// Undoes llama.cpp's interleaving of each head's rows (`convert_hf_to_gguf.py` permutes the
/// Llama q/k projections so that its RoPE rotates neighbouring pairs): GGUF row `2i + j` of a
/// head is Hugging Face row `j·d/2 + i`. Rows are whole runs of `data` (bytes: quantised
/// blocks move as they are). `None` when `rows` does not split into `heads` heads of even
/// width.
fn unpermute_rows<T: Copy>(data: &[T], rows: usize, heads: usize) -> Option<Vec<T>> {
    move_rows(data, rows, heads, false)
}

/// llama.cpp's interleaving of each head's rows of a Llama q/k projection (weight or bias,
/// `data` row-major with `rows` rows): [`unpermute_rows`] the other way, for writing GGUF.
pub fn permute_rows<T: Copy>(data: &[T], rows: usize, heads: usize) -> Option<Vec<T>> {
    move_rows(data, rows, heads, true)
}

/// Rows of each head between Hugging Face order (`j·d/2 + i`) and GGUF order (`2i + j`):
/// `to_gguf` picks which way.
fn move_rows<T: Copy>(data: &[T], rows: usize, heads: usize, to_gguf: bool) -> Option<Vec<T>> {
    let head = rows.checked_div(heads)?;
    if rows == 0 || !rows.is_multiple_of(heads) || !head.is_multiple_of(2) {
        return None;
    }
    let row = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for k in 0..head {
            // Output row k of the head comes from `from` in the input's order.
            let from = if to_gguf {
                (k % 2) * head / 2 + k / 2
            } else {
                (k % (head / 2)) * 2 + k / (head / 2)
            };
            let at = (h * head + from) * row;
            out.extend_from_slice(&data[at..at + row]);
        }
    }
    Some(out)
}

impl TensorSource for GgufSource {
    fn names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let gguf = self.names.get(name)?;
        self.file.tensors.get(gguf).map(|t| t.shape.clone())
    }

    fn read(&mut self, name: &str) -> Result<HostTensor> {
        let (info, bytes) = self.bytes_of(name)?;
        Ok(HostTensor {
            shape: info.shape,
            values: dequantize(&bytes, info.kind),
        })
    }

    fn read_blocks(&mut self, name: &str) -> Result<Option<BlockTensor>> {
        if self.block_kind(name).is_none() {
            return Ok(None);
        }
        let (info, bytes) = self.bytes_of(name)?;
        Ok(Some(BlockTensor {
            shape: info.shape,
            kind: info.kind,
            bytes,
        }))
    }

    fn block_kind(&self, name: &str) -> Option<GgmlType> {
        self.names
            .get(name)
            .and_then(|g| self.file.tensors.get(g))
            .map(|info| info.kind)
            .filter(|&kind| kind != GgmlType::F32)
    }

    fn origin(&self, _name: &str) -> PathBuf {
        self.file.path.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_llama_cpp_names() {
        assert_eq!(
            hf_name("blk.3.attn_q.bias").unwrap(),
            "model.layers.3.self_attn.q_proj.bias"
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").unwrap(),
            "model.layers.0.mlp.down_proj.weight"
        );
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        for gguf in [
            "blk.3.attn_q.bias",
            "blk.12.ffn_norm.weight",
            "token_embd.weight",
        ] {
            assert_eq!(gguf_name(&hf_name(gguf).unwrap()).as_deref(), Some(gguf));
        }
        assert_eq!(gguf_name("model.layers.0.mlp.nope.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(
            hf_name("blk.1.attn_k_norm.weight").unwrap(),
            "model.layers.1.self_attn.k_norm.weight"
        );
    }

    #[test]
    fn llama_rows_go_back_to_hugging_face_order() {
        // Two heads of width 4, one byte per row: GGUF holds each head as (0, 2, 1, 3).
        let gguf = [0, 2, 1, 3, 4, 6, 5, 7];
        assert_eq!(
            unpermute_rows(&gguf, 8, 2).unwrap(),
            [0, 1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(unpermute_rows(&gguf, 8, 3), None);
        let hf: Vec<u32> = (0..24).collect();
        assert_eq!(
            unpermute_rows(&permute_rows(&hf, 12, 3).unwrap(), 12, 3).unwrap(),
            hf
        );
        assert_ne!(permute_rows(&hf, 12, 3).unwrap(), hf);
    }
}
