//! The kernels against an f64 product of the dequantised blocks (the dequantisation itself is
//! checked against the `gguf` package in `tests/gguf_parity.rs`), every instruction set against
//! the baseline build bit for bit, and the burn operation's gradient against burn's own matmul.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::QMatrix;
use super::kernels::{DOT_MAX_ROWS, Isa, LANES, matmul_with};
use super::op::quant_linear;
use crate::rng::SplitMix64;
use crate::weights::dequant::GgmlType;

const QUANTISED: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
];

/// An f16 of magnitude in [2⁻⁸, 2⁻⁴) with a random sign and mantissa, as little-endian bytes.
fn scale(rng: &mut SplitMix64) -> [u8; 2] {
    let bits = rng.next_u64();
    let exponent = 7 + (bits % 4) as u16;
    let half = ((bits >> 8) as u16 & 0x8000) | (exponent << 10) | ((bits >> 20) as u16 & 0x3FF);
    half.to_le_bytes()
}

/// Random blocks of `kind` for a `[rows, cols]` matrix: random quants, sane f16 scales.
fn random_matrix(kind: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let mut rng = SplitMix64::new(seed);
    let (per_block, block_bytes) = kind.block();
    let mut bytes: Vec<u8> = (0..rows * cols / per_block * block_bytes)
        .map(|_| rng.next_u64() as u8)
        .collect();
    let scale_at: &[usize] = match kind {
        GgmlType::Q4K => &[0, 2],
        GgmlType::Q6K => &[208],
        _ => &[0],
    };
    for block in bytes.chunks_exact_mut(block_bytes) {
        for &at in scale_at {
            block[at..at + 2].copy_from_slice(&scale(&mut rng));
        }
    }
    QMatrix::new(kind, rows, cols, bytes).unwrap()
}

fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

/// Asserts `|got − exact| ≤ terms·ε·Σ|products|` for each output, `exact` in f64.
fn assert_within(got: &[f32], exact: &[f64], magnitude: &[f64], terms: usize, what: &str) {
    let eps = f64::from(f32::EPSILON) / 2.0;
    for (i, ((&g, &e), &m)) in got.iter().zip(exact).zip(magnitude).enumerate() {
        // One more ε·|e| for rounding the result to f32.
        let bound = 2.0 * (terms as f64 * eps * m + eps * e.abs());
        assert!(
            (f64::from(g) - e).abs() <= bound,
            "{what} output {i}: {g} vs exact {e} (bound {bound:e})"
        );
    }
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix.
fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| w[r * cols + c]))
        .collect()
}

/// `(Σ wᵢxᵢ, Σ|wᵢxᵢ|)` for every `(row of x, row of w)`, `[n, rows]`.
fn exact_products(w: &[f32], x: &[f32], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut sums, mut magnitudes) = (Vec::new(), Vec::new());
    for x_row in x.chunks_exact(cols) {
        for w_row in w.chunks_exact(cols) {
            let products = w_row
                .iter()
                .zip(x_row)
                .map(|(&a, &b)| f64::from(a) * f64::from(b));
            sums.push(products.clone().sum());
            magnitudes.push(products.map(f64::abs).sum());
        }
    }
    (sums, magnitudes)
}

#[test]
fn products_are_within_the_bound_of_the_dequantised_product_for_every_type() {
    for (seed, kind) in QUANTISED.into_iter().enumerate() {
        // 300 rows: several gemm tiles of rows (85 for x·Wᵀ, 256 for dy·W).
        let (rows, cols) = (300, 512 + 256);
        let m = random_matrix(kind, rows, cols, seed as u64);
        let w = m.dequantize();
        for n in [1, 3, 20] {
            let x = random_values(n * cols, 100 + seed as u64);
            let (exact, magnitude) = exact_products(&w, &x, cols);
            let terms = if n <= DOT_MAX_ROWS {
                cols / LANES + LANES.ilog2() as usize + 1
            } else {
                cols
            };
            assert_within(
                &m.matmul(&x, n),
                &exact,
                &magnitude,
                terms,
                &format!("{kind:?} x·Wᵀ n={n}"),
            );

            // dx = dy·W: column c of W dotted with each row of dy.
            let dy = random_values(n * rows, 200 + seed as u64);
            let w_t = transposed(&w, rows, cols);
            let (exact, magnitude) = exact_products(&w_t, &dy, rows);
            assert_within(
                &m.matmul_t(&dy, n),
                &exact,
                &magnitude,
                rows,
                &format!("{kind:?} dy·W n={n}"),
            );
        }
    }
}

