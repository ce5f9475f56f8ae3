//! The retry ladder and deferrals.
//!
//! Records on a ladder step's topic (`notify.retry.10s.v1`, …) or on `notify.deferred.v1`
//! wait in memory until due, then go back, bytes and headers unchanged but for the wait's
//! own headers, to the topic named by `notify.origin.topic`. Waiting is a timer per record
//! (the earliest due time wakes the loop), so a record not yet due never holds back one that
//! is due, on any partition; a partition holding too many records is paused. Offsets are
//! stored only when what a record produced is acknowledged, so a crash re-reads the records
//! still waiting and at most re-sends one that was returned just before.
//!
//! The header names are `notify_runtime::dlq::retry::*` plus `notify.attempts`,
//! `notify.first_failure_at` and `notify.error.reason`.
//!
//! This processor has its own consume loop instead of the runtime's lanes: a lane that
//! waited for a record's due time would hold back every other key of the lane.

mod held;
pub mod metrics;
pub mod outgoing;
pub mod plan;
pub mod settings;
mod worker;

use notify_runtime::runner::{Running, RuntimeError};
use notify_runtime::{CancellationToken, Config};

pub use settings::{RetrySettings, Step};

pub const NAME: &str = "retry";
pub type Settings = RetrySettings;

/// Runs the retry processor with `[processors.retry]` of `config` until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RuntimeError> {
    let running = start(config, shutdown).await?;
    match running.done.await {
        Ok(result) => result,
        Err(join) => Err(RuntimeError::Setup(format!("retry loop panicked: {join}"))),
    }
}

/// Starts the retry processor and returns once it has subscribed.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, RuntimeError> {
    // Validated while read (see `RetrySettings`).
    let mut settings: Settings = config.processor(NAME)?;
    if settings.origins.is_empty() {
        settings.origins = pipeline_origins(&config);
    }
    worker::start(settings, config, shutdown).await
}

/// The topics records come to the retry processor from, as `config` names them: the input of
/// each delivery processor (failed attempts) and the requests topic (quiet-hours deferrals),
/// with their defaults where a table does not set them.
pub fn pipeline_origins(config: &Config) -> Vec<String> {
    let named = |processor: &str, key: &str, default: &str| {
        config
            .processors
            .get(processor)
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or(default)
            .to_string()
    };
    let mut origins: Vec<String> = ["apns", "fcm", "sms", "email"]
        .iter()
        .map(|c| {
            named(
                &format!("deliver-{c}"),
                "input",
                &format!("notify.channel.{c}.v1"),
            )
        })
        .collect();
    origins.push(named("preferences", "requests_topic", "notify.requests.v1"));
    origins
}
