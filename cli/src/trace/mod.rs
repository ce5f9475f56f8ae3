//! `notify trace EVENT_ID`: one notification's whole trail in time order: every status event,
//! every hop through the retry and deferral topics, every dead letter, and the delivery
//! ledger's rows. Answers "why did this user not get it?" in one command.
//!
//! Status events are keyed by event id with the Java client's partitioner, so only the
//! event's partition of the status topic is read. Retry and dead-letter records are keyed by
//! the source record's key (a user id or a contact point), so those topics are scanned whole
//! (from `--since` when given) and matched by the decoded event id.

mod print;

use std::time::Duration;

use clap::{Args, ValueEnum};
use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::dlq;
use notify_runtime::records::{DeliveryStatus, mask};
use rdkafka::Message;
use serde::Serialize;

use crate::ledger::{Ledger, LedgerRow};
use crate::progress::Progress;
use crate::replay::Payload;
use crate::scan::{self, Range, header};

/// Where the retry ladder and quiet-hours deferral hold records, by default.
const HOLDING_TOPICS: [&str; 5] = [
    "notify.retry.10s.v1",
    "notify.retry.1m.v1",
    "notify.retry.10m.v1",
    "notify.retry.1h.v1",
    "notify.deferred.v1",
];

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    pub event_id: String,
    /// Only this user's part (an event id sent to many users is one notification each).
    #[arg(long)]
    pub user: Option<String>,
    /// Read only records written at or after this time (RFC 3339, epoch ms, or an age like 2h).
    #[arg(long, value_parser = crate::dlq::parse_time)]
    pub since: Option<i64>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Status topic (default: runtime.status_topic).
    #[arg(long)]
    pub status_topic: Option<String>,
    /// Dead-letter topic (default: runtime.dlq_topic).
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Retry and deferral topics to scan (repeatable; default: the retry ladder's four and
    /// notify.deferred.v1).
    #[arg(long = "retry-topic")]
    pub retry_topics: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// One thing that happened to the notification.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub at_ms: i64,
    /// `status`, `retry` (held in a retry or deferral topic) or `dead letter`.
    pub source: String,
    pub stage: String,
    /// The outcome, the dead-letter class, or `held`.
    pub what: String,
    pub user_id: String,
    pub channel: Option<String>,
    /// Masked contact point.
    pub recipient: Option<String>,
    pub attempt: Option<i32>,
    pub reason: Option<String>,
    /// `topic/partition/offset` of the record this step was read from.
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub event_id: String,
    pub user: Option<String>,
    pub steps: Vec<Step>,
    pub ledger: Vec<LedgerRow>,
    /// Why the ledger could not be read, when it could not.
    pub ledger_error: Option<String>,
}

/// The partition the Java client's default partitioner (and librdkafka's murmur2) puts `key`
/// on: murmur2, made positive by masking the sign bit, modulo the partition count.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let hash = notify_runtime::partitioner::murmur2(key) & 0x7fff_ffff;
    (hash % partitions.max(1) as u32) as i32
}

pub async fn execute(config: &Config, args: &TraceArgs) -> anyhow::Result<()> {
    let trace = trace(config, args).await?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&trace)?),
        Format::Table => print::table(&trace),
    }
    anyhow::ensure!(
        !trace.steps.is_empty() || !trace.ledger.is_empty(),
        "no trace of event {} (wrong id, or older than the topics' retention or --since)",
        args.event_id
    );
    Ok(())
}

