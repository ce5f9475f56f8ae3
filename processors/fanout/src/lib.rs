//! Fan-out stage: one message per channel and contact point.
//!
//! Consumes `notify.stage.limited.v1` and writes one `ChannelMessage` per target to
//! `notify.channel.{apns,fcm,sms,email}.v1`, keyed by the contact point so that a recipient's
//! messages stay in order on their channel. PUSH becomes one APNS or FCM message per device.

use std::collections::BTreeSet;

use notify_runtime::records::{
    ChannelMessage, DeliveryChannel, DeliveryStatus, NotificationRequest, Outcome,
    RoutedNotification,
};
use notify_runtime::runner::RuntimeError;
use notify_runtime::{Emit, Metrics, Output, ProcessError, RecordMeta, Stage, now_ms};
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
    /// Also say ACCEPTED ("queued for delivery") per message (`runtime.intermediate_status`).
    pub intermediate_status: bool,
    /// Messages are written in committed transactions (`kafka.transactional`): they say so,
    /// and delivery skips the ledger read for them.
    pub exactly_once: bool,
    /// Counts each message `fanned_out` per delivery channel, and each request with
    /// `no_contact_point` left, in `notify_stage_decisions_total`.
    pub metrics: Metrics,
}

/// The processor's metrics with its decisions created at zero.
pub fn decision_metrics(metrics: &Metrics) -> Metrics {
    let channels: Vec<&str> = DeliveryChannel::ALL.iter().map(|c| c.as_str()).collect();
    metrics.expect_decisions(NAME, &["fanned_out"], &channels);
    metrics.expect_decisions(NAME, &["no_contact_point"], &[""]);
    metrics.clone()
}

fn status(request: &NotificationRequest, outcome: Outcome, reason: &str) -> DeliveryStatus {
    DeliveryStatus::of(request, NAME, outcome).with_reason(reason)
}

impl FanoutProcessor {
    pub fn new(topics: FanoutSettings, config: &notify_runtime::Config, metrics: &Metrics) -> Self {
        FanoutProcessor {
            topics,
            status_topic: config.runtime.status_topic.clone(),
            intermediate_status: config.runtime.intermediate_status,
            exactly_once: config.kafka.transactional,
            metrics: decision_metrics(metrics),
        }
    }

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

impl Stage for FanoutProcessor {
    type In = RoutedNotification;
    type Out = ChannelMessage;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn process(
        &self,
        routed: RoutedNotification,
        _: &RecordMeta,
    ) -> Result<Emit<ChannelMessage>, ProcessError> {
        let request = &routed.request;
        if request.is_expired(now_ms()) {
            let s = status(request, Outcome::Expired, "expired before fan-out");
            return Ok(Emit::end(vec![Output::status(&self.status_topic, s)]));
        }
        let messages = self.messages(&routed);
        if messages.is_empty() {
            self.metrics.decided(NAME, "no_contact_point");
            let s = status(
                request,
                Outcome::Filtered,
                "no contact point with rendered content",
            );
            return Ok(Emit::end(vec![Output::status(&self.status_topic, s)]));
        }
        let mut side = Vec::new();
        for m in &messages {
            self.metrics
                .decided_on(NAME, "fanned_out", m.channel.as_str());
            if self.intermediate_status {
                let s = DeliveryStatus::of_message(m, NAME, Outcome::Accepted)
                    .with_reason("queued for delivery");
                side.push(Output::status(&self.status_topic, s));
            }
        }
        Ok(Emit {
            next: messages,
            side,
            dead_letter: None,
        })
    }

    /// Keyed by the contact point, so a recipient's messages stay in order on their channel.
    fn output(&self, m: ChannelMessage, _: &RecordMeta) -> Output {
        let topic = self.topics.topic(m.channel).to_string();
        let key = m.recipient.clone();
        let out = Output::record(topic, key, m);
        if self.exactly_once {
            out.with_header(notify_runtime::headers::EXACTLY_ONCE, "1")
        } else {
            out
        }
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
    let metrics = Metrics::new(NAME);
    let stage = FanoutProcessor::new(settings, &config, &metrics);
    notify_runtime::run(
        notify_runtime::StageProcessor(stage),
        spec,
        config,
        metrics,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests;
