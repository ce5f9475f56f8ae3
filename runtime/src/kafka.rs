//! Kafka clients as every processor and tool configures them, and the consumer context that
//! keeps the offset tracker and the pause state in step with rebalances.
//!
//! [`client_config`] is the one place a client starts from: `bootstrap.servers` plus
//! `[kafka.properties]` (SASL, TLS, tuning), so every client (processors, tables, probes,
//! the CLI's tools) reaches a secured cluster the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};

use crate::config::Config;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::offsets::{OffsetTracker, PartitionKey};

/// `bootstrap.servers` and `[kafka.properties]`: what every client needs to reach the cluster.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    set_cluster(&mut c, config);
    c
}

/// Sets `bootstrap.servers` and `[kafka.properties]` on `c`, over whatever it has. Never copy
/// them out of another `ClientConfig` (`config_map` masks `sasl.password`: a client built that
/// way fails SCRAM authentication).
fn set_cluster(c: &mut ClientConfig, config: &Config) {
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
}

/// A consumer without a group of its own (tools, tables, probes), from [`client_config`].
/// `group_id` only names it to the broker; nothing is committed. It reports reaching the end
/// of a partition (`PartitionEOF`), which tells "caught up" even when the log ends in a
/// transaction marker that no message stands for.
pub fn reader_config(config: &Config, group_id: &str) -> ClientConfig {
    let mut c = client_config(config);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    c
}

/// A consumer that never commits on its own what was not stored: offsets are stored by the
/// runtime only for finished records, and auto-commit sends what is stored.
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
        // Outputs of transactional processors are visible once their transaction commits.
        ("isolation.level", "read_committed"),
        // Bounded prefetch: a slow stage slows fetching instead of growing memory. 4 MB is
        // thousands of records; with a short backoff once it is full, fetching resumes as soon
        // as the stage has taken some (librdkafka's default waits a whole second, which made
        // a small queue a throughput cap).
        ("queued.max.messages.kbytes", "4096"),
        ("fetch.queue.backoff.ms", "20"),
        // Fewer, fuller fetches under load: the broker answers once 64 KB are there or
        // 20 ms have passed, instead of once per record trickling in (each fetch costs the
        // broker CPU whatever it carries). Adds at most 20 ms per hop to the latency.
        ("fetch.min.bytes", "65536"),
        ("fetch.wait.max.ms", "20"),
        ("partition.assignment.strategy", "range"),
    ];
    for (k, v) in defaults {
        c.set(k, v);
    }
    set_cluster(&mut c, config);
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
        // Batches of 20 ms: a transaction commits every 100 ms anyway, and fewer, larger
        // produce requests cost the broker far less CPU per record.
        ("linger.ms", "20"),
        ("compression.type", "lz4"),
        // The Java client's partitioner: records keyed by user id land on the same partition
        // whichever language produced them, which partition ownership relies on.
        ("partitioner", "murmur2_random"),
        ("statistics.interval.ms", "0"),
        // A crashed transactional instance's open transaction blocks read_committed
        // consumers until the broker aborts it: keep that short (commits come every 100 ms).
        ("transaction.timeout.ms", "10000"),
    ];
    for (k, v) in defaults {
        c.set(k, v);
    }
    set_cluster(&mut c, config);
    for (k, v) in &config.kafka.producer {
        c.set(k, v);
    }
    c
}

/// The largest record the producer takes (`message.max.bytes`, librdkafka's default 1,000,000
/// unless the config sets it): a larger output is refused before it is sent.
pub fn max_record_bytes(config: &Config) -> usize {
    producer_config(config)
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The runtime's producer: its statistics feed the processor's metrics.
pub type RuntimeProducer = rdkafka::producer::FutureProducer<ProducerStats>;

/// Statistics of the runtime's producer go to `notify_kafka_*` gauges.
pub struct ProducerStats {
    pub metrics: Metrics,
}

impl ClientContext for ProducerStats {
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics.record_statistics("producer", statistics);
    }
}

/// Whether the loop wants its partitions paused (backpressure). librdkafka keeps a
/// partition's pause flag across a revoke and a re-assignment of the same partition, so a
/// resume issued in between (on an empty assignment) would leave it paused for good: the
/// assignment callback applies this wanted state to every newly assigned partition.
#[derive(Default)]
pub struct PauseState {
    wanted: AtomicBool,
}

