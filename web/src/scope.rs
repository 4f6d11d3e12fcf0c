//! The worker's global scope, which every other module reaches through here: events to the
//! page, the clock, and the scope itself (`fetch`, the Cache API). It depends on nothing but
//! the protocol, so the modules above it form no cycle.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::DedicatedWorkerGlobalScope;

use crate::protocol::Event;

/// The worker's global scope.
pub fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends `event` to the page.
pub fn post(event: &Event) {
    if let Ok(json) = serde_json::to_string(event) {
        let _ = scope().post_message(&JsValue::from_str(&json));
    }
}

/// Milliseconds since the epoch (the worker's clock).
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}
