//! The whole pipeline: every processor in its own process (`notify run <name>`) on this run's
//! private topics, delivering to a `notify sandbox` process. First the maximum rate (a
//! pre-filled backlog of requests drained by the whole pipeline), then open-loop load at 25,
//! 50, 75 and 90% of it: end-to-end latency (request `created_at` to the broker's append of
//! its SENT status) and whether the backlog stayed flat.

mod analyse;
pub mod cpu;
mod phases;
mod procs;
mod results;
mod watch;

use std::collections::BTreeMap;

pub use procs::Mode;

use crate::{Args, Ctx};

/// Loads of the open-loop phases, as fractions of the maximum rate.
pub const LOADS: [f64; 4] = [0.25, 0.5, 0.75, 0.9];

/// `runtime.lanes` for the processors that wait on the CQL database or a provider for every
/// record (rate limits, delivery): their throughput is lanes / round trip, not CPU, so they
/// run with more lanes than the default, as the chart deploys the deliverers.
pub const IO_BOUND_LANES: usize = 256;

/// The lanes a processor runs with in the pipeline; None when it has no runtime lanes.
pub fn lanes_of(name: &str) -> Option<usize> {
    match name {
        // Dedup batches its ledger claims over its own lanes (setting `lanes`, default 256).
        "dedup" => Some(256),
        "retry" => None,
        // A CQL round trip per record, as the chart deploys it.
        "ratelimit" => Some(64),
        "chain" => Some(notify_chain::ChainSettings::default().lanes),
        n if n.starts_with("deliver-") => Some(IO_BOUND_LANES),
        _ => Some(notify_runtime::config::RuntimeConfig::default().lanes),
    }
}
/// Requests pre-filled at most for one process per stage, which drains far slower than the
/// chain: the drain only has to be long enough to be a steady state.
const MAX_SPLIT_PREFILL: u64 = 100_000;
const QUICK_PREFILL: u64 = 300;
/// User profiles at most (each with an iOS and an Android device and a phone number).
const MAX_USERS: u64 = 50_000;

/// One open-loop phase.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub fraction: f64,
    /// Requests/s offered.
    pub rate: f64,
    pub seconds: f64,
    /// When the producer started and stopped (ms since the epoch).
    pub from_ms: i64,
    pub to_ms: i64,
    pub sent: u64,
    /// SENT append time minus `created_at`, ms, of the requests created in the phase.
    pub latencies_ms: Vec<f64>,
    /// Terminal statuses appended during the phase, per second.
    pub statuses_per_s: f64,
    /// (seconds into the phase, records waiting or in flight over all processors).
    pub backlog: Vec<(f64, i64)>,
    /// Least-squares backlog growth over the phase (records).
    pub growth: f64,
    pub sustainable: bool,
    /// Seconds after the producer stopped until nothing waited; `drained` false at the cap.
    pub drain_s: f64,
    pub drained: bool,
}

/// One process of the run: its peak memory and its share of the CPU while the backlog drained.
#[derive(Debug, Clone)]
pub struct Process {
    pub name: String,
    pub processor: bool,
    pub peak_rss_mib: f64,
    /// Cores used from the first terminal status of the drain to the last (1.0 = one core).
    pub cores: f64,
    /// Records through `process()` during the drain and the seconds spent in it (a lane
    /// waits there for the CQL database or the provider); NaN for the non-processors.
    pub processed: f64,
    pub process_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct PipelineResult {
    pub requests: u64,
    /// Of the pre-filled requests, those written with librdkafka's default partitioner
    /// (CRC32, as Python and Go clients do); the others with murmur2 (as Java does).
    pub crc32_requests: u64,
    /// What the processes did during the drain, from their counters.
    pub counters: watch::Counters,
    pub users: u64,
    /// False when the pre-filled backlog was not drained within the cap.
    pub complete: bool,
    /// Terminal statuses of the pre-filled requests, first to last, and their rate.
    pub terminal: u64,
    /// Distinct messages among them (a message with two terminal statuses counts once).
    pub terminal_messages: u64,
    /// Provider calls of the drain that repeated an earlier one (the sandbox's count).
    pub duplicate_sends: u64,
    pub provider_calls: u64,
    pub seconds: f64,
    pub status_rate: f64,
    /// Pre-filled requests over the same seconds: what the loads are fractions of.
    pub request_rate: f64,
    pub outcomes: BTreeMap<String, u64>,
    /// Cores busy on the whole machine during the drain.
    pub machine_cores: f64,
    /// (records processed, seconds in `process()`) of each processor at the end of the drain.
    pub process_times: Vec<Option<(f64, f64)>>,
    pub loads: Vec<Load>,
    pub processes: Vec<Process>,
    /// Terminal statuses/s and requests sent/s, per second since the processors started.
    pub statuses_timeline: Vec<(f64, f64)>,
    pub sent_timeline: Vec<(f64, f64)>,
    /// Why the open-loop phases did not run, when they did not.
    pub skipped: Option<String>,
    /// Every processor's `/metrics` each second of the run (the dashboard plot).
    pub dashboard: Vec<crate::dashboard::Scrape>,
}

/// Provider calls per request of the throughput workload (iOS, Android, SMS).
pub const CALLS_PER_REQUEST: u64 = 3;

impl PipelineResult {
    pub fn per_request(&self, n: f64) -> f64 {
        n / self.requests.max(1) as f64
    }

