//! The operator tools behind the `notify` binary, as a library so tests drive them directly.

pub mod check;
pub mod dlq;
pub mod produce;
pub mod run;
pub mod sandbox;
pub mod schemas;
pub mod status;
pub mod templates;
pub mod topics;
