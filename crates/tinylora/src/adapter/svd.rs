//! Deterministic top-r singular value decomposition of a frozen weight, bit-identical on every
//! platform: scalar f64 arithmetic in a fixed order (no fused multiply-add, no threads, no
//! platform maths: `sqrt` is correctly rounded by IEEE 754, everything else is `+ − × ÷`).
//!
//! Algorithm: Golub–Kahan–Lanczos bidiagonalisation with full reorthogonalisation (applied
//! twice), from a start vector drawn from [`SplitMix64`] with a fixed seed, followed by a
//! one-sided Jacobi SVD of the small bidiagonal matrix. Steps are added until the top-r Ritz
//! triplets have residual `‖Wᵀu − σv‖ ≤ 1e-12·σ₁`, or the Krylov space is the whole space.
//!
//! Sign rule: each left singular vector `u` is flipped so that its entry of largest magnitude
//! (the first one on ties) is positive; `v` follows.

use crate::rng::SplitMix64;

/// The top singular triplets of a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct TopSvd {
    /// Singular values, descending, `[r]`.
    pub sigma: Vec<f64>,
    /// Left singular vectors, `r` rows of `[out]`.
    pub u: Vec<Vec<f64>>,
    /// Right singular vectors, `r` rows of `[in]`.
    pub v: Vec<Vec<f64>>,
}

/// Seed of the Lanczos start vector (part of the format: changing it changes bases).
const START_SEED: u64 = 0x005E_ED0F_57A7;
/// Relative residual at which a Ritz triplet counts as converged.
const TOLERANCE: f64 = 1e-12;

/// `Σ a[i]·b[i]` with 8 interleaved partial sums combined in a fixed order.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            lanes[l] += a[8 * c + l] * b[8 * c + l];
        }
    }
    let mut tail = 0.0;
    for i in 8 * chunks..a.len() {
        tail += a[i] * b[i];
    }
    ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        + tail
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn scale(a: &mut [f64], s: f64) {
    for x in a {
        *x *= s;
    }
}

/// `a −= Σ_q (q·a) q` over `basis`, twice ("twice is enough").
fn reorthogonalise(a: &mut [f64], basis: &[Vec<f64>]) {
    for _ in 0..2 {
        for q in basis {
            let c = dot(q, a);
            for (x, y) in a.iter_mut().zip(q) {
                *x -= c * y;
            }
        }
    }
}

/// A row-major `rows × cols` f32 matrix viewed in f64.
struct Matrix<'a> {
    w: &'a [f32],
    rows: usize,
    cols: usize,
}

impl Matrix<'_> {
    /// `W x`.
    fn mul(&self, x: &[f64]) -> Vec<f64> {
        let mut row = vec![0.0; self.cols];
        (0..self.rows)
            .map(|i| {
                for (r, &w) in row
                    .iter_mut()
                    .zip(&self.w[i * self.cols..(i + 1) * self.cols])
                {
                    *r = f64::from(w);
                }
                dot(&row, x)
            })
            .collect()
    }

    /// `Wᵀ y`, accumulated row by row (the same order for every output entry).
    fn mul_t(&self, y: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.cols];
        for (i, &yi) in y.iter().enumerate() {
            for (o, &w) in out
                .iter_mut()
                .zip(&self.w[i * self.cols..(i + 1) * self.cols])
            {
                *o += f64::from(w) * yi;
            }
        }
        out
    }
}