#[test]
fn every_instruction_set_gives_the_baseline_bits() {
    let available: Vec<Isa> = Isa::all().into_iter().filter(|i| i.available()).collect();
    for (seed, kind) in QUANTISED.into_iter().enumerate() {
        // 19 rows: a partial task of 16.
        let m = random_matrix(kind, 19, 1280, 10 + seed as u64);
        for n in 1..=DOT_MAX_ROWS {
            let x = random_values(n * 1280, seed as u64);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let base = bits(matmul_with(Isa::Baseline, &m, &x, n));
            for &isa in &available {
                assert_eq!(bits(matmul_with(isa, &m, &x, n)), base, "{kind:?} {isa:?}");
            }
        }
    }
}

#[test]
fn gather_decodes_the_rows_asked_for() {
    let m = random_matrix(GgmlType::Q6K, 5, 256, 7);
    let all = m.dequantize();
    assert_eq!(
        m.gather(&[4, 0, 4]),
        [&all[1024..1280], &all[..256], &all[1024..1280]].concat()
    );
}

#[test]
fn shapes_that_are_not_whole_blocks_are_refused() {
    let err = QMatrix::new(GgmlType::Q4K, 2, 896, vec![0; 2 * 144 * 3]).unwrap_err();
    assert!(err.contains("not whole Q4K blocks of 256"), "{err}");
    let err = QMatrix::new(GgmlType::Q8_0, 2, 64, vec![0; 34 * 3]).unwrap_err();
    assert!(err.contains("do not make a [2, 64] matrix"), "{err}");
}

#[test]
fn the_burn_operation_and_its_gradient_match_a_dense_matmul() {
    let (rows, cols, n) = (24, 512, 6);
    let m = Arc::new(random_matrix(GgmlType::Q5_0, rows, cols, 3));
    let device = Device::flex().autodiff();
    let w = Tensor::<2>::from_data(TensorData::new(m.dequantize(), [rows, cols]), &device);
    let x_values = random_values(n * cols, 4);
    let g = Tensor::<3>::from_data(
        TensorData::new(random_values(n * rows, 5), [2, 3, rows]),
        &device,
    );
    let x = || {
        Tensor::<3>::from_data(TensorData::new(x_values.clone(), [2, 3, cols]), &device)
            .require_grad()
    };

    let (xq, xd) = (x(), x());
    let yq = quant_linear(xq.clone(), &m);
    let yd = xd.clone().matmul(w.transpose().unsqueeze::<3>());
    let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
    let g_values = values(g.clone());
    let grads_q = (yq.clone() * g.clone()).sum().backward();
    let grads_d = (yd.clone() * g).sum().backward();
    // Each side is within `terms·ε·Σ|products|` of the exact sum in any summation order, so
    // the two are within twice that of each other: `assert_within` with the dense result in
    // place of the exact one.
    let w_values = m.dequantize();
    let (_, magnitude) = exact_products(&w_values, &x_values, cols);
    let dense: Vec<f64> = values(yd).into_iter().map(f64::from).collect();
    assert_within(&values(yq), &dense, &magnitude, cols, "forward");
    let w_t = transposed(&w_values, rows, cols);
    let (_, magnitude) = exact_products(&w_t, &g_values, rows);
    let dense: Vec<f64> = values(xd.grad(&grads_d).unwrap())
        .into_iter()
        .map(f64::from)
        .collect();
    assert_within(
        &values(xq.grad(&grads_q).unwrap()),
        &dense,
        &magnitude,
        rows,
        "x.grad",
    );
}
