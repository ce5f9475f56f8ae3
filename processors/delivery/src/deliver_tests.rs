//! The delivery rule with the memory ledger, memory epochs and a scripted provider (no Kafka).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use notify_runtime::Metrics;
use notify_runtime::records::{DeliveryStatus, Priority, TokenFeedback};

use super::*;
use crate::ledger::MemoryLedger;
use crate::ownership::MemoryOwnership;

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

/// The log end, read only when an earlier owner's claims are unknown.
struct FixedEnd(i64);

impl LogEnd for FixedEnd {
    fn log_end(&self, _: i32) -> Option<i64> {
        Some(self.0)
    }
}

type TestDeliverer = Deliverer<Scripted, MemoryLedger, MemoryOwnership>;

/// A deliverer whose partition 0 an earlier owner claimed up to `takeover_end - 1` (nothing
/// when 0), long enough ago that its lease is over.
fn deliverer_with(
    answers: Vec<SendOutcome>,
    takeover_end: i64,
    policy: InDoubtPolicy,
) -> TestDeliverer {
    let ownership = MemoryOwnership::default();
    if takeover_end > 0 {
        ownership.claimed_earlier(0, takeover_end - 1, now_ms() - 120_000);
    }
    Deliverer {
        channel: DeliveryChannel::Apns,
        stage: "deliver-apns".into(),
        input: "notify.channel.apns.v1".into(),
        provider: Scripted {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(0),
        },
        ledger: MemoryLedger::default(),
        ownership: Arc::new(ownership),
        log_end: Arc::new(FixedEnd(takeover_end)),
        rate: TokenBucket::new(0.0, 1),
        topics: Topics {
            status: "status".into(),
            retry: "retry".into(),
            token_feedback: "feedback".into(),
        },
        lease_ms: 60_000,
        in_doubt: policy,
        metrics: DeliveryMetrics::register(&Metrics::new("test"), DeliveryChannel::Apns),
        owned: Arc::default(),
    }
}

fn deliverer(answers: Vec<SendOutcome>) -> TestDeliverer {
    deliverer_with(answers, 0, InDoubtPolicy::Fail)
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

/// A record written exactly once (by the chain) at offset 7, with `headers` besides.
fn meta(headers: &[(&str, &str)]) -> RecordMeta {
    let mut h: Vec<(String, Vec<u8>)> = vec![(EXACTLY_ONCE.into(), b"1".to_vec())];
    h.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    );
    RecordMeta {
        topic: "notify.channel.apns.v1".into(),
        partition: 0,
        offset: 7,
        key: Some("abcdef0123".into()),
        headers: h,
        ..RecordMeta::default()
    }
}

fn key() -> MessageKey {
    MessageKey {
        event_id: "e1".into(),
        user_id: "u1".into(),
        channel: "APNS".into(),
        recipient: "abcdef0123".into(),
    }
}

fn status_of(out: &Output) -> &DeliveryStatus {
    out.downcast().expect("a status event")
}

fn calls(d: &TestDeliverer) -> usize {
    *d.provider.calls.lock().unwrap()
}

fn reads(d: &TestDeliverer) -> u64 {
    d.ledger.reads.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn sent_once_without_a_read_and_a_redo_is_answered_from_the_ledger() {
    let d = deliverer(vec![]);
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Sent);
    assert_eq!(status_of(&out[0]).recipient.as_deref(), Some("***0123"));
    assert_eq!(
        reads(&d),
        0,
        "a message written once, after the takeover: no read"
    );
    assert_eq!(d.ledger.row(&key()).map(|r| r.state), Some(State::Sent));
    // Redone by the next owner: the record predates its takeover, so it reads.
    let next = deliverer_with(vec![], 100, InDoubtPolicy::Fail);
    next.ledger
        .write(&key(), d.ledger.row(&key()).unwrap())
        .await
        .unwrap();
    let again = next.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&again[0]).reason.as_deref(), Some("already sent"));
    assert_eq!(calls(&next), 0);
}