impl PauseState {
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Pauses or resumes the whole current assignment and remembers the choice.
    pub fn apply<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, pause: bool) {
        self.wanted.store(pause, Ordering::Relaxed);
        match consumer.assignment() {
            Ok(assignment) => set(consumer, &assignment, pause),
            Err(e) => tracing::warn!(error = %e, pause, "reading the assignment failed"),
        }
    }
}

fn set<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    tpl: &rdkafka::TopicPartitionList,
    pause: bool,
) {
    if tpl.count() == 0 {
        return;
    }
    let result = if pause {
        consumer.pause(tpl)
    } else {
        consumer.resume(tpl)
    };
    match result {
        Ok(()) => tracing::debug!(pause, partitions = tpl.count(), "backpressure"),
        Err(e) => tracing::warn!(error = %e, pause, "pause/resume failed"),
    }
}

/// Keeps the offset tracker in step with the group: on revoke it waits (bounded) for in-flight
/// records of the revoked partitions, commits what is finished, then forgets them.
pub struct RunnerContext {
    pub(crate) tracker: Arc<Mutex<OffsetTracker<crate::lane::Release>>>,
    pub metrics: Metrics,
    pub health: Health,
    pub pause: Arc<PauseState>,
    pub drain_timeout: Duration,
    /// Once shutting down, the run loop has drained already: revoke without waiting.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub(crate) hooks: std::sync::Arc<dyn crate::processor::RebalanceHooks>,
    /// The processor's failure, as `Shared::fail` sets it.
    pub(crate) fatal: Arc<Mutex<Option<String>>>,
    /// Exactly-once mode: revoked partitions' offsets are committed in a transaction.
    pub(crate) transactions: Option<(std::sync::Arc<crate::txn::Transactions>, RuntimeProducer)>,
}

impl ClientContext for RunnerContext {
    /// Lag per partition from librdkafka's statistics.
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics.record_statistics("consumer", statistics);
    }
}

fn keys_of(tpl: &rdkafka::TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for RunnerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let keys = keys_of(tpl);
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
            let forget = || {
                if let Ok(mut t) = self.tracker.lock() {
                    t.revoke(&keys);
                }
            };
            match &self.transactions {
                // The commit and the forgetting happen under the transaction gate together, so
                // no output of a revoked partition slips into the next transaction.
                Some((txn, producer)) => {
                    if let Err(e) = txn.commit_then(
                        producer,
                        consumer.group_metadata(),
                        Duration::from_secs(30),
                        forget,
                    ) {
                        // The producer's transaction is now abortable at best: carrying on
                        // with it leaves a processor that commits nothing (and, after a session
                        // lost to a broker outage, one that may never consume again). A
                        // restart fences it, aborts the transaction, and the new owner redoes
                        // the records.
                        crate::runner::fail(
                            &self.fatal,
                            &self.shutdown,
                            format!("commit on revoke: {e}"),
                        );
                    }
                }
                None => {
                    // Nothing stored yet is not an error worth reporting.
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    forget();
                }
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let keys = keys_of(tpl);
            tracing::info!(partitions = keys.len(), "partitions assigned");
            self.hooks.assigned(&keys);
            if let Ok(mut t) = self.tracker.lock() {
                t.assign(keys);
            }
            // Explicitly, both ways: a stale pause flag from before the revoke is cleared.
            set(consumer, tpl, self.pause.wanted());
            self.health.set_ready(true);
            if crate::fault::hit("rebalance.lose_assignment") {
                let _ = consumer.unassign();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client of a SASL cluster gets the real password (librdkafka cannot sign in with
    /// the masked copy `ClientConfig::config_map` hands out).
    #[test]
    fn every_client_gets_the_cluster_properties_unmasked() {
        let config = Config::load_with_env(
            None,
            [
                ("NOTIFY_KAFKA__PROPERTIES__SASL_USERNAME", "notify-chain"),
                ("NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD", "1e5"),
                ("NOTIFY_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let clients = [
            ("client", client_config(&config)),
            ("reader", reader_config(&config, "g")),
            ("consumer", consumer_config(&config, "g")),
            ("producer", producer_config(&config)),
        ];
        for (name, c) in clients {
            assert_eq!(c.get("sasl.password"), Some("1e5"), "{name}");
            assert_eq!(c.get("sasl.username"), Some("notify-chain"), "{name}");
            assert_eq!(c.get("security.protocol"), Some("SASL_SSL"), "{name}");
        }
    }
}
