//! Getting file bytes into JavaScript memory with progress: HTTP downloads (kept in the Cache
//! API, so a second visit does not download again) and files the visitor picked.

use js_sys::{Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStream, ReadableStreamDefaultReader, Response};

use crate::protocol::Event;
use crate::scope::{now_ms, post, scope};

/// The Cache API bucket holding downloaded model files ([`clear_cache`] deletes it).
const CACHE_NAME: &str = "tinylora-models-v1";

/// A JavaScript exception as text.
pub fn js_error(value: JsValue) -> String {
    value
        .as_string()
        .or_else(|| {
            Reflect::get(&value, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{value:?}"))
}

/// Deletes the bucket of downloaded models; `true` when there was one.
pub async fn clear_cache() -> Result<bool, String> {
    let caches = scope().caches().map_err(js_error)?;
    let removed = JsFuture::from(caches.delete(CACHE_NAME))
        .await
        .map_err(js_error)?;
    Ok(removed.as_bool().unwrap_or(false))
}

async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

/// Reads a byte stream to its end into one array, posting progress as `stage`. `total` is the
/// announced length: fewer or more bytes is an error (a cut or altered download).
async fn read_stream(
    stream: ReadableStream,
    total: Option<f64>,
    stage: &str,
    sha256: Option<&str>,
) -> Result<Uint8Array, String> {
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut hasher = sha256.map(|_| Sha256::new());
    let whole = total.map(|t| Uint8Array::new_with_length(t as u32));
    let mut chunks = Vec::new();
    let mut done = 0.0;
    let mut last_post = 0.0;
    loop {
        let step = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("{stage}: the transfer failed ({})", js_error(e)))?;
        if Reflect::get(&step, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            break;
        }
        let chunk: Uint8Array = Reflect::get(&step, &"value".into())
            .map_err(js_error)?
            .unchecked_into();
        let len = f64::from(chunk.length());
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(chunk.to_vec());
        }
        match (&whole, total) {
            (Some(whole), Some(t)) => {
                if done + len > t {
                    return Err(format!(
                        "{stage}: received more than the announced {t} bytes: the file is not what the server described"
                    ));
                }
                whole.set(&chunk, done as u32);
            }
            _ => chunks.push(chunk),
        }
        done += len;
        let now = now_ms();
        if now - last_post > 100.0 {
            post(&Event::Progress {
                stage: stage.to_string(),
                done,
                total,
            });
            last_post = now;
        }
    }
    post(&Event::Progress {
        stage: stage.to_string(),
        done,
        total,
    });
    if let (Some(hasher), Some(expected)) = (hasher, sha256) {
        let found: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if found != expected {
            return Err(format!(
                "{stage}: its SHA-256 ({}…) is not the one the server announced ({}…): the file was \
                 altered or corrupted on the way. Try again; if it persists, the mirror is bad.",
                &found[..12],
                &expected[..12]
            ));
        }
    }
    match (whole, total) {
        (Some(whole), Some(t)) if done == t => Ok(whole),
        (Some(_), Some(t)) => Err(format!(
            "{stage}: the download stopped at {done} of {t} bytes; check the connection and try again"
        )),
        _ => {
            let joined = Uint8Array::new_with_length(done as u32);
            let mut at = 0;
            for chunk in chunks {
                joined.set(&chunk, at);
                at += chunk.length();
            }
            Ok(joined)
        }
    }
}

/// The SHA-256 the hub announces for a file: `X-Linked-ETag` (Git LFS files) or an `ETag`
/// that is a 64-digit hex digest; other ETags (Git blob hashes, opaque tags) are not hashes of
/// the content.
fn announced_sha256(response: &Response) -> Option<String> {
    let headers = response.headers();
    ["x-linked-etag", "etag"].iter().find_map(|name| {
        let value = headers.get(name).ok().flatten()?;
        let value = value
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_ascii_lowercase();
        (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())).then_some(value)
    })
}

/// The announced body length, unless the body is compressed in transit.
fn content_length(response: &Response) -> Option<f64> {
    let headers = response.headers();
    if headers.get("content-encoding").ok().flatten().is_some() {
        return None;
    }
    headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
}

/// Downloads `url` (named `label` in progress and errors). `Ok(None)` when the server has no
/// such file (404). With `cache`, a copy kept by an earlier visit is used, and a new download
/// is kept; a full cache is a warning, not an error.
pub async fn fetch_file(url: &str, label: &str, cache: bool) -> Result<Option<Uint8Array>, String> {
    let cache = if cache { open_cache().await } else { None };
    if let Some(cache) = &cache
        && let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await
        && let Ok(response) = hit.dyn_into::<Response>()
        && let Some(body) = response.body()
    {
        let total = content_length(&response);
        return read_stream(
            body,
            total,
            &format!("reading {label} from the browser cache"),
            None,
        )
        .await
        .map(Some);
    }
    let response: Response = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| {
            format!(
                "could not download {label} from {url} ({}): offline, wrong address, or the server does not allow cross-origin requests",
                js_error(e)
            )
        })?
        .unchecked_into();
    if response.status() == 404 {
        return Ok(None);
    }
    if !response.ok() {
        return Err(format!(
            "downloading {label} from {url} failed: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    let total = content_length(&response);
    let body = response
        .body()
        .ok_or_else(|| format!("{url} sent no body"))?;
    let sha256 = announced_sha256(&response);
    let bytes = read_stream(
        body,
        total,
        &format!("downloading {label}"),
        sha256.as_deref(),
    )
    .await?;
    if let Some(cache) = &cache {
        let stored = Response::new_with_opt_buffer_source(Some(&bytes))
            .map(|copy| cache.put_with_str(url, &copy));
        let outcome = match stored {
            Ok(promise) => JsFuture::from(promise).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            post(&Event::Warning {
                message: format!(
                    "{label} could not be kept in the browser cache ({}): storage is full or not allowed. \
                     It works for this visit and will be downloaded again next time.",
                    js_error(e)
                ),
            });
        }
    }
    Ok(Some(bytes))
}

/// `bytes` as UTF-8 text; an error names `origin` when they are not.
pub fn text(bytes: &Uint8Array, origin: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{origin}: not UTF-8 text"))
}

/// A text file that must exist at `url`, not cached (problem lists, recipes).
pub async fn fetch_text(url: &str) -> Result<String, String> {
    text(&fetch_required(url, url, false).await?, url)
}

/// Like [`fetch_file`] for a file that must exist.
pub async fn fetch_required(url: &str, label: &str, cache: bool) -> Result<Uint8Array, String> {
    fetch_file(url, label, cache)
        .await?
        .ok_or_else(|| format!("{label} is missing: {url} answered 404 Not Found"))
}

/// Reads a picked or dropped file with progress.
pub async fn read_file(file: &web_sys::File) -> Result<Uint8Array, String> {
    read_stream(
        file.stream(),
        Some(file.size()),
        &format!("reading {}", file.name()),
        None,
    )
    .await
}
