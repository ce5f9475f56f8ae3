//! A local, read-only view of a compacted topic (profiles, templates), keyed by record key.
//!
//! A background reader tails every partition of the topic; a null value (tombstone) deletes
//! the key. No database call per event: lookups are map reads. Two scopes:
//!
//! - [`Table::global`]: every row (templates), read from the beginning.
//! - [`Table::owned`]: only the rows of the keys (user ids) that belong, by the project's
//!   partitioner, to the input partitions this instance is assigned, wherever in the table
//!   topic a producer put them: a profile written by a Python or Go service (librdkafka's
//!   CRC32 partitioner) lands on another partition than a Java one (murmur2) would choose,
//!   and must still be found. The tail starts at the end; when partitions are assigned, a
//!   loader reads the topic from the beginning once for the rows of the new owners. A key
//!   written to two partitions keeps its latest record by timestamp.
//!
//! [`Table::sync`] makes "an update is visible to the requests that follow it" hold: it
//! returns once the table includes every record written before a given instant (no load in
//! progress, and the tail at or past the log ends asked for after that instant). Concurrent
//! waiters share one watermark query.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::codec::{AvroCodec, DecodeError};
use crate::config::Config;
use crate::partitioner::partition_for;
use crate::records::AvroRecord;
use crate::runner::RuntimeError;

/// Which row a record goes to: by default its Kafka key; a table may derive it from the value
/// (several rows per key, e.g. one per device token of a user).
pub type RowKey<V> = fn(&str, &V) -> String;

/// Where a record stands in the log, to keep the latest of two records of one key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    timestamp_ms: i64,
    partition: i32,
    offset: i64,
}

impl Stamp {
    fn is_newer_than(&self, other: &Stamp) -> bool {
        if self.partition == other.partition {
            self.offset > other.offset
        } else {
            (self.timestamp_ms, self.partition) > (other.timestamp_ms, other.partition)
        }
    }
}

struct Row<V> {
    value: Arc<V>,
    stamp: Stamp,
}

/// The rows of one owner (an input partition; the global table has one owner, -1).
struct Owner<V> {
    rows: HashMap<String, Row<V>>,
    /// While a load runs: the latest deletes seen, so an older value it reads stays deleted.
    deleted: HashMap<String, Stamp>,
    loading: bool,
}

impl<V> Owner<V> {
    fn new(loading: bool) -> Self {
        Owner {
            rows: HashMap::new(),
            deleted: HashMap::new(),
            loading,
        }
    }

    fn put(&mut self, key: String, value: Arc<V>, stamp: Stamp) {
        if self
            .deleted
            .get(&key)
            .is_some_and(|d| d.is_newer_than(&stamp))
        {
            return;
        }
        match self.rows.get(&key) {
            Some(row) if !stamp.is_newer_than(&row.stamp) => {}
            _ => {
                self.rows.insert(key, Row { value, stamp });
            }
        }
    }

    fn delete(&mut self, key: &str, stamp: Stamp) {
        if self
            .rows
            .get(key)
            .is_some_and(|r| r.stamp.is_newer_than(&stamp))
        {
            return;
        }
        self.rows.remove(key);
        if self.loading {
            self.deleted.insert(key.to_string(), stamp);
        }
    }
}

#[derive(Clone, Copy)]
enum Scope {
    Global,
    /// Owned by input partition `partition_for(key, input_partitions)`.
    Owned {
        input_partitions: usize,
    },
}

const GLOBAL: i32 = -1;

struct State<V> {
    owners: HashMap<i32, Owner<V>>,
    /// Next offset the tail reads, per table partition.
    positions: HashMap<i32, i64>,
}

/// The last log ends asked for, and when the question was asked.
struct Watermarks {
    asked_at: Instant,
    ends: HashMap<i32, i64>,
}

struct Inner<V> {
    topic: String,
    row_key: RowKey<V>,
    scope: Scope,
    config: Config,
    partitions: Vec<i32>,
    tail: StreamConsumer,
    /// Asks for log ends on its own connection: the broker answers a connection's requests
    /// in order, so on the tail's connection a query would wait behind its idle long-poll.
    ends_client: Arc<BaseConsumer>,
    state: RwLock<State<V>>,
    watermarks: tokio::sync::Mutex<Option<Watermarks>>,
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

fn group_of(config: &Config, topic: &str) -> String {
    format!("{}-table-{topic}", config.kafka.group_prefix)
}

impl<V: AvroRecord> Table<V> {
    /// Every row of `topic`, keyed by record key.
    pub async fn global(config: &Config, topic: &str) -> Result<Table<V>, RuntimeError> {
        Self::start(config, topic, |key, _| key.to_string(), Scope::Global).await
    }

