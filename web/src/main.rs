//! The browser demo's inference worker (wasm32 only; the native build is empty so that the
//! workspace builds everywhere). The page (`web/ui.js`) starts it as a web worker and talks to
//! it with the JSON messages of [`protocol`]: load a model, apply an adapter, generate.

#[cfg(target_arch = "wasm32")]
mod download;
#[cfg(target_arch = "wasm32")]
mod js_bytes;
#[cfg(target_arch = "wasm32")]
mod protocol;
#[cfg(target_arch = "wasm32")]
mod scope;
#[cfg(target_arch = "wasm32")]
mod sources;
#[cfg(target_arch = "wasm32")]
mod state;
#[cfg(target_arch = "wasm32")]
mod worker;

fn main() {
    #[cfg(target_arch = "wasm32")]
    worker::start();
}
