//! The records delivery produces: status events, token feedback, retry-ladder records.

use std::time::Duration;

use notify_runtime::records::{ChannelMessage, DeliveryStatus, Outcome, TokenFeedback};
use notify_runtime::{Output, RecordMeta, now_ms};

use crate::clients::Provider;
use crate::deliver::Deliverer;
use crate::headers;
use crate::ledger::DeliveryLedger;
use crate::ownership::Ownership;

impl<P: Provider, L: DeliveryLedger, O: Ownership> Deliverer<P, L, O> {
    pub(crate) fn status(
        &self,
        msg: &ChannelMessage,
        outcome: Outcome,
        reason: Option<String>,
        attempt: i32,
    ) -> Output {
        self.metrics.outcome(self.channel, outcome);
        let mut s = DeliveryStatus::of_message(msg, &self.stage, outcome).with_attempt(attempt);
        s.reason = reason.map(|r| crate::redact(&r, &msg.recipient));
        Output::status(&self.topics.status, s)
    }

    pub(crate) fn token_feedback(&self, msg: &ChannelMessage, reason: &str) -> Output {
        Output::record(
            &self.topics.token_feedback,
            msg.user_id.clone(),
            TokenFeedback {
                user_id: msg.user_id.clone(),
                token: msg.recipient.clone(),
                channel: self.channel,
                reason: crate::redact(reason, &msg.recipient),
                at: now_ms(),
            },
        )
    }

    /// The same message, one rung up the ladder, with what the retry processor needs.
    pub(crate) fn retry(
        &self,
        msg: &ChannelMessage,
        meta: &RecordMeta,
        attempt: i32,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Output {
        let key = meta.key.clone().unwrap_or_else(|| msg.recipient.clone());
        let mut out = Output::record(&self.topics.retry, key, msg.clone());
        out.headers = meta
            .headers
            .iter()
            .filter(|(k, _)| !headers::RETRY_HEADERS.contains(&k.as_str()))
            .cloned()
            .collect();
        let first = meta
            .header(headers::FIRST_FAILURE_AT)
            .map_or_else(|| now_ms().to_string(), str::to_string);
        let origin = meta
            .header(headers::ORIGIN_TOPIC)
            .map_or_else(|| meta.topic.clone(), str::to_string);
        out = out
            .with_header(headers::ATTEMPTS, attempt.to_string())
            .with_header(headers::FIRST_FAILURE_AT, first)
            .with_header(headers::LAST_FAILURE_AT, now_ms().to_string())
            .with_header(headers::ERROR_REASON, cut(reason, 1024))
            .with_header(headers::ORIGIN_TOPIC, origin);
        if let Some(after) = retry_after {
            out = out.with_header(headers::RETRY_AFTER_MS, after.as_millis().to_string());
        }
        out
    }
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
