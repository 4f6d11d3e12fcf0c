//! The page: starts WebGPU, runs the backend self-check and shows its result.

use tinylora::{device::init_webgpu, selfcheck};
use web_sys::Document;

/// Shows `text` in the element `id` and records the outcome in its `data-state` attribute
/// (`ok` or `error`), which the end-to-end tests wait for.
fn show(document: &Document, id: &str, state: &str, text: &str) {
    if let Some(element) = document.get_element_by_id(id) {
        element.set_text_content(Some(text));
        let _ = element.set_attribute("data-state", state);
    }
}

/// Runs the self-check on the browser's WebGPU device.
pub async fn start() {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let outcome = match init_webgpu().await {
        Ok(device) => selfcheck::run(&device).await,
        Err(err) => Err(err),
    };
    match outcome {
        Ok(check) => {
            let json = serde_json::to_string(&check).unwrap_or_default();
            show(&document, "selfcheck", "ok", &json);
            show(
                &document,
                "status",
                "ok",
                &format!(
                    "WebGPU works: max |error| vs the f64 reference = {:.2e}",
                    check.max_abs_err
                ),
            );
        }
        Err(err) => show(
            &document,
            "status",
            "error",
            &format!(
                "{err}. This page needs WebGPU: use Chrome or Edge 113+, or enable WebGPU in your browser's settings."
            ),
        ),
    }
}
