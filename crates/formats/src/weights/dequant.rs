//! Dequantisation of GGML tensor types to f32, block by block, following llama.cpp's
//! reference formulas (`ggml-quants.c`: `dequantize_row_*`).

use half::{bf16, f16};

/// GGML tensor types this reader supports, with their GGUF type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32.
    F32,
    /// 1: f16.
    F16,
    /// 2: 32 values, f16 scale, 4-bit offsets from 8.
    Q4_0,
    /// 6: 32 values, f16 scale, 5-bit offsets from 16.
    Q5_0,
    /// 8: 32 values, f16 scale, i8 values.
    Q8_0,
    /// 12: 256 values in 8 sub-blocks with 6-bit scales and mins, 4-bit values.
    Q4K,
    /// 14: 256 values in 16 sub-blocks with i8 scales, 6-bit values.
    Q6K,
    /// 30: bfloat16.
    BF16,
}

impl GgmlType {
    /// The type for a GGUF type id, or `None` if unsupported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            6 => GgmlType::Q5_0,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q6K => (256, 210),
        }
    }
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises `bytes` (a whole number of blocks) of type `kind` into f32 values.
pub fn dequantize(bytes: &[u8], kind: GgmlType) -> Vec<f32> {
    let (values, size) = kind.block();
    let mut out = Vec::with_capacity(bytes.len() / size * values);
    for block in bytes.chunks_exact(size) {
        match kind {
            GgmlType::F32 => out.push(f32::from_le_bytes([block[0], block[1], block[2], block[3]])),
            GgmlType::F16 => out.push(half_at(block, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([block[0], block[1]]).to_f32()),
            GgmlType::Q4_0 => q4_0(block, &mut out),
            GgmlType::Q5_0 => q5_0(block, &mut out),
            GgmlType::Q8_0 => {
                let d = half_at(block, 0);
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
            GgmlType::Q4K => q4_k(block, &mut out),
            GgmlType::Q6K => q6_k(block, &mut out),
        }
    }
    out
}

fn q4_0(block: &[u8], out: &mut Vec<f32>) {
    let d = half_at(block, 0);
    let qs = &block[2..18];
    out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0F) - 8.0)));
    out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - 8.0)));
}

fn q5_0(block: &[u8], out: &mut Vec<f32>) {
    let d = half_at(block, 0);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..22];
    let low = (0..16).map(|j| {
        let high = ((qh >> j) << 4) & 0x10;
        d * ((u32::from(qs[j] & 0x0F) | high) as f32 - 16.0)
    });
    out.extend(low);
    let high = (0..16).map(|j| {
        let high = (qh >> (j + 12)) & 0x10;
        d * ((u32::from(qs[j] >> 4) | high) as f32 - 16.0)
    });
    out.extend(high);
}

/// The 6-bit scale and min of sub-block `j` packed in Q4_K's 12 scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn q4_k(block: &[u8], out: &mut Vec<f32>) {
    let d = half_at(block, 0);
    let dmin = half_at(block, 2);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        out.extend(q.iter().map(|&b| d1 * f32::from(b & 0x0F) - min1));
        out.extend(q.iter().map(|&b| d2 * f32::from(b >> 4) - min2));
    }
}

fn q6_k(block: &[u8], out: &mut Vec<f32>) {
    let ql_all = &block[0..128];
    let qh_all = &block[128..192];
    let sc_all = &block[192..208];
    let d = half_at(block, 208);
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * q1 as f32;
            y[l + 32] = scale(2) * q2 as f32;
            y[l + 64] = scale(4) * q3 as f32;
            y[l + 96] = scale(6) * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}
