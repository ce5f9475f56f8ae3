//! A local, read-only view of a compacted topic (profiles, templates), keyed by record key.
//!
//! A background consumer reads the table's partitions from the beginning and keeps tailing
//! them; a null value (tombstone) deletes the key. No database call per event: lookups are map
//! reads. Used globally (`assign_all`, every partition: templates) or co-partitioned with a
//! processor's input (`assign`/`revoke` from the rebalance hooks: profiles).
//!
//! `sync_partition` makes "an update is visible to the requests that follow it" hold: it
//! returns once the partition includes every record written before a given instant, by asking
//! the broker for the high watermark after that instant and waiting until the table reads up to
//! it. Concurrent waiters share one watermark query per partition.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::codec::AvroCodec;
use crate::config::Config;
use crate::records::AvroRecord;
use crate::runner::RuntimeError;

struct Partition<V> {
    rows: HashMap<String, Arc<V>>,
    /// Next offset the table will read.
    position: i64,
}

/// The last high watermark asked for, and when the question was asked.
#[derive(Clone, Copy)]
struct Watermark {
    asked_at: Instant,
    high: i64,
}

/// Which row a record goes to: by default its Kafka key; a table may derive it from the value
/// (several rows per key, e.g. one per device token of a user).
pub type RowKey<V> = fn(&str, &V) -> String;

struct Inner<V> {
    topic: String,
    row_key: RowKey<V>,
    consumer: Arc<StreamConsumer>,
    /// Asks for watermarks on its own connection: the broker answers a connection's requests
    /// in order, so on the reader's connection a query would wait behind its idle long-poll.
    watermark_client: Arc<BaseConsumer>,
    partitions: RwLock<HashMap<i32, Partition<V>>>,
    watermarks: HashMap<i32, Arc<tokio::sync::Mutex<Option<Watermark>>>>,
    progress: Notify,
    bad_records: std::sync::atomic::AtomicU64,
    /// Decode attempts that found the registry unavailable (the record was held, not skipped).
    registry_waits: std::sync::atomic::AtomicU64,
}

/// A local view of a compacted topic. Cheap to clone.
pub struct Table<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            inner: self.inner.clone(),
        }
    }
}

/// How far a producer's clock may run ahead of ours, for [`since_event`].
const CLOCK_SKEW: Duration = Duration::from_millis(200);

/// The instant to sync to for a record with event time `timestamp_ms`: every table update
/// written before the record was written must be visible, so a watermark asked for a little
/// after that (allowing for clock skew) is enough. Under load records are read some time after
/// they were written, so one watermark query serves many of them; a fresh record (or one
/// without a timestamp) syncs to now.
pub fn since_event(timestamp_ms: Option<i64>) -> Instant {
    let now = Instant::now();
    let Some(written) = timestamp_ms else {
        return now;
    };
    let age_ms = crate::processor::now_ms() - written - CLOCK_SKEW.as_millis() as i64;
    if age_ms <= 0 {
        return now;
    }
    now.checked_sub(Duration::from_millis(age_ms as u64))
        .unwrap_or(now)
}

impl<V: AvroRecord> Table<V> {
    /// Creates the table and starts its reader; no partition is read until assigned.
    pub async fn new(config: &Config, topic: &str) -> Result<Table<V>, RuntimeError> {
        Self::keyed_by(config, topic, |key, _| key.to_string()).await
    }

