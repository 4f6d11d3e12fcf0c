//! The GPU kernels (on wgpu: lavapipe in CI) against the CPU's decoder (the one checked
//! against the `gguf` package) and against f64 products of the decoded values, within bounds
//! that hold for any summation order.

use burn::tensor::{Device, Tensor, TensorData};

use super::GpuBlocks;
use crate::device::{BackendKind, init};
use crate::quant::tests::{
    assert_within, exact_products, random_blocks, random_values, transposed,
};
use crate::rng::SplitMix64;
use crate::weights::BlockTensor;
use crate::weights::dequant::{GgmlType, SCALE_GROUP, decode_row_int, dequantize};

/// Every type the GPU keeps as stored: the GGUF block types and the 16-bit floats.
const KEPT: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::F16,
    GgmlType::BF16,
];

/// Random finite 16-bit floats of `kind` (f16: every exponent but the infinities',
/// subnormals included; bf16: magnitudes between 2⁻²⁰ and 2²¹), as little-endian bytes.
fn random_halves(kind: GgmlType, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .flat_map(|_| {
            let bits = rng.next_u64();
            let (sign, mantissa, pick) = (bits as u16 & 0x8000, (bits >> 16) as u16, bits >> 32);
            let h = match kind {
                GgmlType::F16 => sign | ((pick % 31) as u16) << 10 | (mantissa & 0x3FF),
                _ => sign | ((107 + pick % 41) as u16) << 7 | (mantissa & 0x7F),
            };
            h.to_le_bytes()
        })
        .collect()
}

/// A random `[rows, cols]` matrix stored as `kind`: blocks of random quants and sane scales,
/// or random finite 16-bit floats.
fn random_stored(kind: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    match kind {
        GgmlType::F16 | GgmlType::BF16 => random_halves(kind, rows * cols, seed),
        _ => random_blocks(kind, rows, cols, seed),
    }
}

fn wgpu() -> Device {
    init(BackendKind::Wgpu).expect("wgpu (lavapipe in CI)")
}

/// `bytes` of `kind` as a `[rows, cols]` matrix on the GPU, in buffers of at most
/// `piece_rows` rows (all in one when `None`).
fn upload(
    kind: GgmlType,
    bytes: &[u8],
    [rows, cols]: [usize; 2],
    piece_rows: Option<usize>,
    device: &Device,
) -> GpuBlocks {
    let blocks = BlockTensor {
        shape: vec![rows, cols],
        kind,
        bytes: bytes.to_vec(),
    };
    let limit = piece_rows.map_or(super::MAX_BUFFER_BYTES, |n| n * bytes.len() / rows);
    let m = GpuBlocks::with_buffer_limit(&blocks, device, limit).unwrap();
    let pieces = piece_rows.map_or(1, |n| rows.div_ceil(n));
    assert_eq!(m.pieces.len(), pieces);
    m
}

/// One buffer, and pieces of 7 rows (boundaries inside every range the tests read).
const PIECES: [Option<usize>; 2] = [None, Some(7)];

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// `|scale·q|` of every value: what a fused multiply-add in the GPU's `scale·q + offset`
/// (Q4_K) leaves unrounded, so the values may differ from the CPU's by `ε/2` of it (zeros for
/// the 16-bit floats, which are exact).
fn products(kind: GgmlType, bytes: &[u8], len: usize) -> Vec<f32> {
    if !kind.is_quantised() {
        return vec![0.0; len];
    }
    let mut q = vec![0i8; len];
    let mut scales = vec![0.0f32; len / SCALE_GROUP];
    let mut offsets = vec![0.0f32; kind.offsets(len)];
    decode_row_int(kind, bytes, &mut q, &mut scales, &mut offsets);
    q.iter()
        .enumerate()
        .map(|(i, &q)| (scales[i / SCALE_GROUP] * f32::from(q)).abs())
        .collect()
}

