use std::time::Duration;

use notify_providers::{
    SendGridClient, SendGridConfig, SendOutcome, TwilioClient, TwilioConfig, TwilioSender,
};
use notify_runtime::records::DeliveryChannel;
use notify_sandbox::{FaultSpec, Provider, SandboxHandle};

use crate::common::{assert_retryable_after, creds, message, sandbox};

const PHONE: &str = "+4915112345678";

fn twilio(sb: &SandboxHandle, auth_token: &str, sender: TwilioSender) -> TwilioClient {
    TwilioClient::new(TwilioConfig {
        base_url: sb.base_url(),
        account_sid: creds().twilio.account_sid.clone(),
        auth_token: auth_token.into(),
        sender,
        timeout: Duration::from_secs(5),
    })
    .expect("Twilio client")
}

fn sendgrid(sb: &SandboxHandle, api_key: &str, timeout: Duration) -> SendGridClient {
    SendGridClient::new(SendGridConfig {
        base_url: sb.base_url(),
        api_key: api_key.into(),
        from_email: "notify@example.com".into(),
        from_name: Some("Notify".into()),
        timeout,
    })
    .expect("SendGrid client")
}

#[tokio::test]
async fn twilio_sends_with_basic_auth_from_number_or_service() {
    let sb = sandbox().await;
    let token = &creds().twilio.auth_token;
    let from = twilio(&sb, token, TwilioSender::From("+15005550006".into()));
    let outcome = from.send(&message(DeliveryChannel::Sms, PHONE)).await;
    let sid = match outcome {
        SendOutcome::Sent { provider_id } => provider_id,
        other => panic!("expected Sent, got {other:?}"),
    };
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    let service = twilio(&sb, token, TwilioSender::MessagingService("MG0123".into()));
    assert!(
        service
            .send(&message(DeliveryChannel::Sms, PHONE))
            .await
            .is_sent()
    );

    let recorded = sb.messages(Some(Provider::Twilio));
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].provider_id, sid);
    assert_eq!(recorded[0].body["To"], PHONE);
    assert_eq!(recorded[0].body["From"], "+15005550006");
    assert_eq!(recorded[0].body["Body"], "It arrives on Friday.");
    assert_eq!(recorded[1].body["MessagingServiceSid"], "MG0123");
    assert!(recorded[1].body.get("From").is_none());
}

#[tokio::test]
async fn twilio_errors_are_classified() {
    let sb = sandbox().await;
    let sender = TwilioSender::From("+15005550006".into());
    let wrong = twilio(&sb, "not-the-token", sender.clone());
    let outcome = wrong.send(&message(DeliveryChannel::Sms, PHONE)).await;
    assert!(
        matches!(&outcome, SendOutcome::Unavailable { reason } if reason.contains("20003")),
        "{outcome:?}"
    );
    let client = twilio(&sb, &creds().twilio.auth_token, sender);
    let outcome = client.send(&message(DeliveryChannel::Sms, "12345")).await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent { reason } if reason.contains("21211")),
        "{outcome:?}"
    );
    sb.add_fault(
        FaultSpec::new(Provider::Twilio)
            .status(429)
            .retry_after_secs(120)
            .times(1),
    );
    assert_retryable_after(
        &client.send(&message(DeliveryChannel::Sms, PHONE)).await,
        120,
    );
    assert!(sb.messages(None).is_empty());
}

#[tokio::test]
async fn sendgrid_sends_plain_and_html() {
    let sb = sandbox().await;
    let client = sendgrid(&sb, &creds().sendgrid.api_key, Duration::from_secs(5));
    let msg = message(DeliveryChannel::Email, "alice@example.com");
    let outcome = client.send(&msg).await;
    let recorded = sb.messages(Some(Provider::Sendgrid));
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            provider_id: recorded[0].provider_id.clone()
        }
    );
    let mail = &recorded[0].body;
    assert_eq!(
        mail["personalizations"][0]["to"][0]["email"],
        "alice@example.com"
    );
    assert_eq!(mail["from"]["email"], "notify@example.com");
    assert_eq!(mail["subject"], "Your parcel shipped");
    assert_eq!(mail["content"][0]["type"], "text/plain");
    assert_eq!(mail["content"][1]["type"], "text/html");
    assert_eq!(
        mail["content"][1]["value"],
        "<p>It arrives on <b>Friday</b>.</p>"
    );
    assert_eq!(mail["custom_args"]["event_id"], msg.event_id.as_str());
}

#[tokio::test]
async fn sendgrid_errors_are_classified() {
    let sb = sandbox().await;
    let wrong = sendgrid(&sb, "SG.wrong", Duration::from_secs(5));
    let msg = message(DeliveryChannel::Email, "alice@example.com");
    let outcome = wrong.send(&msg).await;
    assert!(
        matches!(&outcome, SendOutcome::Unavailable { reason } if reason.contains("401")),
        "{outcome:?}"
    );
    let client = sendgrid(&sb, &creds().sendgrid.api_key, Duration::from_millis(300));
    sb.add_fault(FaultSpec::new(Provider::Sendgrid).status(503).times(1));
    assert!(matches!(
        client.send(&msg).await,
        SendOutcome::Retryable { .. }
    ));
    sb.add_fault(
        FaultSpec::new(Provider::Sendgrid)
            .latency_ms(2_000)
            .times(1),
    );
    // The request went out and no answer came: it may have been sent, so in doubt, not retried.
    let outcome = client.send(&msg).await;
    assert!(
        matches!(&outcome, SendOutcome::InDoubt { reason } if reason.contains("timeout")),
        "{outcome:?}"
    );
}