    /// The rows owned by the assigned input partitions (see the module docs), keyed by
    /// `row_key(record key, value)`; a tombstone removes the row named by the record key.
    pub async fn owned(
        config: &Config,
        topic: &str,
        input_partitions: usize,
        row_key: RowKey<V>,
    ) -> Result<Table<V>, RuntimeError> {
        Self::start(config, topic, row_key, Scope::Owned { input_partitions }).await
    }

    async fn start(
        config: &Config,
        topic: &str,
        row_key: RowKey<V>,
        scope: Scope,
    ) -> Result<Table<V>, RuntimeError> {
        let reader = crate::kafka::reader_config(config, &group_of(config, topic));
        let tail: StreamConsumer = reader.create()?;
        let ends_client: Arc<BaseConsumer> = Arc::new(reader.create()?);
        let partitions = partitions_of(&ends_client, topic)?;
        let (positions, start): (HashMap<i32, i64>, HashMap<i32, Offset>) = match scope {
            Scope::Global => (
                partitions.iter().map(|p| (*p, 0)).collect(),
                partitions.iter().map(|p| (*p, Offset::Beginning)).collect(),
            ),
            Scope::Owned { .. } => {
                let ends = log_ends(ends_client.clone(), topic.to_string(), partitions.clone())
                    .await
                    .map_err(|e| RuntimeError::Setup(format!("table {topic}: {e}")))?;
                (
                    ends.clone(),
                    ends.into_iter()
                        .map(|(p, o)| (p, Offset::Offset(o)))
                        .collect(),
                )
            }
        };
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in &start {
            tpl.add_partition_offset(topic, *p, *offset)?;
        }
        tail.assign(&tpl)?;
        let owners = match scope {
            Scope::Global => HashMap::from([(GLOBAL, Owner::new(false))]),
            Scope::Owned { .. } => HashMap::new(),
        };
        let codec =
            AvroCodec::new(&config.registry).map_err(|e| RuntimeError::Registry(e.to_string()))?;
        let inner = Arc::new(Inner {
            topic: topic.to_string(),
            row_key,
            scope,
            config: config.clone(),
            partitions,
            tail,
            ends_client,
            state: RwLock::new(State { owners, positions }),
            watermarks: tokio::sync::Mutex::new(None),
            progress: Notify::new(),
            bad_records: Default::default(),
            registry_waits: Default::default(),
        });
        tokio::spawn(tail_loop(Arc::downgrade(&inner), codec));
        Ok(Table { inner })
    }

    /// Starts keeping the rows of these input partitions: they are loaded from the beginning
    /// of the topic in the background ([`Table::sync`] waits for that).
    pub fn assign(&self, owners: &[i32]) {
        let Scope::Owned { .. } = self.inner.scope else {
            return;
        };
        let new: Vec<i32> = {
            let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
            owners
                .iter()
                .copied()
                .filter(|o| {
                    if state.owners.contains_key(o) {
                        return false;
                    }
                    state.owners.insert(*o, Owner::new(true));
                    true
                })
                .collect()
        };
        if !new.is_empty() {
            tokio::spawn(load(self.inner.clone(), new.into_iter().collect()));
        }
    }

    /// Stops keeping the rows of these input partitions and forgets them.
    pub fn revoke(&self, owners: &[i32]) {
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        for o in owners {
            state.owners.remove(o);
        }
    }

    /// The row for `key`.
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .owners
            .values()
            .find_map(|o| o.rows.get(key).map(|r| r.value.clone()))
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        state.owners.values().map(|o| o.rows.len()).sum()
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

    /// Waits until the table includes every record written before `since`: no load of an
    /// owner in progress, and the tail at the log ends. False on timeout.
    pub async fn sync(&self, since: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Some(ends) = self.ends_after(since, timeout).await else {
            return false;
        };
        loop {
            let notified = self.inner.progress.notified();
            if self.caught_up(&ends) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.caught_up(&ends);
            }
        }
    }

    fn caught_up(&self, ends: &HashMap<i32, i64>) -> bool {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        !state.owners.values().any(|o| o.loading)
            && ends
                .iter()
                .all(|(p, end)| state.positions.get(p).is_some_and(|at| at >= end))
    }

