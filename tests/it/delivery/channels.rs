//! One request's four channel messages reach each provider exactly once, with the right
//! headers, auth and content; replaying them sends nothing again.

use std::time::Duration;

use notify_runtime::records::{DeliveryChannel, Outcome};
use notify_sandbox::Provider;
use notify_tests::eventually;

use super::{Mail, Stack, device_token, mails_to, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_channel_delivers_exactly_once_and_replays_send_nothing() {
    let stack = Stack::new("deliver_all", Mail::Smtp).await;
    let id = stack.env.id.clone();
    let event = format!("evt-{id}");
    let user = format!("user-{id}");
    let ios = device_token(&id);
    let android = format!("fcm-{id}");
    let phone = "+4915112345678".to_string();
    let address = format!("{}@example.com", id.to_ascii_lowercase());
    let messages = [
        message(&event, &user, DeliveryChannel::Apns, &ios),
        message(&event, &user, DeliveryChannel::Fcm, &android),
        message(&event, &user, DeliveryChannel::Sms, &phone),
        message(&event, &user, DeliveryChannel::Email, &address),
    ];
    let mut running = Vec::new();
    for channel in DeliveryChannel::ALL {
        running.push(stack.start(channel, stack.config.clone()).await);
    }
    for m in &messages {
        stack.send(m).await;
    }
    let sent = |s: &notify_runtime::records::DeliveryStatus| {
        s.event_id == event && s.outcome == Outcome::Sent
    };
    let statuses = stack.wait_statuses(4, sent).await;
    let mut channels: Vec<&str> = statuses
        .iter()
        .filter(|s| sent(s))
        .filter_map(|s| s.channel.as_deref())
        .collect();
    channels.sort();
    assert_eq!(channels, ["APNS", "EMAIL", "FCM", "SMS"], "{statuses:#?}");
    for s in statuses.iter().filter(|s| sent(s)) {
        assert_eq!(s.user_id, user);
        assert_eq!(
            s.stage,
            format!("deliver-{}", s.channel.as_deref().unwrap().to_lowercase())
        );
        let masked = s.recipient.as_deref().unwrap_or("");
        assert!(masked.contains("***"), "recipient not masked: {masked}");
    }

    // APNs: JWT accepted (it is recorded), the headers Apple reads, the alert.
    let apns = stack.sandbox.messages(Some(Provider::Apns));
    assert_eq!(apns.len(), 1, "{apns:#?}");
    let h = &apns[0].headers;
    assert_eq!(apns[0].recipient, ios);
    assert_eq!(
        h.get("apns-topic").map(String::as_str),
        Some("com.example.notify")
    );
    assert_eq!(h.get("apns-push-type").map(String::as_str), Some("alert"));
    assert_eq!(h.get("apns-priority").map(String::as_str), Some("10"));
    assert_eq!(
        h.get("apns-collapse-id").map(String::as_str),
        Some("parcel")
    );
    let apns_id = notify_providers::apns_id(&event, &ios).to_string();
    assert_eq!(h.get("apns-id"), Some(&apns_id));
    assert_eq!(
        apns[0].body["aps"]["alert"]["title"],
        format!("Parcel {event}")
    );
    assert_eq!(apns[0].body["aps"]["alert"]["body"], messages[0].body);
    // FCM: OAuth2 token from the service account, message for the registration token.
    let fcm = stack.sandbox.messages(Some(Provider::Fcm));
    assert_eq!(fcm.len(), 1, "{fcm:#?}");
    assert_eq!(fcm[0].recipient, android);
    assert_eq!(
        fcm[0].body["message"]["notification"]["body"],
        messages[1].body
    );
    assert!(stack.sandbox.stats().fcm_token_requests >= 1);
    // Twilio: basic auth accepted, form fields.
    let sms = stack.sandbox.messages(Some(Provider::Twilio));
    assert_eq!(sms.len(), 1, "{sms:#?}");
    assert_eq!(sms[0].body["To"], phone);
    assert_eq!(sms[0].body["From"], "+15005550006");
    assert_eq!(sms[0].body["Body"], messages[2].body);
    // E-mail: one mail in the real SMTP server's Maildir, multipart with both bodies.
    let mails = eventually(Duration::from_secs(10), async || {
        let m = mails_to(&address);
        (!m.is_empty()).then_some(m)
    })
    .await
    .expect("the mail is in the Maildir");
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains(&format!("Subject: Parcel {event}")), "{mail}");
    assert!(
        mail.contains("From: \"Notify Test\" <notify@example.com>")
            || mail.contains("From: Notify Test <notify@example.com>"),
        "{mail}"
    );
    assert!(mail.contains(&messages[3].body), "{mail}");
    assert!(mail.contains("text/html"), "{mail}");

    // Replay all four: each is answered from the ledger, no provider sees it again.
    for m in &messages {
        stack.send(m).await;
    }
    let again = |s: &notify_runtime::records::DeliveryStatus| {
        sent(s) && s.reason.as_deref() == Some("already sent")
    };
    stack.wait_statuses(4, again).await;
    for p in [Provider::Apns, Provider::Fcm, Provider::Twilio] {
        assert_eq!(
            stack.sandbox.messages(Some(p)).len(),
            1,
            "{p:?} got a second message"
        );
    }
    assert_eq!(mails_to(&address).len(), 1, "a second mail arrived");

    let metrics = running[0].running.metrics.render();
    assert_eq!(
        notify_tests::metric(
            &metrics,
            "notify_provider_requests_total",
            &[("channel", "APNS"), ("outcome", "sent")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        notify_tests::metric(
            &metrics,
            "notify_provider_latency_seconds_count",
            &[("channel", "APNS")]
        ),
        Some(1.0),
        "{metrics}"
    );
    for r in running {
        r.stop().await;
    }
}
