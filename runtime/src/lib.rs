//! What every processor does: consume, decode, process, produce, acknowledge, commit,
//! dead-letter, metrics and graceful shutdown. A processor crate implements [`Stage`] (its
//! business rule; stages chain) or [`Processor`], and hands it to [`runner::run`].

pub mod codec;
pub mod config;
pub mod cql;
pub mod dlq;
pub mod fault;
pub mod headers;
pub mod http;
pub mod kafka;
pub mod kafka_stats;
mod lane;
pub mod metrics;
pub mod offsets;
pub mod partitioner;
pub mod processor;
pub use notify_contract as records;
pub mod runner;
pub mod shutdown;
pub mod stage;
pub mod table;
mod txn;
pub mod watchdog;

pub use config::Config;
pub use metrics::Metrics;
pub use processor::{Decode, Output, ProcessError, Processor, Raw, RecordMeta, now_ms};
pub use runner::{RunSpec, run, start, wait};
pub use stage::{Emit, Stage, StageProcessor, Then};
pub use table::Table;
pub use tokio_util::sync::CancellationToken;
