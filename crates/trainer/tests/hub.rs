//! `--model OWNER/NAME[/FILE][@REVISION]` against a local stand-in of the Hugging Face hub
//! (its API listing, `resolve` URLs with ranges, commit and etag headers): the files land in
//! the standard cache layout under `HF_HOME`, give the same logits as the local folder, carry
//! `HF_TOKEN`, and are read from the cache offline or when the hub is gone.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// A repository: its commit and its files (name → bytes).
struct Repo {
    sha: &'static str,
    files: BTreeMap<String, Vec<u8>>,
}

/// The stand-in hub: repositories by `OWNER/NAME` and every request it answered (the
/// request line and its `Authorization` header).
struct Hub {
    repos: BTreeMap<&'static str, Repo>,
    seen: Mutex<Vec<(String, String)>>,
}

impl Hub {
    /// The status, headers and body for `path`, with `range` the requested bytes (first,
    /// last if given): hf-hub asks for `bytes=0-0` to read the metadata, then `bytes=N-`.
    fn answer(
        &self,
        path: &str,
        range: Option<(usize, Option<usize>)>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let not_found = (
            404,
            vec![],
            b"{\"error\":\"Repository not found\"}".to_vec(),
        );
        if let Some(rest) = path.strip_prefix("/api/models/") {
            let Some((repo, _revision)) = rest.split_once("/revision/") else {
                return not_found;
            };
            let Some(r) = self.repos.get(repo) else {
                return not_found;
            };
            let siblings: Vec<Value> = r.files.keys().map(|f| json!({"rfilename": f})).collect();
            let body = json!({"sha": r.sha, "siblings": siblings}).to_string();
            return (200, vec![], body.into_bytes());
        }
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        let [owner, name, "resolve", _revision, file] = parts[..] else {
            return not_found;
        };
        let Some(r) = self.repos.get(format!("{owner}/{name}").as_str()) else {
            return not_found;
        };
        let Some(bytes) = r.files.get(file) else {
            return not_found;
        };
        let (first, last) = range.unwrap_or((0, None));
        let end = last.map_or(bytes.len(), |l| l + 1).min(bytes.len());
        let start = first.min(end);
        let headers = vec![
            ("x-repo-commit".to_string(), r.sha.to_string()),
            (
                "etag".to_string(),
                format!("\"{}-{}\"", r.sha, file.replace('/', "_")),
            ),
            (
                "content-range".to_string(),
                format!("bytes {start}-{}/{}", end.saturating_sub(1), bytes.len()),
            ),
        ];
        (206, headers, bytes[start..end].to_vec())
    }

    fn handle(&self, mut stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut range, mut auth, mut range_text) = (None, String::new(), String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("range") {
                    range_text = v.to_string();
                    range = v.strip_prefix("bytes=").and_then(|r| {
                        let (first, last) = r.split_once('-')?;
                        Some((first.parse().ok()?, last.parse().ok()))
                    });
                } else if k.eq_ignore_ascii_case("authorization") {
                    auth = v.to_string();
                }
            }
        }
        self.seen
            .lock()
            .unwrap()
            .push((format!("{path} {range_text}"), auth));
        let (status, headers, body) = self.answer(&path, range);
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
    }
}

/// Files of a fixture folder, plus `extra` (name → bytes).
fn files_of(dir: &Path, extra: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    let mut files: BTreeMap<String, Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    for (name, bytes) in extra {
        files.insert(name.to_string(), bytes.to_vec());
    }
    files
}

/// Starts the stand-in with a sharded safetensors repository and a GGUF repository holding two
/// files; returns it and its address.
fn serve() -> (Arc<Hub>, String) {
    let sharded = fixture("qwen2/untied_f16_sharded_hub");
    let gguf = fixture("gguf");
    let mut ggufs = BTreeMap::new();
    for name in ["tiny-qwen2.gguf", "tiny-qwen3.gguf"] {
        ggufs.insert(name.to_string(), std::fs::read(gguf.join(name)).unwrap());
    }
    let repos = BTreeMap::from([
        (
            "fixtures/sharded",
            Repo {
                sha: "1111111111111111111111111111111111111111",
                files: files_of(&sharded, &[("onnx/model.onnx", b"not needed")]),
            },
        ),
        (
            "fixtures/gguf",
            Repo {
                sha: "2222222222222222222222222222222222222222",
                files: ggufs,
            },
        ),
    ]);
    let hub = Arc::new(Hub {
        repos,
        seen: Mutex::new(Vec::new()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = hub.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            served.handle(stream);
        }
    });
    (hub, url)
}

