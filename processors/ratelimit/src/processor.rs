//! The rate-limiting stage: removes the channels over their limit (and their targets) and says
//! RATE_LIMITED for each; CRITICAL passes untouched and is not counted.

use std::collections::BTreeSet;

use notify_runtime::records::{
    Channel, DeliveryStatus, NotificationRequest, Outcome, Priority, RoutedNotification,
};
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};

use crate::NAME;
use crate::limiter::{Limiter, Verdict};
use crate::store::RateStore;

pub struct RateLimitProcessor<S> {
    pub limiter: Limiter<S>,
    pub output: String,
    pub status_topic: String,
}

fn status(
    request: &NotificationRequest,
    channel: Option<Channel>,
    outcome: Outcome,
    reason: String,
) -> DeliveryStatus {
    DeliveryStatus {
        event_id: request.event_id.clone(),
        user_id: request.user_id.clone(),
        channel: channel.map(|c| c.as_str().to_string()),
        recipient: None,
        outcome,
        reason: Some(reason),
        attempt: 0,
        stage: NAME.into(),
        at: now_ms(),
    }
}

impl<S: RateStore> Processor for RateLimitProcessor<S> {
    type Input = RoutedNotification;

    async fn process(
        &self,
        mut routed: RoutedNotification,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        let now = now_ms();
        let key = meta
            .key
            .clone()
            .unwrap_or_else(|| routed.request.user_id.clone());
        if routed.request.is_expired(now) {
            let s = status(
                &routed.request,
                None,
                Outcome::Expired,
                "expired before rate limiting".into(),
            );
            return Ok(vec![Output::status(&self.status_topic, s)]);
        }
        if routed.request.priority == Priority::Critical {
            return Ok(vec![Output::record(&self.output, key, routed)]);
        }
        let mut outputs = Vec::new();
        let mut limited = BTreeSet::new();
        let channels: BTreeSet<Channel> = routed.rendered.iter().map(|r| r.channel).collect();
        if channels.is_empty() {
            let s = status(
                &routed.request,
                None,
                Outcome::Filtered,
                "nothing rendered to send".into(),
            );
            return Ok(vec![Output::status(&self.status_topic, s)]);
        }
        for channel in channels {
            let request = &routed.request;
            let verdict = self
                .limiter
                .check(
                    &request.user_id,
                    &request.category,
                    channel,
                    &request.event_id,
                    now,
                )
                .await
                .map_err(ProcessError::transient)?;
            if let Verdict::Limited(rule) = verdict {
                limited.insert(channel);
                let s = status(
                    request,
                    Some(channel),
                    Outcome::RateLimited,
                    rule.describe(),
                );
                outputs.push(Output::status(&self.status_topic, s));
            }
        }
        routed.rendered.retain(|r| !limited.contains(&r.channel));
        routed
            .targets
            .retain(|t| !limited.contains(&t.channel.requested_as()));
        if !routed.rendered.is_empty() {
            outputs.push(Output::record(&self.output, key, routed));
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use notify_runtime::records::{DeliveryChannel, Rendered, Target};

    use super::*;
    use crate::rules::Rule;
    use crate::store::MemoryStore;

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
        }
    }

    #[tokio::test]
    async fn over_limit_channels_are_removed_and_critical_passes() {
        let p = RateLimitProcessor {
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
        };
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
    }
}