/// Every value the GPU decodes equals the CPU decoder's: bit for bit (for the 16-bit floats
/// from random bits, infinities, NaNs and subnormals included; NaN payloads aside), but for
/// Q4_K's possibly fused multiply-add.
#[test]
fn decoded_values_and_rows_are_the_cpu_decoders() {
    let device = wgpu();
    let (rows, cols) = (40, 512);
    for (seed, kind) in KEPT.into_iter().enumerate() {
        let bytes = match kind {
            GgmlType::F16 | GgmlType::BF16 => {
                let mut rng = SplitMix64::new(seed as u64);
                (0..rows * cols * 2).map(|_| rng.next_u64() as u8).collect()
            }
            _ => random_blocks(kind, rows, cols, seed as u64),
        };
        let cpu = dequantize(&bytes, kind);
        let unrounded = products(kind, &bytes, rows * cols);
        let eps = f32::EPSILON / 2.0;
        // `got` against the CPU's values from flat index `at` on.
        let check = |got: &[f32], at: usize, what: &str| {
            for (i, &g) in got.iter().enumerate() {
                let (c, p) = (cpu[at + i], unrounded[at + i]);
                // Exact but for Q4_K's possibly fused `scale·q + offset`.
                let bound = if kind == GgmlType::Q4K {
                    eps * (p + 2.0 * c.abs())
                } else {
                    0.0
                };
                let same = g.to_bits() == c.to_bits() || (g.is_nan() && c.is_nan());
                assert!(
                    same || (g - c).abs() <= bound,
                    "{kind:?} {what} value {i}: GPU {g} vs CPU {c}"
                );
            }
        };
        for pieces in PIECES {
            let m = upload(kind, &bytes, [rows, cols], pieces, &device);
            check(&values(m.dequantize_rows(0, rows)), 0, "all rows");
            check(&values(m.dequantize_rows(5, 5)), 5 * cols, "rows 5..10");
            let got = values(m.rows(&[vec![3, 39, 0], vec![3, 3, 12]], &device));
            for (i, &row) in [3, 39, 0, 3, 3, 12].iter().enumerate() {
                check(
                    &got[i * cols..(i + 1) * cols],
                    row * cols,
                    &format!("lookup {i}"),
                );
            }
            // Single values by flat index, on both sides of the 7-row pieces' boundaries.
            let ids = [0, 6 * cols + 511, 7 * cols, 39 * cols + 17, 13 * cols + 100];
            let flat: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            let got = values(m.values_at(&flat, &device));
            for (&id, g) in ids.iter().zip(&got) {
                check(std::slice::from_ref(g), id, &format!("value at {id}"));
            }
        }
    }
}

/// `x·Wᵀ` for `n` rows of `x` against the f64 product of the CPU-decoded weights: within
/// `terms·ε` of `Σ|x|·(|w| + |scale·q|)` (the second term for Q4_K's decoding, above).
fn check_product(m: &GpuBlocks, bytes: &[u8], n: usize, seed: u64, device: &Device) {
    let (kind, [rows, cols]) = (m.kind(), m.dims());
    let w = dequantize(bytes, kind);
    let slack = products(kind, bytes, rows * cols);
    let x = random_values(n * cols, seed);
    let (exact, _) = exact_products(&w, &x, cols);
    let w_abs: Vec<f32> = w.iter().zip(&slack).map(|(w, p)| w.abs() + p).collect();
    let x_abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let (magnitude, _) = exact_products(&w_abs, &x_abs, cols);
    let xt = Tensor::<3>::from_data(TensorData::new(x, [1, n, cols]), device);
    let got = values(m.matmul(xt));
    assert_within(
        &got,
        &exact,
        &magnitude,
        cols,
        &format!("{kind:?} x·Wᵀ n={n}"),
    );
}

#[test]
fn products_are_within_the_bound_of_the_decoded_product_for_every_type() {
    let device = wgpu();
    let (rows, cols) = (300, 512);
    for (seed, kind) in KEPT.into_iter().enumerate() {
        let bytes = random_stored(kind, rows, cols, seed as u64);
        for pieces in PIECES {
            let m = upload(kind, &bytes, [rows, cols], pieces, &device);
            // Read from the blocks directly (1, 5) and through dequantised tiles (40).
            for n in [1, 5, 40] {
                check_product(&m, &bytes, n, 100 + seed as u64, &device);
            }
        }
    }
}

/// The bias added inside the product's kernel (a few rows, one piece) is the same one f32
/// addition as adding it after: equal bit for bit, also where the addition stays outside
/// (40 rows, several pieces).
#[test]
fn a_bias_added_by_the_product_is_the_bias_added_after_it() {
    let device = wgpu();
    let (rows, cols) = (30, 256);
    for (seed, kind) in KEPT.into_iter().enumerate() {
        let bytes = random_stored(kind, rows, cols, 40 + seed as u64);
        let bias = Tensor::<1>::from_data(
            TensorData::new(random_values(rows, 50 + seed as u64), [rows]),
            &device,
        );
        for pieces in PIECES {
            let m = upload(kind, &bytes, [rows, cols], pieces, &device);
            for n in [1, 5, 40] {
                let x = Tensor::<3>::from_data(
                    TensorData::new(random_values(n * cols, 60 + n as u64), [1, n, cols]),
                    &device,
                );
                let fused = values(m.project(x.clone(), Some(bias.clone())));
                let after = values(m.matmul(x) + bias.clone().unsqueeze::<3>());
                assert_eq!(fused, after, "{kind:?}, {n} rows, pieces {pieces:?}");
            }
        }
    }
}