/// `trainer logits --json` for `model` with the hub environment `env`.
fn logits(model: &str, ids: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(["logits", "--model", model, "--ids", ids, "--json"]);
    for var in ["HF_ENDPOINT", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run trainer")
}

fn last_logits(out: &Output) -> Vec<f64> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tinylora-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_hub_model_downloads_into_the_cache_and_equals_the_local_folder() {
    let (hub, url) = serve();
    let home = temp("sharded");
    let home_str = home.to_str().unwrap();
    let local = fixture("qwen2/untied_f16_sharded_hub");
    let ids = "1,5,9,2";
    let want = last_logits(&logits(local.to_str().unwrap(), ids, &[]));
    let env = [
        ("HF_ENDPOINT", url.as_str()),
        ("HF_HOME", home_str),
        ("HF_TOKEN", "hf_test_token"),
    ];
    // Same files, same program: the same logits, bit for bit.
    assert_eq!(last_logits(&logits("fixtures/sharded", ids, &env)), want);
    let snapshot = home
        .join("hub/models--fixtures--sharded/snapshots/1111111111111111111111111111111111111111");
    for file in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot.join(file).exists(), "{file} not in the cache");
    }
    for file in ["expected.json", "onnx/model.onnx"] {
        assert!(
            !snapshot.join(file).exists(),
            "{file} was downloaded but is not needed"
        );
    }
    assert_eq!(
        std::fs::read_to_string(home.join("hub/models--fixtures--sharded/refs/main")).unwrap(),
        "1111111111111111111111111111111111111111"
    );
    let seen = hub.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, auth)| auth == "Bearer hf_test_token"),
        "{seen:?}"
    );

    // Offline, and with the hub gone: the cache alone, not one request.
    let before = hub.seen.lock().unwrap().len();
    let offline = [("HF_HOME", home_str), ("HF_HUB_OFFLINE", "1")];
    assert_eq!(
        last_logits(&logits("fixtures/sharded", ids, &offline)),
        want
    );
    assert_eq!(hub.seen.lock().unwrap().len(), before);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gone = format!("http://{closed}");
    let gone_env = [("HF_ENDPOINT", gone.as_str()), ("HF_HOME", home_str)];
    let out = logits("fixtures/sharded", ids, &gone_env);
    assert_eq!(last_logits(&out), want);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be reached"));

    // Online again with everything cached: the listing, no file downloaded again.
    let before = hub.seen.lock().unwrap().len();
    assert_eq!(last_logits(&logits("fixtures/sharded", ids, &env)), want);
    let again = hub.seen.lock().unwrap()[before..].to_vec();
    assert!(
        again
            .iter()
            .all(|(line, _)| line.starts_with("/api/models/")),
        "{again:?}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_gguf_repository_needs_its_file_named_and_bad_names_are_explained() {
    let (hub, url) = serve();
    let home = temp("gguf");
    let env = [
        ("HF_ENDPOINT", url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let ids = "1,2,3";

    let err = stderr(&logits("fixtures/gguf", ids, &env));
    assert!(
        err.contains("tiny-qwen2.gguf") && err.contains("tiny-qwen3.gguf"),
        "{err}"
    );
    let local = fixture("gguf/tiny-qwen2.gguf");
    let want = last_logits(&logits(local.to_str().unwrap(), ids, &[]));
    let got = last_logits(&logits("fixtures/gguf/tiny-qwen2.gguf@main", ids, &env));
    assert_eq!(got, want);
    let downloads: Vec<String> = hub
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(line, _)| line.contains("/resolve/"))
        .map(|(line, _)| line.clone())
        .collect();
    assert!(
        downloads
            .iter()
            .all(|l| l.contains("/resolve/main/tiny-qwen2.gguf")),
        "{downloads:?}"
    );

    let err = stderr(&logits("fixtures/gguf/tiny-qwen4.gguf", ids, &env));
    assert!(err.contains("no file `tiny-qwen4.gguf`"), "{err}");
    let err = stderr(&logits("fixtures/nothing", ids, &env));
    assert!(
        err.contains("fixtures/nothing@main") && err.contains("no such repository"),
        "{err}"
    );
    let offline = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let err = stderr(&logits("fixtures/sharded", ids, &offline));
    assert!(err.contains("not in the Hugging Face cache"), "{err}");
    std::fs::remove_dir_all(&home).unwrap();
}
