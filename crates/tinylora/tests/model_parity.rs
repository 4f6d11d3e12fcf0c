//! Golden parity with Hugging Face transformers (llm.c style): tiny random Qwen2, Qwen3 and
//! Llama 3 checkpoints made by `tests/fixtures/make_model_fixtures.py`, with transformers'
//! float32 logits and greedy continuations, compared tensor by tensor with a named tolerance.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Deserialize;
use tinylora::checkpoint::Checkpoint;
use tinylora::device::{BackendKind, init};
use tinylora::generate::{GenerateConfig, generate};
use tinylora::model::config::ModelConfig;
use tinylora::model::load::gpu_footprint;
use tinylora::model::{CausalLm, Mixes};
use tinylora::numerics::logits_tolerance;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::sampling::SamplingConfig;

/// max |ours − ref| / max |ref| on wgpu (lavapipe in CI): above the summation-order bound of
/// these models (`numerics::logits_tolerance`, 3.8e-4 here), since WGSL allows `exp` and
/// `inverseSqrt` a few ULP more than the CPU's. On the CPU the bound itself is the tolerance.
const WGPU_TOLERANCE: f64 = 1e-3;

/// `family/name` under `tests/fixtures`.
const VARIANTS: [&str; 5] = [
    "qwen2/tied_f32_hub",
    "qwen2/untied_bf16_tf5",
    "qwen2/untied_f16_sharded_hub",
    "qwen3/tied_bf16_tf5",
    "llama3/untied_f32_hub_biases",
];

#[derive(Deserialize)]
struct Expected {
    logits: Vec<LogitsCase>,
    greedy: Vec<GreedyCase>,
}

#[derive(Deserialize)]
struct LogitsCase {
    ids: Vec<u32>,
    last_logits: Vec<f32>,
}

#[derive(Deserialize)]
struct GreedyCase {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn load(name: &str, device: &Device) -> (CausalLm, Expected) {
    let dir = fixture(name);
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (
        Checkpoint::open(&dir).unwrap().load(device).unwrap(),
        expected,
    )
}

fn max_rel_err(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = reference
        .iter()
        .fold(0.0f64, |m, &r| m.max(f64::from(r).abs()));
    let err = ours
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (&a, &b)| m.max(f64::from(a - b).abs()));
    err / scale
}

fn last_logits(model: &CausalLm, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(vec![0]);
    block_on(to_vec_f32(model.forward_last(
        &[ids.to_vec()],
        &mut cache,
        &Mixes::none(),
    )))
    .unwrap()
}

