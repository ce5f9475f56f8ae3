//! Dead letters: the source record's bytes, untouched, with the reason in headers
//! (CONTRACT.md, "Dead-letter headers").

use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const STAGE: &str = "notify.error.stage";
pub const CLASS: &str = "notify.error.class";
pub const REASON: &str = "notify.error.reason";
pub const SOURCE_TOPIC: &str = "notify.source.topic";
pub const SOURCE_PARTITION: &str = "notify.source.partition";
pub const SOURCE_OFFSET: &str = "notify.source.offset";
pub const ATTEMPTS: &str = "notify.attempts";
pub const FIRST_FAILURE_AT: &str = "notify.first_failure_at";

/// Retry-ladder and deferral headers (the retry processor reads them; delivery and the
/// preference filter write them). `notify.attempts`, `notify.first_failure_at` and
/// `notify.error.reason` above are shared with dead letters.
pub mod retry {
    /// The topic the record returns to when it is due (the channel topic, or the stage input
    /// for a deferred request).
    pub const ORIGIN_TOPIC: &str = "notify.origin.topic";
    /// Epoch ms of the failure that sent the record to the ladder (this attempt's failure).
    /// Absent: the retry processor counts from when it first reads the record.
    pub const LAST_FAILURE_AT: &str = "notify.last_failure_at";
    /// The provider's Retry-After, in ms, when it sent one.
    pub const RETRY_AFTER_MS: &str = "notify.retry_after_ms";
    /// Epoch ms before which the record must not return to its origin (deferral, and a
    /// record moved to a later step by Retry-After).
    pub const NOT_BEFORE: &str = "notify.not_before";
    /// Set by the retry processor on what it returns: the ladder step (0-based) it waited on.
    /// Writers of the ladder keep it, so the next failure goes at least one step further.
    pub const STEP: &str = "notify.retry.step";
    /// Set by the retry processor: epoch ms when it was due and when it was sent back.
    pub const DUE_AT: &str = "notify.retry.due_at";
    pub const FORWARDED_AT: &str = "notify.retry.forwarded_at";
    /// Set by `notify dlq redrive`: epoch ms of the redrive.
    pub const REDRIVEN_AT: &str = "notify.redriven_at";
}

/// Every header a dead letter carries, in a fixed order.
pub const ALL_HEADERS: [&str; 8] = [
    STAGE,
    CLASS,
    REASON,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    ATTEMPTS,
    FIRST_FAILURE_AT,
];

/// Why a record was dead-lettered (`notify.error.class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Bytes that are not Avro in the wire format, or a body that does not decode.
    Decode,
    /// Unknown schema id, or a record that does not fit the expected schema.
    Schema,
    /// Decodes, but breaks a rule of the contract (empty event id, …).
    Validation,
    /// A template, locale or variable is missing, or the rendered text is over a limit.
    Render,
    /// The provider refused the message for good.
    Permanent,
    /// The retry ladder's last step failed too.
    RetriesExhausted,
    /// The provider may or may not have the message (a crash or a timeout after the call went
    /// out): not resent on its own; an operator decides (`notify replay --force`).
    InDoubt,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        Self::Decode,
        Self::Schema,
        Self::Validation,
        Self::Render,
        Self::Permanent,
        Self::RetriesExhausted,
        Self::InDoubt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Schema => "schema",
            Self::Validation => "validation",
            Self::Render => "render",
            Self::Permanent => "permanent",
            Self::RetriesExhausted => "retries_exhausted",
            Self::InDoubt => "in_doubt",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorClass> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Where the failed record came from and what happened to it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub stage: String,
    pub class: ErrorClass,
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub attempts: u32,
    pub first_failure_at_ms: i64,
}

impl DeadLetter {
    /// The source record's own headers (minus any older error headers), then ours.
    pub fn headers(&self, source: Option<&OwnedHeaders>) -> OwnedHeaders {
        let source: Vec<(String, Vec<u8>)> = source
            .map(|src| {
                src.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = OwnedHeaders::new();
        for (key, value) in self.headers_after(&source) {
            out = out.insert(Header {
                key: &key,
                value: Some(&value),
            });
        }
        out
    }

    /// As [`headers`](Self::headers), for headers held as pairs.
    pub fn headers_after(&self, source: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = source
            .iter()
            .filter(|(k, _)| !ALL_HEADERS.contains(&k.as_str()))
            .cloned()
            .collect();
        let values = [
            (STAGE, self.stage.clone()),
            (CLASS, self.class.as_str().to_string()),
            // Header values stay small: a reason is cut at 1 KiB on a char boundary. Error
            // text of providers and drivers echoes addresses and tokens: masked.
            (
                REASON,
                truncate(&crate::records::scrub(&self.reason), 1024).to_string(),
            ),
            (SOURCE_TOPIC, self.source_topic.clone()),
            (SOURCE_PARTITION, self.source_partition.to_string()),
            (SOURCE_OFFSET, self.source_offset.to_string()),
            (ATTEMPTS, self.attempts.to_string()),
            (FIRST_FAILURE_AT, self.first_failure_at_ms.to_string()),
        ];
        out.extend(
            values
                .into_iter()
                .map(|(key, value)| (key.to_string(), value.into_bytes())),
        );
        out
    }
}

/// The UTF-8 value of header `key`, if present.
pub fn header_str<'a>(headers: Option<&'a OwnedHeaders>, key: &str) -> Option<&'a str> {
    let headers = headers?;
    headers
        .iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_every_contract_header_and_keeps_source_headers() {
        let source = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some(b"t1".as_slice()),
        });
        let dl = DeadLetter {
            stage: "dedup".into(),
            class: ErrorClass::Decode,
            reason: "é".repeat(2000),
            source_topic: "in".into(),
            source_partition: 3,
            source_offset: 42,
            attempts: 1,
            first_failure_at_ms: 7,
        };
        let h = dl.headers(Some(&source));
        for key in ALL_HEADERS {
            assert!(header_str(Some(&h), key).is_some(), "missing {key}");
        }
        assert_eq!(header_str(Some(&h), "trace"), Some("t1"));
        assert_eq!(header_str(Some(&h), CLASS), Some("decode"));
        assert_eq!(header_str(Some(&h), SOURCE_OFFSET), Some("42"));
        assert!(header_str(Some(&h), REASON).unwrap().len() <= 1024);
    }

    #[test]
    fn the_reason_header_is_scrubbed() {
        let dl = DeadLetter {
            stage: "deliver-sms".into(),
            class: ErrorClass::Permanent,
            reason: "21614: +4915112345678 is not a mobile number (ben@example.com)".into(),
            source_topic: "in".into(),
            source_partition: 0,
            source_offset: 1,
            attempts: 1,
            first_failure_at_ms: 7,
        };
        let h = dl.headers(None);
        let reason = header_str(Some(&h), REASON).unwrap();
        assert_eq!(
            reason,
            "21614: ***5678 is not a mobile number (b***@example.com)"
        );
    }
}
