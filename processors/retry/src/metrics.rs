//! The retry processor's own metrics, next to the runtime's set (`notify_retry_…`).

use notify_runtime::metrics::Metrics;
use prometheus::{HistogramVec, IntCounterVec, IntGauge};

use crate::settings::RetrySettings;

/// Label of the deferral "step".
pub const DEFERRED: &str = "deferred";

#[derive(Clone)]
pub struct RetryMetrics {
    pub base: Metrics,
    /// Records returned to their origin, per step (`deferred` for deferrals).
    pub retries: IntCounterVec,
    /// Records moved to a later step (attempt count or Retry-After), per target step.
    pub moved: IntCounterVec,
    /// Records not retried because their request expired.
    pub expired: IntCounterVec,
    /// From the failure (or not-before) to the return, per step.
    pub wait: HistogramVec,
    pub held: IntGauge,
    /// A partition paused because it holds `max_held_per_partition` records.
    pub pauses: IntCounterVec,
}

impl RetryMetrics {
    pub fn new(settings: &RetrySettings) -> RetryMetrics {
        let base = Metrics::new(crate::NAME);
        let retries = base.counter_vec(
            "notify_retry_scheduled_total",
            "Records returned to their origin topic after waiting, per ladder step",
            &["step"],
        );
        let moved = base.counter_vec(
            "notify_retry_moved_total",
            "Records moved to a later ladder step (attempt count or Retry-After)",
            &["step"],
        );
        let expired = base.counter_vec(
            "notify_retry_expired_total",
            "Records dropped with status EXPIRED instead of being retried",
            &["step"],
        );
        let wait = base.histogram_vec(
            "notify_retry_wait_seconds",
            "Failure (or not-before) to return, per ladder step",
            &["step"],
        );
        let pauses = base.counter_vec(
            "notify_retry_partition_pauses_total",
            "Partitions paused because they hold the most records allowed in memory",
            &["topic"],
        );
        let held = IntGauge::new("notify_retry_held_records", "Records waiting in memory")
            .expect("valid metric");
        base.registry
            .register(Box::new(held.clone()))
            .expect("metric names are unique");
        let labels = settings
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .chain([DEFERRED]);
        for label in labels {
            retries.with_label_values(&[label]);
            moved.with_label_values(&[label]);
            expired.with_label_values(&[label]);
        }
        base.transient_errors.with_label_values(&[crate::NAME]);
        for class in notify_runtime::dlq::ErrorClass::ALL {
            base.dead_letters
                .with_label_values(&[crate::NAME, class.as_str()]);
        }
        for topic in settings.input_topics() {
            base.records_consumed.with_label_values(&[topic.as_str()]);
            pauses.with_label_values(&[topic.as_str()]);
        }
        RetryMetrics {
            base,
            retries,
            moved,
            expired,
            wait,
            held,
            pauses,
        }
    }
}
