//! The records the retry processor writes: the record returned to its origin, the record
//! moved to a later step, dead letters and status events.

use notify_runtime::dlq::{self, DeadLetter, ErrorClass, retry as h};
use notify_runtime::records::{ChannelMessage, DeliveryStatus, NotificationRequest, Outcome, mask};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};

/// One record to produce, bytes ready.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The source's timestamp is kept: it is event time across the pipeline.
    pub timestamp_ms: Option<i64>,
}

/// What the status events need to know about the record (decoded from its value).
#[derive(Debug, Clone)]
pub struct Subject {
    pub event_id: String,
    pub user_id: String,
    pub channel: Option<String>,
    pub recipient: Option<String>,
    pub expires_at: Option<i64>,
}

impl From<&ChannelMessage> for Subject {
    fn from(m: &ChannelMessage) -> Self {
        Subject {
            event_id: m.event_id.clone(),
            user_id: m.user_id.clone(),
            channel: Some(m.channel.as_str().to_string()),
            recipient: Some(mask(&m.recipient)),
            expires_at: m.expires_at,
        }
    }
}

impl From<&NotificationRequest> for Subject {
    fn from(r: &NotificationRequest) -> Self {
        Subject {
            event_id: r.event_id.clone(),
            user_id: r.user_id.clone(),
            channel: None,
            recipient: None,
            expires_at: r.expires_at,
        }
    }
}

/// The record's headers, one value per name (the last one written wins), in order.
pub fn headers_of(msg: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(hs) = msg.headers() {
        for hd in hs.iter() {
            out.retain(|(k, _)| k != hd.key);
            out.push((hd.key.to_string(), hd.value.unwrap_or_default().to_vec()));
        }
    }
    out
}

pub fn header(headers: &[(String, Vec<u8>)], key: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
}

fn set(headers: &mut Vec<(String, Vec<u8>)>, key: &str, value: String) {
    headers.retain(|(k, _)| k != key);
    headers.push((key.to_string(), value.into_bytes()));
}