/// SwiGLU's hidden values read from two matrices of different block types in one launch
/// equal the two products followed by the fused `silu(g)·u` (the same sums in the same order,
/// the same formula): within one rounding of the result, for any compiler's contraction.
/// Several pieces, many rows or a tracked input decline (`None`).
#[test]
fn gate_and_up_in_one_launch_are_the_two_products_and_swiglu() {
    let device = wgpu();
    let (rows, cols) = (30, 256);
    let pairs = [
        (GgmlType::Q4K, GgmlType::Q6K),
        (GgmlType::Q5_0, GgmlType::Q8_0),
        (GgmlType::F16, GgmlType::BF16),
    ];
    for (seed, (gate_kind, up_kind)) in pairs.into_iter().enumerate() {
        let seed = seed as u64;
        let gate_bytes = random_stored(gate_kind, rows, cols, 70 + seed);
        let up_bytes = random_stored(up_kind, rows, cols, 80 + seed);
        let gate = upload(gate_kind, &gate_bytes, [rows, cols], None, &device);
        let up = upload(up_kind, &up_bytes, [rows, cols], None, &device);
        for n in [1, 5] {
            let x = Tensor::<3>::from_data(
                TensorData::new(random_values(n * cols, 90 + n as u64), [1, n, cols]),
                &device,
            );
            let fused = values(gate.gate_up(&up, &x).expect("one launch serves"));
            let apart = values(crate::gpu_fused::swiglu(
                gate.matmul(x.clone()),
                up.matmul(x),
            ));
            for (i, (&a, &b)) in fused.iter().zip(&apart).enumerate() {
                assert!(
                    (a - b).abs() <= f32::EPSILON * b.abs(),
                    "{gate_kind:?}/{up_kind:?} n={n} value {i}: {a} vs {b}"
                );
            }
        }
        let x = Tensor::<3>::from_data(
            TensorData::new(random_values(40 * cols, 99), [1, 40, cols]),
            &device,
        );
        assert!(gate.gate_up(&up, &x).is_none(), "40 rows take the tiles");
        let pieces = upload(gate_kind, &gate_bytes, [rows, cols], Some(7), &device);
        assert!(
            pieces
                .gate_up(&up, &x.slice([0..1, 0..1, 0..cols]))
                .is_none()
        );
    }
}

/// Dense f32 matrices through the same row products: `x·Wᵀ + b` within the bound of its
/// `cols + 1` terms of the f64 product, and SwiGLU's hidden values from two of them equal to
/// those two products followed by the fused `silu(g)·u` (within one rounding). Columns not a
/// multiple of 16, more than one row or a tracked input decline (`None`).
#[test]
fn dense_matrices_take_the_same_row_products() {
    let device = wgpu();
    let (rows, cols) = (37, 96);
    let matrix = |seed| {
        let w = random_values(rows * cols, seed);
        let t = Tensor::<2>::from_data(TensorData::new(w.clone(), [rows, cols]), &device);
        (w, t)
    };
    let ((w, wt), (_, ut)) = (matrix(1), matrix(2));
    let b = random_values(rows, 3);
    let bt = Tensor::<1>::from_data(TensorData::new(b.clone(), [rows]), &device);
    {
        let n = 1;
        let x = random_values(n * cols, 10 + n as u64);
        let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, n, cols]), &device);
        let got = values(super::dense_project_bias(&wt, &xt, &bt).expect("one launch serves"));
        let (mut exact, mut magnitude) = exact_products(&w, &x, cols);
        for (i, (e, m)) in exact.iter_mut().zip(&mut magnitude).enumerate() {
            *e += f64::from(b[i % rows]);
            *m += f64::from(b[i % rows]).abs();
        }
        assert_within(&got, &exact, &magnitude, cols + 1, &format!("dense n={n}"));
        let zero = Tensor::<1>::zeros([rows], &device);
        let fused = values(super::dense_gate_up(&wt, &ut, &xt).expect("one launch serves"));
        let apart = values(crate::gpu_fused::swiglu(
            super::dense_project_bias(&wt, &xt, &zero).unwrap(),
            super::dense_project_bias(&ut, &xt, &zero).unwrap(),
        ));
        for (i, (&a, &b)) in fused.iter().zip(&apart).enumerate() {
            assert!(
                (a - b).abs() <= f32::EPSILON * b.abs(),
                "dense gate/up n={n} value {i}: {a} vs {b}"
            );
        }
    }
    let many = Tensor::<3>::zeros([1, 2, cols], &device);
    assert!(super::dense_project_bias(&wt, &many, &bt).is_none());
    let odd = Tensor::<2>::zeros([rows, 40], &device);
    let x = Tensor::<3>::zeros([1, 1, 40], &device);
    assert!(super::dense_gate_up(&odd, &odd, &x).is_none());
    let graph = device.autodiff();
    let tracked = Tensor::<3>::zeros([1, 1, cols], &graph).require_grad();
    let (wa, ba) = (
        Tensor::<2>::zeros([rows, cols], &graph),
        Tensor::<1>::zeros([rows], &graph),
    );
    assert!(super::dense_project_bias(&wa, &tracked, &ba).is_none());
}

