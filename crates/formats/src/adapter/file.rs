//! The adapter file users share: JSON on disk, and a compact text form (`tl1.` + base64url of a
//! small binary record) that fits in a URL fragment.
//!
//! Either form carries the config, the seed, `v`, a fingerprint of the base model's adapted
//! weights and a hash of the frozen basis, so that applying an adapter to another base model, or
//! to a basis that recomputed differently, is a clear error rather than a silent wrong answer.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{ALL_TARGETS, Convention, TinyLoraConfig};
use super::tying::Tying;
use crate::{Error, Result, hex};

/// The value of the `format` field.
pub const FORMAT: &str = "tinylora-adapter";
/// The newest file version this build reads and the one it writes.
pub const VERSION: u32 = 1;
/// Prefix of the compact text form.
pub const COMPACT_PREFIX: &str = "tl1.";

/// An adapter as stored: everything needed to rebuild it on the right base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// File version ([`VERSION`]).
    pub version: u32,
    /// Shape, targets, tying, convention and seed.
    pub config: TinyLoraConfig,
    /// SHA-256 (hex) of the base model's adapted weights (a 16-hex-digit prefix in compact form).
    pub base_fingerprint: String,
    /// SHA-256 (hex) of the frozen basis (a 16-hex-digit prefix in compact form).
    pub basis_hash: String,
    /// `u × groups`, as the paper counts.
    pub trainable_parameters: usize,
    /// The trained vectors, one per tie group.
    pub v: Vec<Vec<f32>>,
}

/// A [`Error::BadFile`] for the adapter read from `origin`.
pub fn bad(origin: &Path, reason: impl Into<String>) -> Error {
    Error::BadFile {
        path: origin.to_path_buf(),
        reason: reason.into(),
    }
}

