//! BENCHMARKS.md: figures, ratios to the ceiling of the same run, targets, machine facts and
//! the exact command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::Args;
use crate::ceiling::{Ceiling, RECORD_SIZE};
use crate::hop::HopResult;

pub struct Report {
    pub quick: bool,
    pub parts: Vec<crate::Part>,
    pub records: u64,
    pub command: String,
    pub machine: Vec<(String, String)>,
    pub ceiling: Option<Ceiling>,
    /// The CQL database's ceiling on the pipeline's rows (cql_ceiling.rs).
    pub cql_ceiling: Option<Result<Vec<crate::cql_ceiling::CqlWorkload>, String>>,
    pub record_bytes: f64,
    pub hops: Vec<HopResult>,
    pub stages: Vec<(String, Result<crate::stages::StageResult, String>)>,
    pub dedup: Option<dedup::Compare>,
    /// The whole pipeline in each mode measured (chain first).
    pub pipelines: Vec<(
        crate::pipeline::Mode,
        Result<crate::pipeline::PipelineResult, String>,
    )>,
    pub elapsed_s: f64,
}

impl Report {
    pub fn new(args: &Args, root: &Path) -> Report {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        Report {
            quick: args.quick,
            parts: args.only.clone(),
            records: args.records,
            command: format!(
                "make bench  # = dev/bench.sh -> notify-bench {}",
                argv.join(" ")
            ),
            machine: machine_facts(root),
            ceiling: None,
            cql_ceiling: None,
            record_bytes: 0.0,
            hops: Vec::new(),
            stages: Vec::new(),
            dedup: None,
            pipelines: Vec::new(),
            elapsed_s: 0.0,
        }
    }

    /// The quick mode's assertion: every section that ran produced real numbers.
    pub fn check_complete(&self) -> anyhow::Result<()> {
        use crate::Part;
        let positive = |what: &str, v: f64| -> anyhow::Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bail!("{what} is {v}, expected a positive number")
            }
        };
        if self.parts.contains(&Part::Ceiling) {
            let c = self.ceiling.as_ref().context("no ceiling measured")?;
            positive("ProducerPerformance records/s", c.producer_rate)?;
            positive("ConsumerPerformance records/s", c.consumer_rate)?;
            match &self.cql_ceiling {
                Some(Ok(cql)) => {
                    for w in cql {
                        positive(w.label, w.rows_per_s())?;
                        positive(w.label, w.db_us_per_row)?;
                    }
                }
                Some(Err(e)) => bail!("CQL ceiling failed: {e}"),
                None => bail!("no CQL ceiling measured"),
            }
        }
        if self.parts.contains(&Part::Hop) && self.hops.is_empty() {
            bail!("no hop measured");
        }
        if self.parts.contains(&Part::Stages) && self.stages.is_empty() {
            bail!("no stage measured");
        }
        for h in &self.hops {
            positive(&format!("{} records/s", h.label), h.drain.rate)?;
            positive(&format!("{} peak RSS", h.label), h.peak_rss_mib)?;
            if h.latencies_ms.is_empty() {
                bail!("{}: no latency samples", h.label);
            }
        }
        for (name, r) in &self.stages {
            match r {
                Ok(s) => positive(&format!("{name} records/s"), s.drain.rate)?,
                Err(e) => bail!("stage {name}: {e}"),
            }
        }
        if let Some(c) = &self.dedup {
            match &c.naive {
                Ok(n) => positive("naive dedup records/s", n.drain.rate)?,
                Err(e) => bail!("naive dedup: {e}"),
            }
        }
        if self.parts.contains(&Part::Pipeline) {
            pipeline::check_complete(&self.pipelines)?;
        }
        Ok(())
    }

    pub fn write(&self, out: &Path, plots: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
        let mut md = String::new();
        self.render(&mut md, out, plots, files)?;
        std::fs::write(out, md).with_context(|| format!("writing {}", out.display()))
    }

    fn render(
        &self,
        md: &mut String,
        out: &Path,
        _plots: &Path,
        files: &[PathBuf],
    ) -> std::fmt::Result {
        writeln!(md, "# Benchmarks\n")?;
        writeln!(
            md,
            "Written by `notify-bench` (bench/); do not edit by hand. Re-run with \
             `make bench` (add `BENCH_ARGS=\"--records N\"` to change the size).\n"
        )?;
        if self.quick {
            writeln!(
                md,
                "**Quick mode**: tiny counts, numbers are meaningless; this only shows the harness works.\n"
            )?;
        }
        writeln!(md, "- Command: `{}`", self.command)?;
        // Only the hop and stage parts pre-fill the shared input whose size this is.
        let sizes = if self.record_bytes > 0.0 {
            format!(
                "mean Avro value {:.0} bytes; ceiling records {RECORD_SIZE} bytes",
                self.record_bytes
            )
        } else {
            "the pipeline writes its own three-channel requests".to_string()
        };
        writeln!(
            md,
            "- Records per measurement: {} (pre-filled; {sizes})",
            self.records
        )?;
        writeln!(md, "- Harness wall time: {:.0} s", self.elapsed_s)?;
        writeln!(md, "\n## Machine\n")?;
        for (k, v) in &self.machine {
            writeln!(md, "- {k}: {v}")?;
        }
        writeln!(
            md,
            "- Kafka (one KRaft broker), Cassandra and Apicurio run on the same 2 cores as the \
             processor under test and the load generator. The machine is shared with other \
             engineers' builds and tests while this runs: figures are noisy, compare ratios \
             within one run rather than absolute numbers across runs."
        )?;
        crate::report::sections::ceiling_and_hops(md, self)?;
        dedup::stages(md, self)?;
        profile::section(md, self)?;
        dedup::compare(md, self)?;
        pipeline::section(md, self)?;
        writeln!(md, "\n## Plots\n")?;
        let base = out.parent().unwrap_or(Path::new("."));
        for f in files {
            let rel = f.strip_prefix(base).unwrap_or(f);
            writeln!(md, "![{}]({})\n", rel.display(), rel.display())?;
        }
        Ok(())
    }
}

fn machine_facts(root: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kafka = std::fs::read_dir(root.join(".cache/kafka/lib"))
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("kafka-clients-"))
        })
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("nproc".into(), cores),
        ("Memory".into(), mem),
        ("CPU".into(), model),
        ("Kernel".into(), kernel),
        ("Kafka".into(), kafka),
        (
            "Date".into(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
    ]
}

pub mod dedup;
pub mod pipeline;
pub mod profile;
pub mod sections;
