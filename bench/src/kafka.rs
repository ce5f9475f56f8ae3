//! Kafka plumbing of the harness: private topics, pre-filling, offsets and reading back.
//!
//! Output topics use `message.timestamp.type=LogAppendTime`, so each output record carries the
//! moment the broker appended it: throughput over time and latency are read back after a run
//! instead of being measured by a consumer competing with the processor for the two cores.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 8;

pub struct Kafka {
    pub bootstrap: String,
    admin: AdminClient<DefaultClientContext>,
    probe: BaseConsumer,
}

impl Kafka {
    pub fn connect(bootstrap: &str) -> anyhow::Result<Kafka> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .with_context(|| format!("Kafka at {bootstrap} (start it: make stack-up)"))?;
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "notify-bench-probe")
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Kafka {
            bootstrap: bootstrap.to_string(),
            admin,
            probe,
        })
    }

    /// Creates `names`; with `append_time` the broker stamps each record as it appends it.
    pub async fn create(&self, names: &[String], append_time: bool) -> anyhow::Result<()> {
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                let t = NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1));
                if append_time {
                    t.set("message.timestamp.type", "LogAppendTime")
                } else {
                    t
                }
            })
            .collect();
        for result in self.admin.create_topics(&new, &AdminOptions::new()).await? {
            if let Err((topic, e)) = result {
                bail!("creating {topic}: {e}");
            }
        }
        Ok(())
    }

    /// Deletes the run's topics so repeated runs do not fill the disk.
    pub async fn delete(&self, names: &[String]) {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(e) = self.admin.delete_topics(&refs, &AdminOptions::new()).await {
            tracing::warn!(error = %e, "deleting bench topics");
        }
    }

    /// Sum over partitions of the high watermark (records plus transaction markers).
    pub fn end_offsets(&self, topic: &str) -> anyhow::Result<i64> {
        let mut sum = 0;
        for p in 0..PARTITIONS {
            let (_, high) = self
                .probe
                .fetch_watermarks(topic, p, Duration::from_secs(5))?;
            sum += high;
        }
        Ok(sum)
    }

    /// Calls `f` on every record of `topic` until every partition reports its end.
    pub fn scan(
        &self,
        topic: &str,
        mut f: impl FnMut(&BorrowedMessage<'_>),
    ) -> anyhow::Result<u64> {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let c: BaseConsumer<QuietEof> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "notify-bench-scan")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create_with_context(QuietEof)?;
        let mut tpl = TopicPartitionList::new();
        let mut high = Vec::with_capacity(PARTITIONS as usize);
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            high.push(c.fetch_watermarks(topic, p, Duration::from_secs(5))?.1);
        }
        c.assign(&tpl)?;
        // A partition is done when the consumer's position reached the high watermark seen
        // at the start (an end-of-partition event alone can come before the first fetch).
        let mut at_end: Vec<bool> = high.iter().map(|h| *h == 0).collect();
        let mut count = 0u64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while at_end.iter().any(|e| !e) && Instant::now() < deadline {
            match c.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    count += 1;
                    f(&m);
                    let p = m.partition() as usize;
                    if m.offset() + 1 >= high[p] {
                        at_end[p] = true;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let reached = c
                        .position()
                        .ok()
                        .and_then(|tpl| tpl.find_partition(topic, p).map(|e| e.offset()))
                        .is_some_and(|o| matches!(o, Offset::Offset(o) if o >= high[p as usize]));
                    if reached && let Some(e) = at_end.get_mut(p as usize) {
                        *e = true;
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF))) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "scan"),
                None => {}
            }
        }
        Ok(count)
    }
}

/// A client context that does not log reaching a partition's end as an error: the scan asks
/// for exactly that signal.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            && !reason.contains("end of partition")
        {
            tracing::warn!(%error, reason, "scan consumer");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// A producer tuned for bulk loading (bigger batches than the runtime's), with librdkafka's
/// default partitioner (CRC32 of the key, as the stock Python and Go clients).
pub fn bulk_producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    bulk_producer_with(bootstrap, "consistent_random")
}

/// [`bulk_producer`] with another librdkafka partitioner (`murmur2_random`: the Java client's).
pub fn bulk_producer_with(bootstrap: &str, partitioner: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", partitioner)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "500000")
        .create()?)
}

/// Sends records without waiting for each, keeping at most this many unacknowledged.
pub struct Pipelined {
    producer: FutureProducer,
    pending: VecDeque<DeliveryFuture>,
}

const MAX_PENDING: usize = 100_000;

impl Pipelined {
    pub fn new(producer: FutureProducer) -> Pipelined {
        Pipelined {
            producer,
            pending: VecDeque::new(),
        }
    }

    pub async fn send(&mut self, topic: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        loop {
            let record = FutureRecord::to(topic).key(key).payload(value);
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push_back(f);
                    break;
                }
                // The local queue is full: wait for the oldest acknowledgement, then retry.
                Err((_, _)) => self.wait_one().await?,
            }
        }
        while self.pending.len() > MAX_PENDING {
            self.wait_one().await?;
        }
        Ok(())
    }

    async fn wait_one(&mut self) -> anyhow::Result<()> {
        match self.pending.pop_front() {
            Some(f) => match f.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => bail!("produce failed: {e}"),
                Err(_) => bail!("producer dropped a delivery"),
            },
            None => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            }
        }
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        while !self.pending.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }
}
