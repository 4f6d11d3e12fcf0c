//! GSM8K: problems from JSONL, the prompt of the paper's runs, and the rewards as plain
//! functions (verl's `gsm8k.py` rules).
//!
//! ```
//! use tinylora_formats::gsm8k::{strict_reward, flexible_reward};
//! assert_eq!(strict_reward("... so she has 72 clips.\n#### 72", "72"), 1.0);
//! assert_eq!(strict_reward("#### 72.", "72"), 0.0); // exact string match
//! assert_eq!(flexible_reward("The answer is 1,000.", "1000"), 1.0);
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::chat::ChatTemplate;
use crate::{Error, Result};

/// Appended to every question, as in the authors' preprocessing (`examples/data_preprocess/gsm8k.py`).
pub const PROMPT_SUFFIX: &str =
    "Let's think step by step and output the final answer after \"####\".";

/// How many trailing characters of a response the strict rule looks at.
const STRICT_WINDOW: usize = 300;

/// One problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The question text.
    pub question: String,
    /// The reference solution (with the final `#### N`).
    pub solution: String,
    /// The ground truth: the number after the first `#### `, commas removed.
    pub gold: String,
}

impl Problem {
    /// A problem from a GSM8K record; the error says what is wrong with it.
    pub fn from_record(question: String, answer: String) -> std::result::Result<Self, String> {
        match parse_gold(&answer) {
            Some(gold) => Ok(Problem {
                question,
                solution: answer,
                gold,
            }),
            None => Err("the answer has no `#### <number>`".to_string()),
        }
    }
}

/// What to do with a JSONL line that is not a GSM8K record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLines {
    /// Stop with an error naming the line (the default).
    Fatal,
    /// Skip it and count it.
    Skip,
}

#[derive(Deserialize)]
struct Record {
    question: String,
    answer: String,
}

/// The first `#### <number>` of `text` (verl's `#### (\-?[0-9\.\,]+)`); `last` picks the last
/// match instead of the first.
fn hash_number(text: &str, last: bool) -> Option<String> {
    let mut found = None;
    let mut rest = text;
    while let Some(at) = rest.find("#### ") {
        let after = &rest[at + 5..];
        let number = leading_number(after);
        if !number.is_empty() {
            found = Some(number.to_string());
            if !last {
                return found;
            }
        }
        rest = &rest[at + 5..];
    }
    found
}

