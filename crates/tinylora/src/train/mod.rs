//! Training runs as `trainer train` and the page's Train panel take them: the configuration
//! (one TOML file, or its keys as JSON in the page), the learning-rate schedule, the order of
//! the training problems, and a GRPO run's steps. The trainer adds files (metrics,
//! checkpoints, plots) and remote engines; the page adds events; neither repeats a rule.

pub mod config;
pub mod grpo;
pub mod order;
pub mod schedule;
