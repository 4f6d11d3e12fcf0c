//! The learning rate at each step: linear warm-up from 0, then constant, linear or cosine decay
//! (verl's constant-with-warm-up is the paper's).

use super::config::Schedule;

/// Warm-up steps for `total` steps at `ratio`: `⌊ratio × total⌋` as verl computes it
/// (348 steps at 0.05 give 17).
pub fn warmup_steps(total: usize, ratio: f64) -> usize {
    (ratio * total as f64).floor() as usize
}

/// The learning rate of step `step` (0-based) of `total`: `peak × (step + 1) / warmup` during
/// warm-up, then the schedule over the remaining steps.
pub fn learning_rate(
    peak: f64,
    step: usize,
    total: usize,
    warmup: usize,
    schedule: Schedule,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak * (1.0 - progress),
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_schedule() {
        assert_eq!(warmup_steps(348, 0.05), 17);
        let lr = |s| learning_rate(1e-5, s, 348, 17, Schedule::Constant);
        assert!((lr(0) - 1e-5 / 17.0).abs() < 1e-18);
        assert!((lr(16) - 1e-5).abs() < 1e-18);
        assert_eq!(lr(17), 1e-5);
        assert_eq!(lr(347), 1e-5);
    }

    #[test]
    fn decays_reach_zero_at_the_end() {
        for schedule in [Schedule::Linear, Schedule::Cosine] {
            assert_eq!(learning_rate(1.0, 10, 110, 10, schedule), 1.0);
            let mid = learning_rate(1.0, 60, 110, 10, schedule);
            assert!((mid - 0.5).abs() < 1e-12, "{schedule:?} {mid}");
            assert!(learning_rate(1.0, 110, 110, 10, schedule).abs() < 1e-12);
        }
        assert_eq!(learning_rate(2.0, 0, 5, 0, Schedule::Constant), 2.0);
    }
}