/// Gathers the trail.
pub async fn trace(config: &Config, args: &TraceArgs) -> anyhow::Result<Trace> {
    let codec = AvroCodec::new(&config.registry)?;
    let consumer = scan::reader(config, &format!("{}-trace", config.kafka.group_prefix))?;
    let status_topic = args
        .status_topic
        .clone()
        .unwrap_or_else(|| config.runtime.status_topic.clone());
    let mut steps = statuses(&consumer, &codec, &status_topic, args).await?;
    let dlq_topic = args
        .dlq_topic
        .clone()
        .unwrap_or_else(|| config.runtime.dlq_topic.clone());
    let holding: Vec<String> = if args.retry_topics.is_empty() {
        HOLDING_TOPICS.iter().map(|t| t.to_string()).collect()
    } else {
        args.retry_topics.clone()
    };
    for topic in std::iter::once(&dlq_topic).chain(&holding) {
        // A topic this deployment does not have (no deferral, a shorter ladder) is no error.
        let Ok(partitions) = scan::partitions(&consumer, topic) else {
            continue;
        };
        let source = if *topic == dlq_topic {
            "dead letter"
        } else {
            "retry"
        };
        steps.extend(keyed_elsewhere(&consumer, &codec, topic, &partitions, source, args).await?);
    }
    // At the same millisecond the status event comes first: a RETRY_SCHEDULED or
    // DEAD_LETTERED status and its record in the retry or dead-letter topic share a time.
    let rank = |s: &Step| match s.source.as_str() {
        "status" => 0,
        "retry" => 1,
        _ => 2,
    };
    steps.sort_by(|a, b| (a.at_ms, rank(a), &a.at).cmp(&(b.at_ms, rank(b), &b.at)));
    let (ledger, ledger_error) = match ledger_rows(config, args).await {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    Ok(Trace {
        event_id: args.event_id.clone(),
        user: args.user.clone(),
        steps,
        ledger,
        ledger_error,
    })
}

fn start_offsets(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partitions: &[i32],
    since: Option<i64>,
) -> anyhow::Result<Vec<Range>> {
    let marks = scan::watermarks(consumer, topic, partitions)?;
    let starts = match since {
        Some(ms) => scan::offsets_for_time(consumer, topic, partitions, ms)?,
        None => marks.iter().map(|(p, (low, _))| (*p, *low)).collect(),
    };
    Ok(marks
        .iter()
        .map(|(p, (low, high))| Range {
            partition: *p,
            start: starts.get(p).copied().unwrap_or(*low),
            end: *high,
        })
        .collect())
}

async fn statuses(
    consumer: &rdkafka::consumer::BaseConsumer,
    codec: &AvroCodec,
    topic: &str,
    args: &TraceArgs,
) -> anyhow::Result<Vec<Step>> {
    let count = scan::partitions(consumer, topic)?.len() as i32;
    let partition = partition_for_key(args.event_id.as_bytes(), count);
    let ranges = start_offsets(consumer, topic, &[partition], args.since)?;
    let mut progress = Progress::new(
        "reading statuses",
        Some(ranges.iter().map(Range::len).sum()),
    );
    let mut scan = scan::Scan::new(consumer, topic, &ranges)?;
    let mut out = Vec::new();
    while let Some(m) = scan.next_record()? {
        progress.inc(1);
        if m.key() != Some(args.event_id.as_bytes()) {
            continue;
        }
        let Ok(s) = codec.decode::<DeliveryStatus>(m.payload()).await else {
            continue;
        };
        if s.event_id != args.event_id || args.user.as_ref().is_some_and(|u| *u != s.user_id) {
            continue;
        }
        out.push(Step {
            at_ms: s.at,
            source: "status".into(),
            stage: s.stage,
            what: serde_json::to_value(s.outcome)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            user_id: s.user_id,
            channel: s.channel,
            recipient: s.recipient,
            attempt: Some(s.attempt),
            reason: s.reason,
            at: format!("{topic}/{}/{}", m.partition(), m.offset()),
        });
    }
    progress.finish();
    Ok(out)
}

/// Dead letters or held retries of the event, from a topic keyed by something else.
async fn keyed_elsewhere(
    consumer: &rdkafka::consumer::BaseConsumer,
    codec: &AvroCodec,
    topic: &str,
    partitions: &[i32],
    source: &str,
    args: &TraceArgs,
) -> anyhow::Result<Vec<Step>> {
    let ranges = start_offsets(consumer, topic, partitions, args.since)?;
    let mut progress = Progress::new(
        &format!("scanning {topic}"),
        Some(ranges.iter().map(Range::len).sum()),
    );
    let mut scan = scan::Scan::new(consumer, topic, &ranges)?;
    let mut out = Vec::new();
    while let Some(m) = scan.next_record()? {
        progress.inc(1);
        let Some(payload) = Payload::decode(codec, m.payload(), true).await else {
            continue;
        };
        if payload.event_id() != args.event_id
            || args.user.as_deref().is_some_and(|u| u != payload.user_id())
        {
            continue;
        }
        let (channel, recipient) = match &payload {
            Payload::Message(msg) => (
                Some(msg.channel.as_str().to_string()),
                Some(mask(&msg.recipient)),
            ),
            Payload::Request(_) => (None, None),
        };
        let number = |key: &str| header(&m, key).and_then(|v| v.trim().parse::<i64>().ok());
        // Retry and dead-letter records keep the source record's timestamp; the failure
        // headers say when this hop happened.
        let written = [dlq::retry::LAST_FAILURE_AT, dlq::FIRST_FAILURE_AT]
            .iter()
            .filter_map(|h| number(h))
            .chain(m.timestamp().to_millis())
            .max()
            .unwrap_or(0);
        let (stage, what, reason) = if source == "dead letter" {
            (
                header(&m, dlq::STAGE).unwrap_or_default(),
                header(&m, dlq::CLASS).unwrap_or_default(),
                header(&m, dlq::REASON),
            )
        } else {
            let due = number(dlq::retry::DUE_AT).or(number(dlq::retry::NOT_BEFORE));
            let step = header(&m, dlq::retry::STEP).unwrap_or_else(|| topic.to_string());
            let due = due
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| format!(", due {}", t.format("%H:%M:%S%.3f")))
                .unwrap_or_default();
            (
                "retry".into(),
                "held".into(),
                Some(format!("step {step}{due}")),
            )
        };
        out.push(Step {
            at_ms: written,
            source: source.into(),
            stage,
            what,
            user_id: payload.user_id().to_string(),
            channel,
            recipient,
            attempt: number(dlq::ATTEMPTS).map(|a| a as i32),
            reason,
            at: format!("{topic}/{}/{}", m.partition(), m.offset()),
        });
    }
    progress.finish();
    Ok(out)
}

