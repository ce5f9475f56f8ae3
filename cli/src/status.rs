//! `notify status`: the status topic, decoded, for a person at a terminal: every outcome of
//! every stage, optionally for one event or user, optionally following new ones.
//!
//! It reads only what it needs: status events are keyed by event id, so `--event-id` reads
//! that key's partition alone (the Java client's partitioner, which the runtime's producer
//! uses too), and `--since` starts each partition at the broker's offsets-for-times.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::partitioner::partition_for;
use notify_runtime::records::DeliveryStatus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::progress::Progress;
use crate::scan;

#[derive(Debug, Clone, Default)]
pub struct StatusFilter {
    pub event_id: Option<String>,
    pub user_id: Option<String>,
    /// Only statuses written at or after this time (epoch ms).
    pub since_ms: Option<i64>,
}

impl StatusFilter {
    fn matches(&self, s: &DeliveryStatus) -> bool {
        self.event_id.as_ref().is_none_or(|e| *e == s.event_id)
            && self.user_id.as_ref().is_none_or(|u| *u == s.user_id)
    }
}

/// What a `status` run printed and what it had to read for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub printed: usize,
    /// Records read from the topic (matching or not).
    pub read: u64,
    /// The partitions read.
    pub partitions: Vec<i32>,
    /// Records the topic holds in all its partitions (what a full scan would read).
    pub topic_records: u64,
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} outcomes; read {} of the topic's {} records (partitions {:?})",
            self.printed, self.read, self.topic_records, self.partitions
        )
    }
}

/// Prints matching statuses of `topic`; with `follow`, keeps going.
pub async fn show(
    config: &Config,
    topic: &str,
    filter: &StatusFilter,
    follow: bool,
    json: bool,
) -> anyhow::Result<StatusReport> {
    let started = Instant::now();
    // Partition ends come as PartitionEOF: a high watermark alone is never reached when the
    // log ends in a transaction marker (transactional delivery), so `status` would not return.
    let client = notify_runtime::kafka::reader_config(config, "notify-status-viewer");
    let consumer: BaseConsumer = client.create()?;
    let all = scan::partitions(&consumer, topic)?;
    let marks = scan::watermarks(&consumer, topic, &all)?;
    let topic_records = marks.values().map(|(l, h)| (h - l).max(0) as u64).sum();
    let partitions = match &filter.event_id {
        Some(id) => vec![partition_for(id, all.len())],
        None => all.clone(),
    };
    let starts: BTreeMap<i32, i64> = match filter.since_ms {
        Some(ms) => scan::offsets_for_time(&consumer, topic, &partitions, ms)?,
        None => partitions.iter().map(|p| (*p, marks[p].0)).collect(),
    };
    let mut tpl = TopicPartitionList::new();
    for (p, start) in &starts {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*start))?;
    }
    consumer.assign(&tpl)?;
    let ends: BTreeMap<i32, i64> = partitions.iter().map(|p| (*p, marks[p].1)).collect();
    let to_read: u64 = ends
        .iter()
        .map(|(p, end)| (end - starts.get(p).copied().unwrap_or(*end)).max(0) as u64)
        .sum();
    let codec = AvroCodec::new(&config.registry)?;
    if !json {
        println!(
            "{:<24} {:<28} {:<12} {:<15} {:<6} {:<22} {:<12} reason",
            "at", "event", "user", "outcome", "chan", "recipient", "stage"
        );
    }
    let mut report = StatusReport {
        printed: 0,
        read: 0,
        partitions,
        topic_records,
    };
    let mut progress = (!follow).then(|| Progress::new("status: records read", Some(to_read)));
    let mut position = starts.clone();
    loop {
        let caught_up = ends
            .iter()
            .all(|(p, high)| position.get(p).copied().unwrap_or(0) >= *high);
        if caught_up && !follow {
            if let Some(p) = &progress {
                p.finish();
            }
            tracing::debug!(
                took_ms = started.elapsed().as_millis() as u64,
                "status read"
            );
            return Ok(report);
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match result {
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                position.insert(p, i64::MAX);
                continue;
            }
            other => other?,
        };
        position.insert(msg.partition(), msg.offset() + 1);
        report.read += 1;
        if let Some(p) = &mut progress {
            p.inc(1);
        }
        let status = match codec.decode::<DeliveryStatus>(msg.payload()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("partition {} offset {}: {e}", msg.partition(), msg.offset());
                continue;
            }
        };
        if !filter.matches(&status) {
            continue;
        }
        report.printed += 1;
        if json {
            println!("{}", serde_json::to_string(&status)?);
        } else {
            print_row(&status);
        }
    }
}

fn print_row(s: &DeliveryStatus) {
    let at = chrono::DateTime::from_timestamp_millis(s.at)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| s.at.to_string());
    println!(
        "{:<24} {:<28} {:<12} {:<15} {:<6} {:<22} {:<12} {}",
        at,
        s.event_id,
        s.user_id,
        serde_json::to_value(s.outcome)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        s.channel.as_deref().unwrap_or("-"),
        s.recipient.as_deref().unwrap_or("-"),
        s.stage,
        s.reason.as_deref().unwrap_or(""),
    );
}
