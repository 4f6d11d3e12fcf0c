//! A small portable PRNG (SplitMix64) whose streams are identical on every platform, so that a
//! seed means the same samples natively and in the browser.

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit counter passed through a bijective mixer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform double in `[0, 1)` from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The generator's state, for checkpoints.
    pub fn state(&self) -> u64 {
        self.state
    }
}

/// `count` standard normal samples of stream `stream` under `seed`: stream `m` uses
/// `SplitMix64::new(seed ⊕ (m+1)·0x9E3779B97F4A7C15)`, and each normal comes from the
/// Box–Muller transform `√(−2 ln u₁)·cos(2π u₂)` with `u₁ = 1 − next_f64()` ∈ (0, 1], evaluated
/// with `libm` (a pure-Rust libm, identical everywhere), one normal per pair of draws.
pub fn normals(seed: u64, stream: usize, count: usize) -> Vec<f64> {
    let key = seed ^ (stream as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = SplitMix64::new(key);
    (0..count)
        .map(|_| {
            let u1 = 1.0 - rng.next_f64();
            let u2 = rng.next_f64();
            libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * core::f64::consts::PI * u2)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_reference_stream() {
        // First outputs of SplitMix64 seeded with 1234567 (reference C implementation).
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        assert_eq!(rng.next_u64(), 9817491932198370423);
    }

    #[test]
    fn uniform_doubles_are_in_range() {
        let mut rng = SplitMix64::new(7);
        assert!(
            (0..1000)
                .map(|_| rng.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }

    #[test]
    fn golden_values() {
        // The same algorithm in Python (math.log/math.cos from glibc), seed 42, module 0.
        // These numbers are part of the adapter format: changing them changes every basis.
        let golden = [
            -0.10551648193541083,
            0.892470392690831,
            0.3970518252519789,
            -0.9616264486159954,
        ];
        for (ours, theirs) in normals(42, 0, 4).iter().zip(golden) {
            assert!(
                (ours - theirs).abs() <= 1e-15 * theirs.abs().max(1.0),
                "{ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn moments_look_normal() {
        let z = normals(7, 3, 20000);
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert_ne!(normals(7, 3, 4), normals(7, 4, 4));
        assert_ne!(normals(7, 3, 4), normals(8, 3, 4));
    }
}
