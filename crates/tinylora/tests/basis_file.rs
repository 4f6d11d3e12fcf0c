//! The basis file: an adapter rebuilt from a link plus its basis file (or recomputing the basis,
//! with progress) equals the adapter, and a
//! basis file for another base model, another config, with altered factors or without the
//! format's metadata is refused with an error naming the file.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use burn::tensor::Device;
use tinylora::adapter::TinyLora;
use tinylora::adapter::basis::fingerprint;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::adapter::file::AdapterFile;
use tinylora::checkpoint::Checkpoint;
use tinylora::model::CausalLm;
use tinylora::readback::block_on;
use tinylora::weights::TensorSource;
use tinylora::weights::safetensors::{SafetensorsFile, to_bytes_with_metadata};

fn model(name: &str) -> CausalLm {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/qwen2")
        .join(name);
    Checkpoint::open(&dir)
        .unwrap()
        .load(&Device::flex())
        .unwrap()
}

/// A trained-looking adapter on `untied_bf16_tf5`, its link and its basis file's bytes.
fn adapter_link_and_basis() -> (TinyLora, AdapterFile, Vec<u8>) {
    let mut m = model("untied_bf16_tf5");
    let mut adapter = block_on(TinyLora::init(&mut m, TinyLoraConfig::default())).unwrap();
    for (i, x) in adapter.v[0].iter_mut().enumerate() {
        *x = 0.1 * i as f32 - 0.6;
    }
    let print = block_on(fingerprint(&m, &adapter.config.targets)).unwrap();
    let bytes = adapter
        .basis
        .to_file_bytes(&adapter.config, &print)
        .unwrap();
    let link = adapter.to_file(print).to_compact();
    let file = AdapterFile::from_compact(&link, Path::new("#adapter")).unwrap();
    (adapter, file, bytes)
}

/// Applies `file` to a fresh `base` model with the basis file `bytes`.
fn apply(base: &str, file: &AdapterFile, bytes: Vec<u8>) -> tinylora::Result<TinyLora> {
    let mut m = model(base);
    let origin = Path::new("basis.safetensors");
    let mut basis = SafetensorsFile::from_reader(Cursor::new(bytes), origin)?;
    block_on(TinyLora::from_file_and_basis(
        file,
        &mut m,
        Path::new("#adapter"),
        &mut basis,
        origin,
        None,
    ))
}

/// Rewrites a basis file with `edit` applied to its metadata and tensors.
fn rewrite(
    bytes: Vec<u8>,
    edit: impl FnOnce(&mut BTreeMap<String, String>, &mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> Vec<u8> {
    let mut file =
        SafetensorsFile::from_reader(Cursor::new(bytes), Path::new("basis.safetensors")).unwrap();
    let mut metadata = file.metadata().clone();
    let mut tensors: Vec<_> = file
        .names()
        .into_iter()
        .map(|n| {
            let t = file.read(&n).unwrap();
            (n, t.shape, t.values)
        })
        .collect();
    edit(&mut metadata, &mut tensors);
    to_bytes_with_metadata(&tensors, &metadata).unwrap()
}

#[test]
fn a_link_and_its_basis_file_rebuild_the_adapter() {
    let (adapter, file, bytes) = adapter_link_and_basis();
    let rebuilt = apply("untied_bf16_tf5", &file, bytes).unwrap();
    assert_eq!(rebuilt, adapter);
}

#[test]
fn recomputing_the_basis_reports_each_layer_and_gives_the_same_adapter() {
    let (adapter, file, _) = adapter_link_and_basis();
    let mut m = model("untied_bf16_tf5");
    let mut reports = Vec::new();
    let rebuilt = block_on(TinyLora::from_file_reporting(
        &file,
        &mut m,
        Path::new("#adapter"),
        None,
        &mut |done, total| reports.push((done, total)),
    ))
    .unwrap();
    assert_eq!(rebuilt, adapter);
    // One report per layer, 7 modules each, ending at all of them.
    let layers = m.config.num_hidden_layers;
    let want: Vec<(usize, usize)> = (1..=layers).map(|l| (7 * l, 7 * layers)).collect();
    assert_eq!(reports, want);
}

/// A fingerprint the caller already has (the page computes it once per loaded model) is what
/// the adapter is checked against: the right one gives the same adapter, another one is
/// refused as another base model, for a recomputed basis and a basis file alike.
#[test]
fn a_known_fingerprint_is_checked_instead_of_recomputed() {
    let (adapter, file, bytes) = adapter_link_and_basis();
    let mut m = model("untied_bf16_tf5");
    let found = block_on(fingerprint(&m, &file.config.targets)).unwrap();
    let other = "0".repeat(64);
    for known in [found.as_str(), other.as_str()] {
        let origin = Path::new("basis.safetensors");
        let mut basis = SafetensorsFile::from_reader(Cursor::new(bytes.clone()), origin).unwrap();
        let results = [
            block_on(TinyLora::from_file_reporting(
                &file,
                &mut m,
                Path::new("#adapter"),
                Some(known),
                &mut |_, _| {},
            )),
            block_on(TinyLora::from_file_and_basis(
                &file,
                &mut m,
                Path::new("#adapter"),
                &mut basis,
                origin,
                Some(known),
            )),
        ];
        for result in results {
            match known == found {
                true => assert_eq!(result.unwrap(), adapter),
                false => {
                    let err = result.unwrap_err().to_string();
                    assert!(err.contains("trained on another base model"), "{err}");
                }
            }
        }
    }
}

#[test]
fn a_basis_file_for_another_base_or_config_or_altered_is_refused() {
    let (adapter, file, bytes) = adapter_link_and_basis();
    let refused = |bytes: Vec<u8>, needle: &str| {
        let err = apply("untied_bf16_tf5", &file, bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("basis.safetensors") && err.contains(needle),
            "{err}"
        );
    };
    refused(
        rewrite(bytes.clone(), |meta, _| {
            meta.insert("base_fingerprint".into(), "0123456789abcdef".into());
        }),
        "made for another base model",
    );
    refused(
        rewrite(bytes.clone(), |meta, _| {
            let mut other = adapter.config.clone();
            other.seed += 1;
            meta.insert("config".into(), serde_json::to_string(&other).unwrap());
        }),
        "for another adapter config",
    );
    refused(
        rewrite(bytes.clone(), |_, tensors| tensors[0].2[0] += 1e-3),
        "corrupted or was altered",
    );
    refused(
        rewrite(bytes.clone(), |_, tensors| {
            tensors.retain(|t| !t.0.ends_with("layers.1.mlp.up_proj.tinylora_B"))
        }),
        "missing `base_model.model.model.layers.1.mlp.up_proj.tinylora_B`",
    );
    refused(
        rewrite(bytes.clone(), |meta, _| {
            meta.remove("format");
        }),
        "not a tinylora basis file",
    );
    refused(
        rewrite(bytes.clone(), |meta, _| {
            meta.insert("version".into(), "2".into());
        }),
        "version 2 is not supported",
    );
    // An adapter applied to another base model is refused before its basis file is read.
    let err = apply("tied_f32_hub", &file, bytes).unwrap_err().to_string();
    assert!(err.contains("trained on another base model"), "{err}");
}
