//! Loading GSM8K problems from JSONL or parquet (the Hugging Face hub's format: columns
//! `question` and `answer`), and the order in which training visits them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use tinylora::gsm8k::{BadLines, Problem, load_jsonl};
use tinylora::rng::SplitMix64;

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

/// The problem indices of one epoch: `0..n` in order, or shuffled by a Fisher–Yates pass seeded
/// by `(seed, epoch)` so that any epoch's order can be rebuilt on resume.
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// The items of step `step` when each epoch visits `n` items in `per_step`-sized batches (the
/// last partial batch dropped) in [`epoch_order`].
pub fn step_batch(n: usize, per_step: usize, step: usize, seed: u64, shuffle: bool) -> Vec<usize> {
    let per_epoch = (n / per_step.max(1)).max(1);
    let order = epoch_order(n, seed, step / per_epoch, shuffle);
    let start = (step % per_epoch) * per_step;
    order[start..start + per_step].to_vec()
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

    #[test]
    fn shuffled_epochs_are_permutations_that_differ() {
        assert_eq!(epoch_order(5, 1, 0, false), vec![0, 1, 2, 3, 4]);
        let a = epoch_order(50, 7, 0, true);
        let b = epoch_order(50, 7, 1, true);
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, 7, 0, true));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        // 10 items in batches of 3: steps 0..3 cover 9 of them, step 3 starts the next epoch.
        assert_eq!(step_batch(10, 3, 1, 7, false), vec![3, 4, 5]);
        assert_eq!(step_batch(10, 3, 3, 7, false), vec![0, 1, 2]);
        assert_eq!(
            step_batch(10, 3, 3, 7, true),
            epoch_order(10, 7, 1, true)[..3]
        );
    }
}
