//! The run itself: reference data and backlog, the processes, the drain (maximum rate), the
//! open-loop phases, then everything read back.

use std::time::Duration;

use notify_runtime::{CancellationToken, now_ms};

use super::procs::{Sandbox, Topics};
use super::watch::{self, Watched};
use super::{LOADS, Load, PipelineResult, analyse, cpu, procs, results};
use crate::kafka::{Pipelined, bulk_producer, bulk_producer_with};
use crate::workload::Workload;
use crate::{Ctx, hop, procfs, stages};

pub struct Plan {
    pub requests: u64,
    pub users: u64,
    pub phase_seconds: f64,
    pub quick: bool,
    pub mode: procs::Mode,
}

impl Plan {
    fn drain_timeout(&self) -> Duration {
        if self.quick {
            Duration::from_secs(45)
        } else {
            Duration::from_secs((60 + self.requests / 50).min(900))
        }
    }

    fn phase_drain_timeout(&self) -> Duration {
        if self.quick {
            Duration::from_secs(20)
        } else {
            Duration::from_secs_f64((3.0 * self.phase_seconds).max(30.0))
        }
    }
}

/// A phase sustains its load when its backlog grew by less than this share of what was sent
/// (plus a few records of sampling noise) and it drained afterwards.
const GROWTH_TOLERANCE: f64 = 0.05;

/// What the processes are, for the drive and the read-back.
struct Procs<'a> {
    running: Vec<procs::Started>,
    sandbox: &'a Sandbox,
    tracked: Vec<cpu::Tracked>,
    samples: Vec<cpu::Sample>,
    /// Requests the harness wrote to the intake so far.
    intake_written: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

pub async fn run(
    ctx: &Ctx,
    topics: &Topics,
    keyspace: &str,
    plan: &Plan,
) -> anyhow::Result<PipelineResult> {
    let chain = &topics.chain;
    tracing::info!(
        requests = plan.requests,
        users = plan.users,
        "pipeline: reference data and backlog"
    );
    stages::fill_reference_data(
        &ctx.kafka,
        &ctx.codec,
        chain,
        plan.users,
        stages::Profiles::ThreeChannels,
    )
    .await?;
    let mut workload = Workload::three_channels(7, plan.users);
    let crc32_requests =
        prefill_two_partitioners(ctx, &mut workload, &chain.requests, plan.requests).await?;
    let dir = std::env::temp_dir().join(format!("notify-bench-{}-sandbox", ctx.run_id));
    let log = std::env::temp_dir().join(format!("notify-bench-{}-sandbox.log", ctx.run_id));
    let sandbox = Sandbox::start(&ctx.notify_bin, &dir, &log).await?;
    let running = match procs::spawn_all(ctx, topics, keyspace, &sandbox, plan.mode).await {
        Ok(r) => r,
        Err(e) => {
            sandbox.stop().await;
            return Err(e);
        }
    };
    let mut tracked: Vec<cpu::Tracked> = running
        .iter()
        .map(|s| cpu::Tracked {
            label: s.running.processor().to_string(),
            pid: s.running.pid(),
            processor: true,
        })
        .collect();
    tracked.push(cpu::Tracked {
        label: "sandbox".into(),
        pid: sandbox.pid(),
        processor: false,
    });
    tracked.extend(cpu::stack_processes());
    let mut p = Procs {
        running,
        sandbox: &sandbox,
        tracked,
        samples: Vec::new(),
        intake_written: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
            plan.requests as i64,
        )),
    };
    let started = now_ms();
    let mut result = PipelineResult {
        crc32_requests,
        requests: plan.requests,
        users: plan.users,
        ..PipelineResult::default()
    };
    let recording = CancellationToken::new();
    let recorder = crate::dashboard::record(
        p.running
            .iter()
            .map(|s| {
                (
                    s.running.processor().to_string(),
                    s.running.metrics_url().to_string(),
                )
            })
            .collect(),
        Duration::from_secs(1),
        recording.clone(),
    );
    let measured = drive(ctx, topics, plan, &mut p, &mut workload, &mut result).await;
    recording.cancel();
    result.dashboard = recorder.await.unwrap_or_default();
    let Procs {
        running,
        tracked,
        samples,
        ..
    } = p;
    let mut peaks: Vec<f64> = running.iter().map(|s| s.running.peak_rss_mib()).collect();
    peaks.push(procfs::rss_mib(sandbox.pid()).map_or(f64::NAN, |r| r.1));
    let stops: Vec<_> = running
        .into_iter()
        .map(|s| tokio::spawn(s.running.stop()))
        .collect();
    for s in stops {
        if let Err(e) = s.await? {
            tracing::warn!(error = %e, "stopping a pipeline processor");
        }
    }
    sandbox.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    measured?;
    let read = results::Read {
        started,
        tracked: &tracked,
        peaks: &peaks,
        samples: &samples,
    };
    read.into(ctx, topics, &mut result).await?;
    Ok(result)
}

