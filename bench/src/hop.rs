//! The no-op hop (the pass-through processor) and the load generators it shares with the
//! stage runs: pre-filling a topic, and an open-loop producer at a fixed rate.

use std::time::{Duration, Instant};

use notify_runtime::codec::AvroCodec;
use notify_runtime::now_ms;
use notify_runtime::records::NotificationRequest;
use rdkafka::Message;
use rdkafka::message::Timestamp;

use crate::kafka::{Kafka, Pipelined, bulk_producer};
use crate::stage::{self, Drain, Sample};
use crate::workload::Workload;

/// Writes `n` requests to `topic`; returns the mean value size in bytes.
pub async fn prefill(
    kafka: &Kafka,
    codec: &AvroCodec,
    workload: &mut Workload,
    topic: &str,
    n: u64,
) -> anyhow::Result<f64> {
    let mut out = Pipelined::new(bulk_producer(&kafka.bootstrap)?);
    let mut bytes = 0u64;
    for _ in 0..n {
        let r = workload.next(now_ms());
        let value = codec.encode(topic, &r).await?;
        bytes += value.len() as u64;
        out.send(topic, &r.user_id, &value).await?;
    }
    out.flush().await?;
    Ok(bytes as f64 / n.max(1) as f64)
}

/// Produces `rate` requests/s for `seconds` (open loop: the schedule never waits for the
/// system under test), each stamped `created_at` = the moment it is sent. Returns the count.
pub async fn open_loop(
    kafka: &Kafka,
    codec: &AvroCodec,
    workload: &mut Workload,
    topic: &str,
    rate: f64,
    seconds: f64,
    written: Option<&std::sync::atomic::AtomicI64>,
) -> anyhow::Result<u64> {
    let mut out = Pipelined::new(bulk_producer(&kafka.bootstrap)?);
    let tick = Duration::from_millis(10);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed().as_secs_f64() < seconds {
        interval.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let r = workload.next(now_ms());
            let value = codec.encode(topic, &r).await?;
            out.send(topic, &r.user_id, &value).await?;
            sent += 1;
            if let Some(w) = written {
                w.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    out.flush().await?;
    Ok(sent)
}

/// What one hop mode measured.
#[derive(Debug, Clone, Default)]
pub struct HopResult {
    pub label: String,
    pub drain: Drain,
    pub peak_rss_mib: f64,
    pub latency_rate: f64,
    /// Output append time minus `created_at`, ms, of the open-loop records.
    pub latencies_ms: Vec<f64>,
    /// Offsets beyond the records: transaction markers, so the run was transactional.
    pub markers: i64,
    pub samples: Vec<Sample>,
    /// Where its CPU went while it drained the pre-filled input (perf), when profiled.
    pub profile: Option<crate::profile::Profile>,
}

pub struct HopSpec<'a> {
    pub label: &'a str,
    pub mode: &'a str,
    pub transactional: bool,
    pub input: &'a str,
    pub prefilled: u64,
    pub output: &'a str,
    pub dlq: &'a str,
    /// Open-loop rate for the latency phase as a fraction of the measured drain rate.
    pub latency_load: f64,
    pub latency_seconds: f64,
}

/// Runs the pass-through on a pre-filled input (throughput, CPU), then at a fixed fraction of
/// that rate open loop (latency), in one process.
pub async fn run(
    ctx: &crate::Ctx,
    workload: &mut Workload,
    spec: &HopSpec<'_>,
) -> anyhow::Result<HopResult> {
    let env = vec![
        (
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS".into(),
            ctx.kafka.bootstrap.clone(),
        ),
        ("NOTIFY_REGISTRY__URL".into(), ctx.registry.clone()),
        (
            "NOTIFY_KAFKA__TRANSACTIONAL".into(),
            spec.transactional.to_string(),
        ),
        ("NOTIFY_RUNTIME__DLQ_TOPIC".into(), spec.dlq.to_string()),
        (
            "NOTIFY_PROCESSORS__PASSTHROUGH__INPUT".into(),
            spec.input.to_string(),
        ),
        (
            "NOTIFY_PROCESSORS__PASSTHROUGH__OUTPUT".into(),
            spec.output.to_string(),
        ),
        (
            "NOTIFY_PROCESSORS__PASSTHROUGH__MODE".into(),
            spec.mode.to_string(),
        ),
    ];
    let prefix = format!("{}-{}", ctx.run_id, spec.label);
    let mut running = stage::spawn(
        &ctx.notify_bin,
        "passthrough",
        &prefix,
        &env,
        &[spec.output.to_string()],
    )?;
    let timeout = ctx.drain_timeout(spec.prefilled);
    let mut profile = None;
    let result = async {
        let profiler = ctx.profiler(&mut running, spec.label).await;
        let drain = running
            .drain(&ctx.kafka, spec.prefilled as i64, spec.prefilled, timeout)
            .await?;
        if let Some(p) = profiler {
            profile = p.finish().await;
        }
        let rate = (drain.rate * spec.latency_load).max(50.0);
        let phase_start = now_ms();
        let sent = open_loop(
            &ctx.kafka,
            &ctx.codec,
            workload,
            spec.input,
            rate,
            spec.latency_seconds,
            None,
        )
        .await?;
        let target = (spec.prefilled + sent) as i64;
        running.drain(&ctx.kafka, target, sent, timeout).await?;
        anyhow::Ok((drain, rate, phase_start))
    }
    .await;
    let peak = running.peak_rss_mib();
    let samples = running.stop().await?;
    let (drain, latency_rate, phase_start) = result?;
    let mut payloads = Vec::new();
    let read = ctx.kafka.scan(spec.output, |m| {
        if let Timestamp::LogAppendTime(at) = m.timestamp()
            && at >= phase_start
            && let Some(p) = m.payload()
        {
            payloads.push((at, p.to_vec()));
        }
    })?;
    let mut latencies_ms = Vec::with_capacity(payloads.len());
    for (at, bytes) in payloads {
        let r: NotificationRequest = ctx.codec.decode(Some(&bytes)).await?;
        if r.created_at >= phase_start {
            latencies_ms.push((at - r.created_at) as f64);
        }
    }
    let end = ctx.kafka.end_offsets(spec.output)?;
    Ok(HopResult {
        label: spec.label.to_string(),
        drain,
        peak_rss_mib: peak,
        latency_rate,
        latencies_ms,
        markers: end - read as i64,
        samples,
        profile,
    })
}
