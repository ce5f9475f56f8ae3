use std::collections::BTreeMap;

use notify_runtime::records::{DeliveryChannel, Rendered, Target};

use super::*;
use crate::rules::Rule;
use crate::store::MemoryStore;
use notify_runtime::{Processor, StageProcessor};

fn routed(event_id: &str, priority: Priority) -> RoutedNotification {
    RoutedNotification {
        request: NotificationRequest {
            event_id: event_id.into(),
            user_id: "u1".into(),
            category: "billing".into(),
            template_id: "t".into(),
            data: BTreeMap::new(),
            channels: vec![],
            priority,
            created_at: 1,
            expires_at: None,
            source: String::new(),
            email: None,
            phone: None,
        },
        locale: "en".into(),
        timezone: "UTC".into(),
        user: BTreeMap::new(),
        targets: vec![
            Target {
                channel: DeliveryChannel::Apns,
                address: "tok".into(),
            },
            Target {
                channel: DeliveryChannel::Email,
                address: "a@b.c".into(),
            },
        ],
        rendered: [Channel::Push, Channel::Email]
            .map(|channel| Rendered {
                channel,
                title: None,
                body: "b".into(),
                html_body: None,
            })
            .to_vec(),
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

#[tokio::test]
async fn over_limit_channels_are_removed_and_critical_passes() {
    let metrics = notify_runtime::Metrics::new("test");
    let p = StageProcessor(RateLimitProcessor {
        limiter: Limiter {
            store: MemoryStore::default(),
            rules: vec![Rule {
                channel: Some(Channel::Push),
                category: None,
                max: 1,
                window_secs: 60,
            }],
        },
        output: "out".into(),
        status_topic: "status".into(),
        metrics: metrics.clone(),
    });
    let first = p
        .process(routed("e1", Priority::Normal), &meta())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let second = p
        .process(routed("e2", Priority::Normal), &meta())
        .await
        .unwrap();
    let forwarded = second
        .iter()
        .find_map(|o| o.downcast::<RoutedNotification>())
        .unwrap();
    assert_eq!(forwarded.rendered.len(), 1);
    assert_eq!(forwarded.rendered[0].channel, Channel::Email);
    assert_eq!(forwarded.targets.len(), 1);
    let limited = second
        .iter()
        .find_map(|o| o.downcast::<DeliveryStatus>())
        .unwrap();
    assert_eq!(limited.outcome, Outcome::RateLimited);
    assert_eq!(limited.channel.as_deref(), Some("PUSH"));
    assert_eq!(
        limited.reason.as_deref(),
        Some("channel=PUSH max 1 per 60s")
    );
    for i in 0..3 {
        let out = p
            .process(routed(&format!("c{i}"), Priority::Critical), &meta())
            .await
            .unwrap();
        let fwd = out[0].downcast::<RoutedNotification>().unwrap();
        assert_eq!(fwd.rendered.len(), 2, "CRITICAL keeps every channel");
    }
    // The first record again (redelivery): still passes, counted once.
    let again = p
        .process(routed("e1", Priority::Normal), &meta())
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .filter_map(|o| o.downcast::<RoutedNotification>())
            .count(),
        1
    );
    assert_eq!(
        again
            .iter()
            .filter_map(|o| o.downcast::<DeliveryStatus>())
            .count(),
        0
    );
    let count = |c: &str, d: &str| {
        metrics
            .decisions
            .with_label_values(&[crate::NAME, d, c])
            .get()
    };
    assert_eq!(count("PUSH", "limited"), 1);
    assert_eq!(count("PUSH", "passed"), 2, "the first and its redelivery");
    assert_eq!(count("PUSH", "bypassed"), 3);
    assert_eq!(count("EMAIL", "passed"), 3);
}