#[tokio::test]
async fn a_claim_without_outcome_from_an_earlier_owner_is_waited_for_then_in_doubt() {
    let d = deliverer_with(vec![], 100, InDoubtPolicy::Fail);
    let claim = Row {
        state: State::Claimed,
        epoch: 0,
        partition: 0,
        offset: 7,
        attempt: 1,
        provider_id: String::new(),
        reason: String::new(),
        updated_at_ms: now_ms(),
    };
    d.ledger.write(&key(), claim.clone()).await.unwrap();
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    assert!(
        matches!(err, ProcessError::Transient(_)),
        "held inside the lease: {err}"
    );
    let expired = Row {
        updated_at_ms: now_ms() - 61_000,
        ..claim
    };
    d.ledger.write(&key(), expired).await.unwrap();
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    let ProcessError::Reject { class, outputs, .. } = err else {
        panic!("not a dead letter");
    };
    assert_eq!(class, ErrorClass::InDoubt);
    assert_eq!(status_of(&outputs[0]).outcome, Outcome::Failed);
    assert_eq!(
        calls(&d),
        0,
        "in doubt is never resent under the fail policy"
    );
    assert_eq!(d.ledger.row(&key()).map(|r| r.state), Some(State::InDoubt));
}

#[tokio::test]
async fn a_record_an_earlier_owner_claimed_without_an_outcome_is_waited_for_then_in_doubt() {
    // Claimed (offset 7 is below the earlier claim of 9) a moment ago, no row: held.
    let d = deliverer_with(vec![], 0, InDoubtPolicy::Fail);
    d.ownership.claimed_earlier(0, 9, now_ms());
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    assert!(
        matches!(err, ProcessError::Transient(_)),
        "held inside the lease: {err}"
    );
    assert_eq!(calls(&d), 0);
    // A lease later: in doubt, not resent, and written so.
    let d = deliverer_with(vec![], 10, InDoubtPolicy::Fail);
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    let ProcessError::Reject { class, .. } = err else {
        panic!("not a dead letter");
    };
    assert_eq!(class, ErrorClass::InDoubt);
    assert_eq!(calls(&d), 0);
    assert_eq!(d.ledger.row(&key()).map(|r| r.state), Some(State::InDoubt));
    // The resend policy sends it.
    let d = deliverer_with(vec![], 10, InDoubtPolicy::Resend);
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Sent);
    assert_eq!(calls(&d), 1);
}

#[tokio::test]
async fn a_record_past_the_earlier_claims_is_sent_without_a_read_and_claimed_first() {
    let d = deliverer_with(vec![], 7, InDoubtPolicy::Fail);
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Sent);
    assert_eq!(reads(&d), 0, "offset 7 is past the earlier claim of 6");
    let epoch = d.taken(0).await.unwrap().epoch;
    assert_eq!(
        d.ownership.claimed(0, epoch),
        Some(7),
        "the offset is claimed for this epoch before the call"
    );
}

#[tokio::test]
async fn a_stale_owner_calls_no_provider() {
    let d = deliverer(vec![]);
    d.process(msg(), &meta(&[])).await.unwrap();
    // Another instance takes partition 0 over while this one is paused.
    d.ownership.steal(0);
    let mut second = msg();
    second.event_id = "e2".into();
    let err = d.process(second, &meta(&[])).await.unwrap_err();
    assert!(matches!(err, ProcessError::Transient(_)), "{err}");
    assert_eq!(calls(&d), 1, "no call once the epoch moved on");
}

