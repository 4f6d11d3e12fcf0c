//! The toy task: GSM-style word problems made procedurally — a person, a kind of item, a start
//! count and one to three changes (buy, find, give away, lose, double, boxes of several) — with
//! worked solutions that compute each step (`12+7=19`) and end in one of three answer styles.
//! Only one style (`#### N`) earns the strict reward, so a model trained on the mixture has the
//! skill but not reliably the format: what the paper argues RL with tiny updates mostly steers.

use tinylora::rng::SplitMix64;

const NAMES: [&str; 10] = [
    "Tom", "Ann", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe", "Leo", "Ivy",
];
const ITEMS: [&str; 10] = [
    "apples", "pens", "books", "coins", "cards", "eggs", "shells", "marbles", "stamps", "cookies",
];

/// How a worked solution states its final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `#### N` (what the strict reward wants).
    Hash,
    /// `The answer is N.`
    Sentence,
    /// `So Tom has N apples.`
    Statement,
}

/// One generated problem.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyProblem {
    /// The question text.
    pub question: String,
    /// The worked lines, one per computation.
    pub work: Vec<String>,
    /// The final count.
    pub answer: u32,
    name: &'static str,
    item: &'static str,
}

/// A uniform integer in `lo..=hi`.
fn uniform(rng: &mut SplitMix64, lo: u32, hi: u32) -> u32 {
    lo + (rng.next_u64() % u64::from(hi - lo + 1)) as u32
}

fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

impl ToyProblem {
    /// Draws a problem; the count stays between 0 and 99 throughout.
    pub fn generate(rng: &mut SplitMix64) -> Self {
        let name = pick(rng, &NAMES);
        let item = pick(rng, &ITEMS);
        let mut count = uniform(rng, 2, 30);
        let mut question = format!("{name} has {count} {item}.");
        let mut work = vec![format!("{name} starts with {count} {item}.")];
        for _ in 0..uniform(rng, 1, 3) {
            // 0, 1: add; 2, 3: take away; 4: double; 5: boxes. Ops that would leave 0..=99
            // become a take-away, and a take-away from nothing becomes an add.
            let mut op = uniform(rng, 0, 5);
            if matches!(op, 0 | 1) && count > 79 || op == 4 && count > 49 || op == 5 && count > 75 {
                op = 2 + op % 2;
            }
            if matches!(op, 2 | 3) && count == 0 {
                op -= 2;
            }
            let (text, line, next) = match op {
                0 | 1 => {
                    let b = uniform(rng, 1, 20);
                    let verb = if op == 0 { "buys" } else { "finds" };
                    (
                        format!(" {name} {verb} {b} more."),
                        format!(
                            "{name} {verb} {b} more, so {name} has {count}+{b}={}.",
                            count + b
                        ),
                        count + b,
                    )
                }
                4 => (
                    format!(" Then the number of {item} doubles."),
                    format!("The number doubles, so {name} has {count}*2={}.", count * 2),
                    count * 2,
                ),
                5 => {
                    let (k, b) = (uniform(rng, 2, 4), uniform(rng, 2, 6));
                    (
                        format!(" {name} gets {k} boxes with {b} {item} in each box."),
                        format!(
                            "{k} boxes with {b} each is {k}*{b}={}, so {name} has {count}+{}={}.",
                            k * b,
                            k * b,
                            count + k * b
                        ),
                        count + k * b,
                    )
                }
                _ => {
                    let b = uniform(rng, 1, count.min(20));
                    let verb = if op == 2 { "gives away" } else { "loses" };
                    (
                        format!(" {name} {verb} {b}."),
                        format!(
                            "{name} {verb} {b}, so {name} has {count}-{b}={}.",
                            count - b
                        ),
                        count - b,
                    )
                }
            };
            question.push_str(&text);
            work.push(line);
            count = next;
        }
        question.push_str(&format!(" How many {item} does {name} have now?"));
        Self {
            question,
            work,
            answer: count,
            name,
            item,
        }
    }

