use notify_providers::SendOutcome;
use notify_runtime::records::{DeliveryChannel, Priority};
use notify_sandbox::{FaultSpec, Provider};

use crate::common::{assert_retryable_after, creds, fcm_client, message, other_creds, sandbox};

const REG_TOKEN: &str = "fcm-registration-token-1";

#[tokio::test]
async fn sends_with_one_cached_access_token() {
    let sb = sandbox().await;
    let client = fcm_client(&sb, creds());
    let mut msg = message(DeliveryChannel::Fcm, REG_TOKEN);
    msg.priority = Priority::High;
    msg.expires_at = Some(chrono_free_now_ms() + 600_000);
    for _ in 0..3 {
        let outcome = client.send(&msg).await;
        assert!(
            matches!(&outcome, SendOutcome::Sent { provider_id } if provider_id.starts_with("projects/notify-sandbox/messages/")),
            "{outcome:?}"
        );
    }
    let stats = sb.stats();
    assert_eq!(
        stats.fcm_token_requests, 1,
        "token must be cached: {stats:?}"
    );
    assert_eq!(stats.requests.get(&Provider::Fcm), Some(&3));

    let recorded = sb.messages(Some(Provider::Fcm));
    assert_eq!(recorded.len(), 3);
    let m = &recorded[0].body["message"];
    assert_eq!(m["token"], REG_TOKEN);
    assert_eq!(m["notification"]["title"], "Your parcel shipped");
    assert_eq!(m["notification"]["body"], "It arrives on Friday.");
    assert_eq!(m["data"]["order"], "o-42");
    assert_eq!(m["android"]["priority"], "HIGH");
    let ttl = m["android"]["ttl"].as_str().expect("ttl set");
    let secs: u64 = ttl.trim_end_matches('s').parse().expect("ttl seconds");
    assert!((590..=600).contains(&secs), "{ttl}");
}

#[tokio::test]
async fn assertion_signed_by_another_key_is_unavailable() {
    let sb = sandbox().await;
    let client = fcm_client(&sb, other_creds());
    let outcome = client.send(&message(DeliveryChannel::Fcm, REG_TOKEN)).await;
    // Our own credentials refused is a configuration fault: the channel waits, the message is
    // not failed for good.
    assert!(
        matches!(&outcome, SendOutcome::Unavailable { reason } if reason.contains("Invalid JWT Signature")),
        "{outcome:?}"
    );
    assert_eq!(sb.stats().fcm_token_requests, 1);
    assert!(sb.messages(None).is_empty());
}

#[tokio::test]
async fn unregistered_token_is_token_invalid() {
    let sb = sandbox().await;
    let client = fcm_client(&sb, creds());
    sb.add_fault(
        FaultSpec::new(Provider::Fcm)
            .token("stale-token")
            .status(404),
    );
    let outcome = client
        .send(&message(DeliveryChannel::Fcm, "stale-token"))
        .await;
    assert!(
        matches!(&outcome, SendOutcome::TokenInvalid { reason } if reason.contains("UNREGISTERED")),
        "{outcome:?}"
    );
    // An empty token fails the sandbox's own validation on message.token.
    let outcome = client.send(&message(DeliveryChannel::Fcm, "")).await;
    assert!(
        matches!(outcome, SendOutcome::TokenInvalid { .. }),
        "{outcome:?}"
    );
    assert!(
        client
            .send(&message(DeliveryChannel::Fcm, REG_TOKEN))
            .await
            .is_sent()
    );
}

#[tokio::test]
async fn throttling_and_outages_are_retryable() {
    let sb = sandbox().await;
    let client = fcm_client(&sb, creds());
    let msg = message(DeliveryChannel::Fcm, REG_TOKEN);
    sb.add_fault(
        FaultSpec::new(Provider::Fcm)
            .status(429)
            .retry_after_secs(120)
            .times(1),
    );
    assert_retryable_after(&client.send(&msg).await, 120);
    sb.add_fault(FaultSpec::new(Provider::Fcm).status(503).times(1));
    let outcome = client.send(&msg).await;
    assert!(
        matches!(outcome, SendOutcome::Retryable { .. }),
        "{outcome:?}"
    );
    sb.add_fault(FaultSpec::new(Provider::Fcm).status(400).times(1));
    let outcome = client.send(&msg).await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );
    // Cut after the request went out: it may have been sent, so in doubt.
    sb.add_fault(FaultSpec::new(Provider::Fcm).drop_connection().times(1));
    let outcome = client.send(&msg).await;
    assert!(
        matches!(outcome, SendOutcome::InDoubt { .. }),
        "{outcome:?}"
    );
    assert!(client.send(&msg).await.is_sent());
}

fn chrono_free_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
