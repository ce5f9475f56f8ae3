//! Reading the dead-letter topic from the beginning to its end as of now.

use std::time::{Duration, Instant};

use notify_runtime::codec::AvroCodec;
use notify_runtime::dlq;
use notify_runtime::records::{ChannelMessage, NotificationRequest, RoutedNotification};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::Filter;
use crate::scan::header;
use notify_runtime::Config;

/// One dead letter as shown to an operator.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub partition: i32,
    pub offset: i64,
    pub class: String,
    pub stage: String,
    pub reason: String,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub attempts: Option<u32>,
    pub failed_at_ms: Option<i64>,
    /// From the record itself when it decodes as a pipeline record.
    pub event_id: Option<String>,
    pub key: Option<String>,
    #[serde(skip)]
    pub message: Option<OwnedMessage>,
}

/// The event id of whichever pipeline record the bytes are (None for poison).
async fn event_id(codec: &AvroCodec, payload: Option<&[u8]>) -> Option<String> {
    if let Ok(m) = codec.decode::<ChannelMessage>(payload).await {
        return Some(m.event_id);
    }
    if let Ok(r) = codec.decode::<NotificationRequest>(payload).await {
        return Some(r.event_id);
    }
    if let Ok(r) = codec.decode::<RoutedNotification>(payload).await {
        return Some(r.request.event_id);
    }
    None
}

/// Every dead letter of the topic that `filter` selects, oldest first per partition.
pub async fn read(config: &Config, filter: &Filter) -> anyhow::Result<Vec<DeadLetterView>> {
    let topic = filter
        .topic
        .clone()
        .unwrap_or_else(|| config.runtime.dlq_topic.clone());
    // Never joins a group and never commits: reading does not disturb anything.
    let mut client = notify_runtime::kafka::reader_config(
        config,
        &format!("{}-dlq-inspect", config.kafka.group_prefix),
    );
    client.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create()?;
    let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0usize;
    let mut ends = std::collections::HashMap::new();
    let mut held = 0u64;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(&topic, p, Offset::Offset(low))?;
            ends.insert(p, high);
            remaining += 1;
            held += (high - low) as u64;
        }
    }
    let mut progress = crate::progress::Progress::new("dead letters read", Some(held));
    let codec = AvroCodec::new(&config.registry)?;
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while remaining > 0 && Instant::now() < deadline {
        let Some(received) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = received?.detach();
        progress.inc(1);
        let end = ends.get(&m.partition()).copied().unwrap_or(0);
        if m.offset() + 1 >= end {
            remaining -= 1;
        }
        if m.offset() >= end {
            continue;
        }
        let mut view = view_of(&m);
        view.event_id = event_id(&codec, m.payload()).await;
        if filter.matches(&view) {
            view.message = Some(m);
            out.push(view);
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    progress.finish();
    anyhow::ensure!(
        remaining == 0 || filter.limit.is_some_and(|l| out.len() >= l),
        "timed out reading {topic}"
    );
    Ok(out)
}

fn view_of(m: &OwnedMessage) -> DeadLetterView {
    let number = |key: &str| header(m, key).and_then(|v| v.trim().parse::<i64>().ok());
    DeadLetterView {
        partition: m.partition(),
        offset: m.offset(),
        class: header(m, dlq::CLASS).unwrap_or_default(),
        stage: header(m, dlq::STAGE).unwrap_or_default(),
        reason: header(m, dlq::REASON).unwrap_or_default(),
        source_topic: header(m, dlq::SOURCE_TOPIC),
        source_partition: number(dlq::SOURCE_PARTITION).map(|p| p as i32),
        source_offset: number(dlq::SOURCE_OFFSET),
        attempts: number(dlq::ATTEMPTS).map(|a| a.clamp(0, i64::from(u32::MAX)) as u32),
        failed_at_ms: number(dlq::FIRST_FAILURE_AT).or_else(|| m.timestamp().to_millis()),
        event_id: None,
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        message: None,
    }
}

/// A fixed-width table; the reason is cut to keep one line per record.
pub fn print_table(rows: &[DeadLetterView]) {
    println!(
        "{:<12} {:<18} {:<14} {:<28} {:>4} {:<20} {:<24} REASON",
        "AT", "CLASS", "STAGE", "SOURCE", "TRY", "FAILED", "EVENT"
    );
    for v in rows {
        let source = format!(
            "{}/{}/{}",
            v.source_topic.as_deref().unwrap_or("-"),
            v.source_partition
                .map(|p| p.to_string())
                .unwrap_or("-".into()),
            v.source_offset.map(|o| o.to_string()).unwrap_or("-".into())
        );
        let failed = v
            .failed_at_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or("-".into());
        let reason: String = v.reason.chars().take(80).collect();
        println!(
            "{:<12} {:<18} {:<14} {:<28} {:>4} {:<20} {:<24} {}",
            format!("{}:{}", v.partition, v.offset),
            v.class,
            v.stage,
            source,
            v.attempts.map(|a| a.to_string()).unwrap_or("-".into()),
            failed,
            v.event_id.as_deref().unwrap_or("-"),
            reason
        );
    }
}
