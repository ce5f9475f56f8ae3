//! Rate-limiting stage: per user and channel, and per user and category, sliding windows.
//!
//! Consumes `notify.stage.rendered.v1`, writes `notify.stage.limited.v1` without the channels
//! over their limit (RATE_LIMITED status for each). State is the accepted sends per user and
//! scope in the CQL database, so a restart or a rebalance never resets a window; the windows of
//! the users this instance serves are cached in memory (write-through, dropped on rebalance).

mod cached_store;
mod cql_store;
mod limiter;
mod processor;
mod rules;
mod store;

use std::sync::Arc;
use std::time::Duration;

use notify_runtime::runner::RuntimeError;
use serde::Deserialize;

pub use cached_store::{CacheStats, CachedStore};
pub use cql_store::CqlStore;
pub use limiter::{Limiter, Verdict, limiter_contract};
pub use processor::RateLimitProcessor;
pub use rules::{Rule, scopes_for, validate};
pub use store::{MemoryStore, RateStore, Sent, StoreError, store_contract};

pub const NAME: &str = "ratelimit";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub input: String,
    pub output: String,
    /// Bound on each CQL request; past it the record is retried (backpressure).
    pub cql_timeout_ms: u64,
    /// Windows of (user, scope) kept in memory per cache generation (two generations), read
    /// once and then kept current by this instance's own writes; 0 reads every window from
    /// the database on every check. Dropped on every rebalance.
    pub cache_windows: usize,
    pub rules: Vec<Rule>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            input: "notify.stage.rendered.v1".into(),
            output: "notify.stage.limited.v1".into(),
            cql_timeout_ms: 5_000,
            cache_windows: 20_000,
            rules: Vec::new(),
        }
    }
}

pub type Settings = RateLimitSettings;

impl Settings {
    /// What start-up checks before it connects, every problem at once (`--check-config`).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = notify_runtime::config::blank(&[
            ("input", self.input.as_str()),
            ("output", self.output.as_str()),
        ]);
        if self.cql_timeout_ms == 0 {
            errors.push("cql_timeout_ms must be at least 1".into());
        }
        if let Err(rules) = validate(&self.rules) {
            errors.extend(rules);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The processor over `store`, configured from `settings`.
pub fn processor<S: RateStore>(
    store: S,
    settings: &Settings,
    config: &notify_runtime::Config,
    metrics: &notify_runtime::Metrics,
) -> RateLimitProcessor<S> {
    RateLimitProcessor {
        limiter: Limiter {
            store,
            rules: settings.rules.clone(),
        },
        output: settings.output.clone(),
        status_topic: config.runtime.status_topic.clone(),
        metrics: processor::decision_metrics(metrics),
    }
}

/// Checks the rules of `[processors.ratelimit]` (what start-up refuses).
pub fn check(settings: &Settings) -> Result<(), notify_runtime::config::ConfigError> {
    validate(&settings.rules).map_err(|errors| {
        notify_runtime::config::ConfigError::Invalid(
            errors
                .into_iter()
                .map(|e| format!("processors.{NAME}.{e}"))
                .collect(),
        )
    })
}

/// Builds the stage from `config`: the CQL store of windows behind the cache of the users
/// this instance's partitions own.
pub async fn build(
    config: &notify_runtime::Config,
    metrics: &notify_runtime::Metrics,
) -> Result<RateLimitProcessor<CachedStore<CqlStore>>, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    check(&settings)?;
    let session = notify_runtime::cql::connect(&config.cql)
        .await
        .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let store = CqlStore::new(
        Arc::new(session),
        &config.cql.keyspace,
        Duration::from_millis(settings.cql_timeout_ms),
        metrics,
    )
    .await
    .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let store = CachedStore::new(store, settings.cache_windows);
    Ok(processor(store, &settings, config, metrics))
}

/// Lanes the stage runs with when it is alone in a process: a window is read once per user,
/// then each pass is one batched write to wait for.
pub const LANES: usize = 64;

/// Runs the stage with `[processors.ratelimit]` of `config` until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let mut config = config;
    if config.runtime.lanes < LANES {
        config.runtime.lanes = LANES;
        config.runtime.max_in_flight = config.runtime.max_in_flight.max(LANES * 8);
    }
    let metrics = notify_runtime::Metrics::new(NAME);
    let stage = build(&config, &metrics).await?;
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![settings.input.clone()],
    };
    notify_runtime::run(
        notify_runtime::StageProcessor(stage),
        spec,
        config,
        metrics,
        shutdown,
    )
    .await
}
