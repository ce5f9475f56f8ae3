//! Sending dead letters back to their source topic.

use std::collections::BTreeMap;
use std::time::Duration;

use notify_runtime::dlq::{self, retry as h};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Filter, read};
use notify_runtime::Config;

/// What a redrive did (or, with `--dry-run`, would do).
#[derive(Debug, Default)]
pub struct RedriveReport {
    pub selected: usize,
    pub moved: usize,
    /// Records moved per destination topic.
    pub by_topic: BTreeMap<String, usize>,
    /// `partition:offset: why` for records that could not be redriven.
    pub skipped: Vec<String>,
}

/// Headers a redriven record must not carry: the error's, and the retry ladder's, so that it
/// starts over as a first attempt.
const DROPPED: [&str; 7] = [
    h::NOT_BEFORE,
    h::RETRY_AFTER_MS,
    h::STEP,
    h::DUE_AT,
    h::FORWARDED_AT,
    h::LAST_FAILURE_AT,
    h::ORIGIN_TOPIC,
];

/// Produces each selected dead letter to its `notify.source.topic`, bytes and key unchanged.
pub async fn redrive(
    config: &Config,
    filter: &Filter,
    dry_run: bool,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<RedriveReport> {
    let selected = read(config, filter).await?;
    let producer: FutureProducer = notify_runtime::kafka::producer_config(config).create()?;
    let dlq_topic = filter
        .topic
        .clone()
        .unwrap_or_else(|| config.runtime.dlq_topic.clone());
    let mut report = RedriveReport {
        selected: selected.len(),
        ..RedriveReport::default()
    };
    let total = selected.len();
    for (i, view) in selected.into_iter().enumerate() {
        let at = format!("{}:{}", view.partition, view.offset);
        let (Some(target), Some(m)) = (view.source_topic.clone(), view.message.as_ref()) else {
            report
                .skipped
                .push(format!("{at}: no {} header", dlq::SOURCE_TOPIC));
            continue;
        };
        if !dry_run {
            let mut headers = OwnedHeaders::new();
            let now = notify_runtime::now_ms().to_string();
            let from = format!("{dlq_topic}/{at}");
            if let Some(src) = m.headers() {
                for hd in src.iter() {
                    if !dlq::ALL_HEADERS.contains(&hd.key) && !DROPPED.contains(&hd.key) {
                        headers = headers.insert(Header {
                            key: hd.key,
                            value: hd.value,
                        });
                    }
                }
            }
            headers = headers
                .insert(Header {
                    key: h::REDRIVEN_AT,
                    value: Some(now.as_bytes()),
                })
                .insert(Header {
                    key: "notify.redrive.from",
                    value: Some(from.as_bytes()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&target).headers(headers);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(p) = m.payload() {
                record = record.payload(p);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            if let Err((e, _)) = producer.send(record, Duration::from_secs(30)).await {
                anyhow::bail!(
                    "redrive of {at} to {target} failed after {} moved: {e}",
                    report.moved
                );
            }
        }
        report.moved += 1;
        *report.by_topic.entry(target).or_default() += 1;
        progress(i + 1, total);
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(report)
}
