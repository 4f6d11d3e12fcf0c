//! The key/value cache of a batch of left-padded sequences.

use std::collections::HashMap;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::ModelConfig;
use super::rope::{RopeTables, apply_rope, rope_tables};

/// Keys and values of every layer for the tokens seen so far.
///
/// Rows are left-padded: row `b` starts with `pads[b]` padding tokens that no query attends
/// to, and its real tokens have positions `0, 1, ...`.
pub struct KvCache {
    /// Per layer, keys and values `[batch, kv_heads, len, head_dim]` (with a capacity:
    /// `[batch, kv_heads, capacity, head_dim]`, of which the first `len` positions are filled).
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Left padding of each row.
    pub pads: Vec<usize>,
    /// Tokens (padding included) already in the cache.
    pub len: usize,
    /// Positions allocated at a layer's first write, later passes writing theirs in place;
    /// `None`: each pass concatenates its keys and values to the cached ones (a copy of the
    /// whole cache per pass, which is also what autodiff differentiates through).
    pub capacity: Option<usize>,
    /// With a capacity, the RoPE tables and mask of every slot, made at the first decode step
    /// and sliced by the later ones.
    slots: Option<SlotTables>,
}

/// The positions of cache slots `slots` of a row with `pad` padding slots: its real tokens
/// count from 0, padding gets 0.
fn slot_positions(pad: usize, slots: std::ops::Range<usize>) -> Vec<usize> {
    slots.map(|t| t.saturating_sub(pad)).collect()
}

/// RoPE tables and key mask of every slot `0..capacity` of each row of a generation.
struct SlotTables {
    /// `cos`, `sin`: `[batch, 1, capacity, head_dim]`.
    rope: RopeTables,
    /// 0 for the row's real slots, [`MASKED`] for its padding, `[batch, 1, 1, capacity]`.
    keys: Tensor<4>,
}

impl SlotTables {
    /// The tables of `pads`' rows over `capacity` slots.
    fn new(pads: &[usize], capacity: usize, config: &ModelConfig, device: &Device) -> Self {
        let positions: Vec<Vec<usize>> = pads
            .iter()
            .map(|&pad| slot_positions(pad, 0..capacity))
            .collect();
        let keys: Vec<f32> = pads
            .iter()
            .flat_map(|&pad| (0..capacity).map(move |k| if k >= pad { 0.0 } else { MASKED }))
            .collect();
        Self {
            rope: rope_tables(&positions, config, device),
            keys: Tensor::from_data(TensorData::new(keys, [pads.len(), 1, 1, capacity]), device),
        }
    }

    /// The RoPE tables of slot `at` (`[batch, 1, 1, head_dim]`) and the mask of a query there
    /// against slots `0..=at` (`[batch, 1, 1, at + 1]`).
    fn step(&self, at: usize) -> (RopeTables, Tensor<4>) {
        let [b, _, _, d] = self.rope.cos.dims();
        let slot = [0..b, 0..1, at..at + 1, 0..d];
        (
            RopeTables {
                cos: self.rope.cos.clone().slice(slot.clone()),
                sin: self.rope.sin.clone().slice(slot),
            },
            self.keys.clone().slice([0..b, 0..1, 0..1, 0..at + 1]),
        )
    }

    /// Keeps rows `index` (as [`KvCache::keep_rows`]).
    fn keep_rows(&mut self, index: Tensor<1, Int>) {
        self.rope.cos = self.rope.cos.clone().select(0, index.clone());
        self.rope.sin = self.rope.sin.clone().select(0, index.clone());
        self.keys = self.keys.clone().select(0, index);
    }
}

/// One layer's keys and values in a [`KvCache`], for one pass.
pub struct LayerKv<'a> {
    entry: &'a mut Option<(Tensor<4>, Tensor<4>)>,
    len: usize,
    capacity: Option<usize>,
}

