//! The bundled GSM8K splits (assets/gsm8k, MIT, OpenAI) parse completely, and every reference
//! solution earns the strict reward against its own ground truth.

use std::path::Path;

use tinylora::gsm8k::{BadLines, load_jsonl, strict_reward};

#[test]
fn bundled_splits_parse_and_reference_solutions_score_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/gsm8k");
    for (split, count) in [("train.jsonl", 7473), ("test.jsonl", 1319)] {
        let (problems, skipped) = load_jsonl(&dir.join(split), BadLines::Fatal).unwrap();
        assert_eq!((problems.len(), skipped), (count, 0), "{split}");
        let failing: Vec<&str> = problems
            .iter()
            .filter(|p| strict_reward(&p.solution, &p.gold) != 1.0)
            .map(|p| p.question.as_str())
            .collect();
        assert!(
            failing.is_empty(),
            "{split}: {} solutions fail, e.g. {:?}",
            failing.len(),
            failing.first()
        );
    }
}
