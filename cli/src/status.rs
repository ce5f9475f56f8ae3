//! `notify status`: the status topic, decoded, for a person at a terminal: every outcome of
//! every stage, optionally for one event or user, optionally following new ones.

use std::time::Duration;

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::DeliveryStatus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

#[derive(Debug, Clone, Default)]
pub struct StatusFilter {
    pub event_id: Option<String>,
    pub user_id: Option<String>,
}

impl StatusFilter {
    fn matches(&self, s: &DeliveryStatus) -> bool {
        self.event_id.as_ref().is_none_or(|e| *e == s.event_id)
            && self.user_id.as_ref().is_none_or(|u| *u == s.user_id)
    }
}

/// Prints matching statuses from the beginning of `topic`; with `follow`, keeps going.
/// Returns how many were printed.
pub async fn show(
    config: &Config,
    topic: &str,
    filter: &StatusFilter,
    follow: bool,
    json: bool,
) -> anyhow::Result<usize> {
    // Partition ends come as PartitionEOF: a high watermark alone is never reached when the
    // log ends in a transaction marker (transactional delivery), so `status` would not return.
    let client = notify_runtime::kafka::reader_config(config, "notify-status-viewer");
    let consumer: BaseConsumer = client.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        ends.push((p.id(), high));
    }
    anyhow::ensure!(!ends.is_empty(), "topic {topic} does not exist");
    consumer.assign(&tpl)?;
    let codec = AvroCodec::new(&config.registry)?;
    if !json {
        println!(
            "{:<24} {:<28} {:<12} {:<15} {:<6} {:<22} {:<12} reason",
            "at", "event", "user", "outcome", "chan", "recipient", "stage"
        );
    }
    let mut printed = 0;
    let mut position: std::collections::HashMap<i32, i64> = Default::default();
    loop {
        let caught_up = ends
            .iter()
            .all(|(p, high)| position.get(p).copied().unwrap_or(0) >= *high);
        if caught_up && !follow {
            return Ok(printed);
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
        printed += 1;
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