#[test]
fn tiled_products_cover_every_row_across_tiles() {
    let device = wgpu();
    // More rows than one tile of `TILE_BYTES` holds at 256 columns.
    let (rows, cols) = (super::TILE_BYTES / (256 * 4) + 300, 256);
    let kind = GgmlType::Q8_0;
    let bytes = random_blocks(kind, rows, cols, 7);
    let m = upload(kind, &bytes, [rows, cols], None, &device);
    check_product(&m, &bytes, 20, 8, &device);
}

#[test]
fn the_gradient_through_the_blocks_is_dy_times_w() {
    let device = wgpu().autodiff();
    let (rows, cols) = (48, 512);
    for (seed, kind) in [(1, GgmlType::Q4K), (2, GgmlType::Q6K), (3, GgmlType::BF16)] {
        let bytes = random_stored(kind, rows, cols, seed);
        let m = upload(kind, &bytes, [rows, cols], Some(20), &device);
        let w = dequantize(&bytes, kind);
        let slack = products(kind, &bytes, rows * cols);
        // 3 rows (read directly) and 40 (past the direct limit, but tracked for a gradient).
        for n in [3, 40] {
            let x = Tensor::<2>::from_data(
                TensorData::new(random_values(n * cols, seed + 10), [n, cols]),
                &device,
            )
            .require_grad();
            let g_values = random_values(n * rows, seed + 20);
            let g = Tensor::<2>::from_data(TensorData::new(g_values.clone(), [n, rows]), &device);
            let grads = (m.matmul(x.clone()) * g).sum().backward();
            let got = values(x.grad(&grads).unwrap());
            let w_t = transposed(&w, rows, cols);
            let (exact, _) = exact_products(&w_t, &g_values, rows);
            let abs_t: Vec<f32> = w.iter().zip(&slack).map(|(w, p)| w.abs() + p).collect();
            let g_abs: Vec<f32> = g_values.iter().map(|v| v.abs()).collect();
            let (magnitude, _) = exact_products(&transposed(&abs_t, rows, cols), &g_abs, rows);
            assert_within(
                &got,
                &exact,
                &magnitude,
                rows,
                &format!("{kind:?} dx n={n}"),
            );
        }
    }
}

#[test]
fn unreadable_blocks_are_refused_with_the_reason() {
    let device = wgpu();
    let blocks = BlockTensor {
        shape: vec![2, 256],
        kind: GgmlType::Q4K,
        bytes: vec![0; 144 * 3],
    };
    let err = GpuBlocks::from_blocks(&blocks, &device).unwrap_err();
    assert!(err.contains("not 2 rows of 256 Q4K values"), "{err}");
    let blocks = BlockTensor {
        bytes: vec![0; 144 * 2],
        ..blocks
    };
    let err = GpuBlocks::with_buffer_limit(&blocks, &device, 100).unwrap_err();
    assert!(
        err.contains("one row of 144 bytes exceeds a GPU buffer of 100 bytes"),
        "{err}"
    );
    let halves = BlockTensor {
        shape: vec![2, 40],
        kind: GgmlType::F16,
        bytes: vec![0; 160],
    };
    let err = GpuBlocks::from_blocks(&halves, &device).unwrap_err();
    assert!(err.contains("do not read rows of 40 F16 values"), "{err}");
}
