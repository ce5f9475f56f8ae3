//! The pipeline's backlog: for every processor, the records on its input topics that it has
//! not consumed yet (end offsets minus its own `records_consumed_total`), plus what it holds
//! in flight. Its own metrics rather than committed offsets, which trail by the auto-commit
//! interval, so a growing backlog is seen within a sample.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use notify_runtime::CancellationToken;

use notify_runtime::metrics::sample_sum;

use crate::kafka::Kafka;

/// What the harness watches of one processor.
#[derive(Debug, Clone)]
pub struct Watched {
    pub metrics_url: String,
    pub inputs: Vec<String>,
    /// Topics it writes: their records are counted by its `records_produced_total`, not by
    /// end offsets (which count transaction markers too).
    pub outputs: Vec<String>,
    /// Records the harness wrote to its inputs, by topic (the intake, which the chain also
    /// writes to when it forwards a request).
    pub harness: Vec<(String, Arc<AtomicI64>)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Records waiting on input topics, over all processors.
    pub backlog: i64,
    pub in_flight: i64,
    /// False when some processor's metrics could not be read.
    pub complete: bool,
}

impl Snapshot {
    fn idle(&self) -> bool {
        self.complete && self.backlog <= 0 && self.in_flight == 0
    }
}

/// (consumed from `inputs`, in flight) from one processor's Prometheus text.
fn parse(text: &str, inputs: &[String]) -> (i64, i64) {
    let consumed: f64 = inputs
        .iter()
        .filter_map(|t| sample_sum(text, "notify_records_consumed_total", &[("topic", t)]))
        .sum();
    let in_flight = sample_sum(text, "notify_in_flight_records", &[]).unwrap_or(0.0);
    (consumed as i64, in_flight as i64)
}

/// (records processed, seconds spent in `process()` over them) of each processor, from its
/// `process_duration_seconds` histogram; None where the metrics could not be read.
pub async fn process_times(procs: &[Watched]) -> Vec<Option<(f64, f64)>> {
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(procs.len());
    for p in procs {
        let text = match http.get(&p.metrics_url).send().await {
            Ok(r) => r.text().await.ok(),
            Err(_) => None,
        };
        out.push(text.map(|t| {
            let value = |suffix: &str| {
                let name = format!("notify_process_duration_seconds_{suffix}");
                sample_sum(&t, &name, &[]).unwrap_or(0.0)
            };
            (value("count"), value("sum"))
        }));
    }
    out
}

pub async fn snapshot(
    kafka: &Kafka,
    http: &reqwest::Client,
    procs: &[Watched],
) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot {
        complete: true,
        ..Snapshot::default()
    };
    let mut texts = Vec::with_capacity(procs.len());
    for p in procs {
        let text = match http.get(&p.metrics_url).send().await {
            Ok(r) => r.text().await.ok(),
            Err(_) => None,
        };
        s.complete &= text.is_some();
        texts.push(text.unwrap_or_default());
    }
    // Written to each topic a processor produces (acknowledged records only).
    let mut produced: HashMap<&str, f64> = HashMap::new();
    for (p, text) in procs.iter().zip(&texts) {
        for t in &p.outputs {
            *produced.entry(t.as_str()).or_default() +=
                sample_sum(text, "notify_records_produced_total", &[("topic", t)]).unwrap_or(0.0);
        }
    }
    let mut ends: HashMap<&str, i64> = HashMap::new();
    for (p, text) in procs.iter().zip(&texts) {
        let (consumed, in_flight) = parse(text, &p.inputs);
        // Read after the metrics: a record appended in between counts as waiting, never as
        // consumed twice.
        let mut written = 0;
        for t in &p.inputs {
            let by_harness = p
                .harness
                .iter()
                .find(|(h, _)| h == t)
                .map(|(_, n)| n.load(Relaxed));
            written += match (produced.get(t.as_str()), ends.get(t.as_str())) {
                (Some(n), _) => *n as i64 + by_harness.unwrap_or(0),
                (None, _) if by_harness.is_some() => by_harness.unwrap_or(0),
                (None, Some(e)) => *e,
                (None, None) => {
                    let e = kafka.end_offsets(t)?;
                    ends.insert(t, e);
                    e
                }
            };
        }
        s.backlog += written - consumed;
        s.in_flight += in_flight;
    }
    Ok(s)
}

