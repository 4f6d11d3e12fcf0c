//! GGUF against the `gguf` Python package (llama.cpp's reference formulas) and transformers:
//! fixtures from `tests/fixtures/make_gguf_fixtures.py`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tinylora::checkpoint::Checkpoint;
use tinylora::device::{BackendKind, init};
use tinylora::model::Mixes;
use tinylora::model::load::{LoadOptions, gpu_footprint};
use tinylora::numerics::logits_tolerance;
use tinylora::quant::Activations;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::weights::dequant::{GgmlType, dequantize};

#[derive(Deserialize)]
struct DequantCase {
    #[serde(rename = "type")]
    name: String,
    type_id: u32,
    hex: String,
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct Expected {
    ids: Vec<u32>,
    last_logits: Vec<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn dequantization_matches_the_gguf_package_block_by_block() {
    let text = std::fs::read_to_string(fixtures().join("gguf/dequant.json")).unwrap();
    let cases: Vec<DequantCase> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        cases.len(),
        7,
        "one case per supported quantised or half type"
    );
    for case in cases {
        let kind = GgmlType::from_id(case.type_id).unwrap();
        let ours = dequantize(&unhex(&case.hex), kind);
        assert_eq!(ours.len(), case.values.len(), "{}", case.name);
        let (per_block, _) = kind.block();
        for (i, (a, b)) in ours.iter().zip(&case.values).enumerate() {
            let tol = 1e-6 * b.abs().max(1e-3);
            assert!(
                (a - b).abs() <= tol,
                "{} block {} value {}: ours {a}, reference {b}",
                case.name,
                i / per_block,
                i % per_block
            );
        }
    }
}

/// max |ours − ref| / max |ref| on wgpu (lavapipe in CI), where the blocks stay quantised on
/// the GPU: as in `model_parity.rs`, above the summation-order bound since WGSL allows `exp`
/// and `inverseSqrt` a few ULP more than the CPU's.
const WGPU_TOLERANCE: f64 = 1e-3;

/// Each family's GGUF fixture (file, expected logits, the safetensors fixture it was made from)
/// against transformers' logits for its dequantised weights: Qwen2 with mixed block types,
/// Qwen3's q/k norms, Llama's interleaved q/k rows and RoPE divisors. On the CPU the blocks
/// are multiplied by the CPU kernels, on wgpu by the GPU's (`gpu_quant`).
fn check_gguf_logits(backend: BackendKind) {
    for (file, expected, reference) in [
        ("tiny-qwen2.gguf", "expected.json", "qwen2/tied_f32_hub"),
        (
            "tiny-qwen3.gguf",
            "expected-qwen3.json",
            "qwen3/tied_bf16_tf5",
        ),
        (
            "tiny-llama3.gguf",
            "expected-llama3.json",
            "llama3/untied_f32_hub_biases",
        ),
    ] {
        let dir = fixtures().join("gguf");
        let expected: Expected =
            serde_json::from_str(&std::fs::read_to_string(dir.join(expected)).unwrap()).unwrap();
        let device = init(backend).unwrap();
        let checkpoint = Checkpoint::open(&dir.join(file)).unwrap();
        let reference = Checkpoint::open(&fixtures().join(reference)).unwrap();
        let (ours, theirs) = (&checkpoint.config, &reference.config);
        assert_eq!(
            (
                ours.architecture,
                ours.layout,
                ours.head_dim,
                ours.rope_theta
            ),
            (
                theirs.architecture,
                theirs.layout,
                theirs.head_dim,
                theirs.rope_theta
            ),
            "{file}"
        );
        assert_eq!(
            ours.tie_word_embeddings, theirs.tie_word_embeddings,
            "{file}"
        );
        assert_eq!(
            ours.rope_scaling.is_some(),
            theirs.rope_scaling.is_some(),
            "{file}"
        );
        // f32 activations: the 8-bit ones of decoding (the default) move logits by more than
        // float rounding; their bound is checked in the kernels' own tests.
        let options = LoadOptions {
            activations: Activations::F32,
            ..LoadOptions::default()
        };
        let footprint = gpu_footprint(&checkpoint.config, &*checkpoint.source);
        let model = checkpoint.load_with(&device, &options).unwrap();
        let mut cache = model.new_cache(vec![0]);
        let ours = block_on(to_vec_f32(model.forward_last(
            std::slice::from_ref(&expected.ids),
            &mut cache,
            &Mixes::none(),
        )))
        .unwrap();
        let scale = expected
            .last_logits
            .iter()
            .fold(0f32, |m, r| m.max(r.abs()));
        let err = ours
            .iter()
            .zip(&expected.last_logits)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        let tol = match backend {
            BackendKind::Cpu => logits_tolerance(&model.config, expected.ids.len(), 1.0) as f32,
            BackendKind::Wgpu => WGPU_TOLERANCE as f32,
        };
        let storage = model.weight_storage();
        assert!(
            storage.bytes.keys().any(|k| k != "f32"),
            "{file}: the blocks stay blocks on {backend}: {storage:?}"
        );
        if backend == BackendKind::Wgpu {
            // What the page checks before uploading is what loading allocates.
            assert_eq!(footprint.total_bytes, storage.total_bytes(), "{file}");
            assert_eq!(footprint.largest.1, storage.largest.1, "{file}");
        }
        println!("{backend} {file}: max rel err {err:.2e}");
        assert!(
            err <= tol,
            "{backend} {file}: max rel err {err:e} > {tol:e}"
        );
    }
}

#[test]
fn gguf_model_logits_match_transformers() {
    check_gguf_logits(BackendKind::Cpu);
}

#[test]
fn gguf_model_logits_match_transformers_on_wgpu() {
    check_gguf_logits(BackendKind::Wgpu);
}

/// The base fingerprint adapters are checked against is the same whether the blocks sit on
/// the CPU (decoded whole) or on the GPU (only the sampled values decoded there), for every
/// target and for the seven together.
#[test]
fn the_fingerprint_of_gpu_blocks_is_the_cpu_blocks_fingerprint() {
    use tinylora::adapter::basis::fingerprint;
    let all: Vec<String> = ["q_proj", "k_proj", "v_proj", "o_proj"]
        .into_iter()
        .chain(["gate_proj", "up_proj", "down_proj"])
        .map(String::from)
        .collect();
    let (cpu, wgpu) = (
        init(BackendKind::Cpu).unwrap(),
        init(BackendKind::Wgpu).unwrap(),
    );
    for file in ["tiny-qwen2.gguf", "tiny-qwen3.gguf", "tiny-llama3.gguf"] {
        let path = fixtures().join("gguf").join(file);
        let on_cpu = Checkpoint::open(&path).unwrap().load(&cpu).unwrap();
        let on_gpu = Checkpoint::open(&path).unwrap().load(&wgpu).unwrap();
        assert!(
            on_gpu.weight_storage().bytes.keys().any(|k| k != "f32"),
            "{file}: blocks on the GPU"
        );
        let names = all.iter().map(|n| vec![n.clone()]).chain([all.clone()]);
        for names in names {
            let a = block_on(fingerprint(&on_cpu, &names)).unwrap();
            let b = block_on(fingerprint(&on_gpu, &names)).unwrap();
            assert_eq!(a, b, "{file} {names:?}");
        }
    }
}