fn same_record(msg: &OwnedMessage, topic: &str, headers: Vec<(String, Vec<u8>)>) -> Outgoing {
    Outgoing {
        topic: topic.to_string(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: msg.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: msg.timestamp().to_millis(),
    }
}

/// The record back on its origin topic, with when it was due and sent, and the step it
/// waited on (so the next failure goes further up the ladder).
pub fn returned(
    msg: &OwnedMessage,
    origin: &str,
    step: Option<usize>,
    due_ms: i64,
    now: i64,
) -> Outgoing {
    let mut headers = headers_of(msg);
    // Control headers of this wait must not make the next wait shorter or longer.
    headers.retain(|(k, _)| k != h::NOT_BEFORE && k != h::RETRY_AFTER_MS);
    if let Some(step) = step {
        set(&mut headers, h::STEP, step.to_string());
    }
    set(&mut headers, h::DUE_AT, due_ms.to_string());
    set(&mut headers, h::FORWARDED_AT, now.to_string());
    same_record(msg, origin, headers)
}

/// The record on a later step's topic, due at `not_before_ms`.
pub fn moved(msg: &OwnedMessage, topic: &str, not_before_ms: i64) -> Outgoing {
    let mut headers = headers_of(msg);
    set(&mut headers, h::NOT_BEFORE, not_before_ms.to_string());
    same_record(msg, topic, headers)
}

/// A dead letter with the contract's header set. For an exhausted record the source topic
/// is its origin (the channel topic), so that `notify dlq redrive` returns it there; partition
/// and offset locate the ladder record it was read from.
pub fn dead_letter(
    msg: &OwnedMessage,
    dlq_topic: &str,
    class: ErrorClass,
    reason: String,
    origin: Option<&str>,
    now: i64,
) -> Outgoing {
    let own = headers_of(msg);
    let number = |key: &str| header(&own, key).and_then(|v| v.trim().parse::<i64>().ok());
    let dl = DeadLetter {
        stage: crate::NAME.to_string(),
        class,
        reason,
        source_topic: origin.unwrap_or(msg.topic()).to_string(),
        source_partition: msg.partition(),
        source_offset: msg.offset(),
        attempts: number(dlq::ATTEMPTS)
            .unwrap_or(1)
            .clamp(1, i64::from(u32::MAX)) as u32,
        first_failure_at_ms: number(dlq::FIRST_FAILURE_AT).unwrap_or(now),
    };
    let headers = dl
        .headers(msg.headers())
        .iter()
        .map(|hd| (hd.key.to_string(), hd.value.unwrap_or_default().to_vec()))
        .collect();
    same_record(msg, dlq_topic, headers)
}

pub fn status(
    subject: &Subject,
    outcome: Outcome,
    reason: String,
    attempt: i32,
    now: i64,
) -> DeliveryStatus {
    DeliveryStatus {
        event_id: subject.event_id.clone(),
        user_id: subject.user_id.clone(),
        channel: subject.channel.clone(),
        recipient: subject.recipient.clone(),
        outcome,
        reason: Some(notify_runtime::records::scrub(&reason)),
        attempt,
        stage: crate::NAME.to_string(),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    fn msg(headers: &[(&str, &str)]) -> OwnedMessage {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        OwnedMessage::new(
            Some(b"payload".to_vec()),
            Some(b"user-1".to_vec()),
            "notify.retry.10s.v1".into(),
            Timestamp::CreateTime(1_000),
            3,
            42,
            Some(hs),
        )
    }

    #[test]
    fn returned_records_drop_wait_controls_and_say_when() {
        let m = msg(&[
            (h::ORIGIN_TOPIC, "chan"),
            (h::RETRY_AFTER_MS, "5000"),
            (h::NOT_BEFORE, "9"),
            (dlq::ATTEMPTS, "1"),
            (dlq::ATTEMPTS, "2"),
        ]);
        let out = returned(&m, "chan", Some(1), 100, 120);
        assert_eq!(out.topic, "chan");
        assert_eq!(out.payload.as_deref(), Some(b"payload".as_slice()));
        assert_eq!(out.timestamp_ms, Some(1_000));
        assert_eq!(header(&out.headers, dlq::ATTEMPTS).as_deref(), Some("2"));
        assert_eq!(
            out.headers
                .iter()
                .filter(|(k, _)| k == dlq::ATTEMPTS)
                .count(),
            1
        );
        assert_eq!(header(&out.headers, h::STEP).as_deref(), Some("1"));
        assert_eq!(
            header(&out.headers, h::FORWARDED_AT).as_deref(),
            Some("120")
        );
        assert!(header(&out.headers, h::RETRY_AFTER_MS).is_none());
        assert!(header(&out.headers, h::NOT_BEFORE).is_none());
    }

    #[test]
    fn dead_letters_name_the_origin_as_source() {
        let m = msg(&[
            (h::ORIGIN_TOPIC, "chan"),
            (dlq::ATTEMPTS, "5"),
            (dlq::FIRST_FAILURE_AT, "77"),
        ]);
        let out = dead_letter(
            &m,
            "dlq",
            ErrorClass::RetriesExhausted,
            "r".into(),
            Some("chan"),
            1,
        );
        for key in dlq::ALL_HEADERS {
            assert!(header(&out.headers, key).is_some(), "{key}");
        }
        assert_eq!(
            header(&out.headers, dlq::SOURCE_TOPIC).as_deref(),
            Some("chan")
        );
        assert_eq!(
            header(&out.headers, dlq::CLASS).as_deref(),
            Some("retries_exhausted")
        );
        assert_eq!(header(&out.headers, dlq::ATTEMPTS).as_deref(), Some("5"));
        assert_eq!(
            header(&out.headers, dlq::FIRST_FAILURE_AT).as_deref(),
            Some("77")
        );
        assert_eq!(
            header(&out.headers, dlq::SOURCE_OFFSET).as_deref(),
            Some("42")
        );
    }
}