/// The drain of the pre-filled backlog, then each open-loop phase, while the processes run.
async fn drive(
    ctx: &Ctx,
    topics: &Topics,
    plan: &Plan,
    p: &mut Procs<'_>,
    workload: &mut Workload,
    result: &mut PipelineResult,
) -> anyhow::Result<()> {
    let watched: Vec<Watched> = p
        .running
        .iter()
        .map(|s| Watched {
            metrics_url: s.running.metrics_url().to_string(),
            inputs: s.inputs.clone(),
            outputs: s.outputs.clone(),
            harness: vec![(topics.chain.requests.clone(), p.intake_written.clone())],
        })
        .collect();
    let (running, tracked, samples) = (&mut p.running, &p.tracked, &mut p.samples);
    let mut tick = || -> anyhow::Result<()> {
        for s in running.iter_mut() {
            s.running.check_alive()?;
        }
        samples.push(cpu::sample(tracked));
        Ok(())
    };
    tracing::info!("pipeline: draining the pre-filled backlog");
    let (drained, _) =
        watch::until_idle(&ctx.kafka, &watched, plan.drain_timeout(), &mut tick).await?;
    result.complete = drained;
    result.process_times = watch::process_times(&watched).await;
    result.counters = watch::counters(&watched).await;
    let statuses = analyse::statuses(ctx, &topics.chain.status).await?;
    let terminal: Vec<i64> = statuses
        .iter()
        .filter(|s| analyse::terminal(s.outcome))
        .map(|s| s.at)
        .collect();
    let (Some(first), Some(last)) = (terminal.first(), terminal.last()) else {
        anyhow::bail!(
            "the pipeline wrote no terminal status for {} requests",
            plan.requests
        );
    };
    // Requests per second of the drain: what the open-loop loads are fractions of. Cut by the
    // cap, how many requests were through is unknown (only their statuses are counted).
    let seconds = ((last - first) as f64 / 1_000.0).max(0.001);
    result.request_rate = if drained {
        plan.requests as f64 / seconds
    } else {
        f64::NAN
    };
    if !drained {
        result.skipped = Some(format!(
            "the pre-filled backlog was not drained within {:.0} s, so there is no steady \
             maximum to take fractions of",
            plan.drain_timeout().as_secs_f64()
        ));
        return Ok(());
    }
    let stats = p.sandbox.stats().await?;
    result.provider_calls = stats.accepted;
    result.duplicate_sends = stats.repeated;
    p.sandbox.clear().await;
    for fraction in LOADS {
        let rate = (result.request_rate * fraction).max(1.0);
        tracing::info!(fraction, rate, "pipeline: open-loop phase");
        let stop = CancellationToken::new();
        let sampler = watch::sample_backlog(
            ctx.kafka.bootstrap.clone(),
            watched.clone(),
            Duration::from_millis(250),
            stop.clone(),
        );
        let from_ms = now_ms();
        let sent = hop::open_loop(
            &ctx.kafka,
            &ctx.codec,
            workload,
            &topics.chain.requests,
            rate,
            plan.phase_seconds,
            Some(&p.intake_written),
        )
        .await;
        let to_ms = now_ms();
        stop.cancel();
        let backlog = sampler.await??;
        let sent = sent?;
        let (drained, drain_s) =
            watch::until_idle(&ctx.kafka, &watched, plan.phase_drain_timeout(), &mut tick).await?;
        p.sandbox.clear().await;
        let growth = watch::growth(&backlog, plan.phase_seconds);
        let allowed = GROWTH_TOLERANCE * sent as f64 + 10.0;
        result.loads.push(Load {
            fraction,
            rate,
            seconds: plan.phase_seconds,
            from_ms,
            to_ms,
            sent,
            backlog,
            growth,
            // NaN growth (too few samples) is no evidence of a flat backlog.
            sustainable: drained && growth <= allowed,
            drain_s,
            drained,
            ..Load::default()
        });
    }
    Ok(())
}

/// Writes `n` requests to `topic`, alternately with a murmur2 producer (as a Java service)
/// and a CRC32 one (librdkafka's default, as Python and Go services); returns how many went
/// through the CRC32 one.
async fn prefill_two_partitioners(
    ctx: &Ctx,
    workload: &mut Workload,
    topic: &str,
    n: u64,
) -> anyhow::Result<u64> {
    let mut murmur2 = Pipelined::new(bulk_producer_with(&ctx.kafka.bootstrap, "murmur2_random")?);
    let mut crc32 = Pipelined::new(bulk_producer(&ctx.kafka.bootstrap)?);
    for i in 0..n {
        let r = workload.next(now_ms());
        let value = ctx.codec.encode(topic, &r).await?;
        let out = if i % 2 == 0 { &mut murmur2 } else { &mut crc32 };
        out.send(topic, &r.user_id, &value).await?;
        if (i + 1) % 100_000 == 0 {
            tracing::info!(written = i + 1, of = n, "pipeline: pre-filling requests");
        }
    }
    murmur2.flush().await?;
    crc32.flush().await?;
    Ok(n / 2)
}
