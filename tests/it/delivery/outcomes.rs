//! Provider outcomes: dead tokens (APNs 410, FCM UNREGISTERED) → TOKEN_INVALID + feedback,
//! 503 with Retry-After → retry ladder, 400 → FAILED + dead letter, expired → EXPIRED.

use std::time::Duration;

use notify_delivery::headers;
use notify_runtime::records::{ChannelMessage, DeliveryChannel, Outcome, TokenFeedback};
use notify_sandbox::{FaultSpec, Provider};

use super::{Mail, Stack, device_token, is, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_outcomes_map_to_status_feedback_retry_and_dead_letter() {
    let stack = Stack::new("deliver_outcomes", Mail::SendGrid).await;
    let id = stack.env.id.clone();
    let user = format!("user-{id}");
    let dead_ios = device_token(&id);
    let dead_android = format!("fcm-dead-{id}");
    let phone = "+4915100000001";
    let address = format!("bad-{}@example.com", id.to_ascii_lowercase());
    let sandbox = &stack.sandbox;
    sandbox.add_fault(FaultSpec::new(Provider::Apns).token(&dead_ios).status(410));
    sandbox.add_fault(
        FaultSpec::new(Provider::Fcm)
            .token(&dead_android)
            .status(404),
    );
    sandbox.add_fault(
        FaultSpec::new(Provider::Twilio)
            .token(phone)
            .status(503)
            .retry_after_secs(7),
    );
    sandbox.add_fault(
        FaultSpec::new(Provider::Sendgrid)
            .token(&address)
            .status(400),
    );
    let mut running = Vec::new();
    for channel in DeliveryChannel::ALL {
        running.push(stack.start(channel, stack.config.clone()).await);
    }
    let e = |n: &str| format!("{n}-{id}");
    stack
        .send(&message(
            &e("apns"),
            &user,
            DeliveryChannel::Apns,
            &dead_ios,
        ))
        .await;
    stack
        .send(&message(
            &e("fcm"),
            &user,
            DeliveryChannel::Fcm,
            &dead_android,
        ))
        .await;
    stack
        .send(&message(&e("sms"), &user, DeliveryChannel::Sms, phone))
        .await;
    stack
        .send(&message(
            &e("mail"),
            &user,
            DeliveryChannel::Email,
            &address,
        ))
        .await;
    let stale = ChannelMessage {
        expires_at: Some(notify_runtime::now_ms() - 1_000),
        ..message(&e("old"), &user, DeliveryChannel::Fcm, "fcm-fine")
    };
    stack.send(&stale).await;

    let expected = [
        is(&e("apns"), "APNS", Outcome::TokenInvalid),
        is(&e("fcm"), "FCM", Outcome::TokenInvalid),
        is(&e("sms"), "SMS", Outcome::RetryScheduled),
        is(&e("mail"), "EMAIL", Outcome::Failed),
        is(&e("old"), "FCM", Outcome::Expired),
    ];
    let statuses = stack
        .wait_statuses(expected.len(), |s| expected.iter().any(|p| p(s)))
        .await;
    for p in &expected {
        assert_eq!(statuses.iter().filter(|s| p(s)).count(), 1, "{statuses:#?}");
    }
    assert!(
        statuses.iter().all(|s| s.outcome != Outcome::Sent),
        "{statuses:#?}"
    );

    // Token feedback: one record per dead device, keyed by the user.
    let feedback = stack
        .env
        .reader(&stack.feedback)
        .records::<TokenFeedback>(&stack.env.codec, 2, Duration::from_secs(30))
        .await;
    let mut tokens: Vec<(String, DeliveryChannel)> = feedback
        .iter()
        .map(|r| {
            assert_eq!(r.key.as_deref(), Some(user.as_str()));
            (r.value.token.clone(), r.value.channel)
        })
        .collect();
    tokens.sort();
    let mut want = vec![
        (dead_ios.clone(), DeliveryChannel::Apns),
        (dead_android.clone(), DeliveryChannel::Fcm),
    ];
    want.sort();
    assert_eq!(tokens, want);

    // Retry ladder: only the SMS, with the headers the retry processor reads.
    let retries = stack
        .env
        .reader(&stack.retry)
        .records::<ChannelMessage>(&stack.env.codec, 2, Duration::from_secs(5))
        .await;
    assert_eq!(retries.len(), 1, "only the 503 goes to the ladder");
    let r = &retries[0];
    assert_eq!(r.value.event_id, e("sms"));
    assert_eq!(r.key.as_deref(), Some(phone));
    assert_eq!(
        r.headers.get(headers::ATTEMPTS).map(String::as_str),
        Some("1")
    );
    assert_eq!(r.headers.get(headers::ORIGIN_TOPIC), Some(&stack.sms));
    assert_eq!(
        r.headers.get(headers::RETRY_AFTER_MS).map(String::as_str),
        Some("7000")
    );
    assert!(
        r.headers
            .get(headers::ERROR_REASON)
            .is_some_and(|v| v.contains("503"))
    );
    assert!(r.headers.contains_key(headers::FIRST_FAILURE_AT));

    // Dead letter: the e-mail the provider refused, class `permanent`.
    let dead = stack.env.reader(&stack.dlq).raw(2, Duration::from_secs(5));
    assert_eq!(dead.len(), 1);
    let h = notify_tests::headers_of(&dead[0]);
    assert_eq!(
        h.get("notify.error.class").map(String::as_str),
        Some("permanent")
    );
    assert_eq!(
        h.get("notify.error.stage").map(String::as_str),
        Some("deliver-email")
    );

    // Nothing was accepted, and the dead tokens are not tried again on a replay.
    assert!(sandbox.messages(None).is_empty());
    let calls = sandbox.stats().requests.get(&Provider::Apns).copied();
    stack
        .send(&message(
            &e("apns"),
            &user,
            DeliveryChannel::Apns,
            &dead_ios,
        ))
        .await;
    let again = |s: &notify_runtime::records::DeliveryStatus| {
        is(&e("apns"), "APNS", Outcome::TokenInvalid)(s)
            && s.reason.as_deref() == Some("already token_invalid")
    };
    stack.wait_statuses(1, again).await;
    assert_eq!(
        sandbox.stats().requests.get(&Provider::Apns).copied(),
        calls
    );
    for r in running {
        r.stop().await;
    }
}
