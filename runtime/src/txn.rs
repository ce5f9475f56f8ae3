//! Exactly-once for Kafka-to-Kafka stages (`kafka.transactional = true`).
//!
//! Outputs go into an open producer transaction; every `transaction_interval_ms` the runtime
//! blocks new sends for a moment, adds the offsets of exactly the records whose outputs the
//! transaction holds (`send_offsets_to_transaction`), commits, and opens the next one. In this
//! mode a record's outputs wait in the offset tracker until the records before it in its
//! partition have finished, and are sent in offset order, so the records that produced are
//! always a contiguous prefix: no output is committed without its
//! input's offset, and no offset without its outputs. Any transaction error stops the
//! processor; on restart the open transaction is aborted (same transactional.id fences it) and
//! the records are redone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

#[derive(Default)]
pub(crate) struct Transactions {
    /// Lanes hold it (shared) while sending a record's outputs; a commit holds it alone.
    pub gate: RwLock<()>,
    /// Next offset to commit per (topic, partition), for records produced into the open one.
    pending: Mutex<HashMap<(String, i32), i64>>,
    /// Something was produced since the last commit.
    dirty: AtomicBool,
}

impl Transactions {
    /// Notes, under the shared gate, that a record's outputs are in the open transaction.
    pub fn record_produced(&self, topic: &str, partition: i32, next_offset: Option<i64>) {
        self.dirty.store(true, Ordering::Relaxed);
        if let Some(next) = next_offset {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.insert((topic.to_string(), partition), next);
        }
    }

    /// Commits the open transaction with its offsets and opens the next. Returns the number of
    /// partitions whose offsets moved.
    pub fn commit(
        &self,
        producer: &crate::kafka::RuntimeProducer,
        group: Option<ConsumerGroupMetadata>,
        timeout: Duration,
    ) -> Result<usize, String> {
        self.commit_then(producer, group, timeout, || {})
    }

    /// As [`commit`](Self::commit), then runs `after` while still holding the gate alone
    /// (nothing can be sent between the commit and `after`), whatever the commit's result.
    pub fn commit_then(
        &self,
        producer: &crate::kafka::RuntimeProducer,
        group: Option<ConsumerGroupMetadata>,
        timeout: Duration,
        after: impl FnOnce(),
    ) -> Result<usize, String> {
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let result = self.commit_locked(producer, group, timeout);
        after();
        result
    }

    fn commit_locked(
        &self,
        producer: &crate::kafka::RuntimeProducer,
        group: Option<ConsumerGroupMetadata>,
        timeout: Duration,
    ) -> Result<usize, String> {
        let offsets = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let dirty = self.dirty.swap(false, Ordering::Relaxed);
        if offsets.is_empty() && !dirty {
            return Ok(0);
        }
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in &offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| e.to_string())?;
            }
            let group = group.ok_or("no consumer group metadata")?;
            producer
                .send_offsets_to_transaction(&tpl, &group, timeout)
                .map_err(|e| format!("send offsets to transaction: {e}"))?;
        }
        crate::fault::point("txn.before_commit");
        producer
            .commit_transaction(timeout)
            .map_err(|e| format!("commit transaction: {e}"))?;
        producer
            .begin_transaction()
            .map_err(|e| format!("begin transaction: {e}"))?;
        Ok(offsets.len())
    }
}
