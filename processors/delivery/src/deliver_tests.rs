//! The delivery rule with the memory ledger and a scripted provider (no Kafka).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use notify_runtime::records::{Priority, TokenFeedback};

use super::*;
use crate::ledger::MemoryLedger;

/// Answers from a script and counts calls.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<SendOutcome>>,
    calls: Mutex<usize>,
}

impl Provider for Scripted {
    async fn send(&self, _msg: &ChannelMessage) -> SendOutcome {
        *self.calls.lock().unwrap() += 1;
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(SendOutcome::Sent {
                provider_id: "p1".into(),
            })
    }
}

fn deliverer(answers: Vec<SendOutcome>) -> Deliverer<Scripted, MemoryLedger> {
    Deliverer {
        channel: DeliveryChannel::Apns,
        stage: "deliver-apns".into(),
        provider: Scripted {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(0),
        },
        ledger: MemoryLedger::default(),
        rate: TokenBucket::new(0.0, 1),
        topics: Topics {
            status: "status".into(),
            retry: "retry".into(),
            token_feedback: "feedback".into(),
        },
        lease_ms: 60_000,
        metrics: Arc::new(OnceLock::new()),
    }
}

fn msg() -> ChannelMessage {
    ChannelMessage {
        event_id: "e1".into(),
        user_id: "u1".into(),
        category: "billing".into(),
        priority: Priority::Normal,
        channel: DeliveryChannel::Apns,
        recipient: "abcdef0123".into(),
        title: None,
        body: "hi".into(),
        html_body: None,
        data: BTreeMap::new(),
        created_at: 1,
        expires_at: None,
    }
}

fn meta(headers: &[(&str, &str)]) -> RecordMeta {
    RecordMeta {
        topic: "notify.channel.apns.v1".into(),
        partition: 0,
        offset: 7,
        key: Some("abcdef0123".into()),
        timestamp_ms: None,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    }
}

fn status_of(out: &Output) -> &notify_runtime::records::DeliveryStatus {
    out.downcast().expect("a status event")
}

fn calls(d: &Deliverer<Scripted, MemoryLedger>) -> usize {
    *d.provider.calls.lock().unwrap()
}

#[tokio::test]
async fn sent_once_then_answered_from_the_ledger() {
    let d = deliverer(vec![]);
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Sent);
    assert_eq!(status_of(&out[0]).recipient.as_deref(), Some("***0123"));
    let again = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&again[0]).reason.as_deref(), Some("already sent"));
    assert_eq!(calls(&d), 1);
}

#[tokio::test]
async fn retryable_goes_to_the_ladder_with_headers_and_frees_the_row() {
    let d = deliverer(vec![SendOutcome::Retryable {
        reason: "APNs 503".into(),
        retry_after: Some(Duration::from_secs(2)),
    }]);
    let incoming = meta(&[
        (headers::ATTEMPTS, "2"),
        (headers::FIRST_FAILURE_AT, "111"),
        (headers::ORIGIN_TOPIC, "notify.channel.apns.v1"),
        ("notify.retry.step", "1"),
        ("trace", "t"),
    ]);
    let out = d.process(msg(), &incoming).await.unwrap();
    let retry = &out[0];
    assert_eq!(retry.topic, "retry");
    assert_eq!(retry.key.as_deref(), Some("abcdef0123"));
    let h = |k: &str| {
        let found: Vec<_> = retry.headers.iter().filter(|(n, _)| n == k).collect();
        assert!(found.len() <= 1, "header {k} repeated");
        found
            .first()
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(h(headers::ATTEMPTS).as_deref(), Some("3"));
    assert_eq!(h(headers::FIRST_FAILURE_AT).as_deref(), Some("111"));
    assert_eq!(h(headers::RETRY_AFTER_MS).as_deref(), Some("2000"));
    assert_eq!(h(headers::ERROR_REASON).as_deref(), Some("APNs 503"));
    assert_eq!(
        h(headers::ORIGIN_TOPIC).as_deref(),
        Some("notify.channel.apns.v1")
    );
    assert_eq!(h("notify.retry.step").as_deref(), Some("1"));
    assert_eq!(h("trace").as_deref(), Some("t"));
    assert!(h(headers::LAST_FAILURE_AT).is_some());
    let status = status_of(&out[1]);
    assert_eq!(
        (status.outcome, status.attempt),
        (Outcome::RetryScheduled, 3)
    );
    // The row was released: the record coming back from the ladder is sent.
    let back = d
        .process(msg(), &meta(&[(headers::ATTEMPTS, "3")]))
        .await
        .unwrap();
    assert_eq!(status_of(&back[0]).outcome, Outcome::Sent);
    assert_eq!(calls(&d), 2);
}

#[tokio::test]
async fn permanent_is_failed_and_dead_lettered_even_on_replay() {
    let d = deliverer(vec![SendOutcome::Permanent {
        reason: "APNs 400: BadTopic".into(),
    }]);
    for _ in 0..2 {
        match d.process(msg(), &meta(&[])).await {
            Err(ProcessError::Reject { class, outputs, .. }) => {
                assert_eq!(class, ErrorClass::Permanent);
                assert_eq!(status_of(&outputs[0]).outcome, Outcome::Failed);
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }
    assert_eq!(calls(&d), 1);
}

#[tokio::test]
async fn invalid_token_is_fed_back_and_never_retried() {
    let d = deliverer(vec![SendOutcome::TokenInvalid {
        reason: "APNs 410: Unregistered".into(),
    }]);
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(status_of(&out[0]).outcome, Outcome::TokenInvalid);
    let feedback: &TokenFeedback = out[1].downcast().expect("feedback");
    assert_eq!(
        (out[1].topic.as_str(), out[1].key.as_deref()),
        ("feedback", Some("u1"))
    );
    assert_eq!(feedback.token, "abcdef0123");
    assert!(out.iter().all(|o| o.topic != "retry"));
    let again = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&again[0]).outcome, Outcome::TokenInvalid);
    assert_eq!(calls(&d), 1);
}

#[tokio::test]
async fn expired_wrong_channel_and_busy_rows_do_not_call_the_provider() {
    let d = deliverer(vec![]);
    let expired = ChannelMessage {
        expires_at: Some(1),
        ..msg()
    };
    let out = d.process(expired, &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Expired);
    let fcm = ChannelMessage {
        channel: DeliveryChannel::Fcm,
        ..msg()
    };
    assert!(matches!(
        d.process(fcm, &meta(&[])).await,
        Err(ProcessError::Reject {
            class: ErrorClass::Validation,
            ..
        })
    ));
    // A claim held by another consumer within its lease: hold the record, do not send.
    let key = LedgerKey {
        event_id: "e1".into(),
        channel: "APNS".into(),
        recipient: "abcdef0123".into(),
    };
    d.ledger
        .claim(&key, "other", now_ms(), 60_000)
        .await
        .unwrap();
    assert!(matches!(
        d.process(msg(), &meta(&[])).await,
        Err(ProcessError::Transient(_))
    ));
    assert_eq!(calls(&d), 0);
}
