//! The kernels against an f64 product of the dequantised blocks (the dequantisation itself is
//! checked against the `gguf` package in `tests/gguf_parity.rs`), the integer kernels of every
//! instruction set against an f64 product of the same integers (and AVX2's products straight
//! from Q4_0/Q5_0/Q8_0 blocks against its products of decoded rows, bit for bit), the 8-bit
//! activations against their rounding bound, and the burn operation's gradient against burn's
//! own matmul.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::QMatrix;
use super::kernels::{DOT_MAX_ROWS, IntRow, Isa, Q8Rows, dots_int, matmul_with};
use super::op::quant_linear;
use crate::rng::SplitMix64;
use crate::weights::dequant::{GgmlType, OFFSET_GROUP, SCALE_GROUP, decode_row_int};

pub(crate) const QUANTISED: [GgmlType; 5] = [
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
pub(crate) fn random_blocks(kind: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
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
    bytes
}

/// [`random_blocks`] as a matrix.
fn random_matrix(kind: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    QMatrix::new(kind, rows, cols, random_blocks(kind, rows, cols, seed)).unwrap()
}

/// `len` values uniform in [-1, 1).
pub(crate) fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

/// Asserts `|got − exact| ≤ terms·ε·Σ|products|` for each output, `exact` in f64.
pub(crate) fn assert_within(
    got: &[f32],
    exact: &[f64],
    magnitude: &[f64],
    terms: usize,
    what: &str,
) {
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
pub(crate) fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| w[r * cols + c]))
        .collect()
}

