//! The librdkafka statistics that matter to an operator, as gauges: broker state and round
//! trip, how long records wait in the producer's queue before they are sent (with the round
//! trip, the produce latency), and how many records sit in librdkafka's queues.
//!
//! librdkafka emits its statistics as JSON every `statistics.interval.ms`; the JSON is parsed
//! loosely (only these fields) so a field added by a newer librdkafka never breaks it. Labels
//! stay bounded: the client (`consumer`, `producer`) and the broker's name.

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use serde_json::Value;

/// The gauges set from the statistics of the processor's clients.
#[derive(Clone)]
pub struct KafkaStats {
    /// `{client, broker}`: 1 when the connection is up.
    broker_up: IntGaugeVec,
    /// `{client, broker, quantile}`: request round trip.
    broker_rtt: GaugeVec,
    /// `{broker, quantile}`: time a record waited in the producer's queue before it was sent.
    produce_queue_latency: GaugeVec,
    /// `{client}`: records in librdkafka's queues (produce queue; fetched, not yet consumed).
    queued: IntGaugeVec,
}

/// The quantiles taken from librdkafka's windows.
const QUANTILES: [(&str, &str); 2] = [("0.5", "p50"), ("0.99", "p99")];

impl KafkaStats {
    pub fn register(registry: &Registry) -> KafkaStats {
        let stats = KafkaStats {
            broker_up: IntGaugeVec::new(
                Opts::new(
                    "notify_kafka_broker_up",
                    "1 when the client's connection to the broker is up (librdkafka state UP)",
                ),
                &["client", "broker"],
            )
            .expect("valid metric"),
            broker_rtt: GaugeVec::new(
                Opts::new(
                    "notify_kafka_broker_rtt_seconds",
                    "Request round trip to the broker over the last statistics window",
                ),
                &["client", "broker", "quantile"],
            )
            .expect("valid metric"),
            produce_queue_latency: GaugeVec::new(
                Opts::new(
                    "notify_kafka_produce_queue_seconds",
                    "Time records waited in the producer's queue before being sent to the broker",
                ),
                &["broker", "quantile"],
            )
            .expect("valid metric"),
            queued: IntGaugeVec::new(
                Opts::new(
                    "notify_kafka_queued_records",
                    "Records in librdkafka's queues: waiting to be produced, or fetched and not yet consumed",
                ),
                &["client"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(stats.broker_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stats.broker_rtt.clone()),
            Box::new(stats.produce_queue_latency.clone()),
            Box::new(stats.queued.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        stats
    }

    /// Sets the gauges from one statistics JSON of the client named `client`.
    pub fn record(&self, client: &str, statistics: &[u8]) {
        let Ok(json) = serde_json::from_slice::<Value>(statistics) else {
            return;
        };
        let producer = json.get("type").and_then(Value::as_str) == Some("producer");
        let queued = if producer {
            json.get("msg_cnt").and_then(Value::as_i64).unwrap_or(0)
        } else {
            fetch_queue(&json)
        };
        self.queued.with_label_values(&[client]).set(queued);
        let Some(brokers) = json.get("brokers").and_then(Value::as_object) else {
            return;
        };
        for b in brokers.values() {
            // Bootstrap entries (node id -1) stand for no broker once metadata is known.
            if b.get("nodeid").and_then(Value::as_i64).unwrap_or(-1) < 0 {
                continue;
            }
            let Some(name) = b.get("name").and_then(Value::as_str) else {
                continue;
            };
            let up = b.get("state").and_then(Value::as_str) == Some("UP");
            self.broker_up
                .with_label_values(&[client, name])
                .set(i64::from(up));
            for (quantile, field) in QUANTILES {
                if let Some(s) = micros(b, "rtt", field) {
                    self.broker_rtt
                        .with_label_values(&[client, name, quantile])
                        .set(s);
                }
                if producer && let Some(s) = micros(b, "int_latency", field) {
                    self.produce_queue_latency
                        .with_label_values(&[name, quantile])
                        .set(s);
                }
            }
        }
    }
}

/// A window's quantile (microseconds in the JSON) in seconds; None for an empty window.
fn micros(broker: &Value, window: &str, field: &str) -> Option<f64> {
    let w = broker.get(window)?;
    if w.get("cnt").and_then(Value::as_i64).unwrap_or(0) == 0 {
        return None;
    }
    Some(w.get(field)?.as_f64()? / 1e6)
}

/// Records fetched and not yet handed to the application, over every partition.
fn fetch_queue(json: &Value) -> i64 {
    let Some(topics) = json.get("topics").and_then(Value::as_object) else {
        return 0;
    };
    topics
        .values()
        .filter_map(|t| t.get("partitions").and_then(Value::as_object))
        .flat_map(|ps| ps.values())
        .filter_map(|p| p.get("fetchq_cnt").and_then(Value::as_i64))
        .filter(|n| *n > 0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_and_queues_from_producer_statistics() {
        let registry = Registry::new();
        let stats = KafkaStats::register(&registry);
        let json = serde_json::json!({
            "type": "producer", "msg_cnt": 7,
            "brokers": {
                "127.0.0.1:19092/bootstrap": {"name": "127.0.0.1:19092/bootstrap", "nodeid": -1, "state": "UP"},
                "127.0.0.1:19092/1": {
                    "name": "127.0.0.1:19092/1", "nodeid": 1, "state": "UP",
                    "rtt": {"cnt": 3, "p50": 1500, "p99": 4000},
                    "int_latency": {"cnt": 3, "p50": 200, "p99": 900}
                }
            }
        });
        stats.record("producer", json.to_string().as_bytes());
        let broker = ["producer", "127.0.0.1:19092/1"];
        assert_eq!(stats.broker_up.with_label_values(&broker).get(), 1);
        let p99 = stats
            .broker_rtt
            .with_label_values(&["producer", "127.0.0.1:19092/1", "0.99"])
            .get();
        assert!((p99 - 0.004).abs() < 1e-9, "{p99}");
        let queue = stats
            .produce_queue_latency
            .with_label_values(&["127.0.0.1:19092/1", "0.5"])
            .get();
        assert!((queue - 0.0002).abs() < 1e-9, "{queue}");
        assert_eq!(stats.queued.with_label_values(&["producer"]).get(), 7);
        let text = format!("{:?}", registry.gather());
        assert!(!text.contains("bootstrap"), "bootstrap entries are skipped");
    }
}
