//! The browser demo's entry point (wasm32 only; the native build is empty so that the
//! workspace builds everywhere).

#[cfg(target_arch = "wasm32")]
mod app;

fn main() {
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_futures::spawn_local(app::start());
}
