//! The templating stage: one `Rendered` per requested channel that has a contact point.
//!
//! A channel that cannot be rendered (missing template, locale or variable, over a limit) is
//! RENDER_FAILED with the reason and the record is dead-lettered with class `render`, so an
//! operator can fix the template and redrive it. The channels that did render still go on:
//! a missing SMS translation must not hold back a security push.

use std::collections::BTreeSet;
use std::time::Duration;

use notify_runtime::dlq::ErrorClass;
use notify_runtime::records::{
    Channel, DeliveryStatus, NotificationRequest, Outcome, RoutedNotification,
};
use notify_runtime::stage::DeadLetterReason;
use notify_runtime::{Emit, Output, ProcessError, RecordMeta, Stage, now_ms};

use crate::NAME;
use crate::error::RenderError;
use crate::limits::Limits;
use crate::render::{Renderer, Vars};
use crate::source::{TemplateSource, find};

pub struct TemplatesProcessor<S> {
    pub source: S,
    pub renderer: Renderer,
    pub limits: Limits,
    pub default_locale: String,
    pub output: String,
    pub status_topic: String,
    /// How long a record waits for the template table to catch up before it is retried.
    pub sync_timeout: Duration,
    /// Counts each channel `rendered` or `failed` (missing template, locale or variable, over
    /// a limit) in `notify_stage_decisions_total`.
    pub metrics: notify_runtime::Metrics,
}

/// The processor's metrics with its decisions created at zero.
pub fn decision_metrics(metrics: &notify_runtime::Metrics) -> notify_runtime::Metrics {
    let channels: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    metrics.expect_decisions(NAME, &["rendered", "failed"], &channels);
    metrics.clone()
}

/// The channels to render: those asked for (all when none are) that have a target.
pub fn wanted_channels(routed: &RoutedNotification) -> Vec<Channel> {
    let reachable: BTreeSet<Channel> = routed
        .targets
        .iter()
        .map(|t| t.channel.requested_as())
        .collect();
    let asked: BTreeSet<Channel> = if routed.request.channels.is_empty() {
        Channel::ALL.into_iter().collect()
    } else {
        routed.request.channels.iter().copied().collect()
    };
    asked.intersection(&reachable).copied().collect()
}

pub fn status(
    request: &NotificationRequest,
    channel: Option<Channel>,
    outcome: Outcome,
    reason: Option<String>,
) -> DeliveryStatus {
    let mut s = DeliveryStatus::of(request, NAME, outcome);
    s.channel = channel.map(|c| c.as_str().to_string());
    s.reason = reason;
    s
}

impl<S: TemplateSource> TemplatesProcessor<S> {
    fn render_channel(
        &self,
        routed: &RoutedNotification,
        channel: Channel,
    ) -> Result<notify_runtime::records::Rendered, RenderError> {
        let request = &routed.request;
        let template = find(
            &self.source,
            &request.template_id,
            channel,
            &routed.locale,
            &self.default_locale,
        )?;
        let vars = Vars {
            data: &request.data,
            user: &routed.user,
        };
        let rendered = self.renderer.render(&template, &vars)?;
        self.limits
            .enforce(rendered, template.truncate, &request.data)
    }

    /// Renders every wanted channel; the pure part of `process`.
    pub fn render_all(&self, routed: &RoutedNotification) -> RenderOutcome {
        let mut out = RenderOutcome::default();
        for channel in wanted_channels(routed) {
            match self.render_channel(routed, channel) {
                Ok(r) => out.rendered.push(r),
                Err(e) => out.failed.push((channel, e)),
            }
        }
        out
    }
}

#[derive(Debug, Default)]
pub struct RenderOutcome {
    pub rendered: Vec<notify_runtime::records::Rendered>,
    pub failed: Vec<(Channel, RenderError)>,
}

impl<S: TemplateSource> Stage for TemplatesProcessor<S> {
    type In = RoutedNotification;
    type Out = RoutedNotification;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn process(
        &self,
        mut routed: RoutedNotification,
        record: &RecordMeta,
    ) -> Result<Emit<RoutedNotification>, ProcessError> {
        let request = &routed.request;
        if request.is_expired(now_ms()) {
            let s = status(
                request,
                None,
                Outcome::Expired,
                Some("expired before rendering".into()),
            );
            return Ok(Emit::end(vec![Output::status(&self.status_topic, s)]));
        }
        // Every template update written before this request must be visible to it.
        if !self
            .source
            .caught_up(
                notify_runtime::table::since_event(record.timestamp_ms),
                self.sync_timeout,
            )
            .await
        {
            return Err(ProcessError::transient("template table is not caught up"));
        }
        let outcome = self.render_all(&routed);
        for r in &outcome.rendered {
            self.metrics
                .decided_on(NAME, "rendered", r.channel.as_str());
        }
        for (channel, _) in &outcome.failed {
            self.metrics.decided_on(NAME, "failed", channel.as_str());
        }
        if outcome.rendered.is_empty() && outcome.failed.is_empty() {
            let s = status(
                request,
                None,
                Outcome::Filtered,
                Some("no contact point for the requested channels".into()),
            );
            return Ok(Emit::end(vec![Output::status(&self.status_topic, s)]));
        }
        let mut side = Vec::new();
        for (channel, e) in &outcome.failed {
            let s = status(
                request,
                Some(*channel),
                Outcome::RenderFailed,
                Some(e.to_string()),
            );
            side.push(Output::status(&self.status_topic, s));
        }
        let dead_letter = (!outcome.failed.is_empty()).then(|| DeadLetterReason {
            stage: NAME,
            class: ErrorClass::Render,
            reason: outcome
                .failed
                .iter()
                .map(|(c, e)| format!("{}: {e}", c.as_str()))
                .collect::<Vec<_>>()
                .join("; "),
        });
        let mut next = Vec::new();
        if !outcome.rendered.is_empty() {
            // Only the targets of rendered channels go on.
            let ok: BTreeSet<Channel> = outcome.rendered.iter().map(|r| r.channel).collect();
            routed
                .targets
                .retain(|t| ok.contains(&t.channel.requested_as()));
            routed.rendered = outcome.rendered;
            next.push(routed);
        }
        Ok(Emit {
            next,
            side,
            dead_letter,
        })
    }

    fn output(&self, routed: RoutedNotification, _: &RecordMeta) -> Output {
        let user = routed.request.user_id.clone();
        Output::record(&self.output, user, routed)
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
