//! The adapter's description: its shape and tying ([`config`], [`tying`]), the file users
//! share ([`file`]) and the work an adapter may ask of a model ([`limits`]). The tensors it is
//! built from live in the `tinylora` crate.

pub mod config;
pub mod file;
pub mod limits;
pub mod tying;
