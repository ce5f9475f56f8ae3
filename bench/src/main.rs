//! `notify-bench`: the benchmark harness behind `make bench` (see BENCHMARKS.md, which it
//! writes). Everything runs against the local stack, and the ceiling is measured in the same
//! run so ratios compare like with like on a shared, noisy machine.

mod ceiling;
mod cql_ceiling;
mod dashboard;
mod hop;
mod kafka;
mod pipeline;
mod plot;
mod procfs;
mod profile;
mod report;
mod stage;
mod stages;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use notify_runtime::codec::AvroCodec;
use notify_runtime::config::RegistryConfig;
use stage::Running;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "notify-bench",
    about = "Benchmarks on the local stack; writes BENCHMARKS.md and PNG plots"
)]
pub struct Args {
    /// Seconds, small counts: checks that the harness works and produces numbers (make test).
    #[arg(long)]
    quick: bool,
    /// Which parts to measure (comma-separated); the report covers only those.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Part::ALL)]
    only: Vec<Part>,
    /// How the whole pipeline runs its stages, in the order measured (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [pipeline::Mode::Chain, pipeline::Mode::Split])]
    modes: Vec<pipeline::Mode>,
    /// Records pre-filled for the ceiling, the hop and each stage (and requests for the whole
    /// pipeline as a chain; one process per stage takes at most 100,000).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Seconds of open-loop load for each latency measurement.
    #[arg(long, default_value_t = 15.0)]
    latency_seconds: f64,
    /// Longest a stage may run on its input; a slower stage is reported with what it did.
    #[arg(long, default_value_t = 240)]
    stage_cap_s: u64,
    /// Do not sample each stage with `perf` (profiling is on when perf is installed, off in
    /// quick mode).
    #[arg(long)]
    no_profile: bool,
    /// Where the report goes (plots go to `plots`, linked relative to it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory for the PNG plots.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// The `notify` binary that runs each processor (default: target/release/notify).
    #[arg(long)]
    notify_bin: Option<PathBuf>,
    #[arg(
        long,
        env = "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    bootstrap: String,
    #[arg(
        long,
        env = "NOTIFY_REGISTRY__URL",
        default_value = "http://127.0.0.1:18081/apis/ccompat/v7"
    )]
    registry: String,
}

/// The parts of a run, in the order they are measured.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Kafka's ProducerPerformance and ConsumerPerformance.
    Ceiling,
    /// The no-op hop, at-least-once and transactional.
    Hop,
    /// Each stage alone on a pre-filled input, and dedup against the naive scheme.
    Stages,
    /// The whole pipeline against the provider sandbox: maximum rate, then open loop at
    /// 25/50/75/90% of it.
    Pipeline,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Ceiling, Part::Hop, Part::Stages, Part::Pipeline];
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => Ok(()),
        }
    }
}

/// What every measurement needs.
pub struct Ctx {
    pub kafka: kafka::Kafka,
    pub codec: AvroCodec,
    pub registry: String,
    pub notify_bin: PathBuf,
    pub run_id: String,
    pub cap_s: u64,
    /// Sample each stage and the avro hop with `perf` (see profile.rs).
    pub profile: bool,
}