fn greedy(model: &CausalLm, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<u32>> {
    let config = GenerateConfig {
        max_new_tokens: steps,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        stop_tokens: Vec::new(),
    };
    block_on(generate(model, &Mixes::none(), prompts, &config, |_, _| {}))
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect()
}

/// Compares every fixture's logits with transformers'; `tolerance` of the model and the number
/// of positions.
fn check_logits(kind: BackendKind, tolerance: impl Fn(&ModelConfig, usize) -> f64) {
    let device = init(kind).unwrap();
    for name in VARIANTS {
        let (model, expected) = load(name, &device);
        for case in &expected.logits {
            let tolerance = tolerance(&model.config, case.ids.len());
            let err = max_rel_err(&last_logits(&model, &case.ids), &case.last_logits);
            println!(
                "{kind} {name} len {}: max rel err {err:.2e}",
                case.ids.len()
            );
            assert!(
                err <= tolerance,
                "{kind} {name} ids {:?}: {err:.3e} > {tolerance:e}",
                case.ids
            );
        }
    }
}

/// On a GPU the f16/bf16 checkpoints' matrices stay 16-bit (2 bytes a value; norms and biases
/// f32), and the footprint the page checks before uploading is what loading allocates; on the
/// CPU they are f32. (Their logits are checked against transformers' above.)
#[test]
fn sixteen_bit_matrices_stay_16_bit_on_a_gpu() {
    let (wgpu, cpu) = (
        init(BackendKind::Wgpu).unwrap(),
        init(BackendKind::Cpu).unwrap(),
    );
    for (name, kind) in [
        ("qwen2/untied_bf16_tf5", "BF16"),
        ("qwen2/untied_f16_sharded_hub", "F16"),
        ("qwen3/tied_bf16_tf5", "BF16"),
    ] {
        let checkpoint = Checkpoint::open(&fixture(name)).unwrap();
        let footprint = gpu_footprint(&checkpoint.config, &*checkpoint.source);
        let model = checkpoint.load(&wgpu).unwrap();
        let storage = model.weight_storage();
        let kinds: Vec<&str> = storage.bytes.keys().map(String::as_str).collect();
        assert_eq!(kinds, [kind, "f32"], "{name}");
        let values = storage.bytes[kind] / 2 + storage.bytes["f32"] / 4;
        assert_eq!(values, model.parameter_count(), "{name}");
        assert!(
            storage.bytes[kind] > storage.bytes["f32"],
            "{name}: {storage:?}"
        );
        assert_eq!(footprint.total_bytes, storage.total_bytes(), "{name}");
        assert_eq!(footprint.largest.1, storage.largest.1, "{name}");
        let on_cpu = Checkpoint::open(&fixture(name))
            .unwrap()
            .load(&cpu)
            .unwrap();
        let kinds: Vec<String> = on_cpu.weight_storage().bytes.into_keys().collect();
        assert_eq!(kinds, ["f32"], "{name} on the CPU");
    }
}

#[test]
fn cpu_logits_match_transformers() {
    check_logits(BackendKind::Cpu, |config, positions| {
        logits_tolerance(config, positions, 1.0)
    });
}

#[test]
fn wgpu_logits_match_transformers() {
    check_logits(BackendKind::Wgpu, |_, _| WGPU_TOLERANCE);
}

#[test]
fn greedy_tokens_match_transformers() {
    let device = init(BackendKind::Cpu).unwrap();
    for name in VARIANTS {
        let (model, expected) = load(name, &device);
        for case in &expected.greedy {
            let ours = greedy(
                &model,
                std::slice::from_ref(&case.prompt),
                case.tokens.len(),
            );
            assert_eq!(ours[0], case.tokens, "{name} prompt {:?}", case.prompt);
        }
    }
}

/// The fixtures exercise what sets each family apart: dropping Qwen3's q/k norms or Llama's
/// RoPE scaling moves the logits far outside the tolerance the tests above apply.
#[test]
fn the_family_switches_matter() {
    use tinylora::model::config::RopeScaling;
    let device = init(BackendKind::Cpu).unwrap();
    let far_off = |model: &CausalLm, expected: &Expected, what: &str| {
        let case = &expected.logits[2];
        let err = max_rel_err(&last_logits(model, &case.ids), &case.last_logits);
        let tol = logits_tolerance(&model.config, case.ids.len(), 1.0);
        assert!(err > 100.0 * tol, "without {what}: {err:e}");
    };
    let (mut qwen3, expected) = load("qwen3/tied_bf16_tf5", &device);
    assert_eq!(
        qwen3.config.head_dim * qwen3.config.num_attention_heads,
        2 * qwen3.config.hidden_size
    );
    for layer in &mut qwen3.model.layers {
        layer.self_attn.q_norm = None;
        layer.self_attn.k_norm = None;
    }
    far_off(&qwen3, &expected, "q/k norms");
    let (mut llama, expected) = load("llama3/untied_f32_hub_biases", &device);
    assert!(matches!(
        llama.config.rope_scaling,
        Some(RopeScaling::Llama3 { .. })
    ));
    assert!(llama.config.layout.o_bias && llama.config.layout.mlp_bias);
    llama.config.rope_scaling = None;
    far_off(&llama, &expected, "llama3 RoPE scaling");
}

#[test]
fn batched_generation_equals_one_by_one() {
    let device = init(BackendKind::Cpu).unwrap();
    let (model, _) = load("qwen2/untied_bf16_tf5", &device);
    // Repeated prompts share their prefill.
    let prompts = vec![
        vec![3, 1, 4, 1, 5, 9, 2, 6],
        vec![7],
        vec![3, 1, 4, 1, 5, 9, 2, 6],
        vec![100, 200, 300],
        vec![7],
    ];
    let batched = greedy(&model, &prompts, 12);
    for (prompt, tokens) in prompts.iter().zip(&batched) {
        assert_eq!(&greedy(&model, std::slice::from_ref(prompt), 12)[0], tokens);
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    let device = init(BackendKind::Cpu).unwrap();
    let (model, _) = load("qwen2/tied_f32_hub", &device);
    let ids: Vec<u32> = vec![9, 8, 7, 6, 5, 4, 3];
    let mut cache = model.new_cache(vec![0]);
    block_on(to_vec_f32(model.forward_last(
        &[ids[..3].to_vec()],
        &mut cache,
        &Mixes::none(),
    )))
    .unwrap();
    let mut incremental = Vec::new();
    for &t in &ids[3..] {
        incremental = block_on(to_vec_f32(model.forward_last(
            &[vec![t]],
            &mut cache,
            &Mixes::none(),
        )))
        .unwrap();
    }
    let full = last_logits(&model, &ids);
    let tol = logits_tolerance(&model.config, ids.len(), 1.0);
    let err = max_rel_err(&incremental, &full);
    assert!(err <= tol, "{err:e} > {tol:e}");
}

/// `--weights q8`: every matrix of an f16/bf16/f32 checkpoint becomes Q8_0 blocks on the CPU,
/// each value within `d·(½ + 127·2⁻¹¹)` of the checkpoint's (`d` = its block's max / 127), and
/// the model still runs; its logits' distance from transformers' is printed (the accuracy cost).
#[test]
fn q8_weights_stay_within_their_rounding_bound() {
    use tinylora::model::load::LoadOptions;
    use tinylora::model::weight::Weight;
    use tinylora::quant::WeightFormat;
    let device = init(BackendKind::Cpu).unwrap();
    for name in VARIANTS {
        let dense = Checkpoint::open(&fixture(name))
            .unwrap()
            .load(&device)
            .unwrap();
        let options = LoadOptions {
            weights: WeightFormat::Q8_0,
            ..LoadOptions::default()
        };
        let q8 = Checkpoint::open(&fixture(name))
            .unwrap()
            .load_with(&device, &options)
            .unwrap();
        let (a, b) = (&dense.model.layers[0], &q8.model.layers[0]);
        let pairs = [
            (&dense.model.embed_tokens, &q8.model.embed_tokens),
            (&a.self_attn.q_proj.weight, &b.self_attn.q_proj.weight),
            (&a.self_attn.v_proj.weight, &b.self_attn.v_proj.weight),
            (&a.mlp.down_proj.weight, &b.mlp.down_proj.weight),
        ];
        for (i, (f32_weight, q8_weight)) in pairs.into_iter().enumerate() {
            assert!(matches!(q8_weight, Weight::Blocks(_)), "{name} weight {i}");
            assert!(
                q8_weight.size_bytes() * 3 < f32_weight.size_bytes(),
                "{name} weight {i}"
            );
            let values = |w: &Weight| {
                w.to_dense(&device)
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap()
            };
            let (x, y) = (values(f32_weight), values(q8_weight));
            for (block, (x, y)) in x.chunks_exact(32).zip(y.chunks_exact(32)).enumerate() {
                let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                for (x, y) in x.iter().zip(y) {
                    let bound = d * (0.5 + 127.0 / 2048.0);
                    assert!(
                        (x - y).abs() <= bound,
                        "{name} weight {i} block {block}: {x} → {y}"
                    );
                }
            }
        }
        let (_, expected) = load(name, &device);
        let case = &expected.logits[0];
        let ours = last_logits(&q8, &case.ids);
        println!(
            "{name}: Q8_0 weights, max rel err of the last logits vs transformers {:.2e}",
            max_rel_err(&ours, &case.last_logits)
        );
    }
}

/// A checkpoint speaks the chat template of the `tokenizer_config.json` beside it (Qwen3's
/// here), Qwen2.5's when there is none; a broken one is an error naming it.
#[test]
fn checkpoints_carry_their_chat_template() {
    use tinylora::tokenizer::ChatTemplate;
    let dir = std::env::temp_dir().join(format!("tinylora-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("qwen3/tied_bf16_tf5").join(file), dir.join(file)).unwrap();
    }
    assert_eq!(
        Checkpoint::open(&dir).unwrap().chat_template,
        ChatTemplate::Qwen25
    );
    let source = std::fs::read_to_string(fixture("chat/qwen3.jinja")).unwrap();
    let config = serde_json::json!({"chat_template": source, "eos_token": "<|im_end|>"});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let template = Checkpoint::open(&dir).unwrap().chat_template;
    // Qwen3 adds no default system prompt.
    assert_eq!(
        template.render(None, "Hi").unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    std::fs::write(dir.join("tokenizer_config.json"), "{\"chat_template\": 3}").unwrap();
    let err = Checkpoint::open(&dir).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer_config.json: chat_template must be"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
