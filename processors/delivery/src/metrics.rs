//! Delivery metrics: provider calls by outcome, provider errors by class, provider latency,
//! status outcomes; each with the delivery channel as a label.

use std::time::Duration;

use notify_providers::SendOutcome;
use notify_runtime::metrics::Metrics;
use notify_runtime::records::{DeliveryChannel, Outcome};
use prometheus::{HistogramVec, IntCounterVec};

use crate::ledger::State;

/// Error classes (`class` label of `notify_provider_errors_total`).
pub const ERROR_CLASSES: [&str; 6] = [
    "retryable",
    "permanent",
    "token_invalid",
    "in_doubt",
    "unavailable",
    "ledger",
];

#[derive(Clone)]
pub struct DeliveryMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    errors: IntCounterVec,
    outcomes: IntCounterVec,
    replay_skipped: IntCounterVec,
}

fn label(outcome: &SendOutcome) -> &'static str {
    match outcome {
        SendOutcome::Sent { .. } => "sent",
        SendOutcome::Retryable { .. } => "retryable",
        SendOutcome::Permanent { .. } => "permanent",
        SendOutcome::TokenInvalid { .. } => "token_invalid",
        SendOutcome::InDoubt { .. } => "in_doubt",
        SendOutcome::Unavailable { .. } => "unavailable",
    }
}

impl DeliveryMetrics {
    pub fn register(metrics: &Metrics, channel: DeliveryChannel) -> Self {
        let c = channel.as_str();
        let errors = metrics.counter_vec(
            "notify_provider_errors_total",
            "Provider calls that did not deliver, and ledger failures, by class",
            &["channel", "class"],
        );
        for class in ERROR_CLASSES {
            errors.with_label_values(&[c, class]);
        }
        let requests = metrics.counter_vec(
            "notify_provider_requests_total",
            "Provider calls by outcome",
            &["channel", "outcome"],
        );
        for o in [
            "sent",
            "retryable",
            "permanent",
            "token_invalid",
            "in_doubt",
            "unavailable",
        ] {
            requests.with_label_values(&[c, o]);
        }
        let outcomes = metrics.counter_vec(
            "notify_delivery_outcomes_total",
            "Status events emitted by delivery, by outcome",
            &["channel", "outcome"],
        );
        for o in [
            "SENT",
            "FAILED",
            "RETRY_SCHEDULED",
            "TOKEN_INVALID",
            "EXPIRED",
        ] {
            outcomes.with_label_values(&[c, o]);
        }
        Self {
            latency: metrics.histogram_vec(
                "notify_provider_latency_seconds",
                "Time of one provider call",
                &["channel"],
            ),
            requests,
            errors,
            outcomes,
            replay_skipped: metrics.counter_vec(
                "notify_replay_skipped_total",
                "Replayed messages not sent again, by what the ledger said",
                &["channel", "state"],
            ),
        }
    }

    pub fn observe(&self, channel: DeliveryChannel, outcome: &SendOutcome, took: Duration) {
        let c = channel.as_str();
        let l = label(outcome);
        self.requests.with_label_values(&[c, l]).inc();
        self.latency
            .with_label_values(&[c])
            .observe(took.as_secs_f64());
        if l != "sent" {
            self.error(channel, l);
        }
    }

    pub fn error(&self, channel: DeliveryChannel, class: &str) {
        self.errors
            .with_label_values(&[channel.as_str(), class])
            .inc();
    }

    pub fn in_doubt(&self, channel: DeliveryChannel) {
        self.error(channel, "in_doubt");
    }

    pub fn replay_skipped(&self, channel: DeliveryChannel, state: State) {
        self.replay_skipped
            .with_label_values(&[channel.as_str(), state.as_str()])
            .inc();
    }

    pub fn outcome(&self, channel: DeliveryChannel, outcome: Outcome) {
        let label = serde_plain(outcome);
        self.outcomes
            .with_label_values(&[channel.as_str(), label])
            .inc();
    }
}

fn serde_plain(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Sent => "SENT",
        Outcome::Failed => "FAILED",
        Outcome::RetryScheduled => "RETRY_SCHEDULED",
        Outcome::TokenInvalid => "TOKEN_INVALID",
        Outcome::Expired => "EXPIRED",
        _ => "OTHER",
    }
}