/// Waits until nothing waits and nothing is in flight, twice in a row (a record between two
/// processors shows as waiting on the next one's input once acknowledged). Returns whether
/// that happened before `timeout`, and the seconds it took.
pub async fn until_idle(
    kafka: &Kafka,
    procs: &[Watched],
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(bool, f64)> {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut idle_in_a_row = 0;
    while start.elapsed() < timeout {
        alive()?;
        let s = snapshot(kafka, &http, procs).await?;
        idle_in_a_row = if s.idle() { idle_in_a_row + 1 } else { 0 };
        if idle_in_a_row >= 2 {
            return Ok((true, start.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((false, start.elapsed().as_secs_f64()))
}

/// Samples the backlog every `every` on its own Kafka client until `stop`, as (seconds since
/// the start, records waiting). Runs as its own task, beside the open-loop producer.
pub fn sample_backlog(
    bootstrap: String,
    procs: Vec<Watched>,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<(f64, i64)>>> {
    tokio::spawn(async move {
        let kafka = Kafka::connect(&bootstrap)?;
        let http = reqwest::Client::new();
        let start = Instant::now();
        let mut points = Vec::new();
        while !stop.is_cancelled() {
            let s = snapshot(&kafka, &http, &procs).await?;
            if s.complete {
                points.push((start.elapsed().as_secs_f64(), s.backlog + s.in_flight));
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
        Ok(points)
    })
}

/// Backlog growth over a phase: the least-squares slope of the samples after the first fifth
/// (the pipeline filling up to its steady in-flight level), times the phase length.
pub fn growth(points: &[(f64, i64)], seconds: f64) -> f64 {
    let from = points.len() / 5;
    let p = &points[from..];
    if p.len() < 2 {
        return f64::NAN;
    }
    let n = p.len() as f64;
    let mx = p.iter().map(|q| q.0).sum::<f64>() / n;
    let my = p.iter().map(|q| q.1 as f64).sum::<f64>() / n;
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 as f64 - my)).sum();
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return f64::NAN;
    }
    sxy / sxx * seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_consumed_of_the_inputs_only_and_in_flight() {
        let text = "# HELP x\n\
            notify_records_consumed_total{processor=\"deliver-apns\",topic=\"in\"} 40\n\
            notify_records_consumed_total{processor=\"deliver-apns\",topic=\"table\"} 7\n\
            notify_in_flight_records{processor=\"deliver-apns\"} 3\n";
        assert_eq!(parse(text, &["in".to_string()]), (40, 3));
    }

    #[test]
    fn growth_is_the_slope_over_the_phase() {
        let rising: Vec<(f64, i64)> = (0..20).map(|i| (i as f64 * 0.5, 100 * i)).collect();
        assert!((growth(&rising, 10.0) - 2_000.0).abs() < 1e-6);
        let flat: Vec<(f64, i64)> = (0..20).map(|i| (i as f64 * 0.5, 50 + i % 2)).collect();
        assert!(growth(&flat, 10.0).abs() < 20.0);
        assert!(growth(&[(0.0, 1)], 1.0).is_nan());
    }
}

/// What every process did, summed from their counters: the work per request of a run.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Records written to Kafka (acknowledged), by topic.
    pub produced: std::collections::BTreeMap<String, f64>,
    /// CQL statements by kind (read, write, batch, lwt) and rows written inside batches.
    pub cql: std::collections::BTreeMap<String, f64>,
    pub cql_batched_rows: f64,
    /// Requests forwarded to their user's partition (arrived on another one).
    pub forwarded: f64,
}

pub async fn counters(procs: &[Watched]) -> Counters {
    let http = reqwest::Client::new();
    let mut c = Counters::default();
    for p in procs {
        let Ok(r) = http.get(&p.metrics_url).send().await else {
            continue;
        };
        let Ok(text) = r.text().await else { continue };
        for t in &p.outputs {
            let n = sample_sum(&text, "notify_records_produced_total", &[("topic", t)]);
            *c.produced.entry(t.clone()).or_default() += n.unwrap_or(0.0);
        }
        for kind in ["read", "write", "batch", "lwt"] {
            let n = sample_sum(&text, "notify_cql_statements_total", &[("kind", kind)]);
            *c.cql.entry(kind.to_string()).or_default() += n.unwrap_or(0.0);
        }
        c.cql_batched_rows +=
            sample_sum(&text, "notify_cql_batched_rows_total", &[]).unwrap_or(0.0);
        c.forwarded += sample_sum(
            &text,
            "notify_stage_decisions_total",
            &[("stage", "forward"), ("decision", "forwarded")],
        )
        .unwrap_or(0.0);
    }
    c
}
