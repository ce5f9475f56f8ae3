use std::collections::BTreeMap;

use notify_runtime::records::{
    Channel, ChannelMessage, DeliveryChannel, DeliveryStatus, NotificationRequest, Outcome,
    Priority, Rendered, RoutedNotification, Target,
};
use notify_runtime::{Metrics, Processor, RecordMeta, StageProcessor};

use super::*;

fn routed(targets: &[(DeliveryChannel, &str)]) -> RoutedNotification {
    let rendered = |channel, html: Option<&str>| Rendered {
        channel,
        title: Some("Title".into()),
        body: "Body".into(),
        html_body: html.map(Into::into),
    };
    RoutedNotification {
        request: NotificationRequest {
            event_id: "e1".into(),
            user_id: "u1".into(),
            category: "security".into(),
            template_id: "new_login".into(),
            data: BTreeMap::from([("device".to_string(), "Firefox".to_string())]),
            channels: vec![],
            priority: Priority::High,
            created_at: 1_700_000_000_000,
            expires_at: None,
            source: String::new(),
            email: None,
            phone: None,
        },
        locale: "en".into(),
        timezone: "UTC".into(),
        user: BTreeMap::new(),
        targets: targets
            .iter()
            .map(|(channel, address)| Target {
                channel: *channel,
                address: address.to_string(),
            })
            .collect(),
        rendered: vec![
            rendered(Channel::Push, None),
            rendered(Channel::Sms, None),
            rendered(Channel::Email, Some("<p>Body</p>")),
        ],
    }
}

fn meta() -> RecordMeta {
    RecordMeta {
        topic: "in".into(),
        partition: 0,
        offset: 0,
        key: Some("u1".into()),
        timestamp_ms: None,
        headers: vec![],
        ..RecordMeta::default()
    }
}

fn stage(intermediate_status: bool) -> FanoutProcessor {
    FanoutProcessor {
        topics: FanoutSettings::default(),
        status_topic: "status".into(),
        intermediate_status,
        exactly_once: false,
        metrics: decision_metrics(&Metrics::new("test")),
    }
}

fn processor() -> StageProcessor<FanoutProcessor> {
    StageProcessor(stage(false))
}

const USER: [(DeliveryChannel, &str); 5] = [
    (DeliveryChannel::Apns, "ios-token-aaaa1111"),
    (DeliveryChannel::Apns, "ios-token-bbbb2222"),
    (DeliveryChannel::Fcm, "fcm-token-cccc3333"),
    (DeliveryChannel::Sms, "+4915112345678"),
    (DeliveryChannel::Email, "alice@example.com"),
];

#[tokio::test]
async fn one_message_per_device_and_contact_point() {
    let quiet = processor().process(routed(&USER), &meta()).await.unwrap();
    assert!(
        quiet
            .iter()
            .all(|o| o.downcast::<DeliveryStatus>().is_none()),
        "no status per message unless intermediate statuses are asked for"
    );
    let outputs = StageProcessor(stage(true))
        .process(routed(&USER), &meta())
        .await
        .unwrap();
    let messages: Vec<(&str, &str, &ChannelMessage)> = outputs
        .iter()
        .filter_map(|o| {
            o.downcast::<ChannelMessage>()
                .map(|m| (o.topic.as_str(), o.key.as_deref().unwrap_or(""), m))
        })
        .collect();
    let count = |topic: &str| messages.iter().filter(|(t, _, _)| *t == topic).count();
    assert_eq!(count("notify.channel.apns.v1"), 2);
    assert_eq!(count("notify.channel.fcm.v1"), 1);
    assert_eq!(count("notify.channel.sms.v1"), 1);
    assert_eq!(count("notify.channel.email.v1"), 1);
    for (_, key, m) in &messages {
        assert_eq!(*key, m.recipient, "keyed by the contact point");
        assert_eq!(m.data["device"], "Firefox");
    }
    let email = messages
        .iter()
        .find(|(_, _, m)| m.channel == DeliveryChannel::Email)
        .unwrap();
    assert_eq!(email.2.html_body.as_deref(), Some("<p>Body</p>"));
    let statuses: Vec<&DeliveryStatus> = outputs
        .iter()
        .filter_map(|o| o.downcast::<DeliveryStatus>())
        .collect();
    assert_eq!(statuses.len(), 5);
    assert!(statuses.iter().all(|s| s.outcome == Outcome::Accepted));
    let recipients: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s.recipient.as_deref())
        .collect();
    assert!(recipients.contains(&"a***@example.com"));
    assert!(recipients.contains(&"***5678"));
    assert!(
        !recipients.iter().any(|r| r.contains("ios-token")),
        "{recipients:?}"
    );
}

#[tokio::test]
async fn channels_without_rendered_content_and_duplicate_targets_are_skipped() {
    let mut r = routed(&[
        (DeliveryChannel::Apns, "tok1"),
        (DeliveryChannel::Apns, "tok1"),
        (DeliveryChannel::Sms, "+4915112345678"),
    ]);
    r.rendered.retain(|x| x.channel != Channel::Sms);
    let messages = stage(false).messages(&r);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipient, "tok1");
}

#[tokio::test]
async fn expired_and_empty_are_said_not_dropped() {
    let mut r = routed(&USER);
    r.request.expires_at = Some(1);
    let out = processor().process(r, &meta()).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].downcast::<DeliveryStatus>().unwrap().outcome,
        Outcome::Expired
    );
    let out = processor().process(routed(&[]), &meta()).await.unwrap();
    assert_eq!(
        out[0].downcast::<DeliveryStatus>().unwrap().outcome,
        Outcome::Filtered
    );
}
