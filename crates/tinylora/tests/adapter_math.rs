//! TinyLoRA on a tiny Qwen2 fixture: a zero `v` is the base model, merged equals unmerged, and
//! the gradients of `v` equal finite differences of the loss.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use tinylora::adapter::config::{Convention, TinyLoraConfig};
use tinylora::adapter::tying::Tying;
use tinylora::adapter::{TinyLora, detach, merge, unmerge};
use tinylora::checkpoint::Checkpoint;
use tinylora::model::{CausalLm, Mixes};
use tinylora::numerics::{
    central_difference, check_derivative, gradient_tolerance, logits_tolerance,
};
use tinylora::optim::global_norm;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::rng::SplitMix64;

const IDS: [u32; 6] = [5, 77, 301, 12, 9, 400];

fn model(device: &Device) -> CausalLm {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    Checkpoint::open(&dir).unwrap().load(device).unwrap()
}

fn logits(model: &CausalLm, mixes: &Mixes) -> Vec<f32> {
    let mut cache = model.new_cache(vec![0]);
    block_on(to_vec_f32(model.forward(
        &[IDS.to_vec()],
        &mut cache,
        mixes,
    )))
    .unwrap()
}

/// The logits of `model` with `adapter` at its own `v`.
fn adapted_logits(model: &CausalLm, adapter: &TinyLora) -> Vec<f32> {
    logits(model, &adapter.current_mixes(model).unwrap())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn random_v(adapter: &mut TinyLora, seed: u64, scale: f64) {
    let mut rng = SplitMix64::new(seed);
    for v in &mut adapter.v {
        for x in v.iter_mut() {
            *x = ((rng.next_f64() - 0.5) * 2.0 * scale) as f32;
        }
    }
}

#[test]
fn zero_v_is_the_base_model_and_merging_changes_nothing() {
    let device = Device::flex();
    for convention in [Convention::Peft, Convention::Verl { alpha: 32.0 }] {
        let mut m = model(&device);
        let base = logits(&m, &Mixes::none());
        let config = TinyLoraConfig {
            tying: Tying::Tiled { n_tie: 3 },
            convention: convention.clone(),
            ..TinyLoraConfig::default()
        };
        let mut adapter = block_on(TinyLora::init(&mut m, config)).unwrap();
        assert_eq!(adapter.basis.modules.len(), 14);
        assert_eq!(
            adapter.trainable_count(),
            13 * 5,
            "14 modules in chunks of 3"
        );
        adapter.attach(&mut m).unwrap();
        assert_eq!(max_abs_diff(&adapted_logits(&m, &adapter), &base), 0.0);

        random_v(&mut adapter, 1, 0.5);
        let unmerged = adapted_logits(&m, &adapter);
        assert!(
            max_abs_diff(&unmerged, &base) > 1e-3,
            "{convention:?}: a non-zero v changes the output"
        );
        // The model holds no v: without mixes, the attached model is the base model.
        assert_eq!(logits(&m, &Mixes::none()), base);
        let mixes = adapter.current_mixes(&m).unwrap();
        merge(&mut m, &mixes);
        // Merged layers skip their adapter path, whatever mixes they are given.
        let merged = logits(&m, &mixes);
        // Merging rounds W + ΔW once and sums in another order: within the summation-order
        // bound of the logits, while a wrong ΔW moves them by far more (checked above).
        let scale = unmerged.iter().fold(0f32, |s, x| s.max(x.abs()));
        let tol = logits_tolerance(&m.config, IDS.len(), f64::from(scale)) as f32;
        assert!(max_abs_diff(&merged, &unmerged) <= tol, "{convention:?}");
        assert!(max_abs_diff(&logits(&m, &Mixes::none()), &unmerged) <= tol);
        unmerge(&mut m);
        assert!(
            max_abs_diff(&adapted_logits(&m, &adapter), &unmerged) <= tol,
            "{convention:?}"
        );
        // Detaching (from the merged state too) gives the base model back.
        merge(&mut m, &mixes);
        detach(&mut m);
        assert!(
            max_abs_diff(&logits(&m, &mixes), &base) <= tol,
            "{convention:?}: detached"
        );
    }
}

#[test]
fn v_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let mut m = model(&device);
    let config = TinyLoraConfig {
        u: 3,
        tying: Tying::Tiled { n_tie: 7 },
        ..TinyLoraConfig::default()
    };
    let mut adapter = block_on(TinyLora::init(&mut m, config)).unwrap();
    random_v(&mut adapter, 2, 1.0);
    adapter.attach(&mut m).unwrap();
    // A fixed random linear functional of the logits.
    let vocab = m.config.vocab_size;
    let mut rng = SplitMix64::new(3);
    let weights: Vec<f32> = (0..IDS.len() * vocab)
        .map(|_| (rng.next_f64() - 0.5) as f32)
        .collect();
    let weights = Tensor::<3>::from_data(TensorData::new(weights, [1, IDS.len(), vocab]), &device);
    let loss = |m: &CausalLm, v: &[Tensor<1>]| -> Tensor<1> {
        let mixes = adapter.mixes(m, v).unwrap();
        let mut cache = m.new_cache(vec![0]);
        (m.forward(&[IDS.to_vec()], &mut cache, &mixes) * weights.clone()).sum()
    };
    let v: Vec<Tensor<1>> = adapter
        .v_tensors(&device)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let grads = loss(&m, &v).backward();
    let analytic: Vec<Vec<f32>> = v
        .iter()
        .map(|t| block_on(to_vec_f32(t.grad(&grads).unwrap())).unwrap())
        .collect();
    assert_eq!(analytic.len(), 2, "14 modules in chunks of 7");
    // Finite differences: within three times their own error estimate (truncation and this
    // machine's rounding), plus the analytic gradient's own summation-order bound.
    for g in 0..adapter.v.len() {
        let tol = gradient_tolerance(&m.config, IDS.len(), global_norm(&analytic[g]));
        for i in 0..adapter.config.u {
            let eval = |delta: f64| {
                let mut values = adapter.v.clone();
                values[g][i] += delta as f32;
                let vs: Vec<Tensor<1>> = values
                    .iter()
                    .map(|x| Tensor::from_data(TensorData::new(x.clone(), [x.len()]), &device))
                    .collect();
                f64::from(block_on(to_vec_f32(loss(&m, &vs))).unwrap()[0])
            };
            let numeric = central_difference(eval, 1e-2);
            check_derivative(f64::from(analytic[g][i]), numeric, tol)
                .unwrap_or_else(|e| panic!("group {g} component {i}: {e}"));
        }
    }
}

