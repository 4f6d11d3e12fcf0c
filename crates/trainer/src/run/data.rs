//! Loading GSM8K problems from JSONL or parquet (the Hugging Face hub's format: columns
//! `question` and `answer`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use tinylora::gsm8k::{BadLines, Problem, load_jsonl};

/// Reads problems from `path` (`.parquet`, otherwise JSONL); returns them with the number of
/// skipped malformed records.
pub fn load_problems(path: &Path, bad_lines: BadLines) -> Result<(Vec<Problem>, usize)> {
    let parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let (problems, skipped) = if parquet {
        load_parquet(path, bad_lines)?
    } else {
        load_jsonl(path, bad_lines)?
    };
    if problems.is_empty() {
        bail!("{}: no GSM8K problems in it", path.display());
    }
    Ok((problems, skipped))
}

fn load_parquet(path: &Path, bad_lines: BadLines) -> Result<(Vec<Problem>, usize)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a readable parquet file", path.display()))?;
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: reading rows", path.display()))?;
    let (mut problems, mut skipped) = (Vec::new(), 0);
    for (i, row) in rows.enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 1))?;
        let text = |name: &str| {
            row.get_column_iter().find_map(|(n, f)| match f {
                Field::Str(s) if n == name => Some(s.clone()),
                _ => None,
            })
        };
        let parsed = match (text("question"), text("answer")) {
            (Some(q), Some(a)) => Problem::from_record(q, a),
            _ => Err("no string columns `question` and `answer`".to_string()),
        };
        match (parsed, bad_lines) {
            (Ok(p), _) => problems.push(p),
            (Err(_), BadLines::Skip) => skipped += 1,
            (Err(reason), BadLines::Fatal) => bail!("{}: row {}: {reason}", path.display(), i + 1),
        }
    }
    Ok((problems, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/gsm8k")
            .join(name)
    }

    #[test]
    fn parquet_reads_like_jsonl() {
        let (from_parquet, skipped) =
            load_problems(&fixture("mini.parquet"), BadLines::Fatal).unwrap();
        assert_eq!(skipped, 0);
        let jsonl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/gsm8k/test.jsonl");
        let (from_jsonl, _) = load_problems(&jsonl, BadLines::Fatal).unwrap();
        assert_eq!(from_parquet, from_jsonl[..5]);
    }

    #[test]
    fn bad_parquet_rows_are_named_or_skipped() {
        let path = fixture("no_answer.parquet");
        let err = load_problems(&path, BadLines::Fatal)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("no_answer.parquet: row 2: the answer has no `#### <number>`"),
            "{err}"
        );
        let (problems, skipped) = load_problems(&path, BadLines::Skip).unwrap();
        assert_eq!((problems.len(), skipped), (1, 1));
        let not_parquet = fixture("../qwen2/tied_f32_hub/config.json");
        let copy = std::env::temp_dir().join("tinylora-not-parquet.parquet");
        std::fs::copy(&not_parquet, &copy).unwrap();
        let err = format!("{:#}", load_problems(&copy, BadLines::Fatal).unwrap_err());
        assert!(err.contains("not a readable parquet file"), "{err}");
    }
}