    /// The worked solution ending in `style`.
    pub fn solution(&self, style: Style) -> String {
        let last = match style {
            Style::Hash => format!("#### {}", self.answer),
            Style::Sentence => format!("The answer is {}.", self.answer),
            Style::Statement => format!("So {} has {} {}.", self.name, self.answer, self.item),
        };
        format!("{}\n{last}", self.work.join("\n"))
    }
}

/// The answer style of a pretraining example: `#### N` with probability `hash_fraction`, the
/// other two styles evenly otherwise.
pub fn draw_style(rng: &mut SplitMix64, hash_fraction: f64) -> Style {
    let x = rng.next_f64();
    if x < hash_fraction {
        Style::Hash
    } else if x < hash_fraction + (1.0 - hash_fraction) / 2.0 {
        Style::Sentence
    } else {
        Style::Statement
    }
}

/// `n` distinct problems from `seed`, none of whose questions is in `exclude`, as GSM8K JSONL
/// (`question`, `answer` with the `#### N` solution).
pub fn jsonl(seed: u64, n: usize, exclude: &std::collections::HashSet<String>) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    while seen.len() < n {
        let p = ToyProblem::generate(&mut rng);
        if exclude.contains(&p.question) || !seen.insert(p.question.clone()) {
            continue;
        }
        let record = serde_json::json!({"question": p.question, "answer": p.solution(Style::Hash)});
        out.push_str(&format!("{record}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinylora::gsm8k::{Problem, flexible_reward, strict_reward};

    #[test]
    fn solutions_are_right_and_styles_decide_the_strict_reward() {
        let mut rng = SplitMix64::new(5);
        for _ in 0..500 {
            let p = ToyProblem::generate(&mut rng);
            assert!(p.answer <= 99, "{p:?}");
            // Every worked line's arithmetic holds.
            for line in &p.work[1..] {
                for eq in line.split(' ').filter(|w| w.contains('=')) {
                    let eq = eq.trim_end_matches([',', '.']);
                    let (lhs, rhs) = eq.split_once('=').unwrap();
                    let value = if let Some((a, b)) = lhs.split_once('+') {
                        a.parse::<u32>().unwrap() + b.parse::<u32>().unwrap()
                    } else if let Some((a, b)) = lhs.split_once('-') {
                        a.parse::<u32>().unwrap() - b.parse::<u32>().unwrap()
                    } else {
                        let (a, b) = lhs.split_once('*').unwrap();
                        a.parse::<u32>().unwrap() * b.parse::<u32>().unwrap()
                    };
                    assert_eq!(value, rhs.parse::<u32>().unwrap(), "{line}");
                }
            }
            let gold = p.answer.to_string();
            assert_eq!(strict_reward(&p.solution(Style::Hash), &gold), 1.0);
            for style in [Style::Sentence, Style::Statement] {
                assert_eq!(strict_reward(&p.solution(style), &gold), 0.0);
                assert_eq!(flexible_reward(&p.solution(style), &gold), 1.0);
            }
        }
    }

    #[test]
    fn jsonl_is_gsm8k_shaped_distinct_and_excludes() {
        let first = jsonl(1, 50, &Default::default());
        let questions: std::collections::HashSet<String> = first
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["question"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(questions.len(), 50);
        for line in first.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let p = Problem::from_record(
                v["question"].as_str().unwrap().into(),
                v["answer"].as_str().unwrap().into(),
            )
            .unwrap();
            assert!(p.solution.ends_with(&format!("#### {}", p.gold)));
        }
        let other = jsonl(1, 20, &questions);
        assert!(other.lines().all(|l| !first.contains(l)));
    }

    #[test]
    fn styles_follow_the_fraction() {
        let mut rng = SplitMix64::new(9);
        let n = 20_000;
        let hash = (0..n)
            .filter(|_| draw_style(&mut rng, 0.3) == Style::Hash)
            .count();
        assert!((hash as f64 / n as f64 - 0.3).abs() < 0.02);
    }
}
