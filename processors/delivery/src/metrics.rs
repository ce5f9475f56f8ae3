//! Delivery metrics: provider latency by outcome, provider errors by class, outcomes.

use std::time::Duration;

use notify_providers::SendOutcome;
use notify_runtime::metrics::Metrics;
use notify_runtime::records::Outcome;
use prometheus::{HistogramVec, IntCounterVec};

/// Error classes (`class` label of `provider_errors_total`).
pub const ERROR_CLASSES: [&str; 4] = ["retryable", "permanent", "token_invalid", "ledger"];

#[derive(Clone)]
pub struct DeliveryMetrics {
    latency: HistogramVec,
    errors: IntCounterVec,
    outcomes: IntCounterVec,
}

impl DeliveryMetrics {
    /// Registers `notify_<processor>_provider_latency_seconds{outcome}`,
    /// `…_provider_errors_total{class}` and `…_deliveries_total{outcome}`.
    pub fn register(metrics: &Metrics) -> Self {
        let errors = metrics.counter_vec(
            "provider_errors_total",
            "Provider calls that did not deliver, and ledger failures, by class",
            &["class"],
        );
        for class in ERROR_CLASSES {
            errors.with_label_values(&[class]);
        }
        Self {
            latency: metrics.histogram_vec(
                "provider_latency_seconds",
                "Time of one provider call, by outcome",
                &["outcome"],
            ),
            errors,
            outcomes: metrics.counter_vec(
                "deliveries_total",
                "Status events emitted, by outcome",
                &["outcome"],
            ),
        }
    }

    pub fn observe(&self, outcome: &SendOutcome, took: Duration) {
        let label = match outcome {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Retryable { .. } => "retryable",
            SendOutcome::Permanent { .. } => "permanent",
            SendOutcome::TokenInvalid { .. } => "token_invalid",
        };
        self.latency
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
        if label != "sent" {
            self.error(label);
        }
    }

    pub fn error(&self, class: &str) {
        self.errors.with_label_values(&[class]).inc();
    }

    pub fn outcome(&self, outcome: Outcome) {
        let label = match outcome {
            Outcome::Sent => "sent",
            Outcome::Expired => "expired",
            Outcome::Failed => "failed",
            Outcome::RetryScheduled => "retry_scheduled",
            Outcome::TokenInvalid => "token_invalid",
            _ => "other",
        };
        self.outcomes.with_label_values(&[label]).inc();
    }
}