    /// Kafka records written per request: the request itself and everything the processes
    /// wrote (acknowledged) during the drain.
    pub fn records_per_request(&self) -> f64 {
        let written: f64 = self.counters.produced.values().sum();
        self.per_request(self.requests as f64 + written)
    }

    pub fn forwarded_share(&self) -> f64 {
        self.per_request(self.counters.forwarded)
    }

    /// Machine CPU (every process on the box) per request over the drain, in ms.
    pub fn cpu_ms_per_request(&self) -> f64 {
        1_000.0 * self.machine_cores * self.seconds / self.requests.max(1) as f64
    }

    /// Messages of the drain without a terminal outcome.
    pub fn lost(&self) -> u64 {
        (CALLS_PER_REQUEST * self.requests).saturating_sub(self.terminal_messages)
    }

    /// The highest offered rate whose phase, and every lower one, kept its backlog flat: a
    /// lower load that was not sustained makes a higher one that looked sustained noise.
    pub fn max_sustainable(&self) -> Option<&Load> {
        let mut by_rate: Vec<&Load> = self.loads.iter().collect();
        by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        by_rate.into_iter().take_while(|l| l.sustainable).last()
    }

    pub fn at_half(&self) -> Option<&Load> {
        self.loads.iter().find(|l| (l.fraction - 0.5).abs() < 1e-9)
    }
}

/// Runs the whole measurement on private topics and a private keyspace, removed afterwards.
pub async fn measure(args: &Args, ctx: &Ctx, mode: Mode) -> anyhow::Result<PipelineResult> {
    let requests = match (args.quick, mode) {
        (true, _) => QUICK_PREFILL,
        (false, Mode::Chain) => args.records,
        (false, Mode::Split) => args.records.min(MAX_SPLIT_PREFILL),
    };
    let topics = procs::Topics::new(ctx, mode);
    let (plain, stamped) = topics.all();
    ctx.kafka.create(&plain, false).await?;
    ctx.kafka.create(&stamped, true).await?;
    let keyspace = format!("bench_{}_{}", ctx.run_id, mode.label());
    let mut config = notify_runtime::Config::load(None)?;
    config.cql.keyspace = keyspace.clone();
    let session = notify_runtime::cql::connect(&config.cql).await?;
    let result = async {
        notify_runtime::cql::migrate(&session, &config.cql).await?;
        let plan = phases::Plan {
            requests,
            users: (requests / 10).clamp(100, MAX_USERS),
            phase_seconds: args.latency_seconds.max(if args.quick { 2.0 } else { 1.0 }),
            quick: args.quick,
            mode,
        };
        phases::run(ctx, &topics, &keyspace, &plan).await
    }
    .await;
    ctx.kafka.delete(&plain).await;
    ctx.kafka.delete(&stamped).await;
    // Its tables would otherwise stay in the shared database after every run.
    if let Err(e) = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
    {
        tracing::warn!(error = %e, %keyspace, "dropping the pipeline keyspace");
    }
    result
}
