//! The rate-limiting stage: removes the channels over their limit (and their targets) and says
//! RATE_LIMITED for each; CRITICAL passes untouched and is not counted.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use notify_runtime::records::{
    Channel, DeliveryStatus, NotificationRequest, Outcome, Priority, RoutedNotification,
};
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};
use prometheus::IntCounterVec;

use crate::NAME;
use crate::limiter::{Limiter, Verdict};
use crate::store::RateStore;

pub struct RateLimitProcessor<S> {
    pub limiter: Limiter<S>,
    pub output: String,
    pub status_topic: String,
    /// `notify_ratelimit_decisions_total{channel, decision}`, set once the runtime has started.
    pub decisions: Arc<OnceLock<IntCounterVec>>,
}

impl<S> RateLimitProcessor<S> {
    fn count(&self, channel: Channel, decision: &str) {
        if let Some(c) = self.decisions.get() {
            c.with_label_values(&[channel.as_str(), decision]).inc();
        }
    }
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

    fn assigned(&self, _partitions: &[(String, i32)]) {
        self.limiter.store.rebalanced();
    }

    fn revoked(&self, _partitions: &[(String, i32)]) {
        self.limiter.store.rebalanced();
    }

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
            for r in &routed.rendered {
                self.count(r.channel, "bypassed");
            }
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
                self.count(channel, "limited");
                limited.insert(channel);
                let s = status(
                    request,
                    Some(channel),
                    Outcome::RateLimited,
                    rule.describe(),
                );
                outputs.push(Output::status(&self.status_topic, s));
            } else {
                self.count(channel, "passed");
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
#[path = "processor_tests.rs"]
mod tests;
