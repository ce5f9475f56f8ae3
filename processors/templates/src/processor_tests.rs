use std::collections::BTreeMap;
use std::time::Duration;

use notify_runtime::records::{DeliveryChannel, Priority, Target, Template};
use notify_runtime::{Metrics, Processor, RecordMeta, StageProcessor};

use super::*;
use crate::source::MemoryTemplates;

fn template(channel: Channel, locale: &str, title: Option<&str>, body: &str) -> Template {
    Template {
        template_id: "invoice_due".into(),
        channel,
        locale: locale.into(),
        title: title.map(Into::into),
        body: body.into(),
        html_body: None,
        truncate: false,
    }
}

fn routed(channels: Vec<Channel>, targets: &[DeliveryChannel]) -> RoutedNotification {
    RoutedNotification {
        request: NotificationRequest {
            event_id: "e1".into(),
            user_id: "u1".into(),
            category: "billing".into(),
            template_id: "invoice_due".into(),
            data: BTreeMap::from([("amount".to_string(), "12.50".to_string())]),
            channels,
            priority: Priority::Normal,
            created_at: 1,
            expires_at: None,
            source: String::new(),
            email: None,
            phone: None,
        },
        locale: "pt-BR".into(),
        timezone: "UTC".into(),
        user: BTreeMap::new(),
        targets: targets
            .iter()
            .map(|c| Target {
                channel: *c,
                address: format!("{}-addr", c.as_str()),
            })
            .collect(),
        rendered: vec![],
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

fn processor(templates: Vec<Template>) -> StageProcessor<TemplatesProcessor<MemoryTemplates>> {
    StageProcessor(TemplatesProcessor {
        source: MemoryTemplates::new(templates),
        renderer: Renderer::new(),
        limits: Limits::default(),
        default_locale: "en".into(),
        output: "out".into(),
        status_topic: "status".into(),
        sync_timeout: Duration::from_secs(1),
        metrics: decision_metrics(&Metrics::new("test")),
    })
}

#[test]
fn wanted_channels_are_the_asked_ones_with_targets() {
    use DeliveryChannel::*;
    let all = routed(vec![], &[Apns, Fcm, Email]);
    assert_eq!(wanted_channels(&all), [Channel::Push, Channel::Email]);
    let sms_only = routed(vec![Channel::Sms, Channel::Email], &[Apns, Sms]);
    assert_eq!(wanted_channels(&sms_only), [Channel::Sms]);
}

#[tokio::test]
async fn renders_each_channel_with_locale_fallback() {
    let p = processor(vec![
        template(Channel::Push, "pt", Some("Fatura"), "Valor {{ amount }}"),
        template(Channel::Email, "en", Some("Invoice"), "Amount {{ amount }}"),
    ]);
    let out = p
        .process(
            routed(vec![], &[DeliveryChannel::Apns, DeliveryChannel::Email]),
            &meta(),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    let r = out[0].downcast::<RoutedNotification>().unwrap();
    assert_eq!(out[0].key.as_deref(), Some("u1"));
    assert_eq!(r.rendered.len(), 2);
    assert_eq!(r.rendered[0].body, "Valor 12.50");
    assert_eq!(r.rendered[1].title.as_deref(), Some("Invoice"));
}

#[tokio::test]
async fn a_failed_channel_is_dead_lettered_and_the_others_go_on() {
    let p = processor(vec![template(Channel::Push, "en", None, "{{ amount }}")]);
    let err = p
        .process(
            routed(vec![], &[DeliveryChannel::Fcm, DeliveryChannel::Sms]),
            &meta(),
        )
        .await
        .unwrap_err();
    let ProcessError::Reject {
        class,
        reason,
        outputs,
        stage,
    } = err
    else {
        panic!("not a reject");
    };
    assert_eq!(class, ErrorClass::Render);
    assert_eq!(stage, Some("templates"));
    assert!(
        reason.starts_with("SMS: no template invoice_due/SMS"),
        "{reason}"
    );
    let status = outputs
        .iter()
        .find_map(|o| o.downcast::<DeliveryStatus>())
        .unwrap();
    assert_eq!(status.outcome, Outcome::RenderFailed);
    assert_eq!(status.channel.as_deref(), Some("SMS"));
    let forwarded = outputs
        .iter()
        .find_map(|o| o.downcast::<RoutedNotification>())
        .unwrap();
    assert_eq!(forwarded.rendered.len(), 1);
    assert_eq!(forwarded.targets.len(), 1, "the SMS target does not go on");
}

#[tokio::test]
async fn expired_requests_and_requests_without_targets_are_said() {
    let p = processor(vec![]);
    let mut r = routed(vec![], &[DeliveryChannel::Sms]);
    r.request.expires_at = Some(1);
    let out = p.process(r, &meta()).await.unwrap();
    assert_eq!(
        out[0].downcast::<DeliveryStatus>().unwrap().outcome,
        Outcome::Expired
    );
    let out = p
        .process(routed(vec![Channel::Sms], &[]), &meta())
        .await
        .unwrap();
    assert_eq!(
        out[0].downcast::<DeliveryStatus>().unwrap().outcome,
        Outcome::Filtered
    );
}

/// A source whose updates become visible only when asked to catch up, like a table that
/// has not yet read the newest record of its topic.
struct Lagging {
    visible: MemoryTemplates,
    pending: std::sync::Mutex<Vec<Template>>,
    can_catch_up: bool,
}

impl TemplateSource for Lagging {
    fn get(&self, key: &str) -> Option<std::sync::Arc<Template>> {
        self.visible.get(key)
    }

    async fn caught_up(&self, _: std::time::Instant, _: Duration) -> bool {
        if !self.can_catch_up {
            return false;
        }
        for t in self.pending.lock().unwrap().drain(..) {
            self.visible.put(t);
        }
        true
    }
}

fn lagging(can_catch_up: bool) -> StageProcessor<TemplatesProcessor<Lagging>> {
    let old = template(Channel::Sms, "en", None, "old {{ amount }}");
    let new = template(Channel::Sms, "en", None, "new {{ amount }}");
    StageProcessor(TemplatesProcessor {
        source: Lagging {
            visible: MemoryTemplates::new([old]),
            pending: std::sync::Mutex::new(vec![new]),
            can_catch_up,
        },
        renderer: Renderer::new(),
        limits: Limits::default(),
        default_locale: "en".into(),
        output: "out".into(),
        status_topic: "status".into(),
        sync_timeout: Duration::from_secs(1),
        metrics: decision_metrics(&Metrics::new("test")),
    })
}

#[tokio::test]
async fn the_source_is_caught_up_before_each_record_is_rendered() {
    let p = lagging(true);
    let mut r = routed(vec![], &[DeliveryChannel::Sms]);
    r.locale = "en".into();
    let out = p.process(r, &meta()).await.unwrap();
    let rendered = out[0].downcast::<RoutedNotification>().unwrap();
    assert_eq!(rendered.rendered[0].body, "new 12.50");
}

#[tokio::test]
async fn a_source_that_cannot_catch_up_holds_the_record() {
    let p = lagging(false);
    let err = p
        .process(routed(vec![], &[DeliveryChannel::Sms]), &meta())
        .await
        .unwrap_err();
    assert!(matches!(err, ProcessError::Transient(_)), "{err}");
}
