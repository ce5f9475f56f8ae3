//! Reading chosen offset ranges of topics to their end, for replay, trace and offsets.
//!
//! Clients come from the runtime's configuration (`notify_runtime::kafka`), so SASL/TLS and
//! every other `[kafka.*]` property apply, and they read committed records only: the
//! pipeline writes in transactions, and an aborted output must not be replayed or traced.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use notify_runtime::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer for reading by assignment under `group` (never subscribing, never
/// auto-committing). Replay commits its progress to its own group explicitly.
pub fn reader(config: &Config, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut client = notify_runtime::kafka::consumer_config(config, group);
    client
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "0");
    Ok(client.create()?)
}

/// The partition ids of `topic`; an error names a topic that does not exist.
pub fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "topic {topic} does not exist");
    Ok(ids)
}

/// (low, high) watermark per partition.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let mut out = BTreeMap::new();
    for &p in partitions {
        out.insert(p, consumer.fetch_watermarks(topic, p, TIMEOUT)?);
    }
    Ok(out)
}

/// The first offset at or after `at_ms` per partition (the broker's offsets-for-times); a
/// partition with nothing that late gets its high watermark.
pub fn offsets_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    at_ms: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(at_ms))?;
    }
    let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
    let mut out = BTreeMap::new();
    for e in found.elements_for_topic(topic) {
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            _ => consumer.fetch_watermarks(topic, e.partition(), TIMEOUT)?.1,
        };
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

/// One partition's range to read: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Range {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl Range {
    pub fn len(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the ranges of one topic until every partition has reached its end. Offsets may have
/// gaps (transaction markers, compaction), so a partition is done when the consumer's
/// position has passed its end, not when a record at `end - 1` was seen.
pub struct Scan<'a> {
    consumer: &'a BaseConsumer,
    topic: String,
    ends: BTreeMap<i32, i64>,
    open: BTreeMap<i32, i64>,
    last_progress: Instant,
    stall: Duration,
}

impl<'a> Scan<'a> {
    pub fn new(consumer: &'a BaseConsumer, topic: &str, ranges: &[Range]) -> anyhow::Result<Self> {
        let mut tpl = TopicPartitionList::new();
        let mut open = BTreeMap::new();
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.start))?;
            open.insert(r.partition, r.start);
        }
        consumer.assign(&tpl)?;
        Ok(Scan {
            consumer,
            topic: topic.to_string(),
            ends: ranges.iter().map(|r| (r.partition, r.end)).collect(),
            open,
            last_progress: Instant::now(),
            stall: Duration::from_secs(60),
        })
    }

    /// Partitions not finished yet, with the next offset to read.
    pub fn open(&self) -> &BTreeMap<i32, i64> {
        &self.open
    }

    /// The next record inside the ranges, or None once all are read. An error when nothing
    /// moved for a minute (a partition that cannot be read to its end).
    pub fn next_record(&mut self) -> anyhow::Result<Option<OwnedMessage>> {
        loop {
            if self.open.is_empty() {
                return Ok(None);
            }
            if let Some(result) = self.consumer.poll(Duration::from_millis(200)) {
                let m = result?.detach();
                let end = self.ends.get(&m.partition()).copied().unwrap_or(0);
                self.last_progress = Instant::now();
                if m.offset() >= end {
                    self.close(m.partition());
                    continue;
                }
                if m.offset() + 1 >= end {
                    self.close(m.partition());
                } else {
                    self.open.insert(m.partition(), m.offset() + 1);
                }
                return Ok(Some(m));
            }
            self.close_passed()?;
            anyhow::ensure!(
                self.open.is_empty() || self.last_progress.elapsed() < self.stall,
                "{}: nothing read for {}s from partitions {:?} (next offsets)",
                self.topic,
                self.stall.as_secs(),
                self.open
            );
        }
    }

    fn close(&mut self, partition: i32) {
        self.open.remove(&partition);
        let _ = self.consumer.pause(&{
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(&self.topic, partition);
            tpl
        });
    }

    /// Closes partitions whose position is at or past their end (gaps at the end of a range).
    fn close_passed(&mut self) -> anyhow::Result<()> {
        let position = self.consumer.position()?;
        for e in position.elements_for_topic(&self.topic) {
            if let Offset::Offset(o) = e.offset()
                && self.open.contains_key(&e.partition())
                && o >= self.ends.get(&e.partition()).copied().unwrap_or(0)
            {
                self.last_progress = Instant::now();
                self.close(e.partition());
            }
        }
        Ok(())
    }
}

/// The value of a header as text (the last one when repeated).
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
