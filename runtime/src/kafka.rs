//! Kafka clients as every processor configures them, and the consumer context that keeps the
//! offset tracker in step with rebalances.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};

use crate::config::Config;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::offsets::{OffsetTracker, PartitionKey};

/// Settings shared by consumers and producers, then `[kafka.properties]`.
fn base(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

/// A consumer that never commits on its own what was not stored: offsets are stored by the
/// runtime only for acknowledged records, and auto-commit sends what is stored.
pub fn consumer_config(config: &Config, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    let defaults = [
        ("group.id", group_id),
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "1000"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "10000"),
        ("statistics.interval.ms", "5000"),
        // Bounded prefetch: a slow stage slows fetching instead of growing memory. 4 MB is
        // thousands of records; with a short backoff once it is full, fetching resumes as soon
        // as the stage has taken some (librdkafka's default waits a whole second, which made
        // a small queue a throughput cap).
        ("queued.max.messages.kbytes", "4096"),
        ("fetch.queue.backoff.ms", "20"),
        ("partition.assignment.strategy", "range"),
    ];
    for (k, v) in defaults {
        c.set(k, v);
    }
    for (k, v) in base(config).config_map() {
        c.set(k, v);
    }
    for (k, v) in &config.kafka.consumer {
        c.set(k, v);
    }
    c
}

/// An idempotent producer: no duplicates or reordering from its own retries.
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    let defaults = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
        // The Java client's partitioner: records keyed by user id land on the same partition
        // whichever language produced them, which co-partitioned tables rely on.
        ("partitioner", "murmur2_random"),
        ("statistics.interval.ms", "0"),
    ];
    for (k, v) in defaults {
        c.set(k, v);
    }
    for (k, v) in base(config).config_map() {
        c.set(k, v);
    }
    for (k, v) in &config.kafka.producer {
        c.set(k, v);
    }
    c
}

/// Keeps the offset tracker in step with the group: on revoke it waits (bounded) for in-flight
/// records of the revoked partitions, commits what is stored, then forgets them.
pub struct RunnerContext {
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub metrics: Metrics,
    pub health: Health,
    pub drain_timeout: Duration,
    /// Once shutting down, the run loop has drained already: revoke without waiting.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub(crate) hooks: std::sync::Arc<dyn crate::processor::RebalanceHooks>,
    /// Exactly-once mode: revoked partitions' offsets are committed in a transaction.
    pub(crate) transactions: Option<(
        std::sync::Arc<crate::txn::Transactions>,
        rdkafka::producer::FutureProducer,
    )>,
}

impl ClientContext for RunnerContext {
    /// Lag per partition from librdkafka's statistics. Parsed loosely (only the fields used)
    /// so that a field added by a newer librdkafka never loses the metric.
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics.record_consumer_lag(statistics);
    }
}

impl ConsumerContext for RunnerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let keys: Vec<PartitionKey> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let deadline = Instant::now() + self.drain_timeout;
            loop {
                let in_flight = self
                    .tracker
                    .lock()
                    .map(|t| t.in_flight(Some(&keys)))
                    .unwrap_or(0);
                if in_flight == 0 || Instant::now() >= deadline || self.shutdown.is_cancelled() {
                    if in_flight > 0 {
                        tracing::warn!(
                            in_flight,
                            "revoking partitions with records in flight; they will be redone"
                        );
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            match &self.transactions {
                Some((txn, producer)) => {
                    if let Err(e) =
                        txn.commit(producer, consumer.group_metadata(), Duration::from_secs(30))
                    {
                        tracing::error!(error = %e, "commit on revoke failed; the new owner redoes the records");
                    }
                }
                // Nothing stored yet is not an error worth reporting.
                None => {
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                }
            }
            if let Ok(mut t) = self.tracker.lock() {
                t.revoke(&keys);
            }
            self.hooks.revoked(&keys);
            for (topic, partition) in &keys {
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[topic, &partition.to_string()]);
            }
            tracing::info!(partitions = keys.len(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let keys: Vec<PartitionKey> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            tracing::info!(partitions = keys.len(), "partitions assigned");
            self.hooks.assigned(&keys);
            if let Ok(mut t) = self.tracker.lock() {
                t.assign(keys);
            }
            self.health.set_ready(true);
        }
    }
}
