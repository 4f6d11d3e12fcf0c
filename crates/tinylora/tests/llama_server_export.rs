//! The llama-server export: the base model written as GGUF reads back into the same model
//! (same logits: bit for bit for Qwen2, within the bound for Llama 3 with its permuted q/k rows
//! and RoPE divisors), and the LoRA files, one per trainable float, add up to the
//! adapter's ΔW: `Σᵢ vᵢ·lora_bᵢ·lora_a` equals the merged weight minus the base weight, for
//! both conventions and several tie groups.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::{Convention, TinyLoraConfig};
use tinylora::adapter::llama_server::{MODEL_FILE, base_gguf, float_lora, lora_file};
use tinylora::adapter::tying::Tying;
use tinylora::checkpoint::Checkpoint;
use tinylora::model::{CausalLm, Mixes};
use tinylora::numerics::{F32_UNIT_ROUNDOFF, logits_tolerance, reorder_tolerance};
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::rng::SplitMix64;
use tinylora::weights::TensorSource;
use tinylora::weights::gguf::{GgufFile, GgufSource, gguf_name};

fn toy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tinylora-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn last_logits(model: &CausalLm) -> Vec<f32> {
    let mut cache = model.new_cache(vec![0]);
    let ids = vec![5, 77, 301, 12, 9, 400];
    block_on(to_vec_f32(model.forward_last(
        &[ids],
        &mut cache,
        &Mixes::none(),
    )))
    .unwrap()
}

#[test]
fn the_base_model_reads_back_from_its_gguf() {
    let device = Device::flex();
    let model = Checkpoint::open(&toy()).unwrap().load(&device).unwrap();
    let json = std::fs::read_to_string(toy().join("tokenizer.json")).unwrap();
    let dir = temp("llama-base");
    let path = dir.join(MODEL_FILE);
    block_on(base_gguf(&model, &json, &toy().join("tokenizer.json")))
        .unwrap()
        .write(&path)
        .unwrap();
    let again = Checkpoint::open(&path).unwrap();
    assert_eq!(again.config.eos_token_ids, model.config.eos_token_ids);
    let again = again.load(&device).unwrap();
    assert_eq!(last_logits(&again), last_logits(&model));
}

/// A Llama 3 model (attention biases, `llama3` RoPE scaling) written as GGUF — q/k rows
/// interleaved, scaling as `rope_freqs.weight` — reads back to the same logits within the
/// summation-order bound (the divisors round the frequencies once more in f32).
#[test]
fn a_llama_model_reads_back_from_its_gguf() {
    let device = Device::flex();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/llama3/untied_f32_hub_biases");
    let model = Checkpoint::open(&fixture).unwrap().load(&device).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..model.config.vocab_size)
        .map(|i| (format!("t{i}"), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": []}});
    let dir = temp("llama-llama3");
    let path = dir.join(MODEL_FILE);
    block_on(base_gguf(
        &model,
        &json.to_string(),
        &dir.join("tokenizer.json"),
    ))
    .unwrap()
    .write(&path)
    .unwrap();
    let again = Checkpoint::open(&path).unwrap().load(&device).unwrap();
    let (a, b) = (last_logits(&again), last_logits(&model));
    let largest = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let tol = logits_tolerance(&model.config, 6, f64::from(largest));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    println!("Llama 3 through GGUF: max |Δlogit| {err:e}, bound {tol:e}");
    assert!(f64::from(err) <= tol);
}

#[test]
fn the_float_loras_add_up_to_the_adapters_delta() {
    let device = Device::flex();
    let dir = temp("llama-loras");
    for (convention, tying) in [
        (Convention::Peft, Tying::Tiled { n_tie: 7 }),
        (Convention::Verl { alpha: 4.0 }, Tying::Tiled { n_tie: 14 }),
    ] {
        let mut model = Checkpoint::open(&toy()).unwrap().load(&device).unwrap();
        let config = TinyLoraConfig {
            r: 4,
            u: 3,
            tying,
            convention,
            ..TinyLoraConfig::default()
        };
        let mut adapter = block_on(TinyLora::init(&mut model, config)).unwrap();
        let mut rng = SplitMix64::new(11);
        for x in adapter.v.iter_mut().flatten() {
            *x = (rng.next_f64() - 0.5) as f32;
        }
        adapter.attach(&mut model).unwrap();
        let merged = model.named_tensors(&adapter.current_mixes(&model).unwrap());
        let base = model.named_tensors(&Mixes::none());
        let u = adapter.config.u;
        // Σᵢ vᵢ·lora_bᵢ·lora_a per module, in f64, from the files as llama.cpp reads them.
        let mut checked = 0;
        for m in &adapter.basis.modules {
            let r = m.a.len() / m.d_in;
            let name = gguf_name(&format!("{}.weight", m.path)).unwrap();
            let mut sum = vec![0f64; m.d_out * m.d_in];
            let mut magnitude = vec![0f64; m.d_out * m.d_in];
            for k in 0..u {
                let index = m.group * u + k;
                let path = dir.join(lora_file(index));
                float_lora(&adapter, m.group, k, "qwen2")
                    .unwrap()
                    .write(&path)
                    .unwrap();
                let mut file = GgufSource::new(GgufFile::open(&path).unwrap());
                let a = file.read(&format!("{name}.lora_a")).unwrap();
                let b = file.read(&format!("{name}.lora_b")).unwrap();
                assert_eq!(
                    (a.shape.clone(), b.shape.clone()),
                    (vec![r, m.d_in], vec![m.d_out, r])
                );
                let vk = f64::from(adapter.v[m.group][k]);
                for o in 0..m.d_out {
                    for c in 0..m.d_in {
                        for j in 0..r {
                            let t = vk
                                * f64::from(b.values[o * r + j])
                                * f64::from(a.values[j * m.d_in + c]);
                            sum[o * m.d_in + c] += t;
                            magnitude[o * m.d_in + c] += t.abs();
                        }
                    }
                }
            }
            let weight = format!("{}.weight", m.path);
            let find = |set: &[(String, Vec<usize>, burn::tensor::Tensor<1>)]| {
                let (_, _, t) = set.iter().find(|(n, _, _)| *n == weight).unwrap();
                block_on(to_vec_f32(t.clone())).unwrap()
            };
            let (w1, w0) = (find(&merged), find(&base));
            for i in 0..sum.len() {
                let delta = f64::from(w1[i]) - f64::from(w0[i]);
                // The merged ΔW: two chained reductions of r terms, then W + ΔW rounded once.
                let tol = reorder_tolerance(2, u * r, magnitude[i])
                    + 2.0 * F32_UNIT_ROUNDOFF * (f64::from(w0[i].abs()) + sum[i].abs());
                assert!(
                    (delta - sum[i]).abs() <= tol,
                    "{weight}[{i}]: {delta} vs {}",
                    sum[i]
                );
            }
            checked += 1;
        }
        assert_eq!(checked, adapter.basis.modules.len());
    }
}
