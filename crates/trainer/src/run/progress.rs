//! Progress of a run: an indicatif bar on a terminal, one plain line per step otherwise (logs,
//! CI), so every step's numbers are visible either way.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A step counter with a message.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
}

impl Progress {
    /// A bar for steps `start..total`.
    pub fn new(start: usize, total: usize, what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64).with_position(start as u64);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{what} {{bar:30.cyan/blue}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.reset_eta();
            bar
        });
        Self { bar, total }
    }

    /// Marks step `step` (1-based) done with a summary.
    pub fn step(&self, step: usize, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(message.to_string());
            }
            None => eprintln!("step {step}/{}: {message}", self.total),
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Leaves the bar as it is.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
