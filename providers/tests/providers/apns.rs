use std::time::Duration;

use notify_providers::{SendOutcome, apns_id};
use notify_runtime::records::{DeliveryChannel, Priority};
use notify_sandbox::{FaultSpec, Provider};
use serde_json::{Value, json};

use crate::common::{
    DEVICE, TOPIC, apns_client, assert_retryable_after, creds, message, other_creds, sandbox,
};

#[tokio::test]
async fn sends_over_h2_with_headers_and_jwt_checked() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_secs(5));
    let mut msg = message(DeliveryChannel::Apns, DEVICE);
    msg.expires_at = Some(1_900_000_000_000);
    msg.data.insert("collapse_id".into(), "order-o-42".into());
    let outcome = client.send(&msg).await;
    let expected_id = apns_id(&msg.event_id, DEVICE).to_string();
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            provider_id: expected_id.clone()
        }
    );

    let mut low = message(DeliveryChannel::Apns, DEVICE);
    low.priority = Priority::Low;
    low.title = None;
    assert!(client.send(&low).await.is_sent());

    // Read the record the way a test of the whole chain would: over HTTP.
    let listed: Vec<Value> =
        reqwest::get(format!("{}/sandbox/messages?provider=apns", sb.base_url()))
            .await
            .expect("listing")
            .json()
            .await
            .expect("json");
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let first = &listed[0];
    assert_eq!(first["recipient"], DEVICE);
    let h = &first["headers"];
    assert_eq!(h["http-version"], "HTTP/2.0");
    assert_eq!(h["apns-topic"], TOPIC);
    assert_eq!(h["apns-push-type"], "alert");
    assert_eq!(h["apns-priority"], "10");
    assert_eq!(h["apns-expiration"], "1900000000");
    assert_eq!(h["apns-collapse-id"], "order-o-42");
    assert_eq!(h["apns-id"], json!(expected_id));
    let body = &first["body"];
    assert_eq!(body["aps"]["alert"]["title"], "Your parcel shipped");
    assert_eq!(body["aps"]["alert"]["body"], "It arrives on Friday.");
    assert_eq!(body["order"], "o-42");
    assert!(body.get("collapse_id").is_none());
    let second = &listed[1];
    assert_eq!(second["headers"]["apns-priority"], "5");
    assert!(second["headers"].get("apns-expiration").is_none());
    assert!(second["body"]["aps"]["alert"].get("title").is_none());
}

#[tokio::test]
async fn resend_carries_the_same_apns_id() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_secs(5));
    let msg = message(DeliveryChannel::Apns, DEVICE);
    assert!(client.send(&msg).await.is_sent());
    assert!(client.send(&msg).await.is_sent());
    let ids: Vec<String> = sb
        .messages(Some(Provider::Apns))
        .iter()
        .map(|m| m.headers["apns-id"].clone())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test]
async fn jwt_signed_by_another_key_is_refused() {
    let sb = sandbox().await;
    let client = apns_client(&sb, other_creds(), Duration::from_secs(5));
    let outcome = client.send(&message(DeliveryChannel::Apns, DEVICE)).await;
    // Our own credentials refused: nothing wrong with the message, so it is held
    // (Unavailable), never failed for good.
    match outcome {
        SendOutcome::Unavailable { reason } => {
            assert!(
                reason.contains("403") && reason.contains("InvalidProviderToken"),
                "{reason}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(sb.messages(None).is_empty());
}

#[tokio::test]
async fn invalid_tokens_are_told_apart() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_secs(5));
    let gone = "ff".repeat(32);
    sb.add_fault(FaultSpec::new(Provider::Apns).token(&gone).status(410));
    let outcome = client.send(&message(DeliveryChannel::Apns, &gone)).await;
    assert!(
        matches!(&outcome, SendOutcome::TokenInvalid { reason } if reason.contains("Unregistered")),
        "{outcome:?}"
    );
    // The fault is per token: another device still gets through.
    assert!(
        client
            .send(&message(DeliveryChannel::Apns, DEVICE))
            .await
            .is_sent()
    );
    // A token that is not hex is refused by the sandbox's own check, as Apple would.
    let outcome = client.send(&message(DeliveryChannel::Apns, "abc123")).await;
    assert!(
        matches!(&outcome, SendOutcome::TokenInvalid { reason } if reason.contains("BadDeviceToken")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn status_faults_are_classified() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_secs(5));
    let msg = message(DeliveryChannel::Apns, DEVICE);

    sb.add_fault(FaultSpec::new(Provider::Apns).status(503).times(1));
    let outcome = client.send(&msg).await;
    assert!(
        matches!(
            outcome,
            SendOutcome::Retryable {
                retry_after: None,
                ..
            }
        ),
        "{outcome:?}"
    );

    sb.add_fault(
        FaultSpec::new(Provider::Apns)
            .status(429)
            .retry_after_secs(120)
            .times(1),
    );
    assert_retryable_after(&client.send(&msg).await, 120);

    let bad_topic = json!({ "reason": "BadTopic" });
    sb.add_fault(
        FaultSpec::new(Provider::Apns)
            .status(400)
            .body(bad_topic)
            .times(1),
    );
    let outcome = client.send(&msg).await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent { reason } if reason.contains("BadTopic")),
        "{outcome:?}"
    );

    // Faults used up: the next send is accepted and is the only one recorded.
    assert!(client.send(&msg).await.is_sent());
    assert_eq!(sb.messages(Some(Provider::Apns)).len(), 1);
    assert_eq!(sb.stats().requests.get(&Provider::Apns), Some(&4));
}

