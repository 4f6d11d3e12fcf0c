//! A dense f32 matrix too large for one GPU buffer (the f32 embedding of a Qwen2.5-0.5B is
//! 519 MiB; WebGPU's default binding limit is 128 MiB), held as pieces of whole rows.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::weight::dense_project;
use crate::gpu_quant::rows_per_buffer;

/// A `[rows, cols]` f32 matrix in row pieces of at most a given number of bytes each.
#[derive(Debug, Clone)]
pub struct SplitDense {
    /// `[rows_per_piece, cols]` each (the last one may be shorter).
    pieces: Vec<Tensor<2>>,
    rows_per_piece: usize,
    rows: usize,
    cols: usize,
}

impl SplitDense {
    /// `values` (`[rows, cols]`, row-major) on `device`, in pieces of at most `limit` bytes
    /// (at least one row each).
    pub fn new(values: &[f32], [rows, cols]: [usize; 2], device: &Device, limit: usize) -> Self {
        let rows_per_piece = rows_per_buffer(cols * 4, limit).max(1);
        let pieces = values
            .chunks(rows_per_piece * cols)
            .map(|chunk| {
                let n = chunk.len() / cols;
                Tensor::from_data(TensorData::new(chunk.to_vec(), [n, cols]), device)
            })
            .collect();
        Self {
            pieces,
            rows_per_piece,
            rows,
            cols,
        }
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes of the largest piece.
    pub fn largest_buffer_bytes(&self) -> usize {
        self.rows_per_piece.min(self.rows) * self.cols * 4
    }

    /// `x·Wᵀ`, piece by piece, the outputs side by side.
    ///
    /// # Shapes
    /// - `x`: `[..., cols]`; output `[..., rows]`
    pub fn project<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let outputs = self
            .pieces
            .iter()
            .map(|piece| dense_project(piece, x.clone()))
            .collect();
        Tensor::cat(outputs, D - 1)
    }

    /// The rows `ids` (an embedding lookup): each piece gives the rows it holds, and one
    /// selection puts them back in the order of `ids`.
    ///
    /// # Shapes
    /// - `ids`: `[batch][seq]`, each `< rows` (checked by the caller); output
    ///   `[batch, seq, cols]`
    pub fn rows(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<3> {
        let batch = ids.len();
        let seq = ids.first().map_or(0, Vec::len);
        let flat: Vec<usize> = ids.iter().flatten().map(|&t| t as usize).collect();
        // Positions grouped by piece, in order within each.
        let mut order: Vec<usize> = (0..flat.len()).collect();
        order.sort_by_key(|&i| flat[i] / self.rows_per_piece);
        let mut gathered = Vec::new();
        for (p, piece) in self.pieces.iter().enumerate() {
            let local: Vec<i32> = order
                .iter()
                .filter(|&&i| flat[i] / self.rows_per_piece == p)
                .map(|&i| (flat[i] - p * self.rows_per_piece) as i32)
                .collect();
            if !local.is_empty() {
                let n = local.len();
                let index = Tensor::<1, Int>::from_data(TensorData::new(local, [n]), device);
                gathered.push(piece.clone().select(0, index));
            }
        }
        let mut back = vec![0i32; flat.len()];
        for (at, &i) in order.iter().enumerate() {
            back[i] = at as i32;
        }
        let back = Tensor::<1, Int>::from_data(TensorData::new(back, [flat.len()]), device);
        Tensor::cat(gathered, 0)
            .select(0, back)
            .reshape([batch, seq, self.cols])
    }

    /// The whole matrix in one tensor, `[rows, cols]` (for export; larger than one buffer).
    pub fn to_dense(&self) -> Tensor<2> {
        Tensor::cat(self.pieces.clone(), 0)
    }
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::SplitDense;
    use crate::device::{BackendKind, init};
    use crate::quant::tests::{assert_within, exact_products, random_values};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn pieces_project_and_look_up_as_the_whole_matrix() {
        let device = init(BackendKind::Wgpu).unwrap();
        let (rows, cols) = (37, 64);
        let w = random_values(rows * cols, 1);
        // Pieces of 5 rows: 8 pieces, the last of 2.
        let m = SplitDense::new(&w, [rows, cols], &device, 5 * cols * 4);
        assert_eq!(m.pieces.len(), 8);
        assert_eq!(m.largest_buffer_bytes(), 5 * cols * 4);
        assert_eq!(values(m.to_dense()), w);
        for n in [1, 40] {
            let x = random_values(n * cols, 2);
            let (exact, magnitude) = exact_products(&w, &x, cols);
            let xt = Tensor::<2>::from_data(TensorData::new(x, [n, cols]), &device);
            let what = format!("x·Wᵀ n={n}");
            assert_within(&values(m.project(xt)), &exact, &magnitude, cols, &what);
        }
        let ids = [vec![36, 0, 5, 4], vec![12, 36, 36, 7]];
        let got = values(m.rows(&ids, &device));
        let want: Vec<f32> = ids
            .iter()
            .flatten()
            .flat_map(|&r| w[r as usize * cols..(r as usize + 1) * cols].to_vec())
            .collect();
        assert_eq!(got, want);
    }
}
