//! Writing GGUF v3 files (metadata and f32 tensors), as llama.cpp reads them: what
//! `trainer export --llama-server` produces (a base model and one LoRA per trainable float).

use std::path::Path;

use crate::Result;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    Str(String),
    /// `ARRAY` of `STRING`.
    Strs(Vec<String>),
    /// `ARRAY` of `INT32`.
    I32s(Vec<i32>),
}

/// The alignment of tensor data (GGUF's default, `general.alignment` absent).
const ALIGNMENT: usize = 32;

/// A GGUF file being assembled: metadata in order, then f32 tensors.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Meta)>,
    /// Name, row-major shape (outermost first), values.
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the metadata `key = value`.
    pub fn meta(&mut self, key: &str, value: Meta) {
        self.metadata.push((key.to_string(), value));
    }

    /// Adds an f32 tensor of row-major `shape` (outermost first, as in safetensors; GGUF stores
    /// the dimensions innermost first).
    pub fn tensor(&mut self, name: &str, shape: &[usize], values: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        self.tensors
            .push((name.to_string(), shape.to_vec(), values));
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            string(&mut out, key);
            let (kind, body): (u32, Vec<u8>) = match value {
                Meta::U32(x) => (4, x.to_le_bytes().to_vec()),
                Meta::I32(x) => (5, x.to_le_bytes().to_vec()),
                Meta::F32(x) => (6, x.to_le_bytes().to_vec()),
                Meta::Bool(x) => (7, vec![u8::from(*x)]),
                Meta::Str(s) => {
                    let mut b = Vec::new();
                    string(&mut b, s);
                    (8, b)
                }
                Meta::Strs(items) => {
                    let mut b = 8u32.to_le_bytes().to_vec();
                    b.extend((items.len() as u64).to_le_bytes());
                    items.iter().for_each(|s| string(&mut b, s));
                    (9, b)
                }
                Meta::I32s(items) => {
                    let mut b = 5u32.to_le_bytes().to_vec();
                    b.extend((items.len() as u64).to_le_bytes());
                    items.iter().for_each(|x| b.extend(x.to_le_bytes()));
                    (9, b)
                }
            };
            out.extend(kind.to_le_bytes());
            out.extend(body);
        }
        let mut offset = 0usize;
        for (name, shape, values) in &self.tensors {
            string(&mut out, name);
            out.extend((shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend((d as u64).to_le_bytes());
            }
            out.extend(0u32.to_le_bytes()); // F32
            out.extend((offset as u64).to_le_bytes());
            offset += (values.len() * 4).next_multiple_of(ALIGNMENT);
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        for (_, _, values) in &self.tensors {
            values.iter().for_each(|x| out.extend(x.to_le_bytes()));
            out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        }
        out
    }

    /// Writes the file at `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::TensorSource;
    use crate::weights::gguf::{GgufFile, GgufSource, Value};

    #[test]
    fn what_is_written_reads_back() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Meta::Str("qwen2".into()));
        w.meta("general.type", Meta::Str("adapter".into()));
        w.meta("adapter.lora.alpha", Meta::F32(2.0));
        w.meta("x.count", Meta::U32(7));
        w.meta("x.flag", Meta::Bool(true));
        w.meta("x.words", Meta::Strs(vec!["a".into(), "bé".into()]));
        w.meta("x.kinds", Meta::I32s(vec![1, 3, -2]));
        let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 2.0).collect();
        w.tensor("blk.0.attn_q.weight", &[3, 5], values.clone());
        w.tensor("output_norm.weight", &[5], vec![1.0; 5]);
        let dir = std::env::temp_dir().join(format!("gguf-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        w.write(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(
            file.metadata.get("x.words"),
            Some(&Value::Array(vec![
                Value::Str("a".into()),
                Value::Str("bé".into())
            ]))
        );
        assert_eq!(file.metadata.get("x.count"), Some(&Value::Int(7)));
        assert_eq!(
            file.metadata.get("adapter.lora.alpha"),
            Some(&Value::Float(2.0))
        );
        let mut source = GgufSource::new(file);
        let q = source
            .read("model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!((q.shape, q.values), (vec![3, 5], values));
        assert_eq!(
            source.read("model.norm.weight").unwrap().values,
            vec![1.0; 5]
        );
    }
}
