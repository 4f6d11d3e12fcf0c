//! Broken checkpoints give errors that name the file and the tensor or field, never a panic.

use std::path::{Path, PathBuf};

use tinylora::checkpoint::Checkpoint;
use tinylora::device::{BackendKind, init};
use tinylora::weights::TensorSource;
use tinylora::weights::safetensors::{self, SafetensorsFile};

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/tied_f32_hub")
}

fn fixture_tensors() -> Tensors {
    let mut st = SafetensorsFile::open(&fixture().join("model.safetensors")).unwrap();
    st.names()
        .into_iter()
        .map(|n| {
            let t = st.read(&n).unwrap();
            (n, t.shape, t.values)
        })
        .collect()
}

/// A model directory in a fresh temporary folder with the fixture's config and `tensors`.
fn model_dir(case: &str, tensors: &Tensors) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tinylora-load-errors-{}-{case}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    safetensors::write(&dir.join("model.safetensors"), tensors).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    let device = init(BackendKind::Cpu).unwrap();
    match Checkpoint::open(dir).and_then(|c| c.load(&device)) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_fixture_itself_loads() {
    let dir = model_dir("ok", &fixture_tensors());
    let device = init(BackendKind::Cpu).unwrap();
    assert!(Checkpoint::open(&dir).unwrap().load(&device).is_ok());
}

#[test]
fn missing_tensor() {
    let tensors: Tensors = fixture_tensors()
        .into_iter()
        .filter(|t| t.0 != "model.norm.weight")
        .collect();
    let err = load_error(&model_dir("missing", &tensors));
    assert!(
        err.contains("model.safetensors: missing tensor `model.norm.weight`"),
        "{err}"
    );
}

#[test]
fn wrong_shape() {
    let mut tensors = fixture_tensors();
    let q = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.1.self_attn.q_proj.weight")
        .unwrap();
    q.1 = vec![32, 128];
    let err = load_error(&model_dir("shape", &tensors));
    assert!(
        err.contains("`model.layers.1.self_attn.q_proj.weight` has shape [32, 128]"),
        "{err}"
    );
}

#[test]
fn extra_tensor() {
    let mut tensors = fixture_tensors();
    tensors.push((
        "model.layers.7.mlp.up_proj.weight".into(),
        vec![2],
        vec![0.0, 1.0],
    ));
    let err = load_error(&model_dir("extra", &tensors));
    assert!(err.contains("model.layers.7.mlp.up_proj.weight"), "{err}");
}

#[test]
fn truncated_weights_and_bad_config() {
    let dir = model_dir("truncated", &fixture_tensors());
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("model.safetensors: tensor") && err.contains("do not fit"),
        "{err}"
    );

    let dir = model_dir("config", &fixture_tensors());
    std::fs::write(dir.join("config.json"), "{\"vocab_size\": 512,").unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("config.json: not a decoder config.json"),
        "{err}"
    );

    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("no model.safetensors"), "{err}");
}
