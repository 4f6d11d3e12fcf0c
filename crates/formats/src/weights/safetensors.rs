//! Hugging Face safetensors: an 8-byte little-endian header length, a JSON header mapping
//! names to `{dtype, shape, data_offsets}`, then the raw data. F32, F16 and BF16 are read.
//! Sharded checkpoints are described by `model.safetensors.index.json`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::dequant::GgmlType;
use super::{BlockTensor, BoxedReader, HostTensor, TensorSource};
use crate::{Error, Result};

/// Headers larger than this are refused (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Element types this reader converts to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl std::str::FromStr for Dtype {
    type Err = String;

    /// `f32`, `f16` or `bf16` (any case).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            "bf16" => Ok(Dtype::BF16),
            _ => Err(format!("unknown dtype `{s}`: use f32, bf16 or f16")),
        }
    }
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    /// The name the header gives the type.
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    /// `v` in this type (rounded to nearest, ties to even), little-endian.
    fn encode(self, v: f32, out: &mut Vec<u8>) {
        match self {
            Dtype::F32 => out.extend(v.to_le_bytes()),
            Dtype::F16 => out.extend(half::f16::from_f32(v).to_le_bytes()),
            Dtype::BF16 => out.extend(half::bf16::from_f32(v).to_le_bytes()),
        }
    }

    /// The GGML type of the same 16-bit values (what [`TensorSource::read_blocks`] hands
    /// out); `None` for f32.
    fn half_kind(self) -> Option<GgmlType> {
        match self {
            Dtype::F32 => None,
            Dtype::F16 => Some(GgmlType::F16),
            Dtype::BF16 => Some(GgmlType::BF16),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// One safetensors file, open for reading tensor by tensor.
pub struct SafetensorsFile<R> {
    path: PathBuf,
    reader: R,
    data_start: u64,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

impl SafetensorsFile<File> {
    /// Opens a `.safetensors` file and validates its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(file, path)
    }
}

impl<R: Read + Seek> SafetensorsFile<R> {
    /// Reads and validates the header of a safetensors stream; `path` names it in errors.
    pub fn from_reader(mut reader: R, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_len = reader.seek(SeekFrom::End(0)).map_err(io)?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut len_bytes = [0u8; 8];
        reader.read_exact(&mut len_bytes).map_err(|_| {
            bad(format!(
                "truncated: {file_len} bytes, too short for a safetensors header"
            ))
        })?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || header_len > file_len - 8 {
            return Err(bad(format!(
                "header length {header_len} is larger than the file ({file_len} bytes) allows: truncated or not safetensors"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        reader.read_exact(&mut header).map_err(io)?;
        let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut entries = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, value) in json {
            if name == "__metadata__" {
                // The format says string to string; other values (some writers add them) are
                // not ours to judge and are skipped.
                if let serde_json::Value::Object(map) = value {
                    metadata = map
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                        .collect();
                }
                continue;
            }
            let raw: RawEntry = serde_json::from_value(value)
                .map_err(|e| bad(format!("tensor `{name}`: malformed header entry: {e}")))?;
            let dtype = match raw.dtype.as_str() {
                "F32" => Dtype::F32,
                "F16" => Dtype::F16,
                "BF16" => Dtype::BF16,
                other => {
                    return Err(bad(format!(
                        "tensor `{name}`: dtype {other} is not supported (F32, F16, BF16 are)"
                    )));
                }
            };
            let numel = super::element_count(raw.shape.iter().map(|&d| d as u64))
                .ok_or_else(|| bad(format!("tensor `{name}`: shape {:?} overflows", raw.shape)))?;
            let [start, end] = raw.data_offsets;
            let expected = numel.checked_mul(dtype.size() as u64);
            if start > end || end > data_len || expected != Some(end - start) {
                return Err(bad(format!(
                    "tensor `{name}`: data_offsets [{start}, {end}] do not fit shape {:?} {} in {data_len} data bytes",
                    raw.shape, raw.dtype
                )));
            }
            entries.insert(
                name,
                Entry {
                    dtype,
                    shape: raw.shape,
                    start,
                    end,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            data_start,
            entries,
            metadata,
        })
    }

    /// The header's `__metadata__` (string keys and values; empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The element type of `name`, if present.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// The entry of tensor `name` and its stored bytes.
    fn bytes_of(&mut self, name: &str) -> Result<(Entry, Vec<u8>)> {
        let entry = self
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| Error::BadFile {
                path: self.path.clone(),
                reason: format!("no tensor `{name}`"),
            })?;
        let mut bytes = vec![0u8; (entry.end - entry.start) as usize];
        self.reader
            .seek(SeekFrom::Start(self.data_start + entry.start))
            .and_then(|_| self.reader.read_exact(&mut bytes))
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok((entry, bytes))
    }
}

/// Converts little-endian bytes of `dtype` to f32.
pub fn convert_to_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

impl<R: Read + Seek> TensorSource for SafetensorsFile<R> {
    fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.entries.get(name).map(|e| e.shape.clone())
    }

    fn read(&mut self, name: &str) -> Result<HostTensor> {
        let (entry, bytes) = self.bytes_of(name)?;
        Ok(HostTensor {
            shape: entry.shape,
            values: convert_to_f32(&bytes, entry.dtype),
        })
    }

    fn read_blocks(&mut self, name: &str) -> Result<Option<BlockTensor>> {
        let Some(kind) = self.block_kind(name) else {
            return Ok(None);
        };
        let (entry, bytes) = self.bytes_of(name)?;
        Ok(Some(BlockTensor {
            shape: entry.shape,
            kind,
            bytes,
        }))
    }

    fn block_kind(&self, name: &str) -> Option<GgmlType> {
        self.entries.get(name)?.dtype.half_kind()
    }

    fn origin(&self, _name: &str) -> PathBuf {
        self.path.clone()
    }
}

/// A checkpoint split over several safetensors files (`model.safetensors.index.json`).
pub struct ShardedSafetensors {
    shards: Vec<SafetensorsFile<BoxedReader>>,
    by_name: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// Parses an index file's text (`index_path` names it in errors) into its tensor → shard map
/// and the sorted, distinct shard file names, which must be plain file names.
fn parse_index(text: &str, index_path: &Path) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let index: Index = serde_json::from_str(text).map_err(|e| Error::BadFile {
        path: index_path.to_path_buf(),
        reason: format!("not a safetensors index: {e}"),
    })?;
    let mut files: Vec<String> = index.weight_map.values().cloned().collect();
    files.sort();
    files.dedup();
    if let Some(file) = files
        .iter()
        .find(|f| f.contains('/') || f.contains('\\') || f.starts_with('.'))
    {
        return Err(Error::BadFile {
            path: index_path.to_path_buf(),
            reason: format!("shard name `{file}` must be a plain file name"),
        });
    }
    Ok((index.weight_map, files))
}

/// The shard file names an index lists (sorted, distinct), for callers that fetch them.
pub fn shard_names(index_text: &str, index_path: &Path) -> Result<Vec<String>> {
    Ok(parse_index(index_text, index_path)?.1)
}

impl ShardedSafetensors {
    /// Opens every shard named by the index file and checks that each listed tensor is there.
    pub fn open(index_path: &Path) -> Result<Self> {
        let text = crate::fsutil::read_text(index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        Self::from_index(&text, index_path, |file| {
            let path = dir.join(file);
            let reader = File::open(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Ok((Box::new(reader) as BoxedReader, path))
        })
    }

    /// Builds the checkpoint from the index text and `open_shard`, which gives each shard's
    /// reader and the path that names it in errors.
    pub fn from_index(
        index_text: &str,
        index_path: &Path,
        mut open_shard: impl FnMut(&str) -> Result<(BoxedReader, PathBuf)>,
    ) -> Result<Self> {
        let (weight_map, files) = parse_index(index_text, index_path)?;
        let mut shards = Vec::with_capacity(files.len());
        for file in &files {
            let (reader, path) = open_shard(file)?;
            shards.push(SafetensorsFile::from_reader(reader, &path)?);
        }
        let mut by_name = HashMap::new();
        for (name, file) in &weight_map {
            let shard = files
                .binary_search(file)
                .expect("file list built from the map");
            if shards[shard].shape(name).is_none() {
                return Err(Error::BadFile {
                    path: shards[shard].path.clone(),
                    reason: format!(
                        "tensor `{name}` listed in {} is missing",
                        index_path.display()
                    ),
                });
            }
            by_name.insert(name.clone(), shard);
        }
        Ok(Self { shards, by_name })
    }
}

impl TensorSource for ShardedSafetensors {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shards[*self.by_name.get(name)?].shape(name)
    }

    fn read_blocks(&mut self, name: &str) -> Result<Option<BlockTensor>> {
        match self.by_name.get(name) {
            Some(&shard) => self.shards[shard].read_blocks(name),
            None => Ok(None),
        }
    }

    fn block_kind(&self, name: &str) -> Option<GgmlType> {
        self.shards[*self.by_name.get(name)?].block_kind(name)
    }

    fn read(&mut self, name: &str) -> Result<HostTensor> {
        match self.by_name.get(name) {
            Some(&shard) => self.shards[shard].read(name),
            None => Err(Error::BadFile {
                path: self
                    .shards
                    .first()
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
                reason: format!("no tensor `{name}` in the sharded checkpoint"),
            }),
        }
    }

    fn origin(&self, name: &str) -> PathBuf {
        self.by_name
            .get(name)
            .map(|&s| self.shards[s].path.clone())
            .unwrap_or_default()
    }
}

/// Serialises f32 tensors `(name, shape, values)` as safetensors bytes (names sorted, as
/// Hugging Face writes them).
pub fn to_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    to_bytes_with_metadata(tensors, &BTreeMap::new())
}

/// [`to_bytes`] with a `__metadata__` entry in the header (omitted when `metadata` is empty).
pub fn to_bytes_with_metadata(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    to_bytes_as(tensors, metadata, Dtype::F32)
}

/// [`to_bytes_with_metadata`] with the values stored as `dtype` (rounded to nearest).
pub fn to_bytes_as(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
    dtype: Dtype,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Vec<usize>, Vec<f32>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for (name, shape, values) in &sorted {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}`: shape {shape:?} does not hold {} values",
                values.len()
            )));
        }
        let end = offset + dtype.size() * values.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&header).expect("JSON of plain values");
    // Pad the header with spaces so the data starts 8-byte aligned, as the format recommends.
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, values) in sorted {
        for &v in values {
            dtype.encode(v, &mut out);
        }
    }
    Ok(out)
}

/// Writes f32 tensors to a `.safetensors` file atomically (temporary file, then rename).
pub fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    write_as(path, tensors, Dtype::F32)
}

/// [`write`] with the values stored as `dtype` (rounded to nearest).
pub fn write_as(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: Dtype,
) -> Result<()> {
    let bytes = to_bytes_as(tensors, &BTreeMap::new(), dtype)?;
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a safetensors byte stream by hand.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn open(bytes: Vec<u8>) -> Result<SafetensorsFile<Cursor<Vec<u8>>>> {
        SafetensorsFile::from_reader(Cursor::new(bytes), Path::new("w.safetensors"))
    }

    #[test]
    fn writes_what_it_reads() {
        let tensors = vec![
            ("b".to_string(), vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]),
            ("a".to_string(), vec![3], vec![0.25, 0.5, 0.75]),
        ];
        let mut st = open(to_bytes(&tensors).unwrap()).unwrap();
        assert_eq!(st.names(), ["a", "b"]);
        assert_eq!(st.read("b").unwrap().values, tensors[0].2);
        assert_eq!(st.read("a").unwrap().shape, vec![3]);
        assert!(to_bytes(&[("x".into(), vec![2], vec![1.0])]).is_err());
        assert!(st.metadata().is_empty());
        let metadata = BTreeMap::from([("format".to_string(), "x".to_string())]);
        let st = open(to_bytes_with_metadata(&tensors, &metadata).unwrap()).unwrap();
        assert_eq!(st.metadata(), &metadata);
        assert_eq!(st.names(), ["a", "b"]);
    }

    /// 16-bit files hold the values rounded to nearest (ties to even), and hand out their
    /// stored bytes as F16/BF16 values; f32 tensors are not handed out as stored.
    #[test]
    fn writes_16_bit_values_and_hands_them_out_as_stored() {
        // 1 + 2⁻¹¹ is a tie for f16 (kept at 1: even), 1 + 3·2⁻¹¹ a tie rounded up to
        // 1 + 2⁻⁹ (even), the other two exact; 1 + 2⁻⁸ is a tie for bf16 (kept at 1),
        // 1 + 3·2⁻⁸ a tie rounded up to 1 + 2⁻⁶.
        let values = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
        ];
        let tensors = vec![("w".to_string(), vec![2, 2], values.to_vec())];
        for (dtype, kind, read) in [
            (
                Dtype::F16,
                GgmlType::F16,
                [
                    1.0,
                    1.0 + 2f32.powi(-9),
                    1.0 + 2f32.powi(-8),
                    1.0 + 3.0 * 2f32.powi(-8),
                ],
            ),
            (
                Dtype::BF16,
                GgmlType::BF16,
                [1.0, 1.0, 1.0, 1.0 + 2f32.powi(-6)],
            ),
        ] {
            let mut st = open(to_bytes_as(&tensors, &BTreeMap::new(), dtype).unwrap()).unwrap();
            assert_eq!(st.dtype("w"), Some(dtype));
            assert_eq!(st.read("w").unwrap().values, read, "{dtype:?}");
            assert_eq!(st.block_kind("w"), Some(kind));
            let stored = st.read_blocks("w").unwrap().unwrap();
            assert_eq!((stored.kind, stored.shape), (kind, vec![2, 2]));
            assert_eq!(
                crate::weights::dequant::dequantize(&stored.bytes, kind),
                read
            );
        }
        let mut st = open(to_bytes(&tensors).unwrap()).unwrap();
        assert_eq!(st.block_kind("w"), None);
        assert_eq!(st.read_blocks("w").unwrap(), None);
    }

    #[test]
    fn reads_each_dtype() {
        let mut data = Vec::new();
        data.extend(1.5f32.to_le_bytes());
        data.extend((-2.0f32).to_le_bytes());
        data.extend(half::f16::from_f32(0.25).to_le_bytes());
        data.extend(half::bf16::from_f32(-3.0).to_le_bytes());
        let header = r#"{"__metadata__":{"format":"pt"},
            "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
            "b":{"dtype":"F16","shape":[1,1],"data_offsets":[8,10]},
            "c":{"dtype":"BF16","shape":[1],"data_offsets":[10,12]}}"#;
        let mut st = open(file(header, &data)).unwrap();
        assert_eq!(st.names(), ["a", "b", "c"]);
        assert_eq!(st.read("a").unwrap().values, [1.5, -2.0]);
        assert_eq!(
            st.read("b").unwrap(),
            HostTensor {
                shape: vec![1, 1],
                values: vec![0.25]
            }
        );
        assert_eq!(st.read("c").unwrap().values, [-3.0]);
    }

    fn error(bytes: Vec<u8>) -> String {
        match open(bytes) {
            Ok(_) => panic!("accepted a bad file"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rejects_bad_files_with_a_reason() {
        assert!(error(vec![1, 2, 3]).contains("truncated"));
        assert!(error(file("{}", &[])[..6].to_vec()).contains("truncated"));
        let mut lying = file("{}", &[]);
        lying[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert!(error(lying).contains("header length 1000"));
        assert!(error(file("{not json", &[])).contains("not valid JSON"));
        let offsets = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
        assert!(error(file(offsets, &[0; 8])).contains("do not fit shape [4]"));
        let beyond = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(error(file(beyond, &[0; 4])).contains("data_offsets [0, 8]"));
        let huge =
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#;
        assert!(error(file(huge, &[0; 8])).contains("overflows"));
        let dtype = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        assert!(error(file(dtype, &[0; 8])).contains("dtype I64 is not supported"));
        let entry = r#"{"a":{"dtype":"F32"}}"#;
        assert!(error(file(entry, &[])).contains("tensor `a`: malformed header entry"));
    }
}