#[tokio::test]
async fn retryable_goes_to_the_ladder_with_headers_and_the_retry_is_sent() {
    let d = deliverer(vec![SendOutcome::Retryable {
        reason: "APNs 503".into(),
        retry_after: Some(Duration::from_secs(2)),
    }]);
    let incoming = meta(&[(headers::FIRST_FAILURE_AT, "111"), ("trace", "t")]);
    let out = d.process(msg(), &incoming).await.unwrap();
    let retry = &out[0];
    assert_eq!(retry.topic, "retry");
    assert_eq!(retry.key.as_deref(), Some("abcdef0123"));
    let h = |k: &str| {
        retry
            .headers
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .next_back()
    };
    assert_eq!(h(headers::ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(h(headers::FIRST_FAILURE_AT).as_deref(), Some("111"));
    assert_eq!(h(headers::RETRY_AFTER_MS).as_deref(), Some("2000"));
    assert_eq!(h("trace").as_deref(), Some("t"));
    assert_eq!(status_of(&out[1]).outcome, Outcome::RetryScheduled);
    assert_eq!(d.ledger.row(&key()).map(|r| r.state), Some(State::Retrying));
    let back = d
        .process(msg(), &meta(&[(headers::ATTEMPTS, "1")]))
        .await
        .unwrap();
    assert_eq!(status_of(&back[0]).outcome, Outcome::Sent);
    assert_eq!(status_of(&back[0]).attempt, 2);
    assert_eq!(calls(&d), 2);
}

#[tokio::test]
async fn permanent_fails_and_token_invalid_feeds_back() {
    let d = deliverer(vec![SendOutcome::Permanent {
        reason: "APNs 400: BadTopic for abcdef0123".into(),
    }]);
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    let ProcessError::Reject {
        class,
        reason,
        outputs,
        ..
    } = err
    else {
        panic!("not a dead letter");
    };
    assert_eq!(class, ErrorClass::Permanent);
    assert!(
        !reason.contains("abcdef0123"),
        "the token is masked: {reason}"
    );
    assert_eq!(status_of(&outputs[0]).outcome, Outcome::Failed);

    let d = deliverer(vec![SendOutcome::TokenInvalid {
        reason: "APNs 410: Unregistered".into(),
    }]);
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::TokenInvalid);
    let fb: &TokenFeedback = out[1].downcast().expect("feedback");
    assert_eq!(
        (fb.user_id.as_str(), out[1].key.as_deref()),
        ("u1", Some("u1"))
    );
}

#[tokio::test]
async fn a_call_whose_answer_never_came_is_in_doubt_and_not_retried() {
    let d = deliverer(vec![SendOutcome::InDoubt {
        reason: "timeout".into(),
    }]);
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::Reject {
                class: ErrorClass::InDoubt,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(d.ledger.row(&key()).map(|r| r.state), Some(State::InDoubt));
    let resend = deliverer_with(
        vec![SendOutcome::InDoubt {
            reason: "timeout".into(),
        }],
        0,
        InDoubtPolicy::Resend,
    );
    let out = resend.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(
        out[0].topic, "retry",
        "the resend policy goes up the ladder"
    );
}

#[tokio::test]
async fn a_replay_sends_only_what_never_arrived() {
    let d = deliverer(vec![]);
    d.process(msg(), &meta(&[])).await.unwrap();
    let out = d
        .process(msg(), &meta(&[(REPLAY_RUN, "r1")]))
        .await
        .unwrap();
    assert!(out.is_empty(), "sent already: nothing, not even a status");
    assert_eq!(calls(&d), 1);
    let failed = Row {
        state: State::Failed,
        ..d.ledger.row(&key()).unwrap()
    };
    d.ledger.write(&key(), failed).await.unwrap();
    let out = d
        .process(msg(), &meta(&[(REPLAY_RUN, "r1")]))
        .await
        .unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Sent);
    assert_eq!(calls(&d), 2, "a failed message is sent again by a replay");
}

#[tokio::test]
async fn credentials_refused_hold_the_record() {
    let d = deliverer(vec![SendOutcome::Unavailable {
        reason: "InvalidProviderToken".into(),
    }]);
    let err = d.process(msg(), &meta(&[])).await.unwrap_err();
    assert!(matches!(err, ProcessError::Transient(_)), "{err}");
    assert_eq!(d.ledger.row(&key()).map(|r| r.state), Some(State::Retrying));
    let out = d.process(msg(), &meta(&[])).await.unwrap();
    assert_eq!(
        status_of(&out[0]).outcome,
        Outcome::Sent,
        "sent once they work again"
    );
}

#[tokio::test]
async fn expired_messages_are_said_not_sent() {
    let d = deliverer(vec![]);
    let mut m = msg();
    m.expires_at = Some(1);
    let out = d.process(m, &meta(&[])).await.unwrap();
    assert_eq!(status_of(&out[0]).outcome, Outcome::Expired);
    assert_eq!(calls(&d), 0);
}
