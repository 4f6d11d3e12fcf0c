//! `metrics.jsonl`: one JSON object per training step (`"split": "train"`) and per evaluation
//! (`"split": "eval"`), each with its `step`, flushed as it is written so a crash loses at most
//! the line being written. On resume the records after the checkpoint's step are dropped, so
//! the file reads as one uninterrupted run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use tinylora::fsutil::write_atomic;

/// An open metrics file.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

/// Reads every record of a metrics file (lines that do not parse, such as a torn last line,
/// are left out).
pub fn read_records(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect())
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` for appending. With `resume_step`, records of later steps
    /// are removed first (atomically); without, an existing file is replaced.
    pub fn open(run_dir: &Path, resume_step: Option<usize>) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let kept: Vec<Value> = match resume_step {
            Some(step) if path.exists() => read_records(&path)?
                .into_iter()
                .filter(|r| r["step"].as_u64().is_some_and(|s| s as usize <= step))
                .collect(),
            _ => Vec::new(),
        };
        let text: String = kept.iter().map(|r| format!("{r}\n")).collect();
        write_atomic(&path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path, file })
    }

    /// Appends one record as a single write of the whole line (a reader polling the file
    /// never sees half of it, as it could when `Display` wrote piece by piece) and flushes it.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        self.file
            .write_all(format!("{record}\n").as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_drops_later_records_and_appends() {
        let dir = std::env::temp_dir().join(format!("tinylora-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = MetricsLog::open(&dir, None).unwrap();
        for step in 1..=4 {
            log.write(&json!({"split": "train", "step": step})).unwrap();
        }
        log.write(&json!({"split": "eval", "step": 4})).unwrap();
        drop(log);
        let mut log = MetricsLog::open(&dir, Some(2)).unwrap();
        log.write(&json!({"split": "train", "step": 3, "again": true}))
            .unwrap();
        let steps: Vec<(u64, bool)> = read_records(&dir.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["step"].as_u64().unwrap(),
                    r["again"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(steps, vec![(1, false), (2, false), (3, true)]);
        drop(log);
        assert!(read_records(&dir.join("metrics.jsonl")).unwrap().len() == 3);
        MetricsLog::open(&dir, None).unwrap();
        assert!(read_records(&dir.join("metrics.jsonl")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