impl AdapterFile {
    /// Describes an adapter of `config` with trained vectors `v` (one per tie group), on a
    /// base model with the given fingerprint and a basis with the given hash.
    pub fn new(
        config: TinyLoraConfig,
        base_fingerprint: String,
        basis_hash: String,
        v: Vec<Vec<f32>>,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            trainable_parameters: v.len() * config.u,
            config,
            base_fingerprint,
            basis_hash,
            v,
        }
    }

    /// Checks the fields that the type system does not: format, version, finite `v`, lengths.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        if self.format != FORMAT {
            return Err(bad(
                origin,
                format!("format is `{}`, expected `{FORMAT}`", self.format),
            ));
        }
        if self.version == 0 || self.version > VERSION {
            return Err(bad(
                origin,
                format!(
                    "adapter version {} is not supported (this build reads up to {VERSION})",
                    self.version
                ),
            ));
        }
        self.config
            .validate()
            .map_err(|e| bad(origin, e.to_string()))?;
        for (field, hash) in [
            ("base_fingerprint", &self.base_fingerprint),
            ("basis_hash", &self.basis_hash),
        ] {
            if hash.len() < 16 || hex::decode(hash).is_none() {
                return Err(bad(
                    origin,
                    format!("{field} must be at least 16 hex digits, got {hash:?}"),
                ));
            }
        }
        if self.v.is_empty()
            || self.v.len() > 65535
            || self.v.iter().any(|v| v.len() != self.config.u)
        {
            return Err(bad(
                origin,
                format!(
                    "v must be a list of 1 to 65535 vectors of length u = {}",
                    self.config.u
                ),
            ));
        }
        if self.v.iter().flatten().any(|x| !x.is_finite()) {
            return Err(bad(origin, "v contains NaN or infinite values"));
        }
        if self.trainable_parameters != self.v.len() * self.config.u {
            return Err(bad(origin, "trainable_parameters does not match v"));
        }
        Ok(())
    }

    /// Parses and validates JSON; `origin` names the source in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let file: Self = serde_json::from_str(text)
            .map_err(|e| bad(origin, format!("not a tinylora adapter: {e}")))?;
        file.validate(origin)?;
        Ok(file)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("JSON of plain values")
    }

    /// Reads a `.json` adapter file, or a text file holding the compact form.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::fsutil::read_text(path)?;
        Self::from_text(&text, path)
    }

    /// An adapter in either form, told apart by the compact prefix; `origin` names it in errors.
    pub fn from_text(text: &str, origin: &Path) -> Result<Self> {
        let trimmed = text.trim();
        if trimmed.starts_with(COMPACT_PREFIX) {
            Self::from_compact(trimmed, origin)
        } else {
            Self::from_json(text, origin)
        }
    }

    /// Writes the JSON form atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_json().as_bytes())
    }

    /// The compact text form: `tl1.` + base64url (no padding) of the binary record.
    pub fn to_compact(&self) -> String {
        let c = &self.config;
        let mut out = b"TL".to_vec();
        out.push(VERSION as u8);
        out.push(c.r as u8);
        out.extend((c.u as u16).to_le_bytes());
        out.extend((self.v.len() as u16).to_le_bytes());
        let mask = ALL_TARGETS
            .iter()
            .enumerate()
            .filter(|(_, t)| c.targets.iter().any(|x| x == *t))
            .fold(0u8, |m, (i, _)| m | (1 << i));
        out.push(mask);
        match c.tying {
            Tying::None => out.push(0),
            Tying::Ratio { weight_tying } => {
                out.push(1);
                out.extend(weight_tying.to_le_bytes());
            }
            Tying::Tiled { n_tie } => {
                out.push(2);
                out.extend((n_tie as u32).to_le_bytes());
            }
            Tying::Structured { n_tie } => {
                out.push(3);
                out.extend((n_tie as u32).to_le_bytes());
            }
        }
        match c.convention {
            Convention::Peft => out.push(0),
            Convention::Verl { alpha } => {
                out.push(1);
                out.extend(alpha.to_le_bytes());
            }
        }
        out.extend(c.seed.to_le_bytes());
        for hash in [&self.base_fingerprint, &self.basis_hash] {
            out.extend(hex::decode(&hash[..16.min(hash.len())]).unwrap_or_default());
        }
        for x in self.v.iter().flatten() {
            out.extend(x.to_le_bytes());
        }
        let check = Sha256::digest(&out);
        out.extend(&check[..4]);
        format!("{COMPACT_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Parses the compact form; `origin` names the source in errors.
    pub fn from_compact(text: &str, origin: &Path) -> Result<Self> {
        let body = text.trim().strip_prefix(COMPACT_PREFIX).ok_or_else(|| {
            bad(
                origin,
                format!("compact adapter must start with `{COMPACT_PREFIX}`"),
            )
        })?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|e| {
            bad(
                origin,
                format!("compact adapter is not valid base64url: {e}"),
            )
        })?;
        if bytes.len() < 8 {
            return Err(bad(origin, "compact adapter is truncated"));
        }
        let (record, check) = bytes.split_at(bytes.len() - 4);
        // Under `cargo fuzz` the checksum is not checked, so that mutated records reach the
        // decoder behind it instead of all stopping here.
        if !cfg!(fuzzing) && Sha256::digest(record)[..4] != *check {
            return Err(bad(
                origin,
                "compact adapter is corrupted (checksum mismatch)",
            ));
        }
        let mut r = Reader {
            bytes: record,
            at: 0,
            origin,
        };
        if r.take(2)? != b"TL" {
            return Err(bad(origin, "not a compact tinylora adapter"));
        }
        let version = u32::from(u8::from_le_bytes(r.array()?));
        if version != VERSION {
            return Err(bad(
                origin,
                format!(
                    "adapter version {version} is not supported (this build reads up to {VERSION})"
                ),
            ));
        }
        let rank = usize::from(u8::from_le_bytes(r.array()?));
        let u = usize::from(u16::from_le_bytes(r.array()?));
        let groups = usize::from(u16::from_le_bytes(r.array()?));
        let mask = u8::from_le_bytes(r.array()?);
        let targets = ALL_TARGETS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, t)| t.to_string())
            .collect();
        let tying = match u8::from_le_bytes(r.array()?) {
            0 => Tying::None,
            1 => Tying::Ratio {
                weight_tying: f64::from_le_bytes(r.array()?),
            },
            2 => Tying::Tiled {
                n_tie: u32::from_le_bytes(r.array()?) as usize,
            },
            3 => Tying::Structured {
                n_tie: u32::from_le_bytes(r.array()?) as usize,
            },
            k => return Err(bad(origin, format!("unknown tying kind {k}"))),
        };
        let convention = match u8::from_le_bytes(r.array()?) {
            0 => Convention::Peft,
            1 => Convention::Verl {
                alpha: f64::from_le_bytes(r.array()?),
            },
            k => return Err(bad(origin, format!("unknown convention {k}"))),
        };
        let seed = u64::from_le_bytes(r.array()?);
        let base_fingerprint = hex::encode(r.take(8)?);
        let basis_hash = hex::encode(r.take(8)?);
        let mut v = Vec::with_capacity(groups);
        for _ in 0..groups {
            let mut row = Vec::with_capacity(u);
            for _ in 0..u {
                row.push(f32::from_le_bytes(r.array()?));
            }
            v.push(row);
        }
        if r.at != record.len() {
            return Err(bad(origin, "compact adapter has trailing bytes"));
        }
        let file = Self {
            format: FORMAT.into(),
            version,
            config: TinyLoraConfig {
                r: rank,
                u,
                targets,
                tying,
                convention,
                seed,
            },
            base_fingerprint,
            basis_hash,
            trainable_parameters: groups * u,
            v,
        };
        file.validate(origin)?;
        Ok(file)
    }
}

