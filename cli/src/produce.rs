//! `notify produce`: JSON lines of a contract record to Avro on its topic.
//!
//! Each line is one record as JSON, with enum symbols as strings (`"PUSH"`) and nullable
//! fields as `null` or the value. A request without `created_at` gets the current time. A line
//! `{"tombstone": "<key>"}` deletes a profile or template. Bad lines are reported with their
//! number and skipped; the good ones are produced.

use std::io::BufRead;
use std::time::Duration;

use clap::ValueEnum;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{
    AvroRecord, DeliveryStatus, NotificationRequest, Template, UserProfile,
};
use notify_runtime::{Config, now_ms};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// NotificationRequest to notify.requests.v1, keyed by user_id
    Request,
    /// UserProfile to notify.users.v1, keyed by user_id
    User,
    /// Template to notify.templates.v1, keyed by template_id/channel/locale
    Template,
    /// DeliveryStatus to notify.status.v1, keyed by event_id
    Status,
}

impl Kind {
    pub fn default_topic(self) -> &'static str {
        match self {
            Kind::Request => "notify.requests.v1",
            Kind::User => "notify.users.v1",
            Kind::Template => "notify.templates.v1",
            Kind::Status => "notify.status.v1",
        }
    }
}

/// A line that could not be produced.
#[derive(Debug, Clone)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ProduceReport {
    pub produced: usize,
    pub bad: Vec<BadLine>,
}

/// One encoded record ready to send.
pub(crate) struct Encoded {
    pub(crate) key: String,
    pub(crate) value: Option<Vec<u8>>,
}

pub async fn produce(
    config: &Config,
    kind: Kind,
    topic: &str,
    input: impl BufRead,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<ProduceReport> {
    let codec = AvroCodec::new(&config.registry)?;
    let producer: FutureProducer = notify_runtime::kafka::producer_config(config).create()?;
    let mut report = ProduceReport::default();
    let mut pending = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match encode_line(&codec, kind, topic, &line).await {
            Ok(encoded) => {
                let mut record: FutureRecord<'_, str, [u8]> =
                    FutureRecord::to(topic).key(encoded.key.as_str());
                if let Some(v) = &encoded.value {
                    record = record.payload(v.as_slice());
                }
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| anyhow::anyhow!("line {number}: cannot queue: {e}"))?;
                pending.push((number, delivery));
            }
            Err(reason) => report.bad.push(BadLine {
                line: number,
                reason,
            }),
        }
        if pending.len() >= 1000 {
            report.produced += settle(&mut pending, &mut report.bad).await;
            progress(report.produced);
        }
    }
    report.produced += settle(&mut pending, &mut report.bad).await;
    progress(report.produced);
    let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10));
    Ok(report)
}

async fn settle(
    pending: &mut Vec<(usize, rdkafka::producer::DeliveryFuture)>,
    bad: &mut Vec<BadLine>,
) -> usize {
    let mut ok = 0;
    for (number, delivery) in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => ok += 1,
            Ok(Err((e, _))) => bad.push(BadLine {
                line: number,
                reason: format!("not acknowledged: {e}"),
            }),
            Err(_) => bad.push(BadLine {
                line: number,
                reason: "producer closed".into(),
            }),
        }
    }
    ok
}

/// One line to its key and Avro bytes, or the reason it is rejected (shared with backfill).
pub(crate) async fn encode_line(
    codec: &AvroCodec,
    kind: Kind,
    topic: &str,
    line: &str,
) -> Result<Encoded, String> {
    let mut json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(key) = json.get("tombstone") {
        if !matches!(kind, Kind::User | Kind::Template) {
            return Err("tombstones only apply to users and templates".into());
        }
        let key = key.as_str().ok_or("tombstone key must be a string")?;
        return Ok(Encoded {
            key: key.to_string(),
            value: None,
        });
    }
    if kind == Kind::Request
        && let Some(obj) = json.as_object_mut()
    {
        obj.entry("created_at")
            .or_insert_with(|| serde_json::json!(now_ms()));
    }
    match kind {
        Kind::Request => {
            let r: NotificationRequest = parse(json)?;
            r.validate()?;
            let key = r.user_id.clone();
            encode(codec, topic, key, &r).await
        }
        Kind::User => {
            let r: UserProfile = parse(json)?;
            let key = r.user_id.clone();
            encode(codec, topic, key, &r).await
        }
        Kind::Template => {
            let r: Template = parse(json)?;
            let key = r.key();
            encode(codec, topic, key, &r).await
        }
        Kind::Status => {
            let r: DeliveryStatus = parse(json)?;
            let key = r.event_id.clone();
            encode(codec, topic, key, &r).await
        }
    }
}

fn parse<T: AvroRecord>(json: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(json).map_err(|e| format!("not a valid {}: {e}", T::FULL_NAME))
}

async fn encode<T: AvroRecord>(
    codec: &AvroCodec,
    topic: &str,
    key: String,
    record: &T,
) -> Result<Encoded, String> {
    let value = codec
        .encode(topic, record)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Encoded {
        key,
        value: Some(value),
    })
}
