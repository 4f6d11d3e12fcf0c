//! Ctrl-C (SIGINT) and SIGTERM: the first asks the run to stop after the current step with a
//! checkpoint; a second one ends the process at once (exit status 130).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Whether a stop was requested.
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>);

/// The error a run returns when it stopped on request after saving; the process exits with 130.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

impl Interrupt {
    /// Installs the handlers.
    pub fn install() -> Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as it was before this signal set it.
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
                .context("installing the Ctrl-C handler")?;
        }
        Ok(Self(flag))
    }

    /// Whether Ctrl-C (or SIGTERM) arrived.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
