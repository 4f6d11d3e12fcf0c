//! The page's list of shipped adapters (`assets/adapters/index.json`) points at adapter files
//! that exist, parse, and were trained on the base model the entry names.

use std::path::Path;

use tinylora::adapter::file::AdapterFile;

#[test]
fn every_shipped_adapter_is_listed_with_its_base_model() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(assets.join("adapters/index.json")).unwrap())
            .unwrap();
    let entries = index["adapters"].as_array().unwrap();
    assert!(!entries.is_empty());
    for entry in entries {
        // The page serves assets/toy as toy/ and assets/adapters as adapters/.
        let path = assets.join(entry["link"].as_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let file = AdapterFile::from_compact(text.trim(), &path).unwrap();
        let listed = entry["base_fingerprint"].as_str().unwrap();
        assert!(
            listed.starts_with(&file.base_fingerprint),
            "{}: trained on {}…, listed for {listed}",
            path.display(),
            file.base_fingerprint
        );
        assert!(entry["basis"].is_null() || entry["basis"].is_string());
    }
}