/// The longest prefix matching `\-?[0-9\.\,]+` (empty if none).
fn leading_number(s: &str) -> &str {
    let body_start = usize::from(s.starts_with('-'));
    let body = s[body_start..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(s.len() - body_start);
    if body == 0 {
        ""
    } else {
        &s[..body_start + body]
    }
}

fn normalise(answer: &str) -> String {
    answer.replace([',', '$'], "")
}

/// The ground truth of a reference solution: the first `#### N`, commas removed.
pub fn parse_gold(solution: &str) -> Option<String> {
    hash_number(solution, false).map(|n| normalise(&n))
}

/// The gold answer of a text a person gave: a reference solution's first `#### N`, else the
/// text itself as a number, normalised as the rules normalise (`,` and `$` removed).
pub fn gold_of(text: &str) -> String {
    parse_gold(text).unwrap_or_else(|| normalise(text.trim()))
}

/// The answer verl's strict rule reads: in the last 300 characters, the last `#### <number>`
/// (one space after `####`), with `,` and `$` removed.
pub fn strict_answer(response: &str) -> Option<String> {
    let chars = response.chars().count();
    let tail: String = response
        .chars()
        .skip(chars.saturating_sub(STRICT_WINDOW))
        .collect();
    hash_number(&tail, true).map(|n| normalise(&n))
}

/// verl's strict rule: [`strict_answer`] must equal the gold string exactly. 1.0 or 0.0.
pub fn strict_reward(response: &str, gold: &str) -> f32 {
    match strict_answer(response) {
        Some(n) if n == gold => 1.0,
        _ => 0.0,
    }
}

/// The last number anywhere in the response (verl's `\-?[0-9\.\,]+`, ignoring a lone `.`),
/// with `,` and `$` removed and a sentence-final `.` dropped.
pub fn last_number(response: &str) -> Option<String> {
    let mut last = None;
    let mut i = 0;
    while i < response.len() {
        let n = leading_number(&response[i..]);
        if !n.is_empty() && n != "." && n != "-" {
            last = Some(n);
            i += n.len();
        } else {
            i += response[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    last.map(|n| normalise(n.trim_end_matches('.')))
}

/// The flexible rule: [`last_number`] must equal the gold string. 1.0 or 0.0. (verl's own
/// flexible rule compares without removing `,` or the final `.`.)
pub fn flexible_reward(response: &str, gold: &str) -> f32 {
    match last_number(response) {
        Some(n) if n == gold => 1.0,
        _ => 0.0,
    }
}

/// The chat prompt of the paper's GSM8K runs: the question, a space, [`PROMPT_SUFFIX`], as the
/// only user turn of the model's `template` (Qwen2.5's adds its default system prompt).
pub fn prompt(template: &ChatTemplate, question: &str) -> crate::Result<String> {
    template.render(None, &format!("{question} {PROMPT_SUFFIX}"))
}

/// Parses GSM8K JSONL text (`{"question": ..., "answer": ...}` per line); `origin` names it in
/// errors. Returns the problems and the number of skipped lines.
pub fn parse_jsonl(
    text: &str,
    origin: &Path,
    bad_lines: BadLines,
) -> Result<(Vec<Problem>, usize)> {
    let mut problems = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Record>(line)
            .map_err(|e| format!("not a GSM8K record ({e})"))
            .and_then(|r| Problem::from_record(r.question, r.answer));
        match (parsed, bad_lines) {
            (Ok(p), _) => problems.push(p),
            (Err(_), BadLines::Skip) => skipped += 1,
            (Err(reason), BadLines::Fatal) => {
                return Err(Error::BadFile {
                    path: origin.to_path_buf(),
                    reason: format!("line {}: {reason}", i + 1),
                });
            }
        }
    }
    Ok((problems, skipped))
}

/// Reads a GSM8K JSONL file.
pub fn load_jsonl(path: &Path, bad_lines: BadLines) -> Result<(Vec<Problem>, usize)> {
    let text = crate::fsutil::read_text(path)?;
    parse_jsonl(&text, path, bad_lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_rule_table() {
        let long_tail = format!("#### 72{}", " and more text".repeat(30));
        let cases: [(&str, &str, f32); 12] = [
            ("so 72 in total.\n#### 72", "72", 1.0),
            ("####72", "72", 0.0),        // a space is required
            ("#### $1,000", "1000", 0.0), // `$` is not part of the number pattern
            ("#### 1,000", "1000", 1.0),  // commas are stripped
            ("#### 72.", "72", 0.0),      // exact string match
            ("#### 72.00", "72", 0.0),
            ("#### -5", "-5", 1.0),
            ("#### 3\n#### 4", "4", 1.0), // the last match counts
            ("#### 3\n#### 4", "3", 0.0),
            ("the answer is 72", "72", 0.0), // no `####`
            (&long_tail, "72", 0.0),         // beyond the last 300 characters
            ("#### 72 apples", "72", 1.0),
        ];
        for (response, gold, want) in cases {
            assert_eq!(
                strict_reward(response, gold),
                want,
                "{response:?} vs {gold}"
            );
        }
        assert_eq!(
            strict_answer("so 1,000.\n#### 1,000").as_deref(),
            Some("1000")
        );
        assert_eq!(
            strict_answer("#### 3\n#### -4 apples").as_deref(),
            Some("-4")
        );
        assert_eq!(strict_answer("the answer is 72"), None);
    }

    #[test]
    fn gold_from_a_solution_or_a_number() {
        assert_eq!(gold_of("3 + 4 = 7\n#### 1,007"), "1007");
        assert_eq!(gold_of(" $1,000 "), "1000");
        assert_eq!(gold_of("72"), "72");
    }

    #[test]
    fn flexible_rule_table() {
        let cases: [(&str, &str, f32); 6] = [
            ("The answer is 1,000.", "1000", 1.0),
            ("He paid $18 in total", "18", 1.0),
            ("#### 72", "72", 1.0),
            ("7 apples and 3 pears: 10", "10", 1.0),
            ("7 apples and 3 pears: 10", "7", 0.0),
            ("no numbers here.", "1", 0.0),
        ];
        for (response, gold, want) in cases {
            assert_eq!(
                flexible_reward(response, gold),
                want,
                "{response:?} vs {gold}"
            );
        }
    }

    #[test]
    fn parses_records_and_reports_bad_lines() {
        let text = "{\"question\": \"Q1\", \"answer\": \"a\\n#### 1,234\"}\n\nnot json\n{\"question\": \"Q2\", \"answer\": \"no marker\"}\n";
        let err = parse_jsonl(text, Path::new("d.jsonl"), BadLines::Fatal)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("d.jsonl: line 3: not a GSM8K record"),
            "{err}"
        );
        let (problems, skipped) = parse_jsonl(text, Path::new("d.jsonl"), BadLines::Skip).unwrap();
        assert_eq!(skipped, 2);
        assert_eq!(problems[0].gold, "1234");
        let text = prompt(&ChatTemplate::default(), "Q1").unwrap();
        assert!(text.contains("Q1 Let's think step by step"));
    }
}
