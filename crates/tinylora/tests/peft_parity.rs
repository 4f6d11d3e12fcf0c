//! PEFT interop against fixtures from `tests/fixtures/make_peft_fixtures.py` (peft 0.21):
//! imported TinyLoRA adapters reproduce PEFT's logits, and the LoRA and merged exports keep them.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;
use tinylora::adapter::TinyLora;
use tinylora::adapter::basis::fingerprint;
use tinylora::adapter::export::{export_merged, export_peft_lora};
use tinylora::adapter::file::AdapterFile;
use tinylora::adapter::peft::load_peft_tinylora;
use tinylora::adapter::targets::targets_mut;
use tinylora::checkpoint::Checkpoint;
use tinylora::model::{CausalLm, Mixes};
use tinylora::numerics::logits_tolerance;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::weights::TensorSource;
use tinylora::weights::safetensors::Dtype;
use tinylora::weights::safetensors::SafetensorsFile;

/// The largest max |ours − PEFT| / max |PEFT| for `ids` on `model`: the summation-order bound
/// of its forward pass (PEFT's torch sums in another order; so does an f32 merge or a LoRA
/// re-factorisation, whose one extra rounding per weight is far inside the bound).
fn tolerance(model: &CausalLm, ids: &[u32]) -> f32 {
    logits_tolerance(&model.config, ids.len(), 1.0) as f32
}

const VARIANTS: [&str; 3] = ["full_tie_u13", "partial_tie_u4", "no_tie_u2"];

#[derive(Deserialize)]
struct Expected {
    ids: Vec<u32>,
    last_logits: Vec<f32>,
    base_last_logits: Vec<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn base(device: &Device) -> CausalLm {
    Checkpoint::open(&fixtures().join("qwen2/untied_bf16_tf5"))
        .unwrap()
        .load(device)
        .unwrap()
}

fn expected(name: &str) -> Expected {
    let text =
        std::fs::read_to_string(fixtures().join("peft").join(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn last_logits(model: &CausalLm, mixes: &Mixes, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(vec![0]);
    block_on(to_vec_f32(model.forward_last(
        &[ids.to_vec()],
        &mut cache,
        mixes,
    )))
    .unwrap()
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tinylora-peft-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn imported_adapters_reproduce_peft_logits() {
    let device = Device::flex();
    for name in VARIANTS {
        let exp = expected(name);
        let mut model = base(&device);
        let tol = tolerance(&model, &exp.ids);
        let base_logits = last_logits(&model, &Mixes::none(), &exp.ids);
        assert!(rel_err(&base_logits, &exp.base_last_logits) <= tol);
        let adapter = load_peft_tinylora(&fixtures().join("peft").join(name), &mut model).unwrap();
        adapter.attach(&mut model).unwrap();
        let mixes = adapter.current_mixes(&model).unwrap();
        let err = rel_err(&last_logits(&model, &mixes, &exp.ids), &exp.last_logits);
        println!(
            "{name}: {} trainable, max rel err {err:.2e}",
            adapter.trainable_count()
        );
        assert!(err <= tol, "{name}: {err:e} > {tol:e}");
    }
    let mut model = base(&device);
    let full = load_peft_tinylora(&fixtures().join("peft/full_tie_u13"), &mut model).unwrap();
    assert_eq!(full.trainable_count(), 13, "the paper's 13 parameters");
}

#[test]
fn lora_export_keeps_the_logits() {
    let device = Device::flex();
    for name in VARIANTS {
        let exp = expected(name);
        let mut model = base(&device);
        let adapter = load_peft_tinylora(&fixtures().join("peft").join(name), &mut model).unwrap();
        let dir = temp_dir(name);
        export_peft_lora(&adapter, &dir).unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["lora_alpha"], config["r"]);
        // Apply W += lora_B · lora_A as PEFT would, then compare with PEFT's TinyLoRA logits.
        let mut lora = SafetensorsFile::open(&dir.join("adapter_model.safetensors")).unwrap();
        for target in targets_mut(&mut model, &adapter.config.targets) {
            let path = &target.path;
            let a = lora
                .read(&format!("base_model.model.{path}.lora_A.weight"))
                .unwrap();
            let b = lora
                .read(&format!("base_model.model.{path}.lora_B.weight"))
                .unwrap();
            let (r, d_in, d_out) = (a.shape[0], a.shape[1], b.shape[0]);
            let a = Tensor::<2>::from_data(TensorData::new(a.values, [r, d_in]), &device);
            let b = Tensor::<2>::from_data(TensorData::new(b.values, [d_out, r]), &device);
            let w = target
                .linear
                .weight
                .dense_mut()
                .expect("safetensors weights are f32");
            *w = w.clone() + b.matmul(a);
        }
        let err = rel_err(
            &last_logits(&model, &Mixes::none(), &exp.ids),
            &exp.last_logits,
        );
        let tol = tolerance(&model, &exp.ids);
        assert!(err <= tol, "{name}: {err:e} > {tol:e}");
    }
}

#[test]
fn merged_export_is_a_loadable_checkpoint_with_the_same_logits() {
    let device = Device::flex();
    let exp = expected("partial_tie_u4");
    let mut model = base(&device);
    let adapter = load_peft_tinylora(&fixtures().join("peft/partial_tie_u4"), &mut model).unwrap();
    adapter.attach(&mut model).unwrap();
    let dir = temp_dir("merged");
    let mixes = adapter.current_mixes(&model).unwrap();
    block_on(export_merged(&model, &mixes, &dir, Dtype::F32)).unwrap();
    let merged = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let tol = tolerance(&model, &exp.ids);
    let merged_logits = last_logits(&merged, &Mixes::none(), &exp.ids);
    assert!(rel_err(&merged_logits, &exp.last_logits) <= tol);
    // The live model is untouched and still gives the adapter's logits.
    let live = last_logits(&model, &mixes, &exp.ids);
    assert!(rel_err(&live, &exp.last_logits) <= tol);
}

#[test]
fn adapter_files_refuse_another_base_model() {
    let device = Device::flex();
    let mut model = base(&device);
    let adapter = load_peft_tinylora(&fixtures().join("peft/full_tie_u13"), &mut model).unwrap();
    let print = block_on(fingerprint(&model, &adapter.config.targets)).unwrap();
    let file = adapter.to_file(print);
    let compact = AdapterFile::from_compact(&file.to_compact(), Path::new("#adapter")).unwrap();
    // The PEFT basis was saved, not recomputed: its hash matches the imported one only.
    assert!(
        TinyLora::from_file_with_basis(&compact, adapter.basis.clone(), Path::new("#adapter"))
            .is_ok()
    );
    let mut other = Checkpoint::open(&fixtures().join("qwen2/untied_f16_sharded_hub"))
        .unwrap()
        .load(&device)
        .unwrap();
    let err = block_on(TinyLora::from_file(
        &compact,
        &mut other,
        Path::new("#adapter"),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("trained on another base model"), "{err}");
}