/// `(Σ wᵢxᵢ, Σ|wᵢxᵢ|)` for every `(row of x, row of w)`, `[n, rows]`.
pub(crate) fn exact_products(w: &[f32], x: &[f32], cols: usize) -> (Vec<f64>, Vec<f64>) {
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
        // 1100 rows: several gemm tiles of rows (341 for x·Wᵀ, 1024 for dy·W).
        let (rows, cols) = (1100, 512 + 256);
        let m = random_matrix(kind, rows, cols, seed as u64);
        let w = m.dequantize();
        for n in [1, 3, 20, 40] {
            let x = random_values(n * cols, 100 + seed as u64);
            let (exact, magnitude) = exact_products(&w, &x, cols);
            let got = m.matmul(&x, n);
            if n <= DOT_MAX_ROWS {
                assert_within_rounding(&m, &x, &got, &exact, &magnitude, n, kind);
            } else {
                let what = format!("{kind:?} x·Wᵀ n={n}");
                assert_within(&got, &exact, &magnitude, cols, &what);
            }

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

/// The integer kernel's `x̂·Wᵀ` against the exact `x·Wᵀ`: rounding `x` to 8 bits moves each
/// value by at most half its block's step `d` (plus a few ε of `d` for computing `x / d` in
/// f32), so each output moves by at most `Σᵢ |wᵢ|·dᵢ·(½ + 2⁻¹⁶)`; the float sums add their
/// `terms·ε·Σ|wᵢx̂ᵢ|` on top (bounded here with `Σ|wᵢ|(|xᵢ| + dᵢ)`).
fn assert_within_rounding(
    m: &QMatrix,
    x: &[f32],
    got: &[f32],
    exact: &[f64],
    magnitude: &[f64],
    n: usize,
    kind: GgmlType,
) {
    let [rows, cols] = m.dims();
    let w = m.dequantize();
    let q8 = Q8Rows::new(x, cols);
    let eps = f64::from(f32::EPSILON) / 2.0;
    let terms = (cols / SCALE_GROUP + cols / OFFSET_GROUP + 4) as f64;
    for i in 0..n {
        let step: Vec<f64> = q8.row(i).scales.iter().map(|&d| f64::from(d)).collect();
        for r in 0..rows {
            let (mut moved, mut size) = (0.0, 0.0);
            for c in 0..cols {
                let (wv, d) = (f64::from(w[r * cols + c]).abs(), step[c / SCALE_GROUP]);
                moved += wv * d * (0.5 + 2f64.powi(-16));
                size += wv * d;
            }
            let o = i * rows + r;
            let bound =
                moved + 2.0 * terms * eps * (magnitude[o] + size) + 2.0 * eps * exact[o].abs();
            let error = (f64::from(got[o]) - exact[o]).abs();
            assert!(
                error <= bound,
                "{kind:?} n={n} output {o}: {} vs exact {} (bound {bound:e})",
                got[o],
                exact[o]
            );
        }
    }
}

#[test]
fn activations_round_to_within_half_a_step() {
    let cols = 256;
    let mut x = random_values(3 * cols, 9);
    x[32..64].fill(0.0); // a block of zeros: step 0, values 0
    x[70] = 1e30; // one huge value: the rest of its block rounds to 0
    let q8 = Q8Rows::new(&x, cols);
    for i in 0..3 {
        let row = q8.row(i);
        for c in 0..cols {
            let d = row.scales[c / SCALE_GROUP];
            let back = d * f32::from(row.q[c]);
            let v = x[i * cols + c];
            assert!(
                f64::from((v - back).abs()) <= f64::from(d) * (0.5 + 2f64.powi(-16)),
                "row {i} value {c}: {v} became {back}"
            );
        }
        for (b, &sum) in row.offsets.iter().enumerate() {
            let q: i32 = row.q[b * 32..b * 32 + 32]
                .iter()
                .map(|&q| i32::from(q))
                .sum();
            assert_eq!(sum, row.scales[2 * b] * q as f32, "row {i} block {b}");
        }
    }
}

#[test]
fn every_instruction_set_multiplies_the_integers_within_the_float_bound() {
    let available: Vec<Isa> = Isa::all().into_iter().filter(|i| i.available()).collect();
    for (seed, kind) in QUANTISED.into_iter().enumerate() {
        // 19 rows: a partial task of 16. 1312 = 41·32: a block of 32 past the last 64 (for
        // the 32-value types; the K types have 1280 = 5·256).
        let cols = if kind.block().0 == 32 { 1312 } else { 1280 };
        let rows = 19;
        let m = random_matrix(kind, rows, cols, 10 + seed as u64);
        let (mut q, mut scales) = (vec![0i8; cols], vec![0.0f32; cols / SCALE_GROUP]);
        let mut offsets = vec![0.0f32; kind.offsets(cols)];
        for n in [1, 2, 4, 5, 8, 13, DOT_MAX_ROWS] {
            let x = random_values(n * cols, seed as u64);
            let q8 = Q8Rows::new(&x, cols);
            // Exact, `[n, rows]`: Σ over groups of (scale·scale·Σ integer products), and the
            // offsets times the blocks' sums.
            let (mut exact, mut magnitude) = (Vec::new(), Vec::new());
            for i in 0..n {
                let xr = q8.row(i);
                for r in 0..rows {
                    decode_row_int(kind, m.row_blocks(r), &mut q, &mut scales, &mut offsets);
                    let (mut sum, mut size) = (0.0f64, 0.0f64);
                    let groups = q
                        .chunks_exact(SCALE_GROUP)
                        .zip(xr.q.chunks_exact(SCALE_GROUP));
                    for ((wq, xq), (ws, xs)) in groups.zip(scales.iter().zip(xr.scales)) {
                        let ints: i64 = wq
                            .iter()
                            .zip(xq)
                            .map(|(&a, &b)| i64::from(a) * i64::from(b))
                            .sum();
                        let term = f64::from(*ws) * f64::from(*xs) * ints as f64;
                        sum += term;
                        size += term.abs();
                    }
                    for (o, s) in offsets.iter().zip(xr.offsets) {
                        sum += f64::from(*o) * f64::from(*s);
                        size += (f64::from(*o) * f64::from(*s)).abs();
                    }
                    exact.push(sum);
                    magnitude.push(size);
                }
            }
            let terms = cols / SCALE_GROUP + cols / OFFSET_GROUP + 3;
            for &isa in &available {
                let what = format!("{kind:?} {isa:?} n={n}");
                let got = matmul_with(isa, &m, &x, n);
                assert_within(&got, &exact, &magnitude, terms, &what);
            }
        }
    }
}

#[test]
fn avx2_products_straight_from_blocks_of_32_are_those_of_the_decoded_rows() {
    if !Isa::Avx2.available() {
        eprintln!("skipped: this machine has no AVX2");
        return;
    }
    // The K-quants' kernels fold their integer scales into the integer sums, so their float
    // operations differ: the bound of `every_instruction_set_...` checks them.
    for (seed, kind) in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0]
        .into_iter()
        .enumerate()
    {
        // 41 blocks of 32: an odd count.
        let (rows, cols) = (19, 1312);
        let m = random_matrix(kind, rows, cols, 40 + seed as u64);
        let (mut q, mut scales) = (vec![0i8; cols], vec![0.0f32; cols / SCALE_GROUP]);
        let mut offsets = vec![0.0f32; kind.offsets(cols)];
        for n in [1, 3, 4, 9] {
            let x = random_values(n * cols, 50 + seed as u64);
            let got = matmul_with(Isa::Avx2, &m, &x, n);
            let q8 = Q8Rows::new(&x, cols);
            for r in 0..rows {
                decode_row_int(kind, m.row_blocks(r), &mut q, &mut scales, &mut offsets);
                let w = IntRow {
                    q: &q,
                    scales: &scales,
                    offsets: &offsets,
                };
                let mut decoded = vec![0.0f32; n];
                dots_int(Isa::Avx2, w, &q8, &mut decoded);
                for (i, want) in decoded.into_iter().enumerate() {
                    assert_eq!(got[i * rows + r], want, "{kind:?} n={n} row {r} x {i}");
                }
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
    // 40 rows of x: past the integer kernel's 32, so both sides multiply f32 activations.
    let (rows, cols, n) = (24, 512, 40);
    assert!(n > DOT_MAX_ROWS);
    let m = Arc::new(random_matrix(GgmlType::Q5_0, rows, cols, 3));
    let device = Device::flex().autodiff();
    let w = Tensor::<2>::from_data(TensorData::new(m.dequantize(), [rows, cols]), &device);
    let x_values = random_values(n * cols, 4);
    let g = Tensor::<3>::from_data(
        TensorData::new(random_values(n * rows, 5), [4, 10, rows]),
        &device,
    );
    let x = || {
        Tensor::<3>::from_data(TensorData::new(x_values.clone(), [4, 10, cols]), &device)
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

#[test]
fn weight_format_names_parse_back() {
    for format in [super::WeightFormat::AsStored, super::WeightFormat::Q8_0] {
        assert_eq!(format.name().parse::<super::WeightFormat>(), Ok(format));
    }
}
