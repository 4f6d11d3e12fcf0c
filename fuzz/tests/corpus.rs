//! Replays every committed fuzz input (`corpus/TARGET/`, and `regressions/TARGET/`: inputs that
//! once crashed a target, kept after the fix) through the same checks `cargo fuzz` runs, without
//! instrumentation. Names the file that panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn committed_inputs_pass_every_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for (target, check) in tinylora_fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(
            corpus.len() >= 3,
            "corpus/{target} has {} inputs; the seeds are missing",
            corpus.len()
        );
        for file in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(target)))
        {
            let data = std::fs::read(file).unwrap();
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "panicked on {failures:?}");
}
