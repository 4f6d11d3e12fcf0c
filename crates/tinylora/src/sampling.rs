//! Choosing the next token from one row of logits, on the host: greedy, or temperature with
//! optional top-k and top-p (nucleus) filtering.

use crate::rng::SplitMix64;

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// `None` or `0`: greedy (argmax). Otherwise logits are divided by it before sampling.
    pub temperature: Option<f32>,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (`None`: 1).
    pub top_p: Option<f32>,
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: None,
            top_k: None,
            top_p: None,
        }
    }

    fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t <= 0.0)
    }
}

/// `log_softmax(logits / t)` in f64, as f32.
pub fn log_softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let normaliser = LogNormaliser::new(logits, temperature);
    logits.iter().map(|&l| normaliser.log_prob(l)).collect()
}

/// What `log_softmax(logits / t)` subtracts, computed without a copy of the logits (a real
/// vocabulary is 150 k of them per decoded token).
struct LogNormaliser {
    max: f32,
    t: f64,
    log_z: f64,
}

impl LogNormaliser {
    fn new(logits: &[f32], temperature: f32) -> Self {
        let t = f64::from(temperature);
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let log_z = logits
            .iter()
            .map(|&l| (f64::from(l - max) / t).exp())
            .sum::<f64>()
            .ln();
        Self { max, t, log_z }
    }

    /// The log-probability of a token whose logit is `logit`.
    fn log_prob(&self, logit: f32) -> f32 {
        (f64::from(logit - self.max) / self.t - self.log_z) as f32
    }
}

/// Picks a token from `logits` and returns it with its log-probability under the distribution
/// it was drawn from (temperature applied, before top-k/top-p truncation; temperature 1 for
/// greedy). Ties in greedy decoding go to the lowest id, as in `torch.argmax`.
///
/// Sampled: the kept tokens (all, the `top_k` most likely, then the fewest of those whose
/// probability reaches `top_p`) are walked from most to least likely (ties: the lower id
/// first), subtracting each one's probability from `u · Σ kept` (the sum taken in id order,
/// `u` uniform in [0, 1)) until it falls below zero. The walk ranks the vocabulary only as far
/// as it goes ([`Ranked`]), so a 150 k vocabulary is not sorted for every token.
pub fn sample(logits: &[f32], config: &SamplingConfig, rng: &mut SplitMix64) -> (u32, f32) {
    if config.is_greedy() {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return (
            best as u32,
            LogNormaliser::new(logits, 1.0).log_prob(logits[best]),
        );
    }
    let logprobs = log_softmax(logits, config.temperature.unwrap_or(1.0));
    let mut ranked = Ranked::new(&logprobs);
    let probability = |i: usize| f64::from(logprobs[i]).exp();
    let mut keep = config.top_k.unwrap_or(logits.len()).clamp(1, logits.len());
    if let Some(p) = config.top_p {
        let mut mass = 0.0f64;
        for n in 0..keep {
            mass += probability(ranked.at(n));
            if mass >= f64::from(p) {
                keep = n + 1;
                break;
            }
        }
    }
    let total: f64 = if keep == logits.len() {
        (0..keep).map(probability).sum()
    } else {
        let mut kept: Vec<usize> = (0..keep).map(|n| ranked.at(n)).collect();
        kept.sort_unstable();
        kept.into_iter().map(probability).sum()
    };
    let mut target = rng.next_f64() * total;
    for n in 0..keep {
        let i = ranked.at(n);
        target -= probability(i);
        if target < 0.0 {
            return (i as u32, logprobs[i]);
        }
    }
    let last = ranked.at(keep - 1);
    (last as u32, logprobs[last])
}

/// Token ids from most to least likely (ties: the lower id first), ranked a growing chunk at a
/// time as they are asked for: a selection (linear on average) then a sort of the chunk, so the
/// first few ranks of a large vocabulary cost one pass over it.
struct Ranked<'a> {
    logprobs: &'a [f32],
    /// Every id; `ids[..sorted]` in rank order, the rest all ranked after them.
    ids: Vec<usize>,
    sorted: usize,
}

impl<'a> Ranked<'a> {
    /// Ids ranked first, before any is asked for.
    const FIRST_CHUNK: usize = 64;

    fn new(logprobs: &'a [f32]) -> Self {
        Self {
            logprobs,
            ids: (0..logprobs.len()).collect(),
            sorted: 0,
        }
    }

