//! The order in which a run visits its training problems: epoch by epoch, in order or shuffled
//! by a seed, so that any step's batch can be rebuilt on resume (and in the page).

use crate::rng::SplitMix64;

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