    /// Log ends the broker reported in answer to a question asked after `since`.
    async fn ends_after(&self, since: Instant, timeout: Duration) -> Option<HashMap<i32, i64>> {
        let mut cached = self.inner.watermarks.lock().await;
        if let Some(w) = &*cached
            && w.asked_at >= since
        {
            return Some(w.ends.clone());
        }
        let asked_at = Instant::now();
        let answer = tokio::time::timeout(
            timeout,
            log_ends(
                self.inner.ends_client.clone(),
                self.inner.topic.clone(),
                self.inner.partitions.clone(),
            ),
        )
        .await;
        match answer {
            Ok(Ok(ends)) => {
                *cached = Some(Watermarks {
                    asked_at,
                    ends: ends.clone(),
                });
                Some(ends)
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.inner.topic, error = %e, "log end query failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// The consumer's position in one partition (past transaction markers).
fn position_of<C: Consumer>(consumer: &C, topic: &str, partition: i32) -> Option<i64> {
    let position = consumer.position().ok()?;
    match position.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn partitions_of(client: &BaseConsumer, topic: &str) -> Result<Vec<i32>, RuntimeError> {
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| RuntimeError::Setup(format!("table {topic}: {e}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(RuntimeError::Setup(format!(
            "table topic {topic} does not exist"
        )));
    }
    Ok(partitions)
}

/// The log end (next offset to be written) of every partition, in one request.
async fn log_ends(
    client: Arc<BaseConsumer>,
    topic: String,
    partitions: Vec<i32>,
) -> Result<HashMap<i32, i64>, String> {
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&topic, *p, Offset::End)
                .map_err(|e| e.to_string())?;
        }
        // A ListOffsets for "latest" of every partition at once (timestamp -1).
        let answer = client
            .offsets_for_times(tpl, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let mut ends = HashMap::new();
        for e in answer.elements() {
            match e.offset() {
                Offset::Offset(o) => {
                    ends.insert(e.partition(), o);
                }
                other => return Err(format!("partition {}: log end {other:?}", e.partition())),
            }
        }
        Ok(ends)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What one record means for the table: the key, the owner and the decoded value (None for
/// a tombstone); None when the record is not for us (another owner, undecodable, no key).
enum Read<V> {
    Put {
        owner: i32,
        key: String,
        value: Arc<V>,
        stamp: Stamp,
    },
    Delete {
        owner: i32,
        key: String,
        stamp: Stamp,
    },
    Skip,
}

async fn read_record<V: AvroRecord>(
    inner: &Inner<V>,
    codec: &AvroCodec,
    msg: &BorrowedMessage<'_>,
    wanted: impl Fn(i32) -> bool,
) -> Read<V> {
    let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
        return Read::Skip;
    };
    let owner = match inner.scope {
        Scope::Global => GLOBAL,
        Scope::Owned { input_partitions } => partition_for(&key, input_partitions),
    };
    if !wanted(owner) {
        return Read::Skip;
    }
    let stamp = Stamp {
        timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
        partition: msg.partition(),
        offset: msg.offset(),
    };
    let Some(bytes) = msg.payload() else {
        return Read::Delete { owner, key, stamp };
    };
    match decode_holding(inner, codec, bytes, msg, &wanted, owner).await {
        Some(Ok(v)) => {
            let row = (inner.row_key)(&key, &v);
            Read::Put {
                owner,
                key: row,
                value: Arc::new(v),
                stamp,
            }
        }
        Some(Err(e)) => {
            // A compacted topic has no dead-letter path of its own: count and log it with its
            // offset; the row keeps its previous value.
            inner
                .bad_records
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(topic = %inner.topic, partition = msg.partition(), offset = msg.offset(), error = %e, "undecodable table record skipped");
            Read::Skip
        }
        None => Read::Skip,
    }
}

/// Decodes a table record, waiting out a registry that is unavailable: skipping the record
/// would leave the row at an older value (an opt-out ignored, a known user unknown) while the
/// table reports itself caught up. Nothing after it is read meanwhile, so a request that
/// needs the table waits too. None when its owner is no longer wanted.
async fn decode_holding<V: AvroRecord>(
    inner: &Inner<V>,
    codec: &AvroCodec,
    bytes: &[u8],
    msg: &BorrowedMessage<'_>,
    wanted: &impl Fn(i32) -> bool,
    owner: i32,
) -> Option<Result<V, DecodeError>> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match codec.decode::<V>(Some(bytes)).await {
            Err(e) if e.is_retriable() => {
                inner
                    .registry_waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(topic = %inner.topic, partition = msg.partition(), offset = msg.offset(), error = %e, retry_in_ms = backoff.as_millis() as u64, "table record waits for the schema registry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if !wanted(owner) {
                    return None;
                }
            }
            other => return Some(other),
        }
    }
}

fn apply<V>(state: &mut State<V>, read: Read<V>) {
    match read {
        Read::Put {
            owner,
            key,
            value,
            stamp,
        } => {
            if let Some(o) = state.owners.get_mut(&owner) {
                o.put(key, value, stamp);
            }
        }
        Read::Delete { owner, key, stamp } => {
            if let Some(o) = state.owners.get_mut(&owner) {
                o.delete(&key, stamp);
            }
        }
        Read::Skip => {}
    }
}

async fn tail_loop<V: AvroRecord>(inner: Weak<Inner<V>>, codec: AvroCodec) {
    loop {
        let Some(table) = inner.upgrade() else { return };
        let received = tokio::time::timeout(Duration::from_millis(500), table.tail.recv()).await;
        let msg = match received {
            Err(_) => continue,
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                // At the end: the position (past any transaction marker) is caught up.
                if let Some(at) = position_of(&table.tail, &table.topic, p) {
                    let mut state = table.state.write().unwrap_or_else(|e| e.into_inner());
                    let known = state.positions.entry(p).or_insert(at);
                    *known = (*known).max(at);
                }
                table.progress.notify_waiters();
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = %table.topic, error = %e, "table read error");
                continue;
            }
            Ok(Ok(m)) => m,
        };
        let owned = |owner: i32| {
            table
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .owners
                .contains_key(&owner)
        };
        let read = read_record(&table, &codec, &msg, owned).await;
        {
            let mut state = table.state.write().unwrap_or_else(|e| e.into_inner());
            apply(&mut state, read);
            state.positions.insert(msg.partition(), msg.offset() + 1);
        }
        table.progress.notify_waiters();
    }
}

