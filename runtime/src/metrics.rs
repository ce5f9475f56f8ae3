//! Metric names come from here, one family per concept with the processor as a label
//! (`notify_records_consumed_total{processor="chain",topic=...}`), so one query sums or
//! compares processors without matching on names. Base units, `_total` counters. Labels stay
//! bounded (topic, partition, stage, class, outcome, channel; never a user id or an address).
//!
//! Every processor registers the same families at start, whether or not it uses them, so a
//! dashboard or alert query never depends on which processor happens to be deployed.

use std::collections::HashMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The families every processor exports (checked by a shared test).
pub const REQUIRED: [&str; 9] = [
    "notify_records_consumed_total",
    "notify_records_produced_total",
    "notify_dead_letters_total",
    "notify_transient_errors_total",
    "notify_process_duration_seconds",
    "notify_end_to_end_latency_seconds",
    "notify_consumer_lag_records",
    "notify_in_flight_records",
    "notify_build_info",
];

const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The metrics of one processor process. Cheap to clone (handles to one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub processor: String,
    pub records_consumed: IntCounterVec,
    pub records_produced: IntCounterVec,
    /// `{stage, class}`
    pub dead_letters: IntCounterVec,
    /// `{stage}`
    pub transient_errors: IntCounterVec,
    pub process_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub in_flight: IntGauge,
    /// `{stage, decision, channel}`: what each stage decided (routed, opt_out_category,
    /// duplicate, rendered, limited, ...); `channel` is empty for a decision about a whole
    /// request and names the channel for one about a single channel of it.
    pub decisions: IntCounterVec,
    /// `{kind}`: CQL statements sent (read, write, batch, lwt), so Paxos rounds are counted.
    pub cql_statements: IntCounterVec,
    /// `{kind}`: rows written inside batches, beside the batch count.
    pub cql_batched_rows: IntCounterVec,
    /// Consume loop stalls detected (assigned, behind, and nothing received).
    pub stalls: IntCounter,
    /// Gauges from librdkafka's statistics (brokers, produce queue latency, queues).
    pub kafka: crate::kafka_stats::KafkaStats,
}

fn counter(opts: Opts, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(opts, labels).expect("valid metric")
}