#[tokio::test]
async fn slow_provider_times_out_in_doubt() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_millis(300));
    sb.add_fault(FaultSpec::new(Provider::Apns).latency_ms(2_000).times(1));
    let outcome = client.send(&message(DeliveryChannel::Apns, DEVICE)).await;
    // The request went out: the provider may have it (the channel's in-doubt policy decides).
    assert!(
        matches!(&outcome, SendOutcome::InDoubt { reason } if reason.contains("timeout")),
        "{outcome:?}"
    );
    // The same pooled client recovers once the provider is fast again.
    assert!(
        client
            .send(&message(DeliveryChannel::Apns, DEVICE))
            .await
            .is_sent()
    );
}

#[tokio::test]
async fn dropped_connection_is_in_doubt() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_secs(5));
    sb.add_fault(FaultSpec::new(Provider::Apns).drop_connection().times(1));
    let outcome = client.send(&message(DeliveryChannel::Apns, DEVICE)).await;
    // Cut after the request was written: the client cannot know whether it arrived.
    assert!(
        matches!(outcome, SendOutcome::InDoubt { .. }),
        "{outcome:?}"
    );
    assert!(sb.messages(None).is_empty());
    assert!(
        client
            .send(&message(DeliveryChannel::Apns, DEVICE))
            .await
            .is_sent()
    );
}

/// A wrong apns-topic (or endpoint) makes Apple reject every token: after
/// TOKEN_BREAKER_AT such rejections in a row the client holds messages instead of declaring
/// more tokens dead; one accepted message resets the count.
#[tokio::test]
async fn every_token_rejected_for_its_topic_is_a_configuration_error_not_dead_tokens() {
    let sb = sandbox().await;
    let client = apns_client(&sb, creds(), Duration::from_secs(5));
    sb.add_fault(
        FaultSpec::new(Provider::Apns)
            .status(400)
            .body(json!({"reason": "DeviceTokenNotForTopic"})),
    );
    let breaker = notify_providers::TOKEN_BREAKER_AT as usize;
    let mut invalid = 0;
    let mut held = 0;
    for i in 0..breaker + 5 {
        let token = format!("{:064x}", i + 1);
        match client.send(&message(DeliveryChannel::Apns, &token)).await {
            SendOutcome::TokenInvalid { .. } => invalid += 1,
            SendOutcome::Unavailable { reason } => {
                assert!(reason.contains("apns-topic"), "{reason}");
                held += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        invalid,
        breaker - 1,
        "tokens declared dead before the breaker"
    );
    assert_eq!(held, 6);
    sb.clear_faults();
    assert!(
        client
            .send(&message(DeliveryChannel::Apns, DEVICE))
            .await
            .is_sent()
    );
    sb.add_fault(
        FaultSpec::new(Provider::Apns)
            .status(400)
            .body(json!({"reason": "BadDeviceToken"}))
            .times(1),
    );
    assert!(matches!(
        client.send(&message(DeliveryChannel::Apns, DEVICE)).await,
        SendOutcome::TokenInvalid { .. }
    ));
}