#[test]
fn a_shared_link_rebuilds_the_same_adapter() {
    use tinylora::adapter::basis::fingerprint;
    use tinylora::adapter::file::AdapterFile;
    let device = Device::flex();
    let mut m = model(&device);
    let mut adapter = block_on(TinyLora::init(&mut m, TinyLoraConfig::default())).unwrap();
    assert_eq!(adapter.trainable_count(), 13);
    random_v(&mut adapter, 5, 1.0);
    let print = block_on(fingerprint(&m, &adapter.config.targets)).unwrap();
    let link = adapter.to_file(print).to_compact();
    assert!(link.len() < 200, "{link}");
    // A fresh load of the same base model recomputes the same basis from the link.
    let mut fresh = model(&device);
    let origin = Path::new("#adapter");
    let file = AdapterFile::from_compact(&link, origin).unwrap();
    let rebuilt = block_on(TinyLora::from_file(&file, &mut fresh, origin)).unwrap();
    assert_eq!(rebuilt, adapter);
    adapter.attach(&mut m).unwrap();
    rebuilt.attach(&mut fresh).unwrap();
    assert_eq!(
        adapted_logits(&m, &adapter),
        adapted_logits(&fresh, &rebuilt)
    );
}

#[test]
fn an_adapter_for_other_shapes_does_not_attach() {
    let device = Device::flex();
    let mut m = model(&device);
    let mut adapter = block_on(TinyLora::init(&mut m, TinyLoraConfig::default())).unwrap();
    adapter.basis.modules[3].d_in += 1;
    let err = adapter.attach(&mut m).unwrap_err().to_string();
    assert!(
        err.contains("does not fit the model's model.layers.0.self_attn.o_proj"),
        "{err}"
    );
}
