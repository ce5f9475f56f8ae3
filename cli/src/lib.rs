//! The operator tools behind the `notify` binary, as a library so tests drive them directly.

pub mod acls;
pub mod backfill;
pub mod check;
pub mod dlq;
pub mod lag;
pub mod ledger;
pub mod offsets;
pub mod produce;
pub mod progress;
pub mod replay;
pub mod run;
pub mod sandbox;
pub mod scan;
pub mod schemas;
pub mod status;
pub mod templates;
pub mod topics;
pub mod trace;

/// An error that asks for a particular exit code (130: interrupted, resumable).
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub u8);