impl LayerKv<'_> {
    /// Adds this pass's keys, rotated by `rope`, and values (`[batch, kv_heads, seq,
    /// head_dim]`) after the cached positions and returns those of all positions (`[batch,
    /// kv_heads, len + seq, head_dim]`; with a capacity, views of the buffers, which the next
    /// pass writes in place once these views are dropped). With a capacity on a GPU outside any
    /// autodiff graph, one launch rotates the keys into the buffer and copies the values.
    pub fn append(self, k: Tensor<4>, v: Tensor<4>, rope: &RopeTables) -> (Tensor<4>, Tensor<4>) {
        let [b, h, s, d] = k.dims();
        let end = self.len + s;
        let fits =
            |c: &usize| end <= *c && self.entry.as_ref().is_none_or(|(k0, _)| k0.dims()[2] == *c);
        if let Some(capacity) = self.capacity.filter(fits) {
            // Two buffers (not one cloned: a shared buffer is copied before it is written).
            let buffer = || Tensor::<4>::zeros([b, h, capacity, d], &k.device());
            let caches = self.entry.take().unwrap_or_else(|| (buffer(), buffer()));
            let (k0, v0) = if crate::gpu_fused::serves(&k) && !v.is_tracked() {
                crate::gpu_fused::rope_append(caches, k, v, rope, self.len)
            } else {
                let written = [0..b, 0..h, self.len..end, 0..d];
                (
                    caches.0.slice_assign(written.clone(), apply_rope(k, rope)),
                    caches.1.slice_assign(written, v),
                )
            };
            let filled = [0..b, 0..h, 0..end, 0..d];
            let views = (k0.clone().slice(filled.clone()), v0.clone().slice(filled));
            *self.entry = Some((k0, v0));
            return views;
        }
        let k = apply_rope(k, rope);
        let (k, v) = match self.entry.take() {
            Some((k0, v0)) => {
                let filled = [0..b, 0..h, 0..self.len, 0..d];
                let (k0, v0) = match k0.dims()[2] == self.len {
                    true => (k0, v0),
                    false => (k0.slice(filled.clone()), v0.slice(filled)),
                };
                (Tensor::cat(vec![k0, k], 2), Tensor::cat(vec![v0, v], 2))
            }
            None => (k, v),
        };
        *self.entry = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// Added to the attention scores of masked keys (finite, so fully masked rows stay finite).
const MASKED: f32 = -1e30;

impl KvCache {
    /// An empty cache for `layers` layers and rows with the given left padding.
    pub fn new(layers: usize, pads: Vec<usize>) -> Self {
        Self {
            layers: vec![None; layers],
            pads,
            len: 0,
            capacity: None,
            slots: None,
        }
    }

    /// An empty cache like [`new`](Self::new) whose buffers hold `capacity` slots per row,
    /// written in place.
    pub fn with_capacity(layers: usize, pads: Vec<usize>, capacity: usize) -> Self {
        Self {
            capacity: Some(capacity),
            ..Self::new(layers, pads)
        }
    }

    /// The RoPE tables and attention mask of the next `seq` tokens. A decode step (one token
    /// per row, none of them padding) of a cache with room left slices them from tables made
    /// once per generation, so that it uploads nothing but its token ids; other passes build
    /// them on the host ([`positions`](Self::positions), [`mask`](Self::mask)).
    ///
    /// # Shapes
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim]`; mask `[batch, 1, seq, len + seq]`
    pub fn pass_tables(
        &mut self,
        seq: usize,
        config: &ModelConfig,
        device: &Device,
    ) -> (RopeTables, Tensor<4>) {
        let at = self.len;
        let step = seq == 1 && self.pads.iter().all(|&pad| pad <= at);
        match self.capacity.filter(|&c| step && at < c) {
            Some(capacity) => {
                let pads = &self.pads;
                self.slots
                    .get_or_insert_with(|| SlotTables::new(pads, capacity, config, device))
                    .step(at)
            }
            None => (
                rope_tables(&self.positions(seq), config, device),
                self.mask(seq, device),
            ),
        }
    }

    /// This cache's slot for layer `layer` in the next pass.
    pub fn layer(&mut self, layer: usize) -> LayerKv<'_> {
        LayerKv {
            entry: &mut self.layers[layer],
            len: self.len,
            capacity: self.capacity,
        }
    }

    /// Keeps only the rows `rows` (in that order): finished rows leave a batch being decoded.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        let ids: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        for (k, v) in self.layers.iter_mut().flatten() {
            let index =
                Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &k.device());
            *k = k.clone().select(0, index.clone());
            *v = v.clone().select(0, index);
        }
        if let Some(slots) = &mut self.slots {
            let index = TensorData::new(ids.clone(), [ids.len()]);
            slots.keep_rows(Tensor::from_data(index, &slots.keys.device()));
        }
        self.pads = rows.iter().map(|&r| self.pads[r]).collect();
    }

    /// The rows of `tokens` that differ in their tokens or their padding: the index of each
    /// distinct row's first occurrence, and for every row the index of its distinct row in
    /// that list.
    pub fn distinct_rows(&self, tokens: &[Vec<u32>]) -> (Vec<usize>, Vec<usize>) {
        let mut seen: HashMap<(&[u32], usize), usize> = HashMap::new();
        let mut firsts = Vec::new();
        let of_row = tokens
            .iter()
            .zip(&self.pads)
            .enumerate()
            .map(|(i, (row, &pad))| {
                *seen.entry((row.as_slice(), pad)).or_insert_with(|| {
                    firsts.push(i);
                    firsts.len() - 1
                })
            })
            .collect();
        (firsts, of_row)
    }

    /// Positions of the next `seq` tokens of each row (`[batch][seq]`); padding gets 0.
    pub fn positions(&self, seq: usize) -> Vec<Vec<usize>> {
        self.pads
            .iter()
            .map(|&pad| slot_positions(pad, self.len..self.len + seq))
            .collect()
    }

    /// The additive attention mask for the next `seq` queries against all `len + seq` keys:
    /// causal, and padding keys masked (a padding query sees only itself).
    ///
    /// # Shapes
    /// - output: `[batch, 1, seq, len + seq]`
    pub fn mask(&self, seq: usize, device: &Device) -> Tensor<4> {
        let total = self.len + seq;
        let mut values = Vec::with_capacity(self.pads.len() * seq * total);
        for &pad in &self.pads {
            for q in self.len..total {
                for k in 0..total {
                    let visible = k <= q && (k >= pad || k == q);
                    values.push(if visible { 0.0 } else { MASKED });
                }
            }
        }
        Tensor::from_data(
            TensorData::new(values, [self.pads.len(), 1, seq, total]),
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readback::{block_on, to_vec_f32};

    fn values(device: &Device, dims: [usize; 4], seed: usize) -> Tensor<4> {
        let n = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| ((i * 31 + seed * 17) % 97) as f32).collect();
        Tensor::from_data(TensorData::new(data, dims), device)
    }

    /// The tables a decode step slices are those built on the host for that step, bit for
    /// bit, rows leaving half-way included; the prefill and a step past the capacity take the
    /// host's.
    #[test]
    fn decode_steps_slice_the_tables_the_host_would_build() {
        let device = Device::flex();
        let config = ModelConfig::qwen2(40, 16, 24, 2, 4, 2, 10000.0, true);
        let (pads, capacity) = (vec![0, 2, 1], 8);
        let mut cache = KvCache::with_capacity(1, pads.clone(), capacity);
        let mut host = KvCache::new(1, pads);
        let read = |t: Tensor<4>| block_on(to_vec_f32(t)).unwrap();
        for (pass, seq) in [4, 1, 1, 1, 1, 1].into_iter().enumerate() {
            if pass == 3 {
                cache.keep_rows(&[2, 0]);
                host.keep_rows(&[2, 0]);
            }
            let (rope, mask) = cache.pass_tables(seq, &config, &device);
            let want_rope = rope_tables(&host.positions(seq), &config, &device);
            assert_eq!(read(rope.cos), read(want_rope.cos), "pass {pass}");
            assert_eq!(read(rope.sin), read(want_rope.sin), "pass {pass}");
            assert_eq!(read(mask), read(host.mask(seq, &device)), "pass {pass}");
            assert_eq!(cache.slots.is_some(), pass >= 1, "pass {pass}");
            cache.len += seq;
            host.len += seq;
        }
        assert_eq!(cache.len, capacity + 1);
    }

    /// The same passes (a prefill of 5, then single tokens, rows leaving half-way) through a
    /// cache with capacity and through one that concatenates: the same keys (rotated) and
    /// values at every pass, bit for bit (integer values: every rounding exact), on the CPU
    /// and on wgpu, where the cache with capacity takes the one-launch write. A tensor still
    /// holding a cache's buffer keeps its values (the write goes to a copy).
    #[test]
    fn writing_in_place_gives_what_concatenating_gives() {
        use crate::device::{BackendKind, init};
        for device in [Device::flex(), init(BackendKind::Wgpu).unwrap()] {
            let mut caches = [KvCache::new(1, vec![0; 3]), KvCache::new(1, vec![0; 3])];
            caches[0].capacity = Some(9);
            let mut rows = 3;
            for (pass, seq) in [5, 1, 1, 1, 1].into_iter().enumerate() {
                if pass == 3 {
                    rows = 2;
                    caches.iter_mut().for_each(|c| c.keep_rows(&[2, 0]));
                }
                let tables = RopeTables {
                    cos: values(&device, [rows, 1, seq, 4], pass + 100),
                    sin: values(&device, [rows, 1, seq, 4], pass + 150),
                };
                let read = |cache: &mut KvCache| {
                    let (k, v) = cache.layer(0).append(
                        values(&device, [rows, 2, seq, 4], pass),
                        values(&device, [rows, 2, seq, 4], pass + 50),
                        &tables,
                    );
                    cache.len += seq;
                    (
                        block_on(to_vec_f32(k)).unwrap(),
                        block_on(to_vec_f32(v)).unwrap(),
                    )
                };
                let held = (pass == 2).then(|| caches[0].layers[0].clone().unwrap());
                let before = held.clone().map(|(k, _)| block_on(to_vec_f32(k)).unwrap());
                let in_place = read(&mut caches[0]);
                assert_eq!(in_place, read(&mut caches[1]), "pass {pass}");
                assert_eq!(in_place.0.len(), rows * 2 * caches[0].len * 4);
                if let Some((k, _)) = held {
                    assert_eq!(
                        block_on(to_vec_f32(k)).ok(),
                        before,
                        "a held buffer changed"
                    );
                }
            }
            // The buffers stayed the capacity's size; a pass past it concatenates.
            assert_eq!(caches[0].layers[0].as_ref().unwrap().0.dims(), [2, 2, 9, 4]);
            let tables = RopeTables {
                cos: values(&device, [2, 1, 1, 4], 109),
                sin: values(&device, [2, 1, 1, 4], 159),
            };
            let (k, _) = caches[0].layer(0).append(
                values(&device, [2, 2, 1, 4], 9),
                values(&device, [2, 2, 1, 4], 59),
                &tables,
            );
            assert_eq!(k.dims(), [2, 2, 10, 4]);
        }
    }
}