/// Reads little-endian fields with "truncated" errors.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    origin: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at + n;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| bad(self.origin, "compact adapter is truncated"))?;
        self.at = end;
        Ok(slice)
    }
    /// The next `N` bytes as an array, for `from_le_bytes`.
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AdapterFile {
        AdapterFile {
            format: FORMAT.into(),
            version: VERSION,
            config: TinyLoraConfig::default(),
            base_fingerprint: "0123456789abcdef".repeat(4),
            basis_hash: "fedcba9876543210".repeat(4),
            trainable_parameters: 13,
            v: vec![(0..13).map(|i| i as f32 * 0.125 - 0.5).collect()],
        }
    }

    #[test]
    fn compact_form_round_trips_and_fits_a_url() {
        let file = sample();
        let text = file.to_compact();
        assert!(text.len() < 200, "{} characters", text.len());
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        let back = AdapterFile::from_compact(&text, Path::new("#adapter")).unwrap();
        assert_eq!(back.v, file.v);
        assert_eq!(back.config, file.config);
        assert_eq!(back.base_fingerprint, &file.base_fingerprint[..16]);
        assert_eq!(back.basis_hash, &file.basis_hash[..16]);
    }

    #[test]
    fn json_round_trips() {
        let file = sample();
        assert_eq!(
            AdapterFile::from_json(&file.to_json(), Path::new("a.json")).unwrap(),
            file
        );
    }

    #[test]
    fn bad_adapters_are_clear_errors() {
        let err = |r: Result<AdapterFile>| r.expect_err("rejected").to_string();
        let o = Path::new("a.json");
        let mut text = sample().to_compact();
        let flip = if text.ends_with('A') { 'B' } else { 'A' };
        text.pop();
        text.push(flip);
        assert!(err(AdapterFile::from_compact(&text, o)).contains("corrupted"));
        assert!(err(AdapterFile::from_compact("tl1.!!", o)).contains("base64url"));
        assert!(err(AdapterFile::from_compact("xyz", o)).contains("must start with"));
        let mut f = sample();
        f.version = 7;
        assert!(
            err(AdapterFile::from_json(&f.to_json(), o)).contains("version 7 is not supported")
        );
        let mut f = sample();
        f.v[0][3] = f32::NAN;
        assert!(err(AdapterFile::from_compact(&f.to_compact(), o)).contains("NaN"));
        let json = sample().to_json().replace("\"peft\"", "\"lora\"");
        assert!(
            err(AdapterFile::from_json(&json, o)).starts_with("a.json: not a tinylora adapter")
        );
    }
}
