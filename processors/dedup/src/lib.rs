//! Dedup by event id. A request goes on to `notify.stage.deduped.v1` only if its event id
//! was not accepted within the window; otherwise it ends with status DUPLICATE.
//!
//! Exactly once downstream, with an at-least-once runtime: the ledger row (CQL, LWT, TTL =
//! window) names the input record that claimed the id (`topic/partition/offset`) and where
//! its copy goes. The stage writes that copy itself and waits for the acknowledgement before
//! the runtime may commit the input offset. The same input record read again (crash,
//! rebalance, failed attempt) is recognised as the claimer and looks at the downstream
//! partition: sent already, or sent now. A different record with the id is a DUPLICATE.
//! If the database is unreachable the record is retried (the lane holds, fetching pauses):
//! nothing passes without a ledger decision.

pub mod batch_ledger;
pub mod cache;
pub mod cql_ledger;
pub mod downstream;
pub mod ledger;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use notify_runtime::codec::AvroCodec;
use notify_runtime::records::RoutedNotification;
use notify_runtime::runner::RuntimeError;
use serde::Deserialize;

pub use batch_ledger::BatchLedger;
pub use cache::ClaimCache;
pub use cql_ledger::CqlLedger;
pub use downstream::Downstream;
pub use ledger::{Claim, Claimed, Ledger, LedgerError, MemoryLedger};
pub use stage::{Dedup, Sink};

pub const NAME: &str = "dedup";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSettings {
    pub input: String,
    pub output: String,
    /// How long an accepted id blocks its duplicates (the ledger's TTL).
    pub window_secs: u64,
    /// Bound on one ledger request; past it the record is retried.
    pub cql_timeout_ms: u64,
    /// Ids remembered in memory per cache generation (two generations); 0 disables it. About
    /// 40 bytes each (fingerprints): the default holds the last 100,000-200,000 ids in ~8 MB,
    /// which is where duplicates (a producer's retries) cluster; older ones are still caught
    /// by the ledger.
    pub cache_entries: usize,
    /// Records processed at once by this stage (replaces `runtime.lanes` when larger). A
    /// claim is one Paxos round trip that waits on the database, not on this process's CPU,
    /// so concurrency, not cores, bounds the stage; 0 keeps `runtime.lanes`.
    pub lanes: usize,
    /// Partitions of the batched ledger (`dedup_claims`); 0 selects the per-id ledger
    /// (`dedup_ledger`, one Paxos round per id). Every instance must use the same value.
    pub ledger_buckets: usize,
    /// Claims per conditional batch, at most.
    pub max_batch: usize,
}

impl Default for DedupSettings {
    fn default() -> Self {
        DedupSettings {
            input: "notify.stage.preferences.v1".into(),
            output: "notify.stage.deduped.v1".into(),
            window_secs: 7 * 24 * 3600,
            cql_timeout_ms: 2_000,
            cache_entries: 100_000,
            lanes: 256,
            ledger_buckets: 16,
            max_batch: 64,
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
        if self.ledger_buckets > 0 && self.max_batch == 0 {
            errors.push(
                "max_batch must be at least 1 with the batched ledger (ledger_buckets > 0)".into(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The ledger the settings select.
pub enum DedupLedger {
    PerId(CqlLedger),
    Batched(BatchLedger),
}

impl Ledger for DedupLedger {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, LedgerError> {
        match self {
            DedupLedger::PerId(l) => l.claim(claim).await,
            DedupLedger::Batched(l) => l.claim(claim).await,
        }
    }
}

/// The Kafka sink: encodes against the registry and writes through [`Downstream`].
pub struct KafkaSink {
    pub downstream: Downstream,
    pub codec: AvroCodec,
    pub topic: String,
}

impl Sink for KafkaSink {
    fn partition_for(&self, key: &str) -> i32 {
        self.downstream.partition_for(key)
    }
    fn floor(&self, partition: i32) -> i64 {
        self.downstream.floor(partition)
    }
    async fn send(
        &self,
        partition: i32,
        key: &str,
        record: &RoutedNotification,
        owner: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), String> {
        let bytes = self
            .codec
            .encode(&self.topic, record)
            .await
            .map_err(|e| e.to_string())?;
        self.downstream
            .send(
                partition,
                key,
                &bytes,
                &record.request.event_id,
                owner,
                timestamp_ms,
            )
            .await
    }
    async fn was_forwarded(
        &self,
        partition: i32,
        from: i64,
        event_id: &str,
        owner: &str,
    ) -> Result<bool, String> {
        self.downstream
            .was_forwarded(partition, from, event_id, owner)
            .await
    }
}

/// Builds the stage from `config` (connects to CQL, retrying until it answers).
pub async fn build(
    config: &notify_runtime::Config,
    shutdown: &notify_runtime::CancellationToken,
) -> Result<Dedup<DedupLedger, KafkaSink>, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let setup = |e: &dyn std::fmt::Display| RuntimeError::Setup(e.to_string());
    let window = Duration::from_secs(settings.window_secs);
    let timeout = Duration::from_millis(settings.cql_timeout_ms);
    // The database may be down at start: wait for it rather than crash-loop.
    let ledger = loop {
        let attempt = async {
            let session = notify_runtime::cql::connect(&config.cql)
                .await
                .map_err(|e| e.to_string())?;
            let session = Arc::new(session);
            let ks = &config.cql.keyspace;
            let ledger = if settings.ledger_buckets == 0 {
                DedupLedger::PerId(
                    CqlLedger::new(session, ks, window, timeout)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            } else {
                DedupLedger::Batched(
                    BatchLedger::new(
                        session,
                        ks,
                        window,
                        timeout,
                        settings.ledger_buckets,
                        settings.max_batch,
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                )
            };
            Ok::<_, String>(ledger)
        };
        match attempt.await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "dedup ledger not reachable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(RuntimeError::Setup(e)),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let downstream = Downstream::new(config, &settings.output).map_err(|e| setup(&e))?;
    let codec = AvroCodec::new(&config.registry).map_err(|e| setup(&e))?;
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    Ok(Dedup {
        ledger,
        sink: KafkaSink {
            downstream,
            codec,
            topic: settings.output,
        },
        cache: ClaimCache::new(settings.cache_entries, window_ms),
        status_topic: config.runtime.status_topic.clone(),
        stage: NAME.into(),
    })
}

/// `config` with at least `lanes` lanes and room in flight for them. A lane's queue may take
/// the whole in-flight bound, so a few records per lane keep every lane busy (at most `lanes`
/// claims wait on the database at once); more would only hold memory (each record in flight
/// costs a few KB: 64 per lane took dedup to 151 MiB).
pub fn with_lanes(mut config: notify_runtime::Config, lanes: usize) -> notify_runtime::Config {
    if lanes > config.runtime.lanes {
        config.runtime.lanes = lanes;
        config.runtime.max_in_flight = config.runtime.max_in_flight.max(lanes * 8);
    }
    config
}

/// Runs dedup with `[processors.dedup]` of `config` until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let config = with_lanes(config, settings.lanes);
    let stage = build(&config, &shutdown).await?;
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![settings.input],
    };
    notify_runtime::run(stage, spec, config, shutdown).await
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
            max_batch: 0,
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