/// One-sided Jacobi SVD of a small dense `n × n` matrix `b` (row-major, f64): returns
/// `(σ, X, Y)` with `b = X diag(σ) Yᵀ`, σ descending, X and Y as columns `[n][n]`.
fn jacobi_svd(b: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    // Work on columns: a[j] is column j of b; y accumulates the right rotations.
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| b[i * n + j]).collect())
        .collect();
    let mut y: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha = dot(&a[p], &a[p]);
                let beta = dot(&a[q], &a[q]);
                let gamma = dot(&a[p], &a[q]);
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for m in [&mut a, &mut y] {
                    let (left, right) = m.split_at_mut(q);
                    for (xp, xq) in left[p].iter_mut().zip(right[0].iter_mut()) {
                        let (vp, vq) = (*xp, *xq);
                        *xp = c * vp - s * vq;
                        *xq = s * vp + c * vq;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    let sig: Vec<f64> = a.iter().map(|col| norm(col)).collect();
    order.sort_by(|&i, &j| sig[j].total_cmp(&sig[i]).then(i.cmp(&j)));
    let sigma: Vec<f64> = order.iter().map(|&j| sig[j]).collect();
    let x = order
        .iter()
        .map(|&j| {
            let mut col = a[j].clone();
            if sig[j] > 0.0 {
                scale(&mut col, 1.0 / sig[j]);
            }
            col
        })
        .collect();
    let y = order.iter().map(|&j| y[j].clone()).collect();
    (sigma, x, y)
}

/// `Σ_j coeffs[j]·basis[j]`.
fn combine(basis: &[Vec<f64>], coeffs: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; basis[0].len()];
    for (b, &c) in basis.iter().zip(coeffs) {
        for (o, &x) in out.iter_mut().zip(b) {
            *o += c * x;
        }
    }
    out
}

/// Flips `u` (and `v`) so that `u`'s entry of largest magnitude is positive.
fn fix_sign(u: &mut [f64], v: &mut [f64]) {
    let mut best = 0;
    for (i, x) in u.iter().enumerate() {
        if x.abs() > u[best].abs() {
            best = i;
        }
    }
    if u[best] < 0.0 {
        scale(u, -1.0);
        scale(v, -1.0);
    }
}

