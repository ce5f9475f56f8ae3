//! Metric names come from here: `notify_<processor>_<noun>_<unit>`. Labels stay bounded
//! (topic, partition, class, outcome; never a user id or an address).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The metrics every processor has. Processors add their own through [`Metrics::name`].
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    prefix: String,
    pub records_consumed: IntCounterVec,
    pub records_produced: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub transient_errors: IntCounter,
    pub process_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub in_flight: IntGauge,
}

/// The metric names every processor must export (checked by a shared test).
pub const REQUIRED: [&str; 8] = [
    "records_consumed_total",
    "records_produced_total",
    "dead_letters_total",
    "transient_errors_total",
    "process_duration_seconds",
    "end_to_end_latency_seconds",
    "consumer_lag_records",
    "in_flight_records",
];

impl Metrics {
    pub fn new(processor: &str) -> Metrics {
        let registry = Registry::new();
        let prefix = format!("notify_{}", processor.replace(['-', '.'], "_"));
        let m = |noun: &str| format!("{prefix}_{noun}");
        let latency_buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let metrics = Metrics {
            records_consumed: IntCounterVec::new(
                Opts::new(m(REQUIRED[0]), "Records consumed"),
                &["topic"],
            )
            .expect("valid metric"),
            records_produced: IntCounterVec::new(
                Opts::new(m(REQUIRED[1]), "Records produced and acknowledged"),
                &["topic"],
            )
            .expect("valid metric"),
            dead_letters: IntCounterVec::new(
                Opts::new(m(REQUIRED[2]), "Records dead-lettered"),
                &["class"],
            )
            .expect("valid metric"),
            transient_errors: IntCounter::new(
                m(REQUIRED[3]),
                "Transient failures (the record is retried)",
            )
            .expect("valid metric"),
            process_seconds: Histogram::with_opts(
                HistogramOpts::new(m(REQUIRED[4]), "Time to decode and process one record")
                    .buckets(latency_buckets.clone()),
            )
            .expect("valid metric"),
            end_to_end_seconds: Histogram::with_opts(
                HistogramOpts::new(m(REQUIRED[5]), "Event time to acknowledged output")
                    .buckets(latency_buckets),
            )
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new(m(REQUIRED[6]), "Records behind the log end"),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            in_flight: IntGauge::new(m(REQUIRED[7]), "Records consumed and not yet acknowledged")
                .expect("valid metric"),
            registry,
            prefix,
        };
        for c in [
            Box::new(metrics.records_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.records_produced.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.transient_errors.clone()),
            Box::new(metrics.process_seconds.clone()),
            Box::new(metrics.end_to_end_seconds.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.in_flight.clone()),
        ] {
            metrics
                .registry
                .register(c)
                .expect("metric names are unique");
        }
        metrics
    }

    /// The full name of a processor-specific metric: `notify_<processor>_<noun>`.
    pub fn name(&self, noun: &str) -> String {
        format!("{}_{noun}", self.prefix)
    }

    /// Registers a processor-specific counter vector.
    pub fn counter_vec(&self, noun: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(self.name(noun), help), labels).expect("valid metric");
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    /// Registers a processor-specific histogram vector (seconds).
    pub fn histogram_vec(&self, noun: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let h = HistogramVec::new(HistogramOpts::new(self.name(noun), help), labels)
            .expect("valid metric");
        self.registry
            .register(Box::new(h.clone()))
            .expect("metric names are unique");
        h
    }

    /// Sets `consumer_lag_records` from librdkafka's statistics JSON. Parsed loosely (only the
    /// fields used) so a field added by a newer librdkafka never loses the metric.
    pub fn record_consumer_lag(&self, statistics: &[u8]) {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let Some(topics) = json.get("topics").and_then(|t| t.as_object()) else {
            return;
        };
        for (topic, t) in topics {
            let Some(partitions) = t.get("partitions").and_then(|p| p.as_object()) else {
                continue;
            };
            for (partition, p) in partitions {
                let lag = p.get("consumer_lag").and_then(|l| l.as_i64()).unwrap_or(-1);
                if partition != "-1" && lag >= 0 {
                    self.consumer_lag
                        .with_label_values(&[topic.as_str(), partition.as_str()])
                        .set(lag);
                }
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Names of [`REQUIRED`] that this registry does not export (empty when complete).
    pub fn missing_required(&self) -> Vec<String> {
        let names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        REQUIRED
            .iter()
            .map(|noun| self.name(noun))
            .filter(|n| !names.contains(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_required_set_under_the_processor_prefix() {
        let m = Metrics::new("dedup");
        m.records_consumed.with_label_values(&["t"]).inc();
        m.consumer_lag.with_label_values(&["t", "0"]).set(1);
        m.dead_letters.with_label_values(&["decode"]).inc();
        m.records_produced.with_label_values(&["t"]).inc();
        assert!(
            m.missing_required().is_empty(),
            "{:?}",
            m.missing_required()
        );
        assert!(
            m.render()
                .contains("notify_dedup_records_consumed_total{topic=\"t\"} 1")
        );
    }
}
