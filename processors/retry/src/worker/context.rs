//! The consumer context: keeps the offset tracker in step with the group and exports lag.
//!
//! Unlike the runtime's lanes, held records are expected to stay unfinished for a step's
//! delay, so a revoke does not wait for them: it commits what is stored and the new owner
//! reads the rest again.

use std::sync::{Arc, Mutex};

use notify_runtime::http::Health;
use notify_runtime::metrics::Metrics;
use notify_runtime::offsets::{OffsetTracker, PartitionKey};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};

pub(crate) struct RetryContext {
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub metrics: Metrics,
    pub health: Health,
}

fn keys(tpl: &rdkafka::TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for RetryContext {
    /// Lag per partition from librdkafka's statistics (only the fields used are read).
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics.record_statistics("consumer", statistics);
    }
}

impl ConsumerContext for RetryContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let keys = keys(tpl);
            // Nothing stored yet is not an error worth reporting.
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
            if let Ok(mut t) = self.tracker.lock() {
                t.revoke(&keys);
            }
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
            let keys = keys(tpl);
            tracing::info!(partitions = keys.len(), "partitions assigned");
            if let Ok(mut t) = self.tracker.lock() {
                t.assign(keys);
            }
            // librdkafka keeps a partition's pause flag across a revoke and a re-assignment,
            // while the worker forgets the partitions it paused once they are revoked: without
            // this, a partition paused (too many held) when a broker outage cost the session
            // would come back paused for good. The worker pauses it again if it fills up.
            if tpl.count() > 0
                && let Err(e) = consumer.resume(tpl)
            {
                tracing::warn!(error = %e, "resuming assigned partitions failed");
            }
            self.health.set_ready(true);
        }
    }
}