/// Reads the topic from the beginning up to its current ends for the rows of `owners`, then
/// marks them loaded. The tail keeps applying newer records meanwhile; the latest wins.
async fn load<V: AvroRecord>(inner: Arc<Inner<V>>, owners: HashSet<i32>) {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        match load_once(&inner, &owners).await {
            Ok(rows) => {
                {
                    let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
                    for o in &owners {
                        if let Some(owner) = state.owners.get_mut(o) {
                            owner.loading = false;
                            owner.deleted.clear();
                        }
                    }
                }
                inner.progress.notify_waiters();
                tracing::info!(topic = %inner.topic, owners = owners.len(), records = rows, elapsed_ms = started.elapsed().as_millis() as u64, "table rows loaded");
                return;
            }
            Err(e) => {
                let wanted = {
                    let state = inner.state.read().unwrap_or_else(|e| e.into_inner());
                    owners.iter().any(|o| state.owners.contains_key(o))
                };
                if !wanted {
                    return;
                }
                tracing::warn!(topic = %inner.topic, error = %e, "loading table rows failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn load_once<V: AvroRecord>(
    inner: &Arc<Inner<V>>,
    owners: &HashSet<i32>,
) -> Result<u64, String> {
    let ends = log_ends(
        inner.ends_client.clone(),
        inner.topic.clone(),
        inner.partitions.clone(),
    )
    .await?;
    let reader: StreamConsumer =
        crate::kafka::reader_config(&inner.config, &group_of(&inner.config, &inner.topic))
            .create()
            .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    for (p, end) in &ends {
        if *end > 0 {
            tpl.add_partition_offset(&inner.topic, *p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
            left.insert(*p, *end);
        }
    }
    if left.is_empty() {
        return Ok(0);
    }
    reader.assign(&tpl).map_err(|e| e.to_string())?;
    let codec = AvroCodec::new(&inner.config.registry).map_err(|e| e.to_string())?;
    let mut records = 0u64;
    while !left.is_empty() {
        let msg = match tokio::time::timeout(Duration::from_secs(30), reader.recv()).await {
            Err(_) => return Err("no record for 30 s while loading".into()),
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                // The partition may end in a transaction marker no message stands for.
                if position_of(&reader, &inner.topic, p)
                    .is_some_and(|at| left.get(&p).is_some_and(|end| at >= *end))
                {
                    left.remove(&p);
                }
                continue;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(m)) => m,
        };
        records += 1;
        let ours = |owner: i32| {
            owners.contains(&owner)
                && inner
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .owners
                    .contains_key(&owner)
        };
        let read = read_record(inner, &codec, &msg, ours).await;
        apply(
            &mut inner.state.write().unwrap_or_else(|e| e.into_inner()),
            read,
        );
        if left
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            left.remove(&msg.partition());
        }
        if !owners.iter().any(|o| ours(*o)) {
            return Ok(records);
        }
    }
    Ok(records)
}
