//! The dedup stage writes its downstream copy itself (not through the runtime) so that it
//! knows the partition and a lower bound of the offset before claiming the id, and can look
//! there when the same input record is read again after a crash: forwarded already, or not.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use notify_runtime::Config;
use notify_runtime::kafka::producer_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Headers of the downstream copy that identify which input record wrote it.
pub const EVENT_ID_HEADER: &str = "notify.dedup.event_id";
pub const OWNER_HEADER: &str = "notify.dedup.owner";

const META_TIMEOUT: Duration = Duration::from_secs(10);
/// The recovery index is only for records re-read after a crash; cap what it remembers.
const INDEX_CAP: usize = 1_000_000;

pub struct Downstream {
    producer: FutureProducer,
    consumer_config: ClientConfig,
    topic: String,
    /// Per partition: an offset at or below where the next record lands.
    floors: Vec<AtomicI64>,
    index: Mutex<HashMap<i32, Index>>,
}

/// What a recovery scan saw of one partition: (event id, owner) in `[start, end)`.
struct Index {
    start: i64,
    end: i64,
    seen: HashSet<(String, String)>,
}

impl Downstream {
    pub fn new(config: &Config, topic: &str) -> Result<Downstream, String> {
        let mut pc = producer_config(config);
        // Each record waits for its acknowledgement before its id is reported accepted; the
        // lanes' concurrency, not lingering, makes the batches.
        let user_set = |k: &str| {
            config.kafka.producer.contains_key(k) || config.kafka.properties.contains_key(k)
        };
        if !user_set("linger.ms") {
            pc.set("linger.ms", "1");
        }
        let producer: FutureProducer = pc.create().map_err(|e| e.to_string())?;
        let mut consumer_config = ClientConfig::new();
        consumer_config.set("bootstrap.servers", &config.kafka.bootstrap_servers);
        for (k, v) in &config.kafka.properties {
            consumer_config.set(k, v);
        }
        consumer_config
            .set("group.id", "notify-dedup-recovery")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let probe: BaseConsumer = consumer_config.create().map_err(|e| e.to_string())?;
        let metadata = probe
            .fetch_metadata(Some(topic), META_TIMEOUT)
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let count = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if count == 0 {
            return Err(format!("topic {topic} does not exist"));
        }
        let mut floors = Vec::with_capacity(count);
        for p in 0..count as i32 {
            let (_, high) = probe
                .fetch_watermarks(topic, p, META_TIMEOUT)
                .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
            floors.push(AtomicI64::new(high));
        }
        Ok(Downstream {
            producer,
            consumer_config,
            topic: topic.to_string(),
            floors,
            index: Mutex::new(HashMap::new()),
        })
    }

    /// The partition of a key: Kafka's murmur2 (what the Java client does), so per-user order
    /// holds and other clients agree.
    pub fn partition_for(&self, key: &str) -> i32 {
        ((murmur2(key.as_bytes()) & 0x7fff_ffff) % self.floors.len() as u32) as i32
    }

    pub fn floor(&self, partition: i32) -> i64 {
        self.floors
            .get(partition as usize)
            .map(|f| f.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Produces and waits for the acknowledgement.
    pub async fn send(
        &self,
        partition: i32,
        key: &str,
        payload: &[u8],
        event_id: &str,
        owner: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), String> {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: EVENT_ID_HEADER,
                value: Some(event_id),
            })
            .insert(Header {
                key: OWNER_HEADER,
                value: Some(owner),
            });
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic)
            .partition(partition)
            .key(key)
            .payload(payload)
            .headers(headers);
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        let delivered = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| format!("produce to {}: {e}", self.topic))?;
        if let Some(f) = self.floors.get(partition as usize) {
            f.fetch_max(delivered.offset + 1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Whether a copy of `event_id` written by `owner` exists in `partition` at or after
    /// `from`. Reads the partition up to its current end (once per crash, thanks to the index).
    pub async fn was_forwarded(
        &self,
        partition: i32,
        from: i64,
        event_id: &str,
        owner: &str,
    ) -> Result<bool, String> {
        let key = (event_id.to_string(), owner.to_string());
        tokio::task::block_in_place(|| {
            let consumer: BaseConsumer =
                self.consumer_config.create().map_err(|e| e.to_string())?;
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, partition, META_TIMEOUT)
                .map_err(|e| e.to_string())?;
            let mut indexes = self
                .index
                .lock()
                .map_err(|_| "index poisoned".to_string())?;
            let fresh = || Index {
                start: from.max(low),
                end: from.max(low),
                seen: HashSet::new(),
            };
            let index = indexes.entry(partition).or_insert_with(fresh);
            if index.start > from.max(low) || index.seen.len() > INDEX_CAP {
                *index = fresh();
            }
            self.scan(&consumer, partition, index, high)?;
            Ok(index.seen.contains(&key))
        })
    }

    fn scan(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
        index: &mut Index,
        high: i64,
    ) -> Result<(), String> {
        if index.end >= high {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(index.end))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while index.end < high {
            if std::time::Instant::now() > deadline {
                return Err(format!("scanning {}/{partition} took too long", self.topic));
            }
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let header = |name: &str| {
                        m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == name)
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                    };
                    if let (Some(e), Some(o)) = (header(EVENT_ID_HEADER), header(OWNER_HEADER)) {
                        index.seen.insert((e, o));
                    }
                    index.end = m.offset() + 1;
                }
                Some(Err(e)) => return Err(e.to_string()),
                // Transaction markers and compaction leave gaps; the end is what counts.
                None => {
                    let pos = consumer.position().ok().and_then(|p| {
                        p.find_partition(&self.topic, partition)
                            .and_then(|e| e.offset().to_raw())
                    });
                    if let Some(pos) = pos {
                        index.end = index.end.max(pos);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Kafka's murmur2 (seed 0x9747b28c), as the Java client's default partitioner uses it.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values of Kafka's Utils.murmur2 (its unit test).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