/// The top `r` singular triplets of the row-major `rows × cols` matrix `w`
/// (`r ≤ min(rows, cols)`).
pub fn top_svd(w: &[f32], rows: usize, cols: usize, r: usize) -> TopSvd {
    assert_eq!(w.len(), rows * cols, "matrix size");
    let full = rows.min(cols);
    assert!(r >= 1 && r <= full, "rank {r} of a {rows}×{cols} matrix");
    let m = Matrix { w, rows, cols };
    let mut rng = SplitMix64::new(START_SEED);
    let mut v0: Vec<f64> = (0..cols).map(|_| rng.next_f64() - 0.5).collect();
    let n0 = norm(&v0);
    scale(&mut v0, 1.0 / n0);
    let (mut us, mut vs): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (Vec::new(), vec![v0]);
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut next_check = (2 * r + 8).min(full);
    loop {
        let k = us.len();
        // u_k = W v_k − β_{k−1} u_{k−1}, reorthogonalised.
        let mut u = m.mul(&vs[k]);
        reorthogonalise(&mut u, &us);
        let alpha = norm(&u);
        if alpha > 0.0 {
            scale(&mut u, 1.0 / alpha);
        }
        us.push(u);
        alphas.push(alpha);
        // v_{k+1} = Wᵀ u_k − α_k v_k, reorthogonalised.
        let mut v = m.mul_t(&us[k]);
        reorthogonalise(&mut v, &vs);
        let beta = norm(&v);
        if beta > 0.0 {
            scale(&mut v, 1.0 / beta);
        }
        betas.push(beta);
        let steps = k + 1;
        let exhausted = steps >= full || beta <= 1e-300 || alpha <= 1e-300;
        if steps < next_check && !exhausted {
            vs.push(v);
            continue;
        }
        // Bidiagonal B (steps × steps): α on the diagonal, β above it.
        let mut b = vec![0.0; steps * steps];
        for i in 0..steps {
            b[i * steps + i] = alphas[i];
            if i + 1 < steps {
                b[i * steps + i + 1] = betas[i];
            }
        }
        let (sigma, x, y) = jacobi_svd(&b, steps);
        let converged = (0..r).all(|i| beta * x[i][steps - 1].abs() <= TOLERANCE * sigma[0]);
        if converged || exhausted {
            let mut out = TopSvd {
                sigma: sigma[..r].to_vec(),
                u: Vec::with_capacity(r),
                v: Vec::with_capacity(r),
            };
            for i in 0..r {
                let mut ui = combine(&us, &x[i]);
                let mut vi = combine(&vs, &y[i]);
                fix_sign(&mut ui, &mut vi);
                out.u.push(ui);
                out.v.push(vi);
            }
            return out;
        }
        vs.push(v);
        next_check = (steps + 8).min(full);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic test matrix with prescribed singular values (`U diag(s) Vᵀ` built from
    /// Householder reflections of random vectors).
    fn matrix_with_spectrum(rows: usize, cols: usize, s: &[f64], seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        let mut reflect = |n: usize| {
            let h: Vec<f64> = (0..n).map(|_| rng.next_f64() - 0.5).collect();
            let hn = dot(&h, &h);
            move |e: usize| -> Vec<f64> {
                (0..n)
                    .map(|i| f64::from(u8::from(i == e)) - 2.0 * h[i] * h[e] / hn)
                    .collect()
            }
        };
        let (qu, qv) = (reflect(rows), reflect(cols));
        let mut w = vec![0.0f64; rows * cols];
        for (k, &sk) in s.iter().enumerate() {
            let (u, v) = (qu(k), qv(k));
            for i in 0..rows {
                for j in 0..cols {
                    w[i * cols + j] += sk * u[i] * v[j];
                }
            }
        }
        w.iter().map(|&x| x as f32).collect()
    }

    #[test]
    fn recovers_a_known_spectrum_and_subspace() {
        // σ₂ = 3.0 and σ₃ = 2.9 are close: a hard case for Krylov methods.
        let s = [5.0, 3.0, 2.9, 1.0, 0.5, 0.25];
        let (rows, cols) = (40, 24);
        let w = matrix_with_spectrum(rows, cols, &s, 1);
        let svd = top_svd(&w, rows, cols, 3);
        for (got, want) in svd.sigma.iter().zip(&s) {
            assert!((got - want).abs() / want < 1e-6, "{:?}", svd.sigma);
        }
        // The exact singular vectors are the Householder columns the matrix was built from
        // (up to f32 rounding of w): the angle between computed and exact ones is tiny.
        let mut rng = SplitMix64::new(1);
        let hu: Vec<f64> = (0..rows).map(|_| rng.next_f64() - 0.5).collect();
        let hv: Vec<f64> = (0..cols).map(|_| rng.next_f64() - 0.5).collect();
        let column = |h: &[f64], e: usize| -> Vec<f64> {
            let hn = dot(h, h);
            (0..h.len())
                .map(|i| f64::from(u8::from(i == e)) - 2.0 * h[i] * h[e] / hn)
                .collect()
        };
        for k in 0..3 {
            let cos_u = dot(&svd.u[k], &column(&hu, k)).abs();
            let cos_v = dot(&svd.v[k], &column(&hv, k)).abs();
            let angle = cos_u.min(cos_v).min(1.0).acos();
            assert!(angle <= 1e-5, "triplet {k}: subspace angle {angle:e}");
        }
    }

    #[test]
    fn vectors_are_singular_vectors() {
        let mut rng = SplitMix64::new(9);
        let (rows, cols) = (30, 50);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| (rng.next_f64() - 0.5) as f32)
            .collect();
        let svd = top_svd(&w, rows, cols, 2);
        let m = Matrix { w: &w, rows, cols };
        for i in 0..2 {
            let wv = m.mul(&svd.v[i]);
            let err: f64 = wv
                .iter()
                .zip(&svd.u[i])
                .map(|(a, b)| (a - svd.sigma[i] * b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-9 * svd.sigma[0], "triplet {i}: {err}");
            assert!((norm(&svd.u[i]) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn jacobi_reconstructs_its_input() {
        let b = [3.0, 1.0, 0.0, 0.0, 2.0, 0.5, 0.0, 0.0, 1.0];
        let (s, x, y) = jacobi_svd(&b, 3);
        for i in 0..3 {
            for j in 0..3 {
                let rebuilt: f64 = (0..3).map(|k| x[k][i] * s[k] * y[k][j]).sum();
                assert!((rebuilt - b[i * 3 + j]).abs() < 1e-12);
            }
        }
        assert!(s.windows(2).all(|p| p[0] >= p[1]));
    }
}