    /// The id at rank `n` (0: the most likely).
    fn at(&mut self, n: usize) -> usize {
        let logprobs = self.logprobs;
        let order = |a: &usize, b: &usize| logprobs[*b].total_cmp(&logprobs[*a]).then(a.cmp(b));
        while n >= self.sorted {
            let rest = &mut self.ids[self.sorted..];
            let chunk = self.sorted.max(Self::FIRST_CHUNK);
            if chunk < rest.len() {
                rest.select_nth_unstable_by(chunk - 1, order);
                rest[..chunk].sort_unstable_by(order);
                self.sorted += chunk;
            } else {
                rest.sort_unstable_by(order);
                self.sorted = self.ids.len();
            }
        }
        self.ids[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let (token, logprob) = sample(
            &[0.0, 2.0, 2.0, 1.0],
            &SamplingConfig::greedy(),
            &mut SplitMix64::new(0),
        );
        assert_eq!(token, 1);
        let expected = 2.0 - (1.0f64 + 2.0 * 2f64.exp() + 1f64.exp()).ln();
        assert!((f64::from(logprob) - expected).abs() < 1e-6);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_truncates() {
        let logits = [0.1, 3.0, 0.2, 2.9];
        let mut rng = SplitMix64::new(3);
        let k1 = SamplingConfig {
            temperature: Some(1.0),
            top_k: Some(1),
            top_p: None,
        };
        assert!((0..50).all(|_| sample(&logits, &k1, &mut rng).0 == 1));
        let p = SamplingConfig {
            temperature: Some(1.0),
            top_k: None,
            top_p: Some(0.9),
        };
        let picks: Vec<u32> = (0..200).map(|_| sample(&logits, &p, &mut rng).0).collect();
        assert!(picks.iter().all(|&t| t == 1 || t == 3));
        assert!(picks.contains(&1) && picks.contains(&3));
    }

    #[test]
    fn ranks_are_those_of_a_full_sort_ties_by_id() {
        let mut rng = SplitMix64::new(7);
        // Few distinct values: many ties, across the chunks' boundaries.
        let logprobs: Vec<f32> = (0..1000)
            .map(|_| (rng.next_f64() * 20.0).floor() as f32)
            .collect();
        let mut expected: Vec<usize> = (0..logprobs.len()).collect();
        expected.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
        let mut ranked = Ranked::new(&logprobs);
        let got: Vec<usize> = (0..logprobs.len()).map(|n| ranked.at(n)).collect();
        assert_eq!(got, expected);
    }

    /// [`sample`]'s rule with the whole vocabulary sorted first.
    fn sample_sorted(logits: &[f32], config: &SamplingConfig, rng: &mut SplitMix64) -> u32 {
        let logprobs = log_softmax(logits, config.temperature.unwrap());
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
        let p = |i: usize| f64::from(logprobs[i]).exp();
        let mut keep = config.top_k.unwrap_or(order.len()).clamp(1, order.len());
        if let Some(top_p) = config.top_p {
            let mut mass = 0.0;
            if let Some(n) = order[..keep].iter().position(|&i| {
                mass += p(i);
                mass >= f64::from(top_p)
            }) {
                keep = n + 1;
            }
        }
        let mut kept = order[..keep].to_vec();
        kept.sort_unstable();
        let mut target = rng.next_f64() * kept.iter().map(|&i| p(i)).sum::<f64>();
        for &i in &order[..keep] {
            target -= p(i);
            if target < 0.0 {
                return i as u32;
            }
        }
        order[keep - 1] as u32
    }

    #[test]
    fn ranking_as_needed_draws_what_a_full_sort_draws() {
        let mut rng = SplitMix64::new(11);
        let logits: Vec<f32> = (0..5000).map(|_| (rng.next_f64() * 12.0) as f32).collect();
        for (top_k, top_p) in [
            (None, None),
            (Some(40), None),
            (None, Some(0.9)),
            (Some(300), Some(0.95)),
        ] {
            let config = SamplingConfig {
                temperature: Some(0.7),
                top_k,
                top_p,
            };
            let (mut a, mut b) = (SplitMix64::new(5), SplitMix64::new(5));
            for _ in 0..300 {
                assert_eq!(
                    sample(&logits, &config, &mut a).0,
                    sample_sorted(&logits, &config, &mut b),
                    "{config:?}"
                );
            }
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let config = SamplingConfig {
            temperature: Some(1.0),
            top_k: None,
            top_p: None,
        };
        let mut rng = SplitMix64::new(42);
        let mut counts = [0usize; 3];
        let n = 20000;
        for _ in 0..n {
            counts[sample(&logits, &config, &mut rng).0 as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let expected = f64::from(logits[i]).exp() / z;
            assert!((c as f64 / n as f64 - expected).abs() < 0.015, "{counts:?}");
        }
    }
}
