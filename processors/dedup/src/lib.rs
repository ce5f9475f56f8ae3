//! Dedup on (user id, event id): a request goes on only if that user's event id was not
//! accepted within the window; otherwise it ends with status DUPLICATE. One event id sent to
//! two users is two notifications.
//!
//! No consensus on the per-record path: the owner of an input partition decides for its users
//! alone (their records arrive in offset order), from memory (recent ids, Bloom filters of
//! the window read back on assignment) and, when the filters may have seen the id, one point
//! read. An accepted id is written to the ledger in a batch with others and is durable
//! before the record's outputs. The row says which record accepted it (a function of the
//! log), so a zombie or a redo writes the same row, and reading the same record again passes.

pub mod ledger;
pub mod naive;
pub mod seen;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use notify_runtime::cql::BatchSettings;
use notify_runtime::runner::RuntimeError;
use notify_runtime::{Config, Metrics};
use serde::Deserialize;

pub use ledger::{CqlLedger, Ledger, LedgerError, MemoryLedger};
pub use seen::Id;
pub use stage::{Decision, Dedup, NAME, REPLAY_RUN};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSettings {
    pub input: String,
    pub output: String,
    /// How long an accepted id blocks its duplicates (the ledger's TTL).
    pub window_secs: u64,
    /// Bound on one ledger request; past it the record is retried.
    pub cql_timeout_ms: u64,
    /// Buckets per partition in the ledger (every instance must use the same value).
    pub buckets: u32,
    /// Ids per Bloom filter at most (a partition's first filter is sized for 4,096 and each
    /// next one for twice as many; a new filter when one is full; about 1.2 bytes per id at 1%).
    pub bloom_capacity: usize,
    /// Recent ids remembered exactly per partition and generation (two generations).
    pub recent_ids: usize,
    /// `owned` (the project's scheme) or `naive` (one lightweight transaction per event, for
    /// the benchmark's comparison).
    pub scheme: Scheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Owned,
    Naive,
}

impl Default for DedupSettings {
    fn default() -> Self {
        DedupSettings {
            input: "notify.stage.preferences.v1".into(),
            output: "notify.stage.deduped.v1".into(),
            window_secs: 7 * 24 * 3600,
            cql_timeout_ms: 2_000,
            buckets: 32,
            bloom_capacity: 1_000_000,
            recent_ids: 50_000,
            scheme: Scheme::Owned,
        }
    }
}

pub type Settings = DedupSettings;

impl Settings {
    /// What start-up checks before it connects, every problem at once (`--check-config`).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = notify_runtime::config::blank(&[
            ("input", self.input.as_str()),
            ("output", self.output.as_str()),
        ]);
        if self.input == self.output {
            errors.push("output must differ from input".into());
        }
        if self.window_secs == 0 {
            errors.push("window_secs must be at least 1 (the ledger's TTL)".into());
        }
        if self.cql_timeout_ms == 0 {
            errors.push("cql_timeout_ms must be at least 1".into());
        }
        if self.buckets == 0 {
            errors.push("buckets must be at least 1".into());
        }
        if self.bloom_capacity == 0 || self.recent_ids == 0 {
            errors.push("bloom_capacity and recent_ids must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Connects to CQL, waiting for it rather than crash-looping when it is down at start.
pub async fn session(
    config: &Config,
    shutdown: &notify_runtime::CancellationToken,
) -> Result<Arc<scylla::client::session::Session>, RuntimeError> {
    loop {
        match notify_runtime::cql::connect(&config.cql).await {
            Ok(s) => return Ok(Arc::new(s)),
            Err(e) => {
                tracing::warn!(error = %e, "CQL database not reachable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(RuntimeError::Setup(e.to_string())),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

/// Builds the stage from `config`.
pub async fn build(
    config: &Config,
    metrics: &Metrics,
    shutdown: &notify_runtime::CancellationToken,
) -> Result<Dedup<CqlLedger>, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let session = session(config, shutdown).await?;
    let window = Duration::from_secs(settings.window_secs);
    let latency = metrics.histogram_vec(
        "notify_dedup_ledger_seconds",
        "Dedup ledger latency by operation (lookup, record)",
        &["op"],
    );
    let batch = BatchSettings {
        timeout: Duration::from_millis(settings.cql_timeout_ms),
        ..BatchSettings::default()
    };
    let ledger = CqlLedger::new(
        session,
        &config.cql.keyspace,
        window,
        settings.buckets,
        batch,
        metrics,
        latency,
    )
    .await
    .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let mut dedup = Dedup::new(
        Arc::new(ledger),
        settings.output,
        config.runtime.status_topic.clone(),
        window_ms,
        metrics,
    );
    dedup.bloom_capacity = settings.bloom_capacity;
    dedup.recent_per_generation = settings.recent_ids;
    Ok(dedup)
}

/// `config` with at least `lanes` lanes (a record waits for its batch to be written, so
/// concurrency, not cores, bounds the stage) and room in flight for them.
pub fn with_lanes(mut config: Config, lanes: usize) -> Config {
    if lanes > config.runtime.lanes {
        config.runtime.lanes = lanes;
        config.runtime.max_in_flight = config.runtime.max_in_flight.max(lanes * 8);
    }
    config
}

/// Lanes dedup runs with when it is alone in a process.
pub const LANES: usize = 64;

/// Runs dedup with `[processors.dedup]` of `config` until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let config = with_lanes(config, LANES);
    let metrics = Metrics::new(NAME);
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![settings.input.clone()],
    };
    match settings.scheme {
        Scheme::Owned => {
            let stage = build(&config, &metrics, &shutdown).await?;
            notify_runtime::run(
                notify_runtime::StageProcessor(stage),
                spec,
                config,
                metrics,
                shutdown,
            )
            .await
        }
        Scheme::Naive => {
            let stage = naive::build(&config, &metrics, &shutdown).await?;
            notify_runtime::run(
                notify_runtime::StageProcessor(stage),
                spec,
                config,
                metrics,
                shutdown,
            )
            .await
        }
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;

    #[test]
    fn check_names_every_bad_setting() {
        assert_eq!(Settings::default().check(), Ok(()));
        let bad = Settings {
            output: "notify.stage.preferences.v1".into(),
            window_secs: 0,
            buckets: 0,
            ..Settings::default()
        };
        let errors = bad.check().expect_err("three problems");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("window_secs")),
            "{errors:?}"
        );
    }
}
