//! Fan-out stage: one message per channel and contact point.
//!
//! Consumes `notify.stage.limited.v1` and writes one `ChannelMessage` per target to
//! `notify.channel.{apns,fcm,sms,email}.v1`, keyed by the contact point so that a recipient's
//! messages stay in order on their channel. PUSH becomes one APNS or FCM message per device.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use notify_runtime::records::{
    ChannelMessage, DeliveryChannel, DeliveryStatus, NotificationRequest, Outcome,
    RoutedNotification, mask,
};
use notify_runtime::runner::RuntimeError;
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};
use prometheus::IntCounterVec;
use serde::Deserialize;

pub const NAME: &str = "fanout";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutSettings {
    pub input: String,
    pub apns_topic: String,
    pub fcm_topic: String,
    pub sms_topic: String,
    pub email_topic: String,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        let topic = |c: DeliveryChannel| format!("notify.channel.{}.v1", c.topic_part());
        FanoutSettings {
            input: "notify.stage.limited.v1".into(),
            apns_topic: topic(DeliveryChannel::Apns),
            fcm_topic: topic(DeliveryChannel::Fcm),
            sms_topic: topic(DeliveryChannel::Sms),
            email_topic: topic(DeliveryChannel::Email),
        }
    }
}

pub type Settings = FanoutSettings;

impl Settings {
    /// What start-up checks before it connects, every problem at once (`--check-config`).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let errors = notify_runtime::config::blank(&[
            ("input", self.input.as_str()),
            ("apns_topic", self.apns_topic.as_str()),
            ("fcm_topic", self.fcm_topic.as_str()),
            ("sms_topic", self.sms_topic.as_str()),
            ("email_topic", self.email_topic.as_str()),
        ]);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl FanoutSettings {
    pub fn topic(&self, channel: DeliveryChannel) -> &str {
        match channel {
            DeliveryChannel::Apns => &self.apns_topic,
            DeliveryChannel::Fcm => &self.fcm_topic,
            DeliveryChannel::Sms => &self.sms_topic,
            DeliveryChannel::Email => &self.email_topic,
        }
    }
}

pub struct FanoutProcessor {
    pub topics: FanoutSettings,
    pub status_topic: String,
    /// `notify_fanout_messages_total{channel}`, set once the runtime has started.
    pub messages: Arc<OnceLock<IntCounterVec>>,
}

fn status(
    request: &NotificationRequest,
    channel: Option<DeliveryChannel>,
    recipient: Option<&str>,
    outcome: Outcome,
    reason: &str,
) -> DeliveryStatus {
    DeliveryStatus {
        event_id: request.event_id.clone(),
        user_id: request.user_id.clone(),
        channel: channel.map(|c| c.as_str().to_string()),
        recipient: recipient.map(mask),
        outcome,
        reason: Some(reason.to_string()),
        attempt: 0,
        stage: NAME.into(),
        at: now_ms(),
    }
}

impl FanoutProcessor {
    /// The messages of one routed notification, one per distinct (channel, contact point)
    /// whose requested channel was rendered.
    pub fn messages(&self, routed: &RoutedNotification) -> Vec<ChannelMessage> {
        let request = &routed.request;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for target in &routed.targets {
            let Some(rendered) = routed
                .rendered
                .iter()
                .find(|r| r.channel == target.channel.requested_as())
            else {
                continue;
            };
            if target.address.trim().is_empty()
                || !seen.insert((target.channel, target.address.as_str()))
            {
                continue;
            }
            out.push(ChannelMessage {
                event_id: request.event_id.clone(),
                user_id: request.user_id.clone(),
                category: request.category.clone(),
                priority: request.priority,
                channel: target.channel,
                recipient: target.address.clone(),
                title: rendered.title.clone(),
                body: rendered.body.clone(),
                html_body: rendered.html_body.clone(),
                data: request.data.clone(),
                created_at: request.created_at,
                expires_at: request.expires_at,
            });
        }
        out
    }
}

impl Processor for FanoutProcessor {
    type Input = RoutedNotification;

    async fn process(
        &self,
        routed: RoutedNotification,
        _meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        let request = &routed.request;
        if request.is_expired(now_ms()) {
            let s = status(
                request,
                None,
                None,
                Outcome::Expired,
                "expired before fan-out",
            );
            return Ok(vec![Output::status(&self.status_topic, s)]);
        }
        let messages = self.messages(&routed);
        if messages.is_empty() {
            let s = status(
                request,
                None,
                None,
                Outcome::Filtered,
                "no contact point with rendered content",
            );
            return Ok(vec![Output::status(&self.status_topic, s)]);
        }
        let mut outputs = Vec::with_capacity(messages.len() * 2);
        for m in messages {
            if let Some(c) = self.messages.get() {
                c.with_label_values(&[m.channel.as_str()]).inc();
            }
            // The status names the delivery channel and the masked contact point: the first
            // point where the outcome of one message can be followed.
            let s = status(
                request,
                Some(m.channel),
                Some(&m.recipient),
                Outcome::Accepted,
                "queued for delivery",
            );
            outputs.push(Output::status(&self.status_topic, s));
            let topic = self.topics.topic(m.channel).to_string();
            let key = m.recipient.clone();
            outputs.push(Output::record(topic, key, m));
        }
        Ok(outputs)
    }
}

/// Runs the stage with `[processors.fanout]` of `config` until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![settings.input.clone()],
    };
    let processor = FanoutProcessor {
        topics: settings,
        status_topic: config.runtime.status_topic.clone(),
        messages: Default::default(),
    };
    let messages = processor.messages.clone();
    let running = notify_runtime::start(processor, spec, config, shutdown).await?;
    let counter = running.metrics.counter_vec(
        "messages_total",
        "Channel messages written, per delivery channel",
        &["channel"],
    );
    for channel in DeliveryChannel::ALL {
        counter.with_label_values(&[channel.as_str()]);
    }
    let _ = messages.set(counter);
    running
        .done
        .await
        .map_err(|e| RuntimeError::Setup(format!("consume loop panicked: {e}")))?
}

#[cfg(test)]
mod tests;
