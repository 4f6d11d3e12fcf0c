//! The adapter's description: its shape and tying ([`config`], [`tying`]) and the file users
//! share ([`file`]). The tensors it is built from live in the `tinylora` crate.

pub mod config;
pub mod file;
pub mod tying;
