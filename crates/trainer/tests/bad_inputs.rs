//! Every case of the bad-input corpus (`tests/bad_inputs/cases.json`, made by
//! `make_bad_inputs.py` there) runs through the real binary: it must exit non-zero with a
//! message that names the file and the problem, and must not panic.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    args: Vec<String>,
    expect: String,
    why: String,
}

#[test]
fn every_bad_input_is_a_clear_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("tests/bad_inputs");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 20, "the corpus lost cases");
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| {
                let a = a
                    .replace("{dir}", dir.to_str().unwrap())
                    .replace("{root}", root.to_str().unwrap());
                match a.strip_prefix('@') {
                    Some(file) => std::fs::read_to_string(file).unwrap(),
                    None => a,
                }
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let names_file = args
            .iter()
            .filter(|a| a.contains("bad_inputs") && !a.starts_with('@'))
            .all(|a| {
                let file = Path::new(a).file_name().unwrap().to_string_lossy();
                stderr.contains(file.as_ref())
            });
        let problems = [
            (out.status.success(), "exited 0"),
            (out.status.code() == Some(101), "exit code 101 (a panic)"),
            (stderr.contains("panicked"), "panicked"),
            (
                !stderr.contains(&case.expect),
                "message lacks the expected words",
            ),
            (!names_file, "message does not name the file"),
        ];
        for (bad, what) in problems {
            if bad {
                failures.push(format!(
                    "{} ({}): {what}; expected `{}`; stderr: {}",
                    case.name,
                    case.why,
                    case.expect,
                    stderr.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