impl Ctx {
    /// Starts sampling `running` when profiling is on, once it serves its /metrics: attached
    /// earlier (even before the child's exec), perf may see only the first thread and miss
    /// the runtime's and the Kafka client's, which do the work.
    pub async fn profiler(&self, running: &mut Running, label: &str) -> Option<profile::Profiler> {
        if !self.profile {
            return None;
        }
        if !running.serves_metrics(Duration::from_secs(30)).await {
            tracing::warn!(
                label,
                "no /metrics after 30 s or the process exited; no profile"
            );
            return None;
        }
        // Kept for `perf report -i target/bench-profiles/<label>.perf` (symbols, callers).
        let dir = repo_root().join("target/bench-profiles");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(error = %e, dir = %dir.display(), "no profile");
            return None;
        }
        profile::Profiler::attach(running.pid(), &dir.join(format!("{label}.perf")))
    }

    /// How long a hop's drain may take: generous, it is the reference measurement.
    pub fn drain_timeout(&self, records: u64) -> Duration {
        Duration::from_secs(60 + records / 2_000)
    }
    /// How long one stage may run; past it the figures cover what was done (marked so).
    pub fn stage_timeout(&self, records: u64) -> Duration {
        Duration::from_secs(self.cap_s.min(60 + records / 2_000))
    }
    pub fn topic(&self, base: &str) -> String {
        format!("bench.{}.{base}", self.run_id)
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,notify_bench=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    if args.quick {
        args.records = args.records.min(5_000);
        args.latency_seconds = args.latency_seconds.min(1.0);
    }
    if let Err(e) = run(args).await {
        eprintln!("notify-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let root = repo_root();
    let started = Instant::now();
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            root.join("target/bench-quick/BENCHMARKS.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });
    let plots = args.plots.clone().unwrap_or_else(|| {
        out.parent()
            .map(|p| p.join("bench/plots"))
            .unwrap_or_else(|| PathBuf::from("bench/plots"))
    });
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let notify_bin = args.notify_bin.clone().unwrap_or_else(|| {
        root.join(if args.quick {
            "target/debug/notify"
        } else {
            "target/release/notify"
        })
    });
    if !notify_bin.exists() {
        bail!(
            "{} is missing (cargo build --bin notify [--release])",
            notify_bin.display()
        );
    }
    let codec = AvroCodec::new(&RegistryConfig {
        url: args.registry.clone(),
        ..RegistryConfig::default()
    })?;
    let ctx = Ctx {
        kafka: kafka::Kafka::connect(&args.bootstrap)?,
        codec,
        registry: args.registry.clone(),
        notify_bin,
        run_id: format!("{}", notify_runtime::now_ms()),
        cap_s: if args.quick { 8 } else { args.stage_cap_s },
        profile: !args.quick && !args.no_profile && profile::available(),
    };
    if !ctx.profile && !args.quick && !args.no_profile {
        tracing::warn!("perf is not installed: the report will have no CPU profile");
    }
    let mut rep = report::Report::new(&args, &root);
    let topics = [
        ctx.topic("ceiling"),
        ctx.topic("requests"),
        ctx.topic("dlq"),
        ctx.topic("hop-raw"),
        ctx.topic("hop-avro"),
        ctx.topic("hop-txn"),
    ];
    let chain = stages::Chain::new(&ctx, &topics[1], &topics[2]);
    let (chain_in, mut chain_out) = chain.topics();
    chain_out.push(ctx.topic("naive-out"));
    ctx.kafka.create(&topics[..3], false).await?;
    ctx.kafka.create(&chain_in, false).await?;
    ctx.kafka.create(&topics[3..], true).await?;
    ctx.kafka.create(&chain_out, true).await?;
    let result = measure(&args, &ctx, &root, &mut rep).await;
    let result = match result {
        Ok(()) if args.only.contains(&Part::Stages) => {
            measure_stages(&args, &ctx, &chain, &mut rep).await
        }
        e => e,
    };
    if result.is_ok() && args.only.contains(&Part::Pipeline) {
        for &mode in &args.modes {
            tracing::info!(
                mode = mode.label(),
                "whole pipeline against the provider sandbox"
            );
            // A failure is reported in its section, like a stage's, not lost with the others.
            let measured = pipeline::measure(&args, &ctx, mode)
                .await
                .map_err(|e| format!("{e:#}"));
            rep.pipelines.push((mode, measured));
        }
    }
    ctx.kafka.delete(&topics).await;
    ctx.kafka.delete(&chain_in).await;
    ctx.kafka.delete(&chain_out).await;
    result?;
    rep.elapsed_s = started.elapsed().as_secs_f64();
    let plot_files = plot::draw(&rep, &plots)?;
    rep.write(&out, &plots, &plot_files)?;
    rep.check_complete()?;
    tracing::info!(report = %out.display(), seconds = rep.elapsed_s, "done");
    println!(
        "notify-bench: wrote {} and {} plots",
        out.display(),
        plot_files.len()
    );
    Ok(())
}

async fn measure(
    args: &Args,
    ctx: &Ctx,
    root: &std::path::Path,
    rep: &mut report::Report,
) -> anyhow::Result<()> {
    let n = args.records;
    if args.only.contains(&Part::Ceiling) {
        tracing::info!(
            records = n,
            "ceiling: ProducerPerformance, ConsumerPerformance"
        );
        rep.ceiling = Some(ceiling::measure(
            root,
            &ctx.kafka.bootstrap,
            &ctx.topic("ceiling"),
            n,
        )?);
        // The database's own ceiling is cheaper per row than Kafka's, so fewer rows do.
        let rows = n.min(200_000);
        tracing::info!(rows, "ceiling: the CQL database on the pipeline's rows");
        rep.cql_ceiling = Some(
            cql_ceiling::measure(&ctx.run_id, rows)
                .await
                .map_err(|e| format!("{e:#}")),
        );
    }
    if !args
        .only
        .iter()
        .any(|p| [Part::Hop, Part::Stages].contains(p))
    {
        return Ok(());
    }

    let mut workload = workload::Workload::new(42, (n / 10).max(100));
    let requests = ctx.topic("requests");
    tracing::info!(records = n, topic = %requests, "pre-filling");
    rep.record_bytes = hop::prefill(&ctx.kafka, &ctx.codec, &mut workload, &requests, n).await?;

    let dlq = ctx.topic("dlq");
    if !args.only.contains(&Part::Hop) {
        return Ok(());
    }
    for (label, mode, txn, out) in [
        ("hop-raw", "raw", false, ctx.topic("hop-raw")),
        ("hop-avro", "avro", false, ctx.topic("hop-avro")),
        ("hop-raw-txn", "raw", true, ctx.topic("hop-txn")),
    ] {
        if txn && args.quick {
            // The transactional hop is the slowest part of the quick run and adds no coverage
            // of the harness that the other two hops lack.
            continue;
        }
        tracing::info!(label, "no-op hop");
        let spec = hop::HopSpec {
            label,
            mode,
            transactional: txn,
            input: &requests,
            prefilled: n,
            output: &out,
            dlq: &dlq,
            latency_load: 0.5,
            latency_seconds: args.latency_seconds,
        };
        // The input grows with each latency phase: later hops drain those records too.
        let already = ctx.kafka.end_offsets(&requests)? as u64;
        let spec = hop::HopSpec {
            prefilled: already,
            ..spec
        };
        let result = hop::run(ctx, &mut workload, &spec).await?;
        rep.hops.push(result);
    }
    Ok(())
}

/// Each stage alone (as a chain), then dedup with the naive LWT scheme on the same input.
async fn measure_stages(
    args: &Args,
    ctx: &Ctx,
    chain: &stages::Chain,
    rep: &mut report::Report,
) -> anyhow::Result<()> {
    let keyspace = format!("bench_{}", ctx.run_id);
    // Environment-aware (NOTIFY_CQL__NODES, ...), like the processes it starts.
    let mut config = notify_runtime::Config::load(None)?;
    config.cql.keyspace = keyspace.clone();
    let session = notify_runtime::cql::connect(&config.cql).await?;
    notify_runtime::cql::migrate(&session, &config.cql).await?;
    drop(session);
    let users = (args.records / 10).max(100);
    stages::fill_reference_data(
        &ctx.kafka,
        &ctx.codec,
        chain,
        users,
        stages::Profiles::Mixed,
    )
    .await?;
    rep.stages = stages::run(ctx, chain, &keyspace)
        .await
        .into_iter()
        .map(|(name, r)| (name, r.map_err(|e| format!("{e:#}"))))
        .collect();
    let dedup_ok = rep.stages.iter().any(|(n, r)| n == "dedup" && r.is_ok());
    if !dedup_ok {
        return Ok(());
    }
    tracing::info!("dedup with the naive scheme (one LWT per event) on the same input");
    let records = ctx.kafka.scan(&chain.routed, |_| {})?;
    let naive_out = ctx.topic("naive-out");
    let naive = stages::run_naive_dedup(ctx, chain, &keyspace, &naive_out).await;
    let project_dups = report::dedup::duplicates(ctx, &chain.deduped).await?;
    let naive_dups = match &naive {
        Ok(_) => Some(report::dedup::duplicates(ctx, &naive_out).await?),
        Err(_) => None,
    };
    rep.dedup = Some(report::dedup::Compare {
        records,
        naive: naive.map_err(|e| format!("{e:#}")),
        project_dups,
        naive_dups,
    });
    Ok(())
}