async fn ledger_rows(config: &Config, args: &TraceArgs) -> anyhow::Result<Vec<LedgerRow>> {
    let ledger = tokio::time::timeout(Duration::from_secs(20), Ledger::connect(config))
        .await
        .map_err(|_| anyhow::anyhow!("the CQL database did not answer within 20 s"))??;
    let rows = ledger.rows(&args.event_id).await?;
    Ok(rows
        .into_iter()
        .filter(|r| args.user.as_ref().is_none_or(|u| *u == r.user_id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_like_the_java_client() {
        // Utils.toPositive(Utils.murmur2(key)) % n, from the murmur2 values of Kafka's own
        // unit test: "21" -> -973932308, "foobar" -> -790332482, "abc" -> 479470107.
        assert_eq!(
            partition_for_key(b"21", 3),
            ((-973932308i32 & 0x7fffffff) % 3)
        );
        assert_eq!(partition_for_key(b"21", 3), 0);
        assert_eq!(
            partition_for_key(b"foobar", 6),
            ((-790332482i32 & 0x7fffffff) % 6)
        );
        assert_eq!(partition_for_key(b"foobar", 6), 0);
        assert_eq!(partition_for_key(b"foobar", 7), 1357151166 % 7);
        assert_eq!(partition_for_key(b"abc", 12), 479470107 % 12);
        assert_eq!(partition_for_key(b"abc", 12), 3);
        assert_eq!(partition_for_key(b"abc", 1), 0);
    }
}
