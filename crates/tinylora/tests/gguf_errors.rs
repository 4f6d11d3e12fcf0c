//! Broken GGUF files give errors naming the file and the problem, never a panic or a huge
//! allocation.

use std::path::PathBuf;

use tinylora::checkpoint::Checkpoint;

/// A minimal GGUF v3 file: one metadata string, one F32 tensor `[4]` of `type_id` at `offset`.
fn gguf(magic: &[u8; 4], version: u32, type_id: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut b = magic.to_vec();
    b.extend(version.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    let key = b"general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(8u32.to_le_bytes()); // string
    b.extend(5u64.to_le_bytes());
    b.extend(b"qwen2");
    let name = b"output_norm.weight";
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name);
    b.extend(1u32.to_le_bytes()); // dims
    b.extend(4u64.to_le_bytes());
    b.extend(type_id.to_le_bytes());
    b.extend(offset.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.extend(vec![0u8; data]);
    b
}

fn error_for(case: &str, bytes: &[u8]) -> String {
    let path =
        std::env::temp_dir().join(format!("tinylora-gguf-{}-{case}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let err = match Checkpoint::open(&path) {
        Ok(_) => panic!("{case}: opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with(path.to_str().unwrap()), "{case}: {err}");
    err
}

#[test]
fn each_defect_is_named() {
    assert!(error_for("magic", &gguf(b"GGML", 3, 0, 0, 16)).contains("bad magic"));
    assert!(error_for("version", &gguf(b"GGUF", 9, 0, 0, 16)).contains("GGUF version 9"));
    let err = error_for("type", &gguf(b"GGUF", 3, 77, 0, 16));
    assert!(
        err.contains("`output_norm.weight`") && err.contains("GGML type 77"),
        "{err}"
    );
    let err = error_for("offset", &gguf(b"GGUF", 3, 0, 1 << 40, 16));
    assert!(err.contains("runs past the end of the file"), "{err}");
    let truncated = gguf(b"GGUF", 3, 0, 0, 16);
    assert!(error_for("truncated", &truncated[..40]).contains("truncated"));
    let mut lying = gguf(b"GGUF", 3, 0, 0, 16);
    lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(error_for("count", &lying).contains("implausible"));
    // A well-formed file that is not a full model names what is missing.
    let err = error_for("incomplete", &gguf(b"GGUF", 3, 0, 0, 16));
    assert!(err.contains("token_embd.weight"), "{err}");
}

#[test]
fn nonexistent_paths_say_so() {
    let missing = PathBuf::from("/nonexistent/model.gguf");
    let err = Checkpoint::open(&missing)
        .err()
        .expect("missing")
        .to_string();
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}
