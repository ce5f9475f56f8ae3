//! The rate-limiting stage: removes the channels over their limit (and their targets) and says
//! RATE_LIMITED for each; CRITICAL passes untouched and is not counted.

use std::collections::BTreeSet;

use notify_runtime::records::{
    Channel, DeliveryStatus, NotificationRequest, Outcome, Priority, RoutedNotification,
};
use notify_runtime::{Emit, Output, ProcessError, RecordMeta, Stage, now_ms};

use crate::NAME;
use crate::limiter::{Limiter, Verdict};
use crate::store::RateStore;

pub struct RateLimitProcessor<S> {
    pub limiter: Limiter<S>,
    pub output: String,
    pub status_topic: String,
    /// Counts each channel `passed`, `limited` or `bypassed` (CRITICAL) in
    /// `notify_stage_decisions_total`.
    pub metrics: notify_runtime::Metrics,
}

/// The processor's metrics with its decisions created at zero.
pub fn decision_metrics(metrics: &notify_runtime::Metrics) -> notify_runtime::Metrics {
    let channels: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    metrics.expect_decisions(NAME, &["passed", "limited", "bypassed"], &channels);
    metrics.clone()
}

impl<S> RateLimitProcessor<S> {
    fn count(&self, channel: Channel, decision: &str) {
        self.metrics.decided_on(NAME, decision, channel.as_str());
    }
}

fn status(
    request: &NotificationRequest,
    channel: Option<Channel>,
    outcome: Outcome,
    reason: String,
) -> DeliveryStatus {
    let mut s = DeliveryStatus::of(request, NAME, outcome).with_reason(reason);
    s.channel = channel.map(|c| c.as_str().to_string());
    s
}

impl<S: RateStore> Stage for RateLimitProcessor<S> {
    type In = RoutedNotification;
    type Out = RoutedNotification;

    fn name(&self) -> &'static str {
        NAME
    }

    fn assigned(&self, _partitions: &[(String, i32)]) {
        self.limiter.store.rebalanced();
    }

    fn revoked(&self, _partitions: &[(String, i32)]) {
        self.limiter.store.rebalanced();
    }

    async fn process(
        &self,
        mut routed: RoutedNotification,
        _: &RecordMeta,
    ) -> Result<Emit<RoutedNotification>, ProcessError> {
        let now = now_ms();
        if routed.request.is_expired(now) {
            let s = status(
                &routed.request,
                None,
                Outcome::Expired,
                "expired before rate limiting".into(),
            );
            return Ok(Emit::end(vec![Output::status(&self.status_topic, s)]));
        }
        if routed.request.priority == Priority::Critical {
            for r in &routed.rendered {
                self.count(r.channel, "bypassed");
            }
            return Ok(Emit::next(routed));
        }
        let channels: BTreeSet<Channel> = routed.rendered.iter().map(|r| r.channel).collect();
        if channels.is_empty() {
            let s = status(
                &routed.request,
                None,
                Outcome::Filtered,
                "nothing rendered to send".into(),
            );
            return Ok(Emit::end(vec![Output::status(&self.status_topic, s)]));
        }
        let mut side = Vec::new();
        let mut limited = BTreeSet::new();
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
                self.count(channel, "limited");
                limited.insert(channel);
                let s = status(
                    request,
                    Some(channel),
                    Outcome::RateLimited,
                    rule.describe(),
                );
                side.push(Output::status(&self.status_topic, s));
            } else {
                self.count(channel, "passed");
            }
        }
        routed.rendered.retain(|r| !limited.contains(&r.channel));
        routed
            .targets
            .retain(|t| !limited.contains(&t.channel.requested_as()));
        let next = if routed.rendered.is_empty() {
            Vec::new()
        } else {
            vec![routed]
        };
        Ok(Emit {
            next,
            side,
            dead_letter: None,
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