    /// As [`Table::new`], with rows keyed by `row_key(record key, value)`. A tombstone removes
    /// the row named by the record key alone.
    pub async fn keyed_by(
        config: &Config,
        topic: &str,
        row_key: RowKey<V>,
    ) -> Result<Table<V>, RuntimeError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.kafka.bootstrap_servers)
            .set(
                "group.id",
                format!("{}-table-{topic}", config.kafka.group_prefix),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        for (k, v) in &config.kafka.properties {
            client.set(k, v);
        }
        let consumer: Arc<StreamConsumer> = Arc::new(client.create()?);
        let watermark_client: Arc<BaseConsumer> = Arc::new(client.create()?);
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| RuntimeError::Setup(format!("table {topic}: {e}")))?;
        let partition_ids: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partition_ids.is_empty() {
            return Err(RuntimeError::Setup(format!(
                "table topic {topic} does not exist"
            )));
        }
        let codec =
            AvroCodec::new(&config.registry).map_err(|e| RuntimeError::Registry(e.to_string()))?;
        let inner = Arc::new(Inner {
            topic: topic.to_string(),
            row_key,
            consumer,
            watermark_client,
            partitions: RwLock::new(HashMap::new()),
            watermarks: partition_ids
                .iter()
                .map(|p| (*p, Arc::new(tokio::sync::Mutex::new(None))))
                .collect(),
            progress: Notify::new(),
            bad_records: Default::default(),
            registry_waits: Default::default(),
        });
        tokio::spawn(read_loop(Arc::downgrade(&inner), codec));
        Ok(Table { inner })
    }

    /// Starts reading these partitions from the beginning (a re-assigned partition is rebuilt).
    pub fn assign(&self, partitions: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = self
                .inner
                .partitions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for &p in partitions {
                if state.contains_key(&p) || !self.inner.watermarks.contains_key(&p) {
                    continue;
                }
                state.insert(
                    p,
                    Partition {
                        rows: HashMap::new(),
                        position: 0,
                    },
                );
                let _ = tpl.add_partition_offset(&self.inner.topic, p, Offset::Beginning);
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.inner.consumer.incremental_assign(&tpl)
        {
            tracing::error!(topic = %self.inner.topic, error = %e, "table assign failed");
        }
    }

    /// Every partition of the topic (a global table).
    pub fn assign_all(&self) {
        let all: Vec<i32> = self.inner.watermarks.keys().copied().collect();
        self.assign(&all);
    }

    /// Stops reading these partitions and forgets their rows.
    pub fn revoke(&self, partitions: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = self
                .inner
                .partitions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for &p in partitions {
                if state.remove(&p).is_some() {
                    tpl.add_partition(&self.inner.topic, p);
                }
            }
        }
        if tpl.count() > 0 {
            let _ = self.inner.consumer.incremental_unassign(&tpl);
        }
    }

    /// The row for `key`, looked up in every assigned partition.
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let state = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        state.values().find_map(|p| p.rows.get(key).cloned())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        let state = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        state.values().map(|p| p.rows.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that could not be decoded and were skipped (logged with their offset).
    pub fn bad_records(&self) -> u64 {
        self.inner
            .bad_records
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Times a record waited for the schema registry (it was held, never skipped).
    pub fn registry_waits(&self) -> u64 {
        self.inner
            .registry_waits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `partition` includes every record written before `since`. False on timeout
    /// or when the partition is not assigned.
    pub async fn sync_partition(&self, partition: i32, since: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Some(high) = self.high_watermark_after(partition, since, timeout).await else {
            return false;
        };
        loop {
            let notified = self.inner.progress.notified();
            match self.position(partition) {
                None => return false,
                Some(pos) if pos >= high => return true,
                Some(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.position(partition).is_some_and(|p| p >= high);
            }
        }
    }

    /// `sync_partition` for every assigned partition.
    pub async fn sync(&self, since: Instant, timeout: Duration) -> bool {
        let assigned: Vec<i32> = {
            let state = self
                .inner
                .partitions
                .read()
                .unwrap_or_else(|e| e.into_inner());
            state.keys().copied().collect()
        };
        for p in assigned {
            if !self.sync_partition(p, since, timeout).await {
                return false;
            }
        }
        true
    }

    fn position(&self, partition: i32) -> Option<i64> {
        let state = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        state.get(&partition).map(|p| p.position)
    }

    /// A high watermark the broker reported in answer to a question asked after `since`.
    async fn high_watermark_after(
        &self,
        partition: i32,
        since: Instant,
        timeout: Duration,
    ) -> Option<i64> {
        let slot = self.inner.watermarks.get(&partition)?.clone();
        let mut cached = slot.lock().await;
        if let Some(w) = *cached
            && w.asked_at >= since
        {
            return Some(w.high);
        }
        let asked_at = Instant::now();
        let consumer = self.inner.watermark_client.clone();
        let topic = self.inner.topic.clone();
        let answer = tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, partition, timeout)
        })
        .await
        .ok()?;
        match answer {
            Ok((_low, high)) => {
                *cached = Some(Watermark { asked_at, high });
                Some(high)
            }
            Err(e) => {
                tracing::warn!(topic = %self.inner.topic, partition, error = %e, "watermark query failed");
                None
            }
        }
    }
}

async fn read_loop<V: AvroRecord>(inner: std::sync::Weak<Inner<V>>, codec: AvroCodec) {
    loop {
        let Some(table) = inner.upgrade() else { return };
        let received =
            tokio::time::timeout(Duration::from_millis(500), table.consumer.recv()).await;
        let msg = match received {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!(topic = %table.topic, error = %e, "table read error");
                continue;
            }
            Ok(Ok(m)) => m.detach(),
        };
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let value = match msg.payload() {
            None => None,
            Some(bytes) => match decode_holding(&table, &codec, bytes, &msg).await {
                Some(Ok(v)) => Some(Arc::new(v)),
                Some(Err(e)) => {
                    // A compacted topic has no dead-letter path of its own: count and log it with
                    // its offset; the row keeps its previous value.
                    table
                        .bad_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(topic = %table.topic, partition = msg.partition(), offset = msg.offset(), error = %e, "undecodable table record skipped");
                    None
                }
                // The partition was revoked while the registry was away.
                None => continue,
            },
        };
        {
            let mut state = table.partitions.write().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = state.get_mut(&msg.partition()) {
                match (key, value, msg.payload().is_none()) {
                    (Some(k), Some(v), _) => {
                        p.rows.insert((table.row_key)(&k, &v), v);
                    }
                    (Some(k), None, true) => {
                        p.rows.remove(&k);
                    }
                    _ => {}
                }
                p.position = msg.offset() + 1;
            }
        }
        table.progress.notify_waiters();
    }
}

/// Decodes a table record, waiting out a registry that is unavailable: skipping the record
/// would leave the row at an older value (an opt-out ignored, a known user unknown) while the
/// table reports itself caught up. The position does not move meanwhile, so a request that
/// needs this partition waits too. None when the partition is no longer read.
async fn decode_holding<V: AvroRecord>(
    table: &Inner<V>,
    codec: &AvroCodec,
    bytes: &[u8],
    msg: &rdkafka::message::OwnedMessage,
) -> Option<Result<V, crate::codec::DecodeError>> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match codec.decode::<V>(Some(bytes)).await {
            Err(e) if e.is_retriable() => {
                table
                    .registry_waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(topic = %table.topic, partition = msg.partition(), offset = msg.offset(), error = %e, retry_in_ms = backoff.as_millis() as u64, "table record waits for the schema registry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                let assigned = table
                    .partitions
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&msg.partition());
                if !assigned {
                    return None;
                }
            }
            other => return Some(other),
        }
    }
}