impl Metrics {
    pub fn new(processor: &str) -> Metrics {
        let labels = HashMap::from([("processor".to_string(), processor.to_string())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry");
        let metrics = Metrics {
            records_consumed: counter(
                Opts::new(REQUIRED[0], "Records consumed from an input topic"),
                &["topic"],
            ),
            records_produced: counter(
                Opts::new(REQUIRED[1], "Records produced and acknowledged, per topic"),
                &["topic"],
            ),
            dead_letters: counter(
                Opts::new(REQUIRED[2], "Records dead-lettered, per stage and class"),
                &["stage", "class"],
            ),
            transient_errors: counter(
                Opts::new(
                    REQUIRED[3],
                    "Transient failures (the record is held and retried), per stage",
                ),
                &["stage"],
            ),
            process_seconds: Histogram::with_opts(
                HistogramOpts::new(REQUIRED[4], "Time to decode and process one record")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            end_to_end_seconds: Histogram::with_opts(
                HistogramOpts::new(REQUIRED[5], "Event time to acknowledged output")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new(REQUIRED[6], "Records behind the log end"),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            in_flight: IntGauge::new(REQUIRED[7], "Records consumed and not yet acknowledged")
                .expect("valid metric"),
            decisions: counter(
                Opts::new(
                    "notify_stage_decisions_total",
                    "Decisions of each stage's business rule (per channel where it decides one)",
                ),
                &["stage", "decision", "channel"],
            ),
            cql_statements: counter(
                Opts::new(
                    "notify_cql_statements_total",
                    "CQL statements sent, by kind (read, write, batch, lwt)",
                ),
                &["kind"],
            ),
            cql_batched_rows: counter(
                Opts::new(
                    "notify_cql_batched_rows_total",
                    "Rows written inside CQL batches",
                ),
                &["table"],
            ),
            stalls: IntCounter::new(
                "notify_consumer_stalls_total",
                "Times the consume loop was assigned, behind and received nothing",
            )
            .expect("valid metric"),
            processor: processor.to_string(),
            kafka: crate::kafka_stats::KafkaStats::register(&registry),
            registry,
        };
        let build_info = IntGaugeVec::new(
            Opts::new(REQUIRED[8], "Always 1; the labels say which build runs"),
            &["version", "commit"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("NOTIFY_BUILD_COMMIT").unwrap_or("unknown"),
            ])
            .set(1);
        for c in [
            Box::new(metrics.records_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.records_produced.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.transient_errors.clone()),
            Box::new(metrics.process_seconds.clone()),
            Box::new(metrics.end_to_end_seconds.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(build_info),
            Box::new(metrics.decisions.clone()),
            Box::new(metrics.cql_statements.clone()),
            Box::new(metrics.cql_batched_rows.clone()),
            Box::new(metrics.stalls.clone()),
        ] {
            metrics
                .registry
                .register(c)
                .expect("metric names are unique");
        }
        // CPU seconds, resident memory, open file descriptors (process_* by convention).
        #[cfg(target_os = "linux")]
        let _ = metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        metrics
    }

    /// Counts one decision of `stage` about a whole request.
    pub fn decided(&self, stage: &str, decision: &str) {
        self.decided_on(stage, decision, "");
    }

    /// Counts one decision of `stage` about one channel of a request.
    pub fn decided_on(&self, stage: &str, decision: &str, channel: &str) {
        self.decisions
            .with_label_values(&[stage, decision, channel])
            .inc();
    }

    /// Creates the series of decisions a stage can make at zero, so that dashboards and
    /// rates see them before the first one happens.
    pub fn expect_decisions(&self, stage: &str, decisions: &[&str], channels: &[&str]) {
        for decision in decisions {
            for channel in channels {
                self.decisions
                    .with_label_values(&[stage, decision, channel]);
            }
        }
    }

    /// Registers a processor-specific counter family (full name, e.g.
    /// `notify_provider_requests_total`).
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = counter(Opts::new(name, help), labels);
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    /// Registers a processor-specific gauge family.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.registry
            .register(Box::new(g.clone()))
            .expect("metric names are unique");
        g
    }

    /// Registers a processor-specific histogram family (seconds).
    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )
        .expect("valid metric");
        self.registry
            .register(Box::new(h.clone()))
            .expect("metric names are unique");
        h
    }

    /// Sets the gauges of librdkafka's statistics JSON of one client (`consumer`, `producer`):
    /// the consumer's lag per partition, brokers and queues.
    pub fn record_statistics(&self, client: &str, statistics: &[u8]) {
        if client == "consumer" {
            self.record_consumer_lag(statistics);
        }
        self.kafka.record(client, statistics);
    }

    /// Sets `notify_consumer_lag_records` from librdkafka's statistics JSON.
    pub fn record_consumer_lag(&self, statistics: &[u8]) {
        for p in partition_stats(statistics) {
            if p.consumer_lag >= 0 {
                self.consumer_lag
                    .with_label_values(&[p.topic.as_str(), &p.partition.to_string()])
                    .set(p.consumer_lag);
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
            .filter(|n| !names.iter().any(|have| have == *n))
            .map(|n| n.to_string())
            .collect()
    }
}

/// What librdkafka's statistics say of one consumed partition.
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    /// Records behind the log end (last stable offset when read committed); -1 unknown.
    pub consumer_lag: i64,
}

/// The partitions of librdkafka's statistics JSON, parsed loosely (only the fields used) so
/// that a field added by a newer librdkafka never loses them.
pub fn partition_stats(statistics: &[u8]) -> Vec<PartitionStats> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(statistics) else {
        return Vec::new();
    };
    let Some(topics) = json.get("topics").and_then(|t| t.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (topic, t) in topics {
        let Some(partitions) = t.get("partitions").and_then(|p| p.as_object()) else {
            continue;
        };
        for (partition, p) in partitions {
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            if partition < 0 {
                continue;
            }
            out.push(PartitionStats {
                topic: topic.clone(),
                partition,
                consumer_lag: lag_of(p),
            });
        }
    }
    out
}

/// The value of the series `name` in Prometheus text whose labels include all of `labels`
/// (the sum when several match); None when no series matches. For tools and tests that read
/// a processor's `/metrics`.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let has = |k: &str, v: &str| {
            series_labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .any(|(pk, pv)| {
                    pk == k && pv.strip_prefix('"').and_then(|x| x.strip_suffix('"')) == Some(v)
                })
        };
        if labels.iter().all(|(k, v)| has(k, v))
            && let Ok(v) = value.parse::<f64>()
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// Records behind the log end: librdkafka's lag from the committed offset, else from the
/// stored one, else from the position. A transactional processor commits its offsets inside
/// its transactions, which librdkafka's consumer does not count as its own commits, so only
/// its position tells how far behind it is; an assigned partition that nothing was read from
/// yet is behind by all it holds (the consumer starts at the earliest offset).
fn lag_of(p: &serde_json::Value) -> i64 {
    let number = |k: &str| p.get(k).and_then(|l| l.as_i64()).unwrap_or(-1);
    for field in ["consumer_lag", "consumer_lag_stored"] {
        if number(field) >= 0 {
            return number(field);
        }
    }
    let end = match number("ls_offset") {
        e if e >= 0 => e,
        _ => number("hi_offset"),
    };
    let position = match number("app_offset") {
        o if o >= 0 => o,
        _ if p.get("fetch_state").and_then(|s| s.as_str()) == Some("active") => number("lo_offset"),
        _ => -1,
    };
    if end >= 0 && position >= 0 {
        (end - position).max(0)
    } else {
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_required_families_with_the_processor_as_a_label() {
        let m = Metrics::new("dedup");
        m.records_consumed.with_label_values(&["t"]).inc();
        m.consumer_lag.with_label_values(&["t", "0"]).set(1);
        m.dead_letters.with_label_values(&["dedup", "decode"]).inc();
        m.transient_errors.with_label_values(&["dedup"]).inc();
        m.records_produced.with_label_values(&["t"]).inc();
        assert!(
            m.missing_required().is_empty(),
            "{:?}",
            m.missing_required()
        );
        let text = m.render();
        assert!(
            text.contains(r#"notify_records_consumed_total{topic="t",processor="dedup"} 1"#),
            "{text}"
        );
        assert!(text.contains("notify_build_info{"), "{text}");
    }

    #[test]
    fn lag_falls_back_to_the_position_when_nothing_was_committed() {
        let stats = serde_json::json!({"topics": {"t": {"partitions": {
            "0": {"consumer_lag": 5},
            "1": {"consumer_lag": -1, "consumer_lag_stored": -1, "ls_offset": 50, "hi_offset": 60, "app_offset": 42},
            "2": {"consumer_lag": -1, "hi_offset": -1, "app_offset": -1001},
            "3": {"consumer_lag": -1, "hi_offset": 7, "lo_offset": 3, "app_offset": -1001, "fetch_state": "active"},
            "4": {"consumer_lag": -1, "hi_offset": 7, "lo_offset": 3, "app_offset": -1001, "fetch_state": "none"},
            "-1": {"consumer_lag": 0}
        }}}});
        let mut lags: Vec<(i32, i64)> = partition_stats(stats.to_string().as_bytes())
            .iter()
            .map(|p| (p.partition, p.consumer_lag))
            .collect();
        lags.sort();
        assert_eq!(lags, [(0, 5), (1, 8), (2, -1), (3, 4), (4, -1)]);
    }
}
