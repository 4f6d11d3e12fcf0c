//! The fixed random projections `P (u × r × r)` of each adapted module, from a portable
//! counter-based generator so that native and wasm builds draw the same numbers.
//!
//! Module `m` with seed `s` draws stream `m` of [`normals`].

use crate::rng::normals;

/// `P` of one module, row-major `[u, r, r]`, entries `N(0, std²)` rounded to f32.
pub fn projection(seed: u64, module: usize, u: usize, r: usize, std: f64) -> Vec<f32> {
    normals(seed, module, u * r * r)
        .into_iter()
        .map(|z| (z * std) as f32)
        .collect()
}
